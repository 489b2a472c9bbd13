//! Volume controls shared by the PostgreSQL and Redis front ends: a per-agent statement rate
//! (GCRA token bucket, one atomic per agent, no lock on the hot path) and per-agent and total
//! connection caps (RAII slots).

mod bucket;
mod connections;
mod held;

pub use bucket::{Bucket, RateExceeded};
pub use connections::{ConnectionSlot, TooManyConnections};
pub use held::{detach_after, Held, HeldBytes, HeldExhausted, HeldScope};

use std::sync::Arc;

use dashmap::DashMap;

use crate::policy::limits::Rate;

/// The gateway-wide state of every limit.
#[derive(Debug, Default)]
pub struct Limiter {
    buckets: DashMap<Arc<str>, Arc<Bucket>>,
    /// Each agent's refusals, which `limits.refusals_per_second` paces.
    refusals: DashMap<Arc<str>, Arc<Bucket>>,
    connections: connections::Counters,
}

impl Limiter {
    /// The agent's rate bucket, shared by all its sessions (a session keeps the `Arc`, so the
    /// map is consulted once per session, not per statement).
    pub fn bucket(&self, agent: &Arc<str>) -> Arc<Bucket> {
        bucket_of(&self.buckets, agent)
    }

    /// The agent's refusal bucket, shared by all its sessions on every door.
    pub fn refusal_bucket(&self, agent: &Arc<str>) -> Arc<Bucket> {
        bucket_of(&self.refusals, agent)
    }

    /// How long until the agent's refusals fit `rate` again (`None`: they do, or it has none).
    pub fn refusals_ahead(&self, agent: &str, rate: Rate) -> Option<std::time::Duration> {
        self.refusals.get(agent)?.ahead(rate)
    }

    /// Takes a connection slot for `agent`, within `per_agent` (if any) and `total` (if any).
    pub fn connect(
        &self,
        agent: &Arc<str>,
        per_agent: Option<u32>,
        total: Option<u32>,
    ) -> Result<ConnectionSlot, TooManyConnections> {
        self.connections.acquire(agent, per_agent, total)
    }

    pub fn connections_of(&self, agent: &str) -> u32 {
        self.connections.of(agent)
    }
}

fn bucket_of(map: &DashMap<Arc<str>, Arc<Bucket>>, agent: &Arc<str>) -> Arc<Bucket> {
    if let Some(b) = map.get(agent) {
        return b.clone();
    }
    map.entry(agent.clone()).or_default().clone()
}
