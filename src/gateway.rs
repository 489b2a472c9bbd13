//! The running gateway: configuration, vault-resolved upstreams, agents, policy engine and audit
//! log as one value that every session shares; and the listeners that serve it.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::admin::tokens::AdminTokens;
use crate::audit::{AuditError, AuditEvent, AuditLog, Decision, EventKind};
use crate::auth::AgentStore;
use crate::config::{Config, SecretRef, SourceError, UpstreamKind};
use crate::pg::cancel::CancelRegistry;
use crate::pg::upstream::UpstreamTarget;
use crate::policy::{Engine, PolicyContext, PolicySet};
use crate::redis::upstream::RedisTarget;
use crate::vault::{MasterKey, Secret, Vault, VaultError};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    Source(#[from] SourceError),
    #[error("{0}")]
    Vault(#[from] VaultError),
    #[error("{0}")]
    Audit(#[from] AuditError),
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("upstream \"{name}\": {source}")]
    UpstreamTls {
        name: String,
        source: crate::tls::TlsError,
    },
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Why a reload (SIGHUP, `POST /api/v1/reload`) kept some of the running state.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("policies: {0}")]
    Policies(SourceError),
    #[error("vault: {0}")]
    Vault(GatewayError),
    #[error("admin tokens: {0}")]
    AdminTokens(SourceError),
    #[error("TLS certificate: {0}")]
    Tls(crate::tls::TlsError),
}

/// Where the gateway is in its life: serving, draining (no new connections; sessions close once
/// nothing is running), or closing (the drain deadline passed: every session closes now).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Serving,
    Draining,
    Closing,
}

/// Counts live client sessions and tells them the phase.
#[derive(Debug)]
pub struct Lifecycle {
    phase: watch::Sender<Phase>,
    live: AtomicUsize,
    ended: tokio::sync::Notify,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            phase: watch::channel(Phase::Serving).0,
            live: AtomicUsize::new(0),
            ended: tokio::sync::Notify::new(),
        }
    }
}

/// Held by a session for its life.
#[derive(Debug)]
pub struct LiveSession<'a>(&'a Lifecycle);

impl Drop for LiveSession<'_> {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
        self.0.ended.notify_waiters();
    }
}

impl Lifecycle {
    pub fn enter(&self) -> LiveSession<'_> {
        self.live.fetch_add(1, Ordering::SeqCst);
        LiveSession(self)
    }

    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.send_replace(phase);
    }

    /// Waits until no session is live or `deadline` passes; true if all ended.
    pub async fn wait_idle(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            let ended = self.ended.notified();
            if self.live() == 0 {
                return true;
            }
            tokio::select! {
                _ = ended => {}
                // Guards dropped between the check and `notified()` are caught by polling.
                _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
                _ = tokio::time::sleep_until(deadline) => return self.live() == 0,
            }
        }
    }
}

pub struct Gateway {
    pub config: Config,
    pub agents: ArcSwap<AgentStore>,
    pub policy: Engine,
    pub audit: AuditLog,
    /// PostgreSQL upstreams with their vaulted credentials (swapped when the vault is reloaded).
    pub upstreams: ArcSwap<HashMap<String, UpstreamTarget>>,
    /// Upstreams of kind `redis` (kept apart: a PostgreSQL client can never name one).
    pub redis_upstreams: HashMap<String, Arc<RedisTarget>>,
    pub cancels: CancelRegistry,
    /// Admin API tokens (verifiers and roles), reloaded with the policies.
    pub admin_tokens: ArcSwap<AdminTokens>,
    /// Counters per agent and upstream, for `/metrics` and `/api/v1/stats`.
    pub stats: crate::telemetry::Stats,
    pub latency: crate::telemetry::Latency,
    pub lifecycle: Lifecycle,
    /// When the gateway was built (uptime in `/api/v1/stats`).
    pub started: std::time::Instant,
    /// The front end's certificate (absent without `[tls]`), replaced on reload.
    pub tls: crate::tls::TlsHolder,
    mock_secret: [u8; 32],
    next_session: AtomicU64,
    /// Wakes the schema refresher (after a policy reload).
    schema_refresh: tokio::sync::Notify,
    pub limiter: crate::ratelimit::Limiter,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("upstreams", &self.upstreams.load().keys())
            .finish_non_exhaustive()
    }
}

