//! The MCP door: the listener (`[listen] mcp`), the HTTP stack in front of the MCP service
//! (authentication middleware, then rmcp's Streamable HTTP service at `/mcp`), and the handles
//! its tools use: the PostgreSQL door's pools, the Redis door's upstreams, table shapes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::sync::watch;
use tracing::info;

use super::handler::Handler;
use super::tools::UpstreamEntry;
use crate::config::{Config, UpstreamKind};
use crate::doors::{BoxFuture, CollectionShape, Commit, Door, DoorError, Listener, Listening};
use crate::mongo::MongoDoor;
use crate::pg::pool::SettingsKey;
use crate::pg::PgDoor;
use crate::policy::mask::SchemaSnapshot;
use crate::redis::RedisDoor;
use crate::session::Core;
use crate::vault::Vault;

/// The path the MCP endpoint is served at.
pub const PATH: &str = "/mcp";

/// How long table shapes read for `list_tables` (and collection samples read for
/// `list_collections`) are reused.
const SHAPES_FRESH: Duration = Duration::from_secs(60);

/// Collection samples per upstream, with when they were read.
type Samples = HashMap<String, (Instant, Arc<Vec<CollectionShape>>)>;

pub struct McpDoor {
    listen: Option<SocketAddr>,
    pub(super) pg: Arc<PgDoor>,
    pub(super) redis: Option<Arc<RedisDoor>>,
    pub(super) mongo: Option<Arc<MongoDoor>>,
    pub(super) upstreams: Vec<UpstreamEntry>,
    pub(super) connect_timeout: Duration,
    /// The startup settings of the server connections the `query` tool borrows.
    pub(super) settings: Arc<SettingsKey>,
    /// Table shapes read for `list_tables`/`describe_table`, per upstream, with when.
    shapes: Mutex<HashMap<String, (Instant, Arc<SchemaSnapshot>)>>,
    /// Collections and their sampled fields, for `list_collections`.
    samples: Mutex<Samples>,
    /// The tool calls running, for `notifications/cancelled` (`cancel`).
    pub(super) calls: Arc<super::cancel::CallsInFlight>,
}

impl McpDoor {
    pub fn new(
        config: &Config,
        pg: Arc<PgDoor>,
        redis: Option<Arc<RedisDoor>>,
        mongo: Option<Arc<MongoDoor>>,
    ) -> McpDoor {
        let upstreams = config
            .upstreams
            .iter()
            .map(|(name, u)| UpstreamEntry {
                name: name.clone(),
                kind: u.kind,
                description: u.description.clone(),
            })
            .collect();
        // Results are read as UTF-8 text; the connections are tollgate's own, shared by MCP
        // calls only (a pooled connection is handed only to the same settings).
        let settings = Arc::new(SettingsKey::new(
            &[
                ("application_name".into(), "tollgate-mcp".into()),
                ("client_encoding".into(), "UTF8".into()),
                ("DateStyle".into(), "ISO, MDY".into()),
            ],
            true,
        ));
        McpDoor {
            listen: config.listen.mcp,
            pg,
            redis,
            mongo,
            upstreams,
            connect_timeout: Duration::from_millis(config.limits.upstream_connect_timeout_ms),
            settings,
            shapes: Mutex::new(HashMap::new()),
            samples: Mutex::new(HashMap::new()),
            calls: Arc::default(),
        }
    }

    /// Upstream `name` if it is of `kind`.
    pub(super) fn upstream(&self, name: &str, kind: UpstreamKind) -> Option<&UpstreamEntry> {
        self.upstreams
            .iter()
            .find(|u| u.name == name && u.kind == kind)
    }

    /// The table shapes of `upstream`: those the engine keeps for masking, else read from the
    /// catalog (reused for a minute).
    pub(super) async fn shapes(
        &self,
        core: &Core,
        upstream: &str,
    ) -> Result<Arc<SchemaSnapshot>, String> {
        if let Some(s) = core.policy.schema(upstream) {
            return Ok(s);
        }
        if let Some((at, s)) = self.lock_shapes().get(upstream) {
            if at.elapsed() < SHAPES_FRESH {
                return Ok(s.clone());
            }
        }
        let load = self
            .pg
            .table_shapes(upstream, self.connect_timeout.max(Duration::from_secs(1)))
            .ok_or("no such upstream")?;
        let snapshot = Arc::new(load.await?);
        self.lock_shapes()
            .insert(upstream.to_string(), (Instant::now(), snapshot.clone()));
        Ok(snapshot)
    }

