//! The MCP front end: agents that speak Model Context Protocol rather than a wire driver reach
//! the same upstreams through tools, on the same session core as the PostgreSQL, Redis and MongoDB
//! doors.
//!
//! Streamable HTTP (rmcp's service, stateless, JSON responses) at `/mcp` on `[listen] mcp`,
//! HTTPS on the same port with the front end's certificate. Every request carries
//! `Authorization: Bearer AGENT:TOKEN` (`auth`); every tool call on an upstream is admitted by
//! the core (TLS requirement, policy, connection caps: one tool call in flight holds one
//! connection slot) and every statement goes through the PostgreSQL, Redis or MongoDB front end's
//! own statement logic and the policy engine (`sql`, `redis_tool`, `mongo_tool`); nothing here
//! decides policy.

mod auth;
pub mod bridge;
mod cancel;
mod door;
mod handler;
mod listener;
mod mongo_tool;
mod ordered;
mod output;
mod pending;
mod redis_tool;
mod schema;
pub(crate) mod sql;
mod tools;

pub use auth::parse_bearer;
pub use door::{McpDoor, PATH};
