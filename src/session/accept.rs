//! A connection from its arrival to its admission: the pre-authentication records, the token
//! checks against stored verifiers, and admission (TLS requirement, policy, connection caps).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use super::login_records::{LoginEvent, LoginWhy};
use super::preauth::PreauthSlot;
use super::record::{known_agent, session_record, shown_login, Who};
use super::statement::{Principal, Session, SessionContext};
use super::{Core, LiveSession};
use crate::audit::{Decision, Protocol};
use crate::auth::{valid_agent_name, ScramVerifier};
use crate::refusal::{Refusal, RefusalClass};
use crate::telemetry::GaugeGuard;
use tracing::Instrument;

/// Rule named when the gateway-wide connection cap refuses a session.
pub const MAX_CLIENT_CONNECTIONS_RULE: &str = "tollgate.toml: limits.max_client_connections";
/// Rule named when too many connections are waiting to authenticate.
pub const MAX_PREAUTH_CONNECTIONS_RULE: &str = "tollgate.toml: limits.max_preauth_connections";

/// Failed logins one connection may make before it is closed.
pub const MAX_LOGIN_FAILURES: u32 = 10;

/// The rule a failed login's record names (a wrong token, an unknown agent): every door's.
pub const AUTHENTICATION_RULE: &str = "builtin: authentication";

/// The rule of a login that names an upstream the gateway does not have (a PostgreSQL
/// database name no upstream answers to).
pub const UNKNOWN_UPSTREAM_RULE: &str = "builtin: unknown-upstream";

/// A connection the gateway accepted, until it ends: its id, its place in the live count and
/// the client gauge, and the deadline its login must meet.
pub struct Accepted {
    core: Arc<Core>,
    pub id: u64,
    pub protocol: Protocol,
    pub peer: SocketAddr,
    client_addr: Arc<str>,
    /// The upstream the client asked for, once known (named in its records).
    upstream: Option<Arc<str>>,
    pub deadline: tokio::time::Instant,
    /// Its place in the core's pre-authentication count (until admitted or dropped).
    preauth: Arc<PreauthSlot>,
    /// Failed logins on this connection ([`Accepted::login_attempts_left`]).
    failures: std::sync::atomic::AtomicU32,
    _live: LiveSession,
    _gauge: GaugeGuard,
}

/// The rule a request refused before it reached a session names ([`Accepted::refuse_request`]).
pub const REQUEST_RULE: &str = "builtin: request";

/// Proof that the client holds the agent's token; only the core makes one.
#[derive(Debug, Clone)]
pub struct Verified {
    agent: Arc<str>,
}

impl Verified {
    pub fn agent(&self) -> &Arc<str> {
        &self.agent
    }
}

/// Which of an agent's verifiers a SCRAM exchange runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifierStrength {
    /// The 4096-iteration verifier, for clients that refuse fewer (RFC 7677's minimum).
    Full,
    /// The login verifier (`scram::LOGIN_ITERATIONS`), for clients that accept it.
    Login,
}

impl Accepted {
    pub(super) fn new(core: Arc<Core>, protocol: Protocol, peer: SocketAddr, id: u64) -> Self {
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(core.limits.auth_timeout_ms);
        let gauge = GaugeGuard::new(metrics::gauge!(
            "tollgate_client_connections",
            "protocol" => protocol.as_str()
        ));
        Accepted {
            // Evictable only where `Accepted::serve` watches for it: an MCP request's session
            // is not served that way (its HTTP connection's place is the evictable one).
            preauth: PreauthSlot::new(
                core.preauth.clone(),
                (protocol != Protocol::Mcp).then_some(peer),
            ),
            failures: std::sync::atomic::AtomicU32::new(0),
            _live: core.lifecycle.enter(),
            _gauge: gauge,
            core,
            id,
            protocol,
            peer,
            client_addr: peer.to_string().into(),
            upstream: None,
            deadline,
        }
    }

    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// Leaves the pre-authentication count (once: at admission or at the end).
    fn leave_preauth(&self) {
        self.preauth.release();
    }

