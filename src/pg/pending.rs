//! What the client is waiting for, in order: one entry per forwarded message that gets a reply.
//!
//! The client-side loop pushes an entry before it forwards a message; the upstream-side loop
//! pops entries as the replies arrive. That ordering lets tollgate put its own refusals in the
//! right place of the reply stream and finish each statement's audit record with its outcome.

use super::cancel::{CancelInFlight, CancelsInFlight};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::backend::PgErrorFields;
use crate::policy::mask::PositionMap;
use crate::session::Ticket;

#[derive(Debug)]
pub enum Expect {
    /// A simple Query (or a refused FunctionCall): replies up to ReadyForQuery.
    Simple {
        ticket: Option<Ticket>,
        refusal: Option<PgErrorFields>,
        rows: u64,
        error: Option<crate::session::OutcomeError>,
        /// What each of its statements does to SQL cursors (for `max_rows` per cursor).
        cursors: super::cursor_rows::StatementCursors,
        /// Its SQL PREPAREs, confirmed one by one as the server completes them.
        prepares: super::sql_prepared::PrepareTickets,
        /// tollgate's own reply, relayed in place of the EmptyQueryResponse of the empty Query
        /// sent for it (the server's ReadyForQuery follows with the true status).
        answer: Option<bytes::Bytes>,
        /// Where the text of a masked rewrite came from: a server error's position is given
        /// back in the client's text.
        positions: Option<Box<PositionMap>>,
    },
    /// Parse → ParseComplete (or the substitute whose error becomes `refusal`). `server_name`:
    /// the name tollgate prepared it under on the server (transaction pooling), forgotten there
    /// if the Parse fails.
    Parse {
        refusal: Option<PgErrorFields>,
        server_name: Option<std::sync::Arc<str>>,
        /// A named Parse forwarded as the client's: its number (`Checked::parse_seq`),
        /// reported to the client half if the server refuses it (or skips it after an error),
        /// so the name is not the session's.
        named: Option<u64>,
        /// As for `Simple`.
        positions: Option<Box<PositionMap>>,
        /// When it was sent: a Parse can wait on a lock another session holds, and the agent's
        /// statement timeout counts from here as the server's would.
        started: Instant,
    },
    /// A message tollgate sent on its own (a Parse or Close for its statement cache): its reply
    /// is not the client's and is not relayed. A failed hidden Parse forgets `server_name`.
    Hidden {
        server_name: Option<std::sync::Arc<str>>,
        /// A Parse's: when it was sent (as for `Parse`).
        started: Option<Instant>,
    },
    /// A Describe of a shared statement tollgate sent on its own, before a Bind runs a copy it
    /// just prepared: its ParameterDescription and RowDescription (or NoData) are compared with
    /// the client's description of the statement ([`Pending::params_otherwise`],
    /// [`Pending::described_otherwise`]) and not relayed.
    HiddenDescribe {
        server_name: std::sync::Arc<str>,
        /// Its ParameterDescription differed from the client's.
        params_differ: bool,
        /// When it (and the hidden Parse before it) was sent: the agent's statement timeout
        /// counts from here, as for the statement it is checked for (a Parse can wait on a
        /// lock as long as another session holds it).
        started: Instant,
    },
    /// A reply tollgate gives itself, in its place in the order (a ParseComplete for a
    /// statement the server connection already holds, a CloseComplete).
    Synthetic(bytes::Bytes),
    /// tollgate's ParseComplete for a named Parse (numbered `Checked::parse_seq`) of a statement
    /// the server connection holds: like `Synthetic`, but if an earlier error of its batch
    /// skips it, the Parse is reported failed as a forwarded one would be, so the name does not
    /// stay the session's (a re-review: pipelined behind an error it kept the name, and a later
    /// Bind of it ran).
    SyntheticParse(u64),
    /// Bind → BindComplete; `portal` is (re)created, so its row count starts again.
    /// `statement`: the client's name for the statement where tollgate sent it under its own
    /// (transaction pooling), so a 26000 for it names the client's, as the server would.
    Bind {
        portal: String,
        statement: Option<Box<str>>,
        /// tollgate's name for the statement where it sent it under its own: a `0A000` for it
        /// (a plan gone stale after a schema change, at Bind or Describe) marks that name stale
        /// in every pool (`pool::stale_plans`).
        server_name: Option<Arc<str>>,
    },
    /// Describe → ParameterDescription/RowDescription/NoData; `statement` as for Bind.
    Describe {
        statement: Option<Box<str>>,
        server_name: Option<Arc<str>>,
    },
    Close,
    /// Execute → CommandComplete / EmptyQueryResponse / PortalSuspended. `portal` names the
    /// portal, whose rows count towards `max_rows` across the Executes that resume it.
    Execute {
        ticket: Option<Ticket>,
        portal: String,
        /// What the portal's statement does to a SQL cursor (for `max_rows` per cursor).
        cursor: Option<crate::policy::sql::cursors::CursorUse>,
        /// The SQL PREPARE the portal runs, if it is one.
        prepares: super::sql_prepared::PrepareTickets,
    },
    Sync,
    /// The client ended a COPY FROM STDIN (CopyDone/CopyFail): Syncs queued before this marker
    /// reached the server while it was in copy-in mode, which ignores them (no ReadyForQuery).
    CopyEnd,
}

