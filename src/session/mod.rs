//! The session core: what every front end does the same way, written once. A front end
//! (PostgreSQL, Redis, and the doors to come) is wire code on top of it:
//!
//! 1. *accept* ([`Core::accept`]): session id, tracing span, live-session accounting, the client
//!    gauge and the authentication deadline;
//! 2. *verify* ([`Accepted::verify_token`], [`Accepted::scram_verifier`]): agent name bounds and
//!    the token against the stored verifier (a mock verifier for unknown names, so both fail
//!    alike), off the async workers;
//! 3. *admit* ([`Accepted::admit`]): `require_tls` (enforced or shadow), the policy's
//!    `may_connect`, the connection slot (per agent and total) → a [`Session`];
//! 4. on the [`Session`]: *decide* (rate bucket, decision record, refusal record and metric),
//!    then on its [`SessionContext`] (shared with the reply half) *outcome* and *abandoned*
//!    ("the client left before the reply", one record shape for every protocol);
//!    [`Lifecycle::drained`] tells a session when to stop during a drain.
//!
//! Front ends receive an `Arc<Core>` (the handles every session needs) and never the gateway.

mod accept;
mod client_stream;
mod client_write;
pub mod gate;
mod lifecycle;
mod linger;
mod login_records;
mod preauth;
mod record;
mod statement;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

pub use accept::{Accepted, Verified, VerifierStrength, MAX_PREAUTH_CONNECTIONS_RULE};
pub use client_stream::ClientStreamError;
pub use client_write::{
    last_words, watch_progress, ClientWrites, ReplyWrites, StallGuard, WriteStalled,
    CLIENT_WRITE_TIMEOUT_RULE, LAST_WRITE,
};
pub use lifecycle::{Lifecycle, LiveSession, Phase};
pub use linger::{linger, ClientSocket, Drain, LingerSocket};
pub use preauth::PreauthSlot;

/// How long a session goes on relaying the replies it owes once its client stopped sending
/// (EOF after a half-close, or Terminate), as a server answers what it read before the end. A
/// client that is gone altogether ends it at the first write; this bounds the rest (a statement
/// still running, a blocked command), so a closed client never holds its upstream connection.
pub const REPLY_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Said to a client whose connection is closed after [`accept::MAX_LOGIN_FAILURES`] failed logins.
pub const TOO_MANY_LOGIN_FAILURES: &str =
    "tollgate: too many failed logins on this connection; connect again";
pub use record::shown_name;
pub use statement::{
    audit_unavailable, login_refused_with, upstream_unavailable, Judged, OutcomeError, Principal,
    ReauthError, Session, SessionContext, Ticket, Write,
};

use crate::audit::{AuditLog, Protocol};
use crate::auth::AgentStore;
use crate::config::{AuditConfig, LimitsConfig, RedisOutcomes};
use crate::policy::Engine;
use crate::ratelimit::{HeldBytes, Limiter};
use crate::refusal::{Refusal, RefusalClass};
use crate::telemetry::{Latency, Stats};
use crate::tls::TlsHolder;

/// The handles every session needs: agents, policy, audit, limits, counters, lifecycle and the
/// front-end certificate. Built once by the gateway; shared by every front end.
pub struct Core {
    pub limits: LimitsConfig,
    pub audit_config: AuditConfig,
    pub agents: ArcSwap<AgentStore>,
    pub policy: Engine,
    pub audit: AuditLog,
    pub limiter: Limiter,
    /// What client messages being received hold (`limits.max_held_client_bytes`, and each
    /// agent's share, `max_held_client_bytes_per_agent`).
    pub held: Arc<HeldBytes>,
    pub stats: Stats,
    pub latency: Latency,
    pub lifecycle: Arc<Lifecycle>,
    /// The front end's certificate (absent without `[tls]`), replaced on reload.
    pub tls: TlsHolder,
    /// Salt source of unknown agents' mock verifiers (stable across restarts).
    mock_secret: [u8; 32],
    next_session: AtomicU64,
    /// Connections accepted and not yet admitted (`limits.max_preauth_connections`).
    preauth: Arc<preauth::PreauthCount>,
    /// Records of failed logins and of connections refused at login: a bucket per name,
    /// beyond it counted into a summary a second (`login_records`).
    login_records: login_records::LoginRecords,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("policy", &self.policy)
            .field("live", &self.lifecycle.live())
            .finish_non_exhaustive()
    }
}

