//! The MongoDB tools: `find` and `aggregate` build the command a driver would send (the
//! arguments' documents in the order the client wrote them, `ordered`), which goes through
//! exactly the judgement of a wire command: strict BSON checks, `MongoPolicy::check` (namespaces,
//! masked fields, the aggregation walker, row filters, `maxTimeMS` capped), the decision record
//! and the rate bucket through the session core; then `mongo::run_one` runs it on an upstream
//! connection logged in with the vaulted credentials, follows the cursor, masks every batch and
//! cuts at the agent's limits. `list_collections` is the admin API's per-agent collection view.
//! Both tools only read: an aggregation the policy would let write (`$out`, `$merge`) is refused.

use std::time::Instant;

use bson::{doc, Bson, Document};
use rmcp::model::{CallToolRequestParams, CallToolResult};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Caller;
use super::handler::{args, Handler};
use super::ordered::{self, Arguments};
use super::output::{self, ToolError};
use super::pending::Pending;
use super::schema::{admit, record};
use crate::admin::mongo_schema::{access_for, collection_view};
use crate::config::UpstreamKind;
use crate::mongo::audit::{decision_record, statement};
use crate::mongo::run_one::{self, Caps, Collected, Cut, Masking, RunError};
use crate::policy::mongo::{Command, MongoPolicy};
use crate::refusal::{Refusal, RefusalClass};
use crate::session::{OutcomeError, Session};

/// The rule named when an aggregation would write.
pub const READ_ONLY_RULE: &str = "builtin: mcp read-only tools";
use super::sql::DEFAULT_TIMEOUT;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // The documents are read in order from the body (`ordered`); these check shapes.
struct FindArgs {
    upstream: Option<String>,
    database: String,
    collection: String,
    filter: Option<serde_json::Map<String, Value>>,
    projection: Option<serde_json::Map<String, Value>>,
    sort: Option<serde_json::Map<String, Value>>,
    limit: Option<u64>,
    skip: Option<u64>,
    max_rows: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct AggregateArgs {
    upstream: Option<String>,
    database: String,
    collection: String,
    pipeline: Vec<serde_json::Map<String, Value>>,
    max_rows: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    upstream: Option<String>,
    database: Option<String>,
}

fn bad(tool: &str) -> impl Fn(String) -> ToolError + '_ {
    move |e| ToolError::request(format!("invalid arguments for {tool}: {e}"))
}

fn count(n: Option<u64>, what: &str) -> Result<Option<i64>, ToolError> {
    n.map(|v| i64::try_from(v).map_err(|_| ToolError::request(format!("{what} is too large"))))
        .transpose()
}

/// The agent's limits now (the batch size of the first command depends on its `max_rows`).
fn limits_now(h: &Handler, caller: &Caller) -> crate::policy::limits::Limits {
    h.core
        .policy
        .agent_policy(caller.agent())
        .map(|p| p.limits.clone())
        .unwrap_or_default()
}

pub async fn find(
    h: &Handler,
    caller: &Caller,
    req: &CallToolRequestParams,
    body: Result<Arguments, String>,
) -> Result<CallToolResult, ToolError> {
    let a: FindArgs = args(req)?;
    let o = body.map_err(bad("find"))?;
    let mut cmd = doc! { "find": a.collection.as_str() };
    for key in ["filter", "projection", "sort"] {
        if let Some(d) = ordered::document(&o, key).map_err(bad("find"))? {
            cmd.insert(key, d);
        }
    }
    if let Some(skip) = count(a.skip, "skip")? {
        cmd.insert("skip", skip);
    }
    if let Some(limit) = count(a.limit, "limit")? {
        cmd.insert("limit", limit);
    }
    let batch = caps_for(&limits_now(h, caller), a.max_rows, 0).batch_size(0);
    cmd.insert("batchSize", batch);
    cmd.insert("$db", a.database.as_str());
    run(h, caller, a.upstream.as_deref(), cmd, a.max_rows).await
}

pub async fn aggregate(
    h: &Handler,
    caller: &Caller,
    req: &CallToolRequestParams,
    body: Result<Arguments, String>,
) -> Result<CallToolResult, ToolError> {
    let a: AggregateArgs = args(req)?;
    let o = body.map_err(bad("aggregate"))?;
    let pipeline = ordered::documents(&o, "pipeline")
        .map_err(bad("aggregate"))?
        .unwrap_or_default();
    let batch = caps_for(&limits_now(h, caller), a.max_rows, 0).batch_size(0);
    let cmd = doc! {
        "aggregate": a.collection.as_str(),
        "pipeline": pipeline,
        "cursor": { "batchSize": batch },
        "$db": a.database.as_str(),
    };
    run(h, caller, a.upstream.as_deref(), cmd, a.max_rows).await
}

