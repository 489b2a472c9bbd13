//! The relay of a logged-in session. Two halves in one task:
//! - `from_client` parses each command, asks the policy, records the decision, and forwards
//!   the command's bytes (or queues tollgate's own reply, in order);
//! - `to_client` cuts upstream replies into frames, pairs each with the command it answers,
//!   masks what the plan says, records outcomes, and relays pub/sub and push frames as they come.
//!
//! The halves share a bounded channel of batches of [`Entry`]s (one batch per read of the
//! client's pipeline, one wake-up of the other half): at most `MAX_IN_FLIGHT` replies are owed;
//! a client that pipelines without reading waits, the gateway's memory does not grow.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::tls::{NetRead, NetWrite};
use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::types::BytesFrame as F2;
use redis_protocol::resp3::types::BytesFrame as F3;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::warn;

use super::audit::{statement, SessionAudit, Ticket};
use super::auth::{parse_hello, upstream_hello, verify, HelloError};
use super::command::{encode_command, Command, CommandParser};
use super::mask_reply;
use super::reply;
use super::scan::ReplyScanner;
use crate::audit::{Decision, EventKind};
use crate::policy::redis::{CommandTable, MaskPlan, RedisPolicy};
use crate::policy::Outcome;

const MAX_IN_FLIGHT: usize = 4096;
/// A reply nobody needs to inspect is relayed while it arrives once this much of it waits.
const STREAM_AFTER: usize = 256 * 1024;
/// Commands judged per batch (one audit write per batch).
const MAX_BATCH: usize = 512;

pub struct Session {
    pub audit: SessionAudit,
    pub table: Arc<CommandTable>,
    pub policy: RedisPolicy,
    pub resp3: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("client: {0}")]
    Client(std::io::Error),
    #[error("connection to the upstream lost: {0}")]
    Upstream(std::io::Error),
    #[error("{0}")]
    Scan(#[from] super::scan::ScanError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubKind {
    Channel,
    Pattern,
    Shard,
}

#[derive(Debug)]
enum Kind {
    /// tollgate's own reply (refusals, AUTH, QUIT's +OK).
    Local(Bytes),
    /// Close the connection once everything before has been written.
    Close,
    Reply(MaskPlan),
    /// A command queued inside MULTI; its plan applies to its slot in EXEC's reply.
    Queued(MaskPlan),
    Exec,
    /// DISCARD was forwarded in place of EXEC (a queued command was refused): EXECABORT.
    ExecAbort,
    Discard,
    /// HELLO: switches the reply protocol when the upstream accepts it.
    Hello(Option<u8>),
    /// (P|S)(UN)SUBSCRIBE: answered by one confirmation per channel (`None`: "all of them").
    Subscribe {
        remaining: Option<usize>,
        kind: SubKind,
    },
}

#[derive(Debug)]
struct Entry {
    kind: Kind,
    ticket: Option<Ticket>,
    agent: Arc<str>,
}

#[allow(clippy::too_many_arguments)]
pub async fn run(
    session: Session,
    rd: NetRead,
    parser: CommandParser,
    buf: BytesMut,
    mut wr: NetWrite,
    up_rd: NetRead,
    up_wr: NetWrite,
    up_buf: BytesMut,
) -> Result<(), RelayError> {
    let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT / MAX_BATCH);
    let Session {
        audit,
        table,
        policy,
        resp3,
    } = session;
    let audit = Arc::new(audit);
    let owed = Arc::new(AtomicUsize::new(0));
    let stats = audit.gw.stats.pair(
        policy.agent(),
        &audit.upstream,
        crate::audit::Protocol::Redis,
    );
    let mut from = FromClient {
        bucket: audit.gw.limiter.bucket(policy.agent()),
        audit: audit.clone(),
        table,
        stats: (policy.agent().clone(), stats),
        policy,
        in_multi: false,
        multi_dirty: false,
        owed: owed.clone(),
    };
    let mut to = ToClient {
        audit: audit.clone(),
        resp3,
        pending: VecDeque::new(),
        exec_plans: Vec::new(),
        subs: [HashSet::new(), HashSet::new(), HashSet::new()],
        out: BytesMut::new(),
        streaming: None,
        owed: owed.clone(),
        done: 0,
    };
    let upstream_name = audit.upstream.clone();
    let mut phase = audit.gw.lifecycle.subscribe();
    let result = tokio::select! {
        r = from.run(rd, parser, buf, up_wr, tx) => r,
        r = to.run(up_rd, up_buf, &mut wr, rx) => r,
        // Shutting down: closed once every reply owed has been written (or at the deadline).
        _ = drained(&mut phase, &owed) => Ok(()),
    };
    for e in to.pending.drain(..) {
        if let Some(t) = e.ticket {
            audit.outcome(
                &e.agent,
                t,
                Some("outcome unknown: the session ended before the reply".into()),
            );
        }
    }
    if let Err(RelayError::Upstream(_) | RelayError::Scan(_)) = &result {
        metrics::counter!("tollgate_upstream_errors_total", "upstream" => upstream_name.to_string())
            .increment(1);
        let msg = format!("tollgate: connection to upstream \"{upstream_name}\" lost");
        let _ = wr.write_all(&reply::error("ERR", &msg)).await;
    }
    let _ = wr.shutdown().await;
    result
}

