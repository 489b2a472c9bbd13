//! An admitted session and its statements: the decision (rate bucket, decision record,
//! refusal record and metric), then the outcome, or "abandoned" when the client leaves first —
//! the same records, counters and refusals on every protocol.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tracing::warn;

use super::accept::{check_token, too_many_connections};
use super::record::{login_name, session_record, Who};
use super::Core;
use crate::audit::{AuditError, AuditEvent, Decision, EventKind, Protocol};
use crate::policy::limits::{Limits, Rate};
use crate::ratelimit::{Bucket, ConnectionSlot};
use crate::refusal::{Refusal, RefusalClass};
use crate::telemetry::{OpenSession, PairStats, ProtocolLatency};

/// The agent a session acts for, with what is counted against it: its rate bucket (shared
/// with its other sessions), its connection slot and its counters on this upstream.
pub struct Principal {
    pub agent: Arc<str>,
    pub stats: Arc<PairStats>,
    /// The records' `agent` … `client_addr` members for this session, rendered by its first
    /// record (a principal belongs to one session).
    who_json: std::sync::OnceLock<Arc<[u8]>>,
    bucket: Arc<Bucket>,
    /// Its refusals and `limits.refusals_per_second` (`None`: not paced).
    refusals: Option<(Arc<Bucket>, Rate)>,
    _slot: ConnectionSlot,
    _open: OpenSession,
}

impl Principal {
    pub(super) fn admit(
        core: &Core,
        protocol: Protocol,
        agent: &Arc<str>,
        upstream: &str,
    ) -> Result<Principal, Refusal> {
        let per_agent = core
            .policy
            .agent_policy(agent)
            .and_then(|p| p.limits.max_connections.clone());
        let slot = core
            .limiter
            .connect(
                agent,
                per_agent.as_ref().map(|(n, _)| *n),
                core.limits.max_client_connections,
            )
            .map_err(|e| {
                too_many_connections(&e, per_agent.as_ref().map(|(_, r)| r.as_str()), protocol)
            })?;
        let stats = core.stats.pair(agent, &upstream.into(), protocol);
        Ok(Principal {
            agent: agent.clone(),
            bucket: core.limiter.bucket(agent),
            refusals: core
                .limits
                .refusal_rate()
                .map(|rate| (core.limiter.refusal_bucket(agent), rate)),
            _slot: slot,
            _open: stats.open_session(),
            stats,
            who_json: std::sync::OnceLock::new(),
        })
    }
}

/// What a session is, for both halves of its relay: the core, its id, protocol, upstream and
/// client address. The reply half holds this to record outcomes.
pub struct SessionContext {
    core: Arc<Core>,
    pub id: u64,
    pub protocol: Protocol,
    pub upstream: Arc<str>,
    client_addr: Arc<str>,
    /// Whether the client's connection is TLS: a `require_tls` agent is admitted only then, at
    /// login and at every switch to it (Redis `AUTH`/`HELLO ... AUTH`).
    encrypted: bool,
    latency: ProtocolLatency,
    /// The session is being closed because its client stopped reading
    /// (`limits.client_write_timeout_ms`): what its unanswered statements' records say.
    stalled: std::sync::OnceLock<super::WriteStalled>,
}

/// An admitted session: its context and the agent it acts for (which a Redis `AUTH` may change).
pub struct Session {
    ctx: Arc<SessionContext>,
    principal: Arc<Principal>,
    /// The last record this session chained for its next [`Session::commit`] (0: none).
    due: AtomicU64,
    /// A refusal found its agent over `limits.refusals_per_second`: the session waits in
    /// [`Session::pace_refusals`] before its next message.
    pace_due: AtomicBool,
}

/// A statement the policy lets run (perhaps rewritten, or refused in shadow mode only): what
/// its decision record says.
#[derive(Debug, Clone)]
pub struct Judged {
    /// As recorded: values redacted, bounded, by the front end that knows the protocol.
    pub statement: String,
    /// `Allowed`, `Masked`, `Rewritten` or `WouldBlock`.
    pub decision: Decision,
    pub rule: Option<String>,
    pub reason: Option<String>,
}

