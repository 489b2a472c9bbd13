//! Upstream → client: pairs each reply with the request it answers (in order, `responseTo`
//! checked), writes tollgate's own replies in their place in the order, remembers the cursors a
//! reply opens (with the plan their later batches are masked by), cuts a cursor's documents at
//! the agent's `max_rows` (truncated with the cursor closed, or refused; the upstream cursor is
//! killed), masks what the plan says, and records outcomes. A reply nobody masks or cuts is
//! relayed as received: reading its `ok`, cursor and counts does not decode it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bson::{Bson, Document};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tracing::warn;

use super::mask_reply::mask_reply;
use super::op_msg::{encode_document, OpMsg, CHECKSUM_PRESENT};
use super::relay::{
    error_reply, ByteCap, Entry, Expect, Kind, RelayError, RowLimit, SharedCursors, Track,
};
use super::reply::{self, code};
use super::reply_view::ReplyView;
use super::wire::{Message, MessageReader, WireError};
use crate::policy::limits::RowLimitMode;
use crate::policy::mongo::{MongoRules, ReplyPlan};
use crate::refusal::{Refusal, RefusalClass};
use crate::session::{OutcomeError, ReplyWrites, SessionContext, Ticket};

pub(super) struct ToClient {
    ctx: Arc<SessionContext>,
    pending: VecDeque<Entry>,
    cursors: SharedCursors,
    kill: mpsc::UnboundedSender<(i64, String)>,
    out: Vec<u8>,
    /// Shared with the client side: entries not yet answered and written.
    owed: Arc<AtomicUsize>,
    /// Entries answered into `out` since the last write.
    done: usize,
    /// Writes to the client, and whether the session ended inside one.
    writes: ReplyWrites,
}

/// How a cursor's batch is cut at `max_rows`.
pub(super) enum Cut {
    /// Keep this many documents; the cursor is reported closed.
    Keep(u64, String),
    Refuse(Refusal),
}

impl ToClient {
    pub fn new(
        ctx: Arc<SessionContext>,
        cursors: SharedCursors,
        kill: mpsc::UnboundedSender<(i64, String)>,
        owed: Arc<AtomicUsize>,
    ) -> ToClient {
        ToClient {
            writes: ctx.reply_writes(),
            ctx,
            pending: VecDeque::new(),
            cursors,
            kill,
            out: Vec::new(),
            owed,
            done: 0,
        }
    }

    /// Whether the session ended inside a write to the client: no error reply can follow then
    /// (it would read as part of the reply being written); only the close.
    pub fn mid_reply(&self) -> bool {
        self.writes.inside()
    }

    /// The request the next reply answers (the upstream-lost error goes to it).
    pub fn front_request(&self) -> Option<i32> {
        self.pending
            .iter()
            .find(|e| matches!(e.kind, Kind::Reply(_)))
            .map(|e| e.request_id)
    }