    /// The collections of MongoDB upstream `upstream` with the fields seen in a sample of their
    /// documents (read over the vaulted login, reused for a minute).
    pub(super) async fn collections(
        &self,
        upstream: &str,
    ) -> Result<Arc<Vec<CollectionShape>>, String> {
        let lock = || self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, s)) = lock().get(upstream) {
            if at.elapsed() < SHAPES_FRESH {
                return Ok(s.clone());
            }
        }
        let load = self
            .mongo
            .as_ref()
            .and_then(|d| d.collections(upstream, self.connect_timeout.max(Duration::from_secs(1))))
            .ok_or("no such upstream")?;
        let sample = Arc::new(load.await?);
        lock().insert(upstream.to_string(), (Instant::now(), sample.clone()));
        Ok(sample)
    }

    fn lock_shapes(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Arc<SchemaSnapshot>)>> {
        self.shapes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn router(self: &Arc<Self>, core: &Arc<Core>) -> Router {
        // rmcp's own cancellation token is never fired: a drain lets calls in progress finish
        // (`http_serve`, whose connections the drain waits for), and the handler ends those
        // still running when the drain's time is up with a JSON-RPC error.
        // Stateless and JSON: every request stands alone (authenticated on its own), so the
        // gateway keeps no MCP sessions to expire. Host and Origin checks guard unauthenticated
        // local servers against DNS rebinding; here every request must carry the agent's token,
        // which a page in a browser cannot attach without that token. Stateless also means a
        // request's extensions (its body's share of the held budget, `auth::HeldBody`) are
        // dropped with the request: a session mode would keep them for the session's life.
        let config = StreamableHttpServerConfig::default()
            .with_legacy_session_mode(false)
            .with_json_response(true)
            .disable_allowed_hosts()
            .disable_allowed_origins();
        let (door, handler_core) = (self.clone(), core.clone());
        let service = StreamableHttpService::new(
            move || Ok(Handler::new(door.clone(), handler_core.clone())),
            Arc::new(NeverSessionManager::default()),
            config,
        );
        Router::new()
            .route_service(PATH, service)
            .layer(axum::middleware::from_fn_with_state(
                (core.clone(), self.calls.clone()),
                super::auth::require_agent,
            ))
    }
}

impl Door for McpDoor {
    fn kind(&self) -> Option<UpstreamKind> {
        None
    }

    fn serves(&self, _upstream: &str) -> bool {
        false
    }

    fn reload_credentials<'a>(&'a self, _vault: &Vault) -> Result<Commit<'a>, DoorError> {
        // The tools use the other doors' upstreams, whose credentials those doors reload.
        Ok(Box::new(|| {}))
    }

    fn start(
        self: Arc<Self>,
        core: Arc<Core>,
        stop: watch::Receiver<bool>,
    ) -> BoxFuture<'static, Result<Vec<Listening>, DoorError>> {
        Box::pin(async move {
            let Some(addr) = self.listen else {
                return Ok(Vec::new());
            };
            let (listener, local) = crate::doors::bind(addr).await?;
            info!(%local, path = PATH, "MCP listener ready");
            let app = self.router(&core);
            let serve = crate::http_serve::HttpServe {
                core: core.clone(),
                label: "mcp",
                refusal_body: |r| super::auth::json_rpc_body(&r.message()).to_string(),
                stop: stop.clone(),
                drained: true,
            };
            let negotiate =
                move |socket, addr| super::listener::negotiate(socket, addr, core.clone());
            tokio::spawn(crate::http_serve::serve(listener, app, serve, negotiate));
            Ok(vec![Listening {
                listener: Listener::Mcp,
                addr: local,
            }])
        })
    }

    fn probe<'a>(
        &'a self,
        _upstream: &'a str,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async { Err("the MCP door has no upstreams of its own".to_string()) })
    }
}
