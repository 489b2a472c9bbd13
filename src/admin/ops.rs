//! Operations endpoints: `/healthz`, `/readyz`, `/metrics`, `/api/v1/stats`, `POST /api/v1/reload`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::actions::{self, Client};
use super::auth::{Admin, Viewer};
use super::error::ApiError;
use super::probe::{probe, ProbeRecord};
use super::State;
use crate::gateway::{Gateway, ReloadError, Reloaded};
use crate::session::Phase;
use crate::telemetry::DECISIONS;

type AppState = axum::extract::State<State>;

/// The process is up and serving HTTP.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when not shutting down and every connector answered a probe (login included).
/// Answers are reused for a second, so a busy prober does not flood the upstreams.
pub async fn readyz(axum::extract::State(state): AppState) -> Response {
    if state.gw.core.lifecycle.phase() != Phase::Serving {
        let body = json!({"ready": false, "reason": "shutting down"});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    let fresh = state
        .ready
        .lock()
        .ok()
        .and_then(|r| r.clone())
        .filter(|(at, _, _)| at.elapsed() < Duration::from_secs(1));
    let (ready, body) = match fresh {
        Some((_, ready, body)) => (ready, body),
        None => {
            let (ready, body) = probe_all(&state).await;
            if let Ok(mut r) = state.ready.lock() {
                *r = Some((Instant::now(), ready, body.clone()));
            }
            (ready, body)
        }
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn probe_all(state: &State) -> (bool, Value) {
    let timeout = Duration::from_millis(
        state
            .gw
            .config
            .limits
            .upstream_connect_timeout_ms
            .min(2_000),
    );
    let names: Vec<String> = state.gw.config.upstreams.keys().cloned().collect();
    // Concurrently: one task per connector.
    let tasks: Vec<_> = names
        .iter()
        .map(|n| {
            let (gw, n) = (state.gw.clone(), n.clone());
            tokio::spawn(async move { probe(&gw, &n, timeout).await })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.ok());
    }
    let mut connectors = serde_json::Map::new();
    let mut ready = true;
    for (name, r) in names.into_iter().zip(results) {
        let Some(r) = r else {
            ready = false;
            continue;
        };
        ready &= r.success;
        if let Ok(mut m) = state.probes.lock() {
            m.insert(name.clone(), ProbeRecord::of(&r));
        }
        connectors.insert(
            name,
            json!({"ready": r.success, "message": r.message, "latency_ms": r.latency_ms}),
        );
    }
    (ready, json!({"ready": ready, "connectors": connectors}))
}

/// Prometheus text exposition.
pub async fn metrics(
    _: Viewer,
    axum::extract::State(state): AppState,
) -> Result<Response, ApiError> {
    let pools: Vec<_> = state.gw.doors.iter().flat_map(|d| d.pools()).collect();
    crate::telemetry::export_pools(&pools);
    let text = crate::telemetry::render(&state.gw.core.stats, state.gw.core.policy.cache_counts())
        .ok_or_else(|| {
            ApiError::Unavailable("no Prometheus recorder is installed in this process".into())
        })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// Counters per agent and per connector since start.
pub async fn stats(_: Viewer, axum::extract::State(state): AppState) -> Json<Value> {
    let gw = &state.gw;
    let mut agents = serde_json::Map::new();
    let mut connectors = serde_json::Map::new();
    let totals =
        |m: &mut serde_json::Map<String, Value>, key: &str, p: &crate::telemetry::PairStats| {
            let entry = m.entry(key.to_owned()).or_insert_with(|| {
                let mut statements = serde_json::Map::new();
                for d in DECISIONS {
                    statements.insert(d.as_str().into(), json!(0));
                }
                json!({
                    "connections_open": 0,
                    "connections_total": 0,
                    "statements": statements,
                    "rate_limited": 0,
                    "errors": 0,
                })
            });
            let add = |v: &mut Value, n: u64| *v = json!(v.as_u64().unwrap_or(0) + n);
            add(
                &mut entry["connections_open"],
                p.connections_open.load(Ordering::Relaxed).max(0) as u64,
            );
            add(
                &mut entry["connections_total"],
                p.connections_total.load(Ordering::Relaxed),
            );
            for d in DECISIONS {
                add(&mut entry["statements"][d.as_str()], p.count(d));
            }
            add(
                &mut entry["rate_limited"],
                p.rate_limited.load(Ordering::Relaxed),
            );
            add(&mut entry["errors"], p.errors.load(Ordering::Relaxed));
        };
    for (agent, upstream, p) in gw.core.stats.snapshot() {
        totals(&mut agents, &agent, &p);
        totals(&mut connectors, &upstream, &p);
    }
    let cache = gw.core.policy.cache_counts();
    Json(json!({
        "uptime_seconds": gw.started.elapsed().as_secs(),
        "sessions_live": gw.core.lifecycle.live(),
        "policy_version": gw.core.policy.version(),
        "agents": agents,
        "connectors": connectors,
        "decision_cache": {
            "hits": cache.hits,
            "shape_hits": cache.shape_hits,
            "misses": cache.misses,
            "hit_ratio": cache.hit_ratio(),
        },
        "pools": gw.doors.iter().flat_map(|d| d.pools()).collect::<Vec<_>>(),
    }))
}

/// Reloads policies, agents, the vault and the admin tokens. 200 when all reloaded; 422 with the
/// errors when some part kept its running version. Recorded in the audit chain before and after.
pub async fn reload(
    Admin(caller): Admin,
    client: Client,
    axum::extract::State(state): AppState,
) -> Result<Response, ApiError> {
    let gw = state.gw.clone();
    tracing::info!(admin = %caller.name, "reload requested through the admin API");
    let recorded = actions::start(&state, &caller, &client, "reload", None).await?;
    let Reloaded {
        errors,
        restart_needed,
    } = match crate::gateway::off_workers(&gw, Gateway::reload_all).await {
        Some(reloaded) => reloaded,
        None => {
            recorded.finish(Err("the reload task failed".into())).await;
            return Err(ApiError::Internal(
                "reload failed: the reload task panicked".into(),
            ));
        }
    };
    // Which parts kept their running version; the details (file, line) are in the answer and
    // the log, not in the audit record.
    let failed: Vec<&str> = errors.iter().map(part).collect();
    recorded
        .finish(if failed.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "kept the running version of: {}",
                failed.join(", ")
            ))
        })
        .await;
    let body = json!({
        "success": errors.is_empty(),
        "policy_version": state.gw.core.policy.version(),
        "errors": errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        "restart_needed": restart_needed,
    });
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok((status, Json(body)).into_response())
}

/// The part of a reload an error is about, as the audit record names it.
fn part(e: &ReloadError) -> &'static str {
    match e {
        ReloadError::Policies(_) => "policies",
        ReloadError::Vault(_) => "vault",
        ReloadError::AdminTokens(_) => "admin tokens",
        ReloadError::Tls(_) => "TLS certificate",
    }
}
