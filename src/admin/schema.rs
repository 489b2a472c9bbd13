//! `GET /api/v1/connectors/{id}/schema[?agent=NAME][&refresh=true]`: tables and columns read
//! from a PostgreSQL connector's catalog (MongoDB connectors: `mongo_schema`) (cached; `refresh=true` reads it again). With `agent`,
//! only the tables that agent may use, each with the operations allowed and masked columns
//! marked, as the policy engine would judge them. The per-agent view ([`access_for`],
//! [`table_view`]) is shared with the MCP `list_tables`/`describe_table` tools.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Viewer;
use super::connectors::{find, shown};
use super::error::{bad_query, ApiError};
use super::probe::now_rfc3339;
use super::State;
use crate::config::UpstreamKind;
use crate::policy::decide::allowed_ops;
use crate::policy::mask::{SchemaSnapshot, TableShape};
use crate::policy::rules::{SqlRules, UpstreamRules};

/// One read of a connector's schema (its catalog's tables, or its sampled collections): when,
/// and what it found.
pub struct SchemaRead<T> {
    pub loaded_at: String,
    /// When it was read, to tell whether a request that waited its turn still needs a read.
    read_at: std::time::Instant,
    pub value: Arc<T>,
}

impl<T> Clone for SchemaRead<T> {
    fn clone(&self) -> Self {
        SchemaRead {
            loaded_at: self.loaded_at.clone(),
            read_at: self.read_at,
            value: self.value.clone(),
        }
    }
}

/// The last read of each connector, by connector.
pub type SchemaReads<T> = Mutex<HashMap<String, SchemaRead<T>>>;

/// A read of connector `id`'s schema, kept in `reads`: the one kept (unless `fresh`), or one
/// made now by `read`. A connector's reads run one at a time: each logs in to the upstream,
/// and a viewer's `refresh=true` requests sent at once each opened a connection of their own
/// (220 took `shop` from 5 server connections to 112; a live review). A request that waited
/// while another read ran takes that read's answer: it is newer than the request. Per
/// connector, so a slow one holds up only its own readers.
pub(super) async fn shared_read<T, Fut>(
    state: &State,
    id: &str,
    reads: &SchemaReads<T>,
    fresh: bool,
    read: impl FnOnce() -> Fut,
) -> Result<SchemaRead<T>, ApiError>
where
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let asked = std::time::Instant::now();
    let kept = || reads.lock().ok().and_then(|m| m.get(id).cloned());
    if !fresh {
        if let Some(r) = kept() {
            return Ok(r);
        }
    }
    let turn = {
        let mut turns = state.reads.lock().unwrap_or_else(|e| e.into_inner());
        turns.entry(id.to_string()).or_default().clone()
    };
    let _turn = turn.lock_owned().await;
    // Read by another request while this one waited (or, when not fresh, at all).
    if let Some(r) = kept().filter(|r| !fresh || r.read_at >= asked) {
        return Ok(r);
    }
    let r = SchemaRead {
        value: Arc::new(read().await?),
        loaded_at: now_rfc3339(),
        read_at: std::time::Instant::now(),
    };
    if let Ok(mut m) = reads.lock() {
        m.insert(id.to_string(), r.clone());
    }
    Ok(r)
}

#[derive(Debug, Deserialize)]
pub struct SchemaQuery {
    agent: Option<String>,
    #[serde(default)]
    refresh: bool,
}

/// What one agent may do on one upstream, for filtering.
pub enum Access {
    /// Every table, unmasked (only shadow policies apply: nothing is enforced).
    Everything,
    Rules(Box<SqlRules>),
    Nothing,
}

pub async fn schema(
    _: Viewer,
    axum::extract::State(state): axum::extract::State<State>,
    Path(id): Path<String>,
    query: Result<Query<SchemaQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(bad_query)?;
    let upstream = find(&state, &id)?;
    if upstream.kind == UpstreamKind::Mongodb {
        return super::mongo_schema::schema(&state, &id, q.agent.as_deref()).await;
    }
    if upstream.kind != UpstreamKind::Postgres {
        return Err(ApiError::BadRequest(format!(
            "connector \"{}\" is a {} connector: it has no schema (postgres and mongodb connectors have one)",
            shown(&id),
            upstream.kind.as_str()
        )));
    }
    let access = match &q.agent {
        None => None,
        Some(agent) => Some(access_of(&state, agent, &id)?),
    };
    let cached = load(&state, &id, q.refresh).await?;
    let mut tables: Vec<&TableShape> = cached.value.tables.values().collect();
    tables.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
    let tables: Vec<Value> = tables
        .into_iter()
        .filter_map(|t| table_view(t, access.as_ref()))
        .collect();
    let mut body = json!({
        "connector": id,
        "loaded_at": cached.loaded_at,
        "tables": tables,
    });
    if let Some(agent) = &q.agent {
        body["agent"] = json!(agent);
    }
    Ok(Json(body))
}

fn access_of(state: &State, agent: &str, upstream: &str) -> Result<Access, ApiError> {
    if state.gw.core.agents.load().get(agent).is_none() {
        return Err(ApiError::NotFound(format!("no agent \"{}\"", shown(agent))));
    }
    Ok(access_for(&state.gw.core.policy, agent, upstream))
}

