//! MongoDB front end: the wire protocol (framing, OP_MSG, the legacy OP_QUERY handshake,
//! strict BSON), tollgate's own replies (`hello`, errors), agent login by SCRAM-SHA-256 over
//! `saslStart`/`saslContinue`, the upstream login, and masking of reply documents. Protocol
//! only: what an agent may do is decided by `policy::mongo`.
//!
//! How a session uses it: `wire::MessageReader` yields a `Message` (length checked against the
//! phase's limit first); until an agent is authenticated, `login::LoginPhase` answers it
//! (handshake, SCRAM, refusals); after that `OpMsg::parse` validates it (checksum, sections,
//! every document);
//! `policy::mongo::Command::from_msg` gives the command the policy judges; a verdict's rewritten
//! body goes out with `OpMsg::with_body(..).encode(..)`; replies of masked reads go through
//! `mask_reply::mask_reply`. The MCP `find`/`aggregate` tools run one judged command with
//! `run_one` (cursor followed, masked, cut at the same limits).

pub mod audit;
pub mod bson_check;
pub mod cursors;
mod door;
mod from_client;
#[cfg(test)]
mod fuzz_tests;
pub mod hello;
pub mod idle;
pub mod login;
pub mod lsids;
pub mod mask_reply;
pub mod op_msg;
pub mod op_query;
pub mod relay;
pub mod reply;
pub mod reply_view;
pub mod run_one;
pub mod sample;
pub mod sasl;
pub mod session;
mod to_client;
pub mod upstream;
pub mod wire;

pub use door::{MongoDoor, MongoUpstream};
pub use op_msg::OpMsg;
pub use wire::{Message, MessageReader, OpCode, WireError};
