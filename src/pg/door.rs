//! The PostgreSQL door: its upstreams (vaulted credentials, swapped on a vault reload), the
//! cancel registry, the listener, table shapes for masking and the admin API's probe.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tracing::info;

use super::cancel::CancelRegistry;
use super::pool::Pool;
use super::upstream::UpstreamTarget;
use crate::config::{Config, UpstreamKind};
use crate::doors::{BoxFuture, Commit, Door, DoorError, Listener, Listening};
use crate::policy::mask::SchemaSnapshot;
use crate::session::Core;
use crate::vault::Vault;

/// An upstream's two pools.
pub struct Pools {
    pub per_transaction: Arc<Pool>,
    pub per_session: Arc<Pool>,
}

impl Pools {
    /// The default mode of the upstream (a policy may ask for session pooling).
    pub fn mode(&self) -> crate::config::PoolMode {
        self.per_transaction.settings.mode
    }

    pub fn for_mode(&self, mode: crate::config::PoolMode) -> &Arc<Pool> {
        match mode {
            crate::config::PoolMode::Transaction => &self.per_transaction,
            crate::config::PoolMode::Session => &self.per_session,
        }
    }
}

pub struct PgDoor {
    listen: Option<SocketAddr>,
    /// `listen.postgres_require_tls`: plain connections are refused before authentication.
    pub require_tls: bool,
    /// `listen.postgres_scram_iterations`.
    pub scram_iterations: crate::config::ScramIterations,
    /// The PostgreSQL upstreams of the config (name → its config), for credential reloads.
    configs: Vec<(String, crate::config::UpstreamConfig)>,
    targets: ArcSwap<HashMap<String, UpstreamTarget>>,
    /// The server connections of each upstream: those transaction-pooled sessions share, and
    /// those session-pooled sessions hold one each (reused after a reset).
    pools: HashMap<String, Pools>,
    /// tollgate's own backend keys → the upstream backends they cancel.
    pub cancels: Arc<CancelRegistry>,
}

impl PgDoor {
    pub fn build(config: &Config, vault: &Vault) -> Result<PgDoor, DoorError> {
        let configs: Vec<_> = config
            .upstreams
            .iter()
            .filter(|(_, u)| u.kind == UpstreamKind::Postgres)
            .map(|(n, u)| (n.clone(), u.clone()))
            .collect();
        let targets = resolve(&configs, vault)?;
        let connect_timeout =
            std::time::Duration::from_millis(config.limits.upstream_connect_timeout_ms);
        let pools = configs
            .iter()
            .map(|(name, u)| {
                let settings = u.pool();
                let per_session = crate::config::PoolSettings {
                    size: settings.session_size,
                    min_idle: 0,
                    ..settings.clone()
                };
                let pools = Pools {
                    per_transaction: Arc::new(Pool::new(
                        targets[name].clone(),
                        settings,
                        connect_timeout,
                    )),
                    per_session: Arc::new(
                        Pool::new(targets[name].clone(), per_session, connect_timeout)
                            .for_sessions(),
                    ),
                };
                (name.clone(), pools)
            })
            .collect();
        Ok(PgDoor {
            listen: config.listen.postgres,
            require_tls: config.listen.postgres_require_tls,
            scram_iterations: config.listen.postgres_scram_iterations,
            configs,
            targets: ArcSwap::from_pointee(targets),
            pools,
            cancels: Arc::default(),
        })
    }

    /// The pools of upstream `name`.
    pub fn pools(&self, name: &str) -> Option<&Pools> {
        self.pools.get(name)
    }

    /// Upstream `name` with its current credentials.
    pub fn target(&self, name: &str) -> Option<UpstreamTarget> {
        self.targets.load().get(name).cloned()
    }

    pub fn has_upstream(&self, name: &str) -> bool {
        self.targets.load().contains_key(name)
    }
}

fn resolve(
    configs: &[(String, crate::config::UpstreamConfig)],
    vault: &Vault,
) -> Result<HashMap<String, UpstreamTarget>, DoorError> {
    configs
        .iter()
        .map(|(n, u)| Ok((n.clone(), UpstreamTarget::from_config(n, u, vault)?)))
        .collect()
}

