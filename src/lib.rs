//! tollgate: a database gateway for AI agents.
//!
//! Agents connect as if to PostgreSQL, authenticate with their own token, and reach the real
//! database through vaulted credentials; every statement passes the policy and is audited.
//! See ARCHITECTURE.md for the map of modules and the invariants.
#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod client_encoding;
pub mod config;
pub mod demo;
pub mod doors;
pub mod gateway;
pub mod http_serve;
pub mod mcp;
pub mod mongo;
pub mod pg;
pub mod policy;
pub mod ratelimit;
pub mod redis;
pub mod refusal;
pub mod session;
pub mod telemetry;
pub mod tls;
pub mod vault;
