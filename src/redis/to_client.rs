//! Upstream → client: cuts replies into frames, pairs each with the oldest reply owed, applies
//! mask plans (decoding only then), writes tollgate's own replies in their place in the order,
//! records outcomes, and relays pub/sub messages and pushes without consuming an entry. A reply
//! nobody inspects that passes `STREAM_AFTER` bytes before it ends is relayed as it arrives.
//! Replies of commands that reach other clients' connections are kept to the agent's own
//! (`own.rs`); after MONITOR only the lines of the agent's own connections are relayed. On a
//! shared upstream connection the frames come whole from the session's inbox; at a
//! [`Kind::Switch`] entry the session's own connection takes over.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tracing::warn;

use super::clients::UpstreamClients;
use super::mask_reply;
use super::own;
use super::pubsub::{self, PubSubFrame, SubKind, Subscriptions};
use super::reader::UpstreamReader;
use super::relay::{Entry, Kind, OwnFilter, RelayError, Source};
use super::reply;
use super::reply_cap::ReplyCap;
use super::shared::inbox::{Piece, Taken};
use crate::policy::redis::MaskPlan;
use crate::refusal::Refusal;
use crate::session::{OutcomeError, ReplyWrites, SessionContext, Ticket};
use crate::tls::NetRead;

/// A reply nobody needs to inspect is relayed while it arrives once this much of it waits.
const STREAM_AFTER: usize = 256 * 1024;

pub(super) struct ToClient {
    ctx: Arc<SessionContext>,
    resp3: bool,
    pending: VecDeque<Entry>,
    /// Mask plans of the commands queued in the open transaction, in order.
    exec_plans: Vec<MaskPlan>,
    subs: Subscriptions,
    out: BytesMut,
    /// The first byte of the reply being streamed (its head already relayed), if one is.
    streaming: Option<u8>,
    /// Shared with the client side: entries not yet answered and written.
    owed: Arc<AtomicUsize>,
    /// Entries answered into `out` since the last write.
    done: usize,
    /// Which upstream connections are whose (for replies kept to the agent's own).
    clients: Arc<UpstreamClients>,
    /// After MONITOR: the agent whose connections' lines are relayed.
    monitor: Option<Arc<str>>,
    /// The session must end once `out` is written (the login after a RESET failed).
    closing: bool,
    /// A reply came that fits no command sent (see `fits`): tollgate's pairing of replies with
    /// commands can no longer be trusted, so nothing more is relayed and the session ends.
    desynced: bool,
    /// The agent's `max_result_bytes`, published by the command side.
    pub(super) reply_cap: Arc<ReplyCap>,
    /// The reply being read is over the cap: dropped as it arrives, refused when it ends.
    discarding: bool,
    /// The session's own connection, reached at its `Switch` entry, not yet read from.
    switched: Option<UpstreamReader<NetRead>>,
    /// A reply arriving in pieces from the shared connection that must be whole to be
    /// answered (masked, or pub/sub): its pieces so far.
    assembling: Option<BytesMut>,
    /// Bytes of the reply arriving in pieces so far (for `max_result_bytes`).
    piece_bytes: u64,
    /// Writes to the client, and whether the session ended inside one.
    writes: ReplyWrites,
    /// The subscriptions judged again after a reload (set by the relay).
    pub(super) subs_recheck: Option<super::sub_recheck::SubsRecheck>,
    /// The replies a session may be owed on its own connection (shared with the command half).
    pub(super) window: Arc<super::own_window::OwnWindow>,
    /// Bytes of the reply being taken in pieces from the session's own connection (relayed
    /// while it arrives, or dropped past `max_result_bytes`), for the window.
    own_pieces: usize,
}

