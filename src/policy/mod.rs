//! Policy: what each agent may do. Pure: no sockets, no files after loading, no clock.
//!
//! `sql` analyses statements with PostgreSQL's own parser; `compile` turns policy files into
//! per-agent rules; `decide` judges one analysed statement; `engine` holds the current rules
//! and caches verdicts.

pub mod backends;
pub mod catalog;
pub mod compile;
pub mod decide;
pub mod engine;
pub mod file;
pub mod fixed_map;
#[cfg(test)]
mod fuzz_tests;
pub mod glob;
pub mod instead;
pub mod limits;
pub mod mask;
pub mod mongo;
pub mod redis;
pub mod reserved;
pub mod rules;
pub mod settings;
pub mod sql;
pub mod view;

pub use compile::{AgentPolicy, PolicyContext, PolicySet, UpstreamInfo};
pub use decide::SessionFacts;
pub use engine::{Effect, Engine, Outcome, ScopeHandle, Verdict};
pub use view::AgentView;