fn caps_for(
    limits: &crate::policy::limits::Limits,
    asked_rows: Option<u64>,
    max_bytes: u64,
) -> Caps<'_> {
    Caps {
        limits,
        asked_rows,
        max_bytes,
        timeout: limits
            .statement_timeout
            .as_ref()
            .map_or(DEFAULT_TIMEOUT, |(d, _)| *d),
    }
}

/// The command as the wire front end has it after parsing: checked as strictly as a received
/// BSON document (depth, keys, UTF-8), then the policy's command model.
fn command(session: &Session, body: Document) -> Result<Command, ToolError> {
    let first: String = body.keys().next().cloned().unwrap_or_default();
    let malformed = |r: Refusal| {
        let r = session.refuse(format!("{first} <malformed>"), r);
        ToolError::mongo_refusal(&r)
    };
    let bytes = body.to_vec().map_err(|e| {
        malformed(Refusal::new(
            RefusalClass::Encoding,
            crate::policy::mongo::command::MALFORMED_RULE,
            format!("the command cannot be encoded as BSON: {e}"),
        ))
    })?;
    if let Err(e) = crate::mongo::bson_check::validate(&bytes) {
        return Err(malformed(Refusal::new(
            RefusalClass::Encoding,
            crate::policy::mongo::command::MALFORMED_RULE,
            e.to_string(),
        )));
    }
    Command::new(body, Vec::new()).map_err(malformed)
}

/// Whether a pipeline writes anywhere in it (`$out`, `$merge`).
fn writes(b: &Bson) -> bool {
    match b {
        Bson::Document(d) => d
            .iter()
            .any(|(k, v)| k == "$out" || k == "$merge" || writes(v)),
        Bson::Array(items) => items.iter().any(writes),
        _ => false,
    }
}

async fn run(
    h: &Handler,
    caller: &Caller,
    asked_upstream: Option<&str>,
    body: Document,
    asked_rows: Option<u64>,
) -> Result<CallToolResult, ToolError> {
    let started = Instant::now();
    let session = admit(h, caller, asked_upstream, UpstreamKind::Mongodb)?;
    let upstream = session.upstream().clone();
    let cmd = command(&session, body)?;
    let shown = statement(&cmd);
    let mut policy = MongoPolicy::new(session.agent().clone(), upstream.clone());
    let verdict = policy.check(&h.core.policy, &cmd);
    let Some(judged) = verdict.judged.as_ref().filter(|_| verdict.runs()) else {
        let d = verdict
            .denial
            .clone()
            .unwrap_or_else(|| Refusal::permission("default-deny", "command refused by policy"));
        return Err(ToolError::mongo_refusal(&session.refuse(shown, d)));
    };
    if cmd.name == "aggregate" && cmd.body.get("pipeline").is_some_and(writes) {
        let r = Refusal::permission(
            READ_ONLY_RULE,
            "$out and $merge write; the MCP MongoDB tools only read",
        )
        .with_instead("run the pipeline without its $out/$merge stage");
        return Err(ToolError::mongo_refusal(&session.refuse(shown, r)));
    }
    let record = decision_record(
        shown,
        verdict.outcome,
        verdict.denial.as_ref(),
        judged.rule.clone(),
        &judged.reply,
        judged.rewritten.is_some(),
    );
    let decision = record.decision.as_str();
    let limits = policy.limits().clone();
    let ticket = session
        .decide(record, Some(&limits))
        .map_err(|r| ToolError::mongo_refusal(&r))?;
    session.context().record_overhead(started);
    let pending = Pending::new(session.context(), ticket);
    let (max_bytes, bytes_rule) = match &limits.max_result_bytes {
        Some((n, rule)) => (*n, rule.clone()),
        None => (
            super::sql::DEFAULT_MAX_RESULT_BYTES,
            super::sql::DEFAULT_RESULT_BYTES_RULE.to_string(),
        ),
    };
    let Some(up) = h.door.mongo.as_ref().and_then(|d| d.upstream(&upstream)) else {
        let message = crate::session::upstream_unavailable(&upstream);
        pending.finish(None, Some(outcome_error(message.clone())));
        return Err(ToolError::mongo(6, "HostUnreachable", &message));
    };
    let rules = policy.rules();
    let key = h.core.policy.mask_key();
    let masking = Masking {
        plan: &judged.reply,
        rules: rules.as_deref(),
        hash_key: &key,
    };
    let caps = caps_for(&limits, asked_rows, max_bytes);
    let forwarded = judged.rewritten.as_ref().unwrap_or(&cmd);
    let ran = run_one::run(up, h.door.connect_timeout, forwarded, &masking, &caps).await;
    let c = match ran {
        Ok(c) => c,
        Err(e) => {
            let (tool, outcome) = run_error(&e, &upstream, &limits);
            pending.finish(None, Some(outcome));
            return Err(tool);
        }
    };
    pending.finish(Some(c.documents.len() as u64), None);
    let ns = format!("{}.{}", cmd.db, cmd.collection().unwrap_or_default());
    let notice = notice(&c, max_bytes, &bytes_rule);
    let mut summary = format!("{} {ns}: {} document(s)", cmd.name, c.documents.len());
    if let Some(n) = &notice {
        summary.push_str(&format!(". {n}"));
    }
    let truncated_by = c.truncated.as_ref().map(|t| match t {
        Cut::PolicyRows(_) | Cut::AskedRows => "max_rows",
        Cut::Bytes => "max_result_bytes",
    });
    let count = c.documents.len();
    // Relaxed Extended JSON: numbers stay numbers, other BSON types keep their wrapper.
    let documents: Vec<Value> = c
        .documents
        .into_iter()
        .map(|d| Bson::Document(d).into_relaxed_extjson())
        .collect();
    Ok(output::data(
        &summary,
        json!({
            "upstream": upstream.as_ref(),
            "namespace": ns,
            "decision": decision,
            "documents": documents,
            "count": count,
            "truncated": truncated_by.is_some(),
            "truncated_by": truncated_by,
            "notice": notice,
        }),
    ))
}

