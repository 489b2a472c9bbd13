//! Subscriptions after a reload. A SUBSCRIBE is judged when it is sent; the upstream then
//! delivers the channel's messages for as long as the subscription lasts, so a reload that
//! withdrew the channel (or pub/sub) from the agent left it receiving them. The reply half
//! judges the session's subscriptions again at the first message after a reload, as if each
//! were subscribed now, and ends the session when one is no longer allowed.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::pubsub::{SubKind, Subscriptions};
use crate::policy::redis::{CommandTable, RedisPolicy};
use crate::policy::Engine;
use crate::refusal::Refusal;

/// The session's agent as the command half last set it (an AUTH may change it).
pub type SharedAgent = Arc<Mutex<Arc<str>>>;

pub struct SubsRecheck {
    policy: RedisPolicy,
    table: Arc<CommandTable>,
    agent: SharedAgent,
    /// The policy version, and the agent, the subscriptions were last judged under.
    version: u64,
    judged_for: Arc<str>,
}

impl SubsRecheck {
    pub fn new(
        agent: Arc<str>,
        upstream: Arc<str>,
        table: Arc<CommandTable>,
        version: u64,
    ) -> SubsRecheck {
        SubsRecheck {
            policy: RedisPolicy::new(agent.clone(), upstream),
            table,
            agent: Arc::new(Mutex::new(agent.clone())),
            version,
            judged_for: agent,
        }
    }

    /// The handle the command half updates when the session's agent changes.
    pub fn agent(&self) -> SharedAgent {
        self.agent.clone()
    }

    /// The agent the session runs as now.
    pub fn current_agent(&self) -> Arc<str> {
        self.agent.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// When the policy (or the session's agent: an AUTH as another) changed since the last
    /// look: the refusal of the first subscription the current policy would not allow (`None`:
    /// all still allowed, or no change).
    pub fn stale(&mut self, engine: &Engine, subs: &Subscriptions) -> Option<Refusal> {
        let now = engine.version();
        let agent = self.current_agent();
        if now == self.version && agent == self.judged_for {
            return None;
        }
        // Read before judging: a reload meanwhile is looked at with the next message.
        self.version = now;
        self.judged_for = agent.clone();
        self.policy.set_agent(agent);
        subs.each().find_map(|(kind, name)| {
            let word: &'static [u8] = match kind {
                SubKind::Channel => b"subscribe",
                SubKind::Pattern => b"psubscribe",
                SubKind::Shard => b"ssubscribe",
            };
            let args = [Bytes::from_static(word), name.clone()];
            let verdict = self.policy.check(engine, &self.table, &args);
            (!verdict.runs()).then(|| {
                verdict.denial.unwrap_or_else(|| {
                    Refusal::permission(crate::policy::decide::DEFAULT_DENY, "not allowed")
                })
            })
        })
    }
}