impl Judged {
    pub fn allowed(statement: String) -> Judged {
        Judged {
            statement,
            decision: Decision::Allowed,
            rule: None,
            reason: None,
        }
    }
}

/// The decision record of a forwarded statement, which its outcome record will name.
pub struct Ticket {
    seq: u64,
    started: Instant,
    would_block: bool,
    principal: Arc<Principal>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("seq", &self.seq)
            .field("would_block", &self.would_block)
            .finish_non_exhaustive()
    }
}

impl Ticket {
    /// When the statement was forwarded (statement timeouts count from here).
    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }
}

/// Why a login inside a session failed.
#[derive(Debug)]
pub enum ReauthError {
    /// Wrong token or unknown agent (the two are not told apart).
    WrongPass,
    /// The agent may not use this upstream, or is over a connection cap.
    Refused(Refusal),
}

/// How a forwarded statement failed upstream: the native code (SQLSTATE) if there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeError {
    pub code: Option<String>,
    pub message: String,
}

/// Whether a record reaches the disk before the call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// For a caller that forwards as soon as the call returns (an MCP tool).
    Now,
    /// Chained now, written by the session's next [`Session::commit`], which the front end
    /// awaits before it forwards anything (one write for a whole batch).
    Deferred,
}

/// The refusal of a statement whose decision record could not be written.
pub fn audit_unavailable() -> Refusal {
    Refusal::new(
        RefusalClass::AuditUnavailable,
        "builtin: audit",
        "the audit log cannot be written; the statement was not run",
    )
}

impl SessionContext {
    pub(super) fn new(
        core: Arc<Core>,
        id: u64,
        protocol: Protocol,
        upstream: Arc<str>,
        client_addr: Arc<str>,
        encrypted: bool,
    ) -> SessionContext {
        let latency = core.latency.of(protocol).clone();
        SessionContext {
            core,
            id,
            protocol,
            upstream,
            client_addr,
            encrypted,
            latency,
            stalled: std::sync::OnceLock::new(),
        }
    }

    /// How the reply half writes to the client (`limits.client_write_timeout_ms`).
    pub fn client_writes(&self) -> super::ClientWrites {
        super::ClientWrites::new(self.core.limits.client_write_timeout_ms)
    }

    /// [`Self::client_writes`], remembering whether a write was under way.
    pub fn reply_writes(&self) -> super::ReplyWrites {
        super::ReplyWrites::new(self.client_writes())
    }

    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    fn who(&self, agent: Arc<str>) -> Who {
        Who {
            protocol: self.protocol,
            session: self.id,
            agent,
            upstream: Some(self.upstream.clone()),
            client_addr: self.client_addr.clone(),
        }
    }

    /// An event of this session for `principal`, with its who-members rendered once.
    fn event_of(&self, principal: &Principal, kind: EventKind, decision: Decision) -> AuditEvent {
        let mut ev = self.who(principal.agent.clone()).event(kind, decision);
        ev.who = Some(principal.who_json.get_or_init(|| ev.who_members()).clone());
        ev
    }

    fn append(&self, ev: &AuditEvent, write: Write) -> Result<u64, AuditError> {
        match write {
            Write::Now => self.core.audit.append(ev),
            Write::Deferred => self.core.audit.append_deferred(ev),
        }
    }

    /// The outcome record of a forwarded statement (written with the next decision record or
    /// by the periodic flush: a crash can lose an outcome, never a decision).
    pub fn outcome(&self, ticket: Ticket, rows: Option<u64>, error: Option<OutcomeError>) {
        let took = ticket.started.elapsed();
        self.latency.upstream.record(took);
        if error.is_some() {
            ticket
                .principal
                .stats
                .errors
                .fetch_add(1, Ordering::Relaxed);
        } else if !self.core.records_successes(self.protocol) {
            return;
        }
        let decision = match (&error, ticket.would_block) {
            (Some(_), _) => Decision::Error,
            (None, true) => Decision::WouldBlock,
            (None, false) => Decision::Allowed,
        };
        let mut ev = self.event_of(&ticket.principal, EventKind::Outcome, decision);
        ev.ref_seq = Some(ticket.seq);
        ev.rows = rows;
        ev.duration_us = Some(took.as_micros() as u64);
        if let Some(e) = error {
            ev.sqlstate = e.code.filter(|c| !c.is_empty());
            ev.error = Some(recorded_error(
                e.message,
                self.core.audit_config.redact_literals,
            ));
        }
        if let Err(e) = self.core.audit.append_deferred(&ev) {
            warn!(error = %e, "audit outcome write failed");
        }
    }