/// What [`Core::new`] is built from.
pub struct CoreParts {
    pub limits: LimitsConfig,
    pub audit_config: AuditConfig,
    pub agents: AgentStore,
    pub policy: Engine,
    pub audit: AuditLog,
    pub tls: TlsHolder,
    pub mock_secret: [u8; 32],
}

impl Core {
    /// Writes the summaries of failed logins not recorded one by one (`login_records`): the
    /// gateway calls it every second and at shutdown.
    pub fn flush_login_records(&self) {
        self.login_records.flush(self);
    }

    pub fn new(parts: CoreParts) -> Core {
        let held = HeldBytes::new(
            parts.limits.max_held_client_bytes,
            parts.limits.max_held_client_bytes_per_agent,
        );
        Core {
            limits: parts.limits,
            audit_config: parts.audit_config,
            agents: ArcSwap::from_pointee(parts.agents),
            policy: parts.policy,
            audit: parts.audit,
            limiter: Limiter::default(),
            held,
            stats: Stats::default(),
            latency: Latency::register(),
            lifecycle: Arc::new(Lifecycle::default()),
            tls: parts.tls,
            mock_secret: parts.mock_secret,
            next_session: AtomicU64::new(1),
            preauth: Arc::default(),
            login_records: Default::default(),
        }
    }

    /// A connection has arrived: it gets an id, a span, a place in the live count and the client
    /// gauge, and a deadline for authentication.
    /// It counts towards `limits.max_preauth_connections` until it is admitted or ends, but is
    /// never refused for it (see [`Core::try_accept`]).
    pub fn accept(self: &Arc<Self>, protocol: Protocol, peer: SocketAddr) -> Accepted {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        Accepted::new(self.clone(), protocol, peer, id)
    }

    /// [`Core::accept`], unless `limits.max_preauth_connections` connections are already
    /// waiting to authenticate: then the refusal to send before closing. Not audited (a flood
    /// of connections must not become a flood of audit writes); counted in
    /// `tollgate_preauth_refused_total`.
    pub fn try_accept(
        self: &Arc<Self>,
        protocol: Protocol,
        peer: SocketAddr,
    ) -> Result<Accepted, Refusal> {
        self.preauth_room(protocol.as_str(), peer)?;
        Ok(self.accept(protocol, peer))
    }

    /// A place in the pre-authentication count for a connection that is not a session (an
    /// HTTP connection to the MCP or admin listener, until a request on it authenticates),
    /// refused like [`Core::try_accept`] when the count is at the cap. `label` names the
    /// listener in `tollgate_preauth_refused_total`.
    pub fn try_preauth(
        self: &Arc<Self>,
        label: &'static str,
        peer: SocketAddr,
    ) -> Result<Arc<PreauthSlot>, Refusal> {
        self.preauth_room(label, peer)?;
        Ok(PreauthSlot::new(self.preauth.clone(), Some(peer)))
    }

    /// A place in the pre-authentication count taken without the cap check, for what was let
    /// in moments ago (an MCP request past `try_accept` whose body is still arriving).
    pub fn preauth_place(self: &Arc<Self>) -> Arc<PreauthSlot> {
        PreauthSlot::new(self.preauth.clone(), None)
    }

    /// Whether one more connection may wait to authenticate; the refusal (counted) if not.
    fn preauth_room(&self, label: &'static str, peer: SocketAddr) -> Result<(), Refusal> {
        let cap = self.limits.max_preauth_connections as usize;
        if self.preauth.room(cap, peer.ip()) {
            return Ok(());
        }
        metrics::counter!("tollgate_preauth_refused_total", "protocol" => label).increment(1);
        tracing::debug!(client = %peer, "refused: too many connections waiting to authenticate");
        Err(Refusal::new(
            RefusalClass::TooManyConnections,
            accept::MAX_PREAUTH_CONNECTIONS_RULE,
            format!("too many connections waiting to authenticate (at most {cap})"),
        ))
    }

    /// Connections accepted and not yet admitted.
    pub fn preauth_connections(&self) -> usize {
        self.preauth.get()
    }

    fn mock_secret(&self) -> &[u8; 32] {
        &self.mock_secret
    }

    /// Whether a successful statement gets an outcome record besides its decision record.
    /// Redis commands are many and small: by default only their errors are recorded twice.
    fn records_successes(&self, protocol: Protocol) -> bool {
        protocol != Protocol::Redis || self.audit_config.redis_outcomes == RedisOutcomes::All
    }
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests;
