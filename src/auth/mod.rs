//! Agent identities: the agents file, token generation, and SCRAM verifiers (never tokens);
//! and tollgate's own SCRAM client, for its logins to upstreams (PostgreSQL, MongoDB).

mod agents;
pub mod scram;
pub mod scram_client;

pub use agents::{valid_agent_name, AgentRecord, AgentStore, AgentsFile};
pub use scram::{ScramServer, ScramVerifier};

use rand::RngCore;

/// A new random agent token: `tg_` and 48 hex characters (192 bits), URL- and shell-safe.
pub fn generate_token() -> String {
    let mut b = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("tg_{}", hex::encode(b))
}
