//! A session's view of the Redis policy: the agent's current rules (refreshed when a reload
//! bumps the policy version), enforcement and shadow mode around `decide`.

use std::sync::Arc;

use bytes::Bytes;

use super::blocking::cap_timeout;
use super::builtin::{self, ClientScope};
use super::commands::{CommandInfo, CommandTable, Looked};
use super::counts::check_counts;
use super::decide::{decide_looked_up, Judged, MaskPlan};
use super::growth::check_growth;
use super::keys::FoundKey;
use super::repeats::check_repeats;
use super::rules::RedisRules;
use crate::policy::decide::DEFAULT_DENY;
use crate::policy::{AgentView, Engine, Outcome};
use crate::refusal::Refusal;

#[derive(Debug, Clone)]
pub struct RedisVerdict {
    pub outcome: Outcome,
    pub denial: Option<Refusal>,
    pub mask: MaskPlan,
    /// The policy's mask rule behind `mask` (none for the built-in ones: CONFIG GET, ACL).
    pub mask_rule: Option<String>,
    pub keys: Vec<FoundKey>,
    /// Arguments to forward instead of the agent's (a blocking command's timeout capped to the
    /// agent's statement timeout), with the rule that capped it.
    pub rewritten: Option<(Vec<Bytes>, String)>,
    /// The command reaches other clients' connections: the front end keeps it to the agent's.
    pub scope: ClientScope,
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
            mask_rule: None,
            keys: Vec::new(),
            rewritten: None,
            scope: ClientScope::None,
        }
    }
    fn allowed(j: Judged) -> RedisVerdict {
        RedisVerdict {
            outcome: Outcome::Allow,
            denial: None,
            mask: j.mask,
            mask_rule: j.mask_rule,
            keys: j.keys,
            rewritten: None,
            scope: j.scope,
        }
    }
}

/// One session's handle on the policy for (agent, upstream).
#[derive(Debug)]
pub struct RedisPolicy {
    view: AgentView,
    upstream: Arc<str>,
    /// The ACL user tollgate logs in as (from the vault, through the engine), re-read with the
    /// policy; `None` while unknown.
    login_user: Option<String>,
    login_version: u64,
}