/// Resolves `vault:NAME` references; literal values are allowed only where `allow_literal`.
fn resolve(vault: &Vault, reference: &str, allow_literal: bool) -> Result<Secret, VaultError> {
    match SecretRef::parse(reference) {
        SecretRef::Vault(name) => vault.get(&name),
        SecretRef::Literal(v) if allow_literal => Ok(Secret::new(v)),
        SecretRef::Literal(_) => Err(VaultError::Key(
            "a password must be a vault reference".into(),
        )),
    }
}

/// The client-side TLS of upstream `name` (`None` for `tls = "disable"`).
pub fn upstream_tls(
    name: &str,
    u: &crate::config::UpstreamConfig,
) -> Result<Option<crate::tls::UpstreamTls>, GatewayError> {
    let alpn = match u.kind {
        UpstreamKind::Postgres => Some(crate::tls::ALPN_POSTGRESQL),
        UpstreamKind::Redis => None,
    };
    crate::tls::UpstreamTls::build(u.tls_mode(), &u.host, u.ca_file.as_deref(), alpn).map_err(
        |source| GatewayError::UpstreamTls {
            name: name.to_string(),
            source,
        },
    )
}

/// The configured upstreams with their vaulted credentials resolved.
pub fn upstream_targets(
    config: &Config,
    vault: &Vault,
) -> Result<HashMap<String, UpstreamTarget>, GatewayError> {
    let mut upstreams = HashMap::new();
    for (name, u) in &config.upstreams {
        match u.kind {
            UpstreamKind::Postgres => {}
            UpstreamKind::Redis => continue,
        }
        upstreams.insert(
            name.clone(),
            UpstreamTarget {
                name: name.clone(),
                host: u.host.clone(),
                port: u.port,
                database: u.database_name(name).to_string(),
                user: resolve(vault, &u.user, true)?,
                password: resolve(vault, &u.password, false)?,
                search_path: u.search_path.join(", "),
                tls: upstream_tls(name, u)?,
            },
        );
    }
    Ok(upstreams)
}

/// A Redis upstream's (user, password) from the vault.
fn redis_credentials(
    vault: &Vault,
    u: &crate::config::UpstreamConfig,
) -> Result<crate::redis::upstream::RedisCredentials, VaultError> {
    Ok(crate::redis::upstream::RedisCredentials {
        user: resolve(vault, &u.user, true)?,
        password: resolve(vault, &u.password, false)?,
    })
}

/// The engine's key for the `hash` mask, derived from the master key.
pub fn mask_hash_key(key: &MasterKey) -> String {
    hex::encode(key.derive_subkey(b"tollgate/mask-hash"))
}

pub fn policy_context<'a>(config: &Config, agents: &'a AgentStore) -> PolicyContext<'a> {
    let upstreams: BTreeMap<String, Vec<String>> = config
        .upstreams
        .iter()
        .map(|(n, u)| (n.clone(), u.search_path.clone()))
        .collect();
    PolicyContext { agents, upstreams }
}

/// Loads agents and policies as `tollgate check` and a reload do.
pub fn load_policies(config: &Config) -> Result<(AgentStore, PolicySet), SourceError> {
    let agents = AgentStore::load(&config.agents_file)?;
    let set = PolicySet::load_dir(&config.policies_dir, &policy_context(config, &agents))?;
    Ok((agents, set))
}

