//! One session's mailbox on a shared upstream connection: the connection's reader drops the
//! session's reply frames here (in order), the session's reply half takes them. It also counts
//! the replies still owed, so the command half can wait until the upstream has run everything
//! it sent before moving the session to a connection of its own.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use tokio::sync::Notify;

/// Replies queued for a session beyond this many bytes stop its command half from reading
/// more commands: a client that pipelines without reading costs the gateway this much memory,
/// not a growing queue.
pub const QUEUED_BYTES_LIMIT: usize = 4 << 20;

/// A session with more than this queued (a client that does not read a large reply it asked
/// for, which the shared connection cannot hold back for the others) is cut off: what was
/// queued for it is dropped at once, and the relay ends the session without waiting for the
/// client to read.
pub const QUEUED_BYTES_HARD_LIMIT: usize = 64 << 20;

/// Replies queued for all sessions of one upstream's shared connections beyond this many bytes:
/// sessions queuing more than `QUEUED_BYTES_LIMIT` are cut off as if they had reached the hard
/// limit, the largest of the agent holding the most first, until the total is back within.
/// Without it each session that stops reading holds up to the hard limit, and an agent opening
/// many (a review: 8 sessions, 92 MB → 718 MB) takes the gateway's memory. Cutting the session
/// that happened to receive the reply that went over instead let one agent's unread sessions
/// get another agent's session cut (a later review: a trusted client waiting 2 s before reading
/// 32 MB lost all of it to five writer sessions holding 229 MiB).
pub const QUEUED_BYTES_TOTAL_LIMIT: usize = 256 << 20;

/// A reply at least this large marks its session heavy (`Inbox::heavy`): its next commands go
/// to a connection of its own. A shared connection delivers replies in order, so every large
/// reply it carries delays the other sessions' replies behind it (a review measured up to
/// 0.5 s); a session that asks for large values pays that on its own connection instead.
pub const HEAVY_REPLY_BYTES: usize = 256 * 1024;

/// Bytes queued in the inboxes of one upstream's shared connections, and those inboxes.
#[derive(Debug)]
pub struct Budget {
    queued: AtomicUsize,
    limit: usize,
    /// Every inbox counted here (dead ones pruned now and then), for choosing whom to cut.
    holders: Mutex<Holders>,
    /// Inboxes holding more than `QUEUED_BYTES_LIMIT`: only then is there anyone to cut (the
    /// scan of every inbox is not run at each delivery while the total is over).
    over_soft: AtomicUsize,
}

#[derive(Debug, Default)]
struct Holders {
    list: Vec<Weak<Inbox>>,
    /// How many were left at the last pruning: the next one comes when the list has doubled.
    pruned: usize,
}

impl Budget {
    pub fn new(limit: usize) -> Budget {
        Budget {
            queued: AtomicUsize::new(0),
            limit,
            holders: Mutex::default(),
            over_soft: AtomicUsize::new(0),
        }
    }

    /// Bytes queued now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    fn register(&self, inbox: &Arc<Inbox>) {
        let mut h = self.holders.lock().expect("budget holders");
        // Amortised: sessions come and go by the thousand.
        if h.list.len() >= 2 * h.pruned.max(32) {
            h.list.retain(|w| w.strong_count() > 0);
            h.pruned = h.list.len();
        }
        h.list.push(Arc::downgrade(inbox));
    }

    /// An inbox holding `held` bytes queues `added` more: the upstream's new total.
    fn take_on(&self, held: usize, added: usize) -> usize {
        self.resized(held, held + added);
        self.queued.fetch_add(added, Ordering::Relaxed) + added
    }

    /// An inbox gives back all it held (`held` bytes: taken, cut off or dropped).
    fn give_back(&self, held: usize) {
        self.queued.fetch_sub(held, Ordering::Relaxed);
        self.resized(held, 0);
    }

    /// An inbox's queued bytes went from `before` to `after`.
    fn resized(&self, before: usize, after: usize) {
        match (before > QUEUED_BYTES_LIMIT, after > QUEUED_BYTES_LIMIT) {
            (false, true) => self.over_soft.fetch_add(1, Ordering::Relaxed),
            (true, false) => self.over_soft.fetch_sub(1, Ordering::Relaxed),
            _ => return,
        };
    }

    /// Over the total: cuts sessions holding more than `QUEUED_BYTES_LIMIT`, the largest of
    /// the agent holding the most first, until the total is within or no such session is left.
    /// Returns how many were cut.
    fn relieve(&self) -> usize {
        let mut cut = 0;
        while self.queued() > self.limit && self.over_soft.load(Ordering::Relaxed) > 0 {
            // Its client may have taken its replies since it was chosen: then nothing is cut
            // now, and the next delivery over the total looks again.
            match self.heaviest() {
                Some(victim) if victim.cut_over(QUEUED_BYTES_LIMIT) => cut += 1,
                _ => break,
            }
        }
        cut
    }

    /// The session to cut: the largest one past the soft limit of the agent whose sessions
    /// hold the most in all.
    fn heaviest(&self) -> Option<Arc<Inbox>> {
        let live: Vec<(Arc<Inbox>, usize)> = self
            .holders
            .lock()
            .expect("budget holders")
            .list
            .iter()
            .filter_map(Weak::upgrade)
            .map(|i| {
                let bytes = i.queued();
                (i, bytes)
            })
            .collect();
        let mut by_agent: std::collections::HashMap<&str, usize> = Default::default();
        for (i, bytes) in &live {
            *by_agent.entry(&i.agent).or_default() += bytes;
        }
        live.iter()
            .filter(|(_, bytes)| *bytes > QUEUED_BYTES_LIMIT)
            .max_by_key(|(i, bytes)| (by_agent[&*i.agent], *bytes))
            .map(|(i, _)| i.clone())
    }
}