/// Resolves when the gateway drains and no reply is owed or unwritten; at once when the drain
/// deadline has passed.
async fn drained(
    phase: &mut tokio::sync::watch::Receiver<crate::gateway::Phase>,
    owed: &AtomicUsize,
) {
    use crate::gateway::Phase;
    loop {
        let now = *phase.borrow_and_update();
        match now {
            Phase::Closing => return,
            Phase::Draining if owed.load(Ordering::SeqCst) == 0 => return,
            _ => {}
        }
        tokio::select! {
            changed = phase.changed() => {
                if changed.is_err() {
                    return std::future::pending().await;
                }
            }
            _ = tokio::time::sleep(std::time::Duration::from_millis(20)), if now == Phase::Draining => {}
        }
    }
}

struct FromClient {
    audit: Arc<SessionAudit>,
    table: Arc<CommandTable>,
    policy: RedisPolicy,
    /// The agent's rate bucket (shared with its other sessions), looked up once per login.
    bucket: Arc<crate::ratelimit::Bucket>,
    in_multi: bool,
    multi_dirty: bool,
    /// The current agent's counters (the agent may change with AUTH).
    stats: (Arc<str>, Arc<crate::telemetry::PairStats>),
    /// Entries handed to the reply side and not yet written to the client.
    owed: Arc<AtomicUsize>,
}

fn lower_name(c: &Command) -> Vec<u8> {
    c.args[0].to_ascii_lowercase()
}

impl FromClient {
    async fn run(
        &mut self,
        mut rd: NetRead,
        mut parser: CommandParser,
        mut buf: BytesMut,
        mut up: NetWrite,
        tx: mpsc::Sender<Vec<Entry>>,
    ) -> Result<(), RelayError> {
        let mut entries = Vec::new();
        let mut out = BytesMut::new();
        loop {
            let mut closing = false;
            let mut need_read = false;
            while entries.len() < MAX_BATCH {
                match parser.next(&mut buf) {
                    Ok(Some(cmd)) => {
                        if self.command(cmd, &mut entries, &mut out) {
                            closing = true;
                            break;
                        }
                    }
                    Ok(None) => {
                        need_read = true;
                        break;
                    }
                    Err(e) => {
                        self.push_local(&mut entries, reply::error("ERR", &e.to_string()));
                        self.push_kind(&mut entries, Kind::Close);
                        closing = true;
                        break;
                    }
                }
            }
            if !entries.is_empty() {
                // Decisions reach the audit log (one write for the batch) before anything runs.
                if !out.is_empty() {
                    if let Err(e) = self.audit.gw.audit.flush() {
                        warn!(error = %e, "audit write failed: refusing the batch");
                        out.clear();
                        for e in entries.iter_mut() {
                            if !matches!(e.kind, Kind::Local(_) | Kind::Close) {
                                e.kind = Kind::Local(Bytes::from_static(reply::AUDIT_DOWN));
                                e.ticket = None;
                            }
                        }
                    }
                }
                self.owed.fetch_add(entries.len(), Ordering::SeqCst);
                let batch = std::mem::replace(&mut entries, Vec::with_capacity(16));
                if tx.send(batch).await.is_err() {
                    return Ok(());
                }
                if !out.is_empty() {
                    up.write_all(&out).await.map_err(RelayError::Upstream)?;
                    out.clear();
                }
            }
            if closing {
                // Wait for the other half to write everything up to the Close entry.
                std::future::pending::<()>().await;
            }
            if need_read {
                let n = rd.read_buf(&mut buf).await.map_err(RelayError::Client)?;
                if n == 0 {
                    return Ok(());
                }
            }
        }
    }

