//! The admin HTTP API (axum) on its own listener: connectors, schemas, agents, audit, stats,
//! reload, health, readiness, `/metrics` and the OpenAPI document.
//!
//! Handlers read everything through the [`Gateway`] value; nothing here touches protocol code.
//! Authentication: `Authorization: Bearer <admin token>`; every `GET` under `/api/v1` and
//! `/metrics` needs a `viewer` (or `admin`) token, every `POST` an `admin` token; `/healthz`,
//! `/readyz` and `/api/v1/openapi.json` are open. Errors are JSON: `{"error": {"code", "message"}}`.

mod actions;
mod agents;
mod audit_query;
mod audit_rotate;
mod auth;
mod connectors;
mod error;
pub mod mongo_schema;
mod openapi;
mod ops;
mod probe;
pub mod schema;
pub mod tokens;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::gateway::Gateway;

pub use error::ApiError;
pub use openapi::document as openapi_document;

/// Every route: (method, path as in the OpenAPI document). The router below serves exactly
/// these; a test checks each is routed and documented.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/api/v1/connectors/types"),
    ("get", "/api/v1/connectors"),
    ("get", "/api/v1/connectors/{id}"),
    ("post", "/api/v1/connectors/{id}/test"),
    ("get", "/api/v1/connectors/{id}/schema"),
    ("get", "/api/v1/agents"),
    ("get", "/api/v1/agents/{id}/connectors"),
    ("get", "/api/v1/audit"),
    ("post", "/api/v1/audit/rotate"),
    ("get", "/api/v1/stats"),
    ("post", "/api/v1/reload"),
];

/// What the admin API keeps beside the gateway: probe results and schema snapshots.
pub struct AdminState {
    pub gw: Arc<Gateway>,
    /// Last probe of each connector (test endpoint and readiness).
    pub probes: Mutex<HashMap<String, probe::ProbeRecord>>,
    /// Table shapes per connector, as last read from its catalog.
    pub schemas: schema::SchemaReads<crate::policy::mask::SchemaSnapshot>,
    /// MongoDB collection samples per connector, as last read (shared by requests that waited).
    pub samples: schema::SchemaReads<Vec<crate::doors::CollectionShape>>,
    /// One catalog read or sample at a time per connector (`schema::shared_read`).
    pub reads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The last readiness answer, reused for a second (probes log in upstream).
    pub ready: Mutex<Option<(std::time::Instant, bool, serde_json::Value)>>,
    /// Turns to check a token not seen before (PBKDF2): `auth::CHECKS_AT_ONCE`.
    pub token_checks: Arc<tokio::sync::Semaphore>,
    /// Refused requests recorded in the audit chain, at most one a second.
    pub refusals: Mutex<actions::Refusals>,
}

pub type State = Arc<AdminState>;

pub fn router(gw: Arc<Gateway>) -> Router {
    let state = Arc::new(AdminState {
        gw,
        probes: Mutex::new(HashMap::new()),
        schemas: Mutex::new(HashMap::new()),
        samples: Mutex::new(HashMap::new()),
        reads: Mutex::new(HashMap::new()),
        ready: Mutex::new(None),
        token_checks: Arc::new(tokio::sync::Semaphore::new(auth::CHECKS_AT_ONCE)),
        refusals: Mutex::new(actions::Refusals::default()),
    });
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/api/v1/openapi.json", get(openapi::serve))
        .route("/api/v1/connectors/types", get(connectors::types))
        .route("/api/v1/connectors", get(connectors::list))
        .route("/api/v1/connectors/{id}", get(connectors::one))
        .route("/api/v1/connectors/{id}/test", post(connectors::test))
        .route("/api/v1/connectors/{id}/schema", get(schema::schema))
        .route("/api/v1/agents", get(agents::list))
        .route("/api/v1/agents/{id}/connectors", get(agents::connectors))
        .route("/api/v1/audit", get(audit_query::audit))
        .route("/api/v1/audit/rotate", post(audit_rotate::rotate))
        .route("/api/v1/stats", get(ops::stats))
        .route("/api/v1/reload", post(ops::reload))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(state)
}

/// Serves the admin API until `shutdown` flips to true. A connection counts against
/// `limits.max_preauth_connections` until a request on it presents a valid admin token, and
/// must send each request's headers within `limits.http_header_timeout_ms` (`http_serve`).
pub async fn serve(gw: Arc<Gateway>, listener: TcpListener, shutdown: watch::Receiver<bool>) {
    let serve = crate::http_serve::HttpServe {
        core: gw.core.clone(),
        label: "admin",
        refusal_body: |r| {
            serde_json::json!({"error": {"code": "unavailable", "message": r.message()}})
                .to_string()
        },
        stop: shutdown,
        drained: false,
    };
    // HTTPS when `[tls]` is set (a token must not cross a network in clear), plain HTTP on the
    // same port otherwise or for clients that ask for it. The caller's address goes into the
    // audit records of admin actions.
    let core = gw.core.clone();
    let negotiate = move |socket: tokio::net::TcpStream, addr: std::net::SocketAddr| {
        let core = core.clone();
        async move {
            let stream = crate::http_serve::tls_or_plain(socket, &core, "admin").await?;
            Some((stream, addr))
        }
    };
    crate::http_serve::serve(listener, router(gw), serve, negotiate).await;
}