/// What the shared connection delivers: a whole reply frame, or the pieces of a large one
/// relayed while it still arrives (a head, more heads, and the tail that completes it).
#[derive(Debug)]
pub enum Piece {
    Whole(Bytes),
    Head(Bytes),
    Tail(Bytes),
}

impl Piece {
    fn len(&self) -> usize {
        match self {
            Piece::Whole(b) | Piece::Head(b) | Piece::Tail(b) => b.len(),
        }
    }

    /// Whether the piece ends a reply (and so pays one owed reply).
    pub fn ends(&self) -> bool {
        !matches!(self, Piece::Head(_))
    }
}

#[derive(Debug)]
pub struct Inbox {
    /// Whose session it is: over the budget, the agent holding the most is cut first.
    agent: Arc<str>,
    frames: Mutex<Frames>,
    /// Shared with the other sessions of the upstream's shared connections.
    budget: Arc<Budget>,
    /// Replies the shared connection still owes this session.
    in_flight: AtomicUsize,
    /// Wakes the reply half: frames arrived, or the connection closed.
    to_replies: Notify,
    /// Wakes the command half: replies arrived (fewer owed), queued bytes were taken, or the
    /// connection closed.
    to_commands: Notify,
    /// Wakes the relay when the session is cut off (its reply half may be stuck in a write to
    /// a client that does not read, and must not be waited for).
    cut: Notify,
    /// A reply of at least `HEAVY_REPLY_BYTES` came for this session.
    heavy: AtomicBool,
}

#[derive(Debug, Default)]
struct Frames {
    queue: VecDeque<Piece>,
    bytes: usize,
    /// The shared connection is gone: no frame will come any more.
    closed: bool,
    /// Closed because the client left more than `QUEUED_BYTES_HARD_LIMIT` unread.
    cut_off: bool,
}

/// What the reply half found.
pub enum Taken {
    Frames(VecDeque<Piece>),
    Nothing,
    /// The connection closed and every frame it delivered was taken.
    Closed,
}

impl Default for Inbox {
    /// An inbox with a budget of its own (tests).
    fn default() -> Inbox {
        Inbox::new(
            Arc::new(Budget::new(QUEUED_BYTES_TOTAL_LIMIT)),
            "agent".into(),
        )
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let f = self.frames.get_mut().unwrap_or_else(|e| e.into_inner());
        self.budget.give_back(f.bytes);
    }
}

impl Inbox {
    /// `agent`'s session's inbox, whose queued bytes count against `budget`.
    pub fn within(budget: Arc<Budget>, agent: Arc<str>) -> Arc<Inbox> {
        let inbox = Arc::new(Inbox::new(budget, agent));
        inbox.budget.register(&inbox);
        inbox
    }

    fn new(budget: Arc<Budget>, agent: Arc<str>) -> Inbox {
        Inbox {
            agent,
            frames: Mutex::default(),
            budget,
            in_flight: AtomicUsize::default(),
            to_replies: Notify::default(),
            to_commands: Notify::default(),
            cut: Notify::default(),
            heavy: AtomicBool::new(false),
        }
    }

    /// `n` more replies are owed (called before the commands are queued for writing).
    pub fn expect(&self, n: usize) {
        self.in_flight.fetch_add(n, Ordering::SeqCst);
    }