    /// The counters of the agent now logged in.
    fn stats(&mut self) -> &crate::telemetry::PairStats {
        if !Arc::ptr_eq(&self.stats.0, self.policy.agent()) {
            let agent = self.policy.agent().clone();
            let pair = self.audit.gw.stats.pair(
                &agent,
                &self.audit.upstream,
                crate::audit::Protocol::Redis,
            );
            self.stats = (agent, pair);
        }
        &self.stats.1
    }

    fn push_kind(&self, entries: &mut Vec<Entry>, kind: Kind) {
        entries.push(Entry {
            kind,
            ticket: None,
            agent: self.policy.agent().clone(),
        });
    }

    fn push_local(&self, entries: &mut Vec<Entry>, bytes: Bytes) {
        self.push_kind(entries, Kind::Local(bytes));
    }

    /// Judges one command; true when the session ends after it (QUIT, protocol error).
    fn command(&mut self, cmd: Command, entries: &mut Vec<Entry>, out: &mut BytesMut) -> bool {
        let started = Instant::now();
        let end = self.judge(cmd, entries, out);
        self.audit
            .gw
            .latency
            .redis_overhead
            .record(started.elapsed());
        end
    }

    fn judge(&mut self, cmd: Command, entries: &mut Vec<Entry>, out: &mut BytesMut) -> bool {
        let name = lower_name(&cmd);
        match &name[..] {
            b"quit" => {
                self.record(&cmd, &[], Decision::Allowed, None);
                self.push_local(entries, Bytes::from_static(reply::OK));
                self.push_kind(entries, Kind::Close);
                return true;
            }
            b"auth" => {
                let (user, token) = match cmd.args.len() {
                    2 => (Bytes::from_static(b"default"), cmd.args[1].clone()),
                    3 => (cmd.args[1].clone(), cmd.args[2].clone()),
                    _ => {
                        self.push_local(
                            entries,
                            reply::error("ERR", "wrong number of arguments for 'auth' command"),
                        );
                        return false;
                    }
                };
                let r = self.reauth(&cmd, &user, &token);
                self.push_local(entries, r.err().unwrap_or(Bytes::from_static(reply::OK)));
                return false;
            }
            b"hello" => {
                let h = match parse_hello(&cmd.args) {
                    Ok(h) => h,
                    Err(HelloError::NoProto) => {
                        self.push_local(entries, Bytes::from_static(reply::NOPROTO));
                        return false;
                    }
                    Err(HelloError::Syntax(m)) => {
                        self.push_local(entries, reply::error("ERR", &m));
                        return false;
                    }
                };
                if let Some((u, t)) = &h.auth {
                    if let Err(e) = self.reauth(&cmd, u, t) {
                        self.push_local(entries, e);
                        return false;
                    }
                }
                let fwd = Command {
                    raw: encode_command(&upstream_hello(&h)),
                    args: upstream_hello(&h),
                };
                self.forward(fwd, Kind::Hello(h.proto), entries, out);
                return false;
            }
            _ => {}
        }
        let verdict = self
            .policy
            .check(&self.audit.gw.policy, &self.table, &cmd.args);
        if !verdict.runs() {
            let d = verdict.denial.as_ref().expect("a refusal has a denial");
            // The refusal may have come before the keys were placed: find them for the record.
            let mut keys = Vec::new();
            if let Ok(info) = self.table.lookup(&cmd.args) {
                let _ = crate::policy::redis::keys::find_keys(info, &cmd.args, &mut keys);
            }
            let shown = statement(&cmd.args, &keys, self.has_subcommand(&cmd));
            let mut ev =
                self.audit
                    .event(self.policy.agent(), EventKind::Decision, Decision::Blocked);
            ev.statement = Some(shown);
            ev.rule = Some(d.rule.clone());
            ev.reason = Some(d.reason.clone());
            ev.error = Some(d.class.resp_code().to_string());
            let _ = self.audit.decision(&ev);
            crate::telemetry::refusal("redis", &d.rule);
            self.stats().statement(Decision::Blocked);
            if self.in_multi {
                self.multi_dirty = true;
            }
            self.push_local(entries, reply::refusal(d));
            return false;
        }
        // The agent's statement rate is shared with its PostgreSQL sessions.
        if let Some(line) = self.over_rate(&cmd) {
            let stats = self.stats();
            stats.statement(Decision::Blocked);
            stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            if self.in_multi {
                self.multi_dirty = true;
            }
            self.push_local(entries, line);
            return false;
        }
        let decision = match verdict.outcome {
            Outcome::WouldBlock => Decision::WouldBlock,
            _ if !verdict.mask.is_none() => Decision::Masked,
            _ if verdict.rewritten.is_some() => Decision::Rewritten,
            _ => Decision::Allowed,
        };
        let mut capped_by = None;
        let cmd = match verdict.rewritten {
            Some((args, rule)) => {
                capped_by = Some(rule);
                Command {
                    raw: encode_command(&args),
                    args,
                }
            }
            None => cmd,
        };
        let shown = statement(&cmd.args, &verdict.keys, self.has_subcommand(&cmd));
        let mut ev = self
            .audit
            .event(self.policy.agent(), EventKind::Decision, decision);
        ev.statement = Some(shown);
        if let Some(d) = &verdict.denial {
            ev.rule = Some(d.rule.clone());
            ev.reason = Some(d.reason.clone());
        } else if let Some(rule) = capped_by {
            ev.rule = Some(rule);
            ev.reason = Some("blocking timeout capped to the statement timeout".into());
        }
        self.stats().statement(decision);
        let seq = match self.audit.decision(&ev) {
            Ok(seq) => seq,
            Err(e) => {
                warn!(error = %e, "audit write failed: refusing the command");
                self.push_local(entries, Bytes::from_static(reply::AUDIT_DOWN));
                return false;
            }
        };
        let ticket = Ticket {
            seq,
            started: Instant::now(),
            would_block: decision == Decision::WouldBlock,
        };
        let (kind, cmd) = self.kind_of(&name, cmd, verdict.mask);
        entries.push(Entry {
            kind,
            ticket: Some(ticket),
            agent: self.policy.agent().clone(),
        });
        out.extend_from_slice(&cmd.raw);
        false
    }

