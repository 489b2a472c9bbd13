//! `/api/v1/agents…`: agents (names and groups, never tokens or verifiers), and per agent the
//! connectors its policy reaches with the effective permissions and limits.

use axum::extract::Path;
use axum::Json;
use serde_json::{json, Value};

use super::auth::Viewer;
use super::connectors::{kind_name, shown};
use super::error::ApiError;
use super::State;
use crate::config::UpstreamKind;
use crate::policy::limits::Limits;
use crate::policy::redis::rules::PatternRule;
use crate::policy::redis::RedisRules;
use crate::policy::rules::{Op, OpSet, SqlRules, StatementClass, UpstreamRules};
use crate::policy::AgentPolicy;

pub async fn list(
    _: Viewer,
    axum::extract::State(state): axum::extract::State<State>,
) -> Json<Value> {
    let agents = state.gw.core.agents.load_full();
    let items: Vec<Value> = agents
        .names()
        .map(|name| {
            let policy = state.gw.core.policy.agent_policy(name);
            let mut connectors: Vec<&str> = Vec::new();
            if let Some(p) = &policy {
                for m in [&p.enforced, &p.with_shadow].into_iter().flatten() {
                    connectors.extend(m.keys().map(String::as_str));
                }
            }
            connectors.sort_unstable();
            connectors.dedup();
            json!({
                "id": name,
                "groups": agents.groups_of(name),
                "connectors": connectors,
                "limits": policy.as_ref().map(|p| limits(&p.limits)),
            })
        })
        .collect();
    Json(json!(items))
}

pub async fn connectors(
    _: Viewer,
    axum::extract::State(state): axum::extract::State<State>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if state.gw.core.agents.load().get(&id).is_none() {
        return Err(ApiError::NotFound(format!("no agent \"{}\"", shown(&id))));
    }
    let policy = state.gw.core.policy.agent_policy(&id).unwrap_or_default();
    let mut items = Vec::new();
    for (name, u) in &state.gw.config.upstreams {
        let Some(v) = connector_view(&policy, name, u.kind) else {
            continue;
        };
        let mut v = v;
        v["connector"] = json!(name);
        v["type"] = json!(kind_name(u.kind));
        items.push(v);
    }
    Ok(Json(json!({
        "agent": id,
        "limits": limits(&policy.limits),
        "connectors": items,
    })))
}

/// The agent's effective rules on one connector; `None` if no policy reaches it.
fn connector_view(policy: &AgentPolicy, upstream: &str, kind: UpstreamKind) -> Option<Value> {
    let enforced = policy.enforced.as_ref().and_then(|m| m.get(upstream));
    let shadow = policy.with_shadow.as_ref().and_then(|m| m.get(upstream));
    let rules = enforced.or(shadow)?;
    let mut v = match rules {
        UpstreamRules::Sql(r) => postgres_view(r),
        UpstreamRules::Redis(r) => redis_view(r),
        UpstreamRules::Mongo(r) => mongo_view(r),
    };
    let _ = kind; // the rules carry their kind (policy validation matched it to the config)
    v["policy_files"] = json!(rules.sources());
    // `enforced: false`: only shadow files name this connector (refusals are audited as
    // would_block and the statements run). `shadow`: some shadow file applies to the agent.
    v["enforced"] = json!(enforced.is_some());
    v["shadow"] = json!(shadow.is_some());
    Some(v)
}

fn ops(set: OpSet) -> Vec<&'static str> {
    Op::ALL
        .into_iter()
        .filter(|o| set.contains(*o))
        .map(Op::name)
        .collect()
}

fn postgres_view(r: &SqlRules) -> Value {
    let statements: Vec<&str> = StatementClass::ALL
        .into_iter()
        .filter(|c| r.passthrough || r.classes.contains(*c))
        .map(StatementClass::name)
        .collect();
    let tables: Vec<Value> = r
        .tables
        .iter()
        .map(|t| {
            let masks: serde_json::Map<String, Value> = t
                .masks
                .iter()
                .map(|(c, s)| (c.clone(), json!(s.to_string())))
                .collect();
            json!({
                "pattern": t.glob.as_str(),
                "allow": ops(t.allow),
                "deny": ops(t.deny),
                "masks": masks,
                "row_filter": t.row_filter,
                "rule": t.rule,
            })
        })
        .collect();
    json!({
        "profile": if r.passthrough { "passthrough" } else { "restricted" },
        "postgres": {
            "statements": statements,
            "catalog": r.catalog,
            "tables": tables,
            "allow_functions": r.allow_functions.iter().map(|f| f.glob.as_str()).collect::<Vec<_>>(),
            "deny_functions": r.deny_functions.iter().map(|f| f.glob.as_str()).collect::<Vec<_>>(),
        },
    })
}

fn redis_view(redis: &RedisRules) -> Value {
    let globs = |v: &[PatternRule]| {
        v.iter()
            .map(|p| p.glob.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    json!({
        "profile": if redis.passthrough { "passthrough" } else { "restricted" },
        "redis": {
            "commands": redis.allow.iter().map(|c| c.rule.clone()).collect::<Vec<_>>(),
            "deny_commands": redis.deny.iter().map(|c| c.rule.clone()).collect::<Vec<_>>(),
            "read_keys": globs(&redis.read_keys),
            "write_keys": globs(&redis.write_keys),
            "deny_keys": globs(&redis.deny_keys),
            "channels": globs(&redis.channels),
            "databases": redis.databases,
            "masks": redis.masks.iter().map(|m| json!({
                "keys": m.glob.as_str(),
                "fields": m.fields,
                "rule": m.rule,
            })).collect::<Vec<_>>(),
        },
    })
}

fn mongo_view(m: &crate::policy::mongo::MongoRules) -> Value {
    let collections: Vec<Value> = m
        .collections
        .iter()
        .map(|c| {
            let mongo_ops = |set: crate::policy::mongo::rules::OpSet| {
                crate::policy::mongo::Op::ALL
                    .into_iter()
                    .filter(|o| set.contains(*o))
                    .map(crate::policy::mongo::Op::name)
                    .collect::<Vec<_>>()
            };
            let masks: serde_json::Map<String, Value> = c
                .masks
                .iter()
                .map(|(f, s)| (f.clone(), json!(s.to_string())))
                .collect();
            json!({
                "pattern": c.glob.as_str(),
                "allow": mongo_ops(c.allow),
                "deny": mongo_ops(c.deny),
                "masks": masks,
                "row_filter": c.row_filter.as_ref().map(|f| f.to_string()),
                "rule": c.rule,
            })
        })
        .collect();
    json!({
        "profile": if m.passthrough { "passthrough" } else { "restricted" },
        "mongodb": {
            "collections": collections,
            "javascript": m.javascript.is_some(),
            "diagnostics": m.diagnostics.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>(),
        },
    })
}

fn limits(l: &Limits) -> Value {
    json!({
        "statements_per_minute": l.rate.as_ref().map(|(r, _)| r.per_minute),
        "burst": l.rate.as_ref().map(|(r, _)| r.burst),
        "max_rows": l.max_rows.as_ref().map(|(n, _)| n),
        "on_max_rows": l.on_max_rows.name(),
        "statement_timeout_ms": l.statement_timeout.as_ref().map(|(d, _)| d.as_millis() as u64),
        "idle_in_transaction_timeout_ms": l.idle_in_transaction_timeout.as_ref().map(|(d, _)| d.as_millis() as u64),
        "max_connections": l.max_connections.as_ref().map(|(n, _)| n),
        "rules": l.describe(),
    })
}
