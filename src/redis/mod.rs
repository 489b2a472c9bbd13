//! The Redis front end: wire code on the session core. RESP2/RESP3 listener, agent AUTH/HELLO,
//! upstream connections logged in with the vaulted password (shared by sessions' plain commands,
//! a session's own once it needs connection state), and a relay that
//! asks `policy::redis` about every command and masks replies as told. Decides nothing itself.

pub mod audit;
pub mod auth;
pub mod clients;
pub mod command;
mod door;
mod from_client;
pub mod mask_reply;
mod own;
mod own_window;
mod pubsub;
pub mod reader;
pub mod relay;
pub mod reply;
mod reply_cap;
pub mod scan;
pub mod session;
pub mod shared;
mod sub_recheck;
mod to_client;
pub mod upstream;

pub use door::RedisDoor;

/// The refusal recorded for an HTTP request line (`POST`, `Host:`) on the Redis listener,
/// before login or after: the connection is closed without an answer, as redis-server does.
fn http_request_refusal() -> crate::refusal::Refusal {
    crate::refusal::Refusal::new(
        crate::refusal::RefusalClass::Syntax,
        "builtin: protocol",
        "an HTTP request on the Redis listener (a cross-protocol attack?): connection closed",
    )
}