    /// Takes one command from the agent's rate bucket; over the rate, audits the refusal and
    /// returns the `-ERR` line to send instead. Called after `check`, which refreshed the
    /// agent's limits.
    fn over_rate(&self, cmd: &Command) -> Option<Bytes> {
        let agent = self.policy.agent();
        let (exceeded, rule) = self.bucket.over_rate(self.policy.limits()?)?;
        let mut ev = self
            .audit
            .event(agent, EventKind::Decision, Decision::Blocked);
        ev.statement = Some(statement(&cmd.args, &[], self.has_subcommand(cmd)));
        ev.rule = Some(rule.to_string());
        ev.reason = Some(exceeded.to_string());
        ev.error = Some("ERR".into());
        let _ = self.audit.decision(&ev);
        let line = format!("-ERR tollgate: {exceeded} (agent \"{agent}\", rule: {rule})\r\n");
        Some(Bytes::from(line))
    }

    fn forward(&self, cmd: Command, kind: Kind, entries: &mut Vec<Entry>, out: &mut BytesMut) {
        let shown = statement(&cmd.args, &[], false);
        let mut ev = self
            .audit
            .event(self.policy.agent(), EventKind::Decision, Decision::Allowed);
        ev.statement = Some(shown);
        let ticket = self.audit.decision(&ev).ok().map(|seq| Ticket {
            seq,
            started: Instant::now(),
            would_block: false,
        });
        if ticket.is_none() {
            self.push_local(entries, Bytes::from_static(reply::AUDIT_DOWN));
            return;
        }
        entries.push(Entry {
            kind,
            ticket,
            agent: self.policy.agent().clone(),
        });
        out.extend_from_slice(&cmd.raw);
    }