/// What `agent` may do on SQL upstream `upstream` under the current policy.
pub fn access_for(engine: &crate::policy::Engine, agent: &str, upstream: &str) -> Access {
    let Some(policy) = engine.agent_policy(agent) else {
        return Access::Nothing;
    };
    match (&policy.enforced, &policy.with_shadow) {
        (Some(m), _) => match m.get(upstream).and_then(UpstreamRules::sql) {
            Some(r) => Access::Rules(Box::new(r.clone())),
            None => Access::Nothing,
        },
        (None, Some(m)) if m.contains_key(upstream) => Access::Everything,
        _ => Access::Nothing,
    }
}

/// A table as the caller may see it (everything without `access`); `None` when the agent may do
/// nothing with it.
pub fn table_view(t: &TableShape, access: Option<&Access>) -> Option<Value> {
    let qualified = format!("{}.{}", t.schema, t.name);
    let (ops, protection) = match access {
        None | Some(Access::Everything) => (None, None),
        Some(Access::Nothing) => return None,
        Some(Access::Rules(rules)) => {
            let ops = allowed_ops(rules, &qualified);
            if ops.is_empty() {
                return None;
            }
            (Some(ops), Some(rules.protection_of(&qualified)))
        }
    };
    let columns: Vec<Value> = t
        .columns
        .iter()
        .map(|c| {
            let mask = protection.as_ref().and_then(|p| p.mask_of(&c.name));
            json!({
                "name": c.name,
                "type": c.type_sql,
                "masked": mask.is_some(),
                "mask": mask.map(|m| m.to_string()),
            })
        })
        .collect();
    let mut v = json!({"schema": t.schema, "name": t.name, "columns": columns});
    if let Some(ops) = ops {
        v["operations"] = json!(ops.iter().map(|o| o.name()).collect::<Vec<_>>());
        let p = protection.unwrap_or_default();
        v["row_filtered"] = json!(!p.filters.is_empty());
        v["rules"] = json!(p.rules());
    }
    Some(v)
}

/// The connector's table shapes: cached, or read from its catalog now.
async fn load(
    state: &State,
    id: &str,
    refresh: bool,
) -> Result<SchemaRead<SchemaSnapshot>, ApiError> {
    shared_read(state, id, &state.schemas, refresh, || {
        read_through_door(state, id, "catalog", |d, id, t| d.table_shapes(id, t))
    })
    .await
}

/// One read of connector `id` through its door (`start` says which), its failure logged and
/// answered `could not read the {what} of connector "id"`: the loaders' errors name the
/// upstream and the server's message, never credentials; the API still only says what failed.
pub(super) async fn read_through_door<T>(
    state: &State,
    id: &str,
    what: &str,
    start: impl for<'a> FnOnce(
        &'a dyn crate::doors::Door,
        &'a str,
        Duration,
    ) -> Option<crate::doors::BoxFuture<'a, Result<T, String>>>,
) -> Result<T, ApiError> {
    let timeout = Duration::from_millis(state.gw.config.limits.upstream_connect_timeout_ms);
    let load = state
        .gw
        .door_for(id)
        .and_then(|d| start(d.as_ref(), id, timeout))
        .ok_or_else(|| ApiError::NotFound(format!("no connector \"{}\"", shown(id))))?;
    load.await.map_err(|e| {
        tracing::warn!(upstream = %id, error = %e, "reading the {what} for the admin API failed");
        ApiError::Unavailable(format!(
            "could not read the {what} of connector \"{}\"",
            shown(id)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::glob::Glob;
    use crate::policy::mask::{ColumnShape, MaskStrategy};
    use crate::policy::rules::{OpSet, TableMatcher};

    fn table(name: &str, cols: &[&str]) -> TableShape {
        TableShape {
            oid: 1,
            schema: "public".into(),
            name: name.into(),
            columns: cols
                .iter()
                .enumerate()
                .map(|(i, c)| ColumnShape {
                    name: c.to_string(),
                    attnum: i as i16 + 1,
                    type_sql: "text".into(),
                    category: 'S',
                })
                .collect(),
        }
    }

    #[test]
    fn an_agent_sees_only_allowed_tables_with_masks_marked() {
        let rules = SqlRules {
            search_path: vec!["public".into()],
            tables: vec![TableMatcher {
                glob: Glob::new("public.customers"),
                allow: OpSet::parse_word("select").unwrap(),
                deny: OpSet::default(),
                rule: "analyst: table public.customers".into(),
                masks: vec![("email".into(), MaskStrategy::Email)],
                exact: true,
                row_filter: None,
            }],
            ..SqlRules::default()
        };
        let access = Access::Rules(Box::new(rules));
        let v = table_view(&table("customers", &["id", "email"]), Some(&access)).unwrap();
        assert_eq!(v["operations"], json!(["select"]));
        assert_eq!(v["columns"][0]["masked"], json!(false));
        assert_eq!(v["columns"][1]["masked"], json!(true));
        assert_eq!(v["columns"][1]["mask"], json!("email"));
        assert!(table_view(&table("secrets", &["api_key"]), Some(&access)).is_none());
        assert!(table_view(&table("secrets", &["api_key"]), Some(&Access::Nothing)).is_none());
        let all = table_view(&table("secrets", &["api_key"]), None).unwrap();
        assert!(all.get("operations").is_none());
    }
}
