//! One read command (find or aggregate) on an upstream connection of its own, for the MCP tools:
//! the command exactly as the policy judged (and perhaps rewrote) it, its cursor followed with
//! getMore until the documents run out or a cap is reached — the agent's `max_rows` cut with the
//! wire relay's own words and mode (`to_client::limit_cut`), the call's own smaller `max_rows`, a
//! byte cap — every batch masked with the verdict's plan by the relay's `mask_reply`, and the
//! upstream cursor killed when the result is cut, or, from another connection, when the call ends
//! any other way with a cursor open (`OpenCursor`: abandoned by its client, timed out, its
//! connection broken). A reply that cannot be decoded is an error,
//! never passed on unmasked. Connections are borrowed from the upstream's idle ones (`idle.rs`).

use std::sync::Arc;
use std::time::Duration;

use bson::{doc, Bson, Document};

use super::cursors::cursor_id;
use super::door::MongoUpstream;
use super::idle::Lent;
use super::mask_reply::mask_reply;
use super::relay::RowLimit;
use super::reply::is_error;
use super::to_client::{limit_cut, Cut as WireCut};
use super::upstream::{MongoConnection, UpstreamError};
use crate::policy::limits::Limits;
use crate::policy::mongo::{Command, MongoRules, ReplyPlan};
use crate::refusal::Refusal;

/// Documents asked for per batch at most (the server also stops a batch at 16 MiB).
const MAX_BATCH: u64 = 1000;

/// How the reply's documents are masked: the verdict's plan, the rules listings are cut with,
/// the key of hashing masks.
pub struct Masking<'a> {
    pub plan: &'a ReplyPlan,
    pub rules: Option<&'a MongoRules>,
    pub hash_key: &'a str,
}

/// What one call may return and how long it may take.
pub struct Caps<'a> {
    /// The agent's limits: `max_rows` and `on_max_rows` apply as on the wire.
    pub limits: &'a Limits,
    /// The call's own `max_rows` (it can only lower the policy's).
    pub asked_rows: Option<u64>,
    /// Bytes of (masked) documents, as BSON, the call may return.
    pub max_bytes: u64,
    /// From the first command to the last reply.
    pub timeout: Duration,
}

/// Why a result was cut short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    /// The policy's `max_rows` (truncate mode), with the wire's notice.
    PolicyRows(String),
    /// The call's own `max_rows`.
    AskedRows,
    /// `max_result_bytes`.
    Bytes,
}

