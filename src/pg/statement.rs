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
use crate::client_encoding::ClientEncoding;
use crate::policy::limits::Limits;
use crate::policy::mask::PositionMap;
use crate::policy::{Outcome, SessionFacts, Verdict};
use crate::refusal::{Refusal, RefusalClass};
use crate::session::Write;
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
    /// What it does to a SQL cursor, worked out once when first needed (a row limit counts a
    /// FETCH's rows towards its cursor; a DECLARE names a portal an Execute may read).
    pub cursor: std::sync::OnceLock<Option<crate::policy::sql::cursors::CursorUse>>,
    /// A named protocol-level Parse's number in the session (0 for anything else): the name
    /// goes if the server does not take that Parse (`Pending::report_failed_parse`).
    pub parse_seq: u64,
}

impl Checked {
    /// What the statement does to a SQL cursor (parsed the first time it is asked).
    pub fn cursor_use(&self) -> Option<&crate::policy::sql::cursors::CursorUse> {
        self.cursor
            .get_or_init(|| {
                crate::policy::sql::cursors::cursor_uses(&self.text)
                    .into_iter()
                    .next()
                    .flatten()
            })
            .as_ref()
    }
}

/// The refusal of running `checked` (judged under an older policy) now that `fresh` masks it
/// otherwise (`since`: what was done under the old masks, and what to do). Masks that were
/// lifted are no reason: the old, stricter ones still apply.
fn masks_added(checked: &Checked, fresh: &Verdict, since: &str) -> Option<Refusal> {
    let new = fresh.rewrite.as_deref().filter(|p| p.has_edits());
    let old = checked.verdict.rewrite.as_deref().filter(|p| p.has_edits());
    if !fresh.runs() || new.is_none() || new == old {
        return None;
    }
    Some(Refusal::new(
        RefusalClass::Unsupported,
        new.map(|p| p.rules.join(", ")).unwrap_or_default(),
        format!("the policy's masking changed since {since}"),
    ))
}

pub struct PgSession {
    session: Session,
    /// The session's handle on its decision-cache scope (only the client half judges).
    scope: std::sync::Mutex<crate::policy::ScopeHandle>,
    max_statement_bytes: usize,
    redact_literals: bool,
    /// The client encoding the server last reported (`ParameterStatus client_encoding`), as an
    /// index of `client_encoding`'s table; [`UNDECODABLE`] when tollgate cannot decode it exactly.
    encoding: std::sync::atomic::AtomicU8,
    /// Set when the session must end now, with this FATAL, and nothing more is forwarded: the
    /// attached server reported reading SQL text differently from the analysis
    /// (`sql_reading`), or a reload took away the LISTEN whose notifications it receives.
    ending: std::sync::OnceLock<PgErrorFields>,
}

/// [`PgSession`]'s encoding when the server reports one tollgate does not decode exactly: text
/// with bytes outside ASCII is then refused.
const UNDECODABLE: u8 = u8::MAX;

impl PgSession {
    pub fn new(session: Session) -> PgSession {
        let core = session.core();
        PgSession {
            scope: Default::default(),
            max_statement_bytes: core.limits.max_statement_bytes,
            redact_literals: core.audit_config.redact_literals,
            session,
            encoding: std::sync::atomic::AtomicU8::new(ClientEncoding::UTF8.index()),
            ending: std::sync::OnceLock::new(),
        }
    }

    /// A server connection about to serve this session, by the parameters it reported at
    /// login: `Err` (recorded, the FATAL to end the session with) when it reads SQL text
    /// differently from the analysis. Every session, passthrough included: its login guard
    /// reads the text too (a re-review hid `ALTER ROLE` in what it read as a string literal).
    pub fn check_server(&self, params: &[(String, String)]) -> Result<(), PgErrorFields> {
        super::sql_reading::check_all(params).map_err(|r| self.refuse_connection(r))
    }

    /// The FATAL to end the session with if the attached server reported, in a reply, reading
    /// SQL text differently from the analysis.
    pub fn ending(&self) -> Option<&PgErrorFields> {
        self.ending.get()
    }

    /// A notification arrived for a session whose policy no longer allows LISTEN (a reload
    /// since it listened): the session ends with a FATAL naming why (recorded), as a Redis
    /// subscription does. The server would go on delivering what the old policy allowed.
    pub fn end_for_revoked_listen(&self) {
        if self.ending.get().is_some() {
            return;
        }
        let r = Refusal::permission(
            crate::policy::decide::DEFAULT_DENY,
            "the policy changed and no longer allows LISTEN: this session's notifications end here; connect again",
        );
        let r = self.session.refuse("-- a notification (LISTEN)".into(), r);
        let _ = self.ending.set(refusal::fatal(&r));
    }

