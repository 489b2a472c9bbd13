//! The `redis` and `list_keys` tools: one Redis command (or a SCAN loop) under the Redis policy,
//! as the Redis front end judges a command: `RedisPolicy::check`, the decision record through the
//! session core (rate bucket shared with the agent's wire sessions), the command run on an
//! upstream connection logged in with the vaulted password, the reply masked by the same
//! `mask_reply`, the outcome recorded. Commands that manage the connection itself (AUTH, HELLO,
//! SUBSCRIBE, MULTI, ...) mean nothing in a call of their own and are refused.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::types::BytesFrame as F2;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::auth::Caller;
use super::handler::{args, Handler};
use super::output::{self, ToolError};
use super::schema::admit;
use crate::audit::Decision;
use crate::config::UpstreamKind;
use crate::policy::redis::{CommandTable, RedisPolicy};
use crate::policy::Outcome;
use crate::redis::audit::statement;
use crate::redis::command::{encode_command, split_args};
use crate::redis::scan::ReplyScanner;
use crate::redis::upstream::RedisTarget;
use crate::refusal::{Refusal, RefusalClass};
use crate::session::{Judged, OutcomeError, Session};

/// A reply larger than this (or the agent's `max_result_bytes`) is not returned.
const DEFAULT_MAX_REPLY: u64 = super::sql::DEFAULT_MAX_RESULT_BYTES;
use super::sql::DEFAULT_TIMEOUT;

/// Commands about the connection rather than the data: a call has a connection of its own that
/// ends with it, so these would do nothing useful (or, for AUTH, try logins upstream).
const CONNECTION_COMMANDS: &[&str] = &[
    "auth",
    "hello",
    "quit",
    "reset",
    "select",
    "multi",
    "exec",
    "discard",
    "watch",
    "unwatch",
    "subscribe",
    "psubscribe",
    "ssubscribe",
    "unsubscribe",
    "punsubscribe",
    "sunsubscribe",
    "monitor",
    "sync",
    "psync",
    "client",
    "readonly",
    "readwrite",
];

/// The rule named when one is refused.
pub const CONNECTION_COMMAND_RULE: &str = "builtin: mcp one-command calls";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandArgs {
    upstream: Option<String>,
    command: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListKeysArgs {
    upstream: Option<String>,
    pattern: String,
    limit: Option<usize>,
}

/// One call's Redis context: the admitted session, the upstream, its command table, the policy.
struct Call<'h> {
    h: &'h Handler,
    session: Session,
    target: std::sync::Arc<RedisTarget>,
    table: std::sync::Arc<CommandTable>,
    policy: RedisPolicy,
}