    /// The session ended before the statement's reply: it may or may not have run. The same
    /// record on every protocol; not counted as an upstream error.
    pub fn abandoned(&self, ticket: Ticket) {
        // Its decision record was lost to a failed write: it was refused, never forwarded (and
        // counted as such by `audit verify`), whatever its front end still held.
        if self.core.audit.lost(ticket.seq) {
            return;
        }
        let decision = if ticket.would_block {
            Decision::WouldBlock
        } else {
            Decision::Allowed
        };
        let mut ev = self.event_of(&ticket.principal, EventKind::Outcome, decision);
        ev.ref_seq = Some(ticket.seq);
        ev.duration_us = Some(ticket.started.elapsed().as_micros() as u64);
        ev.reason = Some(match self.stalled.get() {
            Some(stall) => {
                ev.rule = Some(super::CLIENT_WRITE_TIMEOUT_RULE.into());
                format!("outcome unknown: the session was closed: {stall}")
            }
            None => "outcome unknown: the session ended before the reply".into(),
        });
        if let Err(e) = self.core.audit.append_deferred(&ev) {
            warn!(error = %e, "audit outcome write failed");
        }
    }

    /// Records the time tollgate spent on a statement before forwarding it.
    /// tollgate ends the session because the current policy no longer allows what it holds
    /// (a subscription after a reload): a `session` record, `blocked`, naming the rule.
    pub fn closed_by_policy(&self, agent: Arc<str>, refusal: &crate::refusal::Refusal) {
        session_record(
            &self.core,
            &self.who(agent),
            Decision::Blocked,
            Some(&refusal.rule),
            &refusal.message(),
        );
    }

    pub fn record_overhead(&self, started: Instant) {
        self.latency.overhead.record(started.elapsed());
    }

    /// The connection to the upstream broke mid-session: counted; the message to send.
    pub fn upstream_lost(&self) -> String {
        metrics::counter!("tollgate_upstream_errors_total", "upstream" => self.upstream.to_string())
            .increment(1);
        format!(
            "tollgate: connection to upstream \"{}\" lost",
            self.upstream
        )
    }
}

/// The upstream could not be reached or refused tollgate's login: counted; the message to send
/// (never the upstream's own text, which could name the vaulted login).
pub fn upstream_unavailable(upstream: &str) -> String {
    metrics::counter!("tollgate_upstream_errors_total", "upstream" => upstream.to_string())
        .increment(1);
    format!("tollgate: upstream \"{upstream}\" is unavailable")
}

/// A login the upstream refused for another reason than the credentials, named by the error
/// code it gave only (printable ASCII, at most `max` characters): never its text.
pub fn login_refused_with(code: &str, max: usize) -> String {
    let code: String = code
        .chars()
        .take(max)
        .filter(|c| c.is_ascii_graphic())
        .collect();
    format!("the upstream refused the login ({code})")
}

impl Session {
    pub(super) fn new(ctx: Arc<SessionContext>, principal: Arc<Principal>) -> Session {
        Session {
            ctx,
            principal,
            due: AtomicU64::new(0),
            pace_due: AtomicBool::new(false),
        }
    }

    /// The part the reply half keeps (outcome records).
    pub fn context(&self) -> &Arc<SessionContext> {
        &self.ctx
    }

    pub fn core(&self) -> &Arc<Core> {
        &self.ctx.core
    }

    pub fn id(&self) -> u64 {
        self.ctx.id
    }

    pub fn agent(&self) -> &Arc<str> {
        &self.principal.agent
    }