/// The documents of one call.
#[derive(Debug, Default)]
pub struct Collected {
    pub documents: Vec<Document>,
    /// Their size as BSON (what the wire would have carried).
    pub bytes: u64,
    pub truncated: Option<Cut>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Connecting, logging in, or the connection failing (never the server's text).
    #[error("{0}")]
    Upstream(#[from] UpstreamError),
    #[error("the command did not finish within {} ms", .0.as_millis())]
    TimedOut(Duration),
    /// The server answered `ok: 0`.
    #[error("{code_name} ({code})")]
    Server {
        code: i32,
        code_name: String,
        errmsg: String,
    },
    /// More documents than the policy's `max_rows` in refuse mode: the wire's refusal.
    #[error("{}", .0.message())]
    Refused(Refusal),
    #[error("unexpected reply from the upstream: {0}")]
    BadReply(&'static str),
}

impl Caps<'_> {
    /// The smallest row cap that applies, if any.
    fn rows(&self) -> Option<u64> {
        let policy = self.limits.max_rows.as_ref().map(|(n, _)| *n);
        match (policy, self.asked_rows) {
            (Some(p), Some(a)) => Some(p.min(a)),
            (p, a) => p.or(a),
        }
    }

    /// The batch to ask for when `have` documents are kept: one more than the row cap leaves
    /// room for (so a cut is seen, not guessed), at most `MAX_BATCH`.
    pub fn batch_size(&self, have: u64) -> i64 {
        let n = match self.rows() {
            Some(cap) => cap.saturating_sub(have).saturating_add(1).min(MAX_BATCH),
            None => MAX_BATCH,
        };
        n as i64
    }
}

/// Runs `cmd` (a find or aggregate, as judged) on a connection logged in with the vaulted
/// credentials: an idle one if there is one (`idle.rs`), given back if the call ended clean.
pub async fn run(
    up: &Arc<MongoUpstream>,
    connect_timeout: Duration,
    cmd: &Command,
    masking: &Masking<'_>,
    caps: &Caps<'_>,
) -> Result<Collected, RunError> {
    // Outside the timeout: a call that times out (or is dropped) with a cursor open, or its
    // first reply still to come, has that cursor killed.
    let mut cursor = OpenCursor {
        up: up.clone(),
        connect_timeout,
        reply_timeout: caps.timeout,
        lent: None,
        first_reply: None,
        open: None,
    };
    // The server stops the command by the call's timeout too (the policy caps `maxTimeMS` at
    // its statement timeout; without one, the call's 30 s): a reply a dropped call leaves to
    // be read comes by then.
    let limit_ms = caps.timeout.as_millis().min(i64::MAX as u128) as i64;
    let capped;
    let cmd = match cmd.max_time_ms() {
        Some(m) if m > 0 && m <= limit_ms => cmd,
        _ => {
            let mut c = cmd.clone();
            c.body.insert("maxTimeMS", limit_ms.max(1));
            capped = c;
            &capped
        }
    };
    // On a timeout the call's future is dropped: its cursor, or its first reply still to come,
    // is dealt with by `OpenCursor`.
    tokio::time::timeout(caps.timeout, async {
        cursor.lent = Some(up.lend(connect_timeout).await?);
        let mut clean = true;
        let mut result = follow(cmd, masking, caps, &mut clean, &mut cursor).await;
        let reused = cursor.lent.as_ref().is_some_and(|l| l.reused);
        if reused && matches!(result, Err(RunError::Upstream(UpstreamError::Connect(_)))) {
            // The idle connection had gone stale (the server or a firewall closed it). The
            // command only reads, so running it again on a new connection changes nothing.
            // A cursor the first attempt opened before its connection failed is killed too.
            cursor.kill_elsewhere();
            cursor.first_reply = None;
            cursor.lent = Some(up.lend_new(connect_timeout).await?);
            clean = true;
            result = follow(cmd, masking, caps, &mut clean, &mut cursor).await;
        }
        // After replies read whole, with no cursor left open, the connection is clean; after a
        // broken exchange or a cursor that could not be killed it is not, and is closed.
        let whole = matches!(
            result,
            Ok(_) | Err(RunError::Server { .. } | RunError::Refused(_))
        );
        let lent = cursor.lent.take();
        if let Some(lent) = lent.filter(|_| whole && clean) {
            up.give_back(lent);
        }
        result
    })
    .await
    .map_err(|_| RunError::TimedOut(caps.timeout))?
}

/// The call's connection and the server cursor it has open, if any. A call that ends without
/// exhausting or killing its cursor (its future dropped: abandoned by its client or timed out;
/// its connection broken) has it killed, instead of leaving it upstream until the server's
/// cursor timeout (ten minutes by default) holding what it holds: an agent abandoning calls
/// must not pile cursors up on the server.
/// - Dropped while the first command's reply is still to come: the server creates the cursor
///   all the same, so the connection is handed to a task that reads that reply (within the
///   call's timeout, which `run` also gives the server as `maxTimeMS`) and kills the cursor it
///   names on the same connection.
/// - Later: the cursor is known, and killed from another connection (the borrowed
///   connections carry no session, `idle.rs`, so any connection of the same user may).
struct OpenCursor {
    up: Arc<MongoUpstream>,
    connect_timeout: Duration,
    reply_timeout: Duration,
    lent: Option<Lent>,
    /// The first command was sent (request id) and its reply not read yet.
    first_reply: Option<i32>,
    open: Option<(i64, String)>,
}

impl Drop for OpenCursor {
    fn drop(&mut self) {
        match (self.first_reply.take(), self.lent.take()) {
            (Some(request), Some(lent)) => self.kill_after_reply(request, lent),
            _ => self.kill_elsewhere(),
        }
    }
}

impl OpenCursor {
    /// Kills the open cursor, if any, from another connection, in the background.
    fn kill_elsewhere(&mut self) {
        let Some((id, ns)) = self.open.take() else {
            return;
        };
        let (up, timeout) = (self.up.clone(), self.connect_timeout);
        self.in_background(timeout.saturating_mul(2), async move {
            metrics::counter!("tollgate_mcp_cursors_abandoned_total").increment(1);
            let mut lent = up.lend(timeout).await.ok()?;
            kill(&mut lent.conn, id, &ns).await.then_some(lent)
        });
    }

    /// Reads the reply to the first command (`request`) in the background and kills the
    /// cursor it opened, on the same connection, given back when that worked.
    fn kill_after_reply(&mut self, request: i32, mut lent: Lent) {
        self.in_background(self.reply_timeout, async move {
            let reply = lent.conn.read_reply(request).await.ok()?;
            let Ok(cursor) = reply.get_document("cursor") else {
                return Some(lent); // an error: no cursor
            };
            let id = cursor_id(cursor)?;
            if id == 0 {
                return Some(lent); // the whole result came at once
            }
            metrics::counter!("tollgate_mcp_cursors_abandoned_total").increment(1);
            let ns = cursor.get_str("ns").unwrap_or_default().to_string();
            kill(&mut lent.conn, id, &ns).await.then_some(lent)
        });
    }

    /// Runs `job` in the background for at most `within`: the connection it ends with clean
    /// goes back to the idle ones; without one (a failure, or time up) the server's cursor
    /// timeout reaps what is left. Nothing runs without a runtime (the gateway is stopping).
    fn in_background(
        &self,
        within: Duration,
        job: impl std::future::Future<Output = Option<Lent>> + Send + 'static,
    ) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let up = self.up.clone();
        runtime.spawn(async move {
            match tokio::time::timeout(within, job).await {
                Ok(Some(lent)) => up.give_back(lent),
                _ => tracing::debug!(
                    "an abandoned call's cursor could not be killed; the server's timeout will reap it"
                ),
            }
        });
    }
}

async fn follow(
    cmd: &Command,
    masking: &Masking<'_>,
    caps: &Caps<'_>,
    clean: &mut bool,
    cursor: &mut OpenCursor,
) -> Result<Collected, RunError> {
    let none = MongoRules::default();
    let rules = masking.rules.unwrap_or(&none);
    let policy = RowLimit::of(caps.limits);
    let asked = caps.asked_rows;
    let mut out = Collected::default();
    let conn = &mut cursor
        .lent
        .as_mut()
        .expect("a connection is lent before the call runs")
        .conn;
    let request = conn.send_command(&cmd.body).await?;
    cursor.first_reply = Some(request);
    let mut reply = conn.read_reply(request).await?;
    cursor.first_reply = None;
    loop {
        // Masked first: on documents with masked fields an error's details are withheld too.
        mask_reply(&mut reply, masking.plan, rules, masking.hash_key);
        if is_error(&reply) {
            return Err(server_error(&reply));
        }
        let (id, ns, batch) = take_batch(&mut reply)?;
        let ns = if ns.contains('.') {
            ns
        } else {
            format!("{}.{}", cmd.db, cmd.collection().unwrap_or_default())
        };
        cursor.open = (id != 0).then(|| (id, ns.clone()));
        for item in batch {
            let Bson::Document(d) = item else {
                return Err(RunError::BadReply(
                    "a batch holds something other than documents",
                ));
            };
            let have = out.documents.len() as u64;
            // A document past a row cap: the policy's first (with the wire's words and mode),
            // then the call's own.
            let cut = match policy.as_ref().and_then(|l| limit_cut(l, have, 1)) {
                Some(WireCut::Keep(_, notice)) => Some(Ok(Cut::PolicyRows(notice))),
                Some(WireCut::Refuse(r)) => Some(Err(r)),
                None if asked.is_some_and(|a| have >= a) => Some(Ok(Cut::AskedRows)),
                None => None,
            };
            let cut = match cut {
                Some(c) => Some(c),
                None => {
                    let size = d.to_vec().map_or(0, |v| v.len() as u64);
                    if out.bytes + size > caps.max_bytes {
                        Some(Ok(Cut::Bytes))
                    } else {
                        out.bytes += size;
                        out.documents.push(d);
                        None
                    }
                }
            };
            if let Some(c) = cut {
                *clean = kill(conn, id, &ns).await;
                if *clean {
                    cursor.open = None;
                }
                out.truncated = Some(c.map_err(RunError::Refused)?);
                return Ok(out);
            }
        }
        if id == 0 {
            return Ok(out);
        }
        let (db, coll) = ns.split_once('.').unwrap_or_default();
        let more = doc! {
            "getMore": id,
            "collection": coll,
            "batchSize": caps.batch_size(out.documents.len() as u64),
            "$db": db,
        };
        reply = conn.command(&more).await?;
    }
}

/// `cursor.id`, `cursor.ns` and the batch (taken out of the reply).
fn take_batch(reply: &mut Document) -> Result<(i64, String, Vec<Bson>), RunError> {
    let cursor = reply
        .get_document_mut("cursor")
        .map_err(|_| RunError::BadReply("no cursor in the reply"))?;
    let id = cursor_id(cursor).ok_or(RunError::BadReply("a cursor without an id"))?;
    let ns = cursor.get_str("ns").unwrap_or_default().to_string();
    let batch = ["firstBatch", "nextBatch"]
        .iter()
        .find_map(|k| match cursor.remove(*k) {
            Some(Bson::Array(a)) => Some(a),
            _ => None,
        })
        .ok_or(RunError::BadReply("a cursor without a batch"))?;
    Ok((id, ns, batch))
}

/// Kills the upstream cursor of a result cut short; whether no cursor is left open (if one is,
/// the connection is closed rather than reused, and the server reaps the cursor in time).
async fn kill(conn: &mut MongoConnection, id: i64, ns: &str) -> bool {
    if id == 0 {
        return true;
    }
    let Some((db, coll)) = ns.split_once('.') else {
        return false;
    };
    match conn
        .command(&doc! { "killCursors": coll, "cursors": [id], "$db": db })
        .await
    {
        Ok(r) => r
            .get_array("cursorsKilled")
            .is_ok_and(|k| k.contains(&Bson::Int64(id))),
        Err(_) => false,
    }
}

fn server_error(reply: &Document) -> RunError {
    let code = match reply.get("code") {
        Some(Bson::Int32(c)) => *c,
        Some(Bson::Int64(c)) => *c as i32,
        Some(Bson::Double(c)) => *c as i32,
        _ => 0,
    };
    RunError::Server {
        code,
        code_name: reply.get_str("codeName").unwrap_or("Error").to_string(),
        errmsg: reply.get_str("errmsg").unwrap_or_default().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_ask_one_more_than_the_row_cap_leaves_room_for() {
        let mut limits = Limits::default();
        let caps = |limits: &Limits, asked| {
            let c = Caps {
                limits,
                asked_rows: asked,
                max_bytes: 1 << 20,
                timeout: Duration::from_secs(1),
            };
            (c.batch_size(0), c.batch_size(10))
        };
        assert_eq!(caps(&limits, None), (1000, 1000));
        assert_eq!(caps(&limits, Some(10)), (11, 1));
        limits.max_rows = Some((5, "r".into()));
        assert_eq!(caps(&limits, Some(10)), (6, 1));
        limits.max_rows = Some((5000, "r".into()));
        assert_eq!(caps(&limits, None), (1000, 1000));
    }

    #[test]
    fn batches_are_taken_out_of_cursor_replies() {
        let mut r = doc! { "cursor": { "id": 7i64, "ns": "shop.orders", "nextBatch": [ { "a": 1 } ] }, "ok": 1.0 };
        let (id, ns, batch) = take_batch(&mut r).unwrap();
        assert_eq!((id, ns.as_str(), batch.len()), (7, "shop.orders", 1));
        assert!(matches!(
            take_batch(&mut doc! { "ok": 1.0 }),
            Err(RunError::BadReply(_))
        ));
        let e =
            server_error(&doc! { "ok": 0.0, "errmsg": "bad", "code": 2, "codeName": "BadValue" });
        assert_eq!(e.to_string(), "BadValue (2)");
    }
}
