//! A session's view of the MongoDB policy: the agent's rules for one upstream, re-read (and
//! shared as `Arc`s with the reply half) only when a reload bumps the policy version, and the
//! verdict on each command with the agent's limits applied (`maxTimeMS` capped).

use std::sync::Arc;

use super::check::{judge_shadowed, MongoVerdict};
use super::command::Command;
use super::decide::DecideLimits;
use super::rules::MongoRules;
use crate::policy::decide::DEFAULT_DENY;
use crate::policy::limits::Limits;
use crate::policy::{instead, Outcome};
use crate::policy::{AgentView, Engine};
use crate::refusal::{Refusal, RefusalClass};

/// The rules of one kind of file for the upstream: `None` when no such file applies to the
/// agent; `Some(None)` when files apply but none has a `[[mongo]]` block for it.
type Slot = Option<Option<Arc<MongoRules>>>;

/// One session's handle on the policy for (agent, upstream).
#[derive(Debug)]
pub struct MongoPolicy {
    view: AgentView,
    upstream: Arc<str>,
    /// The engine version `enforced`/`shadow` were read under.
    version: u64,
    enforced: Slot,
    shadow: Slot,
    /// The database the vaulted upstream user is defined in, when the session knows it.
    login_db: Option<Arc<str>>,
}

fn slot(
    map: &Option<std::collections::HashMap<String, crate::policy::rules::UpstreamRules>>,
    upstream: &str,
) -> Slot {
    map.as_ref().map(|m| {
        m.get(upstream)
            .and_then(crate::policy::rules::UpstreamRules::mongo)
            .map(|r| Arc::new(r.clone()))
    })
}

impl MongoPolicy {
    pub fn new(agent: Arc<str>, upstream: Arc<str>) -> MongoPolicy {
        MongoPolicy {
            view: AgentView::new(agent),
            upstream,
            version: 0,
            enforced: None,
            shadow: None,
            login_db: None,
        }
    }

    /// Tells the decision where the vaulted upstream user is defined (`authSource`), so that
    /// no agent drops that database.
    pub fn with_login_db(mut self, db: &str) -> MongoPolicy {
        self.login_db = Some(db.into());
        self
    }

    /// The agent's limits as of the last check.
    pub fn limits(&self) -> &Limits {
        self.view.limits()
    }

    /// The rules that shape what runs (the enforced ones, else the shadow ones): listings are
    /// cut and masks applied with these.
    pub fn rules(&self) -> Option<Arc<MongoRules>> {
        match (&self.enforced, &self.shadow) {
            (Some(e), _) => e.clone(),
            (None, Some(s)) => s.clone(),
            (None, None) => None,
        }
    }

    fn refresh(&mut self, engine: &Engine) {
        let v = self.view.refresh(engine).version();
        if v != self.version {
            let (enforced, shadow) = match self.view.policy() {
                Some(p) => (
                    slot(&p.enforced, &self.upstream),
                    slot(&p.with_shadow, &self.upstream),
                ),
                None => (None, None),
            };
            self.enforced = enforced;
            self.shadow = shadow;
            self.version = v;
        }
    }

    /// The verdict on one command, under the agent's current policy.
    pub fn check(&mut self, engine: &Engine, cmd: &Command) -> MongoVerdict {
        self.refresh(engine);
        let Some(policy) = self.view.policy() else {
            return MongoVerdict::blocked(
                Refusal::permission(
                    DEFAULT_DENY,
                    format!("agent \"{}\" has no policy", self.view.agent()),
                )
                .with_instead(instead::upstreams(None)),
            );
        };
        let limits = DecideLimits {
            statement_timeout: self.view.limits().statement_timeout.clone(),
            login_db: self.login_db.as_deref().map(String::from),
        };
        let mut verdict = judge_shadowed(
            self.enforced.as_ref().map(|r| r.as_deref()),
            self.shadow.as_ref().map(|r| r.as_deref()),
            &self.upstream,
            cmd,
            &limits,
        );
        // A policy refusal says what the agent may use instead: its collections here, or the
        // upstreams it may use when it has no rules on this one. Shadow refusals (would_block)
        // are only recorded and keep none.
        if verdict.outcome == Outcome::Block {
            if let Some(d) = verdict.denial.take() {
                let d = if d.class != RefusalClass::Permission || d.instead.is_some() {
                    d
                } else {
                    let text = match self.enforced.as_ref().and_then(|r| r.as_deref()) {
                        Some(rules) => instead::mongo(&self.upstream, rules),
                        None => instead::upstreams(policy.enforced.as_ref()),
                    };
                    d.with_instead(text)
                };
                verdict.denial = Some(d);
            }
        }
        verdict
    }
}