impl Gateway {
    /// Builds the gateway from a validated config: opens the vault and the audit log, loads agents
    /// and policies. Nothing listens yet.
    pub fn build(config: Config) -> Result<Gateway, GatewayError> {
        let key = MasterKey::load(config.vault.key_file.as_deref())?;
        // Stable across restarts, so an unknown agent's mock SCRAM salt never changes either.
        let mock_secret = key.derive_subkey(b"tollgate/scram-mock-salt");
        let mask_key = mask_hash_key(&key);
        let vault = Vault::open(&config.vault.file, key)?;
        let upstreams = upstream_targets(&config, &vault)?;
        let mut redis_upstreams = HashMap::new();
        for (name, u) in &config.upstreams {
            if u.kind == UpstreamKind::Redis {
                redis_upstreams.insert(
                    name.clone(),
                    Arc::new(RedisTarget {
                        name: name.clone(),
                        host: u.host.clone(),
                        port: u.port,
                        credentials: ArcSwap::from_pointee(redis_credentials(&vault, u)?),
                        tls: upstream_tls(name, u)?,
                        table: Default::default(),
                    }),
                );
            }
        }
        let (agents, set) = load_policies(&config)?;
        for w in &set.warnings {
            warn!("policy: {w}");
        }
        let admin_tokens = AdminTokens::load(&config.admin.tokens_file)?;
        let audit = AuditLog::open_config(&config.audit)?;
        let tls = match &config.tls {
            Some(t) => Some(crate::tls::ServerTls::load(&t.cert_file, &t.key_file)?),
            None => None,
        };
        let policy = Engine::new(set);
        policy.set_mask_key(mask_key);
        Ok(Gateway {
            config,
            agents: ArcSwap::from_pointee(agents),
            policy,
            audit,
            upstreams: ArcSwap::from_pointee(upstreams),
            redis_upstreams,
            cancels: CancelRegistry::default(),
            admin_tokens: ArcSwap::from_pointee(admin_tokens),
            stats: crate::telemetry::Stats::default(),
            latency: crate::telemetry::Latency::register(),
            lifecycle: Lifecycle::default(),
            started: std::time::Instant::now(),
            tls: crate::tls::TlsHolder::new(tls),
            mock_secret,
            next_session: AtomicU64::new(1),
            schema_refresh: tokio::sync::Notify::new(),
            limiter: crate::ratelimit::Limiter::default(),
        })
    }

    /// Re-reads agents and policies; on any error the running ones stay in force.
    pub fn reload(&self) -> Result<(), SourceError> {
        match load_policies(&self.config) {
            Ok((agents, set)) => {
                self.agents.store(Arc::new(agents));
                self.policy.replace(set);
                self.schema_refresh.notify_one();
                info!(version = self.policy.version(), "policies reloaded");
                Ok(())
            }
            Err(e) => {
                metrics::counter!("tollgate_policy_reloads_total", "result" => "error")
                    .increment(1);
                warn!(error = %e, "policy reload failed; keeping the last good policy");
                Err(e)
            }
        }
    }

    /// Re-reads the vault (and the master key): new upstream credentials apply to new upstream
    /// connections. On any error the running credentials stay in force.
    pub fn reload_vault(&self) -> Result<(), GatewayError> {
        let result = (|| {
            let key = MasterKey::load(self.config.vault.key_file.as_deref())?;
            let mask_key = mask_hash_key(&key);
            let vault = Vault::open(&self.config.vault.file, key)?;
            let targets = upstream_targets(&self.config, &vault)?;
            let mut redis = Vec::new();
            for (name, target) in &self.redis_upstreams {
                redis.push((
                    target.clone(),
                    redis_credentials(&vault, &self.config.upstreams[name])?,
                ));
            }
            Ok::<_, GatewayError>((mask_key, targets, redis))
        })();
        match result {
            Ok((mask_key, targets, redis)) => {
                self.upstreams.store(Arc::new(targets));
                for (target, creds) in redis {
                    target.credentials.store(Arc::new(creds));
                }
                if self.policy.mask_key() != mask_key {
                    self.policy.set_mask_key(mask_key);
                }
                metrics::counter!("tollgate_vault_reloads_total", "result" => "ok").increment(1);
                info!("vault reloaded");
                Ok(())
            }
            Err(e) => {
                metrics::counter!("tollgate_vault_reloads_total", "result" => "error").increment(1);
                warn!(error = %e, "vault reload failed; keeping the running credentials");
                Err(e)
            }
        }
    }

