//! The running gateway: the configuration, the session core every front end shares, the doors
//! (one per kind of upstream), the admin tokens; reloads of policies, vault, tokens and
//! certificate; and the listeners that serve it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::admin::tokens::AdminTokens;
use crate::audit::{AuditError, AuditLog};
use crate::auth::AgentStore;
use crate::config::{Config, SourceError};
use crate::doors::{Door, DoorError, Listener};
use crate::policy::{Engine, PolicyContext, PolicySet};
use crate::session::{Core, CoreParts, Phase};
use crate::vault::{MasterKey, Vault, VaultError};

mod file_watch;

pub use file_watch::{reload_on_file_change, reload_on_sighup};

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
    #[error("{0}")]
    Door(#[from] DoorError),
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

/// What a reload of every part did.
#[derive(Debug)]
pub struct Reloaded {
    /// The parts that kept their running version, and why.
    pub errors: Vec<ReloadError>,
    /// Set when `tollgate.toml` on disk differs from the running config: which keys, or why the
    /// file would not start a gateway. No reload applies it.
    pub restart_needed: Option<String>,
}

pub struct Gateway {
    pub config: Config,
    /// What every session shares: agents, policy engine, audit log, limits, counters, lifecycle,
    /// the front-end certificate.
    pub core: Arc<Core>,
    /// One per kind of upstream configured.
    pub doors: Vec<Arc<dyn Door>>,
    /// Admin API tokens (verifiers and roles), reloaded with the policies.
    pub admin_tokens: ArcSwap<AdminTokens>,
    /// When the gateway was built (uptime in `/api/v1/stats`).
    pub started: std::time::Instant,
    /// Wakes the schema refresher (after a policy reload).
    schema_refresh: tokio::sync::Notify,
    /// Held through every reload (file watcher, SIGHUP, admin API), so two never interleave.
    reloading: std::sync::Mutex<()>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("upstreams", &self.config.upstreams.keys())
            .finish_non_exhaustive()
    }
}

/// The engine's key for the `hash` mask, derived from the master key.
pub fn mask_hash_key(key: &MasterKey) -> String {
    hex::encode(key.derive_subkey(b"tollgate/mask-hash"))
}

pub fn policy_context<'a>(config: &Config, agents: &'a AgentStore) -> PolicyContext<'a> {
    PolicyContext::for_upstreams(
        agents,
        config
            .upstreams
            .iter()
            .map(|(n, u)| (n.clone(), u.kind, u.search_path.clone())),
    )
}

/// Loads agents and policies as `tollgate check` and a reload do.
pub fn load_policies(config: &Config) -> Result<(AgentStore, PolicySet), SourceError> {
    let agents = AgentStore::load(&config.agents_file)?;
    let set = PolicySet::load_dir(&config.policies_dir, &policy_context(config, &agents))?;
    Ok((agents, set))
}

impl Gateway {
    /// Builds the gateway from a validated config: opens the vault and the audit log, loads agents
    /// and policies, builds the doors. Nothing listens yet.
    pub fn build(config: Config) -> Result<Gateway, GatewayError> {
        let key = MasterKey::load(config.vault.key_file.as_deref())?;
        if let Some(w) = MasterKey::loose_permissions(config.vault.key_file.as_deref()) {
            tracing::warn!("{w}");
        }
        // Stable across restarts, so an unknown agent's mock SCRAM salt never changes either.
        let mock_secret = key.derive_subkey(b"tollgate/scram-mock-salt");
        let mask_key = mask_hash_key(&key);
        let vault = Vault::open(&config.vault.file, key)?;
        let doors = crate::doors::build(&config, &vault)?;
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
        let core = Core::new(CoreParts {
            limits: config.limits.clone(),
            audit_config: config.audit.clone(),
            agents,
            policy,
            audit,
            tls: crate::tls::TlsHolder::new(tls),
            mock_secret,
        });
        crate::doors::protect_logins(&doors, &core.policy);
        Ok(Gateway {
            config,
            core: Arc::new(core),
            doors,
            admin_tokens: ArcSwap::from_pointee(admin_tokens),
            started: std::time::Instant::now(),
            schema_refresh: tokio::sync::Notify::new(),
            reloading: std::sync::Mutex::new(()),
        })
    }

    /// The door serving upstream `name`.
    pub fn door_for(&self, name: &str) -> Option<&Arc<dyn Door>> {
        self.doors.iter().find(|d| d.serves(name))
    }