    pub fn upstream(&self) -> &Arc<str> {
        &self.ctx.upstream
    }

    pub fn stats(&self) -> &PairStats {
        &self.principal.stats
    }

    /// The client stopped reading its replies (`write` failed with this stall): counted, logged
    /// and recorded; the session is being closed, and its unanswered statements' records say
    /// why. Call before those records are written.
    pub fn client_stalled(&self, write: &std::io::Error) {
        let Some(stall) = super::WriteStalled::of(write) else {
            return;
        };
        let _ = self.ctx.stalled.set(*stall);
        metrics::counter!("tollgate_client_write_timeouts_total", "protocol" => self.ctx.protocol.as_str())
            .increment(1);
        warn!(agent = %self.principal.agent, session = self.ctx.id, "{stall}; session closed");
        session_record(
            &self.ctx.core,
            &self.ctx.who(self.principal.agent.clone()),
            Decision::Error,
            Some(super::CLIENT_WRITE_TIMEOUT_RULE),
            &format!("session closed: {stall}"),
        );
    }

    /// The session is being closed by one of its agent's limits (idle in a transaction): logged
    /// and recorded under `rule` with the code the client was sent. Without this record the
    /// close showed only in a metric.
    pub fn closed_by_limit(&self, rule: &str, why: &str, sqlstate: &str) {
        warn!(agent = %self.principal.agent, session = self.ctx.id, rule, "{why}; session closed");
        super::record::session_record_coded(
            &self.ctx.core,
            &self.ctx.who(self.principal.agent.clone()),
            Decision::Blocked,
            Some(rule),
            &format!("session closed: {why}"),
            Some(sqlstate),
        );
    }

    /// The record of an admitted session that never opened: no upstream connection could be
    /// had for it. `rule` names the limit that refused one (a pool's checkout timeout, say:
    /// `blocked`); without it the upstream failed (`error`). `why` is what the client was told,
    /// and `sqlstate` its code where the door has them (PostgreSQL). Without this record an
    /// agent that logged in while its upstream was down left no trace in the log.
    pub fn not_opened(&self, rule: Option<&str>, why: &str, sqlstate: Option<&str>) {
        let decision = if rule.is_some() {
            Decision::Blocked
        } else {
            Decision::Error
        };
        super::record::session_record_coded(
            &self.ctx.core,
            &self.ctx.who(self.principal.agent.clone()),
            decision,
            rule,
            &format!("session not opened: {why}"),
            sqlstate,
        );
    }

    /// The "session opened" record, once the upstream connection is up.
    pub fn opened(&self) {
        session_record(
            &self.ctx.core,
            &self.ctx.who(self.principal.agent.clone()),
            Decision::Allowed,
            None,
            "session opened",
        );
    }

    /// Another agent logs in on this connection (Redis `AUTH` in a session): its token must
    /// match, it must be allowed on this upstream and get a connection slot of its own (the old
    /// agent's is released). On any failure the session stays the old agent's; the failure is
    /// counted and recorded.
    ///
    /// `may_take_over` is asked, for the verified agent, whether it may take the connection
    /// over as it stands (state an earlier agent left on it that this one could not have set,
    /// such as a Redis database it may not `SELECT`); its refusal is recorded like any other.
    pub fn reauthenticate(
        &mut self,
        user: &[u8],
        token: &[u8],
        may_take_over: impl FnOnce(&Arc<str>) -> Result<(), Refusal>,
    ) -> Result<(), ReauthError> {
        let core = self.ctx.core.clone();
        let Some(verified) = check_token(&core, user, token) else {
            metrics::counter!("tollgate_auth_failures_total", "protocol" => self.ctx.protocol.as_str())
                .increment(1);
            // A record each: paced like the session agent's refusals (`AUTH` in a pipeline).
            self.charge_refusal();
            session_record(
                &core,
                &self.ctx.who(login_name(&core, user).into()),
                Decision::Blocked,
                Some(super::accept::AUTHENTICATION_RULE),
                "authentication failed",
            );
            return Err(ReauthError::WrongPass);
        };
        let agent = verified.agent();
        let who = self.ctx.who(agent.clone());
        let admitted = super::accept::check_tls(&core, &who, agent, self.ctx.encrypted)
            .and_then(|()| core.policy.may_connect(agent, &self.ctx.upstream))
            .and_then(|()| may_take_over(agent))
            .and_then(|()| Principal::admit(&core, self.ctx.protocol, agent, &self.ctx.upstream));
        match admitted {
            Ok(principal) => {
                self.principal = Arc::new(principal);
                session_record(
                    &core,
                    &self.ctx.who(agent.clone()),
                    Decision::Allowed,
                    None,
                    "agent switched",
                );
                Ok(())
            }
            Err(refusal) => {
                self.charge_refusal();
                session_record(
                    &core,
                    &self.ctx.who(agent.clone()),
                    Decision::Blocked,
                    Some(&refusal.rule),
                    &refusal.reason,
                );
                crate::telemetry::refusal(self.ctx.protocol, &refusal.rule);
                Err(ReauthError::Refused(refusal))
            }
        }
    }

