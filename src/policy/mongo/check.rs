//! Enforcement and shadow mode around `decide`: the enforced rules decide; rules of shadow
//! (`enforce = false`) files add a `would_block` outcome without stopping the command, exactly
//! as `policy::redis::check` does. The session passes the agent's rules for the upstream.

use super::command::Command;
use super::decide::{decide, DecideLimits, Judged};
use super::rules::MongoRules;
use crate::policy::decide::DEFAULT_DENY;
use crate::policy::Outcome;
use crate::refusal::Refusal;

#[derive(Debug, Clone)]
pub struct MongoVerdict {
    pub outcome: Outcome,
    /// Why it was (or would have been) refused.
    pub denial: Option<Refusal>,
    /// What to do when it runs (absent when blocked).
    pub judged: Option<Judged>,
}

impl MongoVerdict {
    pub fn runs(&self) -> bool {
        self.outcome != Outcome::Block
    }

    pub fn blocked(denial: Refusal) -> MongoVerdict {
        MongoVerdict {
            outcome: Outcome::Block,
            denial: Some(denial),
            judged: None,
        }
    }
}

/// `enforced`/`shadow`: `None` when no such file applies to the agent; `Some(None)` when files
/// apply but none has a `[[mongo]]` block for this upstream.
pub fn judge_shadowed(
    enforced: Option<Option<&MongoRules>>,
    shadow: Option<Option<&MongoRules>>,
    upstream: &str,
    cmd: &Command,
    limits: &DecideLimits,
) -> MongoVerdict {
    let judge = |r: Option<&MongoRules>| match r {
        Some(r) => decide(r, cmd, limits),
        None => Err(Refusal::permission(
            DEFAULT_DENY,
            format!("no policy grants access to upstream \"{upstream}\""),
        )),
    };
    let allowed = |j: Judged| MongoVerdict {
        outcome: Outcome::Allow,
        denial: None,
        judged: Some(j),
    };
    match (enforced.map(judge), shadow.map(judge)) {
        (Some(Err(d)), _) => MongoVerdict::blocked(d),
        (Some(Ok(j)), None) | (Some(Ok(j)), Some(Ok(_))) => allowed(j),
        // Only shadow files, which allow it: it runs unchanged, as under PostgreSQL and Redis
        // (their masks and filters are not applied: a live review read masked fields here and
        // raw ones through the other doors).
        (None, Some(Ok(j))) => allowed(Judged {
            rule: None,
            rewritten: None,
            reply: super::decide::ReplyPlan::None,
            ..j
        }),
        // The enforced rules decide what runs (and how); the shadow refusal is only recorded.
        (Some(Ok(j)), Some(Err(d))) => MongoVerdict {
            outcome: Outcome::WouldBlock,
            denial: Some(d),
            judged: Some(j),
        },
        // Only shadow files: the command runs unchanged, the refusal is recorded.
        (None, Some(Err(d))) => MongoVerdict {
            outcome: Outcome::WouldBlock,
            denial: Some(d),
            judged: Some(Judged {
                operation: cmd.name.clone(),
                namespaces: cmd.namespace().into_iter().collect(),
                rule: None,
                rewritten: None,
                reply: super::decide::ReplyPlan::None,
                cursors: Vec::new(),
            }),
        },
        (None, None) => MongoVerdict::blocked(Refusal::permission(
            DEFAULT_DENY,
            format!("no policy grants access to upstream \"{upstream}\""),
        )),
    }
}
