//! The MongoDB door: its upstreams (the one `listen.mongodb` serves), credential reloads, the
//! plain and TLS listeners, what the upstream said in its `hello` (learned at start, or by the
//! first session if it was down then), and the admin API's probe and schema sample.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::watch;
use tracing::{info, warn};

use super::hello::UpstreamFacts;
use super::upstream::{MongoConnection, MongoCredentials, MongoTarget, UpstreamError};
use crate::config::{Config, UpstreamConfig, UpstreamKind};
use crate::doors::{BoxFuture, Commit, Door, DoorError, Listener, Listening};
use crate::session::Core;
use crate::vault::Vault;

/// One MongoDB upstream: where it is, the vaulted login (swapped on reload), and its facts.
pub struct MongoUpstream {
    pub target: MongoTarget,
    pub credentials: ArcSwap<MongoCredentials>,
    /// `user` and `password` as configured (vault references), re-read on a vault reload.
    refs: (String, String),
    facts: ArcSwapOption<UpstreamFacts>,
    /// One session at a time learns the facts when the upstream was down at start.
    learning: tokio::sync::Mutex<()>,
    /// Logged-in connections the MCP tools reuse between calls (`idle.rs`).
    pub(super) idle: super::idle::Idle,
    /// Which agent uses each logical session id (`lsids.rs`).
    pub(super) lsids: Arc<super::lsids::LogicalSessions>,
    /// Each agent's open cursors (`cursors.rs`).
    pub(super) cursors: super::cursors::AgentCursors,
}

impl std::fmt::Debug for MongoUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoUpstream")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl MongoCredentials {
    /// Upstream `u`'s login from `vault` (the password must be a vault reference).
    pub fn resolve(u: &UpstreamConfig, vault: &Vault) -> Result<MongoCredentials, DoorError> {
        Ok(MongoCredentials {
            user: vault.resolve(&u.user, true)?,
            password: vault.resolve(&u.password, false)?,
        })
    }
}

impl MongoUpstream {
    pub fn from_config(
        name: &str,
        u: &UpstreamConfig,
        vault: &Vault,
    ) -> Result<MongoUpstream, DoorError> {
        let target = MongoTarget {
            name: name.to_string(),
            host: u.host.clone(),
            port: u.port,
            tls: crate::doors::upstream_tls(name, u)?,
            auth_source: u.database.clone().unwrap_or_else(|| "admin".into()),
        };
        let mut up = MongoUpstream::new(target, MongoCredentials::resolve(u, vault)?);
        up.refs = (u.user.clone(), u.password.clone());
        Ok(up)
    }

    /// An upstream logged in to with `credentials` (outside a config: tests, tools).
    pub fn new(target: MongoTarget, credentials: MongoCredentials) -> MongoUpstream {
        MongoUpstream {
            target,
            credentials: ArcSwap::from_pointee(credentials),
            refs: (String::new(), String::new()),
            facts: ArcSwapOption::empty(),
            learning: tokio::sync::Mutex::new(()),
            idle: super::idle::Idle::default(),
            lsids: Arc::default(),
            cursors: Default::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.target.name
    }

    /// A connection logged in with the vaulted credentials (its facts remembered).
    pub async fn connect(&self, timeout: Duration) -> Result<MongoConnection, UpstreamError> {
        self.connect_with(&self.credentials.load_full(), timeout)
            .await
    }

    /// A connection logged in with `creds` (its facts remembered).
    pub(super) async fn connect_with(
        &self,
        creds: &MongoCredentials,
        timeout: Duration,
    ) -> Result<MongoConnection, UpstreamError> {
        let conn = self.target.connect(Some(creds), timeout).await?;
        self.facts.store(Some(Arc::new(conn.facts)));
        Ok(conn)
    }

    /// The upstream's wire versions and limits (what tollgate's own `hello` says), learned once
    /// with an unauthenticated `hello`.
    pub async fn facts(&self, timeout: Duration) -> Result<UpstreamFacts, UpstreamError> {
        if let Some(f) = self.facts.load_full() {
            return Ok(*f);
        }
        let _one = self.learning.lock().await;
        if let Some(f) = self.facts.load_full() {
            return Ok(*f);
        }
        let conn = self.target.connect(None, timeout).await?;
        self.facts.store(Some(Arc::new(conn.facts)));
        Ok(conn.facts)
    }
}

pub struct MongoDoor {
    upstreams: Vec<Arc<MongoUpstream>>,
    listen: Option<SocketAddr>,
    listen_tls: Option<SocketAddr>,
    pub(super) connect_timeout: Duration,
}

impl MongoDoor {
    pub fn build(config: &Config, vault: &Vault) -> Result<MongoDoor, DoorError> {
        let mut upstreams = Vec::new();
        for (name, u) in &config.upstreams {
            if u.kind == UpstreamKind::Mongodb {
                upstreams.push(Arc::new(MongoUpstream::from_config(name, u, vault)?));
            }
        }
        Ok(MongoDoor {
            upstreams,
            listen: config.listen.mongodb,
            listen_tls: config.listen.mongodb_tls,
            connect_timeout: Duration::from_millis(config.limits.upstream_connect_timeout_ms),
        })
    }