/// Most replies a session may owe before tollgate stops reading from its client.
pub const MAX_PENDING: usize = 4096;

/// Most statement descriptions a session keeps ([`Pending::described`]).
const MAX_SHAPES: usize = 1024;

/// How a statement was described: hashes of its ParameterDescription and of its RowDescription
/// (or NoData).
#[derive(Debug, Clone, Copy, Default)]
struct Shape {
    params: u64,
    rows: u64,
}

fn shape(reply: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    reply.hash(&mut h);
    h.finish()
}

/// Shared between the two halves of a session.
#[derive(Debug, Clone, Default)]
pub struct Pending {
    queue: Arc<Mutex<VecDeque<Expect>>>,
    /// Signalled when replies are consumed, so a client that pipelines without reading waits.
    drained: Arc<tokio::sync::Notify>,
    /// Signalled when a statement is queued, so the reply side can arm its statement timer.
    pushed: Arc<tokio::sync::Notify>,
    /// Signalled when a reply tollgate gives itself is queued, so the reply side writes it
    /// even if the server has nothing to say.
    synthetic: Arc<tokio::sync::Notify>,
    /// Synthetic replies pushed and not yet taken (never below the number queued: entries
    /// removed another way only make it high, which costs a lock, never a lost reply). Lets
    /// the reply side skip the queue's lock around every server frame when there are none.
    synthetic_queued: Arc<std::sync::atomic::AtomicUsize>,
    /// Transaction status of the last ReadyForQuery (`I`, `T`, `E`).
    tx_status: Arc<std::sync::atomic::AtomicU8>,
    /// The reply side holds relayed bytes it has not finished writing to the client.
    unwritten: Arc<std::sync::atomic::AtomicBool>,
    /// tollgate's own cancel requests not yet delivered to the server (see `cancel_started`).
    cancels: CancelsInFlight,
    /// An extended-protocol message went out and its Sync has not: the server may be inside a
    /// transaction, hold a suspended portal or skip everything to the Sync, whatever the last
    /// ReadyForQuery said.
    batch_open: Arc<std::sync::atomic::AtomicBool>,
    /// The server is in COPY FROM STDIN and the client has not ended it (CopyDone/CopyFail):
    /// the server waits for data, and no reply will come until it does.
    copy_waiting: Arc<std::sync::atomic::AtomicBool>,
    /// The reply half's answers to SQL PREPAREs, for the client half's record of them.
    prepare_reports: super::sql_prepared::PrepareReports,
    /// Named Parses the server refused or skipped, for the client half's record of them.
    failed_parses: FailedParses,
    /// How the server described each shared statement (by tollgate's name) to this session's
    /// client: hashes of the ParameterDescription and the RowDescription (or NoData) its
    /// Describe was answered. A copy prepared anew is compared with them.
    shapes: Arc<Mutex<std::collections::HashMap<Arc<str>, Shape>>>,
    /// When the last ReadyForQuery arrived: the server starts on what was pipelined behind it
    /// only then, and so does its statement timer.
    last_ready: Arc<Mutex<Option<Instant>>>,
}

/// The numbers of named Parses the server did not take, until the client half next looks. A
/// flag keeps the look to one load while there are none (every message looks).
#[derive(Debug, Clone, Default)]
struct FailedParses {
    any: Arc<std::sync::atomic::AtomicBool>,
    seqs: Arc<Mutex<Vec<u64>>>,
}

impl Pending {
    /// A cancel of tollgate's own (timeout, row limit) is being sent. Until it is delivered
    /// nothing more is forwarded upstream: a cancel that lands after its statement ended would
    /// otherwise cancel the agent's next statement.
    pub fn cancel_started(&self) -> CancelInFlight {
        self.cancels.start()
    }