    /// Resolves, with why, when the connection must close before its client has logged in:
    /// the gateway drains (a login half done, a TLS handshake, a MongoDB driver's monitoring
    /// connection, a health check's bare TCP connection: nothing of it runs, so it closes then,
    /// as sessions with nothing running close, instead of holding the exit until the drain
    /// deadline), or its place in the pre-authentication count went to a newcomer from another
    /// address (`preauth`). Never resolves once the client has authenticated: the session's own
    /// drain handling applies.
    ///
    /// Raced against the whole session, so it is polled at each of its wake-ups: once the
    /// client has logged in it answers from atomic loads, without polling the phase (which
    /// cost about 1,000 instructions per statement, callgrind) or the eviction's `Notify`
    /// (about 400).
    fn closed_before_login(&self) -> impl Future<Output = &'static str> + Send + 'static {
        let preauth = self.preauth.clone();
        let mut evicted = Box::pin(preauth.evicted());
        let mut drained = Box::pin(self.core.lifecycle.drained({
            let preauth = preauth.clone();
            move || preauth.held()
        }));
        std::future::poll_fn(move |cx| {
            if evicted.as_mut().poll(cx).is_ready() {
                return Poll::Ready(
                    "its place went to a connection from another address (limits.max_preauth_connections)",
                );
            }
            // Logged in: never resolves (and `drained`, once it has, is not polled again).
            if !preauth.held() {
                return Poll::Pending;
            }
            match drained.as_mut().poll(cx) {
                Poll::Ready(()) if preauth.held() => Poll::Ready("the drain"),
                _ => Poll::Pending,
            }
        })
    }