    /// Reloads policies, agents, the vault, the admin tokens and the TLS certificate (SIGHUP,
    /// `POST /api/v1/reload`).
    /// Each part is kept as it was if its reload fails; the errors are returned.
    pub fn reload_all(&self) -> Vec<ReloadError> {
        let mut errors = Vec::new();
        if let Err(e) = self.reload() {
            errors.push(ReloadError::Policies(e));
        }
        if let Err(e) = self.reload_vault() {
            errors.push(ReloadError::Vault(e));
        }
        if let Err(e) = self.reload_admin_tokens() {
            errors.push(ReloadError::AdminTokens(e));
        }
        if let Err(e) = self.reload_tls() {
            errors.push(ReloadError::Tls(e));
        }
        errors
    }

    /// Re-reads the admin tokens file; on error the running tokens stay.
    pub fn reload_admin_tokens(&self) -> Result<(), SourceError> {
        match AdminTokens::load(&self.config.admin.tokens_file) {
            Ok(t) => {
                self.admin_tokens.store(Arc::new(t));
                Ok(())
            }
            Err(e) => {
                warn!(error = %e, "admin tokens reload failed; keeping the running ones");
                Err(e)
            }
        }
    }

    /// Reads the certificate and key again; on any error the current ones stay in force.
    /// Open sessions keep their connections; new handshakes use the new certificate.
    pub fn reload_tls(&self) -> Result<(), crate::tls::TlsError> {
        let Some(files) = &self.config.tls else {
            return Ok(());
        };
        match crate::tls::ServerTls::load(&files.cert_file, &files.key_file) {
            Ok(tls) => {
                self.tls.store(tls);
                metrics::counter!("tollgate_tls_reloads_total", "result" => "ok").increment(1);
                info!("TLS certificate reloaded");
                Ok(())
            }
            Err(e) => {
                metrics::counter!("tollgate_tls_reloads_total", "result" => "error").increment(1);
                warn!(error = %e, "TLS certificate reload failed; keeping the current certificate");
                Err(e)
            }
        }
    }

    /// Loads the table shapes of every upstream a policy masks or filters. Returns whether all
    /// of them loaded.
    pub async fn refresh_schemas(&self) -> bool {
        let timeout = std::time::Duration::from_millis(
            self.config.limits.upstream_connect_timeout_ms.max(1000),
        );
        let mut all = true;
        let upstreams = self.upstreams.load_full();
        for name in self.policy.protected_upstreams() {
            let Some(target) = upstreams.get(&name) else {
                continue;
            };
            match crate::pg::schema_loader::load_schema(target, timeout).await {
                Ok(snapshot) => self.policy.set_schema(&name, snapshot),
                Err(e) => {
                    all = false;
                    metrics::counter!("tollgate_schema_load_errors_total").increment(1);
                    warn!(error = %e, "could not load table shapes for masking; statements reading masked tables are refused until it works");
                }
            }
        }
        all
    }

    pub fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    pub fn mock_secret(&self) -> &[u8; 32] {
        &self.mock_secret
    }

    /// The statement text as recorded: literals replaced when the config asks for it.
    pub fn audit_text(&self, text: &str) -> String {
        if self.config.audit.redact_literals {
            pg_query::normalize(text)
                .unwrap_or_else(|_| "<statement not recorded: could not redact literals>".into())
        } else {
            text.to_string()
        }
    }

    /// A session-level record (login refused, session opened).
    pub fn audit_session(
        &self,
        session: u64,
        agent: &str,
        upstream: Option<&str>,
        peer: SocketAddr,
        decision: Decision,
        reason: &str,
    ) {
        let ev = AuditEvent {
            kind: EventKind::Session,
            agent: agent.to_string(),
            protocol: crate::audit::Protocol::Postgres,
            upstream: upstream.map(str::to_string),
            session,
            client_addr: Some(peer.to_string()),
            decision,
            reason: Some(reason.to_string()),
            ..AuditEvent::default()
        };
        if let Err(e) = self.audit.append(&ev) {
            warn!(error = %e, "audit write failed for a session record");
        }
    }
}

