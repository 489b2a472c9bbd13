//! The registry of doors: one per kind of upstream (PostgreSQL, Redis, ...). A door builds its
//! upstreams from the config and the vault, swaps their credentials on a vault reload, starts
//! its listeners on the session core, loads table shapes for masking and probes its upstreams
//! for the admin API. The gateway goes through this list and never names a front end; adding a
//! kind of upstream means adding a door here. The MCP door is the one door of no kind of its own:
//! its tools reach the upstreams of the PostgreSQL and Redis doors.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::{Config, UpstreamConfig, UpstreamKind};
use crate::policy::mask::SchemaSnapshot;
use crate::session::Core;
use crate::tls::{TlsError, UpstreamTls};
use crate::vault::{Vault, VaultError};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
pub enum DoorError {
    #[error("{0}")]
    Vault(#[from] VaultError),
    #[error("upstream \"{name}\": {source}")]
    UpstreamTls { name: String, source: TlsError },
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A listener a door opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Postgres,
    Redis,
    RedisTls,
    Mongo,
    MongoTls,
    Mcp,
}

#[derive(Debug, Clone, Copy)]
pub struct Listening {
    pub listener: Listener,
    pub addr: SocketAddr,
}

/// A collection of a document store and the field names seen in a sample of its documents
/// (dotted paths for nested documents).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionShape {
    pub database: String,
    pub name: String,
    pub fields: Vec<String>,
}

/// One pool of upstream connections as operators see it (`/metrics`, `/api/v1/stats`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PoolView {
    pub upstream: String,
    /// `transaction` or `session`.
    pub mode: &'static str,
    pub size: u32,
    pub open: u32,
    pub idle: usize,
    pub waiting: usize,
    pub checkouts: u64,
    pub waits: u64,
    pub timeouts: u64,
    pub opened: u64,
    pub closed: u64,
    pub resets: u64,
}

/// Installs credentials resolved by [`Door::reload_credentials`].
pub type Commit<'a> = Box<dyn FnOnce() + Send + 'a>;

/// One kind of upstream and the front end that serves it (or, for MCP, a front end over other
/// doors' upstreams).
pub trait Door: Send + Sync {
    /// The kind of upstream this door serves; `None` for a door over other doors' upstreams.
    fn kind(&self) -> Option<UpstreamKind>;

    /// Whether `upstream` is one of this door's.
    fn serves(&self, upstream: &str) -> bool;

    /// Resolves every upstream's credentials from `vault` without applying them; the returned
    /// closure installs them (new upstream connections use them). The gateway commits only when
    /// every door resolved, so a bad vault changes nothing.
    fn reload_credentials<'a>(&'a self, vault: &Vault) -> Result<Commit<'a>, DoorError>;

    /// Binds this door's listeners (those the config names) and serves on `core` until `stop`.
    fn start(
        self: Arc<Self>,
        core: Arc<Core>,
        stop: watch::Receiver<bool>,
    ) -> BoxFuture<'static, Result<Vec<Listening>, DoorError>>;

    /// The table shapes of `upstream` for masking; `None` when this kind has no tables.
    fn table_shapes<'a>(
        &'a self,
        _upstream: &'a str,
        _timeout: Duration,
    ) -> Option<BoxFuture<'a, Result<SchemaSnapshot, String>>> {
        None
    }

    /// The collections of `upstream` with field names sampled from their documents; `None`
    /// when this kind has no collections.
    fn collections<'a>(
        &'a self,
        _upstream: &'a str,
        _timeout: Duration,
    ) -> Option<BoxFuture<'a, Result<Vec<CollectionShape>, String>>> {
        None
    }

    /// The door's upstream connection pools, if it pools.
    fn pools(&self) -> Vec<PoolView> {
        Vec::new()
    }
    /// Tells the policy engine what tollgate logs in to each of this door's upstreams as (the
    /// vaulted user, the real database), for the built-in protections of that login. Called when
    /// the gateway is built and after every vault reload.
    fn protect_logins(&self, _policy: &crate::policy::Engine) {}

    /// Logs in to `upstream` with the vaulted credentials and returns the server's version.
    /// Failure messages are built from the failure's class, never from server text.
    fn probe<'a>(
        &'a self,
        upstream: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<String, String>>;
}

/// Every door the config needs, with credentials resolved from `vault`.
pub fn build(config: &Config, vault: &Vault) -> Result<Vec<Arc<dyn Door>>, DoorError> {
    let pg = Arc::new(crate::pg::PgDoor::build(config, vault)?);
    let mut doors: Vec<Arc<dyn Door>> = vec![pg.clone()];
    let mut redis = None;
    if config
        .upstreams
        .values()
        .any(|u| u.kind == UpstreamKind::Redis)
    {
        let door = Arc::new(crate::redis::RedisDoor::build(config, vault)?);
        doors.push(door.clone());
        redis = Some(door);
    }
    let mut mongo = None;
    if config
        .upstreams
        .values()
        .any(|u| u.kind == UpstreamKind::Mongodb)
    {
        let door = Arc::new(crate::mongo::MongoDoor::build(config, vault)?);
        doors.push(door.clone());
        mongo = Some(door);
    }
    if config.listen.mcp.is_some() {
        doors.push(Arc::new(crate::mcp::McpDoor::new(config, pg, redis, mongo)));
    }
    Ok(doors)
}

/// Installs every door's upstream logins in the policy engine ([`Door::protect_logins`]).
pub fn protect_logins(doors: &[Arc<dyn Door>], policy: &crate::policy::Engine) {
    for door in doors {
        door.protect_logins(policy);
    }
}

/// The client-side TLS for upstream `name` (`None` for `tls = "disable"`), with its kind's
/// ALPN protocol.
pub fn upstream_tls(name: &str, u: &UpstreamConfig) -> Result<Option<UpstreamTls>, DoorError> {
    let alpn = match u.kind {
        UpstreamKind::Postgres => Some(crate::tls::ALPN_POSTGRESQL),
        UpstreamKind::Redis | UpstreamKind::Mongodb => None,
    };
    UpstreamTls::build(u.tls_mode(), &u.host, u.ca_file.as_deref(), alpn).map_err(|source| {
        DoorError::UpstreamTls {
            name: name.to_string(),
            source,
        }
    })
}

/// Binds a listener; returns it with the address it got (port 0 picks one).
pub async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), DoorError> {
    let listen_error = |source| DoorError::Listen { addr, source };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(listen_error)?;
    let local = listener.local_addr().map_err(listen_error)?;
    Ok((listener, local))
}

/// Accepts connections until `stop` flips, handing each to `serve` in a task of its own.
pub async fn accept_loop<F, Fut>(
    listener: tokio::net::TcpListener,
    mut stop: watch::Receiver<bool>,
    serve: F,
) where
    F: Fn(tokio::net::TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    crate::session::watch_progress(&socket);
                    tokio::spawn(serve(socket, peer));
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => return,
        }
    }
}