    fn event(&self, decision: Decision, statement: String) -> AuditEvent {
        let mut ev = self
            .ctx
            .event_of(&self.principal, EventKind::Decision, decision);
        ev.statement = Some(statement);
        ev
    }

    /// Decides to forward a statement: charges the agent's rate (`limits` from its current
    /// policy), writes the decision record durably, counts it. `Err`: refused instead (over the
    /// rate, or the audit log cannot be written), already recorded.
    pub fn decide(&self, judged: Judged, limits: Option<&Limits>) -> Result<Ticket, Refusal> {
        self.decide_statements(judged, limits, 1, Write::Now)
    }

    /// [`Session::decide`], with the record only chained: the front end calls
    /// [`Session::commit`] before it forwards anything, one write for a whole batch.
    pub fn decide_deferred(
        &self,
        judged: Judged,
        limits: Option<&Limits>,
    ) -> Result<Ticket, Refusal> {
        self.decide_statements(judged, limits, 1, Write::Deferred)
    }

    /// [`Session::decide`] for a request that holds `statements` statements (a PostgreSQL
    /// Query with several): the rate charges one token for each, all or none, and a request the
    /// rate refuses runs none of them. One decision record for the request, written as `write`
    /// says.
    pub fn decide_statements(
        &self,
        judged: Judged,
        limits: Option<&Limits>,
        statements: u32,
        write: Write,
    ) -> Result<Ticket, Refusal> {
        let mut ev = self.event(judged.decision, judged.statement);
        let over = limits.and_then(|l| self.principal.bucket.over_rate(l, statements));
        if let Some((exceeded, rule)) = over {
            self.principal
                .stats
                .rate_limited
                .fetch_add(1, Ordering::Relaxed);
            let mut refusal = Refusal::new(
                RefusalClass::RateLimited,
                rule,
                format!("{exceeded} (agent \"{}\")", self.principal.agent),
            );
            if let Some(wait) = exceeded.retry_after() {
                refusal = refusal.with_retry_after(wait);
            }
            return Err(self.refused(ev, refusal, write));
        }
        ev.rule = judged.rule;
        ev.reason = judged.reason;
        self.principal.stats.statement(judged.decision);
        match self.chain(&ev, write) {
            Ok(seq) => Ok(Ticket {
                seq,
                started: Instant::now(),
                would_block: judged.decision == Decision::WouldBlock,
                principal: self.principal.clone(),
            }),
            Err(e) => {
                warn!(error = %e, "audit write failed: refusing the statement");
                Err(audit_unavailable())
            }
        }
    }

    /// A refused statement: its blocked record (durable), counters and refusal metric. Returns
    /// the refusal for the front end to render.
    pub fn refuse(&self, statement: String, refusal: Refusal) -> Refusal {
        let ev = self.event(Decision::Blocked, statement);
        self.refused(ev, refusal, Write::Now)
    }

    /// [`Session::refuse`] with the record chained for the caller's next flush.
    pub fn refuse_deferred(&self, statement: String, refusal: Refusal) -> Refusal {
        let ev = self.event(Decision::Blocked, statement);
        self.refused(ev, refusal, Write::Deferred)
    }

