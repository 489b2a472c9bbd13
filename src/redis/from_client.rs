//! Client → upstream: parses every complete command of a read (a batch of up to `MAX_BATCH`),
//! judges each (`RedisPolicy::check`), has the session core record the decisions (chained, then
//! one audit write for the batch before anything is forwarded), hands the batch's entries to the
//! reply half in one message, and forwards the allowed commands' bytes. MULTI bookkeeping: a
//! refused command inside a transaction poisons it, and its EXEC is sent as DISCARD. RESET is
//! followed by tollgate's own AUTH with the vaulted login; commands that reach other clients'
//! connections are kept to the agent's own (`own.rs`); `CLIENT REPLY OFF|SKIP` is followed by
//! owing no reply for the commands it silences. A session on a shared upstream connection moves
//! to its own at the first command that is not sharable (`shared::route`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::sync::mpsc;

use super::audit::statement;
use super::auth::{parse_hello, upstream_hello, HelloError};
use super::clients::ClientEntry;
use super::command::{encode_command, Command};
use super::own::{self, KillPlan};
use super::pubsub::SubKind;
use super::reader::{ClientReader, ReadError, UpstreamReader};
use super::relay::{Entry, Kind, OwnFilter, OwnReader, Relay, RelayError, Sink, MAX_BATCH};
use super::reply;
use super::reply_cap::ReplyCap;
use super::shared::route::sharable_looked_up;
use super::upstream::RedisTarget;
use crate::audit::Decision;
use crate::policy::redis::builtin::OWN_CONNECTIONS_RULE;
use crate::policy::redis::{
    ClientScope, CommandTable, Looked, MaskPlan, RedisPolicy, RedisVerdict,
};
use crate::policy::Outcome;
use crate::refusal::{Refusal, RefusalClass};
use crate::session::{Judged, ReauthError, Session};

/// What the front end knows of the upstream connection's state, kept as it was before a batch so
/// that a batch that is never forwarded (the audit log could not be written) leaves it as the
/// upstream still has it.
#[derive(Debug, Clone, Copy)]
struct ConnState {
    in_multi: bool,
    multi_dirty: bool,
    reply_off: bool,
    silence_next: bool,
    subscribed_ever: bool,
}

/// `CLIENT REPLY ON|OFF|SKIP`, as forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplyMode {
    On,
    Off,
    Skip,
}

pub(super) struct FromClient {
    session: Session,
    table: Arc<CommandTable>,
    policy: RedisPolicy,
    target: Arc<RedisTarget>,
    client: Option<ClientEntry>,
    in_multi: bool,
    multi_dirty: bool,
    /// The policy version at MULTI: an EXEC under another one is answered EXECABORT.
    multi_version: u64,
    /// `CLIENT REPLY OFF` is in force: nothing is answered until `CLIENT REPLY ON` (or RESET).
    reply_off: bool,
    /// `CLIENT REPLY SKIP` was sent: the next command is not answered.
    silence_next: bool,
    /// A `CLIENT REPLY` the current command forwarded.
    reply_change: Option<ReplyMode>,
    /// The session subscribed at some point (CLIENT REPLY is refused from then on: in RESP2
    /// pub/sub mode the server refuses it, and confirmations would go unanswered).
    subscribed_ever: bool,
    /// Databases other than 0 this connection may have selected (every `SELECT` let through,
    /// until a RESET): an agent switching in by `AUTH` must be allowed all of them. At most
    /// `MAX_SELECTED`; past that (`None`) only an agent allowed every database may switch in.
    selected: Option<Vec<u32>>,
    /// A RESET logged the connection out, as Redis does: until an `AUTH` (or `HELLO ... AUTH`)
    /// every other command is answered `-NOAUTH`, like before the first login.
    logged_out: bool,
    /// Entries handed to the reply side and not yet written to the client.
    owed: Arc<AtomicUsize>,
    /// How many replies may be owed on the session's own connection (`own_window`).
    pub(super) window: Arc<super::own_window::OwnWindow>,
    /// Where the agent's `max_result_bytes` is published for the reply side.
    pub(super) reply_cap: Arc<ReplyCap>,
    /// Where the reply half reads the session's agent (`sub_recheck`), set by the relay.
    pub(super) agent_seen: Option<super::sub_recheck::SharedAgent>,
    /// Where forwarded MONITOR / CLIENT TRACKING commands are noted, to be judged again after
    /// a reload (`sub_recheck`).
    pub(super) standing: Option<super::sub_recheck::Standing>,
    /// The session is on a shared upstream connection (until it needs its own).
    shared: bool,
    /// A large reply came for it there: its next forwarded command moves it to its own.
    heavy: bool,
    /// Replies the shared connection owed it when the batch started.
    owed_on_shared: usize,
    /// Replies the shared connection owes for the batch's forwarded bytes.
    shared_replies: usize,
    /// Where, in the batch's bytes and entries, the first command that needs the session's own
    /// connection starts: the batch ends there and the session moves before it is forwarded.
    switch_at: Option<(usize, usize)>,
    /// The open-connections gauge of the session's own connection, once it has one.
    own_gauge: Option<crate::telemetry::GaugeGuard>,
    /// The batch being committed and handed over (see `unsent_tickets`).
    unsent: Vec<Entry>,
}

