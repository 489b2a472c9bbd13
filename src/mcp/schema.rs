//! The policy-shaped views: `list_upstreams`, and `list_tables`/`describe_table` through the
//! admin API's per-agent schema view (only what the agent may touch, masks and row filters
//! marked). Each call on an upstream is admitted and recorded like a statement. Names read from
//! the upstream's catalog are returned as untrusted data (`output::data`): whoever can create a
//! column can name it like an instruction.

use rmcp::model::{CallToolRequestParams, CallToolResult};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Caller;
use super::handler::{args, Handler};
use super::output::{self, ToolError};
use super::tools::reach;
use crate::admin::schema::{access_for, table_view};
use crate::config::UpstreamKind;
use crate::session::{Judged, Session};

pub fn list_upstreams(h: &Handler, caller: &Caller) -> Result<CallToolResult, ToolError> {
    // The TLS requirement of the agent's policy holds for every tool, upstream or not.
    if let Some(req) = h.core.policy.tls_requirement(caller.agent()) {
        if req.enforced && !caller.encrypted {
            let r = crate::refusal::Refusal::new(
                crate::refusal::RefusalClass::TlsRequired,
                req.rule,
                format!(
                    "agent \"{}\" must connect over TLS; this connection is not encrypted",
                    caller.agent()
                ),
            );
            caller
                .accepted
                .refuse_before_auth(caller.agent().as_bytes(), &r);
            return Err(ToolError::refusal(&r));
        }
    }
    let reach = reach(&h.core.policy, caller.agent(), &h.door.upstreams);
    let list: Vec<Value> = h
        .door
        .upstreams
        .iter()
        .filter(|u| {
            reach.sql.contains(&u.name)
                || reach.redis.contains(&u.name)
                || reach.mongo.contains(&u.name)
        })
        .map(|u| {
            json!({
                "name": u.name,
                "kind": u.kind.as_str(),
                "description": u.description,
                "tools": super::tools::tool_names(u.kind),
            })
        })
        .collect();
    let summary = format!(
        "{} upstream(s) for agent \"{}\"",
        list.len(),
        caller.agent()
    );
    Ok(output::plain(
        &summary,
        json!({"agent": caller.agent().as_ref(), "upstreams": list}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    upstream: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DescribeArgs {
    upstream: Option<String>,
    table: String,
}

/// The upstream a call names (or the agent's only one of `kind`), and the session the core
/// admits for it (TLS requirement, policy, connection caps; refusals recorded).
pub(super) fn admit(
    h: &Handler,
    caller: &Caller,
    asked: Option<&str>,
    kind: UpstreamKind,
) -> Result<Session, ToolError> {
    let name = match asked {
        Some(name) => {
            if h.door.upstream(name, kind).is_none() {
                return Err(ToolError::request(format!(
                    "there is no {} upstream \"{}\"; see list_upstreams",
                    kind.as_str(),
                    crate::session::shown_name(name.as_bytes())
                )));
            }
            name.to_string()
        }
        None => {
            let reach = reach(&h.core.policy, caller.agent(), &h.door.upstreams);
            let mine = match kind {
                UpstreamKind::Postgres => reach.sql,
                UpstreamKind::Redis => reach.redis,
                UpstreamKind::Mongodb => reach.mongo,
            };
            match mine.as_slice() {
                [one] => one.clone(),
                [] => {
                    return Err(ToolError::request(format!(
                        "you may use no {} upstream",
                        kind.as_str()
                    )))
                }
                many => {
                    return Err(ToolError::request(format!(
                        "name the upstream: one of {}",
                        many.join(", ")
                    )))
                }
            }
        }
    };
    caller
        .accepted
        .admit(&caller.verified, &name, caller.encrypted)
        .map_err(|r| ToolError::refusal(&r))
}

/// Records a metadata call as a statement (rate bucket, decision record) and its outcome.
pub(super) fn record(session: &Session, what: String, rows: u64) -> Result<(), ToolError> {
    let limits = session
        .core()
        .policy
        .agent_policy(session.agent())
        .map(|p| p.limits.clone())
        .unwrap_or_default();
    let ticket = session
        .decide(Judged::allowed(what), Some(&limits))
        .map_err(|r| ToolError::refusal(&r))?;
    session.context().outcome(ticket, Some(rows), None);
    Ok(())
}

pub async fn list_tables(
    h: &Handler,
    caller: &Caller,
    req: &CallToolRequestParams,
) -> Result<CallToolResult, ToolError> {
    let a: ListArgs = args(req)?;
    let session = admit(h, caller, a.upstream.as_deref(), UpstreamKind::Postgres)?;
    let upstream = session.upstream().clone();
    let shapes = h
        .door
        .shapes(&h.core, &upstream)
        .await
        .map_err(|_| ToolError::invalid(crate::session::upstream_unavailable(&upstream)))?;
    let access = access_for(&h.core.policy, caller.agent(), &upstream);
    let mut tables: Vec<_> = shapes.tables.values().collect();
    tables.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
    let list: Vec<Value> = tables
        .into_iter()
        .filter_map(|t| table_view(t, Some(&access)))
        .map(|mut v| {
            // The list names columns only where they are protected; describe_table has the rest.
            let masked: Vec<Value> = v["columns"]
                .as_array()
                .map(|cols| {
                    cols.iter()
                        .filter(|c| c["masked"] == json!(true))
                        .map(|c| json!({"column": c["name"], "mask": c["mask"]}))
                        .collect()
                })
                .unwrap_or_default();
            if let Value::Object(m) = &mut v {
                m.remove("columns");
                m.insert("masked_columns".into(), json!(masked));
            }
            v
        })
        .collect();
    record(&session, "-- mcp: list_tables".into(), list.len() as u64)?;
    // Table and column names come from whoever owns the schema: data, not tollgate's words.
    Ok(output::data(
        &format!(
            "{} table(s) you may use on upstream \"{upstream}\"",
            list.len()
        ),
        json!({"upstream": upstream.as_ref(), "tables": list}),
    ))
}

pub async fn describe_table(
    h: &Handler,
    caller: &Caller,
    req: &CallToolRequestParams,
) -> Result<CallToolResult, ToolError> {
    let a: DescribeArgs = args(req)?;
    let session = admit(h, caller, a.upstream.as_deref(), UpstreamKind::Postgres)?;
    let upstream = session.upstream().clone();
    let (schema, name) = match a.table.split_once('.') {
        Some((s, n)) => (s.to_string(), n.to_string()),
        None => ("public".to_string(), a.table.clone()),
    };
    let shapes = h
        .door
        .shapes(&h.core, &upstream)
        .await
        .map_err(|_| ToolError::invalid(crate::session::upstream_unavailable(&upstream)))?;
    let access = access_for(&h.core.policy, caller.agent(), &upstream);
    let view = shapes
        .tables
        .values()
        .find(|t| t.schema == schema && t.name == name)
        .and_then(|t| table_view(t, Some(&access)));
    let shown = crate::session::shown_name(a.table.as_bytes());
    record(
        &session,
        format!("-- mcp: describe_table {shown}"),
        u64::from(view.is_some()),
    )?;
    // A table the agent may not use reads exactly like one that does not exist.
    let view = view.ok_or_else(|| {
        ToolError::invalid(format!(
            "no table \"{shown}\" that you may use on upstream \"{upstream}\"; see list_tables"
        ))
    })?;
    // Column and type names come from whoever owns the schema: data, not tollgate's words.
    Ok(output::data(
        &format!("table {schema}.{name} on upstream \"{upstream}\""),
        view,
    ))
}