    fn refused(&self, mut ev: AuditEvent, refusal: Refusal, write: Write) -> Refusal {
        // Nothing ran: the head is enough, and refusals cost no rate token, so whole texts
        // would let an agent write the log as fast as it can send.
        ev.statement = ev.statement.map(crate::audit::sql_text::refused);
        ev.decision = Decision::Blocked;
        ev.rule = Some(refusal.rule.clone());
        ev.reason = Some(refusal.reason.clone());
        match self.ctx.protocol {
            // MCP tool errors carry the class's SQLSTATE too (the refusal's one code that does
            // not depend on the wire).
            Protocol::Postgres | Protocol::Mcp => {
                ev.sqlstate = Some(refusal.class.sqlstate().to_string())
            }
            Protocol::Redis => ev.error = Some(refusal.class.resp_code().to_string()),
            Protocol::Mongo => ev.error = Some(refusal.class.mongo_code().1.to_string()),
        }
        self.principal.stats.statement(Decision::Blocked);
        crate::telemetry::refusal(self.ctx.protocol, &refusal.rule);
        self.charge_refusal();
        if let Err(e) = self.chain(&ev, write) {
            warn!(error = %e, "audit write failed for a refused statement");
        }
        refusal
    }

    /// A decision record for something tollgate answered itself (`QUIT`, `AUTH`), chained for
    /// the caller's next flush.
    pub fn note(&self, statement: String, decision: Decision, reason: Option<&str>) {
        self.note_with_code(statement, decision, reason, None)
    }

    /// [`Session::note`] with the SQLSTATE the client was answered (a statement tollgate
    /// cancelled itself: 57014).
    pub fn note_with_code(
        &self,
        statement: String,
        decision: Decision,
        reason: Option<&str>,
        sqlstate: Option<&str>,
    ) {
        if decision == Decision::Blocked {
            // A refusal all the same (messages skipped after one, a substitute's answer).
            self.charge_refusal();
        }
        let mut ev = self.event(decision, statement);
        ev.reason = reason.map(str::to_string);
        ev.sqlstate = sqlstate.map(str::to_string);
        // Counted like every decision record (the metrics fell short of the log: a review).
        self.principal.stats.statement(decision);
        if let Err(e) = self.chain(&ev, Write::Deferred) {
            warn!(error = %e, "audit write failed for a local reply");
        }
    }

