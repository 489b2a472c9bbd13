//! A PostgreSQL session's statements on the session core: the SQL verdict (with the statement
//! size limit), the decision turned into a core [`Judged`] or refusal, the masking rewrite, the
//! re-judging of statements prepared under an older policy, and the refusals rendered as
//! ErrorResponses. Both relay halves share one `PgSession`.

use std::sync::Arc;

use bytes::Bytes;

use super::backend::{self as msg, PgErrorFields};
use super::frame::Frame;
use super::refusal;
use crate::audit::Decision;
use crate::policy::limits::Limits;
use crate::policy::{Outcome, SessionFacts, Verdict};
use crate::refusal::{Refusal, RefusalClass};
use crate::session::{Judged, Session, SessionContext, Ticket};

/// A statement as checked when it was prepared (extended protocol, SQL PREPARE, DECLARE).
#[derive(Debug)]
pub struct Checked {
    pub text: Box<str>,
    pub verdict: Arc<Verdict>,
    /// The policy version the verdict was reached under; a reload means "judge again".
    pub version: u64,
    /// Under transaction pooling: the statement as tollgate prepares it on server connections.
    pub server: Option<crate::pg::statements::ServerStatement>,
}

/// Longest statement text recorded whole in the audit log.
const AUDIT_STATEMENT_LIMIT: usize = 64 * 1024;

pub struct PgSession {
    session: Session,
    /// The session's handle on its decision-cache scope (only the client half judges).
    scope: std::sync::Mutex<crate::policy::ScopeHandle>,
    max_statement_bytes: usize,
    redact_literals: bool,
}

impl PgSession {
    pub fn new(session: Session) -> PgSession {
        let core = session.core();
        PgSession {
            scope: Default::default(),
            max_statement_bytes: core.limits.max_statement_bytes,
            redact_literals: core.audit_config.redact_literals,
            session,
        }
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// What the reply half records outcomes through.
    pub fn context(&self) -> &Arc<SessionContext> {
        self.session.context()
    }

    pub fn agent(&self) -> &Arc<str> {
        self.session.agent()
    }

    pub fn policy_version(&self) -> u64 {
        self.session.core().policy.version()
    }

    /// The policy's verdict on one Query/Parse text; texts over `max_statement_bytes` are
    /// refused before any analysis.
    pub fn check_sql(&self, text: &str, facts: &SessionFacts) -> Arc<Verdict> {
        let max = self.max_statement_bytes;
        if text.len() > max {
            return Arc::new(Verdict::blocked(Refusal::new(
                RefusalClass::TooLarge,
                "builtin: statement-size",
                format!(
                    "statement of {} bytes exceeds limits.max_statement_bytes ({max})",
                    text.len()
                ),
            )));
        }
        let policy = &self.session.core().policy;
        let (agent, upstream) = (self.session.agent(), self.session.upstream());
        let mut scope = self.scope.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = policy.cached_in(&mut scope, agent, upstream, text, facts.pooled) {
            return v;
        }
        // Analysis takes tens of microseconds, and a long statement far more: tell the runtime
        // so other sessions on this worker are moved instead of waiting behind it.
        let mut judge = || policy.check_sql_in(&mut scope, agent, upstream, text, facts);
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(judge),
            _ => judge(),
        }
    }

    /// The statement text as recorded: bounded, literals replaced when the config asks.
    fn recorded(&self, text: &str) -> String {
        let text = truncated(text, AUDIT_STATEMENT_LIMIT);
        if self.redact_literals {
            pg_query::normalize(text)
                .unwrap_or_else(|_| "<statement not recorded: could not redact literals>".into())
        } else {
            text.to_string()
        }
    }

    /// The ErrorResponse the agent sees for a refusal.
    pub fn render(&self, r: &Refusal) -> PgErrorFields {
        refusal::error(r, self.session.agent(), self.session.upstream())
    }

    /// Refuses `text` with `r`: recorded as blocked, rendered.
    pub fn refuse(&self, text: &str, r: Refusal) -> PgErrorFields {
        let r = self.session.refuse(self.recorded(text), r);
        self.render(&r)
    }

    /// Refuses a statement whose verdict does not let it run (recorded, rendered).
    pub fn refuse_verdict(&self, text: &str, verdict: &Verdict) -> PgErrorFields {
        let r = verdict
            .denial
            .clone()
            .unwrap_or_else(|| Refusal::permission("default-deny", "statement refused by policy"));
        self.refuse(text, r)
    }

