//! One client connection, phase by phase: startup → agent auth → routing → upstream login → relay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::{debug, info, warn, Instrument};

use super::backend::{self as msg, PgErrorFields};
use super::cancel::CancelTarget;
use super::client_auth::{self, ClientAuthError};
use super::encryption::{self, EncryptionError, TlsInfo};
use super::frame::{Frame, FrameReader};
use super::from_client::{self, ClientEnd, FromClientError};
use super::pending::{AuditTicket, Pending};
use super::startup::{self, StartupError, StartupParams, StartupRequest};
use super::to_client::{self, ToClientError};
use super::upstream::{self, UpstreamError};
use crate::audit::{AuditEvent, Decision, EventKind};
use crate::gateway::Gateway;
use crate::policy::{Outcome, SessionFacts, Verdict};
use crate::tls::{NetRead, NetWrite};

/// A statement as checked when it was prepared (extended protocol).
#[derive(Debug)]
pub struct Checked {
    pub text: Box<str>,
    pub verdict: Arc<Verdict>,
    /// The policy version the verdict was reached under; a reload means "judge again".
    pub version: u64,
}

/// What both halves of a running session share: who, where, and the gateway's services.
pub struct SessionCtx {
    gw: Arc<Gateway>,
    pub id: u64,
    pub agent: Arc<str>,
    pub upstream: Arc<str>,
    client_addr: String,
    /// The agent's rate bucket (shared with its other sessions).
    bucket: Arc<crate::ratelimit::Bucket>,
    /// Held for the life of the session (connection caps).
    _slot: Option<crate::ratelimit::ConnectionSlot>,
    /// The agent's counters on this upstream (statements by decision, sessions).
    pub stats: Arc<crate::telemetry::PairStats>,
    _open: crate::telemetry::OpenSession,
}

/// The limits a session applies to each statement, read from the current policy.
#[derive(Debug, Clone, Default)]
pub struct StatementLimits {
    pub max_rows: Option<(u64, String)>,
    pub on_max_rows: crate::policy::limits::RowLimitMode,
    pub statement_timeout: Option<(Duration, String)>,
    pub idle_in_transaction_timeout: Option<(Duration, String)>,
}