    /// Charges a refusal to the agent's pace; one that finds it beyond the pace flags the
    /// session ([`Session::must_pace`]).
    fn charge_refusal(&self) {
        if let Some((bucket, rate)) = &self.principal.refusals {
            bucket.charge(*rate);
            if bucket.ahead(*rate).is_some() {
                self.pace_due.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Appends a record; a deferred one becomes due for this session's next commit.
    fn chain(&self, ev: &AuditEvent, write: Write) -> Result<u64, AuditError> {
        let seq = self.ctx.append(ev, write)?;
        if write == Write::Deferred {
            self.due.fetch_max(seq, Ordering::Relaxed);
        }
        Ok(seq)
    }

    /// Whether a refusal found the agent over `limits.refusals_per_second`: a front end stops
    /// taking messages from its batch and calls [`Session::pace_refusals`].
    pub fn must_pace(&self) -> bool {
        self.pace_due.load(Ordering::Relaxed)
    }

    /// After a refusal that found the agent over `limits.refusals_per_second`: waits until its
    /// refusals fit the rate again. Front ends call it once a batch's replies are on their way,
    /// before reading the client's next message; it costs one load otherwise. An agent that is
    /// refused as fast as it can send (each refusal is a record, and refusals take no rate
    /// token) is thus slowed to the pace on all its sessions, which each wait their turn.
    pub async fn pace_refusals(&self) {
        if let Some(until) = self.pace_deadline() {
            tokio::time::sleep_until(until).await;
        }
    }

    /// [`Session::pace_refusals`] as a deadline, for a front end that has other things to do
    /// while it waits (a PostgreSQL session gives its pooled connection back meanwhile).
    /// `None`: no wait is due; taking it clears the flag.
    pub fn pace_deadline(&self) -> Option<tokio::time::Instant> {
        if !self.pace_due.swap(false, Ordering::Relaxed) {
            return None;
        }
        let (bucket, rate) = self.principal.refusals.as_ref()?;
        let wait = bucket.ahead(*rate)?;
        count_pause(self.ctx.protocol);
        Some(tokio::time::Instant::now() + wait)
    }

    /// Waits until every record this session chained (decisions, refusals, notes) is on disk.
    /// Sessions committing at the same moment share one write (group commit: the audit log's
    /// `commit`). Front ends call it before forwarding what they decided. `Err`: the log cannot
    /// be written, and nothing decided since the last commit may be forwarded.
    pub async fn commit(&self) -> Result<(), Refusal> {
        let seq = self.due.swap(0, Ordering::Relaxed);
        if seq == 0 {
            return Ok(());
        }
        self.ctx.core.audit.commit(seq).await.map_err(|e| {
            warn!(error = %e, "audit write failed: nothing decided since is forwarded");
            audit_unavailable()
        })
    }
}

impl Core {
    /// Before a call of a door without sessions of its own (an MCP tool call): waits while the
    /// agent's refusals are beyond `limits.refusals_per_second`, so calls refused as fast as
    /// they can be sent are slowed like a wire session's messages ([`Session::pace_refusals`]).
    pub async fn pace_refusals_of(&self, agent: &str, protocol: Protocol) {
        let rate = self.limits.refusal_rate();
        if let Some(wait) = rate.and_then(|r| self.limiter.refusals_ahead(agent, r)) {
            count_pause(protocol);
            tokio::time::sleep(wait).await;
        }
    }
}

fn count_pause(protocol: Protocol) {
    metrics::counter!("tollgate_refusal_pauses_total", "protocol" => protocol.as_str())
        .increment(1);
}

/// The longest error text an outcome record holds.
const RECORDED_ERROR: usize = 4096;

/// An outcome's error text as recorded: bounded (a server's error can quote a 200 MB value, and
/// every byte of it would go into the log), and, under `redact_literals`, only tollgate's own
/// words: a server's message quotes the values the statement carried
/// (`invalid input syntax for type integer: "4111-1111-1111-1111"`); its SQLSTATE is kept.
fn recorded_error(message: String, redact_literals: bool) -> String {
    if redact_literals && !message.starts_with("tollgate") {
        return "<the server's message is not recorded: redact_literals>".to_string();
    }
    // A message can quote a literal the statement carried, a password's too
    // (`invalid input syntax for type integer: "host=h password=..."`; a re-review).
    if !message.starts_with("tollgate") && crate::audit::sql_text::mentions_a_password(&message) {
        return "<the server's message is not recorded: it mentions a password>".to_string();
    }
    if message.len() <= RECORDED_ERROR {
        return message;
    }
    let head = crate::audit::sql_text::head(&message, RECORDED_ERROR);
    format!("{head} ... [{} bytes in all]", message.len())
}

#[cfg(test)]
mod recorded_error_tests {
    use super::recorded_error;

    #[test]
    fn errors_are_bounded_and_withheld_under_redaction() {
        let huge = format!(
            "invalid input syntax for type integer: \"{}\"",
            "x".repeat(100_000)
        );
        let r = recorded_error(huge.clone(), false);
        assert!(r.len() < 4200 && r.ends_with(&format!("... [{} bytes in all]", huge.len())));
        assert_eq!(recorded_error("short".into(), false), "short");
        let quoted = "invalid input syntax for type integer: \"4111-1111-1111-1111\"";
        assert!(!recorded_error(quoted.into(), true).contains("4111"));
        let ours = "tollgate: canceling statement due to statement timeout of 5 ms (rule: r)";
        assert_eq!(recorded_error(ours.into(), true), ours);
        let pw = "invalid input syntax for type integer: \"host=h password=SECRETH1\"";
        assert!(!recorded_error(pw.into(), false).contains("SECRETH1"));
    }
}