    /// Records the decision before a statement is forwarded: `Ok(ticket)` forward it (its outcome
    /// record will name the ticket); `Err` refuse it with that error (the policy, the agent's
    /// rate, or the audit log failing).
    pub fn decide(
        &self,
        text: &str,
        verdict: &Verdict,
        limits: &Limits,
    ) -> Result<Ticket, PgErrorFields> {
        let judged = match (verdict.outcome, &verdict.denial, &verdict.rewrite) {
            (Outcome::Block, _, _) => return Err(self.refuse_verdict(text, verdict)),
            (Outcome::WouldBlock, Some(d), _) => Judged {
                statement: self.recorded(text),
                decision: Decision::WouldBlock,
                rule: Some(d.rule.clone()),
                reason: Some(d.reason.clone()),
            },
            (_, _, Some(plan)) => Judged {
                statement: self.recorded(text),
                decision: if plan.masks {
                    Decision::Masked
                } else {
                    Decision::Rewritten
                },
                rule: Some(plan.rules.join(", ")),
                reason: Some(format!("reads protected {}", plan.tables.join(", "))),
            },
            _ => Judged::allowed(self.recorded(text)),
        };
        self.session
            .decide(judged, Some(limits))
            .map_err(|r| self.render(&r))
    }

    /// The text to forward for a statement about to be admitted: `Ok(None)` unchanged,
    /// `Ok(Some)` its masking rewrite, `Err` the rewrite failed (recorded as blocked).
    pub fn forwarded_text(
        &self,
        text: &str,
        verdict: &Verdict,
    ) -> Result<Option<String>, PgErrorFields> {
        match verdict.forwarded_text(text) {
            Ok(std::borrow::Cow::Borrowed(_)) => Ok(None),
            Ok(std::borrow::Cow::Owned(rewritten)) => Ok(Some(rewritten)),
            Err(r) => Err(self.refuse(text, r)),
        }
    }

    /// Refuses running a statement prepared upstream under another masking than the current
    /// policy's: the upstream holds the old text, so the new masks would not apply.
    pub fn masking_changed(&self, checked: &Checked, fresh: &Verdict) -> Option<PgErrorFields> {
        let new = fresh.rewrite.as_deref().filter(|p| p.has_edits());
        let old = checked.verdict.rewrite.as_deref().filter(|p| p.has_edits());
        if !fresh.runs() || new.is_none() || new == old {
            return None;
        }
        let r = Refusal::new(
            RefusalClass::Unsupported,
            new.map(|p| p.rules.join(", ")).unwrap_or_default(),
            "the policy's masking changed since this statement was prepared; prepare it again",
        );
        Some(self.refuse(&checked.text, r))
    }

    /// A fresh verdict when `checked` was judged under an older policy version.
    pub fn recheck(&self, checked: &Checked, facts: &SessionFacts) -> Option<Arc<Verdict>> {
        (checked.version != self.policy_version()).then(|| self.check_sql(&checked.text, facts))
    }

    /// Records an Execute of a statement checked at Parse (judged again if the policy changed
    /// since), or of a portal tollgate did not bind (a cursor checked when it was DECLAREd).
    pub fn record_execute(
        &self,
        portal: &str,
        checked: Option<&Checked>,
        facts: &SessionFacts,
        limits: &Limits,
    ) -> Result<Ticket, PgErrorFields> {
        match checked {
            Some(c) => match self.recheck(c, facts) {
                Some(fresh) => match self.masking_changed(c, &fresh) {
                    Some(refusal) => Err(refusal),
                    None => self.decide(&c.text, &fresh, limits),
                },
                None => self.decide(&c.text, &c.verdict, limits),
            },
            None => {
                // The agent must still be allowed on this upstream under the current policy.
                let core = self.session.core();
                if let Err(r) = core
                    .policy
                    .may_connect(self.session.agent(), self.session.upstream())
                {
                    return Err(self.refuse(&format!("-- execute portal \"{portal}\""), r));
                }
                let judged = Judged::allowed(format!(
                    "-- execute portal \"{portal}\" (a cursor checked when declared)"
                ));
                self.session
                    .decide(judged, Some(limits))
                    .map_err(|r| self.render(&r))
            }
        }
    }

    /// A Query/Parse whose text is not valid UTF-8: refused before any analysis, recorded.
    pub fn refuse_unreadable(&self, what: &str) -> PgErrorFields {
        let r = Refusal::new(
            RefusalClass::Encoding,
            "builtin: encoding",
            "invalid byte sequence for encoding \"UTF8\"",
        );
        let r = self
            .session
            .refuse(format!("<{what} message with invalid UTF-8>"), r);
        // PostgreSQL's own wording, so drivers recognise it.
        PgErrorFields::error(r.class.sqlstate(), r.reason)
    }

    pub fn refuse_function_call(&self) -> PgErrorFields {
        self.refuse(
            "-- fast-path FunctionCall",
            Refusal::permission(
                "builtin: fastpath",
                "fast-path function calls (FunctionCall messages) are not allowed",
            ),
        )
    }

    /// ParameterStatus as the upstream sent it, except the upstream login name, shown as the agent.
    pub fn rewrite_parameter_status(&self, frame: &Frame) -> Bytes {
        let body = frame.body();
        let name_end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
        if &body[..name_end] == b"session_authorization" {
            return msg::parameter_status("session_authorization", self.session.agent());
        }
        frame.raw.clone()
    }
}

fn truncated(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