impl ToClient {
    pub fn new(
        ctx: Arc<SessionContext>,
        resp3: bool,
        owed: Arc<AtomicUsize>,
        clients: Arc<UpstreamClients>,
    ) -> ToClient {
        ToClient {
            clients,
            monitor: None,
            closing: false,
            desynced: false,
            reply_cap: Arc::default(),
            discarding: false,
            switched: None,
            assembling: None,
            piece_bytes: 0,
            writes: ctx.reply_writes(),
            subs_recheck: None,
            window: Arc::default(),
            own_pieces: 0,
            ctx,
            resp3,
            pending: VecDeque::new(),
            exec_plans: Vec::new(),
            subs: Subscriptions::default(),
            out: BytesMut::new(),
            streaming: None,
            owed,
            done: 0,
        }
    }

    /// The tickets of commands whose replies never came (the session is ending).
    pub fn abandon(&mut self) -> impl Iterator<Item = Ticket> + '_ {
        self.pending.drain(..).filter_map(|e| e.ticket)
    }

    /// Whether the client may have been sent part of a reply: the session ended inside a
    /// write to it, or a reply is being relayed in pieces. No error line can follow then (it
    /// would read as part of the reply); only the close.
    pub fn mid_reply(&self) -> bool {
        self.writes.inside() || self.streaming.is_some()
    }

    /// Writes what was produced for the client.
    async fn write<W: AsyncWrite + Unpin>(&mut self, wr: &mut W) -> Result<(), RelayError> {
        self.writes
            .write_all(wr, &self.out)
            .await
            .map_err(RelayError::Client)
    }

    pub async fn run<W: AsyncWrite + Unpin>(
        &mut self,
        mut source: Source,
        wr: &mut W,
        rx: &mut mpsc::Receiver<Vec<Entry>>,
    ) -> Result<(), RelayError> {
        // The command half is gone (the client stopped sending): the replies owed are still
        // relayed, then the session ends, as Redis answers what it read before a client's EOF.
        let mut commands_open = true;
        loop {
            while let Ok(batch) = rx.try_recv() {
                self.pending.extend(batch);
            }
            if self.locals() || (!commands_open && self.pending.is_empty()) {
                self.write(wr).await?;
                return Ok(());
            }
            if let Some(own) = self.switched.take() {
                source = Source::Own(own);
            }
            let done = match &mut source {
                Source::Own(up) => self.answer_own(up)?,
                Source::Shared(inbox) => self.answer_shared(inbox, rx)?,
            };
            if done {
                self.write(wr).await?;
                return Ok(());
            }
            if !self.out.is_empty() {
                self.write(wr).await?;
                self.out.clear();
                if self.out.capacity() > 1 << 20 {
                    self.out = BytesMut::new();
                }
            }
            self.owed
                .fetch_sub(std::mem::take(&mut self.done), Ordering::SeqCst);
            self.window.freed();
            if self.switched.is_some() {
                continue;
            }
            if !commands_open && self.pending.is_empty() {
                return Ok(());
            }
            tokio::select! {
                e = rx.recv(), if commands_open => match e {
                    Some(batch) => self.pending.extend(batch),
                    None => commands_open = false,
                },
                r = source.more() => r?,
            }
        }
    }

    /// Answers what the session's own connection has sent; true when the session closes now.
    fn answer_own(&mut self, up: &mut UpstreamReader<NetRead>) -> Result<bool, RelayError> {
        while let Some(frame) = up.next_frame()? {
            // The end of a reply taken in pieces: the pieces count too.
            let whole = std::mem::take(&mut self.own_pieces) + frame.len();
            self.window.saw_reply(whole);
            if self.on_frame(frame) {
                return self.ending();
            }
        }
        // A large reply still arriving: relay what was scanned instead of holding it all,
        // or, past the agent's `max_result_bytes`, drop it (it is refused when it ends).
        let waiting = up.buffered();
        self.window.saw_reply(self.own_pieces + waiting.len());
        let cap = self.reply_cap.get();
        if let Some(&first) = waiting.first() {
            if self.discarding
                || (cap.is_some_and(|c| waiting.len() as u64 > c) && self.may_cap(waiting))
            {
                self.discarding = true;
                self.own_pieces += up.take_scanned().len();
            } else if cap.is_none()
                && (self.streaming.is_some() || waiting.len() >= STREAM_AFTER)
                && self.may_stream(waiting)
            {
                let head = up.take_scanned();
                self.own_pieces += head.len();
                if !head.is_empty() {
                    self.streaming.get_or_insert(first);
                    self.out.extend_from_slice(&head);
                }
            }
        }
        Ok(false)
    }

    /// Answers the frames the shared connection delivered; true when the session closes now.
    fn answer_shared(
        &mut self,
        inbox: &super::shared::Inbox,
        rx: &mut mpsc::Receiver<Vec<Entry>>,
    ) -> Result<bool, RelayError> {
        match inbox.take() {
            Taken::Frames(pieces) => {
                // Every piece taken answers an entry sent before its command was: all of them
                // are in the channel now, and tollgate's own replies before them go first.
                while let Ok(batch) = rx.try_recv() {
                    self.pending.extend(batch);
                }
                if self.locals() {
                    return Ok(true);
                }
                for piece in pieces {
                    if self.switched.is_some() {
                        // Everything sent on the shared connection was answered before the
                        // switch: a reply after it cannot be paired.
                        return Err(super::shared::Closed.into());
                    }
                    let frame = match piece {
                        Piece::Whole(frame) => frame,
                        Piece::Head(head) => {
                            self.head(head);
                            continue;
                        }
                        Piece::Tail(tail) => self.tail(tail),
                    };
                    if self.on_frame(frame) {
                        return self.ending();
                    }
                }
                Ok(false)
            }
            Taken::Nothing => Ok(false),
            // Until the switch entry, replies can only come from the shared connection.
            // Whether an error line can still say it: `mid_reply`.
            Taken::Closed if self.switched.is_none() && inbox.was_cut_off() => {
                Err(RelayError::Unread)
            }
            Taken::Closed if self.switched.is_none() && inbox.owes() => {
                Err(super::shared::Closed.into())
            }
            // Nothing owed there: see `Source::more`.
            Taken::Closed => Ok(false),
        }
    }

    /// A piece of a large reply still arriving on the shared connection: relayed at once,
    /// dropped past `max_result_bytes`, or kept until the reply is whole, by the same rules as
    /// a reply arriving on the session's own connection.
    fn head(&mut self, head: Bytes) {
        let first = self.piece_bytes == 0;
        self.piece_bytes += head.len() as u64;
        let cap = self.reply_cap.get();
        if self.discarding {
            return;
        }
        if self.streaming.is_some() {
            self.out.extend_from_slice(&head);
            return;
        }
        if let Some(buf) = &mut self.assembling {
            buf.extend_from_slice(&head);
        } else if first && cap.is_none() && self.may_stream(&head) {
            self.streaming = head.first().copied();
            self.out.extend_from_slice(&head);
            return;
        } else {
            self.assembling = Some(BytesMut::from(&head[..]));
        }
        let over = cap.is_some_and(|c| self.piece_bytes > c);
        if over {
            let whole = self.assembling.as_deref().unwrap_or_default();
            if self.may_cap(whole) {
                self.assembling = None;
                self.discarding = true;
            }
        }
    }

    /// The tail that completes a reply that came in pieces: what `frame` is given (the tail
    /// alone when the head was relayed or dropped, the whole reply when it was kept).
    fn tail(&mut self, tail: Bytes) -> Bytes {
        self.piece_bytes = 0;
        match self.assembling.take() {
            Some(mut whole) => {
                whole.extend_from_slice(&tail);
                whole.freeze()
            }
            None => tail,
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
                Kind::Switch(_) => {
                    if let Some(Entry {
                        kind: Kind::Switch(own),
                        ..
                    }) = self.pending.pop_front()
                    {
                        self.switched = Some(own.0);
                    }
                    self.done += 1;
                }
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
            && self.subs.is_empty()
            && matches!(self.pending.front().map(|e| &e.kind), Some(Kind::Reply(p)) if p.is_none())
    }

    /// Whether the incomplete reply at the front of `buf` answers a command whose reply
    /// `max_result_bytes` caps: a reply or EXEC's, not a pub/sub message, a push or MONITOR's
    /// lines.
    fn may_cap(&self, buf: &[u8]) -> bool {
        buf.first().is_some_and(|b| *b != b'>')
            && self.subs.is_empty()
            && self.monitor.is_none()
            && matches!(
                self.pending.front().map(|e| &e.kind),
                Some(Kind::Reply(_) | Kind::Exec)
            )
    }

    /// The reply owed to `entry` is over the cap: the refusal in its place.
    fn refuse_over_cap(&mut self, entry: Entry) {
        if matches!(entry.kind, Kind::Exec) {
            self.exec_plans.clear();
        }
        self.out.extend_from_slice(&self.reply_cap.refusal());
        self.outcome(
            entry.ticket,
            Some("reply larger than max_result_bytes, not returned".into()),
        );
    }

    fn outcome(&self, ticket: Option<Ticket>, error: Option<String>) {
        if let Some(t) = ticket {
            let error = error.map(|message| OutcomeError {
                code: None,
                message,
            });
            self.ctx.outcome(t, None, error);
        }
    }

    /// One complete reply frame, then tollgate's own replies that were waiting behind it; true
    /// when the session closes now.
    pub(super) fn on_frame(&mut self, frame: Bytes) -> bool {
        self.frame(frame);
        self.closing || self.desynced || self.locals()
    }

    /// A blocking command's reply that came after a reload: the command judged again under the
    /// current policy (and the session's agent), the refusal if it is no longer allowed. The
    /// re-review removed an agent while its `BLPOP ... 0` waited and was handed what another
    /// client pushed after the reload.
    fn blocked_too_long(&mut self, args: &[Bytes], version: u64, error: bool) -> Option<Refusal> {
        let engine = &self.ctx.core().policy;
        if error || engine.version() == version {
            return None;
        }
        let check = self.subs_recheck.as_mut()?;
        let refusal = check.judge_now(engine, args)?;
        Some(Refusal::new(
            refusal.class,
            refusal.rule.clone(),
            format!(
                "the policy changed while this command waited and no longer allows it ({}); its reply is not shown",
                refusal.message()
            ),
        ))
    }

    /// At a message after a reload: a subscription the current policy no longer allows, as a
    /// refusal that ends the session (recorded).
    fn subscription_withdrawn(&mut self) -> Option<Refusal> {
        let check = self.subs_recheck.as_mut()?;
        let refusal = check.stale(&self.ctx.core().policy, &self.subs)?;
        let refusal = Refusal::new(
            refusal.class,
            refusal.rule.clone(),
            format!(
                "the policy changed and no longer allows a subscription (or the MONITOR or CLIENT TRACKING) of this session ({}); session closed",
                refusal.message()
            ),
        );
        warn!(agent = %check.current_agent(), "{}", refusal.message());
        self.ctx.closed_by_policy(check.current_agent(), &refusal);
        Some(refusal)
    }

    /// How the session ends once `on_frame` said it does: after writing what is in `out`, or,
    /// when the replies no longer pair with the commands, with nothing more relayed.
    fn ending(&self) -> Result<bool, RelayError> {
        if self.desynced {
            return Err(RelayError::Desync);
        }
        Ok(true)
    }

    /// `frame` fits no command sent: nothing more is relayed (what this read produced included:
    /// it was paired by the same reckoning), the record says why, and the session ends. The
    /// frame's content is not logged (it is data).
    fn desync(&mut self, ticket: Option<Ticket>, what: &str, frame: &[u8]) {
        let kind = frame.first().map(|b| char::from(*b)).unwrap_or(' ');
        warn!(
            expected = what,
            reply_type = %kind,
            "the upstream's reply fits no command sent; session closed"
        );
        metrics::counter!("tollgate_redis_desync_total").increment(1);
        self.outcome(
            ticket,
            Some("the upstream's reply did not fit the command; session closed".into()),
        );
        self.out.clear();
        self.desynced = true;
    }

    fn frame(&mut self, frame: Bytes) {
        if let Some(first) = self.streaming.take() {
            // The tail of a streamed reply (`may_stream` checked its entry).
            self.out.extend_from_slice(&frame);
            if let Some(entry) = self.pending.pop_front() {
                self.done += 1;
                let error = matches!(first, b'-' | b'!').then(|| "error reply".to_string());
                self.outcome(entry.ticket, error);
            }
            return;
        }
        if self.discarding {
            // The end of a reply over the cap (`may_cap` checked its entry).
            self.discarding = false;
            if let Some(entry) = self.pending.pop_front() {
                self.done += 1;
                self.refuse_over_cap(entry);
            }
            return;
        }
        if self.monitor.is_some() && own::is_monitor_line(&frame) {
            if let Some(refusal) = self.subscription_withdrawn() {
                // Not relayed: the session ends, saying why (MONITOR judged again).
                self.out.extend_from_slice(&reply::refusal(&refusal));
                self.closing = true;
                return;
            }
        }
        if let Some(agent) = &self.monitor {
            if own::is_monitor_line(&frame) {
                let addr = own::monitor_addr(&frame).unwrap_or("");
                if self.clients.addrs_of(agent).contains(addr) {
                    self.out.extend_from_slice(&frame);
                }
                return;
            }
        }
        let expecting = matches!(
            self.pending.front().map(|e| &e.kind),
            Some(Kind::Subscribe { .. })
        );
        match self.subs.classify(&frame, self.resp3, expecting) {
            PubSubFrame::Confirmation { kind, add, name } => {
                self.confirmation(kind, add, name);
                self.out.extend_from_slice(&frame);
                return;
            }
            PubSubFrame::OutOfBand => {
                if let Some(refusal) = self.subscription_withdrawn() {
                    // Not relayed: the session ends, saying why.
                    self.out.extend_from_slice(&reply::refusal(&refusal));
                    self.closing = true;
                    return;
                }
                self.out.extend_from_slice(&frame);
                return;
            }
            PubSubFrame::Reply => {}
        }
        if self.kill_part(&frame) {
            return;
        }
        let Some(entry) = self.pending.pop_front() else {
            // Nothing is owed, and it is no message, push or MONITOR line (those were relayed
            // above): a reply no command is waiting for. Relaying it would hand the client a
            // reply in the place of its next command's, unmasked.
            self.desync(None, "no reply", &frame);
            return;
        };
        self.done += 1;
        if let Some(what) = misfit(&entry.kind, &frame, self.exec_plans.len(), self.resp3) {
            self.desync(entry.ticket, what, &frame);
            return;
        }
        let over_cap = matches!(
            entry.kind,
            Kind::Reply(_) | Kind::Blocking { .. } | Kind::Exec
        ) && self.reply_cap.get().is_some_and(|c| frame.len() as u64 > c);
        if over_cap {
            self.refuse_over_cap(entry);
            return;
        }
        let is_error = matches!(frame.first(), Some(b'-' | b'!'));
        if matches!(&entry.kind, Kind::Reply(plan) if plan.is_none()) {
            // The common case: relayed as it came, without another handle on the frame.
            self.out.extend_from_slice(&frame);
            self.outcome(entry.ticket, is_error.then(|| error_text(&frame)));
            return;
        }
        let shown = match entry.kind {
            Kind::Reply(ref plan) => self.masked(&frame, plan),
            Kind::Blocking {
                ref plan,
                ref args,
                version,
            } => match self.blocked_too_long(args, version, is_error) {
                Some(refusal) => {
                    let shown = reply::refusal(&refusal);
                    self.out.extend_from_slice(&shown);
                    self.outcome(entry.ticket, Some(refusal.message()));
                    return;
                }
                None => self.masked(&frame, plan),
            },
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
            Kind::ExecAbort(abort) => {
                self.exec_plans.clear();
                Bytes::from_static(abort)
            }
            Kind::Discard => {
                self.exec_plans.clear();
                frame.clone()
            }
            Kind::Hello(p) => {
                // `misfit` let only HELLO's own reply (a map or array) or an error through.
                if !is_error {
                    if let Some(p) = p {
                        self.resp3 = p == 3;
                    }
                }
                frame.clone()
            }
            Kind::Reset => {
                if !is_error {
                    self.resp3 = false;
                    self.subs = Subscriptions::default();
                    self.exec_plans.clear();
                    self.monitor = None;
                }
                frame.clone()
            }
            Kind::Relogin => {
                if is_error {
                    warn!("the upstream refused tollgate's login after RESET; ending the session");
                    self.out.extend_from_slice(&reply::error(
                        "ERR",
                        "tollgate: the upstream refused tollgate's login after RESET",
                    ));
                    self.closing = true;
                }
                return;
            }
            Kind::Own { filter, ref agent } => self.own_reply(&frame, filter, agent),
            Kind::Subscribe { .. }
            | Kind::Local(_)
            | Kind::Close
            | Kind::KillParts { .. }
            | Kind::Switch(_) => frame.clone(),
        };
        self.out.extend_from_slice(&shown);
        self.outcome(entry.ticket, is_error.then(|| error_text(&frame)));
    }

    /// One reply of a CLIENT KILL sent in parts: summed; the sum is written after the last.
    /// Returns whether `frame` was such a reply.
    fn kill_part(&mut self, frame: &Bytes) -> bool {
        let Some(Entry {
            kind:
                Kind::KillParts {
                    left,
                    killed,
                    error,
                    ..
                },
            ..
        }) = self.pending.front_mut()
        else {
            return false;
        };
        match own::kill_part(frame) {
            Ok(n) => *killed += n,
            Err(()) => {
                error.get_or_insert_with(|| frame.clone());
            }
        }
        *left = left.saturating_sub(1);
        if *left > 0 {
            return true;
        }
        let entry = self.pending.pop_front().expect("front exists");
        self.done += 1;
        if let Kind::KillParts {
            killed,
            old_style,
            error,
            ..
        } = entry.kind
        {
            let reply = own::kill_reply(killed, old_style, error);
            let failed = matches!(reply.first(), Some(b'-'));
            self.out.extend_from_slice(&reply);
            self.outcome(entry.ticket, failed.then(|| error_text(&reply)));
        }
        true
    }

    /// A reply kept to `agent`'s own connections.
    fn own_reply(&mut self, frame: &Bytes, filter: OwnFilter, agent: &Arc<str>) -> Bytes {
        let withheld = |e: own::FilterError| {
            warn!(error = %e, "filtering failed; reply withheld");
            reply::error("ERR", "tollgate: the reply could not be filtered")
        };
        match filter {
            OwnFilter::ClientList => own::client_list(frame, |id| self.clients.is_own(id, agent)),
            OwnFilter::SlowlogGet(n) => {
                own::slowlog(frame, &self.clients.addrs_of(agent), n, self.resp3)
                    .unwrap_or_else(withheld)
            }
            OwnFilter::SlowlogLen => {
                own::slowlog_len(frame, &self.clients.addrs_of(agent), self.resp3)
                    .unwrap_or_else(withheld)
            }
            OwnFilter::Monitor => {
                if frame.starts_with(b"+OK") {
                    self.monitor = Some(agent.clone());
                }
                frame.clone()
            }
        }
    }

    fn masked(&self, frame: &Bytes, plan: &MaskPlan) -> Bytes {
        mask_reply::mask(frame, plan, self.resp3).unwrap_or_else(|e| {
            warn!(error = %e, "masking failed; reply withheld");
            reply::error("ERR", "tollgate: the reply could not be masked")
        })
    }

    /// A (un)subscribe confirmation: one per channel named, or per subscription left when the
    /// command named none.
    fn confirmation(&mut self, kind: SubKind, add: bool, name: Bytes) {
        let before = self.subs.apply(kind, add, name);
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
            self.outcome(e.ticket, None);
        }
    }

    /// Test access: what has been produced for the client so far.
    #[cfg(test)]
    pub(super) fn take_out(&mut self) -> Bytes {
        self.locals();
        self.out.split().freeze()
    }

    #[cfg(test)]
    pub(super) fn push(&mut self, e: Entry) {
        self.pending.push_back(e);
    }

    #[cfg(test)]
    pub(super) fn owed_entries(&self) -> usize {
        self.pending.len()
    }
}