    fn refuse_connection(&self, r: Refusal) -> PgErrorFields {
        let r = self.session.refuse("-- server connection check".into(), r);
        refusal::fatal(&r)
    }

    /// The client's encoding as the server last reported it; `None` for one tollgate does not
    /// decode exactly (only pure ASCII text is accepted then).
    pub fn client_encoding(&self) -> Option<ClientEncoding> {
        match self.encoding.load(std::sync::atomic::Ordering::Acquire) {
            UNDECODABLE => None,
            i => Some(ClientEncoding::from_index(i)),
        }
    }

    /// Records the server's `client_encoding` (at login, and whenever it changes).
    fn observe_client_encoding(&self, value: &str) {
        let index = match crate::client_encoding::lookup(value) {
            crate::client_encoding::Lookup::Supported(e) => e.index(),
            _ => UNDECODABLE,
        };
        self.encoding
            .store(index, std::sync::atomic::Ordering::Release);
    }

    /// Text of the client's, decoded as the server will (`what`: "Query", "Parse").
    pub fn decode<'a>(
        &self,
        bytes: &'a [u8],
        what: &'static str,
    ) -> Result<std::borrow::Cow<'a, str>, PgErrorFields> {
        self.decoded(bytes)
            .map_err(|name| self.refuse_unreadable(what, &name))
    }

    /// `bytes` in the client's encoding; `Err` names the encoding that could not read them
    /// (empty while the encoding is not known: only ASCII reads the same in every one).
    fn decoded<'a>(&self, bytes: &'a [u8]) -> Result<std::borrow::Cow<'a, str>, String> {
        match self.client_encoding() {
            Some(e) => e.decode(bytes).map_err(|e| e.0.to_string()),
            None if bytes.is_ascii() => Ok(std::borrow::Cow::Borrowed(
                std::str::from_utf8(bytes).expect("ASCII is UTF-8"),
            )),
            None => Err(String::new()),
        }
    }

    /// `text` in the client's encoding, exactly (a rewritten statement), or the refusal.
    pub fn encode_text<'a>(
        &self,
        original: &str,
        text: &'a str,
    ) -> Result<std::borrow::Cow<'a, [u8]>, PgErrorFields> {
        let enc = self.client_encoding().unwrap_or(ClientEncoding::UTF8);
        enc.encode(text).map_err(|e| {
            self.refuse(
                original,
                Refusal::new(
                    RefusalClass::Encoding,
                    "builtin: encoding",
                    format!("the masked statement cannot be sent in the client's encoding: {e}"),
                ),
            )
        })
    }

    /// tollgate's own error in the client's encoding (characters it cannot hold become `?`).
    pub fn encode_error(&self, fields: &PgErrorFields) -> Bytes {
        match self.client_encoding() {
            Some(e) if !e.is_utf8() => fields.encode_with(|s| e.encode_lossy(s).into_owned()),
            Some(_) => fields.encode(),
            // An encoding tollgate cannot write: ASCII only.
            None => fields.encode_with(|s| {
                s.chars()
                    .map(|c| if c.is_ascii() { c as u8 } else { b'?' })
                    .collect()
            }),
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

    /// The longest statement text that may run (`limits.max_statement_bytes`).
    pub fn max_statement_bytes(&self) -> usize {
        self.max_statement_bytes
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
                format!("statement longer than limits.max_statement_bytes ({max} bytes)"),
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

    /// The statement text as recorded (`audit::sql_text`): whole, literals replaced when the
    /// config asks.
    pub fn recorded(&self, text: &str) -> String {
        crate::audit::sql_text::recorded(text, self.redact_literals, self.max_statement_bytes)
    }

    /// The text of a statement that did not run, as recorded: its head (`audit::sql_text`).
    fn recorded_refused(&self, text: &str) -> String {
        crate::audit::sql_text::refused(self.recorded(text))
    }

    /// An `error` record for a statement that never reached the server and was judged by
    /// nobody (its client left, or cancelled it, while it waited for a server connection): its
    /// text as a refused one's (head, literals redacted under `redact_literals`), `why` as the
    /// reason. Text that does not decode is not refused here (nothing is being judged): a
    /// placeholder stands for it.
    pub fn note_not_run(&self, text: &[u8], why: &str, sqlstate: Option<&str>) {
        match self.decoded(text) {
            Ok(t) => self.note_not_run_text(&t, why, sqlstate),
            Err(_) => self.session.note_with_code(
                "<statement not recorded: not readable in the client encoding>".to_string(),
                crate::audit::Decision::Error,
                Some(why),
                sqlstate,
            ),
        }
    }

    /// [`PgSession::note_not_run`] for text already decoded (a prepared statement's).
    pub fn note_not_run_text(&self, text: &str, why: &str, sqlstate: Option<&str>) {
        self.session.note_with_code(
            self.recorded_refused(text),
            crate::audit::Decision::Error,
            Some(why),
            sqlstate,
        );
    }

    /// The ErrorResponse the agent sees for a refusal.
    pub fn render(&self, r: &Refusal) -> PgErrorFields {
        refusal::error(r, self.session.agent(), self.session.upstream())
    }

    /// Refuses `text` with `r`: recorded as blocked, rendered.
    pub fn refuse(&self, text: &str, r: Refusal) -> PgErrorFields {
        let r = self.session.refuse_deferred(self.recorded(text), r);
        self.render(&r)
    }

    /// Refuses `text` as the server itself would (`code`, `message`: PostgreSQL's own words,
    /// which drivers know), where tollgate answers in the server's place; recorded as blocked.
    pub fn refuse_as_server(
        &self,
        text: &str,
        code: &'static str,
        message: String,
    ) -> PgErrorFields {
        self.session.note(
            self.recorded_refused(text),
            Decision::Blocked,
            Some(&message),
        );
        PgErrorFields::error(code, message)
    }

    /// A statement the agent sent in an extended-protocol batch after a message tollgate
    /// refused: skipped up to Sync, as the server skips after an error; recorded as blocked
    /// (its head, nothing of it having run).
    pub fn skipped_after_refusal(&self, text: &str) {
        self.session.note(
            self.recorded_refused(text),
            Decision::Blocked,
            Some("not executed: an earlier message in the same batch was refused"),
        );
    }

    /// Refuses a statement whose verdict does not let it run (recorded, rendered).
    pub fn refuse_verdict(&self, text: &str, verdict: &Verdict) -> PgErrorFields {
        let r = verdict
            .denial
            .clone()
            .unwrap_or_else(|| Refusal::permission("default-deny", "statement refused by policy"));
        self.refuse(text, r)
    }

    /// Waits until the records of everything decided so far are on disk (shared with the other
    /// sessions committing now); `Err` is the FATAL to end the session with, as nothing it
    /// decided may be forwarded.
    pub async fn commit(&self) -> Result<(), PgErrorFields> {
        self.session.commit().await.map_err(|r| refusal::fatal(&r))
    }

    /// Chains the decision record of a statement about to be forwarded (written by
    /// [`PgSession::commit`], which the caller awaits before it forwards anything):
    /// `Ok(ticket)` forward it (its outcome record will name the ticket); `Err` refuse it with
    /// that error (the policy, the agent's rate, or the audit log failing).
    pub fn decide(
        &self,
        text: &str,
        verdict: &Verdict,
        limits: &Limits,
    ) -> Result<Ticket, PgErrorFields> {
        self.decide_as(text, verdict, limits, Write::Deferred)
    }

    /// [`PgSession::decide`] with the record on disk before it returns, for a caller that
    /// forwards at once (the MCP `query` tool: it forwarded before the record was written, and
    /// ran a statement while the audit log could not be written; a live review).
    pub fn decide_now(
        &self,
        text: &str,
        verdict: &Verdict,
        limits: &Limits,
    ) -> Result<Ticket, PgErrorFields> {
        self.decide_as(text, verdict, limits, Write::Now)
    }

    fn decide_as(
        &self,
        text: &str,
        verdict: &Verdict,
        limits: &Limits,
        write: Write,
    ) -> Result<Ticket, PgErrorFields> {
        let Some((decision, rule, reason)) = recorded_decision(verdict) else {
            return Err(self.refuse_verdict(text, verdict));
        };
        let judged = Judged {
            statement: self.recorded(text),
            decision,
            rule,
            reason,
        };
        self.session
            .decide_statements(
                judged,
                Some(limits),
                statements(text, verdict, limits),
                write,
            )
            .map_err(|r| self.render(&r))
    }

    /// The text to forward for a statement about to be admitted: `Ok(None)` unchanged,
    /// `Ok(Some)` its masking rewrite (with where its text came from, for error positions),
    /// `Err` the rewrite failed (recorded as blocked).
    pub fn forwarded_text(
        &self,
        text: &str,
        verdict: &Verdict,
    ) -> Result<Option<(String, PositionMap)>, PgErrorFields> {
        verdict.rewritten(text).map_err(|r| self.refuse(text, r))
    }

    /// [`PgSession::forwarded_text`] in the client's encoding, as the wire door sends it.
    pub fn forwarded_bytes(
        &self,
        text: &str,
        verdict: &Verdict,
    ) -> Result<Option<(Vec<u8>, PositionMap)>, PgErrorFields> {
        match self.forwarded_text(text, verdict)? {
            Some((sql, map)) => Ok(Some((self.encode_text(text, &sql)?.into_owned(), map))),
            None => Ok(None),
        }
    }

    /// Refuses running a statement prepared upstream under another masking than the current
    /// policy's: the upstream holds the old text, so the new masks would not apply.
    pub fn masking_changed(&self, checked: &Checked, fresh: &Verdict) -> Option<PgErrorFields> {
        let r = masks_added(
            checked,
            fresh,
            "this statement was prepared; prepare it again",
        )?;
        Some(self.refuse(&checked.text, r))
    }

    /// A read of a SQL cursor (`what`: the FETCH, MOVE or Execute recorded) DECLAREd as
    /// `declared` under an older policy: refused when the current policy no longer allows the
    /// cursor's query, or masks it otherwise. The server goes on running the query as it was
    /// declared, under the old policy's masks and tables.
    pub fn cursor_changed(
        &self,
        what: &str,
        declared: &Checked,
        facts: &SessionFacts,
    ) -> Option<PgErrorFields> {
        let fresh = self.recheck(declared, facts)?;
        let r = if fresh.runs() {
            masks_added(
                declared,
                &fresh,
                "this cursor was declared; declare it again",
            )?
        } else {
            let (class, rule, why) = match &fresh.denial {
                Some(d) => (d.class, d.rule.clone(), d.message().to_string()),
                None => (RefusalClass::Permission, String::new(), String::new()),
            };
            Refusal::new(
                class,
                rule,
                format!("the policy changed since this cursor was declared and no longer allows its query ({why}); close it"),
            )
        };
        Some(self.refuse(what, r))
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
                    .decide_deferred(judged, Some(limits))
                    .map_err(|r| self.render(&r))
            }
        }
    }

    /// A Query/Parse whose text is not valid in the client's encoding (`encoding`; empty when
    /// the server reported one tollgate cannot decode): refused before any analysis, recorded.
    pub fn refuse_unreadable(&self, what: &str, encoding: &str) -> PgErrorFields {
        let r = if encoding.is_empty() {
            Refusal::new(
                RefusalClass::Encoding,
                "builtin: encoding",
                "the session's client_encoding cannot be decoded exactly by tollgate; only ASCII text is accepted (SET client_encoding TO 'UTF8')",
            )
        } else {
            Refusal::new(
                RefusalClass::Encoding,
                "builtin: encoding",
                format!("invalid byte sequence for encoding \"{encoding}\""),
            )
        };
        let r = self.session.refuse_deferred(
            format!("<{what} message not valid in the client encoding>"),
            r,
        );
        // PostgreSQL's own wording, so drivers recognise it.
        PgErrorFields::error(r.class.sqlstate(), r.reason)
    }

    /// A fast-path FunctionCall (`oid`: the function): large-object calls of a passthrough
    /// agent are recorded and forwarded (`Ok`, the ticket); anything else is refused.
    pub fn function_call(
        &self,
        oid: Option<u32>,
        limits: &Limits,
    ) -> Result<Ticket, PgErrorFields> {
        let core = self.session.core();
        let text = match oid {
            Some(oid) => format!("-- fast-path FunctionCall {oid}"),
            None => "-- fast-path FunctionCall".to_string(),
        };
        let checked = match oid {
            Some(oid) => {
                core.policy
                    .fastpath_call(self.session.agent(), self.session.upstream(), oid)
            }
            None => Err(Refusal::new(
                RefusalClass::Syntax,
                "builtin: fastpath",
                "invalid FunctionCall message",
            )),
        };
        match checked {
            Ok(name) => self
                .session
                .decide(
                    Judged::allowed(format!("-- fast-path call of {name}")),
                    Some(limits),
                )
                .map_err(|r| self.render(&r)),
            Err(r) => Err(self.refuse(&text, r)),
        }
    }

    /// ParameterStatus as the upstream sent it, except the upstream login name, shown as the
    /// agent; the client encoding is noted on the way (the server reports every change).
    pub fn rewrite_parameter_status(&self, frame: &Frame) -> Bytes {
        let body = frame.body();
        let name_end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
        match &body[..name_end] {
            b"session_authorization" => {
                return msg::parameter_status("session_authorization", self.session.agent());
            }
            b"client_encoding" => {
                let value = body.get(name_end + 1..).unwrap_or(b"");
                let value = value.split(|b| *b == 0).next().unwrap_or(b"");
                self.observe_client_encoding(&String::from_utf8_lossy(value));
            }
            name if name == super::sql_reading::SETTING.as_bytes() => {
                let value = body.get(name_end + 1..).unwrap_or(b"");
                let value = value.split(|b| *b == 0).next().unwrap_or(b"");
                let value = String::from_utf8_lossy(value);
                if let Err(r) = super::sql_reading::check(super::sql_reading::SETTING, &value) {
                    if self.ending.get().is_none() {
                        let _ = self.ending.set(self.refuse_connection(r));
                    }
                }
            }
            _ => {}
        }
        frame.raw.clone()
    }
}

