//! The `query` and `explain` tools: SQL through exactly the path of a wire statement. The
//! session core admits the call; `PgSession` (the PostgreSQL front end's statement logic) gets
//! the policy's verdict, the masking rewrite and the decision record (rate bucket included);
//! `pg::run_one` runs the statement on a pooled server connection under the agent's row limit,
//! result-size limit and statement timeout; the core writes the outcome.

use rmcp::model::{CallToolRequestParams, CallToolResult};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Caller;
use super::handler::{args, Handler};
use super::output::{self, ToolError};
use super::pending::Pending;
use super::schema::admit;
use crate::config::UpstreamKind;
use crate::pg::run_one::{self, values, Caps, Collected, Cut, RunError, Statement};
use crate::pg::statement::{more_than_one, recorded_decision, PgSession};
use crate::policy::limits::{Limits, RowLimitMode};
use crate::policy::SessionFacts;
use crate::session::OutcomeError;

/// Result bytes a call returns when no policy sets `max_result_bytes`.
pub const DEFAULT_MAX_RESULT_BYTES: u64 = 1 << 20;
/// The rule named when that default cuts a result.
pub const DEFAULT_RESULT_BYTES_RULE: &str = "builtin: mcp max_result_bytes (1 MiB)";
/// How long one call may run when no policy sets `statement_timeout` (every tool): a call holds
/// an upstream connection for as long as it runs.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The rule named when that default cancels a statement.
pub const DEFAULT_TIMEOUT_RULE: &str = "builtin: mcp statement_timeout (30 s)";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryArgs {
    upstream: Option<String>,
    sql: String,
    #[serde(default)]
    params: Vec<Value>,
    max_rows: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainArgs {
    upstream: Option<String>,
    sql: String,
}

/// Every MCP call is a session of its own on a pooled connection, like a transaction-pooled
/// wire session: judged the same way (state a statement leaves is known, `currval` refused).
pub fn facts() -> SessionFacts {
    SessionFacts {
        pooled: true,
        ..SessionFacts::default()
    }
}

/// A parameter as the text PostgreSQL parses (`None`: NULL).
fn param_text(v: &Value) -> Result<Option<String>, ToolError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        Value::Number(n) => Ok(Some(n.to_string())),
        _ => Err(ToolError::request(
            "params: each value must be a string, a number, a boolean or null",
        )),
    }
}

fn limits_of(pg: &PgSession) -> Limits {
    let core = pg.session().core();
    core.policy
        .agent_policy(pg.agent())
        .map(|p| p.limits.clone())
        .unwrap_or_default()
}

pub async fn query(
    h: &Handler,
    caller: &Caller,
    req: &CallToolRequestParams,
) -> Result<CallToolResult, ToolError> {
    let a: QueryArgs = args(req)?;
    let params = a
        .params
        .iter()
        .map(param_text)
        .collect::<Result<Vec<_>, _>>()?;
    if params.len() > run_one::MAX_PARAMS {
        // Bind counts parameters in 16 bits: more would wrap.
        return Err(ToolError::request(format!(
            "params: {} values given; a statement takes at most {}",
            params.len(),
            run_one::MAX_PARAMS
        )));
    }
    let started = std::time::Instant::now();
    let session = admit(h, caller, a.upstream.as_deref(), UpstreamKind::Postgres)?;
    let pg = PgSession::new(session);
    let upstream = pg.session().upstream().clone();
    let verdict = pg.check_sql(&a.sql, &facts());
    if !verdict.runs() {
        return Err(ToolError::pg(&pg.refuse_verdict(&a.sql, &verdict)));
    }
    if let Some(r) = more_than_one(&a.sql) {
        return Err(ToolError::pg(&pg.refuse(&a.sql, r)));
    }
    let rewritten = pg
        .forwarded_text(&a.sql, &verdict)
        .map_err(|f| ToolError::pg(&f))?
        .map(|(text, _)| text);
    let limits = limits_of(&pg);
    let ticket = pg
        .decide_now(&a.sql, &verdict, &limits)
        .map_err(|f| ToolError::pg(&f))?;
    pg.context().record_overhead(started);
    let pending = Pending::new(pg.context(), ticket);
    let (max_bytes, bytes_rule) = match &limits.max_result_bytes {
        Some((n, rule)) => (*n, rule.clone()),
        None => (
            DEFAULT_MAX_RESULT_BYTES,
            DEFAULT_RESULT_BYTES_RULE.to_string(),
        ),
    };
    let policy_rows = limits.max_rows.as_ref().map(|(n, _)| *n);
    let asked_rows = match (policy_rows, a.max_rows) {
        (Some(p), Some(m)) => Some(p.min(m)),
        (p, m) => p.or(m),
    };
    let caps = Caps {
        max_rows: asked_rows,
        max_bytes,
        timeout: Some(
            limits
                .statement_timeout
                .as_ref()
                .map_or(DEFAULT_TIMEOUT, |(d, _)| *d),
        ),
    };
    let Some(pools) = h.door.pg.pools(&upstream) else {
        pending.finish(None, Some(lost("no pool")));
        return Err(ToolError::invalid(crate::session::upstream_unavailable(
            &upstream,
        )));
    };
    let stmt = Statement {
        sql: rewritten.as_deref().unwrap_or(&a.sql),
        params: &params,
        leaves_state: verdict.leaves_state,
    };
    // The connection counts against the agent's share of the pool, as its wire sessions' do.
    let share = pools.per_transaction.share_of(pg.session().agent());
    let ran = run_one::run(
        &pools.per_transaction,
        &h.door.settings,
        Some(&share),
        &stmt,
        &caps,
    )
    .await;
    let c = match ran {
        Ok(c) => c,
        Err(e) => {
            let (tool, outcome) = run_error(&e, &upstream, &limits);
            pending.finish(None, Some(outcome));
            return Err(tool);
        }
    };
    // More rows than the policy allows, in refuse mode: the wire's 54000, in the same words.
    let over_policy_rows =
        c.truncated == Some(Cut::Rows) && policy_rows.is_some_and(|p| c.rows.len() as u64 >= p);
    if over_policy_rows && limits.on_max_rows == RowLimitMode::Refuse {
        let (max, rule) = limits.max_rows.clone().unwrap_or_default();
        let message = format!("tollgate: the statement returned more than {max} rows, the most the policy allows (rule: {rule})");
        pending.finish(
            None,
            Some(OutcomeError {
                code: Some("54000".into()),
                message: message.clone(),
            }),
        );
        return Err(ToolError::sql("54000", &message, None, None));
    }
    let rows = c.rows.len() as u64;
    let notice = notice(&c, &limits, over_policy_rows, max_bytes, &bytes_rule);
    pending.finish(c.affected.or(Some(rows)), None);
    let summary = match &notice {
        Some(n) => format!("{} ({rows} row(s) returned). {n}", c.command_tag),
        None => format!("{} ({rows} row(s) returned)", c.command_tag),
    };
    let decision = recorded_decision(&verdict).map_or("allowed", |(d, _, _)| d.as_str());
    Ok(output::data(
        &summary,
        result_json(&upstream, &c, decision, notice.as_deref()),
    ))
}