impl<'h> Call<'h> {
    async fn open(
        h: &'h Handler,
        caller: &Caller,
        asked: Option<&str>,
    ) -> Result<Call<'h>, ToolError> {
        let session = admit(h, caller, asked, UpstreamKind::Redis)?;
        let upstream = session.upstream().clone();
        let unavailable = || ToolError::invalid(crate::session::upstream_unavailable(&upstream));
        let target = h
            .door
            .redis
            .as_ref()
            .and_then(|d| d.target(&upstream))
            .cloned()
            .ok_or_else(unavailable)?;
        let table = target
            .table(h.door.connect_timeout)
            .await
            .map_err(|_| unavailable())?;
        let policy = RedisPolicy::new(session.agent().clone(), upstream);
        Ok(Call {
            h,
            session,
            target,
            table,
            policy,
        })
    }

    fn subcommand(&self, args: &[Bytes]) -> bool {
        self.table.lookup(args).is_ok_and(|i| i.name.contains('|'))
    }

    /// Judges, records and runs one command; the reply (masked) as JSON.
    async fn run(&mut self, args: Vec<Bytes>) -> Result<Value, ToolError> {
        let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
        if CONNECTION_COMMANDS.contains(&name.as_str()) {
            let r = Refusal::new(
                RefusalClass::Unsupported,
                CONNECTION_COMMAND_RULE,
                format!("{} manages a connection; each tool call has a connection of its own that ends with it", name.to_uppercase()),
            )
            .with_instead("send the command you want to run on the data itself");
            let r = self.session.refuse(statement(&args, &[], false), r);
            return Err(ToolError::refusal(&r));
        }
        let core = self.session.core().clone();
        let verdict = self.policy.check(&core.policy, &self.table, &args);
        let subcommand = self.subcommand(&args);
        if !verdict.runs() {
            let refusal = verdict.denial.clone().unwrap_or_else(|| {
                Refusal::permission("default-deny", "command refused by policy")
            });
            let mut keys = Vec::new();
            if let Ok(info) = self.table.lookup(&args) {
                let _ = crate::policy::redis::keys::find_keys(info, &args, &mut keys);
            }
            let r = self
                .session
                .refuse(statement(&args, &keys, subcommand), refusal);
            return Err(ToolError::refusal(&r));
        }
        let decision = match verdict.outcome {
            Outcome::WouldBlock => Decision::WouldBlock,
            _ if !verdict.mask.is_none() => Decision::Masked,
            _ if verdict.rewritten.is_some() => Decision::Rewritten,
            _ => Decision::Allowed,
        };
        let (args, capped) = match verdict.rewritten.clone() {
            Some((a, rule)) => (a, Some(rule)),
            None => (args, None),
        };
        let (rule, reason) = match (&verdict.denial, capped) {
            (Some(d), _) => (Some(d.rule.clone()), Some(d.reason.clone())),
            (None, Some(rule)) => (
                Some(rule),
                Some("blocking timeout capped to the statement timeout".into()),
            ),
            (None, None) => (None, None),
        };
        let judged = Judged {
            statement: statement(&args, &verdict.keys, subcommand),
            decision,
            rule,
            reason,
        };
        let limits = self.policy.limits().clone();
        let ticket = self
            .session
            .decide(judged, Some(&limits))
            .map_err(|r| ToolError::refusal(&r))?;
        let max = limits
            .max_result_bytes
            .as_ref()
            .map_or(DEFAULT_MAX_REPLY, |(n, _)| *n);
        let timeout = limits
            .statement_timeout
            .as_ref()
            .map_or(DEFAULT_TIMEOUT, |(d, _)| *d);
        // Its outcome is recorded however the call ends: dropped while the command runs (the
        // client went away), it gets the core's "outcome unknown" record.
        let pending = super::pending::Pending::new(self.session.context(), ticket);
        let raw = match self.exchange(&encode_command(&args), max, timeout).await {
            Ok(raw) => raw,
            Err(e) => {
                let message = match &e {
                    Exchange::TooLarge => format!(
                        "tollgate: the reply is larger than {max} bytes (rule: {})",
                        limits
                            .max_result_bytes
                            .as_ref()
                            .map_or(super::sql::DEFAULT_RESULT_BYTES_RULE, |(_, r)| r.as_str())
                    ),
                    Exchange::TimedOut => format!(
                        "tollgate: the command did not finish within {} ms",
                        timeout.as_millis()
                    ),
                    Exchange::Lost => crate::session::upstream_unavailable(self.session.upstream()),
                };
                pending.finish(
                    None,
                    Some(OutcomeError {
                        code: None,
                        message: message.clone(),
                    }),
                );
                return Err(ToolError::invalid(message));
            }
        };
        let masked = match crate::redis::mask_reply::mask(&raw, &verdict.mask, false) {
            Ok(m) => m,
            Err(_) => {
                // Never the unmasked reply.
                let message = "tollgate: the reply could not be masked; it is withheld".to_string();
                pending.finish(
                    None,
                    Some(OutcomeError {
                        code: None,
                        message: message.clone(),
                    }),
                );
                return Err(ToolError::invalid(message));
            }
        };
        let value = match redis_protocol::resp2::decode::decode_bytes(&masked) {
            Ok(Some((frame, _))) => frame,
            _ => {
                let message = "tollgate: the upstream's reply could not be read".to_string();
                pending.finish(
                    None,
                    Some(OutcomeError {
                        code: None,
                        message: message.clone(),
                    }),
                );
                return Err(ToolError::invalid(message));
            }
        };
        if let F2::Error(e) = &value {
            let code = e.split(' ').next().unwrap_or("ERR").to_string();
            pending.finish(
                None,
                Some(OutcomeError {
                    code: Some(code),
                    message: e.to_string(),
                }),
            );
            // The server's own line (it can quote a script or a value): data, not tollgate's.
            return Err(ToolError::upstream_redis(e));
        }
        pending.finish(None, None);
        Ok(to_json(&value))
    }

    /// Writes `cmd` on a fresh upstream connection and reads its one reply (at most `max`
    /// bytes, within `timeout`).
    async fn exchange(&self, cmd: &[u8], max: u64, timeout: Duration) -> Result<Bytes, Exchange> {
        let run = async {
            let mut up = self
                .target
                .connect(self.h.door.connect_timeout)
                .await
                .map_err(|_| Exchange::Lost)?;
            up.stream.write_all(cmd).await.map_err(|_| Exchange::Lost)?;
            let mut buf = BytesMut::with_capacity(4096);
            let mut scanner = ReplyScanner::default();
            loop {
                if let Some(n) = scanner.next_frame(&buf).map_err(|_| Exchange::Lost)? {
                    return Ok(buf.split_to(n).freeze());
                }
                if buf.len() as u64 > max {
                    return Err(Exchange::TooLarge);
                }
                if up
                    .stream
                    .read_buf(&mut buf)
                    .await
                    .map_err(|_| Exchange::Lost)?
                    == 0
                {
                    return Err(Exchange::Lost);
                }
            }
        };
        tokio::time::timeout(timeout, run)
            .await
            .unwrap_or(Err(Exchange::TimedOut))
    }
}