/// How a statement the verdict lets run is recorded: its decision, rule and reason (`None`: the
/// verdict refuses it). `tollgate explain` says the same.
pub fn recorded_decision(verdict: &Verdict) -> Option<(Decision, Option<String>, Option<String>)> {
    match (verdict.outcome, &verdict.denial, &verdict.rewrite) {
        (Outcome::Block, _, _) => None,
        (Outcome::WouldBlock, Some(d), _) => Some((
            Decision::WouldBlock,
            Some(d.rule.clone()),
            Some(d.reason.clone()),
        )),
        (_, _, Some(plan)) => Some((
            if plan.masks {
                Decision::Masked
            } else {
                Decision::Rewritten
            },
            Some(plan.rules.join(", ")),
            Some(format!("reads protected {}", plan.tables.join(", "))),
        )),
        _ => Some((Decision::Allowed, None, None)),
    }
}

/// The rule of a `query` or `explain` text holding more than one statement.
pub const ONE_STATEMENT_RULE: &str = "builtin: one-statement";

/// The MCP query tool runs one statement per call (as the extended protocol does): a text
/// holding more is refused before it is charged to the rate (each was charged, then the server
/// refused the text with 42601: a re-review), and the explains say so.
pub fn more_than_one(sql: &str) -> Option<Refusal> {
    (crate::policy::sql::count_statements(sql) > 1).then(|| {
        Refusal::new(
            RefusalClass::Syntax,
            ONE_STATEMENT_RULE,
            "the query tool runs one statement per call: send each statement in its own call",
        )
    })
}