fn lost(what: &str) -> OutcomeError {
    OutcomeError {
        code: None,
        message: what.to_string(),
    }
}

/// What a truncated result says, in the wire's words where the wire has them.
fn notice(
    c: &Collected,
    limits: &Limits,
    over_policy_rows: bool,
    max_bytes: u64,
    bytes_rule: &str,
) -> Option<String> {
    match c.truncated? {
        Cut::Rows if over_policy_rows => {
            let (max, rule) = limits.max_rows.clone().unwrap_or_default();
            Some(format!("tollgate: result truncated to {max} rows (rule: {rule})"))
        }
        Cut::Rows => Some(format!(
            "result truncated to {} rows (max_rows of this call)",
            c.rows.len()
        )),
        Cut::Bytes => Some(format!(
            "tollgate: result truncated to {} rows, {} of at most {max_bytes} bytes of row data (rule: {bytes_rule})",
            c.rows.len(),
            c.bytes
        )),
    }
}

fn result_json(upstream: &str, c: &Collected, decision: &str, notice: Option<&str>) -> Value {
    let columns: Vec<Value> = c
        .columns
        .iter()
        .map(|col| {
            json!({
                "name": col.name,
                "type": values::type_name(col.type_oid),
                "type_oid": col.type_oid,
            })
        })
        .collect();
    let rows: Vec<Value> = c
        .rows
        .iter()
        .map(|r| {
            Value::Array(
                r.iter()
                    .enumerate()
                    .map(|(i, v)| {
                        let oid = c.columns.get(i).map_or(values::TEXT_OID, |c| c.type_oid);
                        values::to_json(oid, v.as_deref())
                    })
                    .collect(),
            )
        })
        .collect();
    json!({
        "upstream": upstream,
        "command": c.command_tag,
        "decision": decision,
        "columns": columns,
        "rows": rows,
        "row_count": c.rows.len(),
        "truncated": c.truncated.is_some(),
        "truncated_by": c.truncated.map(|t| match t {
            Cut::Rows => "max_rows",
            Cut::Bytes => "max_result_bytes",
        }),
        "notice": notice,
    })
}