/// A gateway with its listeners bound and serving.
pub struct Running {
    pub gateway: Arc<Gateway>,
    pub pg_addr: Option<SocketAddr>,
    pub redis_addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    /// Stops the client listeners (PostgreSQL, Redis).
    stop_accepting: watch::Sender<bool>,
    /// The Redis listener that speaks TLS (`listen.redis_tls`).
    pub redis_tls_addr: Option<SocketAddr>,
    /// Stops everything else (admin listener, audit flusher, schema refresher).
    shutdown: watch::Sender<bool>,
}

impl Running {
    pub fn shutdown(&self) {
        let _ = self.stop_accepting.send(true);
        let _ = self.shutdown.send(true);
    }

    /// Graceful stop: no new client connections; sessions close as soon as nothing of theirs is
    /// running (no reply owed, no open transaction); after `deadline` the rest are closed.
    /// Returns how many sessions had to be closed at the deadline.
    pub async fn drain(&self, deadline: std::time::Duration) -> usize {
        let lifecycle = &self.gateway.lifecycle;
        let _ = self.stop_accepting.send(true);
        lifecycle.set_phase(Phase::Draining);
        info!(
            live = lifecycle.live(),
            ?deadline,
            "draining: no new connections"
        );
        let until = tokio::time::Instant::now() + deadline;
        let mut forced = 0;
        if !lifecycle.wait_idle(until).await {
            forced = lifecycle.live();
            warn!(
                sessions = forced,
                "drain deadline passed: closing the remaining sessions"
            );
            lifecycle.set_phase(Phase::Closing);
            let grace = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
            lifecycle.wait_idle(grace).await;
        }
        // Outcome records of the last statements.
        if let Err(e) = self.gateway.audit.flush() {
            warn!(error = %e, "audit flush failed at shutdown");
        }
        self.shutdown();
        forced
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Binds the configured listeners and starts serving on the current tokio runtime.
pub async fn start(config: Config) -> Result<Running, GatewayError> {
    let gateway = Arc::new(Gateway::build(config)?);
    let (tx, rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(flush_audit_periodically(gateway.clone(), rx.clone()));
    // Audit rotation (by age, SIGUSR1), compression, retention and exports: src/audit/background.rs.
    crate::audit::spawn_background(&gateway.audit, &gateway.config, rx.clone())?;
    // Masking needs the upstreams' table shapes: try once before serving, then keep them fresh.
    let loaded = gateway.refresh_schemas().await;
    tokio::spawn(refresh_schemas_periodically(
        gateway.clone(),
        loaded,
        rx.clone(),
    ));
    let mut pg_addr = None;
    if let Some(addr) = gateway.config.listen.postgres {
        let (listener, local) = bind(addr).await?;
        info!(%local, "PostgreSQL listener ready");
        pg_addr = Some(local);
        tokio::spawn(crate::pg::serve(gateway.clone(), listener, stop_rx.clone()));
    }
    let mut redis_addr = None;
    let mut redis_tls_addr = None;
    let redis_listeners = [
        (gateway.config.listen.redis, false),
        (gateway.config.listen.redis_tls, true),
    ];
    for (addr, tls) in redis_listeners {
        let Some(addr) = addr else { continue };
        let target = gateway
            .redis_upstreams
            .values()
            .next()
            .cloned()
            .expect("config validation: listen.redis has one redis upstream");
        let (listener, local) = bind(addr).await?;
        info!(%local, upstream = %target.name, tls, "Redis listener ready");
        if tls {
            redis_tls_addr = Some(local);
        } else {
            redis_addr = Some(local);
        }
        // Learn the command table now if the upstream is up; sessions retry if it is not.
        let timeout =
            std::time::Duration::from_millis(gateway.config.limits.upstream_connect_timeout_ms);
        if let Err(e) = target.table(timeout).await {
            warn!(upstream = %target.name, error = %e, "cannot read the Redis command table yet");
        }
        tokio::spawn(crate::redis::serve(
            gateway.clone(),
            target,
            listener,
            tls,
            stop_rx.clone(),
        ));
    }
    let mut admin_addr = None;
    if let Some(addr) = gateway.config.admin.listen {
        let (listener, local) = bind(addr).await?;
        info!(admin = %local, "admin API listener ready");
        admin_addr = Some(local);
        tokio::spawn(crate::admin::serve(gateway.clone(), listener, rx.clone()));
    }
    Ok(Running {
        gateway,
        pg_addr,
        redis_addr,
        admin_addr,
        stop_accepting: stop_tx,
        redis_tls_addr,
        shutdown: tx,
    })
}

/// Binds a listener; returns it with the address it got (port 0 picks one).
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), GatewayError> {
    let listen_error = |source| GatewayError::Listen { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(listen_error)?;
    let local = listener.local_addr().map_err(listen_error)?;
    Ok((listener, local))
}

/// Keeps table shapes fresh: every minute, after each policy reload, and every 2 s while some
/// upstream's shapes could not be loaded.
async fn refresh_schemas_periodically(
    gateway: Arc<Gateway>,
    mut loaded: bool,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let wait = std::time::Duration::from_secs(if loaded { 60 } else { 2 });
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = gateway.schema_refresh.notified() => {}
            _ = shutdown.changed() => return,
        }
        loaded = gateway.refresh_schemas().await;
    }
}

/// Writes deferred audit records (statement outcomes) at least every 100 ms, and at shutdown.
async fn flush_audit_periodically(gateway: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => {
                let _ = gateway.audit.flush();
                return;
            }
        }
        if let Err(e) = gateway.audit.flush() {
            warn!(error = %e, "audit flush failed");
        }
    }
}