/// Databases other than 0 a session's `SELECT`s are remembered for (Redis has 16 by default).
const MAX_SELECTED: usize = 64;

/// Longer than every command name tollgate treats specially.
const NAME_BUF: usize = 32;

/// The command's name in lower case, in `buf` (no allocation per command); empty when longer
/// than `NAME_BUF`, which matches none of the names looked at here.
fn lower_name<'a>(c: &Command, buf: &'a mut [u8; NAME_BUF]) -> &'a [u8] {
    let name = &c.args[0];
    if name.len() > NAME_BUF {
        return &[];
    }
    let out = &mut buf[..name.len()];
    out.copy_from_slice(name);
    out.make_ascii_lowercase();
    out
}

impl FromClient {
    /// The session, as it stands now (the agent a Redis `AUTH` switched to, say).
    pub fn session(&self) -> &Session {
        &self.session
    }

    pub fn new(relay: Relay, owed: Arc<AtomicUsize>) -> FromClient {
        FromClient {
            session: relay.session,
            table: relay.table,
            policy: relay.policy,
            target: relay.target,
            client: relay.client,
            in_multi: false,
            multi_dirty: false,
            multi_version: 0,
            reply_off: false,
            logged_out: false,
            silence_next: false,
            reply_change: None,
            subscribed_ever: false,
            selected: Some(Vec::new()),
            owed,
            window: Arc::default(),
            reply_cap: Arc::default(),
            agent_seen: None,
            standing: None,
            shared: false,
            heavy: false,
            owed_on_shared: 0,
            shared_replies: 0,
            switch_at: None,
            own_gauge: None,
            unsent: Vec::new(),
        }
    }

    pub async fn run<R: AsyncRead + Unpin>(
        &mut self,
        mut client: ClientReader<R>,
        mut sink: Sink,
        tx: mpsc::Sender<Vec<Entry>>,
    ) -> Result<(), RelayError> {
        self.shared = matches!(sink, Sink::Shared { .. });
        let mut entries = Vec::new();
        let mut out = BytesMut::new();
        loop {
            if let Sink::Shared { conn, inbox } = &sink {
                // Replies the client has not read yet, or an upstream slower than the client,
                // hold back its next commands.
                inbox.has_room(super::relay::MAX_IN_FLIGHT).await;
                conn.writable().await;
                self.heavy = inbox.heavy();
                self.owed_on_shared = inbox.owed();
            }
            // On its own connection: no more replies owed than the window allows.
            let batch = match &sink {
                Sink::Own(_) => {
                    self.window.room(&self.owed).await;
                    let owed = self.owed.load(Ordering::SeqCst);
                    self.window.depth().saturating_sub(owed).clamp(1, MAX_BATCH)
                }
                Sink::Shared { .. } => MAX_BATCH,
            };
            let mut closing = false;
            let mut need_read = false;
            // When the batch's first command was taken: the overhead is timed per batch (two
            // clock reads and one histogram sample per read of the client, not per command).
            let mut started = None;
            let before = self.conn_state();
            while entries.len() < batch && self.switch_at.is_none() && !self.session.must_pace() {
                match client.next_command() {
                    Ok(Some(cmd)) => {
                        started.get_or_insert_with(Instant::now);
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
                        entries.push(Entry::local(reply::error("ERR", &e.to_string())));
                        entries.push(Entry {
                            kind: Kind::Close,
                            ticket: None,
                        });
                        closing = true;
                        break;
                    }
                }
            }
            // Silenced commands (`CLIENT REPLY OFF`) owe no entry but are forwarded all the same.
            if !entries.is_empty() || !out.is_empty() || self.switch_at.is_some() {
                // From here to the hand-over the entries (and their tickets) are kept where
                // `unsent_tickets` finds them if the session ends while this half waits.
                self.unsent = std::mem::take(&mut entries);
                // Decisions reach the audit log (one write for the batch) before anything runs.
                self.commit_decisions(&mut out, before).await;
                if let Some(started) = started {
                    // Judged and recorded: what the batch waited for before being forwarded.
                    self.session.context().record_overhead(started);
                }
                if let Some(at) = self.switch_at.take() {
                    need_read = false;
                    if let Err(e) = self.switch(at, &mut sink, &mut out, &tx).await {
                        for ticket in self.unsent_tickets() {
                            self.session.context().abandoned(ticket);
                        }
                        return Err(e);
                    }
                }
                if !self.hand_over(&tx).await {
                    return Ok(());
                }
                self.write_out(&mut sink, &mut out).await?;
            }
            if closing {
                // Wait for the other half to write everything up to the Close entry.
                std::future::pending::<()>().await;
            }
            // An agent refused faster than `limits.refusals_per_second` waits here, this
            // batch's replies on their way.
            self.session.pace_refusals().await;
            let more = if need_read {
                match client.fill().await {
                    Ok(more) => more,
                    Err(ReadError::Held(e)) => {
                        // Too much held across sessions: said, then the session ends (the
                        // rest of the command cannot be skipped without reading it).
                        self.unsent = vec![
                            Entry::local(reply::error("ERR", &e.to_string())),
                            Entry {
                                kind: Kind::Close,
                                ticket: None,
                            },
                        ];
                        if self.hand_over(&tx).await {
                            std::future::pending::<()>().await;
                        }
                        return Ok(());
                    }
                    Err(ReadError::Io(e)) => return Err(RelayError::Client(e)),
                    Err(ReadError::Protocol(e)) => {
                        return Err(RelayError::Client(std::io::Error::other(e)))
                    }
                }
            } else {
                true
            };
            if !more {
                // The client stopped sending: so does the session's own connection, as Redis
                // would see it direct (a TLS write half says so only when shut down, not when
                // dropped). Redis answers what it read, and frees a blocked command at once.
                if let Sink::Own(writer) = &mut sink {
                    let _ = tokio::time::timeout(
                        std::time::Duration::from_secs(1),
                        tokio::io::AsyncWriteExt::shutdown(writer),
                    )
                    .await;
                }
                return Ok(());
            }
        }
    }

