//! `/api/v1/connectors…`: the upstream kinds tollgate speaks, the configured upstreams (without
//! secrets: credentials appear only as their `vault:` references), and the test probe.

use std::time::Duration;

use axum::extract::{Path, Query};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::actions::{self, Client};
use super::auth::{Admin, Viewer};
use super::error::{bad_query, ApiError};
use super::probe::{probe, ProbeRecord, ProbeResult};
use super::State;
use crate::config::{UpstreamConfig, UpstreamKind};

pub fn kind_name(kind: UpstreamKind) -> &'static str {
    match kind {
        UpstreamKind::Postgres => "postgres",
        UpstreamKind::Redis => "redis",
        UpstreamKind::Mongodb => "mongodb",
    }
}

pub async fn types(_: Viewer) -> Json<Value> {
    let common = |extra: Vec<Value>| {
        let mut fields = vec![
            json!({"name": "kind", "type": "string", "required": true, "description": "the connector type"}),
            json!({"name": "host", "type": "string", "required": true, "description": "host name or address of the server"}),
            json!({"name": "port", "type": "integer", "required": true, "description": "TCP port"}),
            json!({"name": "user", "type": "string", "required": true, "description": "login name, or a vault reference \"vault:NAME\""}),
            json!({"name": "password", "type": "string", "required": true, "description": "must be a vault reference \"vault:NAME\""}),
        ];
        fields.extend(extra);
        fields
    };
    Json(json!([
        {
            "type": "postgres",
            "protocol": "PostgreSQL wire protocol v3",
            "selected_by": "the startup parameter database = connector id",
            "fields": common(vec![
                json!({"name": "database", "type": "string", "required": false, "description": "real database name upstream (defaults to the connector id)"}),
                json!({"name": "search_path", "type": "array of strings", "required": false, "description": "schemas the session is pinned to (default [\"public\"])"}),
            ]),
        },
        {
            "type": "redis",
            "protocol": "RESP2 and RESP3",
            "selected_by": "the [listen] redis listener (one redis connector)",
            "fields": common(vec![]),
        },
        {
            "type": "mongodb",
            "protocol": "MongoDB wire protocol (OP_MSG), SCRAM-SHA-256",
            "selected_by": "the [listen] mongodb listener (one mongodb connector)",
            "fields": common(vec![
                json!({"name": "database", "type": "string", "required": false, "description": "the database the vaulted user is defined in (authSource, default \"admin\")"}),
            ]),
        },
    ]))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    connector_type: Option<String>,
}

/// One connector as the API shows it.
pub fn view(state: &State, id: &str, u: &UpstreamConfig) -> Value {
    let last: Option<ProbeRecord> = state.probes.lock().ok().and_then(|m| m.get(id).cloned());
    let status = match &last {
        None => "untested",
        Some(p) if p.success => "ok",
        Some(_) => "failing",
    };
    let mut v = json!({
        "id": id,
        "type": kind_name(u.kind),
        "host": u.host,
        "port": u.port,
        "user": credential_ref(&u.user),
        "password": credential_ref(&u.password),
        "status": status,
        "last_test": last,
    });
    if u.kind == UpstreamKind::Postgres {
        v["database"] = json!(u.database_name(id));
        v["search_path"] = json!(u.search_path);
    }
    v
}

/// A credential as configured: a vault reference is shown, a literal user name is not.
fn credential_ref(value: &str) -> Value {
    match crate::config::SecretRef::parse(value) {
        crate::config::SecretRef::Vault(name) => json!(format!("vault:{name}")),
        crate::config::SecretRef::Literal(_) => json!("(set in the config file)"),
    }
}

pub async fn list(
    _: Viewer,
    axum::extract::State(state): axum::extract::State<State>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(bad_query)?;
    if let Some(t) = &q.connector_type {
        if !["postgres", "redis", "mongodb"].contains(&t.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "unknown connector_type \"{}\" (known: postgres, redis, mongodb)",
                t.chars().take(64).collect::<String>()
            )));
        }
    }
    let items: Vec<Value> = state
        .gw
        .config
        .upstreams
        .iter()
        .filter(|(_, u)| {
            q.connector_type
                .as_deref()
                .is_none_or(|t| t == kind_name(u.kind))
        })
        .map(|(id, u)| view(&state, id, u))
        .collect();
    Ok(Json(json!(items)))
}

pub fn find<'a>(state: &'a State, id: &str) -> Result<&'a UpstreamConfig, ApiError> {
    state
        .gw
        .config
        .upstreams
        .get(id)
        .ok_or_else(|| ApiError::NotFound(format!("no connector \"{}\"", shown(id))))
}

/// An id from the URL, shortened for messages.
pub fn shown(id: &str) -> String {
    id.chars().take(64).collect()
}

pub async fn one(
    _: Viewer,
    axum::extract::State(state): axum::extract::State<State>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let u = find(&state, &id)?;
    Ok(Json(view(&state, &id, u)))
}

/// Logs in to the upstream with the vaulted credentials; recorded in the audit chain before and
/// after (the outcome's message is chosen from the failure's class, never server text).
pub async fn test(
    Admin(caller): Admin,
    client: Client,
    axum::extract::State(state): axum::extract::State<State>,
    Path(id): Path<String>,
) -> Result<Json<ProbeResult>, ApiError> {
    find(&state, &id)?;
    let recorded = actions::start(&state, &caller, &client, "connector_test", Some(&id)).await?;
    let timeout = Duration::from_millis(state.gw.config.limits.upstream_connect_timeout_ms);
    let result = probe(&state.gw, &id, timeout).await;
    recorded
        .finish(if result.success {
            Ok(())
        } else {
            Err(result.message.clone())
        })
        .await;
    if let Ok(mut m) = state.probes.lock() {
        m.insert(id, ProbeRecord::of(&result));
    }
    Ok(Json(result))
}