enum Exchange {
    TooLarge,
    TimedOut,
    Lost,
}

/// A RESP2 reply as JSON: strings as text (or `{"base64": ...}` when not UTF-8).
fn to_json(f: &F2) -> Value {
    match f {
        F2::SimpleString(b) | F2::BulkString(b) => match std::str::from_utf8(b) {
            Ok(s) => json!(s),
            Err(_) => {
                use base64::Engine as _;
                json!({"base64": base64::engine::general_purpose::STANDARD.encode(b)})
            }
        },
        F2::Integer(n) => json!(n),
        F2::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        F2::Null => Value::Null,
        F2::Error(e) => json!({"error": e.to_string()}),
    }
}

pub async fn command(
    h: &Handler,
    caller: &Caller,
    req: &CallToolRequestParams,
) -> Result<CallToolResult, ToolError> {
    let a: CommandArgs = args(req)?;
    let argv = split_args(a.command.as_bytes())
        .ok_or_else(|| ToolError::request("unbalanced quotes in the command"))?;
    if argv.is_empty() {
        return Err(ToolError::request("empty command"));
    }
    let mut call = Call::open(h, caller, a.upstream.as_deref()).await?;
    let upstream = call.session.upstream().clone();
    let shown = String::from_utf8_lossy(&argv[0]).to_uppercase();
    let reply = call.run(argv).await?;
    Ok(output::data(
        &format!("{shown} on upstream \"{upstream}\""),
        json!({"upstream": upstream.as_ref(), "reply": reply}),
    ))
}

/// Most SCAN rounds one `list_keys` call runs.
const MAX_SCAN_ROUNDS: usize = 20;

pub async fn list_keys(
    h: &Handler,
    caller: &Caller,
    req: &CallToolRequestParams,
) -> Result<CallToolResult, ToolError> {
    let a: ListKeysArgs = args(req)?;
    let limit = a.limit.unwrap_or(100).clamp(1, 1000);
    let mut call = Call::open(h, caller, a.upstream.as_deref()).await?;
    let upstream = call.session.upstream().clone();
    let mut keys: Vec<Value> = Vec::new();
    let mut cursor = "0".to_string();
    let mut complete = false;
    for _ in 0..MAX_SCAN_ROUNDS {
        let argv: Vec<Bytes> = ["SCAN", &cursor, "MATCH", &a.pattern, "COUNT", "500"]
            .iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect();
        let reply = call.run(argv).await?;
        let (next, found) = match &reply {
            Value::Array(parts) if parts.len() == 2 => (
                parts[0].as_str().unwrap_or("0").to_string(),
                parts[1].as_array().cloned().unwrap_or_default(),
            ),
            _ => {
                return Err(ToolError::invalid(
                    "unexpected SCAN reply from the upstream",
                ))
            }
        };
        keys.extend(found);
        cursor = next;
        if cursor == "0" {
            complete = true;
            break;
        }
        if keys.len() >= limit {
            break;
        }
    }
    let truncated = !complete || keys.len() > limit;
    keys.truncate(limit);
    Ok(output::data(
        &format!(
            "{} key(s) matching the pattern on upstream \"{upstream}\"",
            keys.len()
        ),
        json!({
            "upstream": upstream.as_ref(),
            "pattern": a.pattern,
            "keys": keys,
            "truncated": truncated,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_become_json_and_binary_stays_exact() {
        let f = F2::Array(vec![
            F2::BulkString(Bytes::from_static(b"user")),
            F2::Integer(3),
            F2::Null,
            F2::BulkString(Bytes::from_static(b"\xff\x00")),
        ]);
        assert_eq!(to_json(&f), json!(["user", 3, null, {"base64": "/wA="}]));
    }
}