    /// The connection's reader delivers pieces, in the order of the commands. Returns how
    /// many sessions were cut off for it: this one when it has more queued than
    /// `QUEUED_BYTES_HARD_LIMIT`, and, when the upstream's total is over
    /// `QUEUED_BYTES_TOTAL_LIMIT`, the largest past the soft limit of the agent holding the
    /// most (`Budget::relieve`), which may be this one or others. A session cut off is closed,
    /// what was queued for it is dropped (freed now, not when a client that does not read gets
    /// to it), and what still comes for it is dropped too.
    pub fn deliver(&self, pieces: impl IntoIterator<Item = Piece>) -> usize {
        let mut ended = 0;
        let (over_hard, over_total) = {
            let mut f = self.frames.lock().expect("inbox lock");
            let mut added = 0;
            for piece in pieces {
                ended += usize::from(piece.ends());
                // A reply relayed in pieces is at least the connection's streaming threshold.
                if matches!(piece, Piece::Head(_)) || piece.len() >= HEAVY_REPLY_BYTES {
                    self.heavy.store(true, Ordering::Relaxed);
                }
                if f.closed {
                    continue;
                }
                added += piece.len();
                f.queue.push_back(piece);
            }
            let total = self.budget.take_on(f.bytes, added);
            f.bytes += added;
            (f.bytes > QUEUED_BYTES_HARD_LIMIT, total > self.budget.limit)
        };
        let mut cut = usize::from(over_hard && self.cut_over(QUEUED_BYTES_HARD_LIMIT));
        if over_total {
            cut += self.budget.relieve();
        }
        self.to_replies.notify_one();
        if ended > 0 {
            self.in_flight.fetch_sub(ended, Ordering::SeqCst);
        }
        // The command half may wait for fewer replies owed (`settled`, `has_room`).
        self.to_commands.notify_one();
        cut
    }

    /// Bytes queued for the client now.
    fn queued(&self) -> usize {
        self.frames.lock().expect("inbox lock").bytes
    }

    /// Cuts the session off (see `deliver`) if it holds more than `over` bytes; false if it
    /// does not (any more), or was cut off already. A session whose connection closed is cut
    /// off too: what it still holds is dropped.
    fn cut_over(&self, over: usize) -> bool {
        let dropped = {
            let mut f = self.frames.lock().expect("inbox lock");
            if f.cut_off || f.bytes <= over {
                return false;
            }
            f.closed = true;
            f.cut_off = true;
            self.budget.give_back(f.bytes);
            f.bytes = 0;
            std::mem::take(&mut f.queue)
        };
        // Freed outside the lock.
        drop(dropped);
        self.cut.notify_waiters();
        self.to_replies.notify_one();
        self.to_commands.notify_one();
        true
    }

    /// The connection is gone: the reply half ends the session once it has taken what came.
    pub fn close(&self) {
        self.frames.lock().expect("inbox lock").closed = true;
        self.to_replies.notify_one();
        self.to_commands.notify_one();
    }

    /// Everything delivered so far.
    pub fn take(&self) -> Taken {
        let mut f = self.frames.lock().expect("inbox lock");
        if f.queue.is_empty() {
            return if f.closed {
                Taken::Closed
            } else {
                Taken::Nothing
            };
        }
        let was_full = f.bytes > QUEUED_BYTES_LIMIT;
        self.budget.give_back(f.bytes);
        f.bytes = 0;
        let queue = std::mem::take(&mut f.queue);
        drop(f);
        if was_full {
            self.to_commands.notify_one();
        }
        Taken::Frames(queue)
    }

    /// Waits for frames (or the close); only the session's reply half waits here.
    pub async fn arrived(&self) {
        self.to_replies.notified().await
    }

    /// Waits until the upstream has answered everything sent (or the connection closed).
    /// Only the session's command half waits here.
    pub async fn settled(&self) {
        while self.owes() && !self.is_closed() {
            self.to_commands.notified().await;
        }
    }

    /// Waits while more than `QUEUED_BYTES_LIMIT` bytes of replies wait for the client, or
    /// more than `max_owed` replies are owed (a slow upstream holds the session back, as its
    /// own connection's socket would).
    pub async fn has_room(&self, max_owed: usize) {
        loop {
            {
                let f = self.frames.lock().expect("inbox lock");
                let owed = self.in_flight.load(Ordering::SeqCst);
                if f.closed || (f.bytes <= QUEUED_BYTES_LIMIT && owed <= max_owed) {
                    return;
                }
            }
            self.to_commands.notified().await;
        }
    }

    /// Whether a reply of at least `HEAVY_REPLY_BYTES` came for this session: it should leave
    /// the shared connection.
    pub fn heavy(&self) -> bool {
        self.heavy.load(Ordering::Relaxed)
    }

    /// How many replies are owed.
    pub fn owed(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Whether replies are still owed (a closed connection will never send them).
    pub fn owes(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) > 0
    }

    pub fn is_closed(&self) -> bool {
        self.frames.lock().expect("inbox lock").closed
    }

    /// Whether the session was cut off for not reading its replies.
    pub fn was_cut_off(&self) -> bool {
        self.frames.lock().expect("inbox lock").cut_off
    }

