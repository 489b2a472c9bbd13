//! MongoDB policy: which databases, collections and operations an agent may use, which fields
//! it sees masked, which documents its row filters let through. Pure: the protocol code in
//! `crate::mongo` asks, this module answers.
//!
//! `command` is the command model, `fields` lists the fields each command may carry, `path`
//! compares dotted paths (array indexes aside), `query` finds what filters and expressions
//! read, `judge` checks namespaces and masked fields, `pipeline` walks aggregations, `decide`
//! judges one command, `check` adds shadow mode, `view` is a session's handle on it, `mask`
//! masks values.

pub mod builtin;
pub mod check;
pub mod command;
pub mod compile;
pub mod decide;
pub mod fields;
#[cfg(test)]
mod fields_tests;
pub mod file;
pub mod judge;
pub mod mask;
mod options;
#[cfg(test)]
mod oracle_tests;
pub mod path;
pub mod pipeline;
pub mod query;
pub mod rules;
#[cfg(test)]
mod tests;
mod view;

pub use check::{judge_shadowed, MongoVerdict};
pub use command::Command;
pub use decide::{decide, DecideLimits, Judged, ReplyPlan};
pub use rules::{MaskedField, MongoRules, Op, Protection};
pub use view::MongoPolicy;