    /// The tickets of commands whose replies never came (the session is ending).
    pub fn abandon(&mut self) -> impl Iterator<Item = Ticket> + '_ {
        self.pending.drain(..).filter_map(|e| e.ticket)
    }

    pub async fn run<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
        &mut self,
        mut up: MessageReader<R>,
        wr: &mut W,
        mut rx: mpsc::Receiver<Entry>,
    ) -> Result<(), RelayError> {
        // The command half is gone (the client stopped sending): the replies owed are still
        // relayed, then the session ends.
        let mut commands_open = true;
        loop {
            while let Ok(e) = rx.try_recv() {
                self.pending.push_back(e);
            }
            let closing = self.locals() || (!commands_open && self.pending.is_empty());
            if !self.out.is_empty() {
                self.writes
                    .write_all(wr, &self.out)
                    .await
                    .map_err(RelayError::Client)?;
                self.out.clear();
                if self.out.capacity() > 1 << 20 {
                    self.out = Vec::new();
                }
            }
            self.owed
                .fetch_sub(std::mem::take(&mut self.done), Ordering::SeqCst);
            if closing {
                return Ok(());
            }
            tokio::select! {
                e = rx.recv(), if commands_open => match e {
                    Some(e) => self.pending.push_back(e),
                    None => commands_open = false,
                },
                m = up.next() => match m {
                    Ok(Some(m)) => {
                        while let Ok(e) = rx.try_recv() {
                            self.pending.push_back(e);
                        }
                        self.on_reply(m)?;
                    }
                    Ok(None) => {
                        return Err(RelayError::Upstream(std::io::ErrorKind::UnexpectedEof.into()))
                    }
                    Err(WireError::Io(e)) => return Err(RelayError::Upstream(std::io::Error::other(e))),
                    Err(e) => return Err(RelayError::UpstreamProtocol(e.to_string())),
                },
            }
        }
    }

    /// Writes tollgate's own replies at the front of the queue; true at a Close entry.
    fn locals(&mut self) -> bool {
        while let Some(front) = self.pending.front() {
            match &front.kind {
                Kind::Local(b) => {
                    self.out.extend_from_slice(b);
                    self.pending.pop_front();
                    self.done += 1;
                }
                Kind::Close => return true,
                _ => break,
            }
        }
        false
    }

    /// One upstream reply: paired with the oldest request owed one.
    pub(super) fn on_reply(&mut self, m: Message) -> Result<(), RelayError> {
        let view = ReplyView::of(&m).map_err(|e| RelayError::UpstreamProtocol(e.to_string()))?;
        let Some(front) = self.pending.front() else {
            return Err(RelayError::UpstreamProtocol(
                "a reply nobody asked for".into(),
            ));
        };
        if !matches!(front.kind, Kind::Reply(_) | Kind::Internal)
            || front.request_id != m.header.response_to
        {
            return Err(RelayError::UpstreamProtocol(format!(
                "a reply to request {} while {} was owed",
                m.header.response_to, front.request_id
            )));
        }
        // A streamed (exhaust) reply keeps its request owed; tollgate clears exhaustAllowed, so
        // this only guards against a server that streams anyway.
        if view.more_to_come() {
            return Err(RelayError::UpstreamProtocol(
                "a streamed reply (tollgate asks for none)".into(),
            ));
        }
        let entry = self.pending.pop_front().expect("front exists");
        self.done += 1;
        if let Kind::Reply(expect) = entry.kind {
            self.relay(&m, &view, *expect, entry.ticket);
        }
        Ok(())
    }

    fn relay(&mut self, m: &Message, view: &ReplyView<'_>, expect: Expect, ticket: Option<Ticket>) {
        let error = view.error();
        let mut rows = view.rows();
        let cursor = view.cursor();
        let mut plan = expect.plan.clone();
        let mut cut = None;
        if let Some((id, ns, batch)) = cursor.filter(|_| view.ok()) {
            let ns = ns.unwrap_or(&expect.namespace).to_string();
            let mut cursors = self.cursors.lock().expect("cursor registry");
            // A getMore whose cursor tollgate has let go of since it was sent (a limit cut it, or
            // its byte cap, on a reply to an earlier getMore still in flight): nothing more of
            // it is delivered. Counted from 0, a live review read 18,100 rows past a
            // max_rows of 1,000 by pipelining getMores.
            let (before, gone) = match &expect.track {
                Track::GetMore(cid) => match cursors.check(*cid, &ns) {
                    Ok(c) => {
                        plan = c.plan.clone();
                        (c.delivered, false)
                    }
                    Err(_) => (0, true),
                },
                _ => (0, false),
            };
            cut = match gone {
                true => Some(Cut::Keep(
                    0,
                    "tollgate: this cursor was closed: a limit cut its results".to_string(),
                )),
                false => expect
                    .limit
                    .as_ref()
                    .and_then(|l| limit_cut(l, before, batch)),
            };
            if let Some(cap) = expect.bytes.as_ref().filter(|c| m.raw.len() as u64 > c.max) {
                cut = narrower(cut, byte_cut(cap, view.body));
            }
            match (&expect.track, &cut) {
                (Track::Open, None) => cursors.open(id, &ns, &plan, batch, expect.origin.clone()),
                (Track::GetMore(cid), None) => cursors.advanced(*cid, id, batch),
                (Track::GetMore(cid), Some(_)) => cursors.killed(&[*cid]),
                _ => {}
            }
            if cut.is_some() && id != 0 {
                let _ = self.kill.send((id, ns));
            }
        }
        // Any other reply over the cap (a large distinct, findAndModify value, ...) is refused:
        // it has no batch to cut.
        if cursor.is_none() && view.ok() {
            if let Some(cap) = expect.bytes.as_ref().filter(|c| m.raw.len() as u64 > c.max) {
                cut = Some(Cut::Refuse(byte_refusal(cap)));
            }
        }
        if let Track::Kill(ids) = &expect.track {
            self.cursors.lock().expect("cursor registry").killed(ids);
        }
        let edits = !matches!(plan, ReplyPlan::None) || cut.is_some();
        if !edits {
            self.out.extend_from_slice(&m.raw);
        } else {
            match self.edited(m, view, &plan, expect.rules.as_deref(), cut.as_ref()) {
                Ok((bytes, kept)) => {
                    self.out.extend_from_slice(&bytes);
                    if kept.is_some() {
                        rows = kept;
                    }
                }
                Err(why) => {
                    warn!(error = %why, "masking failed; reply withheld");
                    self.out.extend_from_slice(&error_reply(
                        m.header.response_to,
                        code::INVALID_BSON,
                        "tollgate: the reply could not be masked",
                    ));
                }
            }
        }
        let error = match (&cut, error) {
            (Some(Cut::Refuse(r)), _) => Some(r.message()),
            (_, e) => e,
        };
        if let Some(t) = ticket {
            let error = error.map(|message| OutcomeError {
                code: None,
                message,
            });
            self.ctx.outcome(t, rows, error);
        }
    }

    /// The reply decoded, masked and cut; with the documents kept when cut.
    fn edited(
        &self,
        m: &Message,
        view: &ReplyView<'_>,
        plan: &ReplyPlan,
        rules: Option<&MongoRules>,
        cut: Option<&Cut>,
    ) -> Result<(Vec<u8>, Option<u64>), String> {
        let mut doc = Document::try_from(view.body).map_err(|e| e.to_string())?;
        let mut kept = None;
        if !matches!(plan, ReplyPlan::None) {
            let none = MongoRules::default();
            let key = self.ctx.core().policy.mask_key();
            mask_reply(&mut doc, plan, rules.unwrap_or(&none), &key);
        }
        match cut {
            None => {}
            Some(Cut::Refuse(r)) => doc = reply::refusal(r),
            Some(Cut::Keep(keep, notice)) => {
                if let Ok(c) = doc.get_document_mut("cursor") {
                    for key in ["firstBatch", "nextBatch"] {
                        if let Ok(batch) = c.get_array_mut(key) {
                            batch.truncate(*keep as usize);
                        }
                    }
                    c.insert("id", Bson::Int64(0));
                }
                doc.insert("tollgateNotice", notice.clone());
                kept = Some(*keep);
            }
        }
        let msg = OpMsg {
            request_id: m.header.request_id,
            response_to: m.header.response_to,
            flags: view.flags & !CHECKSUM_PRESENT,
            body: encode_document(&doc).into(),
            sequences: Vec::new(),
        };
        Ok((msg.encode(view.flags & CHECKSUM_PRESENT != 0), kept))
    }

    #[cfg(test)]
    pub(super) fn push(&mut self, e: Entry) {
        self.pending.push_back(e);
    }

    #[cfg(test)]
    pub(super) fn take_out(&mut self) -> Vec<u8> {
        self.locals();
        std::mem::take(&mut self.out)
    }
}