    /// Waits until the session is cut off for not reading its replies (forever if it never
    /// is). Only the relay waits here.
    pub async fn cut_off(&self) {
        loop {
            let cut = self.cut.notified();
            tokio::pin!(cut);
            // Registered before the check: a cut-off between the two still wakes it.
            cut.as_mut().enable();
            if self.was_cut_off() {
                return;
            }
            cut.await;
        }
    }
}

#[cfg(test)]
mod budget_tests {
    use super::*;

    const MIB: usize = 1 << 20;

    fn deliver(inbox: &Inbox, mib: usize) -> usize {
        let piece = Bytes::from(vec![0u8; MIB]);
        inbox.expect(mib);
        inbox.deliver((0..mib).map(|_| Piece::Whole(piece.clone())))
    }

    #[test]
    fn sessions_past_the_soft_limit_are_cut_once_the_upstream_total_is_over() {
        let budget = Arc::new(Budget::new(20 * MIB));
        let (a, b, c) = (
            Inbox::within(budget.clone(), "a".into()),
            Inbox::within(budget.clone(), "b".into()),
            Inbox::within(budget.clone(), "c".into()),
        );
        assert_eq!(deliver(&b, 8) + deliver(&c, 12), 0, "within the total");
        assert_eq!(budget.queued(), 20 * MIB);
        // Over the total, the largest session past the soft limit (of the agent holding the
        // most) is cut, whoever received the reply that went over; what it held is given back.
        assert_eq!(deliver(&a, 1), 1);
        assert!(c.was_cut_off() && !a.was_cut_off() && !b.was_cut_off());
        assert_eq!(budget.queued(), 9 * MIB);
        // Taken and dropped inboxes give their bytes back too.
        assert!(matches!(b.take(), Taken::Frames(_)));
        assert_eq!(budget.queued(), MIB);
        drop(a);
        assert_eq!(budget.queued(), 0);
    }

    /// A session whose shared connection closed still holds what came before the close: over
    /// the total it is cut like any other (once, the relief chose it for ever, freed nothing,
    /// and spun on the connection's reader).
    #[test]
    fn a_session_whose_connection_closed_can_still_be_cut() {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let budget = Arc::new(Budget::new(10 * MIB));
            let (a, b) = (
                Inbox::within(budget.clone(), "a".into()),
                Inbox::within(budget.clone(), "b".into()),
            );
            assert_eq!(deliver(&a, 8), 0);
            a.close();
            assert_eq!(deliver(&b, 5), 1);
            assert!(a.was_cut_off() && !b.was_cut_off());
            assert_eq!(budget.queued(), 5 * MIB);
            // Within the total again: nothing more is cut.
            let c = Inbox::within(budget.clone(), "c".into());
            for _ in 0..3 {
                assert_eq!(deliver(&c, 3), 0);
                assert!(matches!(c.take(), Taken::Frames(_)));
            }
            done.send(()).unwrap();
        });
        finished
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the relief finished");
    }

    /// One agent's unread sessions cannot get another agent's session cut: over the total,
    /// the agent holding the most loses its sessions first, however small each is next to the
    /// other agent's one.
    #[test]
    fn over_the_total_the_agent_holding_the_most_is_cut_first() {
        let budget = Arc::new(Budget::new(40 * MIB));
        let hogs: Vec<_> = (0..5)
            .map(|_| Inbox::within(budget.clone(), "writer".into()))
            .collect();
        let victim = Inbox::within(budget.clone(), "trusted".into());
        for h in &hogs {
            assert_eq!(deliver(h, 7), 0);
        }
        // 35 MiB held by the writer's five; the trusted session's 12 MiB takes it over.
        assert_eq!(deliver(&victim, 12), 1);
        assert!(!victim.was_cut_off());
        assert_eq!(hogs.iter().filter(|h| h.was_cut_off()).count(), 1);
        // More for the victim (18 MiB against the writer's 28): another of the writer's.
        assert_eq!(deliver(&victim, 6), 1);
        assert!(!victim.was_cut_off());
        assert_eq!(hogs.iter().filter(|h| h.was_cut_off()).count(), 2);
        assert_eq!(budget.queued(), 39 * MIB);
        // Once the trusted agent holds the most (26 MiB against 21), its session is the one.
        assert_eq!(deliver(&victim, 8), 1);
        assert!(victim.was_cut_off());
        assert_eq!(budget.queued(), 21 * MIB);
        // Sessions that ended are no longer candidates.
        let last = Inbox::within(budget.clone(), "analyst".into());
        drop(hogs);
        assert_eq!(deliver(&last, 5), 0);
        assert!(budget.heaviest().is_some_and(|i| Arc::ptr_eq(&i, &last)));
    }
}