pub async fn handle(gw: Arc<Gateway>, socket: TcpStream, peer: SocketAddr) {
    let id = gw.next_session_id();
    let span = tracing::info_span!("pg_session", session = id, client = %peer);
    async move {
        let _live = gw.lifecycle.enter();
        let _gauge = crate::telemetry::GaugeGuard::new(metrics::gauge!(
            "tollgate_client_connections",
            "protocol" => "postgres"
        ));
        if let Err(e) = run(gw.clone(), socket, peer, id).await {
            debug!(error = %e, "session ended with an error");
        }
    }
    .instrument(span)
    .await
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("{0}")]
    Startup(#[from] StartupError),
    #[error("{0}")]
    Encryption(#[from] EncryptionError),
    #[error("{0}")]
    Auth(#[from] ClientAuthError),
    #[error("client refused: {}", .0.message)]
    Refused(PgErrorFields),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("startup timed out")]
    Timeout,
}

async fn run(
    gw: Arc<Gateway>,
    socket: TcpStream,
    peer: SocketAddr,
    id: u64,
) -> Result<(), SessionError> {
    socket.set_nodelay(true)?;
    let auth_timeout = Duration::from_millis(gw.config.limits.auth_timeout_ms);
    let deadline = tokio::time::Instant::now() + auth_timeout;
    // Encryption first: a TLS client gets every later message (errors included) inside TLS.
    let negotiated =
        match tokio::time::timeout_at(deadline, encryption::negotiate(socket, gw.tls.current()))
            .await
        {
            Err(_) => return Err(SessionError::Timeout),
            Ok(Ok(n)) => n,
            Ok(Err(e @ (EncryptionError::Startup(_) | EncryptionError::Refused(_)))) => {
                return Err(e.into());
            }
            Ok(Err(e)) => {
                metrics::counter!("tollgate_tls_handshake_failures_total", "protocol" => "postgres")
                    .increment(1);
                return Err(e.into());
            }
        };
    let (rd, mut wr) = negotiated.stream.into_split();
    // Before authentication nothing needs more than a SCRAM message (PostgreSQL allows 64 KiB).
    let mut reader = FrameReader::from_parts(rd, negotiated.buffered, LOGIN_MESSAGE_LIMIT);
    let conn = Conn {
        peer,
        id,
        tls: negotiated.tls,
    };

    let phase = tokio::time::timeout_at(
        deadline,
        login(&gw, &mut reader, &mut wr, &conn, negotiated.first_packet),
    )
    .await;
    let (params, ctx) = match phase {
        Err(_) => {
            send_fatal(
                &mut wr,
                &PgErrorFields::fatal("08006", "tollgate: authentication timed out"),
            )
            .await;
            return Err(SessionError::Timeout);
        }
        Ok(Ok(Some(x))) => x,
        Ok(Ok(None)) => return Ok(()), // a cancel request, already handled
        Ok(Err(e)) => {
            if let Some(fields) = refusal_of(&e) {
                send_fatal(&mut wr, fields).await;
            }
            return Err(e);
        }
    };
    reader.set_limit(gw.config.limits.max_message_bytes);
    relay(gw, ctx, params, reader, wr).await
}

/// What is known about the connection before login.
struct Conn {
    peer: SocketAddr,
    id: u64,
    tls: Option<TlsInfo>,
}

const LOGIN_MESSAGE_LIMIT: usize = 64 * 1024;

fn refusal_of(e: &SessionError) -> Option<&PgErrorFields> {
    match e {
        SessionError::Startup(StartupError::Refused(f))
        | SessionError::Auth(ClientAuthError::Refused(f))
        | SessionError::Refused(f) => Some(f),
        _ => None,
    }
}

async fn send_fatal(wr: &mut NetWrite, fields: &PgErrorFields) {
    let _ = wr.write_all(&fields.encode()).await;
    let _ = wr.shutdown().await;
}

/// The startup's user name as recorded before it is known to be an agent: bounded, so a huge
/// name cannot inflate the audit log.
fn shown_user(user: &str) -> String {
    user.chars().take(64).collect()
}

/// A connection refused before authentication: a `session` record (blocked, `reason`), then the
/// error to send.
fn refused_before_auth(
    gw: &Gateway,
    conn: &Conn,
    user: &str,
    reason: &str,
    fields: PgErrorFields,
) -> SessionError {
    gw.audit_session(
        conn.id,
        &shown_user(user),
        None,
        conn.peer,
        Decision::Blocked,
        reason,
    );
    SessionError::Refused(fields)
}

/// Startup, authentication and routing. `None` when the connection was a cancel request.
async fn login(
    gw: &Arc<Gateway>,
    reader: &mut FrameReader<NetRead>,
    wr: &mut NetWrite,
    conn: &Conn,
    first_packet: Option<Bytes>,
) -> Result<Option<(StartupParams, SessionCtx)>, SessionError> {
    let (peer, id) = (conn.peer, conn.id);
    let params = match startup::negotiate(reader, first_packet).await? {
        StartupRequest::Cancel { pid, secret } => {
            // Accepted in plain text even where TLS is required, as PostgreSQL does (libpq
            // before 17 always sends cancels unencrypted); the key itself is the secret.
            gw.cancels.cancel(pid, secret).await;
            return Ok(None);
        }
        StartupRequest::Startup(p) => p,
    };
    if conn.tls.is_none() && gw.config.listen.postgres_require_tls {
        // Like pg_hba.conf's `hostssl`: refused before authentication.
        let rule = crate::config::ListenConfig::POSTGRES_REQUIRE_TLS_RULE;
        return Err(refused_before_auth(
            gw,
            conn,
            &params.user,
            &format!("plain connection refused: TLS required (rule: {rule})"),
            PgErrorFields::fatal(
                "28000",
                format!("tollgate: this listener requires TLS; connect with sslmode=require or stronger (rule: {rule})"),
            ),
        ));
    }
    if params.minor_version > 0 || !params.protocol_options.is_empty() {
        wr.write_all(&msg::negotiate_protocol_version(
            0,
            params.protocol_options.clone(),
        ))
        .await?;
    }
    // A name no agent can have gets the same answer as a wrong token, without an exchange, and a
    // record that cannot be inflated by a huge name.
    if !crate::auth::valid_agent_name(&params.user) {
        metrics::counter!("tollgate_auth_failures_total", "protocol" => "postgres").increment(1);
        let shown = shown_user(&params.user);
        return Err(refused_before_auth(
            gw,
            conn,
            &params.user,
            "authentication failed: invalid agent name",
            PgErrorFields::fatal(
                "28P01",
                format!("password authentication failed for user \"{shown}\""),
            ),
        ));
    }
    let agents = gw.agents.load_full();
    let end_point = conn.tls.as_ref().and_then(|t| t.end_point.as_deref());
    if let Err(e) = client_auth::authenticate(
        reader,
        wr,
        &agents,
        &params.user,
        gw.mock_secret(),
        end_point,
    )
    .await
    {
        gw.audit_session(
            id,
            &params.user,
            None,
            peer,
            Decision::Blocked,
            "authentication failed",
        );
        return Err(e.into());
    }
    let agent: Arc<str> = params.user.as_str().into();
    if !gw.upstreams.load().contains_key(&params.database) {
        return Err(SessionError::Refused(PgErrorFields::fatal(
            "3D000",
            format!("database \"{}\" does not exist", params.database),
        )));
    }
    // A login refused after authentication: audited, then FATAL naming the rule.
    let refuse = |code: &'static str, reason: &str, rule: &str| {
        gw.audit_session(
            id,
            &params.user,
            Some(&params.database),
            peer,
            Decision::Blocked,
            reason,
        );
        SessionError::Refused(PgErrorFields::fatal(
            code,
            format!("tollgate: {reason} (rule: {rule})"),
        ))
    };
    if conn.tls.is_none() {
        if let Some(req) = gw.policy.tls_requirement(&agent) {
            let reason = format!(
                "agent \"{agent}\" must connect over TLS; this connection is not encrypted"
            );
            if req.enforced {
                return Err(refuse("28000", &reason, &req.rule));
            }
            gw.audit_session(
                id,
                &params.user,
                Some(&params.database),
                peer,
                Decision::WouldBlock,
                &format!("{reason} (rule: {}, shadow mode)", req.rule),
            );
        }
    }
    if let Err(d) = gw.policy.may_connect(&params.user, &params.database) {
        return Err(refuse("42501", &d.reason, &d.rule));
    }
    let per_agent = gw
        .policy
        .agent_policy(&agent)
        .and_then(|p| p.limits.max_connections.clone());
    let slot = match gw.limiter.connect(
        &agent,
        per_agent.as_ref().map(|(n, _)| *n),
        gw.config.limits.max_client_connections,
    ) {
        Ok(slot) => slot,
        Err(e) => {
            let rule = match (&e, &per_agent) {
                (crate::ratelimit::TooManyConnections::Agent(_), Some((_, rule))) => rule.clone(),
                _ => "tollgate.toml: limits.max_client_connections".to_owned(),
            };
            metrics::counter!("tollgate_connection_limit_hits_total", "protocol" => "postgres")
                .increment(1);
            return Err(refuse(
                "53300",
                &format!("too many connections: {e}"),
                &rule,
            ));
        }
    };
    let upstream: Arc<str> = params.database.as_str().into();
    let stats = gw
        .stats
        .pair(&agent, &upstream, crate::audit::Protocol::Postgres);
    let ctx = SessionCtx {
        gw: gw.clone(),
        id,
        bucket: gw.limiter.bucket(&agent),
        agent,
        upstream,
        client_addr: peer.to_string(),
        _slot: Some(slot),
        _open: stats.open_session(),
        stats,
    };
    Ok(Some((params, ctx)))
}