    /// Runs a door's session (`run`, handed this connection) in the connection's span until it
    /// ends, or until a drain begins while the client has not logged in yet: a half-done login,
    /// a TLS handshake, a bare TCP probe or a MongoDB driver's monitoring connection (which never
    /// logs in) must not hold the process to the drain's deadline.
    pub async fn serve<F, E>(self, run: impl FnOnce(Accepted) -> F)
    where
        F: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let span = self.span();
        let closed_before_login = self.closed_before_login();
        async move {
            // Biased: the session first, at each wake-up; the login check costs loads then.
            tokio::select! {
                biased;
                ended = run(self) => if let Err(e) = ended {
                    tracing::debug!(error = %e, "session ended with an error");
                },
                why = closed_before_login => tracing::debug!("closed before logging in: {why}"),
            }
        }
        .instrument(span)
        .await
    }

    /// The session's span: every log line of the connection carries protocol, id and peer.
    pub fn span(&self) -> tracing::Span {
        tracing::info_span!(
            "session",
            protocol = self.protocol.as_str(),
            session = self.id,
            client = %self.peer
        )
    }

    /// Names the upstream the client asked for in the records that follow.
    pub fn set_upstream(&mut self, upstream: &str) {
        self.upstream = Some(upstream.into());
    }

    fn who(&self, agent: Arc<str>) -> Who {
        Who {
            protocol: self.protocol,
            session: self.id,
            agent,
            upstream: self.upstream.clone(),
            client_addr: self.client_addr.clone(),
        }
    }

    /// A connection refused before authentication (a listener that requires TLS): a blocked
    /// `session` record under the name the client gave (an agent's; others hashed: `login_name`).
    /// Bounded like failed logins (`login_records`): no agent is known to pace.
    pub fn refuse_before_auth(&self, user: &[u8], refusal: &Refusal) {
        crate::telemetry::refusal(self.protocol, &refusal.rule);
        self.login_record(
            LoginEvent::Refused,
            user,
            LoginWhy {
                rule: Some(&refusal.rule),
                reason: &refusal.reason,
                sqlstate: self.pg_code(refusal.class.sqlstate()),
            },
        );
    }

    /// An authenticated login that names an upstream the gateway does not have (a PostgreSQL
    /// database no upstream answers to, answered `3D000` as PostgreSQL answers): recorded as a
    /// refused connection of the agent, bounded like the others (it left no record: a review).
    pub fn refuse_unknown_upstream(&self, user: &[u8], name: &str) {
        crate::telemetry::refusal(self.protocol, UNKNOWN_UPSTREAM_RULE);
        let reason = format!(
            "database \"{}\" does not exist (no upstream of that name)",
            super::record::shown_name(name.as_bytes())
        );
        self.login_record(
            LoginEvent::Refused,
            user,
            LoginWhy {
                rule: Some(UNKNOWN_UPSTREAM_RULE),
                reason: &reason,
                sqlstate: self.pg_code("3D000"),
            },
        );
    }

    /// `code` where the door answers with SQLSTATEs (PostgreSQL), for the record.
    fn pg_code(&self, code: &'static str) -> Option<&'static str> {
        (self.protocol == Protocol::Postgres).then_some(code)
    }

    /// A request of an authenticated agent refused before it reached a session (an MCP call
    /// with malformed arguments, or naming an upstream or tool that is not there): a blocked
    /// record like a refused statement's ([`REQUEST_RULE`], the class's SQLSTATE, the head of
    /// `statement`), charged to the agent's refusal pace as a refused statement is, so such
    /// calls are neither invisible to the audit nor free to repeat.
    pub fn refuse_request(
        &self,
        agent: &Arc<str>,
        upstream: Option<&str>,
        statement: String,
        reason: &str,
    ) {
        let who = Who {
            upstream: upstream.map(Arc::from),
            ..self.who(agent.clone())
        };
        let mut ev = who.event(crate::audit::EventKind::Decision, Decision::Blocked);
        ev.statement = Some(crate::audit::sql_text::refused(statement));
        ev.rule = Some(REQUEST_RULE.to_string());
        ev.reason = Some(reason.to_string());
        ev.sqlstate = Some(RefusalClass::Syntax.sqlstate().to_string());
        crate::telemetry::refusal(self.protocol, REQUEST_RULE);
        if let Some(rate) = self.core.limits.refusal_rate() {
            self.core.limiter.refusal_bucket(agent).charge(rate);
        }
        if let Err(e) = self.core.audit.append(&ev) {
            tracing::warn!(error = %e, "audit write failed for a refused request");
        }
    }

    /// A failed login: counted, and recorded (the name as `login_name` shows it) within its
    /// name's bucket of such records (`login_records`: beyond it, counted in a summary record
    /// a second). Wrong tokens, unknown agents and names no agent can have read the same to the
    /// client.
    pub fn auth_failed(&self, user: &[u8], why: &str) {
        self.failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics::counter!("tollgate_auth_failures_total", "protocol" => self.protocol.as_str())
            .increment(1);
        self.login_record(
            LoginEvent::Failed,
            user,
            LoginWhy {
                rule: Some(AUTHENTICATION_RULE),
                reason: why,
                sqlstate: self.pg_code("28P01"),
            },
        );
    }

    fn login_record(&self, event: LoginEvent, user: &[u8], why: LoginWhy<'_>) {
        let agent = known_agent(&self.core, user);
        let shown = shown_login(user, agent.is_some());
        self.core
            .login_records
            .record(&self.core, event, agent, &self.who(shown.into()), why);
    }

    /// Whether this connection may try to log in again. Each failed login is a record, and a
    /// connection that may retry (Redis `AUTH`, MongoDB `saslStart`) could otherwise write them
    /// as fast as it sends, with no agent to pace; after [`MAX_LOGIN_FAILURES`] the door closes
    /// it, as sshd's MaxAuthTries does (a client that knows its token needs one try).
    pub fn login_attempts_left(&self) -> bool {
        self.failures.load(std::sync::atomic::Ordering::Relaxed) < MAX_LOGIN_FAILURES
    }

    /// The verifier a SCRAM exchange for `user` runs against: the agent's, or a mock one of the
    /// same strength for an unknown name (the exchange then fails like a wrong token). `None`
    /// for a name no agent can have: fail it at once (recorded by [`Accepted::auth_failed`]).
    ///
    /// In SCRAM the iterations are the client's work only (the gateway checks the proof with
    /// the stored keys alone), so `strength` is chosen for the client: some refuse fewer than
    /// RFC 7677's 4096 (pgjdbc, MongoDB drivers). Token checks the gateway computes itself
    /// ([`check_token`]) always use the cheap login verifier.
    pub fn scram_verifier(
        &self,
        user: &str,
        strength: VerifierStrength,
    ) -> Option<(ScramVerifier, bool)> {
        if !valid_agent_name(user) {
            return None;
        }
        let agents = self.core.agents.load();
        let secret = self.core.mock_secret();
        Some(match strength {
            VerifierStrength::Full => match agents.get(user) {
                Some((_, v)) => (v.clone(), true),
                None => (ScramVerifier::mock_for(user, secret), false),
            },
            VerifierStrength::Login => match agents.login_verifier(user) {
                Some(v) => (v.clone(), true),
                None => (ScramVerifier::mock_login_for(user, secret), false),
            },
        })
    }

    /// After a SCRAM exchange against a real (not mock) verifier succeeded.
    pub fn scram_verified(&self, user: &str) -> Verified {
        self.leave_preauth();
        Verified { agent: user.into() }
    }

    /// `user`'s token checked in constant time against its stored verifier (a mock one for
    /// unknown names, so both cost the same). Failures are recorded and counted.
    pub fn verify_token(&self, user: &[u8], token: &[u8]) -> Option<Verified> {
        let verified = check_token(&self.core, user, token);
        match verified {
            // Authenticated: no longer waiting to (an MCP request keeps its `Accepted` while
            // its tools run, and must not hold a pre-auth place meanwhile).
            Some(_) => self.leave_preauth(),
            None => self.auth_failed(user, "authentication failed"),
        }
        verified
    }

    /// Admits an authenticated agent to `upstream`: its policy's TLS requirement (shadow mode
    /// only records), the policy must give it the upstream, and a connection slot (per agent
    /// and in total) must be free. Every refusal is recorded and returned for the front end to
    /// render; the connection may try again (Redis) or end (PostgreSQL).
    pub fn admit(
        &self,
        verified: &Verified,
        upstream: &str,
        encrypted: bool,
    ) -> Result<Session, Refusal> {
        let agent = verified.agent.clone();
        let who = Who {
            upstream: Some(upstream.into()),
            ..self.who(agent.clone())
        };
        let refuse = |refusal: Refusal| {
            session_record(
                &self.core,
                &who,
                Decision::Blocked,
                Some(&refusal.rule),
                &refusal.reason,
            );
            crate::telemetry::refusal(self.protocol, &refusal.rule);
            refusal
        };
        check_tls(&self.core, &who, &agent, encrypted).map_err(refuse)?;
        self.core
            .policy
            .may_connect(&agent, upstream)
            .map_err(refuse)?;
        let principal =
            Principal::admit(&self.core, self.protocol, &agent, upstream).map_err(refuse)?;
        self.leave_preauth();
        let ctx = SessionContext::new(
            self.core.clone(),
            self.id,
            self.protocol,
            upstream.into(),
            self.client_addr.clone(),
            encrypted,
        );
        Ok(Session::new(Arc::new(ctx), Arc::new(principal)))
    }
}