    fn has_subcommand(&self, cmd: &Command) -> bool {
        self.table
            .lookup(&cmd.args)
            .is_ok_and(|i| i.name.contains('|'))
    }

    /// MULTI/EXEC/DISCARD and pub/sub bookkeeping; EXEC of a poisoned transaction becomes DISCARD.
    fn kind_of(&mut self, name: &[u8], cmd: Command, plan: MaskPlan) -> (Kind, Command) {
        match name {
            b"multi" => {
                if !self.in_multi {
                    self.in_multi = true;
                    self.multi_dirty = false;
                }
                (Kind::Reply(MaskPlan::None), cmd)
            }
            b"exec" if self.in_multi => {
                self.in_multi = false;
                if self.multi_dirty {
                    let args = vec![Bytes::from_static(b"DISCARD")];
                    let raw = encode_command(&args);
                    (Kind::ExecAbort, Command { args, raw })
                } else {
                    (Kind::Exec, cmd)
                }
            }
            b"discard" => {
                self.in_multi = false;
                (Kind::Discard, cmd)
            }
            _ if self.in_multi => (Kind::Queued(plan), cmd),
            b"subscribe" | b"psubscribe" | b"ssubscribe" | b"unsubscribe" | b"punsubscribe"
            | b"sunsubscribe" => {
                let kind = match name {
                    b"subscribe" | b"unsubscribe" => SubKind::Channel,
                    b"psubscribe" | b"punsubscribe" => SubKind::Pattern,
                    _ => SubKind::Shard,
                };
                let n = cmd.args.len() - 1;
                (
                    Kind::Subscribe {
                        remaining: (n > 0).then_some(n),
                        kind,
                    },
                    cmd,
                )
            }
            _ => (Kind::Reply(plan), cmd),
        }
    }

    /// AUTH (or HELLO AUTH) inside a session: switches the agent on success.
    fn reauth(&mut self, cmd: &Command, user: &[u8], token: &[u8]) -> Result<(), Bytes> {
        let gw = self.audit.gw.clone();
        match verify(&gw, user, token) {
            Some(agent) if gw.policy.may_connect(&agent, &self.audit.upstream).is_ok() => {
                self.policy.set_agent(agent.as_str().into());
                self.bucket = gw.limiter.bucket(self.policy.agent());
                self.record(cmd, &[], Decision::Allowed, None);
                Ok(())
            }
            Some(agent) => {
                self.record(
                    cmd,
                    &[],
                    Decision::Blocked,
                    Some("agent may not use this upstream"),
                );
                let _ = agent;
                Err(Bytes::from_static(reply::WRONGPASS))
            }
            None => {
                self.record(cmd, &[], Decision::Blocked, Some("authentication failed"));
                Err(Bytes::from_static(reply::WRONGPASS))
            }
        }
    }

    fn record(
        &self,
        cmd: &Command,
        keys: &[crate::policy::redis::FoundKey],
        d: Decision,
        reason: Option<&str>,
    ) {
        let mut ev = self
            .audit
            .event(self.policy.agent(), EventKind::Decision, d);
        ev.statement = Some(statement(&cmd.args, keys, false));
        ev.reason = reason.map(str::to_string);
        let _ = self.audit.decision(&ev);
    }
}

struct ToClient {
    audit: Arc<SessionAudit>,
    resp3: bool,
    pending: VecDeque<Entry>,
    /// Mask plans of the commands queued in the open transaction, in order.
    exec_plans: Vec<MaskPlan>,
    /// Current subscriptions: channels, patterns, shard channels.
    subs: [HashSet<Bytes>; 3],
    out: BytesMut,
    /// The first byte of the reply being streamed (its head already relayed), if one is.
    streaming: Option<u8>,
    /// Shared with the client side: entries not yet answered and written.
    owed: Arc<AtomicUsize>,
    /// Entries answered into `out` since the last write.
    done: usize,
}