/// Whether a batch of `batch` documents after `before` already relayed passes the limit (the
/// MCP tools cut with the same words: `run_one`).
pub(super) fn limit_cut(l: &RowLimit, before: u64, batch: u64) -> Option<Cut> {
    if before + batch <= l.max {
        return None;
    }
    Some(match l.mode {
        RowLimitMode::Truncate => Cut::Keep(
            l.max.saturating_sub(before),
            format!(
                "tollgate: result truncated at {} documents (rule: {})",
                l.max, l.rule
            ),
        ),
        RowLimitMode::Refuse => Cut::Refuse(Refusal::new(
            RefusalClass::TooLarge,
            l.rule.clone(),
            format!("the result has more than {} documents", l.max),
        )),
    })
}

/// The cut of a batch whose reply passes `max_result_bytes`: the documents that fit (their
/// BSON sizes as the server sent them), or the refusal.
fn byte_cut(cap: &ByteCap, body: &bson::RawDocument) -> Option<Cut> {
    if cap.mode == RowLimitMode::Refuse {
        return Some(Cut::Refuse(byte_refusal(cap)));
    }
    let doc = Document::try_from(body).ok()?;
    let cursor = doc.get_document("cursor").ok()?;
    let batch = cursor
        .get_array("firstBatch")
        .or_else(|_| cursor.get_array("nextBatch"))
        .ok()?;
    let (mut keep, mut size) = (0u64, 0u64);
    for item in batch {
        let n = match item {
            Bson::Document(d) => d.to_vec().map_or(0, |v| v.len() as u64),
            _ => 0,
        };
        if size + n > cap.max {
            break;
        }
        size += n;
        keep += 1;
    }
    Some(Cut::Keep(
        keep,
        format!(
            "tollgate: result truncated to {keep} documents, the first {} bytes (rule: {})",
            cap.max, cap.rule
        ),
    ))
}

fn byte_refusal(cap: &ByteCap) -> Refusal {
    Refusal::new(
        RefusalClass::TooLarge,
        cap.rule.clone(),
        format!(
            "the reply has more than {} bytes, the most the policy allows",
            cap.max
        ),
    )
    .with_instead("ask for fewer or smaller documents (limit, batchSize, a projection)")
}

/// The stricter of two cuts: a refusal, else the fewer documents kept.
fn narrower(a: Option<Cut>, b: Option<Cut>) -> Option<Cut> {
    match (a, b) {
        (Some(Cut::Refuse(r)), _) | (_, Some(Cut::Refuse(r))) => Some(Cut::Refuse(r)),
        (Some(Cut::Keep(x, nx)), Some(Cut::Keep(y, ny))) => Some(if x <= y {
            Cut::Keep(x, nx)
        } else {
            Cut::Keep(y, ny)
        }),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests;