async fn relay(
    gw: Arc<Gateway>,
    ctx: SessionCtx,
    params: StartupParams,
    reader: FrameReader<NetRead>,
    mut wr: NetWrite,
) -> Result<(), SessionError> {
    let Some(target) = gw.upstreams.load().get(ctx.upstream.as_ref()).cloned() else {
        return Ok(()); // the upstream was checked at login; a reload cannot remove it
    };
    let timeout = Duration::from_millis(gw.config.limits.upstream_connect_timeout_ms);
    let up = match upstream::connect(&target, &params.settings, timeout).await {
        Ok(up) => up,
        Err(e) => {
            metrics::counter!("tollgate_upstream_errors_total", "upstream" => target.name.clone())
                .increment(1);
            warn!(upstream = %target.name, error = %e, "upstream login failed");
            let fields = upstream_failure(&target.name, &e);
            send_fatal(&mut wr, &fields).await;
            return Err(SessionError::Refused(fields));
        }
    };
    let _upstream_gauge = crate::telemetry::upstream_connection(&target.name);
    let cancel = CancelTarget {
        addr: up.addr,
        pid: up.backend_pid,
        secret: up.backend_secret,
        tls: target.tls.clone(),
    };
    let (pid, secret, _cancel_guard) = gw.cancels.register(cancel.clone());
    let ctx = Arc::new(ctx);
    let mut hello = Vec::new();
    for f in &up.parameter_frames {
        hello.extend_from_slice(&ctx.rewrite_parameter_status(f));
    }
    hello.extend_from_slice(&msg::backend_key_data(pid, secret));
    hello.extend_from_slice(&msg::ready_for_query(b'I'));
    wr.write_all(&hello).await?;
    gw.audit_session(
        ctx.id,
        &ctx.agent,
        Some(&ctx.upstream),
        ctx.client_addr
            .parse()
            .ok()
            .unwrap_or(([0, 0, 0, 0], 0).into()),
        Decision::Allowed,
        "session opened",
    );
    info!(agent = %ctx.agent, upstream = %ctx.upstream, "session started");

    let pending = Pending::default();
    let mut to_client_fut = Box::pin(to_client::run(
        ctx.clone(),
        pending.clone(),
        up.reader,
        &mut wr,
        cancel,
    ));
    let from_client_fut = from_client::run(ctx.clone(), pending.clone(), reader, up.writer);
    let mut phase = gw.lifecycle.subscribe();
    let result = tokio::select! {
        r = from_client_fut => ClientSide(r),
        r = &mut to_client_fut => UpstreamSide(r),
        // Shutting down: once nothing runs (or at the deadline) the session ends like a server's.
        _ = drained(&mut phase, &pending) => ClientSide(Err(FromClientError::Fatal(
            PgErrorFields::fatal("57P01", "terminating connection due to administrator command (tollgate is shutting down)"),
        ))),
    };
    drop(to_client_fut);
    // Statements still in flight when the session ends get an outcome record.
    for e in pending.drain() {
        if let super::pending::Expect::Simple {
            ticket: Some(t), ..
        }
        | super::pending::Expect::Execute {
            ticket: Some(t), ..
        } = e
        {
            ctx.audit_unknown_outcome(t);
        }
    }
    match result {
        ClientSide(Ok(ClientEnd::Terminated | ClientEnd::Closed)) => Ok(()),
        ClientSide(Err(FromClientError::Fatal(fields))) => {
            send_fatal(&mut wr, &fields).await;
            Err(SessionError::Refused(fields))
        }
        ClientSide(Err(e)) => {
            if let FromClientError::Upstream(_) = e {
                send_fatal(
                    &mut wr,
                    &PgErrorFields::fatal("08006", "tollgate: connection to upstream lost"),
                )
                .await;
            }
            Err(SessionError::Io(std::io::Error::other(e.to_string())))
        }
        UpstreamSide(Ok(())) => Ok(()),
        UpstreamSide(Err(ToClientError::Client(e))) => Err(SessionError::Io(e)),
        UpstreamSide(Err(e)) => {
            metrics::counter!("tollgate_upstream_errors_total", "upstream" => target.name.clone())
                .increment(1);
            send_fatal(
                &mut wr,
                &PgErrorFields::fatal(
                    "08006",
                    format!("tollgate: connection to upstream \"{}\" lost", target.name),
                ),
            )
            .await;
            Err(SessionError::Io(std::io::Error::other(e.to_string())))
        }
    }
}