    /// How long opening an upstream connection may take (`limits.upstream_connect_timeout_ms`).
    fn connect_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.session.core().limits.upstream_connect_timeout_ms)
    }

    /// Hands the unsent entries to the reply half (`false`: it is gone). The channel's slot is
    /// reserved first, so the entries are never inside a send that could be dropped.
    async fn hand_over(&mut self, tx: &mpsc::Sender<Vec<Entry>>) -> bool {
        if self.unsent.is_empty() {
            return true;
        }
        let Ok(permit) = tx.reserve().await else {
            return false;
        };
        self.owed.fetch_add(self.unsent.len(), Ordering::SeqCst);
        permit.send(std::mem::replace(&mut self.unsent, Vec::with_capacity(16)));
        true
    }

    /// The tickets of entries judged but never handed to the reply half (the session ended
    /// while this half waited): the caller records them as abandoned.
    pub(super) fn unsent_tickets(&mut self) -> Vec<crate::session::Ticket> {
        self.unsent.drain(..).filter_map(|e| e.ticket).collect()
    }

    /// Writes the batch's forwarded bytes to the session's connection.
    async fn write_out(&mut self, sink: &mut Sink, out: &mut BytesMut) -> Result<(), RelayError> {
        let replies = std::mem::take(&mut self.shared_replies);
        if out.is_empty() {
            return Ok(());
        }
        match sink {
            Sink::Own(up) => up.write_all(out).await.map_err(RelayError::Upstream)?,
            Sink::Shared { conn, inbox } => {
                if conn.is_closed() && !inbox.is_closed() && !inbox.owes() {
                    // The shared connection died while this session owed it nothing: the
                    // session held no state there, so it goes on on a fresh one.
                    *conn = self
                        .target
                        .shared
                        .pick(&self.target, self.connect_timeout())
                        .await?;
                }
                conn.send(inbox, out, replies)?
            }
        }
        out.clear();
        Ok(())
    }

    /// Moves the session to a connection of its own before the command at `at` (bytes, entries):
    /// what came before goes to the shared connection and is answered there first, so the
    /// upstream runs the session's commands in the order they were sent.
    async fn switch(
        &mut self,
        (at_out, at_entry): (usize, usize),
        sink: &mut Sink,
        out: &mut BytesMut,
        tx: &mpsc::Sender<Vec<Entry>>,
    ) -> Result<(), RelayError> {
        let up = self
            .target
            .connect(self.connect_timeout())
            .await
            .inspect_err(|e| {
                tracing::warn!(upstream = %self.target.name, error = %e, "upstream connection failed");
            })?;
        let (gauge, entry) = self.target.own(&up, self.session.agent().clone());
        self.own_gauge = Some(gauge);
        self.client = entry;
        metrics::counter!("tollgate_redis_session_moves_total", "upstream" => self.target.name.clone())
            .increment(1);
        let (rd, wr) = up.stream.into_split();
        // The entries before the switch reach the reply half before their replies can.
        let after = self.unsent.split_off(at_entry);
        let handed = self.hand_over(tx).await;
        self.unsent = after;
        if !handed {
            return Ok(());
        }
        let mut bytes = out.split_to(at_out);
        self.write_out(sink, &mut bytes).await?;
        if let Sink::Shared { inbox, .. } = sink {
            inbox.settled().await;
            if inbox.is_closed() {
                return Err(super::shared::Closed.into());
            }
        }
        self.unsent.insert(
            0,
            Entry {
                kind: Kind::Switch(OwnReader(UpstreamReader::new(rd))),
                ticket: None,
            },
        );
        *sink = Sink::Own(wr);
        self.shared = false;
        Ok(())
    }

    fn conn_state(&self) -> ConnState {
        ConnState {
            in_multi: self.in_multi,
            multi_dirty: self.multi_dirty,
            reply_off: self.reply_off,
            silence_next: self.silence_next,
            subscribed_ever: self.subscribed_ever,
        }
    }

    /// Writes the batch's chained records (one write shared with every session committing
    /// now). If the log cannot be written nothing is forwarded: every command of the batch is
    /// answered with the audit refusal instead, and the connection state is what it was
    /// `before` the batch (a MULTI never sent must not make later commands count as queued).
    async fn commit_decisions(&mut self, out: &mut BytesMut, before: ConnState) {
        if let Err(refused) = self.session.commit().await {
            let ConnState {
                in_multi,
                multi_dirty,
                reply_off,
                silence_next,
                subscribed_ever,
            } = before;
            self.in_multi = in_multi;
            self.multi_dirty = multi_dirty;
            self.reply_off = reply_off;
            self.silence_next = silence_next;
            self.subscribed_ever = subscribed_ever;
            out.clear();
            self.shared_replies = 0;
            self.switch_at = None;
            let refused = reply::refusal(&refused);
            // RESET's hidden login is not sent either, and owes the client nothing: one
            // refusal per command the client sent.
            self.unsent.retain(|e| !matches!(e.kind, Kind::Relogin));
            for e in self.unsent.iter_mut() {
                if !matches!(e.kind, Kind::Local(_) | Kind::Close) {
                    e.kind = Kind::Local(refused.clone());
                    e.ticket = None;
                }
            }
        }
    }

    /// Judges one command; true when the session ends after it (QUIT).
    pub(super) fn command(
        &mut self,
        cmd: Command,
        entries: &mut Vec<Entry>,
        out: &mut BytesMut,
    ) -> bool {
        let skipping = std::mem::take(&mut self.silence_next) && !self.reply_off;
        let silent = self.reply_off || skipping;
        let first = entries.len();
        let mark = out.len();
        // One lookup in the command table serves routing, the policy and the audit record.
        let table = self.table.clone();
        let looked = table.lookup(&cmd.args);
        // A pipeline deeper than `SHARED_DEPTH` leaves the shared connection: Redis runs what it
        // was sent whether or not anyone reads the replies, and on a shared connection tollgate
        // must read every one (the connection lives on); on its own connection a client that
        // leaves takes them with it, as it would directly.
        let deep = self.owed_on_shared + self.shared_replies >= super::relay::SHARED_DEPTH;
        let on_shared =
            self.shared && !self.heavy && !deep && sharable_looked_up(looked, &cmd.args);
        let end = self.judge(cmd, looked, entries, out);
        if self.shared && out.len() > mark {
            if on_shared {
                self.shared_replies += 1;
            } else {
                self.switch_at = Some((mark, first));
            }
        }
        if skipping && out.len() == mark {
            // The command CLIENT REPLY SKIP silences was answered here (refused, unknown, AUTH):
            // the upstream's skip is still pending and would swallow the next forwarded
            // command's reply instead, pairing every reply after it with the wrong command (a
            // live review read masked emails raw that way). A PING takes the skip; on a session
            // whose own connection holds it (CLIENT is never sent on a shared one).
            out.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        }
        match self.reply_change.take() {
            // ON answers +OK even when replies were off.
            Some(ReplyMode::On) => {
                self.reply_off = false;
                self.silence_next = false;
            }
            Some(ReplyMode::Off) => {
                self.reply_off = true;
                self.silence(entries, first);
            }
            Some(ReplyMode::Skip) => {
                self.silence_next = !self.reply_off;
                self.silence(entries, first);
            }
            None if silent => self.silence(entries, first),
            None => {}
        }
        end
    }

    /// Commands the client asked not to be answered (`CLIENT REPLY OFF|SKIP`): the upstream
    /// sends nothing for them, so no reply is owed; their records are completed now and
    /// tollgate's own replies are not written, as Redis would write none. RESET still answers.
    fn silence(&self, entries: &mut Vec<Entry>, first: usize) {
        let mut i = first;
        while i < entries.len() {
            if matches!(entries[i].kind, Kind::Close | Kind::Reset | Kind::Relogin) {
                i += 1;
                continue;
            }
            let e = entries.remove(i);
            if let Some(t) = e.ticket {
                self.session.context().outcome(t, None, None);
            }
        }
    }

    fn judge(
        &mut self,
        cmd: Command,
        looked: Looked<'_>,
        entries: &mut Vec<Entry>,
        out: &mut BytesMut,
    ) -> bool {
        let mut name_buf = [0u8; NAME_BUF];
        let name = lower_name(&cmd, &mut name_buf);
        if matches!(name, b"post" | b"host:") {
            // An HTTP request after login (inside MULTI or after RESET too): closed without an
            // answer, as before login and as redis-server does at any time.
            self.session.refuse_deferred(
                statement(&cmd.args, &[], false),
                super::http_request_refusal(),
            );
            entries.push(Entry {
                kind: Kind::Close,
                ticket: None,
            });
            return true;
        }
        if self.in_multi {
            if let Some(refusal) = multi_refusal(name) {
                let refusal = self
                    .session
                    .refuse_deferred(statement(&cmd.args, &[], false), refusal);
                self.poison_multi();
                entries.push(Entry::local(reply::refusal(&refusal)));
                return false;
            }
        }
        if self.logged_out {
            if let Some(answer) = logged_out_answer(name, &cmd) {
                entries.push(Entry::local(Bytes::from_static(answer)));
                return false;
            }
        }
        match name {
            b"quit" => {
                self.session
                    .note(statement(&cmd.args, &[], false), Decision::Allowed, None);
                entries.push(Entry::local(Bytes::from_static(reply::OK)));
                entries.push(Entry {
                    kind: Kind::Close,
                    ticket: None,
                });
                return true;
            }
            b"auth" => {
                let (user, token) = match cmd.args.len() {
                    2 => (Bytes::from_static(b"default"), cmd.args[1].clone()),
                    3 => (cmd.args[1].clone(), cmd.args[2].clone()),
                    _ => {
                        entries.push(Entry::local(reply::error(
                            "ERR",
                            "wrong number of arguments for 'auth' command",
                        )));
                        return false;
                    }
                };
                let answer = match self.reauth(&user, &token) {
                    Ok(()) => Bytes::from_static(reply::OK),
                    Err(e) => e,
                };
                entries.push(Entry::local(answer));
                return false;
            }
            b"hello" if self.reply_off || self.silence_next => {
                entries.push(Entry::local(reply::refusal(&silenced_refusal("HELLO"))));
                return false;
            }
            b"hello" => {
                let h = match parse_hello(&cmd.args) {
                    Ok(h) => h,
                    Err(HelloError::NoProto) => {
                        entries.push(Entry::local(Bytes::from_static(reply::NOPROTO)));
                        return false;
                    }
                    Err(HelloError::Syntax(m)) => {
                        entries.push(Entry::local(reply::error("ERR", &m)));
                        return false;
                    }
                };
                if let Some((u, t)) = &h.auth {
                    if let Err(e) = self.reauth(u, t) {
                        entries.push(Entry::local(e));
                        return false;
                    }
                }
                let args = upstream_hello(&h);
                let fwd = Command {
                    raw: encode_command(&args),
                    args,
                };
                self.forward(fwd, Kind::Hello(h.proto), entries, out);
                return false;
            }
            _ => {}
        }
        let core = self.session.core().clone();
        let mut verdict = self.policy.check_looked_up(&core.policy, looked, &cmd.args);
        let subcommand = matches!(looked, Ok(info) if info.name.as_bytes().contains(&b'|'));
        if verdict.runs() {
            if let Some(r) = self.state_refusal(name, &cmd, &verdict) {
                verdict = RedisVerdict::blocked(r);
            }
        }
        if !verdict.runs() {
            let refusal = verdict.denial.clone().expect("a refusal has a reason");
            // The refusal may have come before the keys were placed: find them for the record.
            let mut keys = Vec::new();
            if let Ok(info) = looked {
                let _ = crate::policy::redis::keys::find_keys(info, &cmd.args, &mut keys);
            }
            let shown = statement(&cmd.args, &keys, subcommand);
            let refusal = self.session.refuse_deferred(shown, refusal);
            self.poison_multi();
            entries.push(Entry::local(reply::refusal(&refusal)));
            return false;
        }
        let scope = verdict.scope;
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
        let (rule, reason) = match (&verdict.denial, capped_by) {
            (Some(d), _) => (Some(d.rule.clone()), Some(d.reason.clone())),
            (None, Some(rule)) => (
                Some(rule),
                Some("blocking timeout capped to the statement timeout".into()),
            ),
            // A masked read names the mask rule, as the other doors do.
            (None, None) => (verdict.mask_rule.clone(), None),
        };
        let judged = Judged {
            statement: statement(&cmd.args, &verdict.keys, subcommand),
            decision,
            rule,
            reason,
        };
        // The reply side caps replies with the limit in force now (a reload may change it).
        self.reply_cap.update(self.policy.limits());
        // The agent's statement rate is shared with its sessions on every protocol.
        match self
            .session
            .decide_deferred(judged, Some(self.policy.limits()))
        {
            Ok(ticket) if scope != ClientScope::None => {
                self.forward_scoped(scope, cmd, ticket, entries, out)
            }
            Ok(ticket) => {
                let blocking = matches!(looked, Ok(info) if info.categories.intersects(crate::policy::redis::Categories::BLOCKING));
                let args = blocking.then(|| cmd.args.clone());
                let (kind, cmd) = self.kind_of(name, cmd, verdict.mask);
                let kind = match (kind, args) {
                    (Kind::Reply(plan), Some(args)) => Kind::Blocking {
                        plan,
                        args,
                        version: core.policy.version(),
                    },
                    (kind, _) => kind,
                };
                let reset = matches!(kind, Kind::Reset);
                entries.push(Entry {
                    kind,
                    ticket: Some(ticket),
                });
                out.extend_from_slice(&cmd.raw);
                if reset {
                    // RESET logs the connection out: tollgate logs it back in at once, with the
                    // vaulted login, before anything else the client sent.
                    entries.push(Entry {
                        kind: Kind::Relogin,
                        ticket: None,
                    });
                    out.extend_from_slice(&self.target.auth_command());
                }
            }
            Err(refusal) => {
                self.poison_multi();
                entries.push(Entry::local(reply::refusal(&refusal)));
            }
        }
        false
    }

    /// What the session's state makes impossible for a command the policy allows: reaching
    /// other connections inside MULTI (the reply could not be filtered), CLIENT REPLY where its
    /// replies could not be paired, and commands whose replies tollgate must read while replies
    /// are off.
    fn state_refusal(&self, name: &[u8], cmd: &Command, verdict: &RedisVerdict) -> Option<Refusal> {
        let unsupported = |reason: String| {
            Some(Refusal::new(
                RefusalClass::Unsupported,
                "builtin: protocol",
                reason,
            ))
        };
        let sub = cmd.args.get(1).map(|a| a.to_ascii_lowercase());
        let is_reply = name == b"client" && sub.as_deref() == Some(&b"reply"[..]);
        if verdict.scope != ClientScope::None && self.in_multi {
            return Some(Refusal::permission(
                OWN_CONNECTIONS_RULE,
                format!(
                    "{} inside MULTI is refused: tollgate keeps it to the agent's own connections and cannot inside a transaction",
                    statement(&cmd.args[..cmd.args.len().min(2)], &[], true)
                ),
            ));
        }
        if verdict.scope == ClientScope::Redirect {
            let target = cmd
                .args
                .iter()
                .position(|a| a.eq_ignore_ascii_case(b"redirect"))
                .and_then(|i| cmd.args.get(i + 1))
                .and_then(|a| std::str::from_utf8(a).ok())
                .and_then(|a| a.parse::<u64>().ok());
            let own = target.is_some_and(|id| self.target.clients.is_own(id, self.session.agent()));
            if !own {
                return Some(Refusal::permission(
                    OWN_CONNECTIONS_RULE,
                    "CLIENT TRACKING may redirect only to one of this agent's own connections",
                ));
            }
        }
        if is_reply {
            if self.in_multi {
                return unsupported("CLIENT REPLY inside MULTI is refused: tollgate could not pair the transaction's replies".into());
            }
            if self.subscribed_ever {
                return unsupported("CLIENT REPLY after SUBSCRIBE is refused: tollgate could not pair pub/sub confirmations".into());
            }
        }
        // In RESP2 pub/sub mode the server answers MULTI with an error and queues nothing, while
        // tollgate would pair what follows as queued: the session ended on the mismatch.
        if name == b"multi" && self.subscribed_ever && !self.in_multi {
            return unsupported("MULTI after SUBSCRIBE is refused: tollgate could not pair the transaction's replies with pub/sub ones (RESET, or a connection of its own for the transaction)".into());
        }
        let silenced = self.reply_off || self.silence_next;
        let needs_reply = SubKind::of_word(name).is_some() || name == b"monitor";
        if silenced && needs_reply {
            return Some(silenced_refusal(
                &String::from_utf8_lossy(name).to_uppercase(),
            ));
        }
        None
    }

    /// Forwards a command kept to the agent's own connections (see `own.rs`).
    fn forward_scoped(
        &mut self,
        scope: ClientScope,
        cmd: Command,
        ticket: crate::session::Ticket,
        entries: &mut Vec<Entry>,
        out: &mut BytesMut,
    ) {
        if let Some(standing) = &self.standing {
            standing.note(&cmd.args);
        }
        let agent = self.session.agent().clone();
        let clients = &self.target.clients;
        let own_filter = |filter| Kind::Own {
            filter,
            agent: agent.clone(),
        };
        let get_all = || {
            let args = vec![
                Bytes::from_static(b"SLOWLOG"),
                Bytes::from_static(b"GET"),
                Bytes::from_static(b"-1"),
            ];
            encode_command(&args)
        };
        let (kind, bytes): (Kind, Bytes) = match scope {
            ClientScope::Kill => match own::plan_kill(&cmd.args, &clients.ids_of(&agent)) {
                KillPlan::Parts {
                    commands,
                    old_style,
                } => (
                    Kind::KillParts {
                        left: commands.len(),
                        killed: 0,
                        old_style,
                        error: None,
                    },
                    own::encode_all(&commands).freeze(),
                ),
                KillPlan::Local(reply) => (Kind::Local(reply), Bytes::new()),
            },
            ClientScope::Unblock => {
                let id = cmd
                    .args
                    .get(2)
                    .and_then(|a| std::str::from_utf8(a).ok())
                    .and_then(|a| a.parse::<u64>().ok());
                if id.is_some_and(|id| clients.is_own(id, &agent)) {
                    (Kind::Reply(MaskPlan::None), cmd.raw)
                } else {
                    // Another agent's connection (or none): as if no such client were blocked.
                    (Kind::Local(Bytes::from_static(b":0\r\n")), Bytes::new())
                }
            }
            ClientScope::List => (own_filter(OwnFilter::ClientList), cmd.raw),
            ClientScope::SlowlogGet => {
                let count = match cmd
                    .args
                    .get(2)
                    .map(|a| String::from_utf8_lossy(a).parse::<i64>())
                {
                    None => 10,
                    Some(Ok(n)) if n < 0 => usize::MAX,
                    Some(Ok(n)) => usize::try_from(n).unwrap_or(usize::MAX),
                    // Let the upstream give its own error for a bad count.
                    Some(Err(_)) => {
                        entries.push(Entry {
                            kind: Kind::Reply(MaskPlan::None),
                            ticket: Some(ticket),
                        });
                        out.extend_from_slice(&cmd.raw);
                        return;
                    }
                };
                (own_filter(OwnFilter::SlowlogGet(count)), get_all())
            }
            ClientScope::SlowlogLen => (own_filter(OwnFilter::SlowlogLen), get_all()),
            ClientScope::Monitor => (own_filter(OwnFilter::Monitor), cmd.raw),
            ClientScope::Redirect | ClientScope::None => (Kind::Reply(MaskPlan::None), cmd.raw),
        };
        if let Kind::Local(_) = kind {
            // Answered here: the record is complete at once.
            self.session.context().outcome(ticket, None, None);
            entries.push(Entry { kind, ticket: None });
            return;
        }
        entries.push(Entry {
            kind,
            ticket: Some(ticket),
        });
        out.extend_from_slice(&bytes);
    }

    /// A command refused inside MULTI: the transaction's EXEC will be answered EXECABORT.
    fn poison_multi(&mut self) {
        if self.in_multi {
            self.multi_dirty = true;
        }
    }

    /// A command tollgate rewrote itself (HELLO without its AUTH part): recorded, forwarded.
    fn forward(&self, cmd: Command, kind: Kind, entries: &mut Vec<Entry>, out: &mut BytesMut) {
        let judged = Judged::allowed(statement(&cmd.args, &[], false));
        match self.session.decide_deferred(judged, None) {
            Ok(ticket) => {
                entries.push(Entry {
                    kind,
                    ticket: Some(ticket),
                });
                out.extend_from_slice(&cmd.raw);
            }
            Err(refusal) => entries.push(Entry::local(reply::refusal(&refusal))),
        }
    }

    /// MULTI/EXEC/DISCARD and pub/sub bookkeeping; EXEC of a poisoned transaction becomes DISCARD.
    fn kind_of(&mut self, name: &[u8], cmd: Command, plan: MaskPlan) -> (Kind, Command) {
        if let (Some(standing), false) = (&self.standing, self.in_multi) {
            standing.note(&cmd.args);
        }
        match name {
            b"multi" => {
                if !self.in_multi {
                    self.in_multi = true;
                    self.multi_dirty = false;
                    self.multi_version = self.session.core().policy.version();
                }
                (Kind::Reply(MaskPlan::None), cmd)
            }
            b"exec" if self.in_multi => {
                self.in_multi = false;
                let abort = if self.multi_dirty {
                    Some(reply::QUEUED_ABORT)
                } else if self.session.core().policy.version() != self.multi_version {
                    Some(reply::POLICY_CHANGED_ABORT)
                } else {
                    None
                };
                if let Some(abort) = abort {
                    let args = vec![Bytes::from_static(b"DISCARD")];
                    let raw = encode_command(&args);
                    (Kind::ExecAbort(abort), Command { args, raw })
                } else {
                    (Kind::Exec, cmd)
                }
            }
            b"discard" => {
                self.in_multi = false;
                (Kind::Discard, cmd)
            }
            b"select" => {
                // Whether it succeeds is not waited for: counted as selected either way.
                let db = cmd.args.get(1).and_then(|a| std::str::from_utf8(a).ok());
                if let (Some(db), Some(list)) =
                    (db.and_then(|d| d.parse::<u32>().ok()), &mut self.selected)
                {
                    if db != 0 && !list.contains(&db) {
                        if list.len() < MAX_SELECTED {
                            list.push(db);
                        } else {
                            self.selected = None;
                        }
                    }
                }
                let kind = if self.in_multi {
                    Kind::Queued(plan)
                } else {
                    Kind::Reply(plan)
                };
                (kind, cmd)
            }
            b"reset" => {
                // The server drops the transaction, pub/sub, MONITOR and CLIENT REPLY state.
                self.in_multi = false;
                self.multi_dirty = false;
                self.reply_off = false;
                self.silence_next = false;
                self.subscribed_ever = false;
                self.selected = Some(Vec::new());
                self.logged_out = true;
                (Kind::Reset, cmd)
            }
            b"client" if !self.in_multi => {
                let mode = match cmd.args.get(1).zip(cmd.args.get(2)) {
                    Some((sub, mode))
                        if cmd.args.len() == 3 && sub.eq_ignore_ascii_case(b"reply") =>
                    {
                        match mode.to_ascii_lowercase().as_slice() {
                            b"on" => Some(ReplyMode::On),
                            b"off" => Some(ReplyMode::Off),
                            b"skip" => Some(ReplyMode::Skip),
                            _ => None,
                        }
                    }
                    _ => None,
                };
                self.reply_change = mode;
                (Kind::Reply(plan), cmd)
            }
            _ if self.in_multi => (Kind::Queued(plan), cmd),
            _ => match SubKind::of_word(name) {
                Some((kind, add)) => {
                    self.subscribed_ever |= add;
                    let n = cmd.args.len() - 1;
                    (
                        Kind::Subscribe {
                            remaining: (n > 0).then_some(n),
                            kind,
                        },
                        cmd,
                    )
                }
                None => (Kind::Reply(plan), cmd),
            },
        }
    }

    /// AUTH (or HELLO AUTH) inside a session: switches the agent on success. `Err` is the reply.
    fn reauth(&mut self, user: &[u8], token: &[u8]) -> Result<(), Bytes> {
        let core = self.session.core().clone();
        let upstream = self.session.upstream().clone();
        let (table, selected) = (&self.table, &self.selected);
        // The connection keeps the database it has selected: an agent that may not SELECT it
        // would otherwise work on it with its own key rules, a reach neither agent has alone.
        let may_take_over = |agent: &Arc<str>| {
            let mut policy = RedisPolicy::new(agent.clone(), upstream.clone());
            // Too many to list: the new agent must be allowed any database at all.
            let any = [u32::MAX];
            for db in selected.as_deref().unwrap_or(&any) {
                let select = [Bytes::from_static(b"SELECT"), Bytes::from(db.to_string())];
                let verdict = policy.check(&core.policy, table, &select);
                if !verdict.runs() {
                    let rule = verdict
                        .denial
                        .map_or_else(|| "default-deny".into(), |d| d.rule);
                    return Err(Refusal::permission(
                        rule,
                        match selected {
                            Some(_) => format!(
                                "this connection has selected database {db}, which agent \"{agent}\" may not use; connect again (or RESET) to log in as it"
                            ),
                            None => format!(
                                "this connection has selected more than {MAX_SELECTED} databases, which agent \"{agent}\" may not all use; connect again (or RESET) to log in as it"
                            ),
                        },
                    ));
                }
            }
            Ok(())
        };
        match self.session.reauthenticate(user, token, may_take_over) {
            Ok(()) => {
                self.logged_out = false;
                self.policy.set_agent(self.session.agent().clone());
                if let Some(c) = &self.client {
                    c.set_agent(self.session.agent().clone());
                }
                if let Some(seen) = &self.agent_seen {
                    *seen.lock().unwrap_or_else(|e| e.into_inner()) = self.session.agent().clone();
                }
                Ok(())
            }
            Err(ReauthError::WrongPass) => Err(Bytes::from_static(reply::WRONGPASS)),
            Err(ReauthError::Refused(r)) => Err(reply::refusal(&r)),
        }
    }
}