    /// One reload at a time. Reloads read files: call them off the async workers
    /// ([`off_workers`]).
    fn one_reload(&self) -> std::sync::MutexGuard<'_, ()> {
        // A reload that panicked left nothing half-swapped (each part is one store).
        self.reloading.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Re-reads agents and policies; on any error the running ones stay in force.
    pub fn reload(&self) -> Result<(), SourceError> {
        let _one = self.one_reload();
        self.reload_policies()?;
        self.schema_refresh.notify_one();
        Ok(())
    }

    /// `reload` without asking for fresh table shapes (`reload_all` asks once the vault's
    /// credentials are in force too).
    fn reload_policies(&self) -> Result<(), SourceError> {
        let loaded = load_policies(&self.config).and_then(|(agents, set)| {
            agents
                .may_replace(&self.core.agents.load())
                .map_err(|e| SourceError::semantic(&self.config.agents_file, e))?;
            Ok((agents, set))
        });
        match loaded {
            Ok((agents, set)) => {
                for w in &set.warnings {
                    warn!("policy: {w}");
                }
                self.core.agents.store(Arc::new(agents));
                self.core.policy.replace(set);
                info!(version = self.core.policy.version(), "policies reloaded");
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
        let _one = self.one_reload();
        self.reread_vault()
    }

    fn reread_vault(&self) -> Result<(), GatewayError> {
        let result = (|| {
            let key = MasterKey::load(self.config.vault.key_file.as_deref())?;
            let mask_key = mask_hash_key(&key);
            let vault = Vault::open(&self.config.vault.file, key)?;
            let commits = self
                .doors
                .iter()
                .map(|d| d.reload_credentials(&vault))
                .collect::<Result<Vec<_>, _>>()?;
            Ok::<_, GatewayError>((mask_key, commits))
        })();
        match result {
            Ok((mask_key, commits)) => {
                for commit in commits {
                    commit();
                }
                crate::doors::protect_logins(&self.doors, &self.core.policy);
                if self.core.policy.mask_key() != mask_key {
                    self.core.policy.set_mask_key(mask_key);
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
    /// Each part is kept as it was if its reload fails; the errors are returned, and what in
    /// `tollgate.toml` changed since start (which no reload applies).
    pub fn reload_all(&self) -> Reloaded {
        let errors = self.reload_parts();
        let restart_needed = self
            .config
            .source
            .as_ref()
            .and_then(|s| s.drift().describe());
        if let Some(why) = &restart_needed {
            warn!("{why}");
        }
        metrics::gauge!("tollgate_config_restart_pending")
            .set(f64::from(u8::from(restart_needed.is_some())));
        Reloaded {
            errors,
            restart_needed,
        }
    }

    fn reload_parts(&self) -> Vec<ReloadError> {
        let _one = self.one_reload();
        let mut errors = Vec::new();
        let policies = self.reload_policies();
        if let Err(e) = self.reread_vault() {
            errors.push(ReloadError::Vault(e));
        }
        // Only now: a refresh asked for before the new credentials were in force logged in with
        // the old ones (one failed upstream login per rotation, seen by the live review).
        match policies {
            Ok(()) => self.schema_refresh.notify_one(),
            Err(e) => errors.insert(0, ReloadError::Policies(e)),
        }
        if let Err(e) = self.reread_admin_tokens() {
            errors.push(ReloadError::AdminTokens(e));
        }
        if let Err(e) = self.reread_tls() {
            errors.push(ReloadError::Tls(e));
        }
        errors
    }

    /// Re-reads the admin tokens file; on error the running tokens stay, and so they do when
    /// the file is gone or lists no token (`AdminTokens::may_replace`).
    pub fn reload_admin_tokens(&self) -> Result<(), SourceError> {
        let _one = self.one_reload();
        self.reread_admin_tokens()
    }

    fn reread_admin_tokens(&self) -> Result<(), SourceError> {
        let path = &self.config.admin.tokens_file;
        let running = self.admin_tokens.load();
        let loaded = AdminTokens::load(path).and_then(|t| {
            t.may_replace(&running)
                .map(|()| t)
                .map_err(|why| SourceError::semantic(path, why))
        });
        match loaded {
            Ok(t) => {
                if t.is_empty() && !running.is_empty() {
                    warn!("the admin tokens file lists `token = []`: every admin token is revoked");
                }
                self.admin_tokens.store(Arc::new(t));
                metrics::counter!("tollgate_admin_tokens_reloads_total", "result" => "ok")
                    .increment(1);
                Ok(())
            }
            Err(e) => {
                metrics::counter!("tollgate_admin_tokens_reloads_total", "result" => "error")
                    .increment(1);
                warn!(error = %e, "admin tokens reload failed; keeping the running ones");
                Err(e)
            }
        }
    }

    /// Reads the certificate and key again; on any error the current ones stay in force.
    /// Open sessions keep their connections; new handshakes use the new certificate.
    pub fn reload_tls(&self) -> Result<(), crate::tls::TlsError> {
        let _one = self.one_reload();
        self.reread_tls()
    }

    fn reread_tls(&self) -> Result<(), crate::tls::TlsError> {
        let Some(files) = &self.config.tls else {
            return Ok(());
        };
        match crate::tls::ServerTls::load(&files.cert_file, &files.key_file) {
            Ok(tls) => {
                self.core.tls.store(tls);
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
        for name in self.core.policy.protected_upstreams() {
            let Some(load) = self
                .door_for(&name)
                .and_then(|d| d.table_shapes(&name, timeout))
            else {
                continue;
            };
            match load.await {
                Ok(snapshot) => {
                    self.core.policy.set_schema(&name, snapshot);
                    for mask in self.core.policy.masks_on_missing_columns(&name) {
                        warn!(upstream = %name, "{mask}: the policy masks a column the table does not have; statements reading the table are refused");
                    }
                }
                Err(e) => {
                    all = false;
                    metrics::counter!("tollgate_schema_load_errors_total").increment(1);
                    if self.core.policy.schema(&name).is_some() {
                        warn!(upstream = %name, error = %e, "could not refresh table shapes for masking; the last ones loaded stay in use");
                    } else {
                        warn!(upstream = %name, error = %e, "could not load table shapes for masking; statements reading masked tables are refused until it works");
                    }
                }
            }
        }
        all
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
    /// The MongoDB listeners (`listen.mongodb`, `listen.mongodb_tls`).
    pub mongo_addr: Option<SocketAddr>,
    pub mongo_tls_addr: Option<SocketAddr>,
    /// The MCP listener (`listen.mcp`, Streamable HTTP at `/mcp`).
    pub mcp_addr: Option<SocketAddr>,
    /// Stops everything else (admin listener, audit flusher, schema refresher).
    shutdown: watch::Sender<bool>,
}

/// How long a stopping gateway waits for its audit exporters to send what they hold.
const EXPORT_FINISH_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

impl Running {
    pub fn shutdown(&self) {
        let _ = self.stop_accepting.send(true);
        let _ = self.shutdown.send(true);
    }

    /// Changes to `true` when the gateway shuts down (for tasks started beside it).
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Graceful stop: no new client connections; sessions close as soon as nothing of theirs is
    /// running (no reply owed, no open transaction); after `deadline` the rest are closed.
    /// Returns how many sessions had to be closed at the deadline.
    pub async fn drain(&self, deadline: std::time::Duration) -> usize {
        self.drain_or_hurry(deadline, std::future::pending()).await
    }

    /// [`Running::drain`], cut short when `hurry` resolves (a second SIGTERM or SIGINT, as
    /// PgBouncer takes one: "shut down now"): the remaining sessions are closed at once.
    pub async fn drain_or_hurry(
        &self,
        deadline: std::time::Duration,
        hurry: impl std::future::Future<Output = ()>,
    ) -> usize {
        let lifecycle = &self.gateway.core.lifecycle;
        let _ = self.stop_accepting.send(true);
        lifecycle.set_phase(Phase::Draining);
        info!(
            live = lifecycle.live(),
            ?deadline,
            "draining: no new connections"
        );
        let until = tokio::time::Instant::now() + deadline;
        let mut forced = 0;
        let mut hurry = std::pin::pin!(hurry);
        let mut hurried = false;
        let idle = tokio::select! {
            idle = lifecycle.wait_idle(until) => idle,
            () = &mut hurry => {
                warn!("a second signal: not waiting for the drain");
                hurried = true;
                false
            }
        };
        if !idle {
            forced = lifecycle.live();
            warn!(
                sessions = forced,
                "drain over: closing the remaining sessions"
            );
            lifecycle.set_phase(Phase::Closing);
            let grace = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
            lifecycle.wait_idle(grace).await;
        }
        // Outcome records of the last statements, the last failed logins' summaries, then the
        // record that says the gateway stopped (after them: nothing of this run follows it).
        self.gateway.core.flush_login_records();
        let stop = crate::audit::SystemRecord::Stop {
            forced: forced as u64,
        };
        if let Err(e) = self.gateway.core.audit.append_system(stop).await {
            warn!(error = %e, "the audit log could not record the stop");
        }
        if let Err(e) = self.gateway.core.audit.flush() {
            warn!(error = %e, "audit flush failed at shutdown");
        }
        self.shutdown();
        // The SIEM gets the stop record too (the exporters stopped with it queued: a review),
        // unless a second signal says not to wait (before or during that wait).
        if !hurried {
            tokio::select! {
                () = self.gateway.core.audit.finish_exports(EXPORT_FINISH_WITHIN) => {}
                () = &mut hurry => warn!("a second signal: not waiting for the audit exporters"),
            }
        }
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
    crate::audit::spawn_background(&gateway.core.audit, &gateway.config, rx.clone())?;
    // After the exporters (the SIEM gets it too; it missed it, a live review) and before any
    // listener: every session record of this run follows it, so its `session` numbers (from 1
    // again) are told apart from an earlier run's.
    let started = crate::audit::SystemRecord::Start {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
    };
    if let Err(e) = gateway.core.audit.append_system(started).await {
        // Serving goes on as with any failed write: a statement is forwarded only once its
        // record is written, and a `lost` record will count this one.
        warn!(error = %e, "the audit log could not record the start");
    }
    // Masking needs the upstreams' table shapes: try once before serving, then keep them fresh.
    let loaded = gateway.refresh_schemas().await;
    tokio::spawn(refresh_schemas_periodically(
        gateway.clone(),
        loaded,
        rx.clone(),
    ));
    let mut listening = BTreeMap::new();
    for door in &gateway.doors {
        for l in door
            .clone()
            .start(gateway.core.clone(), stop_rx.clone())
            .await?
        {
            listening.insert(l.listener as u8, l);
        }
    }
    let addr_of = |which: Listener| listening.get(&(which as u8)).map(|l| l.addr);
    let mut admin_addr = None;
    if let Some(addr) = gateway.config.admin.listen {
        let (listener, local) = crate::doors::bind(addr).await?;
        info!(admin = %local, "admin API listener ready");
        admin_addr = Some(local);
        tokio::spawn(crate::admin::serve(gateway.clone(), listener, rx.clone()));
    }
    Ok(Running {
        pg_addr: addr_of(Listener::Postgres),
        redis_addr: addr_of(Listener::Redis),
        redis_tls_addr: addr_of(Listener::RedisTls),
        mongo_addr: addr_of(Listener::Mongo),
        mongo_tls_addr: addr_of(Listener::MongoTls),
        mcp_addr: addr_of(Listener::Mcp),
        gateway,
        admin_addr,
        stop_accepting: stop_tx,
        shutdown: tx,
    })
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

/// Writes deferred audit records (statement outcomes) at least every 100 ms, the summaries of
/// failed logins not recorded one by one every second, and both at shutdown.
async fn flush_audit_periodically(gateway: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    let mut ticks = 0u32;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => {
                gateway.core.flush_login_records();
                let _ = gateway.core.audit.flush();
                return;
            }
        }
        ticks = ticks.wrapping_add(1);
        if ticks.is_multiple_of(10) {
            gateway.core.flush_login_records();
            match gateway.core.audit.check_file() {
                Ok(None) => {}
                Ok(Some(upto)) => {
                    metrics::counter!("tollgate_audit_file_replaced_total").increment(1);
                    tracing::error!(
                        written_upto = upto,
                        "audit log: the active file was removed or moved while open; a new one was started under its name (records up to {upto} are in the file that went)"
                    );
                }
                Err(e) => {
                    metrics::counter!("tollgate_audit_file_replaced_total").increment(1);
                    tracing::error!(error = %e, "audit log: the active file was removed or moved while open, and a new one could not be started: records go on into the file that went");
                }
            }
        }
        if let Err(e) = gateway.core.audit.flush() {
            warn!(error = %e, "audit flush failed");
        }
    }
}

/// Runs `reload` on the blocking pool. Reloads open and parse files, and the gateway has one
/// async worker by default (`[runtime] worker_threads`): a file slow to read (a network
/// filesystem) must delay the reload, never every door. `None` if the reload panicked.
pub async fn off_workers<T: Send + 'static>(
    gateway: &Arc<Gateway>,
    reload: impl FnOnce(&Gateway) -> T + Send + 'static,
) -> Option<T> {
    let gateway = gateway.clone();
    tokio::task::spawn_blocking(move || reload(&gateway))
        .await
        .ok()
}