impl Door for PgDoor {
    fn kind(&self) -> Option<UpstreamKind> {
        Some(UpstreamKind::Postgres)
    }

    fn serves(&self, upstream: &str) -> bool {
        self.configs.iter().any(|(n, _)| n == upstream)
    }

    fn reload_credentials<'a>(&'a self, vault: &Vault) -> Result<Commit<'a>, DoorError> {
        let targets = resolve(&self.configs, vault)?;
        Ok(Box::new(move || {
            // Pools drain connections logged in with the old credentials as they come back.
            for (name, pools) in &self.pools {
                if let Some(t) = targets.get(name) {
                    pools.per_transaction.set_target(t.clone());
                    pools.per_session.set_target(t.clone());
                }
            }
            self.targets.store(Arc::new(targets));
        }))
    }

    fn start(
        self: Arc<Self>,
        core: Arc<Core>,
        stop: watch::Receiver<bool>,
    ) -> BoxFuture<'static, Result<Vec<Listening>, DoorError>> {
        Box::pin(async move {
            for pools in self.pools.values() {
                tokio::spawn(pools.per_transaction.clone().maintain(stop.clone()));
                tokio::spawn(pools.per_session.clone().maintain(stop.clone()));
            }
            let Some(addr) = self.listen else {
                return Ok(Vec::new());
            };
            let (listener, local) = crate::doors::bind(addr).await?;
            info!(%local, "PostgreSQL listener ready");
            tokio::spawn(crate::doors::accept_loop(
                listener,
                stop,
                move |socket, peer| {
                    super::session::handle(core.clone(), self.clone(), socket, peer)
                },
            ));
            Ok(vec![Listening {
                listener: Listener::Postgres,
                addr: local,
            }])
        })
    }

    fn table_shapes<'a>(
        &'a self,
        upstream: &'a str,
        timeout: Duration,
    ) -> Option<BoxFuture<'a, Result<SchemaSnapshot, String>>> {
        let target = self.target(upstream)?;
        Some(Box::pin(async move {
            super::schema_loader::load_schema(&target, timeout)
                .await
                .map_err(|e| e.to_string())
        }))
    }

    fn pools(&self) -> Vec<crate::doors::PoolView> {
        self.pools
            .values()
            .flat_map(|p| {
                [
                    p.per_transaction.view("transaction"),
                    p.per_session.view("session"),
                ]
            })
            .collect()
    }

    fn protect_logins(&self, policy: &crate::policy::Engine) {
        for (name, t) in self.targets.load().iter() {
            policy.set_upstream_login(
                name,
                crate::policy::sql::login_guard::UpstreamLogin {
                    role: t.user.expose().to_string(),
                    database: t.database.clone(),
                },
            );
        }
    }

    fn probe<'a>(
        &'a self,
        upstream: &'a str,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let target = self.target(upstream).ok_or("no such connector")?;
            let failure = |e: &tokio_postgres::Error| probe_failure(e, &target.host, target.port);
            let (client, driver) = super::schema_loader::side_connection(&target, "tollgate-probe")
                .await
                .map_err(|e| failure(&e))?;
            let version = client
                .query_one("SHOW server_version", &[])
                .await
                .map_err(|e| failure(&e))
                .map(|row| row.get::<_, String>(0));
            drop(client);
            let _ = driver.await;
            version
        })
    }
}

/// A probe failure from its class and SQLSTATE only (never server text).
fn probe_failure(e: &tokio_postgres::Error, host: &str, port: u16) -> String {
    match e.code().map(|c| c.code()) {
        Some(code @ ("28P01" | "28000" | "53300" | "57P03" | "3D000")) => {
            super::upstream::login_refusal(code)
        }
        Some(code) => format!("the upstream answered with an error (SQLSTATE {code})"),
        None => format!("cannot reach the upstream at {host}:{port}"),
    }
}