/// Why `frame` cannot be the reply to a command of `kind` (`None`: it can). Only what every
/// such reply must look like is checked; `queued`: how many commands the open transaction
/// has queued (EXEC's array has one element per queued command); `resp3`: the session's
/// protocol.
fn misfit(kind: &Kind, frame: &[u8], queued: usize, resp3: bool) -> Option<&'static str> {
    let first = frame.first().copied().unwrap_or(0);
    let error = matches!(first, b'-' | b'!');
    let queued_reply = frame.starts_with(b"+QUEUED\r\n");
    let fits = match kind {
        // Queued in MULTI: Redis answers +QUEUED or rejects it.
        Kind::Queued(_) => error || queued_reply,
        // One element per queued command, a null (WATCH aborted it) or an error.
        Kind::Exec => {
            error
                || first == b'_'
                || mask_reply::exec_len(frame)
                    .is_some_and(|n| n < 0 || usize::try_from(n) == Ok(queued))
        }
        Kind::ExecAbort(_) | Kind::Discard => error || frame.starts_with(b"+OK\r\n"),
        Kind::Hello(_) => error || matches!(first, b'*' | b'%'),
        // tollgate reset its own view of the connection when it sent RESET: an upstream that
        // refused it is somewhere tollgate does not know.
        Kind::Reset => frame.starts_with(b"+RESET\r\n"),
        Kind::Relogin => error || frame.starts_with(b"+OK\r\n"),
        // Confirmations were taken before (`confirmation`): anything else but an error is not
        // an (un)subscribe's reply.
        Kind::Subscribe { .. } => error,
        // +QUEUED: the upstream is inside a transaction tollgate does not know of; an
        // (un)subscribe confirmation (RESP2): subscriptions tollgate does not know of (an
        // UNSUBSCRIBE without arguments answered for more channels than it counted). No
        // command replies either; a script returning one ends the session too.
        Kind::Reply(_) | Kind::Blocking { .. } | Kind::Own { .. } => {
            !queued_reply && (resp3 || !pubsub::looks_like_confirmation(frame))
        }
        Kind::Local(_) | Kind::Close | Kind::KillParts { .. } | Kind::Switch(_) => true,
    };
    (!fits).then_some(match kind {
        Kind::Queued(_) => "+QUEUED",
        Kind::Exec => "EXEC's array, one element per queued command",
        Kind::ExecAbort(_) | Kind::Discard => "+OK",
        Kind::Hello(_) => "HELLO's reply",
        Kind::Reset => "+RESET",
        Kind::Relogin => "+OK to tollgate's login",
        Kind::Subscribe { .. } => "a pub/sub confirmation",
        _ => "a command's reply, not +QUEUED",
    })
}

fn error_text(frame: &[u8]) -> String {
    let s = String::from_utf8_lossy(frame);
    s.trim_start_matches(['-', '!'])
        .trim_end()
        .chars()
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests;