/// A failed run: the tool error and the outcome record's error.
fn run_error(e: &RunError, upstream: &str, limits: &Limits) -> (ToolError, OutcomeError) {
    match e {
        // The server's own words, which can quote stored values: data, not tollgate's.
        RunError::Server(s) => (
            ToolError::upstream_sql(&s.code, &s.message, s.detail.as_deref(), s.hint.as_deref()),
            OutcomeError {
                code: Some(s.code.clone()),
                message: s.message.clone(),
            },
        ),
        RunError::TimedOut(d) => {
            let rule = limits
                .statement_timeout
                .as_ref()
                .map_or(DEFAULT_TIMEOUT_RULE, |(_, r)| r.as_str());
            let message = format!(
                "tollgate: canceling statement due to statement timeout of {} ms (rule: {rule})",
                d.as_millis()
            );
            (
                ToolError::sql("57014", &message, None, None),
                OutcomeError {
                    code: Some("57014".into()),
                    message,
                },
            )
        }
        RunError::Checkout(crate::pg::pool::CheckoutError::Share { .. }) => {
            let message =
                format!("tollgate: {e} (rule: tollgate.toml: upstream.{upstream}.max_agent_share)");
            (
                ToolError::sql("53300", &message, None, None),
                OutcomeError {
                    code: Some("53300".into()),
                    message,
                },
            )
        }
        RunError::Checkout(crate::pg::pool::CheckoutError::Timeout { .. }) => {
            let message =
                format!("tollgate: {e} (rule: tollgate.toml: upstream.{upstream}.pool_size)");
            (
                ToolError::sql("53300", &message, None, None),
                OutcomeError {
                    code: Some("53300".into()),
                    message,
                },
            )
        }
        RunError::Invalid(why) => {
            let message = format!("tollgate: the statement cannot be sent: {why}");
            (
                ToolError::invalid(message.clone()),
                OutcomeError {
                    code: None,
                    message,
                },
            )
        }
        RunError::Checkout(_) | RunError::Lost(_) | RunError::Protocol(_) => {
            // Never the upstream's own text about its login: what failed, by class (the
            // wire's FATAL DETAIL).
            tracing::warn!(upstream, error = %e, "MCP query: upstream failure");
            let message = crate::session::upstream_unavailable(upstream);
            let detail = match e {
                RunError::Checkout(crate::pg::pool::CheckoutError::Upstream(u)) => {
                    Some(crate::pg::session::upstream_failure_detail(u))
                }
                _ => None,
            };
            (
                ToolError::sql("08006", &message, detail.as_deref(), None),
                OutcomeError {
                    code: Some("08006".into()),
                    message,
                },
            )
        }
    }
}

pub fn explain(
    h: &Handler,
    caller: &Caller,
    req: &CallToolRequestParams,
) -> Result<CallToolResult, ToolError> {
    let a: ExplainArgs = args(req)?;
    let session = admit(h, caller, a.upstream.as_deref(), UpstreamKind::Postgres)?;
    let pg = PgSession::new(session);
    let upstream = pg.session().upstream().clone();
    let verdict = pg.check_sql(&a.sql, &facts());
    let analysis = match crate::policy::sql::analyze(&a.sql) {
        Ok(an) => {
            let name = |s: &Option<String>, n: &str| match s {
                Some(s) => format!("{s}.{n}"),
                None => n.to_string(),
            };
            json!(an
                .statements
                .iter()
                .map(|s| json!({
                    "kind": format!("{:?}", s.kind),
                    "relations": s.relations.iter().map(|r| json!({
                        "name": name(&r.schema, &r.name),
                        "operation": format!("{:?}", r.op).to_lowercase(),
                    })).collect::<Vec<_>>(),
                    "functions": s.functions.iter().map(|f| name(&f.schema, &f.name)).collect::<Vec<_>>(),
                }))
                .collect::<Vec<_>>())
        }
        Err(e) => json!({"error": e.to_string()}),
    };
    // As the audit record would say it (`masked`, `rewritten`, naming the rule), and as the
    // query tool would answer (one statement per call; a text over the rate's burst never runs).
    let limits = limits_of(&pg);
    let judged = crate::pg::statement::dry_run(&a.sql, &verdict, &limits, true);
    let refusal = judged.as_ref().err();
    let (decision, rule, reason) = match &judged {
        Ok((decision, rule, reason)) => (decision.as_str(), rule.clone(), reason.clone()),
        Err(r) => ("blocked", Some(r.rule.clone()), Some(r.reason.clone())),
    };
    let rewritten = match (&verdict.rewrite, refusal.is_none()) {
        // The `hash` mask's key shown as a placeholder, never itself.
        (Some(_), true) => match pg.session().core().policy.shown_rewrite(&verdict, &a.sql) {
            Ok(t) => json!(t),
            Err(r) => json!({"error": r.message()}),
        },
        _ => Value::Null,
    };
    let denial = refusal.map(|d| {
        json!({
            "rule": d.rule,
            "reason": d.reason,
            "message": d.message(),
            "sqlstate": d.class.sqlstate(),
        })
    });
    let masking = verdict
        .rewrite
        .as_ref()
        .map(|p| json!({"tables": p.tables, "rules": p.rules, "masks": p.masks}));
    super::schema::record(
        pg.session(),
        format!(
            "-- mcp: explain (dry run, nothing executed): {}",
            pg.recorded(&a.sql)
        ),
        0,
    )?;
    Ok(output::quoting(
        &format!("dry run on upstream \"{upstream}\": {decision}; nothing was executed"),
        json!({
            "upstream": upstream.as_ref(),
            "decision": decision,
            "rule": rule,
            "reason": reason,
            "refusal": denial,
            "statements": analysis,
            "masking": masking,
            "rewritten": rewritten,
            "limits": limits.describe(),
        }),
    ))
}