fn outcome_error(message: String) -> OutcomeError {
    OutcomeError {
        code: None,
        message,
    }
}

/// What a truncated result says, in the wire's words where the wire has them.
fn notice(c: &Collected, max_bytes: u64, bytes_rule: &str) -> Option<String> {
    let n = c.documents.len();
    Some(match c.truncated.as_ref()? {
        Cut::PolicyRows(wire) => wire.clone(),
        Cut::AskedRows => format!("result truncated to {n} documents (max_rows of this call)"),
        Cut::Bytes => format!(
            "tollgate: result truncated to {n} documents, {} of at most {max_bytes} bytes of document data (rule: {bytes_rule})",
            c.bytes
        ),
    })
}

/// A failed run: the tool error and the outcome record's error (never the server's text in the
/// record, as on the wire: `CodeName (code)`).
fn run_error(
    e: &RunError,
    upstream: &str,
    limits: &crate::policy::limits::Limits,
) -> (ToolError, OutcomeError) {
    match e {
        RunError::Server {
            code,
            code_name,
            errmsg,
        } => (
            // The server's own words, which can quote stored values: data, not tollgate's.
            ToolError::upstream_mongo(*code, code_name, errmsg),
            outcome_error(e.to_string()),
        ),
        RunError::Refused(r) => (ToolError::mongo_refusal(r), outcome_error(r.message())),
        RunError::TimedOut(d) => {
            let rule = limits
                .statement_timeout
                .as_ref()
                .map_or("builtin: mcp statement timeout (30 s)", |(_, r)| r.as_str());
            let message = format!(
                "tollgate: the command did not finish within {} ms (rule: {rule})",
                d.as_millis()
            );
            (
                ToolError::mongo(50, "MaxTimeMSExpired", &message),
                outcome_error(message),
            )
        }
        RunError::Upstream(_) | RunError::BadReply(_) => {
            // Never the upstream's own text about its login: what failed, by class.
            tracing::warn!(upstream, error = %e, "MCP MongoDB tool: upstream failure");
            let message = crate::session::upstream_unavailable(upstream);
            (
                ToolError::mongo(6, "HostUnreachable", &message),
                outcome_error(message),
            )
        }
    }
}

pub async fn list_collections(
    h: &Handler,
    caller: &Caller,
    req: &CallToolRequestParams,
) -> Result<CallToolResult, ToolError> {
    let a: ListArgs = args(req)?;
    let session = admit(h, caller, a.upstream.as_deref(), UpstreamKind::Mongodb)?;
    let upstream = session.upstream().clone();
    let shapes = h
        .door
        .collections(&upstream)
        .await
        .map_err(|_| ToolError::invalid(crate::session::upstream_unavailable(&upstream)))?;
    let access = access_for(&h.core.policy, caller.agent(), &upstream);
    let list: Vec<Value> = shapes
        .iter()
        .filter(|c| a.database.as_ref().is_none_or(|d| c.database == *d))
        .filter_map(|c| collection_view(c, Some(&access)))
        .collect();
    record(
        &session,
        "-- mcp: list_collections".into(),
        list.len() as u64,
    )?;
    // Field names come from the documents themselves: data, not tollgate's own words.
    Ok(output::data(
        &format!(
            "{} collection(s) you may use on upstream \"{upstream}\" (fields as seen in a sample of documents)",
            list.len()
        ),
        json!({"upstream": upstream.as_ref(), "collections": list}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_found_anywhere_in_a_pipeline() {
        let p =
            |d: Document| Bson::Array(vec![Bson::Document(doc! {"$match": {}}), Bson::Document(d)]);
        assert!(writes(&p(doc! { "$out": "copy" })));
        assert!(writes(&p(doc! { "$merge": { "into": "orders" } })));
        assert!(writes(&p(
            doc! { "$facet": { "x": [ { "$merge": "orders" } ] } }
        )));
        assert!(!writes(&p(doc! { "$group": { "_id": "$out" } })));
    }
}