/// Resolves when the gateway drains and this session has nothing running (no reply owed or
/// unwritten, no open transaction); or at once when the drain deadline has passed.
async fn drained(
    phase: &mut tokio::sync::watch::Receiver<crate::gateway::Phase>,
    pending: &Pending,
) {
    use crate::gateway::Phase;
    loop {
        let now = *phase.borrow_and_update();
        match now {
            Phase::Closing => return,
            Phase::Draining if pending.settled() && pending.tx_status() == b'I' => return,
            _ => {}
        }
        // Polled while draining (the reply side's notifications belong to the client side).
        tokio::select! {
            changed = phase.changed() => {
                if changed.is_err() {
                    return std::future::pending().await;
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(20)), if now == Phase::Draining => {}
        }
    }
}

enum SideResult<A, B> {
    ClientSide(A),
    UpstreamSide(B),
}
use SideResult::{ClientSide, UpstreamSide};

fn upstream_failure(name: &str, e: &UpstreamError) -> PgErrorFields {
    let detail = match e {
        UpstreamError::Connect(_) | UpstreamError::Timeout(_) => {
            "the upstream is not accepting connections"
        }
        UpstreamError::LoginRefused(_) => "the upstream refused tollgate's credentials",
        _ => "the upstream did not complete the login",
    };
    PgErrorFields::fatal(
        "08006",
        format!("tollgate: upstream \"{name}\" is unavailable"),
    )
    .with_detail(detail)
}

impl SessionCtx {
    fn event(&self, kind: EventKind, decision: Decision) -> AuditEvent {
        AuditEvent {
            kind,
            agent: self.agent.to_string(),
            protocol: crate::audit::Protocol::Postgres,
            upstream: Some(self.upstream.to_string()),
            session: self.id,
            client_addr: Some(self.client_addr.clone()),
            decision,
            ..AuditEvent::default()
        }
    }

    pub fn check_sql(&self, text: &str, facts: &SessionFacts) -> Arc<Verdict> {
        let max = self.gw.config.limits.max_statement_bytes;
        if text.len() > max {
            return Arc::new(Verdict {
                outcome: Outcome::Block,
                denial: Some(crate::refusal::Refusal::new(
                    crate::refusal::RefusalClass::TooLarge,
                    "builtin: statement-size",
                    format!(
                        "statement of {} bytes exceeds limits.max_statement_bytes ({max})",
                        text.len()
                    ),
                )),
                effects: Vec::new(),
                rewrite: None,
            });
        }
        let policy = &self.gw.policy;
        if let Some(v) = policy.cached(&self.agent, &self.upstream, text) {
            return v;
        }
        // Analysis takes tens of microseconds, and a long statement far more: tell the runtime
        // so other sessions on this worker are moved instead of waiting behind it.
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(|| {
                policy.check_sql(&self.agent, &self.upstream, text, facts)
            }),
            _ => policy.check_sql(&self.agent, &self.upstream, text, facts),
        }
    }

    /// The error the agent sees for a refused statement: names the rule.
    /// Records the time tollgate spent on a statement before forwarding it.
    pub fn record_overhead(&self, started: Instant) {
        self.gw.latency.pg_overhead.record(started.elapsed());
    }

    pub fn refusal(&self, verdict: &Verdict) -> PgErrorFields {
        match &verdict.denial {
            Some(d) => PgErrorFields::error(d.class.sqlstate(), d.message())
                .with_detail(format!(
                    "agent \"{}\", upstream \"{}\"",
                    self.agent, self.upstream
                ))
                .with_hint(
                    "the statement was refused by tollgate's policy; see `tollgate explain`",
                ),
            None => PgErrorFields::error("42501", "tollgate: statement refused by policy"),
        }
    }

    fn audit_unavailable() -> PgErrorFields {
        PgErrorFields::error(
            "58030",
            "tollgate: the audit log cannot be written; the statement was not run",
        )
    }

    /// Records the decision before a statement is forwarded. `Ok(ticket)`: forward it;
    /// `Err(fields)`: refuse it with that error (policy refusal, or the audit log failing).
    pub fn admit(
        &self,
        text: &str,
        verdict: &Verdict,
    ) -> Result<Option<AuditTicket>, PgErrorFields> {
        let decision = match (verdict.outcome, &verdict.rewrite) {
            (Outcome::Allow, Some(plan)) if plan.masks => Decision::Masked,
            (Outcome::Allow, Some(_)) => Decision::Rewritten,
            (Outcome::Allow, None) => Decision::Allowed,
            (Outcome::WouldBlock, _) => Decision::WouldBlock,
            (Outcome::Block, _) => Decision::Blocked,
        };
        let mut ev = self.event(EventKind::Decision, decision);
        ev.statement = Some(self.gw.audit_text(truncated(text, AUDIT_STATEMENT_LIMIT)));
        if let Some(d) = &verdict.denial {
            ev.rule = Some(d.rule.clone());
            ev.reason = Some(d.reason.clone());
        } else if let Some(plan) = &verdict.rewrite {
            ev.rule = Some(plan.rules.join(", "));
            ev.reason = Some(format!("reads protected {}", plan.tables.join(", ")));
        }
        if decision == Decision::Blocked {
            ev.sqlstate = verdict
                .denial
                .as_ref()
                .map(|d| d.class.sqlstate().to_string());
            self.stats.statement(Decision::Blocked);
            if let Some(d) = &verdict.denial {
                crate::telemetry::refusal("postgres", &d.rule);
            }
            if let Err(e) = self.gw.audit.append(&ev) {
                warn!(error = %e, "audit write failed for a blocked statement");
            }
            return Err(self.refusal(verdict));
        }
        if let Some(refusal) = self.over_rate(&mut ev) {
            self.stats.statement(Decision::Blocked);
            return Err(refusal);
        }
        self.stats.statement(decision);
        match self.gw.audit.append(&ev) {
            Ok(seq) => Ok(Some(AuditTicket {
                seq,
                started: Instant::now(),
                would_block: decision == Decision::WouldBlock,
            })),
            Err(e) => {
                warn!(error = %e, "audit write failed: refusing the statement");
                Err(Self::audit_unavailable())
            }
        }
    }

    /// The agent's current limits, as each statement applies them.
    pub fn statement_limits(&self) -> StatementLimits {
        match self.gw.policy.agent_policy(&self.agent) {
            Some(p) => StatementLimits {
                max_rows: p.limits.max_rows.clone(),
                on_max_rows: p.limits.on_max_rows,
                statement_timeout: p.limits.statement_timeout.clone(),
                idle_in_transaction_timeout: p.limits.idle_in_transaction_timeout.clone(),
            },
            None => StatementLimits::default(),
        }
    }

    /// Takes one statement from the agent's rate bucket; over the rate, audits the refusal
    /// (turning `ev` into it) and returns the error.
    fn over_rate(&self, ev: &mut AuditEvent) -> Option<PgErrorFields> {
        let policy = self.gw.policy.agent_policy(&self.agent)?;
        let (exceeded, rule) = self.bucket.over_rate(&policy.limits)?;
        let reason = format!("{exceeded} (agent \"{}\")", self.agent);
        self.stats
            .rate_limited
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ev.decision = Decision::Blocked;
        ev.rule = Some(rule.to_string());
        ev.reason = Some(reason.clone());
        ev.sqlstate = Some("53400".into());
        if let Err(e) = self.gw.audit.append(ev) {
            warn!(error = %e, "audit write failed for a rate-limited statement");
        }
        Some(
            PgErrorFields::error("53400", format!("tollgate: {reason} (rule: {rule})")).with_hint(
                format!("retry after {} ms", exceeded.retry_after.as_millis().max(1)),
            ),
        )
    }

    /// The text to forward for an admitted-to-be statement: `Ok(None)` = unchanged, `Ok(Some)` =
    /// its masking rewrite, `Err` = the rewrite failed (audited as blocked: refuse it).
    pub fn forwarded_text(
        &self,
        text: &str,
        verdict: &Verdict,
    ) -> Result<Option<String>, PgErrorFields> {
        match verdict.forwarded_text(text) {
            Ok(std::borrow::Cow::Borrowed(_)) => Ok(None),
            Ok(std::borrow::Cow::Owned(rewritten)) => Ok(Some(rewritten)),
            Err(denial) => {
                let blocked = Verdict {
                    outcome: Outcome::Block,
                    denial: Some(denial),
                    effects: Vec::new(),
                    rewrite: None,
                };
                Err(self
                    .admit(text, &blocked)
                    .err()
                    .unwrap_or_else(|| self.refusal(&blocked)))
            }
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
        let blocked = Verdict {
            outcome: Outcome::Block,
            denial: Some(crate::refusal::Refusal::new(
                crate::refusal::RefusalClass::Unsupported,
                new.map(|p| p.rules.join(", ")).unwrap_or_default(),
                "the policy's masking changed since this statement was prepared; prepare it again",
            )),
            effects: Vec::new(),
            rewrite: None,
        };
        Some(
            self.admit(&checked.text, &blocked)
                .err()
                .unwrap_or_else(|| self.refusal(&blocked)),
        )
    }

    /// Records an Execute of a statement checked at Parse (or of a DECLAREd cursor's portal).
    /// Records an Execute of a statement checked at Parse (judged again if the policy changed
    /// since), or of a portal tollgate did not bind (a cursor checked when it was DECLAREd).
    pub fn record_execute(
        &self,
        portal: &str,
        checked: Option<&Checked>,
        facts: &SessionFacts,
    ) -> Result<Option<AuditTicket>, PgErrorFields> {
        match checked {
            Some(c) => match self.recheck(c, facts) {
                Some(fresh) => match self.masking_changed(c, &fresh) {
                    Some(refusal) => Err(refusal),
                    None => self.admit(&c.text, &fresh),
                },
                None => self.admit(&c.text, &c.verdict),
            },
            None => {
                // The agent must still be allowed on this upstream under the current policy.
                if let Err(d) = self.gw.policy.may_connect(&self.agent, &self.upstream) {
                    let verdict = Verdict {
                        outcome: Outcome::Block,
                        denial: Some(d),
                        effects: Vec::new(),
                        rewrite: None,
                    };
                    return self.admit(&format!("-- execute portal \"{portal}\""), &verdict);
                }
                let allowed = Verdict {
                    outcome: Outcome::Allow,
                    denial: None,
                    effects: Vec::new(),
                    rewrite: None,
                };
                self.admit(
                    &format!("-- execute portal \"{portal}\" (a cursor checked when declared)"),
                    &allowed,
                )
            }
        }
    }

    pub fn policy_version(&self) -> u64 {
        self.gw.policy.version()
    }

    /// A fresh verdict when `checked` was judged under an older policy version.
    pub fn recheck(&self, checked: &Checked, facts: &SessionFacts) -> Option<Arc<Verdict>> {
        (checked.version != self.policy_version()).then(|| self.check_sql(&checked.text, facts))
    }

    /// Audits a Query/Parse whose text is not valid UTF-8 (refused before any analysis).
    pub fn audit_unreadable(&self, what: &str) {
        let mut ev = self.event(EventKind::Decision, Decision::Blocked);
        ev.statement = Some(format!("<{what} message with invalid UTF-8>"));
        ev.rule = Some("builtin: encoding".into());
        ev.sqlstate = Some("22021".into());
        if let Err(e) = self.gw.audit.append(&ev) {
            warn!(error = %e, "audit write failed for an unreadable statement");
        }
    }

    pub fn refuse_function_call(&self) -> PgErrorFields {
        let verdict = Verdict {
            outcome: Outcome::Block,
            denial: Some(crate::refusal::Refusal::permission(
                "builtin: fastpath",
                "fast-path function calls (FunctionCall messages) are not allowed",
            )),
            effects: Vec::new(),
            rewrite: None,
        };
        self.admit("-- fast-path FunctionCall", &verdict)
            .err()
            .unwrap_or_else(|| self.refusal(&verdict))
    }

    /// The session ended before the statement's reply: it may or may not have run to completion.
    pub fn audit_unknown_outcome(&self, ticket: AuditTicket) {
        let mut ev = self.event(
            EventKind::Outcome,
            if ticket.would_block {
                Decision::WouldBlock
            } else {
                Decision::Allowed
            },
        );
        ev.ref_seq = Some(ticket.seq);
        ev.duration_us = Some(ticket.started.elapsed().as_micros() as u64);
        ev.reason = Some("outcome unknown: the session ended before the reply".into());
        if let Err(e) = self.gw.audit.append_deferred(&ev) {
            warn!(error = %e, "audit outcome write failed");
        }
    }

    /// The outcome record of a forwarded statement.
    pub fn audit_outcome(
        &self,
        ticket: AuditTicket,
        rows: Option<u64>,
        error: Option<(String, String)>,
    ) {
        let decision = match (&error, ticket.would_block) {
            (Some(_), _) => Decision::Error,
            (None, true) => Decision::WouldBlock,
            (None, false) => Decision::Allowed,
        };
        let mut ev = self.event(EventKind::Outcome, decision);
        ev.ref_seq = Some(ticket.seq);
        ev.rows = rows;
        let took = ticket.started.elapsed();
        self.gw.latency.pg_upstream.record(took);
        ev.duration_us = Some(took.as_micros() as u64);
        if let Some((code, message)) = error {
            self.stats
                .errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            ev.sqlstate = (!code.is_empty()).then_some(code);
            ev.error = Some(message);
        }
        if let Err(e) = self.gw.audit.append_deferred(&ev) {
            warn!(error = %e, "audit outcome write failed");
        }
    }

    /// ParameterStatus as the upstream sent it, except the upstream login name, shown as the agent.
    pub fn rewrite_parameter_status(&self, frame: &Frame) -> Bytes {
        let body = frame.body();
        let name_end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
        if &body[..name_end] == b"session_authorization" {
            return msg::parameter_status("session_authorization", &self.agent);
        }
        frame.raw.clone()
    }
}

/// Longest statement text recorded whole in the audit log.
const AUDIT_STATEMENT_LIMIT: usize = 64 * 1024;

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