/// What a logged-out connection (after RESET) answers instead of running `name`, as Redis does
/// before a login: `None` for the commands it still takes (AUTH, HELLO with AUTH, QUIT, RESET).
fn logged_out_answer(name: &[u8], cmd: &Command) -> Option<&'static [u8]> {
    match name {
        b"auth" | b"quit" | b"reset" => None,
        b"hello" => match parse_hello(&cmd.args) {
            Ok(h) if h.auth.is_none() => Some(reply::NOAUTH_HELLO),
            _ => None,
        },
        _ => Some(reply::NOAUTH),
    }
}

/// Commands refused inside MULTI, for every agent: tollgate pairs EXEC's array with one reply
/// per queued command, in the protocol the session speaks, and these break that (review F1,
/// F2: SUBSCRIBE's extra confirmations and a queued HELLO let masked values through). MONITOR
/// is refused there by `state_refusal`, as every command kept to the agent's own connections.
fn multi_refusal(name: &[u8]) -> Option<Refusal> {
    let reason = match name {
        _ if SubKind::of_word(name).is_some() => {
            "its replies inside EXEC are not one per command (a confirmation per channel)"
        }
        b"hello" => "it would switch the reply protocol in the middle of EXEC's reply",
        b"auth" => "tollgate answers AUTH itself at once (it switches the session's agent), not when EXEC runs",
        _ => return None,
    };
    Some(Refusal::new(
        RefusalClass::Unsupported,
        "builtin: protocol",
        format!(
            "{} inside MULTI is refused: {reason}; send it outside the transaction",
            String::from_utf8_lossy(name).to_uppercase()
        ),
    ))
}

/// A command whose reply tollgate must read, refused while the client has replies off.
fn silenced_refusal(what: &str) -> Refusal {
    Refusal::new(
        RefusalClass::Unsupported,
        "builtin: protocol",
        format!(
            "{what} while CLIENT REPLY is OFF or SKIP is refused: tollgate must read its reply"
        ),
    )
}

#[cfg(test)]
mod tests;
