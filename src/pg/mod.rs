//! The PostgreSQL front end: wire code on the session core. It speaks the protocol to agents and
//! relays it to the upstream message by message, with every Query and Parse passing the policy
//! hook; it decides nothing itself.

pub mod backend;
pub mod cancel;
pub mod client_auth;
pub mod cursor_rows;
mod cut_fields;
mod door;
pub mod encryption;
pub mod frame;
pub mod from_client;
pub mod frontend;
pub mod link;
mod name_map;
mod oversize;
pub use oversize::kept_head;
pub mod pending;
pub mod pool;
pub mod refusal;
pub mod run_one;
pub mod schema_loader;
pub mod session;
pub mod sql_prepared;
pub mod sql_reading;
pub mod startup;
pub mod statement;
pub mod statements;
pub mod to_client;
mod transaction_end;
pub mod upstream;

#[cfg(test)]
pub(crate) mod testing;

pub use door::{PgDoor, Pools};