/// What the policy files look like on disk: (path, modified time, length) of the agents file, the
/// admin tokens file and every policy file. A change means "reload".
fn policy_files_signature(
    config: &Config,
) -> Vec<(std::path::PathBuf, Option<std::time::SystemTime>, u64)> {
    let stat = |p: std::path::PathBuf| {
        let meta = std::fs::metadata(&p).ok();
        let modified = meta.as_ref().and_then(|m| m.modified().ok());
        (p, modified, meta.map(|m| m.len()).unwrap_or(0))
    };
    let mut sig = vec![
        stat(config.agents_file.clone()),
        stat(config.admin.tokens_file.clone()),
    ];
    if let Ok(entries) = std::fs::read_dir(&config.policies_dir) {
        let mut files: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        sig.extend(files.into_iter().map(stat));
    }
    sig
}

/// The certificate and key files, as [`policy_files_signature`] sees files.
fn tls_files_signature(
    config: &Config,
) -> Vec<(std::path::PathBuf, Option<std::time::SystemTime>, u64)> {
    let stat = |p: &std::path::Path| {
        let meta = std::fs::metadata(p).ok();
        let modified = meta.as_ref().and_then(|m| m.modified().ok());
        (
            p.to_path_buf(),
            modified,
            meta.map(|m| m.len()).unwrap_or(0),
        )
    };
    config
        .tls
        .iter()
        .flat_map(|t| [stat(&t.cert_file), stat(&t.key_file)])
        .collect()
}

/// Reloads agents and policies, and the TLS certificate, when their files change (checked
/// every `every`).
pub fn reload_on_file_change(gateway: Arc<Gateway>, every: std::time::Duration) {
    // Taken before returning, so a change made right after this call is never missed.
    let mut last = policy_files_signature(&gateway.config);
    let mut last_tls = tls_files_signature(&gateway.config);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let now = policy_files_signature(&gateway.config);
            if now != last {
                last = now;
                let _ = gateway.reload();
                let _ = gateway.reload_admin_tokens();
            }
            let now = tls_files_signature(&gateway.config);
            if now != last_tls {
                last_tls = now;
                let _ = gateway.reload_tls();
            }
        }
    });
}

/// Reloads policies, agents, the vault, the admin tokens and the TLS certificate on SIGHUP
/// until the process ends.
pub fn reload_on_sighup(gateway: Arc<Gateway>) {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            let _ = gateway.reload_all();
        }
    });
}