    /// Waits until every cancel of tollgate's own has been delivered.
    pub async fn cancels_settled(&self) {
        self.cancels.settled().await
    }

    /// Where the reply half reports the fate of each forwarded SQL PREPARE.
    pub fn prepare_reports(&self) -> super::sql_prepared::PrepareReports {
        self.prepare_reports.clone()
    }

    /// The server did not take the named Parse numbered `seq` (an error, or skipped after one).
    pub fn report_failed_parse(&self, seq: u64) {
        let f = &self.failed_parses;
        f.seqs.lock().expect("failed parses").push(seq);
        f.any.store(true, std::sync::atomic::Ordering::Release);
    }

    /// The named Parses reported failed since the last call (none: one load).
    pub fn take_failed_parses(&self) -> Vec<u64> {
        let f = &self.failed_parses;
        use std::sync::atomic::Ordering;
        if !f.any.load(Ordering::Relaxed) || !f.any.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        std::mem::take(&mut *f.seqs.lock().expect("failed parses"))
    }

    pub fn push(&self, e: Expect) {
        let statement = matches!(
            e,
            Expect::Simple { .. }
                | Expect::Execute { .. }
                | Expect::HiddenDescribe { .. }
                | Expect::Parse { .. }
                | Expect::Hidden {
                    started: Some(_),
                    ..
                }
        );
        let synthetic = matches!(e, Expect::Synthetic(_) | Expect::SyntheticParse(_));
        if synthetic {
            // Counted before it is queued: the count is never below what the queue holds.
            self.synthetic_queued
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        self.queue.lock().expect("pending queue").push_back(e);
        if statement {
            self.pushed.notify_one();
        }
        if synthetic {
            self.synthetic.notify_one();
        }
    }

    /// Waits until a reply tollgate gives itself is queued.
    pub async fn synthetic_pushed(&self) {
        self.synthetic.notified().await;
    }

    /// Takes tollgate's own replies at the front of the queue: they are due now.
    pub fn take_synthetic(&self, out: &mut bytes::BytesMut) -> usize {
        use std::sync::atomic::Ordering;
        if self.synthetic_queued.load(Ordering::Acquire) == 0 {
            return 0;
        }
        let n = self.with(|q| {
            let mut n = 0;
            while let Some(Expect::Synthetic(_) | Expect::SyntheticParse(_)) = q.front() {
                match q.pop_front() {
                    Some(Expect::Synthetic(b)) => out.extend_from_slice(&b),
                    Some(Expect::SyntheticParse(_)) => {
                        out.extend_from_slice(&super::statements::parse_complete())
                    }
                    _ => {} // the front was one of the two
                }
                n += 1;
            }
            n
        });
        self.synthetic_queued.fetch_sub(n, Ordering::AcqRel);
        n
    }

    /// Waits until a statement is queued (returns at once if one was queued since the last wait).
    pub async fn statement_pushed(&self) {
        self.pushed.notified().await;
    }

    /// Set by the client side as an extended-protocol batch opens (Parse, Bind, Describe,
    /// Execute, Close) and cleared when its Sync is forwarded.
    pub fn set_batch_open(&self, open: bool) {
        self.batch_open
            .store(open, std::sync::atomic::Ordering::Relaxed);
    }

    /// Set by the reply half at CopyInResponse, cleared by the client half as it forwards the
    /// client's CopyDone or CopyFail.
    pub fn set_copy_waiting(&self, waiting: bool) {
        self.copy_waiting
            .store(waiting, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn copy_waiting(&self) -> bool {
        self.copy_waiting.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn batch_open(&self) -> bool {
        self.batch_open.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The server connection is between transactions: nothing owed, the last ReadyForQuery
    /// said idle, and no extended batch left open (Flush without Sync). Only then may it serve
    /// another session.
    pub fn between_transactions(&self) -> bool {
        self.is_empty() && self.tx_status() == b'I' && !self.batch_open()
    }

    /// At a ReadyForQuery: what was sent behind it starts now, for the statement timeout.
    pub fn ready_now(&self) {
        *self.last_ready.lock().expect("last ready") = Some(Instant::now());
    }

    pub fn set_tx_status(&self, status: u8) {
        self.tx_status
            .store(status, std::sync::atomic::Ordering::Relaxed);
    }

    /// `b'I'` idle, `b'T'` in a transaction, `b'E'` in a failed transaction.
    pub fn tx_status(&self) -> u8 {
        match self.tx_status.load(std::sync::atomic::Ordering::Relaxed) {
            0 => b'I',
            s => s,
        }
    }

    /// Set by the reply side around taking replies off the queue and writing them out.
    pub fn set_unwritten(&self, unwritten: bool) {
        self.unwritten
            .store(unwritten, std::sync::atomic::Ordering::Relaxed);
    }

    /// Nothing is owed to the client and nothing relayed is waiting to be written: a session
    /// may be closed now without losing a reply.
    pub fn settled(&self) -> bool {
        self.is_empty() && !self.unwritten.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// When the oldest statement still running was forwarded (or a Parse, the client's or
    /// tollgate's own, or tollgate's own describe of one, `HiddenDescribe`), or, if it was
    /// pipelined behind a batch that ended later, when that batch's ReadyForQuery came: the
    /// server starts it then, as PostgreSQL's statement_timeout counts (a second pipelined
    /// statement was cancelled for the first one's time: a re-review).
    pub fn oldest_statement_start(&self) -> Option<Instant> {
        let sent = self.oldest_sent()?;
        let ready = *self.last_ready.lock().expect("last ready");
        Some(ready.map_or(sent, |r| r.max(sent)))
    }

    fn oldest_sent(&self) -> Option<Instant> {
        self.with(|q| {
            q.iter().find_map(|e| match e {
                Expect::Simple {
                    ticket: Some(t), ..
                }
                | Expect::Execute {
                    ticket: Some(t), ..
                } => Some(t.started()),
                Expect::HiddenDescribe { started, .. } | Expect::Parse { started, .. } => {
                    Some(*started)
                }
                Expect::Hidden { started, .. } => *started,
                _ => None,
            })
        })
    }

    /// Runs `f` on the queue; the lock is held only for the call.
    pub fn with<T>(&self, f: impl FnOnce(&mut VecDeque<Expect>) -> T) -> T {
        f(&mut self.queue.lock().expect("pending queue"))
    }

    pub fn len(&self) -> usize {
        self.queue.lock().expect("pending queue").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Called by the reply side after it consumed entries.
    pub fn notify_drained(&self) {
        self.drained.notify_one();
    }

    /// Waits until the reply side consumed replies.
    pub async fn replies_consumed(&self) {
        self.drained.notified().await;
    }

    /// The client was answered `reply` (RowDescription or NoData) to its Describe of shared
    /// statement `name` (after its ParameterDescription, [`Pending::described_params`]).
    pub fn described(&self, name: &Arc<str>, reply: &[u8]) {
        self.with_shape(name, |s| s.rows = shape(reply));
    }

    /// The client was answered `reply` (ParameterDescription) to its Describe of `name`.
    pub fn described_params(&self, name: &Arc<str>, reply: &[u8]) {
        self.with_shape(name, |s| s.params = shape(reply));
    }

    fn with_shape(&self, name: &Arc<str>, f: impl FnOnce(&mut Shape)) {
        let mut shapes = self.shapes.lock().expect("shapes");
        if shapes.len() >= MAX_SHAPES && !shapes.contains_key(name) {
            // Forgotten, a statement is no longer compared (as before this check existed).
            shapes.clear();
        }
        f(shapes.entry(name.clone()).or_default());
    }

    /// Whether a copy of `name` prepared anew takes other parameter types than the client was
    /// told (`false` when it was never told).
    pub fn params_otherwise(&self, name: &str, reply: &[u8]) -> bool {
        let shapes = self.shapes.lock().expect("shapes");
        shapes.get(name).is_some_and(|s| s.params != shape(reply))
    }

    /// Whether the client was told how shared statement `name` describes its result.
    pub fn was_described(&self, name: &str) -> bool {
        self.shapes.lock().expect("shapes").contains_key(name)
    }

    /// Whether a copy of `name` prepared anew describes its result otherwise than the client
    /// was told (the schema changed since): `false` when the client was never told.
    pub fn described_otherwise(&self, name: &str, reply: &[u8]) -> bool {
        let shapes = self.shapes.lock().expect("shapes");
        shapes.get(name).is_some_and(|s| s.rows != shape(reply))
    }

    /// Waits until every reply owed has arrived and been taken off the queue (the reply side has
    /// seen each ParameterStatus before them).
    pub async fn settled_replies(&self) {
        while !self.is_empty() {
            self.drained.notified().await;
        }
    }

    /// Waits until fewer than `MAX_PENDING` replies are owed (backpressure on the client).
    pub async fn wait_for_room(&self) {
        while self.len() >= MAX_PENDING {
            self.drained.notified().await;
        }
    }

    pub fn drain(&self) -> Vec<Expect> {
        self.queue
            .lock()
            .expect("pending queue")
            .drain(..)
            .collect()
    }
}
