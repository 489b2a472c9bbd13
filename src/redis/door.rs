//! The Redis door: its upstream (the one `listen.redis` serves), credential reloads, the plain
//! and TLS listeners, and the admin API's probe.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tracing::{info, warn};

use super::upstream::{RedisCredentials, RedisTarget, UpstreamError};
use crate::config::{Config, UpstreamConfig, UpstreamKind};
use crate::doors::{BoxFuture, Commit, Door, DoorError, Listener, Listening};
use crate::session::Core;
use crate::vault::Vault;

pub struct RedisDoor {
    /// The Redis upstreams of the config (validation allows one while a Redis listener is on).
    targets: Vec<(Arc<RedisTarget>, UpstreamConfig)>,
    listen: Option<SocketAddr>,
    listen_tls: Option<SocketAddr>,
    /// `listen.redis_require_tls`: the plain listener refuses before any token is sent.
    pub require_tls: bool,
    connect_timeout: Duration,
}

impl RedisDoor {
    pub fn build(config: &Config, vault: &Vault) -> Result<RedisDoor, DoorError> {
        let mut targets = Vec::new();
        for (name, u) in &config.upstreams {
            if u.kind == UpstreamKind::Redis {
                targets.push((
                    Arc::new(RedisTarget::from_config(name, u, vault)?),
                    u.clone(),
                ));
            }
        }
        Ok(RedisDoor {
            targets,
            listen: config.listen.redis,
            listen_tls: config.listen.redis_tls,
            require_tls: config.listen.redis_require_tls,
            connect_timeout: Duration::from_millis(config.limits.upstream_connect_timeout_ms),
        })
    }

    /// Upstream `name` (its current credentials inside).
    pub fn target(&self, name: &str) -> Option<&Arc<RedisTarget>> {
        self.targets.iter().map(|(t, _)| t).find(|t| t.name == name)
    }
}

impl Door for RedisDoor {
    fn kind(&self) -> Option<UpstreamKind> {
        Some(UpstreamKind::Redis)
    }

    fn serves(&self, upstream: &str) -> bool {
        self.target(upstream).is_some()
    }

    fn reload_credentials<'a>(&'a self, vault: &Vault) -> Result<Commit<'a>, DoorError> {
        let mut resolved = Vec::new();
        for (target, u) in &self.targets {
            resolved.push((target.clone(), RedisCredentials::resolve(u, vault)?));
        }
        Ok(Box::new(move || {
            for (target, creds) in resolved {
                target.credentials.store(Arc::new(creds));
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
                (self.listen, false, Listener::Redis),
                (self.listen_tls, true, Listener::RedisTls),
            ];
            for (addr, tls, which) in listeners {
                let Some(addr) = addr else { continue };
                // Config validation: a Redis listener serves exactly one Redis upstream.
                let Some((target, _)) = self.targets.first() else {
                    continue;
                };
                let target = target.clone();
                let (listener, local) = crate::doors::bind(addr).await?;
                info!(%local, upstream = %target.name, tls, "Redis listener ready");
                // Learn the command table now if the upstream is up; sessions retry if it is not.
                if let Err(e) = target.table(self.connect_timeout).await {
                    warn!(upstream = %target.name, error = %e, "cannot read the Redis command table yet");
                }
                let (core, door) = (core.clone(), self.clone());
                tokio::spawn(crate::doors::accept_loop(
                    listener,
                    stop.clone(),
                    move |socket, peer| {
                        super::session::handle(
                            core.clone(),
                            door.clone(),
                            target.clone(),
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

    fn protect_logins(&self, policy: &crate::policy::Engine) {
        for (target, _) in &self.targets {
            policy.set_upstream_login(
                &target.name,
                crate::policy::sql::login_guard::UpstreamLogin {
                    role: target.credentials.load().user.expose().to_string(),
                    database: String::new(),
                },
            );
        }
    }

    fn probe<'a>(
        &'a self,
        upstream: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let target = self.target(upstream).ok_or("no such connector")?;
            let mut up = target.connect(timeout).await.map_err(|e| match e {
                UpstreamError::Connect(_) => format!(
                    "cannot reach the upstream at {}:{}",
                    target.host, target.port
                ),
                UpstreamError::Timeout(t) => {
                    format!("the upstream did not answer within {} ms", t.as_millis())
                }
                UpstreamError::LoginRefused(line) => super::upstream::login_refusal(&line),
                UpstreamError::Protocol(_) => "the upstream did not speak RESP as expected".into(),
                UpstreamError::Tls(_) => "the TLS handshake with the upstream failed".into(),
            })?;
            up.stream
                .write_all(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
                .await
                .map_err(|_| "the upstream closed the connection".to_string())?;
            let reply = super::upstream::read_one_reply(&mut up.stream)
                .await
                .map_err(|_| "the upstream did not answer INFO".to_string())?;
            let text = String::from_utf8_lossy(&reply);
            Ok(text
                .lines()
                .find_map(|l| l.strip_prefix("redis_version:"))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| "unknown".into()))
        })
    }
}
