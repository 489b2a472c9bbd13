//! A session's view of the Redis policy: the agent's current rules (refreshed when a reload
//! bumps the policy version), enforcement and shadow mode around `decide`.

use std::sync::Arc;

use bytes::Bytes;

use super::blocking::cap_timeout;
use super::commands::CommandTable;
use super::decide::{decide, Judged, MaskPlan};
use super::keys::FoundKey;
use super::rules::RedisRules;
use crate::policy::decide::DEFAULT_DENY;
use crate::policy::{AgentView, Engine, Outcome};
use crate::refusal::Refusal;

#[derive(Debug, Clone)]
pub struct RedisVerdict {
    pub outcome: Outcome,
    pub denial: Option<Refusal>,
    pub mask: MaskPlan,
    pub keys: Vec<FoundKey>,
    /// Arguments to forward instead of the agent's (a blocking command's timeout capped to the
    /// agent's statement timeout), with the rule that capped it.
    pub rewritten: Option<(Vec<Bytes>, String)>,
}

impl RedisVerdict {
    pub fn runs(&self) -> bool {
        self.outcome != Outcome::Block
    }
    pub fn blocked(denial: Refusal) -> RedisVerdict {
        RedisVerdict {
            outcome: Outcome::Block,
            denial: Some(denial),
            mask: MaskPlan::None,
            keys: Vec::new(),
            rewritten: None,
        }
    }
    fn allowed(j: Judged) -> RedisVerdict {
        RedisVerdict {
            outcome: Outcome::Allow,
            denial: None,
            mask: j.mask,
            keys: j.keys,
            rewritten: None,
        }
    }
}

/// One session's handle on the policy for (agent, upstream).
#[derive(Debug)]
pub struct RedisPolicy {
    view: AgentView,
    upstream: Arc<str>,
}

impl RedisPolicy {
    pub fn new(agent: Arc<str>, upstream: Arc<str>) -> RedisPolicy {
        RedisPolicy {
            view: AgentView::new(agent),
            upstream,
        }
    }

    pub fn agent(&self) -> &Arc<str> {
        self.view.agent()
    }

    /// The agent's limits as of the last check.
    pub fn limits(&self) -> &crate::policy::limits::Limits {
        self.view.limits()
    }

    /// Switches the session to another agent (a later AUTH).
    pub fn set_agent(&mut self, agent: Arc<str>) {
        self.view.set_agent(agent);
    }

    fn rules<'a>(
        map: &'a Option<std::collections::HashMap<String, crate::policy::rules::UpstreamRules>>,
        upstream: &str,
    ) -> Option<Option<&'a RedisRules>> {
        map.as_ref().map(|m| {
            m.get(upstream)
                .and_then(crate::policy::rules::UpstreamRules::redis)
        })
    }

    /// The verdict on one command (`args[0]` is its name).
    pub fn check(&mut self, engine: &Engine, table: &CommandTable, args: &[Bytes]) -> RedisVerdict {
        let mut verdict = self.judge(engine, table, args);
        if verdict.runs() {
            if let Err(d) = self.cap_blocking(table, args, &mut verdict) {
                return RedisVerdict::blocked(d);
            }
        }
        verdict
    }

    /// Under a statement timeout, a blocking command's own timeout is capped to it.
    fn cap_blocking(
        &self,
        table: &CommandTable,
        args: &[Bytes],
        verdict: &mut RedisVerdict,
    ) -> Result<(), Refusal> {
        let Some((cap, rule)) = self.view.limits().statement_timeout.as_ref() else {
            return Ok(());
        };
        let Ok(info) = table.lookup(args) else {
            return Ok(());
        };
        if let Some(capped) = cap_timeout(info, args, *cap, rule)? {
            verdict.rewritten = Some((capped, rule.clone()));
        }
        Ok(())
    }

    fn judge(&mut self, engine: &Engine, table: &CommandTable, args: &[Bytes]) -> RedisVerdict {
        let Some(policy) = self.view.refresh(engine).policy() else {
            return RedisVerdict::blocked(Refusal::permission(
                DEFAULT_DENY,
                format!("agent \"{}\" has no policy", self.view.agent()),
            ));
        };
        let upstream = self.upstream.as_ref();
        let judge = |r: Option<&RedisRules>| match r {
            Some(r) => decide(r, table, args),
            None => Err(Refusal::permission(
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
                rewritten: None,
            },
            (None, None) => RedisVerdict::blocked(Refusal::permission(
                DEFAULT_DENY,
                format!("no policy grants access to upstream \"{upstream}\""),
            )),
        }
    }
}