impl RedisPolicy {
    pub fn new(agent: Arc<str>, upstream: Arc<str>) -> RedisPolicy {
        RedisPolicy {
            view: AgentView::new(agent),
            upstream,
            login_user: None,
            login_version: 0,
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
        self.check_looked_up(engine, table.lookup(args), args)
    }

    /// [`check`](Self::check) for a command the caller already looked up in the command table
    /// (`CommandTable::lookup(args)`): the front end needs the entry too, and one lookup per
    /// command is enough.
    pub fn check_looked_up(
        &mut self,
        engine: &Engine,
        looked: Looked<'_>,
        args: &[Bytes],
    ) -> RedisVerdict {
        let mut verdict = self.judge(engine, looked, args);
        if verdict.runs() {
            if let Ok(info) = looked {
                if let Err(d) = self.cap_blocking(info, args, &mut verdict) {
                    return RedisVerdict::blocked(d);
                }
                let max_rows = self.view.limits().max_rows.as_ref();
                if let Err(d) = check_counts(&info.name, args, max_rows)
                    .and_then(|()| check_growth(&info.name, args))
                    .and_then(|()| check_repeats(info, args))
                {
                    return RedisVerdict::blocked(d);
                }
                self.hide_login_hashes(info, args, &mut verdict);
            }
        }
        verdict
    }

    /// ACL LIST and ACL GETUSER of the login user would show the vaulted password's hash: the
    /// reply leaves it out.
    fn hide_login_hashes(&self, info: &CommandInfo, args: &[Bytes], verdict: &mut RedisVerdict) {
        let login = self.login_user.as_deref();
        let about_login = |user: &[u8]| match login {
            Some(l) => l.as_bytes() == user,
            None => true,
        };
        let hide = match info.name.as_str() {
            "acl|list" => true,
            "acl|getuser" => args.get(2).is_some_and(|u| about_login(u)),
            _ => false,
        };
        if hide {
            verdict.mask = MaskPlan::AclSecrets(self.login_user.clone());
        }
    }

    /// Under a statement timeout, a blocking command's own timeout is capped to it.
    fn cap_blocking(
        &self,
        info: &CommandInfo,
        args: &[Bytes],
        verdict: &mut RedisVerdict,
    ) -> Result<(), Refusal> {
        let Some((cap, rule)) = self.view.limits().statement_timeout.as_ref() else {
            return Ok(());
        };
        if let Some(capped) = cap_timeout(info, args, *cap, rule)? {
            verdict.rewritten = Some((capped, rule.clone()));
        }
        Ok(())
    }

    fn judge(&mut self, engine: &Engine, looked: Looked<'_>, args: &[Bytes]) -> RedisVerdict {
        let version = self.view.refresh(engine).version();
        if version != self.login_version {
            self.login_user = engine.upstream_login(&self.upstream).map(|l| l.role);
            self.login_version = version;
        }
        let Some(policy) = self.view.policy() else {
            return RedisVerdict::blocked(
                Refusal::permission(
                    DEFAULT_DENY,
                    format!("agent \"{}\" has no policy", self.view.agent()),
                )
                .with_instead(crate::policy::instead::upstreams(None)),
            );
        };
        let upstream = self.upstream.as_ref();
        let instead = |r: Refusal, rules: Option<&RedisRules>| {
            if r.class != crate::refusal::RefusalClass::Permission {
                return r;
            }
            let text = match rules {
                Some(rules) => crate::policy::instead::redis(upstream, rules),
                None => crate::policy::instead::upstreams(policy.enforced.as_ref()),
            };
            r.with_instead(text)
        };
        // The upstream and its login are protected for every agent, passthrough included.
        if let Ok(info) = looked {
            if let Err(r) = builtin::protect_upstream(&info.name, args, self.login_user.as_deref())
            {
                let rules = Self::rules(&policy.enforced, upstream).flatten();
                return RedisVerdict::blocked(instead(r, rules));
            }
        }
        let judge = |r: Option<&RedisRules>| match r {
            Some(r) => decide_looked_up(r, looked, args),
            None => Err(Refusal::permission(
                DEFAULT_DENY,
                format!("no policy grants access to upstream \"{upstream}\""),
            )),
        };
        // `None`: only shadow files apply, nothing is enforced.
        let enforced_rules = Self::rules(&policy.enforced, upstream);
        let enforced = enforced_rules.map(judge);
        let shadow = Self::rules(&policy.with_shadow, upstream).map(judge);
        match (enforced, shadow) {
            (Some(Err(d)), _) => RedisVerdict::blocked(instead(d, enforced_rules.flatten())),
            (Some(Ok(j)), None) => RedisVerdict::allowed(j),
            (Some(Ok(j)), Some(Ok(_))) => RedisVerdict::allowed(j),
            (Some(Ok(j)), Some(Err(d))) => RedisVerdict {
                outcome: Outcome::WouldBlock,
                denial: Some(d),
                ..RedisVerdict::allowed(j)
            },
            // Only shadow files, which allow it: it runs unchanged (their masks are not applied,
            // as under PostgreSQL); the built-in masks (CONFIG GET, ACL) still are.
            (None, Some(Ok(j))) => {
                let mut v = RedisVerdict::allowed(j);
                if v.mask_rule.is_some() {
                    v.mask = MaskPlan::None;
                    v.mask_rule = None;
                }
                v
            }
            (None, Some(Err(d))) => RedisVerdict {
                outcome: Outcome::WouldBlock,
                denial: Some(d),
                mask: MaskPlan::None,
                mask_rule: None,
                keys: Vec::new(),
                rewritten: None,
                // Judged from the command alone: the protection holds in shadow mode too.
                scope: looked
                    .map(|i| builtin::client_scope(&i.name, args))
                    .unwrap_or_default(),
            },
            (None, None) => RedisVerdict::blocked(Refusal::permission(
                DEFAULT_DENY,
                format!("no policy grants access to upstream \"{upstream}\""),
            )),
        }
    }
}