/// What a dry run says of `text` (`tollgate explain`, the MCP `explain` tool): how its decision
/// record would read if it runs (`Ok`: decision, rule, reason), or the refusal it would get: the
/// policy's, a text over the rate's burst (from a full bucket), or, with `one_statement` (the
/// MCP `query` tool), a text of several statements. One place, so the two explains say what
/// the doors do.
pub fn dry_run(
    text: &str,
    verdict: &Verdict,
    limits: &Limits,
    one_statement: bool,
) -> Result<(Decision, Option<String>, Option<String>), Refusal> {
    let Some(recorded) = recorded_decision(verdict) else {
        return Err(verdict.denial.clone().unwrap_or_else(|| {
            Refusal::permission("default-deny", "statement refused by policy")
        }));
    };
    if one_statement {
        if let Some(several) = more_than_one(text) {
            return Err(several);
        }
    }
    let taken = statements(text, verdict, limits);
    if let Some((exceeded, rule)) = crate::ratelimit::Bucket::default().over_rate(limits, taken) {
        return Err(Refusal::new(
            RefusalClass::RateLimited,
            rule,
            exceeded.to_string(),
        ));
    }
    Ok(recorded)
}

/// How many of the rate's tokens a text takes: one per statement it holds (a Query may hold
/// many; the rate holds per statement), at least one per request.
pub fn statements(text: &str, verdict: &Verdict, limits: &Limits) -> u32 {
    let n = match verdict.statements {
        // Not analysed (the passthrough fast path): counted only when a rate needs it.
        0 if limits.rate.is_some() => crate::policy::sql::count_statements(text),
        n => n,
    };
    u32::try_from(n.max(1)).unwrap_or(u32::MAX)
}