/// A pub/sub frame: (type word lower case, first name).
fn pubsub_kind(frame: &Bytes, resp3: bool) -> Option<(Vec<u8>, Bytes)> {
    let items: Vec<Bytes> = if resp3 || frame.first() == Some(&b'>') {
        let (f, _) = redis_protocol::resp3::decode::complete::decode_bytes(frame).ok()??;
        match f {
            F3::Push { data, .. } | F3::Array { data, .. } => data
                .into_iter()
                .take(2)
                .map(|x| match x {
                    F3::BlobString { data, .. } | F3::SimpleString { data, .. } => data,
                    _ => Bytes::new(),
                })
                .collect(),
            _ => return None,
        }
    } else {
        let (f, _) = redis_protocol::resp2::decode::decode_bytes(frame).ok()??;
        match f {
            F2::Array(data) => data
                .into_iter()
                .take(2)
                .map(|x| match x {
                    F2::BulkString(b) | F2::SimpleString(b) => b,
                    _ => Bytes::new(),
                })
                .collect(),
            _ => return None,
        }
    };
    let word = items.first()?.to_ascii_lowercase();
    Some((word, items.get(1).cloned().unwrap_or_default()))
}

impl ToClient {
    async fn run(
        &mut self,
        mut up: NetRead,
        mut buf: BytesMut,
        wr: &mut NetWrite,
        mut rx: mpsc::Receiver<Vec<Entry>>,
    ) -> Result<(), RelayError> {
        let mut scanner = ReplyScanner::default();
        loop {
            while let Ok(batch) = rx.try_recv() {
                self.pending.extend(batch);
            }
            if self.locals() {
                wr.write_all(&self.out).await.map_err(RelayError::Client)?;
                return Ok(());
            }
            while let Some(n) = scanner.next_frame(&buf)? {
                let frame = buf.split_to(n).freeze();
                while let Ok(batch) = rx.try_recv() {
                    self.pending.extend(batch);
                }
                self.frame(frame);
                if self.locals() {
                    wr.write_all(&self.out).await.map_err(RelayError::Client)?;
                    return Ok(());
                }
            }
            // A large reply still arriving: relay what was scanned instead of holding it all.
            if (self.streaming.is_some() || buf.len() >= STREAM_AFTER) && self.may_stream(&buf) {
                let k = scanner.scanned();
                if k > 0 {
                    self.streaming.get_or_insert(buf[0]);
                    self.out.extend_from_slice(&buf.split_to(k));
                    scanner.consumed(k);
                }
            }
            if !self.out.is_empty() {
                wr.write_all(&self.out).await.map_err(RelayError::Client)?;
                self.out.clear();
                if self.out.capacity() > 1 << 20 {
                    self.out = BytesMut::new();
                }
            }
            self.owed
                .fetch_sub(std::mem::take(&mut self.done), Ordering::SeqCst);
            tokio::select! {
                e = rx.recv() => match e {
                    Some(batch) => self.pending.extend(batch),
                    None => return Ok(()),
                },
                r = up.read_buf(&mut buf) => {
                    if r.map_err(RelayError::Upstream)? == 0 {
                        return Err(RelayError::Upstream(std::io::ErrorKind::UnexpectedEof.into()));
                    }
                }
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

    /// Whether the incomplete reply at the front of `buf` may be relayed before it ends: it
    /// answers a command whose reply is relayed untouched (no mask, not pub/sub, not a push).
    fn may_stream(&self, buf: &[u8]) -> bool {
        if self.streaming.is_some() {
            return true;
        }
        buf.first().is_some_and(|b| *b != b'>')
            && self.subs.iter().all(HashSet::is_empty)
            && matches!(self.pending.front().map(|e| &e.kind), Some(Kind::Reply(p)) if p.is_none())
    }

    fn frame(&mut self, frame: Bytes) {
        if let Some(first) = self.streaming.take() {
            // The tail of a streamed reply (`may_stream` checked its entry).
            self.out.extend_from_slice(&frame);
            if let Some(entry) = self.pending.pop_front() {
                self.done += 1;
                if let Some(t) = entry.ticket {
                    let error = matches!(first, b'-' | b'!').then(|| "error reply".to_string());
                    self.audit.outcome(&entry.agent, t, error);
                }
            }
            return;
        }
        let push = frame.first() == Some(&b'>');
        let subscribed = self.subs.iter().any(|s| !s.is_empty())
            || matches!(
                self.pending.front().map(|e| &e.kind),
                Some(Kind::Subscribe { .. })
            );
        if push || (subscribed && !self.resp3 && frame.first() == Some(&b'*')) {
            if let Some((word, name)) = pubsub_kind(&frame, self.resp3) {
                let confirm = match &word[..] {
                    b"subscribe" => Some((SubKind::Channel, true)),
                    b"psubscribe" => Some((SubKind::Pattern, true)),
                    b"ssubscribe" => Some((SubKind::Shard, true)),
                    b"unsubscribe" => Some((SubKind::Channel, false)),
                    b"punsubscribe" => Some((SubKind::Pattern, false)),
                    b"sunsubscribe" => Some((SubKind::Shard, false)),
                    _ => None,
                };
                if let Some((kind, add)) = confirm {
                    self.confirmation(kind, add, name);
                    self.out.extend_from_slice(&frame);
                    return;
                }
                if push || matches!(&word[..], b"message" | b"pmessage" | b"smessage") {
                    self.out.extend_from_slice(&frame);
                    return;
                }
            } else if push {
                self.out.extend_from_slice(&frame);
                return;
            }
        }
        let Some(entry) = self.pending.pop_front() else {
            // Nothing is owed: an out-of-band frame (e.g. a message while subscribed).
            self.out.extend_from_slice(&frame);
            return;
        };
        self.done += 1;
        let is_error = matches!(frame.first(), Some(b'-' | b'!'));
        let shown = match entry.kind {
            Kind::Reply(ref plan) => self.masked(&frame, plan),
            Kind::Queued(plan) => {
                if frame.starts_with(b"+QUEUED") {
                    self.exec_plans.push(plan);
                }
                frame.clone()
            }
            Kind::Exec => {
                let plans = std::mem::take(&mut self.exec_plans);
                if plans.iter().all(MaskPlan::is_none) {
                    frame.clone()
                } else {
                    mask_reply::mask_exec(&frame, &plans, self.resp3).unwrap_or_else(|e| {
                        warn!(error = %e, "masking failed; reply withheld");
                        reply::error("ERR", "tollgate: the reply could not be masked")
                    })
                }
            }
            Kind::ExecAbort => {
                self.exec_plans.clear();
                Bytes::from_static(reply::QUEUED_ABORT)
            }
            Kind::Discard => {
                self.exec_plans.clear();
                frame.clone()
            }
            Kind::Hello(p) => {
                if !is_error {
                    if let Some(p) = p {
                        self.resp3 = p == 3;
                    }
                }
                frame.clone()
            }
            Kind::Subscribe { .. } | Kind::Local(_) | Kind::Close => frame.clone(),
        };
        self.out.extend_from_slice(&shown);
        if let Some(t) = entry.ticket {
            let error = is_error.then(|| error_text(&frame));
            self.audit.outcome(&entry.agent, t, error);
        }
    }

    fn masked(&self, frame: &Bytes, plan: &MaskPlan) -> Bytes {
        mask_reply::mask(frame, plan, self.resp3).unwrap_or_else(|e| {
            warn!(error = %e, "masking failed; reply withheld");
            reply::error("ERR", "tollgate: the reply could not be masked")
        })
    }

    fn confirmation(&mut self, kind: SubKind, add: bool, name: Bytes) {
        let set = &mut self.subs[kind as usize];
        let before = set.len();
        if add {
            set.insert(name);
        } else {
            set.remove(&name);
        }
        let Some(front) = self.pending.front_mut() else {
            return;
        };
        let Kind::Subscribe { remaining, kind: k } = &mut front.kind else {
            return;
        };
        if *k != kind {
            return;
        }
        let left = remaining.get_or_insert(before.max(1));
        *left = left.saturating_sub(1);
        if *left == 0 {
            let e = self.pending.pop_front().expect("front exists");
            self.done += 1;
            if let Some(t) = e.ticket {
                self.audit.outcome(&e.agent, t, None);
            }
        }
    }
}

fn error_text(frame: &[u8]) -> String {
    let s = String::from_utf8_lossy(frame);
    s.trim_start_matches(['-', '!'])
        .trim_end()
        .chars()
        .take(200)
        .collect()
}
