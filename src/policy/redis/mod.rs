//! Redis policy: which commands, keys, channels and databases an agent may use, and which
//! values it sees masked. Pure: the protocol code in `crate::redis` asks, this module answers.
//!
//! `commands` is the upstream's own command table (from `COMMAND`), `keys` finds every key of a
//! command from its key specs, `decide` judges one command, `check` adds the agent's current
//! rules and shadow mode; `builtin`, `counts`, `growth` and `repeats` are the
//! protections of the upstream that hold for every agent.

pub mod blocking;
pub mod builtin;
pub mod check;
pub mod commands;
pub mod compile;
pub mod counts;
pub mod decide;
pub mod file;
pub mod growth;
pub mod keys;
pub mod mask;
pub mod repeats;
pub mod rules;
#[cfg(test)]
mod tests;

pub use builtin::ClientScope;
pub use check::{RedisPolicy, RedisVerdict};
pub use commands::{Categories, CommandInfo, CommandTable, Looked};
pub use decide::{MaskFields, MaskPlan};
pub use keys::FoundKey;
pub use mask::Strategy;
pub use rules::RedisRules;
