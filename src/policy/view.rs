//! One session's view of its agent's policy: re-read only when the engine's version changes (a
//! reload, new table shapes), so a statement costs an atomic load, not a map lookup, and a reload
//! applies from the next statement on.

use std::sync::{Arc, OnceLock};

use super::compile::AgentPolicy;
use super::limits::Limits;
use super::Engine;

#[derive(Debug, Clone)]
pub struct AgentView {
    agent: Arc<str>,
    /// The engine version `policy` was read under (0: never read).
    version: u64,
    policy: Option<Arc<AgentPolicy>>,
}

fn no_limits() -> &'static Limits {
    static NONE: OnceLock<Limits> = OnceLock::new();
    NONE.get_or_init(Limits::default)
}

impl AgentView {
    pub fn new(agent: Arc<str>) -> AgentView {
        AgentView {
            agent,
            version: 0,
            policy: None,
        }
    }

    pub fn agent(&self) -> &Arc<str> {
        &self.agent
    }

    /// Switches to another agent (a Redis `AUTH` inside a session); read at the next refresh.
    pub fn set_agent(&mut self, agent: Arc<str>) {
        self.agent = agent;
        self.version = 0;
        self.policy = None;
    }

    /// Re-reads the agent's policy if the engine changed since the last read.
    pub fn refresh(&mut self, engine: &Engine) -> &mut Self {
        // The version is read first: a reload in between makes the next refresh read again.
        let v = engine.version();
        if v != self.version {
            self.policy = engine.agent_policy(&self.agent);
            self.version = v;
        }
        self
    }

    /// The policy as of the last refresh (`None`: the agent has none).
    pub fn policy(&self) -> Option<&AgentPolicy> {
        self.policy.as_deref()
    }

    /// The agent's limits as of the last refresh (none without a policy).
    pub fn limits(&self) -> &Limits {
        match &self.policy {
            Some(p) => &p.limits,
            None => no_limits(),
        }
    }

    /// The engine version of the last refresh.
    pub fn version(&self) -> u64 {
        self.version
    }
}