    pub fn upstream(&self, name: &str) -> Option<&Arc<MongoUpstream>> {
        self.upstreams.iter().find(|u| u.name() == name)
    }
}

/// A probe's failure, from its class only (never the server's text).
pub fn probe_message(target: &MongoTarget, e: &UpstreamError) -> String {
    match e {
        UpstreamError::Connect(_) => format!(
            "cannot reach the upstream at {}:{}",
            target.host, target.port
        ),
        UpstreamError::Timeout(t) => {
            format!("the upstream did not answer within {} ms", t.as_millis())
        }
        UpstreamError::LoginRefused(code) if code != "AuthenticationFailed" => {
            crate::session::login_refused_with(code, 64)
        }
        UpstreamError::LoginRefused(_) | UpstreamError::Scram(_) => {
            "the upstream refused tollgate's credentials".into()
        }
        UpstreamError::Tls(_) => "the TLS handshake with the upstream failed".into(),
        UpstreamError::Hello(_) => {
            "the upstream's wire versions are outside what tollgate supports (MongoDB 3.6 to 8.0)"
                .into()
        }
        UpstreamError::Protocol(_) | UpstreamError::Command { .. } => {
            "the upstream did not speak the MongoDB wire protocol as expected".into()
        }
    }
}

impl Door for MongoDoor {
    fn kind(&self) -> Option<UpstreamKind> {
        Some(UpstreamKind::Mongodb)
    }

    fn serves(&self, upstream: &str) -> bool {
        self.upstream(upstream).is_some()
    }

    fn reload_credentials<'a>(&'a self, vault: &Vault) -> Result<Commit<'a>, DoorError> {
        let mut resolved = Vec::new();
        for up in &self.upstreams {
            // The config did not change: only the vault did. Re-read the upstream's entries.
            let user = vault.resolve(&up.refs.0, true)?;
            let password = vault.resolve(&up.refs.1, false)?;
            resolved.push((up.clone(), MongoCredentials { user, password }));
        }
        Ok(Box::new(move || {
            for (up, creds) in resolved {
                up.credentials.store(Arc::new(creds));
            }
        }))
    }

    fn start(
        self: Arc<Self>,
        core: Arc<Core>,
        stop: watch::Receiver<bool>,
    ) -> BoxFuture<'static, Result<Vec<Listening>, DoorError>> {
        Box::pin(async move {
            let mut listening = Vec::new();
            let listeners = [
                (self.listen, false, Listener::Mongo),
                (self.listen_tls, true, Listener::MongoTls),
            ];
            for (addr, tls, which) in listeners {
                let Some(addr) = addr else { continue };
                // Config validation: a MongoDB listener serves exactly one MongoDB upstream.
                let Some(up) = self.upstreams.first().cloned() else {
                    continue;
                };
                let (listener, local) = crate::doors::bind(addr).await?;
                info!(%local, upstream = %up.name(), tls, "MongoDB listener ready");
                // Learn the upstream's facts now if it is up; sessions retry if it is not.
                if let Err(e) = up.facts(self.connect_timeout).await {
                    warn!(upstream = %up.name(), error = %e, "cannot reach the MongoDB upstream yet");
                }
                let (core, door) = (core.clone(), self.clone());
                tokio::spawn(crate::doors::accept_loop(
                    listener,
                    stop.clone(),
                    move |socket, peer| {
                        super::session::handle(
                            core.clone(),
                            door.clone(),
                            up.clone(),
                            socket,
                            peer,
                            tls,
                        )
                    },
                ));
                listening.push(Listening {
                    listener: which,
                    addr: local,
                });
            }
            Ok(listening)
        })
    }

    fn collections<'a>(
        &'a self,
        upstream: &'a str,
        timeout: Duration,
    ) -> Option<BoxFuture<'a, Result<Vec<crate::doors::CollectionShape>, String>>> {
        let up = self.upstream(upstream)?;
        Some(Box::pin(super::sample::collections(up, timeout)))
    }

    fn probe<'a>(
        &'a self,
        upstream: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let up = self.upstream(upstream).ok_or("no such connector")?;
            let mut conn = up
                .connect(timeout)
                .await
                .map_err(|e| probe_message(&up.target, &e))?;
            let info = tokio::time::timeout(
                timeout,
                conn.command(&bson::doc! { "buildInfo": 1, "$db": "admin" }),
            )
            .await
            .map_err(|_| {
                format!(
                    "the upstream did not answer within {} ms",
                    timeout.as_millis()
                )
            })?
            .map_err(|e| probe_message(&up.target, &e))?;
            Ok(info.get_str("version").unwrap_or("unknown").to_string())
        })
    }
}
