//! A session's view of the Redis policy: the agent's current rules (refreshed when a reload
//! bumps the policy version), enforcement and shadow mode around `decide`.

use std::sync::Arc;

use bytes::Bytes;

use super::commands::CommandTable;
use super::decide::{decide, Judged, MaskPlan, RedisDenial};
use super::keys::FoundKey;
use super::rules::RedisRules;
use crate::policy::compile::AgentPolicy;
use crate::policy::decide::DEFAULT_DENY;
use crate::policy::{Engine, Outcome};

#[derive(Debug, Clone)]
pub struct RedisVerdict {
    pub outcome: Outcome,
    pub denial: Option<RedisDenial>,
    pub mask: MaskPlan,
    pub keys: Vec<FoundKey>,
}

impl RedisVerdict {
    pub fn runs(&self) -> bool {
        self.outcome != Outcome::Block
    }
    pub fn blocked(denial: RedisDenial) -> RedisVerdict {
        RedisVerdict {
            outcome: Outcome::Block,
            denial: Some(denial),
            mask: MaskPlan::None,
            keys: Vec::new(),
        }
    }
    fn allowed(j: Judged) -> RedisVerdict {
        RedisVerdict {
            outcome: Outcome::Allow,
            denial: None,
            mask: j.mask,
            keys: j.keys,
        }
    }
}

/// One session's handle on the policy for (agent, upstream).
#[derive(Debug)]
pub struct RedisPolicy {
    agent: Arc<str>,
    upstream: Arc<str>,
    version: u64,
    policy: Option<Arc<AgentPolicy>>,
}

impl RedisPolicy {
    pub fn new(agent: Arc<str>, upstream: Arc<str>) -> RedisPolicy {
        RedisPolicy {
            agent,
            upstream,
            version: 0,
            policy: None,
        }
    }

    pub fn agent(&self) -> &Arc<str> {
        &self.agent
    }

    /// Switches the session to another agent (a later AUTH).
    pub fn set_agent(&mut self, agent: Arc<str>) {
        self.agent = agent;
        self.version = 0;
    }

    fn refresh(&mut self, engine: &Engine) {
        let v = engine.version();
        if v != self.version {
            self.policy = engine.snapshot().agents.get(self.agent.as_ref()).cloned();
            self.version = v;
        }
    }

    fn rules<'a>(
        map: &'a Option<std::collections::HashMap<String, crate::policy::rules::UpstreamRules>>,
        upstream: &str,
    ) -> Option<Option<&'a RedisRules>> {
        map.as_ref().map(|m| m.get(upstream).map(|r| &r.redis))
    }

    /// The verdict on one command (`args[0]` is its name).
    pub fn check(&mut self, engine: &Engine, table: &CommandTable, args: &[Bytes]) -> RedisVerdict {
        self.refresh(engine);
        let Some(policy) = self.policy.as_ref() else {
            return RedisVerdict::blocked(RedisDenial::noperm(
                DEFAULT_DENY,
                format!("agent \"{}\" has no policy", self.agent),
            ));
        };
        let upstream = self.upstream.as_ref();
        let judge = |r: Option<&RedisRules>| match r {
            Some(r) => decide(r, table, args),
            None => Err(RedisDenial::noperm(
                DEFAULT_DENY,
                format!("no policy grants access to upstream \"{upstream}\""),
            )),
        };
        // `None`: only shadow files apply, nothing is enforced.
        let enforced = Self::rules(&policy.enforced, upstream).map(judge);
        let shadow = Self::rules(&policy.with_shadow, upstream).map(judge);
        match (enforced, shadow) {
            (Some(Err(d)), _) => RedisVerdict::blocked(d),
            (Some(Ok(j)), None) => RedisVerdict::allowed(j),
            (Some(Ok(j)), Some(Ok(_))) => RedisVerdict::allowed(j),
            (Some(Ok(j)), Some(Err(d))) => RedisVerdict {
                outcome: Outcome::WouldBlock,
                denial: Some(d),
                ..RedisVerdict::allowed(j)
            },
            (None, Some(Ok(j))) => RedisVerdict::allowed(j),
            (None, Some(Err(d))) => RedisVerdict {
                outcome: Outcome::WouldBlock,
                denial: Some(d),
                mask: MaskPlan::None,
                keys: Vec::new(),
            },
            (None, None) => RedisVerdict::blocked(RedisDenial::noperm(
                DEFAULT_DENY,
                format!("no policy grants access to upstream \"{upstream}\""),
            )),
        }
    }
}