/// A `require_tls` agent over a connection that is not encrypted: refused, or recorded as
/// `would_block` when the rule is in shadow mode. At login and at a Redis switch of agent.
pub(super) fn check_tls(
    core: &Core,
    who: &Who,
    agent: &str,
    encrypted: bool,
) -> Result<(), Refusal> {
    let Some(req) = (!encrypted)
        .then(|| core.policy.tls_requirement(agent))
        .flatten()
    else {
        return Ok(());
    };
    let reason =
        format!("agent \"{agent}\" must connect over TLS; this connection is not encrypted");
    if req.enforced {
        return Err(Refusal::new(RefusalClass::TlsRequired, req.rule, reason));
    }
    session_record(
        core,
        who,
        Decision::WouldBlock,
        Some(&req.rule),
        &format!("{reason} (shadow mode)"),
    );
    Ok(())
}

/// The slot refusal: which cap, named by its rule.
pub(super) fn too_many_connections(
    e: &crate::ratelimit::TooManyConnections,
    agent_rule: Option<&str>,
    protocol: Protocol,
) -> Refusal {
    let rule = match (e, agent_rule) {
        (crate::ratelimit::TooManyConnections::Agent(_), Some(rule)) => rule.to_string(),
        _ => MAX_CLIENT_CONNECTIONS_RULE.to_string(),
    };
    metrics::counter!("tollgate_connection_limit_hits_total", "protocol" => protocol.as_str())
        .increment(1);
    Refusal::new(
        RefusalClass::TooManyConnections,
        rule,
        format!("too many connections: {e}"),
    )
}

/// `user`'s token against its stored verifier, in constant time (a mock verifier for unknown or
/// impossible names: both failures cost the same).
pub(super) fn check_token(core: &Core, user: &[u8], token: &[u8]) -> Option<Verified> {
    let name = std::str::from_utf8(user)
        .ok()
        .filter(|n| valid_agent_name(n));
    let agents = core.agents.load();
    let verifier = name.and_then(|n| agents.login_verifier(n));
    let check = || match verifier {
        Some(verifier) => verifier.check_password(token),
        None => {
            let mock = ScramVerifier::mock_login_for(name.unwrap_or("?"), core.mock_secret());
            let _ = mock.check_password(token);
            false
        }
    };
    // A login verifier's few iterations take tens of microseconds: run them here. Only an
    // agent added before login verifiers existed (4096 iterations, a millisecond or two) moves
    // the check off the async worker; handing the worker over costs more than 64 iterations.
    let expensive = verifier.is_some_and(|v| v.iterations > crate::auth::scram::LOGIN_ITERATIONS);
    let ok = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) if expensive => {
            tokio::task::block_in_place(check)
        }
        _ => check(),
    };
    match (ok, name) {
        (true, Some(n)) => Some(Verified { agent: n.into() }),
        _ => None,
    }
}
