//! Client → upstream: every message passes here. Query and Parse go through the policy hook;
//! refused statements are replaced by a statement the upstream rejects, so PostgreSQL itself puts
//! the session in the right state (transaction aborted, extended batch skipped to Sync) and the
//! reply stream stays in order; the upstream's error is then swapped for tollgate's refusal.

use std::sync::Arc;

use super::name_map::NameMap;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::backend::{self as msg, PgErrorFields};
use super::cancel::CancelRegistry;
use super::cursor_rows::StatementCursors;
use super::frame::{Frame, FrameError, FrameReader, Incoming};
use super::frontend::{self as fe, MessageError};
use super::link::{Attached, Link};
use super::pending::{Expect, Pending};
use super::pool::ServerInfo;
use super::sql_prepared::{self, PrepareTickets, SqlPrepared};
use super::statement::{Checked, PgSession};
use super::statements::{self, ServerStatement, Unnamed};
use crate::policy::limits::{Limits, RowLimitMode};
use crate::policy::sql::cursors::{cursor_uses_parsed, CursorUse};
use crate::policy::{AgentView, Effect, Outcome, SessionFacts, Verdict};

/// What a client may pipeline behind a statement waiting for a server connection before
/// tollgate stops reading (and so stops noticing a hang-up) until the connection comes.
const HANG_UP_READ_AHEAD: usize = 64 * 1024;

/// A statement PostgreSQL rejects with a syntax error, sent in place of a refused one.
const REFUSED_SQL: &str = "TOLLGATE REFUSED";

#[derive(Debug, thiserror::Error)]
pub enum FromClientError {
    #[error("client connection: {0}")]
    Client(FrameError),
    #[error("upstream connection: {0}")]
    Upstream(std::io::Error),
    /// A protocol violation reported to the client as FATAL before closing.
    #[error("{}", .0.message)]
    Fatal(PgErrorFields),
}

/// A client message that could not be read: what the client is told before the session
/// ends (PostgreSQL says FATAL for a length it will not take); a broken connection, nothing.
fn client_error(e: FrameError) -> FromClientError {
    match e {
        FrameError::Held(held) => {
            FromClientError::Fatal(PgErrorFields::fatal("53200", held.to_string()))
        }
        FrameError::TooLarge { .. } | FrameError::BadLength(_) => {
            FromClientError::Fatal(PgErrorFields::fatal("08P01", format!("tollgate: {e}")))
        }
        FrameError::Truncated | FrameError::Io(_) => FromClientError::Client(e),
    }
}

/// How the client side ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientEnd {
    Terminated,
    Closed,
}

/// Per-session protocol state the policy hook needs.
struct State {
    /// COMMIT / ROLLBACK inside a transaction pass the rate (`transaction_end`).
    free_ends: super::transaction_end::FreeEnds,
    /// After a refused Parse, messages up to Sync are dropped (the upstream skips them too).
    skip_until_sync: bool,
    /// Prepared statement name → its text and verdict (as checked at Parse).
    statements: NameMap<Arc<Checked>>,
    /// Portal name → the statement it runs (protocol portals this session bound).
    portals: NameMap<Portal>,
    /// SQL cursors this session DECLAREd (portals too: a protocol Execute may read them), until
    /// it closes them. One that ended with its transaction is still here: the server answers.
    declared: NameMap<Declared>,
    /// SQL-level PREPAREd statements (confirmed by the server, or in flight), re-checked after
    /// a reload.
    prepared: SqlPrepared,
    facts: SessionFacts,
    /// The agent's policy (its limits), re-read when the policy changes.
    view: AgentView,
    /// Transaction pooling: statements are prepared on server connections under tollgate's
    /// names, and the client's unnamed statement is put back on a connection that lost it.
    pooled: bool,
    /// The attached server connection (transaction pooling: between transactions none).
    server: Option<Arc<ServerInfo>>,
    unnamed: Option<Unnamed>,
    session_id: u64,
    parses: u64,
    /// A statement that leaves session state behind was let through: keep the connection.
    pinned: bool,
    /// The connection is reset when it goes back: a `SET LOCAL` was let through, or a `DISCARD
    /// ALL`/`DEALLOCATE ALL` (tollgate forgets the connection's statements when it forwards one:
    /// if the server refused it, they are still there, and the reset makes that true before
    /// another session's Parse is answered from the record).
    reset_on_checkin: bool,
    /// A `SET LOCAL` of a setting that changes how text is read was let through in the current
    /// transaction (until the connection goes back).
    local_reading: bool,
    /// Counts statements let through that may change settings (`SET`, `RESET`, `SET LOCAL`,
    /// functions): a statement prepared after one is another statement (`statement_scope`).
    reading_epoch: u64,
    /// A cancel cancelled an extended batch while it waited for a server connection: its
    /// messages are skipped to the Sync, which tollgate answers.
    cancelled_batch: bool,
    /// The client encoding may change: a statement that could change it (SET client_encoding,
    /// RESET, DISCARD, set_config) was forwarded and the session has not been idle outside a
    /// transaction since. Text beyond ASCII then waits until every reply is in, so it is decoded
    /// in the encoding the server reported (`encoding.rs` of the client, `ParameterStatus`).
    encoding_window: bool,
    /// How the server reads backslashes may change: an analysed session let through a statement
    /// that can change settings tollgate does not see (a function call, DO, CALL: those that
    /// leave session state) and has not been idle outside a transaction since. Text with a
    /// backslash then waits until every reply is in: a server reporting
    /// `standard_conforming_strings` off by then ends the session (`sql_reading`) before it is
    /// forwarded. Text without one reads the same either way.
    reading_window: bool,
    /// Whether tollgate analyses this session's statements (not passthrough), and the policy
    /// version that was worked out under.
    analysed: (u64, bool),
    /// Inside an extended-protocol batch (a message since the last Sync): replies cannot be
    /// waited for before the Sync.
    in_batch: bool,
    /// The current message may be read otherwise than tollgate knows (the encoding, or how
    /// backslashes are read, may have changed earlier in its batch): refused.
    uncertain: Option<Uncertain>,
    /// Whose session shows which process id (the door's registry; absent in unit tests, where
    /// every process id given as a value is refused).
    backends: Option<Arc<CancelRegistry>>,
}

/// What may have changed earlier in a batch, so a message's text cannot be read for sure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Uncertain {
    Encoding,
    Backslashes,
}

/// A bound portal: the statement it runs (`None`: a name tollgate did not see prepared, which
/// only the server knows, under session pooling), and whether running it has that statement's
/// effects on the session (a portal bound to a SQL-PREPAREd statement runs its body, not the
/// PREPARE).
#[derive(Clone)]
struct Portal {
    checked: Option<Arc<Checked>>,
    effects: bool,
}

/// A SQL cursor the session DECLAREd.
struct Declared {
    /// WITH HOLD: it outlives its transaction.
    hold: bool,
    /// The DECLARE as checked: after a reload its query is judged again before the cursor is
    /// read, since the server runs the query the old policy allowed (and masked).
    query: Option<Arc<Checked>>,
}

impl State {
    fn new(agent: std::sync::Arc<str>, pending: &Pending) -> State {
        State {
            skip_until_sync: false,
            statements: NameMap::default(),
            portals: NameMap::default(),
            declared: Default::default(),
            prepared: SqlPrepared::new(pending.prepare_reports()),
            free_ends: Default::default(),
            facts: SessionFacts::default(),
            view: AgentView::new(agent),
            pooled: false,
            server: None,
            unnamed: None,
            session_id: 0,
            parses: 0,
            pinned: false,
            reset_on_checkin: false,
            local_reading: false,
            reading_epoch: 0,
            cancelled_batch: false,
            encoding_window: false,
            in_batch: false,
            reading_window: false,
            analysed: (0, true),
            uncertain: None,
            backends: None,
        }
    }

    /// The attached connection, when statements are renamed on it (transaction pooling).
    fn pooled_server(&self) -> Option<Arc<ServerInfo>> {
        self.server.clone().filter(|_| self.pooled)
    }

    /// A statement let through may have changed the session's settings: note it for the names
    /// of statements prepared after it, for how its text is read, and (a `SET LOCAL`) for the
    /// connection's reset when it goes back.
    fn note_settings(&mut self, ctx: &PgSession, verdict: &Verdict) {
        if verdict.leaves_state || verdict.sets_local || verdict.clears_state {
            self.reading_epoch += 1;
        }
        self.local_reading |= verdict.sets_local;
        self.reset_on_checkin |= verdict.sets_local;
        self.may_change_reading(ctx, verdict.leaves_state || verdict.clears_state);
    }

    /// Whose statements a Parse prepares (`statements::server_statement`): `None`, every
    /// session's, when the session reads text as the pool's connections do; otherwise this
    /// session's under its settings of now. A session that changed its settings (pinned: `SET
    /// DateStyle ...`; or a `SET LOCAL` in its transaction) reads a date literal otherwise, and
    /// before, it was answered with the statement another session had prepared under the
    /// defaults (a review saw the wrong date written).
    fn statement_scope(&self) -> Option<(u64, u64)> {
        (self.pinned || self.local_reading).then_some((self.session_id, self.reading_epoch))
    }

    /// Whether tollgate analyses this session's statements under the current policy.
    fn analysed(&mut self, ctx: &PgSession) -> bool {
        let version = self.view.refresh(&ctx.session().core().policy).version();
        if self.analysed.0 != version {
            let upstream = ctx.session().upstream();
            self.analysed = (
                version,
                super::sql_reading::analysed(self.view.policy(), upstream),
            );
        }
        self.analysed.1
    }

    /// A statement being let through leaves session state (`leaves`): it may change settings
    /// tollgate does not see, so the reading window opens. A passthrough session's statements
    /// are not analysed, so any of them may (a function it calls can turn
    /// standard_conforming_strings off, and its login guard reads the next text as with it on:
    /// a re-review hid ALTER ROLE in what the guard read as a string literal).
    fn may_change_reading(&mut self, ctx: &PgSession, leaves: bool) {
        if !self.reading_window && (!self.analysed(ctx) || leaves) {
            self.reading_window = true;
        }
    }

    /// A statement being forwarded (`query`, as checked) DECLAREs or CLOSEs a SQL cursor.
    fn note_cursor(&mut self, u: Option<&CursorUse>, query: Option<&Arc<Checked>>) {
        match u {
            Some(CursorUse::Declare { name, hold }) => {
                let declared = Declared {
                    hold: *hold,
                    query: query.cloned(),
                };
                self.declared.insert(name.clone(), declared);
            }
            Some(CursorUse::Close(Some(name))) => {
                self.declared.remove(name);
            }
            Some(CursorUse::Close(None)) => self.declared.clear(),
            Some(CursorUse::Fetch(_) | CursorUse::Move(_)) | None => {}
        }
    }

    /// Outside a transaction with every reply in, cursors without HOLD are gone.
    fn forget_ended_cursors(&mut self, pending: &Pending) {
        // (A reload may have changed what a cursor's query may read: `cursor_refusal`.)
        if !self.declared.is_empty() && pending.is_empty() && pending.tx_status() == b'I' {
            self.declared.retain(|d| d.hold);
        }
    }
}

/// A FETCH or MOVE (or an Execute) of a cursor DECLAREd under an older policy whose query the
/// current policy no longer allows, or masks otherwise: refused (the server would go on
/// reading what the old policy allowed). `what` is the text recorded.
fn cursor_refusal(
    ctx: &PgSession,
    state: &State,
    what: &str,
    cursor: &str,
) -> Option<PgErrorFields> {
    let query = state.declared.get(cursor)?.query.as_ref()?;
    ctx.cursor_changed(what, query, &state.facts)
}

/// The first cursor read among `uses` that [`cursor_refusal`] refuses.
fn cursor_reads_refusal(
    ctx: &PgSession,
    state: &State,
    what: &str,
    uses: &[Option<CursorUse>],
) -> Option<PgErrorFields> {
    uses.iter().flatten().find_map(|u| match u {
        CursorUse::Fetch(name) | CursorUse::Move(name) => cursor_refusal(ctx, state, what, name),
        _ => None,
    })
}

/// The agent's current limits (the view refreshed first).
fn limits<'a>(view: &'a mut AgentView, ctx: &PgSession) -> &'a Limits {
    view.refresh(&ctx.session().core().policy).limits()
}

/// Relays the client's messages until it leaves. Returns how it ended and the server
/// connection it still holds (to be checked back in by the session).
pub async fn run<R: AsyncRead + Unpin>(
    ctx: Arc<PgSession>,
    pending: Pending,
    mut client: FrameReader<R>,
    link: Arc<Link>,
    mut attached: Option<Attached>,
    backends: Arc<CancelRegistry>,
) -> (Result<ClientEnd, FromClientError>, Option<Attached>) {
    let mut state = State::new(ctx.agent().clone(), &pending);
    state.pooled = link.pooled_by_transaction();
    state.facts.pooled = state.pooled;
    state.facts.checks_signal_targets = true;
    state.backends = Some(backends);
    state.session_id = ctx.session().id();
    state.server = attached.as_ref().map(|a| a.info.clone());
    let r = relay(
        &ctx,
        &pending,
        &mut client,
        &link,
        &mut attached,
        &mut state,
    )
    .await;
    (r, attached)
}

enum Next {
    /// The client's next message, or the announcement of one too large to hold (still unread).
    Message(Option<Incoming>),
    /// The reply half let go of the server connection at the end of a transaction.
    Detached,
}

async fn relay<R: AsyncRead + Unpin>(
    ctx: &PgSession,
    pending: &Pending,
    client: &mut FrameReader<R>,
    link: &Link,
    attached: &mut Option<Attached>,
    state: &mut State,
) -> Result<ClientEnd, FromClientError> {
    let mut out = BytesMut::new();
    // When a paced agent may send again (`Session::pace_deadline`).
    let mut paced = None;
    loop {
        // A client that pipelines without reading replies waits here instead of growing memory.
        pending.wait_for_room().await;
        // An agent refused faster than `limits.refusals_per_second` reads nothing until its
        // pace allows, its last refusal answered; a pooled connection still goes back
        // meanwhile (review: a paced agent otherwise kept its share of the pool asleep).
        if paced.is_none() {
            paced = ctx.session().pace_deadline();
        }
        let may_give_back = attached.is_some() && link.pooled_by_transaction();
        // Only the cancel-safe announcement races the detach: a message announced too large
        // is read in pieces below, which cannot stop halfway without losing the stream's place.
        let next = tokio::select! {
            biased;
            _ = link.detached.notified(), if may_give_back => Next::Detached,
            _ = tokio::time::sleep_until(paced.unwrap_or_else(tokio::time::Instant::now)), if paced.is_some() => {
                paced = None;
                continue;
            }
            f = next_announced(ctx, pending, client, &mut state.view), if paced.is_none() => {
                Next::Message(f?)
            }
        };
        let incoming = match next {
            Next::Detached => {
                give_back(link, pending, attached, state).await;
                continue;
            }
            Next::Message(incoming) => incoming,
        };
        let read = super::oversize::complete(client, incoming, ctx.max_statement_bytes()).await;
        let Some(frame) = read.map_err(client_error)? else {
            return Ok(ClientEnd::Closed);
        };
        if frame.tag == fe::TERMINATE && attached.is_none() {
            return Ok(ClientEnd::Terminated);
        }
        if state.cancelled_batch && attached.is_none() {
            // The rest of an extended batch whose statement was cancelled while it waited:
            // skipped to its Sync, answered here (`cancel_waiting`); each statement recorded.
            if frame.tag == fe::SYNC {
                state.cancelled_batch = false;
                pending.push(Expect::Synthetic(msg::ready_for_query(b'I')));
            } else {
                not_run(ctx, state, &frame, CANCELLED_WAITING);
            }
            continue;
        }
        // With no connection held nothing is owed and no batch is open (a connection goes back
        // only then): a Sync or Flush has nothing to wait for, and is answered here, without
        // waiting for a connection (an empty pipeline must not need one, nor hide a cancel
        // behind it from the statements that follow).
        if attached.is_none() && matches!(frame.tag, fe::SYNC | fe::FLUSH) {
            if frame.tag == fe::SYNC {
                pending.push(Expect::Synthetic(msg::ready_for_query(b'I')));
            }
            continue;
        }
        if attached.is_none() {
            // A client that hangs up while its statement waits for a connection is gone before
            // anything was decided or sent: the statement is dropped, as PgBouncer drops a
            // waiting client, instead of running for nobody once a connection frees up. A
            // cancel meanwhile cancels the statement, as a server would, and nothing of it runs.
            let checkout = link.pool.checkout(&link.key, link.share.as_ref());
            tokio::pin!(checkout);
            let cancellable = cancellable(frame.tag);
            // A cancel from here on cancels the statement, even one that comes as its
            // connection arrives (it then finds no target: `attach_unless_cancelled`).
            let seen = cancellable.then(|| link.cancel.cancels());
            let server = loop {
                tokio::select! {
                    biased;
                    r = &mut checkout => match r {
                        Ok(server) => break Some(server),
                        // No connection for it (a pool limit, the upstream down): the session
                        // ends with a FATAL, and the statement, and what was pipelined behind
                        // it, are recorded as not run, with what the client was told.
                        Err(e) => {
                            let fields = super::session::checkout_failure(&e, &link.pool.name);
                            let why = format!("not run: {}", super::session::told(&fields));
                            not_run_answered(ctx, state, &frame, &why, Some(fields.code));
                            while client.has_buffered_frame() {
                                match client.next().await {
                                    Ok(Some(f)) => not_run_answered(ctx, state, &f, &why, Some(fields.code)),
                                    _ => break,
                                }
                            }
                            return Err(FromClientError::Fatal(fields));
                        }
                    },
                    () = client.hung_up(HANG_UP_READ_AHEAD) => {
                        metrics::counter!("tollgate_pool_checkouts_abandoned_total", "upstream" => link.pool.name.clone())
                            .increment(1);
                        tracing::debug!(upstream = %link.pool.name, "client left while waiting for a server connection");
                        not_run(ctx, state, &frame, LEFT_WAITING);
                        // And what it pipelined behind it, as far as it was read.
                        while client.has_buffered_frame() {
                            match client.next().await {
                                Ok(Some(f)) => not_run(ctx, state, &f, LEFT_WAITING),
                                _ => break,
                            }
                        }
                        return Ok(ClientEnd::Closed);
                    }
                    () = link.cancel.cancelled_while_waiting() => {
                        if cancellable {
                            break None;
                        }
                    }
                }
            };
            let Some(server) = server else {
                cancel_waiting(ctx, pending, state, &frame, &link.pool.name);
                continue;
            };
            // Never a connection that reads SQL text otherwise than the analysis: closed.
            if let Err(fields) = ctx.check_server(&server.info.params) {
                link.pool.checkin(server, false, false);
                return Err(FromClientError::Fatal(fields));
            }
            let info = server.info.clone();
            match link.attach_unless_cancelled(server, seen).await {
                Ok(a) => {
                    state.server = Some(info);
                    *attached = Some(a);
                }
                Err(server) => {
                    // Nothing was sent on it: it goes back as it came.
                    link.pool.checkin(server, true, true);
                    cancel_waiting(ctx, pending, state, &frame, &link.pool.name);
                    continue;
                }
            }
        }
        let upstream = &mut attached.as_mut().expect("attached above").writer;
        settle(ctx, pending, state, &frame, upstream, &mut out).await?;
        let mut end = on_frame(ctx, pending, state, frame, &mut out)?;
        // Pipelined messages already read are handled before one write upstream.
        while end.is_none()
            && client.has_buffered_frame()
            && out.len() < 256 * 1024
            && !ctx.session().must_pace()
        {
            match client.next().await.map_err(client_error)? {
                Some(f) => {
                    let upstream = &mut attached.as_mut().expect("attached above").writer;
                    settle(ctx, pending, state, &f, upstream, &mut out).await?;
                    end = on_frame(ctx, pending, state, f, &mut out)?
                }
                None => end = Some(ClientEnd::Closed),
            }
        }
        if state.pinned {
            link.pin();
        }
        if std::mem::take(&mut state.reset_on_checkin) {
            link.reset_on_checkin();
        }
        // The decisions' records reach the disk (one write shared with every session
        // committing now) before anything they let through is forwarded.
        ctx.commit().await.map_err(FromClientError::Fatal)?;
        pending.cancels_settled().await;
        not_ending(ctx)?;
        let writer = &mut attached.as_mut().expect("attached above").writer;
        writer
            .write_all(&out)
            .await
            .map_err(FromClientError::Upstream)?;
        out.clear();
        if out.capacity() > 256 * 1024 {
            out = BytesMut::new(); // release what a burst grew
        }
        if let Some(end) = end {
            return Ok(end);
        }
    }
}

/// The client's next message, or the announcement of one too large to hold, which
/// [`super::oversize::complete`] then reads; inside a transaction with every reply in, at most
/// the agent's idle-in-transaction timeout away. Cancel-safe.
async fn next_announced<R: AsyncRead + Unpin>(
    ctx: &PgSession,
    pending: &Pending,
    client: &mut FrameReader<R>,
    view: &mut AgentView,
) -> Result<Option<Incoming>, FromClientError> {
    use super::oversize;
    let max = ctx.max_statement_bytes();
    loop {
        let idle_limit = limits(view, ctx).idle_in_transaction_timeout.clone();
        let next = match idle_limit {
            // Idle inside a transaction: every reply is in, the client is silent. An extended
            // batch left open (a Flush and no Sync: libpq's pipeline mode, pg-cursor between
            // reads) is a transaction too, the server's implicit one, with its locks: PostgreSQL's
            // own timer starts only at ReadyForQuery (a live review held a row lock past it).
            Some((limit, rule))
                if pending.is_empty() && (pending.tx_status() != b'I' || pending.batch_open()) =>
            {
                match tokio::time::timeout(limit, oversize::announced(client, max)).await {
                    Ok(r) => r,
                    Err(_) => {
                        metrics::counter!("tollgate_idle_in_transaction_timeouts_total")
                            .increment(1);
                        let why =
                            format!("idle-in-transaction timeout of {} ms", limit.as_millis());
                        ctx.session().closed_by_limit(&rule, &why, "25P03");
                        return Err(FromClientError::Fatal(PgErrorFields::fatal(
                            "25P03",
                            format!("tollgate: terminating connection due to {why} (rule: {rule})"),
                        )));
                    }
                }
            }
            // Replies still owed: look again when they arrive.
            Some(_) => tokio::select! {
                r = oversize::announced(client, max) => r,
                _ = pending.replies_consumed() => continue,
            },
            None => oversize::announced(client, max).await,
        };
        return next.map_err(client_error);
    }
}

/// Why a statement that waited for a server connection did not run (its `error` record).
const LEFT_WAITING: &str = "the client left while it waited for a server connection";
const CANCELLED_WAITING: &str = "cancelled by the client while it waited for a server connection";

/// Messages a cancel that comes while they wait for a server connection cancels: those that
/// run something.
fn cancellable(tag: u8) -> bool {
    matches!(
        tag,
        fe::QUERY
            | fe::FUNCTION_CALL
            | fe::PARSE
            | fe::BIND
            | fe::DESCRIBE
            | fe::EXECUTE
            | fe::CLOSE
    )
}

/// A cancel came while `frame` waited for a server connection: it is answered as a server
/// answers a cancelled statement (57014), and nothing of it runs. A simple Query or function
/// call ends there (ReadyForQuery, idle: a session waits for a connection only outside a
/// transaction); an extended batch is skipped to its Sync, which is answered here too.
fn cancel_waiting(
    ctx: &PgSession,
    pending: &Pending,
    state: &mut State,
    frame: &Frame,
    upstream: &str,
) {
    metrics::counter!("tollgate_pool_checkouts_cancelled_total", "upstream" => upstream.to_string())
        .increment(1);
    not_run(ctx, state, frame, CANCELLED_WAITING);
    let error = PgErrorFields::error("57014", "canceling statement due to user request");
    let mut reply = BytesMut::from(&ctx.encode_error(&error)[..]);
    if matches!(frame.tag, fe::QUERY | fe::FUNCTION_CALL) {
        reply.extend_from_slice(&msg::ready_for_query(b'I'));
    } else {
        state.cancelled_batch = true;
    }
    pending.push(Expect::Synthetic(reply.freeze()));
}

/// A record for a statement that never ran because it never got a server connection (its
/// client left, or cancelled it, while it waited): decided by nobody, so an `error` note. The
/// statement a Bind or Execute would have run is the one the session prepared under its name.
fn not_run(ctx: &PgSession, state: &State, frame: &Frame, why: &str) {
    // What the client was answered: 57014 for a cancelled statement, nothing for one whose
    // client left.
    let code = (why == CANCELLED_WAITING).then_some("57014");
    not_run_answered(ctx, state, frame, why, code);
}

/// [`not_run`], with the SQLSTATE the client was answered.
fn not_run_answered(ctx: &PgSession, state: &State, frame: &Frame, why: &str, code: Option<&str>) {
    match frame.tag {
        fe::QUERY => {
            if let Ok(text) = fe::query_bytes(frame) {
                ctx.note_not_run(text, why, code);
            }
        }
        fe::PARSE => {
            if let Ok((_, text)) = fe::parse_name_and_bytes(frame) {
                ctx.note_not_run(text, why, code);
            }
        }
        fe::BIND => {
            let prepared = fe::bind_names(frame)
                .ok()
                .and_then(|(_, statement)| state.statements.get(statement));
            if let Some(c) = prepared {
                ctx.note_not_run_text(&c.text, why, code);
            }
        }
        _ => {}
    }
}

/// The reply half let go of the connection: check it back in if the transaction is over and the
/// session left nothing on it; otherwise the reply half reads it again.
async fn give_back(
    link: &Link,
    pending: &Pending,
    attached: &mut Option<Attached>,
    state: &mut State,
) {
    let Some(rest) = attached.take() else {
        return;
    };
    // A cancel of tollgate's own (row limit, timeout) still on its way must land before the
    // connection can run another session's statement.
    pending.cancels_settled().await;
    if pending.between_transactions() && !link.pinned() {
        match link.detach(rest).await {
            Ok(server) => {
                link.pool.checkin(server, link.take_clean(), true);
                state.server = None;
                // The transaction is over: its SET LOCALs with it.
                state.local_reading = false;
                return;
            }
            Err(rest) => *attached = Some(rest),
        }
    } else {
        *attached = Some(rest);
    }
    link.resume();
}

/// Nothing more is forwarded once the server reported reading SQL text otherwise than the
/// analysis (`sql_reading`): what was judged under the old reading must not run under the new.
fn not_ending(ctx: &PgSession) -> Result<(), FromClientError> {
    match ctx.ending() {
        Some(fields) => Err(FromClientError::Fatal(fields.clone())),
        None => Ok(()),
    }
}

/// Before a Query or Parse that must be read with the server's answers so far: everything
/// queued is sent and every reply awaited.
/// - Text beyond ASCII while the client encoding may be changing: the server has then reported
///   the encoding the text will be read in (ASCII text reads the same in every encoding).
/// - Text that may EXECUTE while a SQL PREPARE waits for its answer: a name becomes executable
///   only once the server confirmed its PREPARE.
///
/// Inside an extended batch replies cannot come before the Sync: text beyond ASCII is marked
/// uncertain and refused; an EXECUTE is judged on what is confirmed so far.
async fn settle<W: AsyncWrite + Unpin>(
    ctx: &PgSession,
    pending: &Pending,
    state: &mut State,
    frame: &Frame,
    upstream: &mut W,
    out: &mut BytesMut,
) -> Result<(), FromClientError> {
    if frame.tag == fe::BIND {
        return describe_before_bind(ctx, pending, state, frame, upstream, out).await;
    }
    if !matches!(frame.tag, fe::QUERY | fe::PARSE) {
        return Ok(());
    }
    let body = frame.body();
    let encoding = state.encoding_window && !body.is_ascii();
    let backslashes = state.reading_window && body.contains(&b'\\');
    let prepare = state.prepared.in_flight() && may_execute(body);
    if !encoding && !backslashes && !prepare {
        return Ok(());
    }
    if state.in_batch {
        state.uncertain = match (encoding, backslashes) {
            (true, _) => Some(Uncertain::Encoding),
            (false, true) => Some(Uncertain::Backslashes),
            (false, false) => state.uncertain,
        };
        return Ok(());
    }
    send_and_settle(ctx, pending, upstream, out).await?;
    if pending.tx_status() == b'I' {
        state.encoding_window = false;
        state.reading_window = false;
    }
    Ok(())
}

/// What a statement's bookkeeping looks for in its text, found in one pass (`Screen::found`):
/// words that may change the client encoding (or undo a change: the window opens), DECLARE
/// (its cursor is a portal the client may Execute, worked out even without a row limit), and
/// the words of any cursor use (`cursors::WORDS`).
#[derive(Clone, Copy)]
struct Words(u32);

const STATEMENT_WORDS: [&str; 9] = [
    "encoding",
    "names",
    "reset",
    "discard",
    "set_config",
    "declare",
    "fetch",
    "move",
    "close",
];

impl Words {
    const ENCODING: u32 = 0b1_1111;
    const DECLARE: u32 = 1 << 5;
    /// fetch, move, declare, close, discard.
    const CURSORS: u32 = 1 << 3 | 1 << 5 | 1 << 6 | 1 << 7 | 1 << 8;

    fn of(text: &str) -> Words {
        use crate::policy::sql::screen::Screen;
        static SCREEN: Screen = Screen::new(&STATEMENT_WORDS);
        Words(SCREEN.found(text.as_bytes()))
    }
    fn may_change_encoding(self) -> bool {
        self.0 & Self::ENCODING != 0
    }
    fn may_declare(self) -> bool {
        self.0 & Self::DECLARE != 0
    }
    /// `cursor_uses`, without screening the text again.
    fn cursor_uses(self, text: &str) -> Vec<Option<CursorUse>> {
        match self.0 & Self::CURSORS != 0 {
            true => cursor_uses_parsed(text),
            false => Vec::new(),
        }
    }
}

/// Whether a message's text may EXECUTE a SQL-prepared statement.
fn may_execute(body: &[u8]) -> bool {
    use crate::policy::sql::screen::Screen;
    static EXECUTE: Screen = Screen::new(&["execute"]);
    EXECUTE.matches_bytes(body)
}

/// The refusal of a message whose text may be read otherwise than tollgate knows yet.
fn uncertain_text(ctx: &PgSession, what: Uncertain) -> PgErrorFields {
    if what == Uncertain::Backslashes {
        return ctx.refuse(
            "<message sent while standard_conforming_strings could be changing>",
            crate::refusal::Refusal::new(
                crate::refusal::RefusalClass::Unsupported,
                super::sql_reading::RULE,
                "a statement earlier in this batch may have changed how the server reads backslashes in string literals (standard_conforming_strings): send Sync before text with a backslash",
            ),
        );
    }
    ctx.refuse(
        "<message sent while the client encoding was changing>",
        crate::refusal::Refusal::new(
            crate::refusal::RefusalClass::Encoding,
            "builtin: encoding",
            "the client encoding may have changed earlier in this batch: send Sync before text beyond ASCII",
        ),
    )
}

fn fatal_for(e: MessageError) -> FromClientError {
    FromClientError::Fatal(PgErrorFields::fatal("08P01", e.to_string()))
}

/// Invalid UTF-8 is refused like PostgreSQL would (22021) and audited; so is a string without its
/// NUL or a message cut short, with PostgreSQL's own ERROR (08P01): it reads on from the next
/// message (the frame's length says where it is), and so does tollgate.
fn refusal_for_bad_text(ctx: &PgSession, e: MessageError) -> PgErrorFields {
    match e {
        MessageError::NotUtf8(what) => ctx.refuse_unreadable(what, "UTF8"),
        MessageError::Unterminated(what) => ctx.refuse_as_server(
            &format!("<{what} message without its string terminator>"),
            "08P01",
            "invalid string in message".to_string(),
        ),
        MessageError::Truncated(what) => ctx.refuse_as_server(
            &format!("<{what} message cut short>"),
            "08P01",
            "insufficient data left in message".to_string(),
        ),
    }
}

fn substitute_query() -> Bytes {
    msg::raw_message(fe::QUERY, format!("{REFUSED_SQL}\0").as_bytes())
}

fn substitute_parse(name: &str) -> Bytes {
    let mut body = BytesMut::new();
    body.put_slice(name.as_bytes());
    body.put_u8(0);
    body.put_slice(REFUSED_SQL.as_bytes());
    body.put_u8(0);
    body.put_i16(0);
    msg::raw_message(fe::PARSE, &body)
}

/// In truncate mode, an Execute asks the server for at most `max_rows + 1` rows: the extra row
/// tells tollgate the result was longer, and the portal stops without a cancel.
fn execute_row_cap(limits: &Limits) -> Option<u32> {
    match (&limits.max_rows, limits.on_max_rows) {
        (Some((max, _)), RowLimitMode::Truncate) => {
            Some(u32::try_from(max.saturating_add(1)).unwrap_or(i32::MAX as u32))
        }
        _ => None,
    }
}

/// The Execute with its row count lowered to `cap` (unchanged if the client asked for fewer).
fn capped_execute(frame: &Frame, cap: u32) -> Option<Bytes> {
    let body = frame.body();
    let nul = body.iter().position(|b| *b == 0)?;
    let count = body.get(nul + 1..nul + 5)?;
    let asked = i32::from_be_bytes([count[0], count[1], count[2], count[3]]);
    let cap = i32::try_from(cap).unwrap_or(i32::MAX);
    if asked > 0 && asked <= cap {
        return None;
    }
    let mut out = BytesMut::with_capacity(body.len());
    out.put_slice(&body[..=nul]);
    out.put_i32(cap);
    Some(msg::raw_message(fe::EXECUTE, &out))
}

/// A Query message carrying `sql` (a masking rewrite, in the client's encoding).
fn query_message(sql: &[u8]) -> Bytes {
    let mut body = BytesMut::with_capacity(sql.len() + 1);
    body.put_slice(sql);
    body.put_u8(0);
    msg::raw_message(fe::QUERY, &body)
}

/// The client's Parse with its query text replaced by `sql` (in the client's encoding); name
/// and parameter types kept.
fn parse_message(frame: &Frame, name: &str, sql: &[u8]) -> Bytes {
    let body = frame.body();
    // name\0 query\0 <parameter types>: the original's tail starts after the second NUL.
    let query_start = name.len() + 1;
    let tail_start = body[query_start..]
        .iter()
        .position(|b| *b == 0)
        .map_or(body.len(), |p| query_start + p + 1);
    let mut out = BytesMut::with_capacity(body.len() + sql.len());
    out.put_slice(name.as_bytes());
    out.put_u8(0);
    out.put_slice(sql);
    out.put_u8(0);
    out.put_slice(&body[tail_start..]);
    msg::raw_message(fe::PARSE, &out)
}

/// Writes what is queued upstream now and waits until every reply owed has come: its decisions
/// are committed first (as before any write), and tollgate's own cancels in flight delivered
/// (one must not land on what is sent now).
async fn send_and_settle<W: AsyncWrite + Unpin>(
    ctx: &PgSession,
    pending: &Pending,
    upstream: &mut W,
    out: &mut BytesMut,
) -> Result<(), FromClientError> {
    ctx.commit().await.map_err(FromClientError::Fatal)?;
    pending.cancels_settled().await;
    not_ending(ctx)?;
    upstream
        .write_all(out)
        .await
        .map_err(FromClientError::Upstream)?;
    out.clear();
    pending.settled_replies().await;
    Ok(())
}

/// Under transaction pooling, a Bind of a statement the client parsed and had described
/// earlier, whose shared copy the attached connection lacks: the copy prepared here now has the
/// columns (and parameter types) of now, while the client was described those of then. So the
/// copy is prepared and described first, and both compared with the client's
/// (`Pending::params_otherwise`, `described_otherwise`): after a schema change the name is
/// marked stale and the Bind refused as the server refuses its own stale statement
/// (`stale_plan`), instead of running and handing the client rows of another shape (a live
/// review: asyncpg decoded int8 rows as float8). One round trip per statement and connection,
/// at the start of a batch only (where every earlier reply is in and the transaction is not
/// failed); a Bind inside a batch goes on as before, and so does one of a statement the client
/// never had described (it reads each portal's description: psycopg, pgbench).
async fn describe_before_bind<W: AsyncWrite + Unpin>(
    ctx: &PgSession,
    pending: &Pending,
    state: &mut State,
    frame: &Frame,
    upstream: &mut W,
    out: &mut BytesMut,
) -> Result<(), FromClientError> {
    if !out.is_empty() || !pending.is_empty() || pending.tx_status() == b'E' {
        return Ok(());
    }
    let Some(server) = state.pooled_server() else {
        return Ok(());
    };
    let Ok((_, name)) = fe::bind_names(frame) else {
        return Ok(());
    };
    let Some(stmt) = state
        .statements
        .get(name)
        .and_then(|c| c.server.clone())
        .filter(|s| !s.stale_for_client())
    else {
        return Ok(());
    };
    if !pending.was_described(&stmt.name) || !statements::missing_here(&server, &stmt.name) {
        return Ok(());
    }
    statements::ensure_prepared(&server, &stmt, pending, out);
    pending.push(Expect::HiddenDescribe {
        server_name: stmt.name.clone(),
        params_differ: false,
        started: std::time::Instant::now(),
    });
    out.extend_from_slice(&statements::renamed_describe(&stmt.name));
    out.extend_from_slice(&statements::flush());
    send_and_settle(ctx, pending, upstream, out).await?;
    if !statements::counted_here(&server, &stmt.name) {
        // The Parse failed (a table gone, a lock wait cancelled): its error went to the client,
        // and the server now skips everything up to the Sync. So does tollgate: a Parse of its
        // own sent now would be skipped too, and counted as held there (a re-review: every
        // later Bind of the text on that connection failed with 26000).
        state.skip_until_sync = true;
        return Ok(());
    }
    statements::described_here(&server, &stmt.name);
    Ok(())
}

/// Under transaction pooling the server connection also holds other sessions' statements: a
/// name this session did not prepare is answered as PostgreSQL would in a session of its own.
fn not_prepared_here(state: &State, name: &str) -> Option<PgErrorFields> {
    if !state.pooled {
        return None;
    }
    let known = if name.is_empty() {
        state.unnamed.is_some()
    } else {
        state.statements.contains_key(name) || state.prepared.get(name).is_some()
    };
    (!known).then(|| {
        PgErrorFields::error(
            "26000",
            if name.is_empty() {
                "unnamed prepared statement does not exist".to_string()
            } else {
                format!("prepared statement \"{name}\" does not exist")
            },
        )
    })
}

/// Under transaction pooling, makes sure the client's statement `name` is on the attached
/// connection (prepared there first if it is not) and returns its name there; `None` when the
/// name needs no rewriting (session pooling, SQL PREPAREd statements, unknown names).
fn on_server(
    state: &mut State,
    name: &str,
    pending: &Pending,
    out: &mut BytesMut,
) -> Option<Arc<str>> {
    let server = state.pooled_server()?;
    if name.is_empty() {
        if let Some(u) = &state.unnamed {
            statements::ensure_unnamed(&server, u, pending, out);
        }
        return None;
    }
    let stmt: ServerStatement = state.statements.get(name)?.server.clone()?;
    statements::ensure_prepared(&server, &stmt, pending, out);
    Some(stmt.name)
}

/// A statement the client parsed before a schema change made its shared server statement's
/// plan stale (`pool::stale_plans`): refused as the server refuses its own such statement, until
/// the client parses it again. Binding it to the statement prepared anew would hand the client
/// rows of another shape than it was described (asyncpg decoded a float8 as an int8).
fn stale_plan(ctx: &PgSession, state: &State, name: &str) -> Option<PgErrorFields> {
    let checked = state.statements.get(name)?;
    let stale = checked.server.as_ref()?.stale_for_client();
    stale.then(|| {
        // PostgreSQL's own fields, by which drivers know to prepare again (asyncpg reads the
        // routine: the message may be translated).
        ctx.refuse_as_server(
            &checked.text,
            "0A000",
            "cached plan must not change result type".to_string(),
        )
        .with_routine("RevalidateCachedQuery")
    })
}

/// The refusal (recorded) of a protocol message naming a statement in tollgate's own namespace
/// (`policy::reserved`): such a name is never the client's, on any connection.
fn reserved_statement(ctx: &PgSession, what: &str, name: &str) -> Option<PgErrorFields> {
    crate::policy::reserved::is_reserved(name).then(|| {
        ctx.refuse(
            &format!("-- {what} of prepared statement \"{name}\""),
            crate::policy::reserved::refusal(name),
        )
    })
}

fn refuse_simple(pending: &Pending, refusal: PgErrorFields, out: &mut BytesMut) {
    pending.push(Expect::Simple {
        ticket: None,
        refusal: Some(refusal),
        rows: 0,
        error: None,
        cursors: Default::default(),
        prepares: PrepareTickets::default(),
        answer: None,
        positions: None,
    });
    out.extend_from_slice(&substitute_query());
}

fn on_frame(
    ctx: &PgSession,
    pending: &Pending,
    state: &mut State,
    frame: Frame,
    out: &mut BytesMut,
) -> Result<Option<ClientEnd>, FromClientError> {
    // After an error in an extended batch the server discards everything up to Sync, simple
    // Queries and FunctionCalls included; so does tollgate after a refusal.
    if state.skip_until_sync
        && !matches!(
            frame.tag,
            fe::SYNC | fe::TERMINATE | fe::COPY_DATA | fe::COPY_DONE | fe::COPY_FAIL
        )
    {
        // Nothing of it runs, but the agent sent it: its statement is recorded.
        let text = match frame.tag {
            fe::QUERY => fe::query_bytes(&frame).ok(),
            fe::PARSE => fe::parse_name_and_bytes(&frame).ok().map(|(_, t)| t),
            _ => None,
        };
        if let Some(text) = text.and_then(|t| ctx.decode(t, "statement").ok()) {
            ctx.skipped_after_refusal(&text);
        }
        return Ok(None);
    }
    if matches!(
        frame.tag,
        fe::PARSE | fe::BIND | fe::DESCRIBE | fe::EXECUTE | fe::CLOSE
    ) {
        state.in_batch = true;
        pending.set_batch_open(true);
    }
    // What the reply half learned about forwarded PREPAREs and Parses, before any name is
    // looked up.
    state.prepared.settle(&mut state.facts);
    forget_failed_parses(state, pending);
    match frame.tag {
        fe::QUERY => on_query(ctx, pending, state, &frame, out)?,
        fe::PARSE => on_parse(ctx, pending, state, &frame, out)?,
        fe::BIND => {
            let (portal, statement) = fe::bind_names(&frame).map_err(fatal_for)?;
            if let Some(refusal) = reserved_statement(ctx, "Bind", statement)
                .or_else(|| not_prepared_here(state, statement))
                .or_else(|| stale_plan(ctx, state, statement))
            {
                refuse_parse(pending, state, "", refusal, out);
                return Ok(None);
            }
            // A protocol-level statement's portal has its effects when it runs (a PREPARE
            // prepares); one of a SQL-PREPAREd statement runs the prepared body.
            let (checked, effects) = match state.statements.get(statement) {
                Some(c) => (Some(c.clone()), true),
                None => (state.prepared.get(statement).cloned(), false),
            };
            // The process ids of backend signals are known now (parameters included), and the
            // names current_setting() is given as parameters.
            if let Some(c) = &checked {
                let params = |i: i32| fe::bind_int_parameter(&frame, i);
                if let Some(refusal) = signal_refusal(ctx, state, &c.text, &c.verdict, params)
                    .or_else(|| setting_param_refusal(ctx, state, c, &frame))
                {
                    state.portals.remove(portal);
                    refuse_parse(pending, state, "", refusal, out);
                    return Ok(None);
                }
            }
            let server_name = on_server(state, statement, pending, out);
            let renamed = server_name
                .as_ref()
                .map(|name| statements::renamed_bind(&frame, portal, statement, name));
            state
                .portals
                .insert(portal.to_string(), Portal { checked, effects });
            pending.push(Expect::Bind {
                portal: portal.to_string(),
                statement: renamed.is_some().then(|| statement.into()),
                server_name,
            });
            out.extend_from_slice(renamed.as_ref().unwrap_or(&frame.raw));
        }
        fe::DESCRIBE => {
            let (kind, name) = fe::target(&frame, "Describe").map_err(fatal_for)?;
            if let Some(refusal) = (kind == b'S')
                .then(|| {
                    reserved_statement(ctx, "Describe", name)
                        .or_else(|| not_prepared_here(state, name))
                        .or_else(|| stale_plan(ctx, state, name))
                })
                .flatten()
            {
                refuse_parse(pending, state, "", refusal, out);
                return Ok(None);
            }
            let server_name = (kind == b'S')
                .then(|| on_server(state, name, pending, out))
                .flatten();
            let renamed = server_name.as_deref().map(statements::renamed_describe);
            pending.push(Expect::Describe {
                statement: renamed.is_some().then(|| name.into()),
                server_name,
            });
            out.extend_from_slice(renamed.as_ref().unwrap_or(&frame.raw));
        }
        fe::EXECUTE => {
            let portal = fe::execute_portal(&frame).map_err(fatal_for)?;
            state.forget_ended_cursors(pending);
            let bound = state.portals.get(portal).cloned();
            // A portal this session neither bound nor declared (one a function opened, say) is
            // refused as the server would refuse an unknown one: tollgate counts the rows of
            // every portal it lets the client read.
            if bound.is_none() && !state.declared.contains_key(portal) {
                let refusal = ctx.refuse_as_server(
                    &format!("-- execute portal \"{portal}\""),
                    "34000",
                    format!("portal \"{portal}\" does not exist"),
                );
                refuse_parse(pending, state, "", refusal, out);
                return Ok(None);
            }
            let checked = bound.as_ref().and_then(|p| p.checked.clone());
            // A cursor DECLAREd under an older policy, read directly as a portal or by a
            // prepared FETCH: its query judged again.
            let stale_cursor = match &checked {
                // Nothing to look at without a declared cursor (and no parse of the text).
                _ if state.declared.is_empty() => None,
                None => cursor_refusal(
                    ctx,
                    state,
                    &format!("-- execute portal \"{portal}\""),
                    portal,
                ),
                Some(c) => match c.cursor_use() {
                    Some(CursorUse::Fetch(name) | CursorUse::Move(name)) => {
                        cursor_refusal(ctx, state, &c.text, name)
                    }
                    _ => None,
                },
            };
            // A prepared `EXECUTE name` whose PREPARE the policy changed for since: judged
            // again when it runs, whenever the driver prepared it.
            let stale = stale_cursor.or_else(|| {
                checked
                    .as_ref()
                    .filter(|_| bound.as_ref().is_some_and(|p| p.effects))
                    .and_then(|c| stale_execute_refusal(ctx, state, &c.verdict))
            });
            if let Some(refusal) = stale {
                refuse_parse(pending, state, "", refusal, out);
                return Ok(None);
            }
            // A protocol-level statement's portal has that statement's effects when it runs.
            let runs = checked
                .clone()
                .filter(|_| bound.as_ref().is_some_and(|p| p.effects));
            // The portal runs a PREPARE of a name the session has: refused as the server would.
            let duplicate = runs
                .as_ref()
                .and_then(|c| duplicate_prepare(ctx, state, &c.text, &c.verdict));
            if let Some(refusal) = duplicate {
                refuse_parse(pending, state, "", refusal, out);
                return Ok(None);
            }
            let limits = limits(&mut state.view, ctx);
            let cap = execute_row_cap(limits);
            let row_limited = limits.max_rows.is_some();
            // Under a row limit a FETCH's rows count towards its cursor; a DECLARE was worked
            // out at Parse (it names a portal the client may Execute).
            let cursor = checked.as_ref().and_then(|c| match row_limited {
                true => c.cursor_use().cloned(),
                false => c.cursor.get().cloned().flatten(),
            });
            let mut spare = None;
            let charged = match &checked {
                Some(c) => {
                    state
                        .free_ends
                        .limits_for(limits, &c.text, pending.tx_status(), &mut spare)
                }
                None => limits,
            };
            match ctx.record_execute(portal, checked.as_deref(), &state.facts, charged) {
                Ok(ticket) => {
                    // A SET LOCAL prepared in an earlier transaction runs in this one (prepared
                    // again on this connection where missing): reset it when it goes back too.
                    if let Some(c) = &checked {
                        state.note_settings(ctx, &c.verdict);
                    }
                    let prepares = match runs {
                        Some(c) => {
                            state.note_cursor(cursor.as_ref(), Some(&c));
                            apply_effects(state, &c.verdict, &c.text, ctx)
                        }
                        None => PrepareTickets::default(),
                    };
                    pending.push(Expect::Execute {
                        ticket: Some(ticket),
                        portal: portal.to_string(),
                        cursor: cursor.filter(|_| row_limited),
                        prepares,
                    });
                    match cap.and_then(|cap| capped_execute(&frame, cap)) {
                        Some(capped) => out.extend_from_slice(&capped),
                        None => out.extend_from_slice(&frame.raw),
                    }
                }
                Err(refusal) => refuse_parse(pending, state, "", refusal, out),
            }
        }
        fe::CLOSE => {
            let (kind, name) = fe::target(&frame, "Close").map_err(fatal_for)?;
            let kept_on_server = kind == b'S'
                && state
                    .statements
                    .get(name)
                    .is_some_and(|c| c.server.is_some());
            // Under transaction pooling the connection also holds other sessions' statements
            // and tollgate's own names: a Close of the unnamed statement or of a name this
            // session did not prepare is the client's alone (PostgreSQL answers a Close of a
            // missing statement with CloseComplete too). Its SQL PREPAREd ones (the session is
            // pinned to its connection then), confirmed or still in flight, are closed on the
            // server. tollgate's own names are never the client's, on any connection.
            let sql_prepared = kind == b'S' && state.prepared.has(name);
            let reserved = kind == b'S' && crate::policy::reserved::is_reserved(name);
            let not_ours = kind == b'S'
                && (reserved
                    || state.pooled
                        && !sql_prepared
                        && (name.is_empty() || !state.statements.contains_key(name)));
            if kind == b'S' {
                state.statements.remove(name);
                if name.is_empty() && state.pooled {
                    state.unnamed = None;
                }
                if sql_prepared {
                    state.prepared.remove(name, &mut state.facts);
                }
            } else {
                state.portals.remove(name);
                state.declared.remove(name);
            }
            if kept_on_server || not_ours {
                // Other sessions may use the same statement on that connection: it stays there
                // (closed when its connection's bound is reached); the client's name is gone.
                pending.push(Expect::Synthetic(statements::close_complete()));
            } else {
                pending.push(Expect::Close);
                out.extend_from_slice(&frame.raw);
            }
        }
        fe::SYNC => {
            state.skip_until_sync = false;
            state.in_batch = false;
            pending.set_batch_open(false);
            pending.push(Expect::Sync);
            out.extend_from_slice(&frame.raw);
        }
        fe::COPY_DONE | fe::COPY_FAIL => {
            pending.set_copy_waiting(false);
            pending.push(Expect::CopyEnd);
            out.extend_from_slice(&frame.raw);
        }
        fe::FLUSH | fe::COPY_DATA => out.extend_from_slice(&frame.raw),
        // Not forwarded: the server connection outlives the session (reset and reused).
        fe::TERMINATE => return Ok(Some(ClientEnd::Terminated)),
        fe::FUNCTION_CALL => {
            let oid = frame
                .body()
                .get(..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            let limits = limits(&mut state.view, ctx);
            match ctx.function_call(oid, limits) {
                // Answered by FunctionCallResponse (or an error) and ReadyForQuery.
                Ok(ticket) => {
                    pending.push(Expect::Simple {
                        ticket: Some(ticket),
                        refusal: None,
                        rows: 0,
                        error: None,
                        cursors: Default::default(),
                        prepares: PrepareTickets::default(),
                        answer: None,
                        positions: None,
                    });
                    out.extend_from_slice(&frame.raw);
                }
                Err(refusal) => refuse_simple(pending, refusal, out),
            }
        }
        other => {
            return Err(FromClientError::Fatal(PgErrorFields::fatal(
                "08P01",
                format!("invalid frontend message type {other}"),
            )))
        }
    }
    Ok(None)
}

fn on_query(
    ctx: &PgSession,
    pending: &Pending,
    state: &mut State,
    frame: &Frame,
    out: &mut BytesMut,
) -> Result<(), FromClientError> {
    let started = std::time::Instant::now();
    if state.pooled {
        // PostgreSQL drops the unnamed statement at every simple Query: the client's own is
        // gone (as it would be direct), and the connection no longer holds anyone's.
        state.unnamed = None;
        if let Some(server) = &state.server {
            *server.unnamed_owner.lock().expect("unnamed statement") = None;
        }
    }
    if let Some(what) = state.uncertain.take() {
        refuse_simple(pending, uncertain_text(ctx, what), out);
        return Ok(());
    }
    let raw = match fe::query_bytes(frame) {
        Ok(raw) => raw,
        Err(e) => {
            refuse_simple(pending, refusal_for_bad_text(ctx, e), out);
            return Ok(());
        }
    };
    let decoded = match ctx.decode(raw, "Query") {
        Ok(t) => t,
        Err(refusal) => {
            refuse_simple(pending, refusal, out);
            return Ok(());
        }
    };
    let text: &str = &decoded;
    let verdict = ctx.check_sql(text, &state.facts);
    state.forget_ended_cursors(pending);
    // Rows count per SQL cursor across its FETCHes (under a row limit); the cursors it DECLAREs
    // are portals the client may Execute; a cursor DECLAREd before a reload is judged again
    // when read.
    let row_limited = limits(&mut state.view, ctx).max_rows.is_some();
    let words = Words::of(text);
    let uses = match row_limited || words.may_declare() || !state.declared.is_empty() {
        true => words.cursor_uses(text),
        false => Vec::new(),
    };
    let stale_cursor = verdict
        .runs()
        .then(|| cursor_reads_refusal(ctx, state, text, &uses))
        .flatten();
    // EXECUTE of a statement PREPAREd under an older policy: judged again under the current one.
    let stale = stale_cursor.or_else(|| {
        verdict
            .runs()
            .then(|| stale_execute_refusal(ctx, state, &verdict))
            .flatten()
    });
    // A PREPARE of a name the session has: refused as the server would (its name stays the
    // statement tollgate checked).
    let duplicate = stale.or_else(|| {
        verdict
            .runs()
            .then(|| duplicate_prepare(ctx, state, text, &verdict))
            .flatten()
    });
    // Backend signals of literal process ids: whose they are is known now.
    let refused = duplicate.or_else(|| {
        verdict
            .runs()
            .then(|| signal_refusal(ctx, state, text, &verdict, |_| None))
            .flatten()
    });
    let forwarded = match refused {
        Some(refusal) => Err(refusal),
        None if verdict.runs() => ctx.forwarded_bytes(text, &verdict),
        None => Ok(None),
    };
    let limits = limits(&mut state.view, ctx);
    let mut spare = None;
    let charged = state
        .free_ends
        .limits_for(limits, text, pending.tx_status(), &mut spare);
    let admitted = forwarded.and_then(|f| ctx.decide(text, &verdict, charged).map(|t| (t, f)));
    match admitted {
        Ok((ticket, rewritten)) => {
            let (rewritten, positions) = match rewritten {
                Some((sql, map)) => (Some(sql), Some(Box::new(map))),
                None => (None, None),
            };
            // A DECLARE keeps its text and verdict, to be judged again after a reload.
            let declares = uses
                .iter()
                .any(|u| matches!(u, Some(CursorUse::Declare { .. })));
            let query = declares.then(|| {
                Arc::new(Checked {
                    text: text.into(),
                    verdict: verdict.clone(),
                    version: ctx.policy_version(),
                    server: None,
                    cursor: Default::default(),
                    parse_seq: 0,
                })
            });
            for u in &uses {
                state.note_cursor(u.as_ref(), query.as_ref());
            }
            let cursors = match row_limited {
                true => StatementCursors::new(uses),
                false => StatementCursors::default(),
            };
            // The DEALLOCATE of a protocol-level statement (pooled): of tollgate's statement
            // where the connection has it, answered here where it does not.
            let mut answer = None;
            let rewritten = match protocol_deallocate(state, &verdict, pending) {
                Some(found) => match simple_deallocate(state, found) {
                    SimpleDeallocate::OnServer(sql) => Some(sql),
                    SimpleDeallocate::Answered => {
                        answer = Some(msg::command_complete("DEALLOCATE"));
                        Some(Vec::new())
                    }
                },
                None => {
                    forget_deallocated(state, &verdict, pending);
                    rewritten
                }
            };
            let prepares = apply_effects(state, &verdict, text, ctx);
            state.pinned |= verdict.leaves_state;
            state.note_settings(ctx, &verdict);
            state.encoding_window |= words.may_change_encoding();
            pending.push(Expect::Simple {
                ticket: Some(ticket),
                refusal: None,
                rows: 0,
                error: None,
                cursors,
                prepares,
                answer,
                positions,
            });
            match rewritten {
                Some(sql) => out.extend_from_slice(&query_message(&sql)),
                None => out.extend_from_slice(&frame.raw),
            }
            ctx.context().record_overhead(started);
        }
        Err(refusal) => refuse_simple(pending, refusal, out),
    }
    Ok(())
}

fn on_parse(
    ctx: &PgSession,
    pending: &Pending,
    state: &mut State,
    frame: &Frame,
    out: &mut BytesMut,
) -> Result<(), FromClientError> {
    let started = std::time::Instant::now();
    let (name, raw) = match fe::parse_name_and_bytes(frame) {
        Ok(x) => x,
        Err(e) => {
            refuse_parse(pending, state, "", refusal_for_bad_text(ctx, e), out);
            return Ok(());
        }
    };
    if let Some(refusal) = reserved_statement(ctx, "Parse", name) {
        refuse_parse(pending, state, "", refusal, out);
        return Ok(());
    }
    if let Some(what) = state.uncertain.take() {
        refuse_parse(pending, state, "", uncertain_text(ctx, what), out);
        return Ok(());
    }
    let decoded = match ctx.decode(raw, "Parse") {
        Ok(t) => t,
        Err(refusal) => {
            refuse_parse(pending, state, "", refusal, out);
            return Ok(());
        }
    };
    let text: &str = &decoded;
    // PostgreSQL refuses to redefine a named statement; answering here keeps tollgate's record of
    // what the name runs exact (the server keeps the old definition).
    if !name.is_empty() && (state.statements.contains_key(name) || state.prepared.has(name)) {
        let refusal = ctx.refuse_as_server(text, "42P05", already_exists(name));
        refuse_parse(pending, state, "", refusal, out);
        return Ok(());
    }
    let verdict = ctx.check_sql(text, &state.facts);
    // `EXECUTE name` of a statement PREPAREd under an older policy, prepared by the driver
    // (psycopg's `prepare=True`, pgjdbc past prepareThreshold): judged again, as in a Query.
    if let Some(refusal) = verdict
        .runs()
        .then(|| stale_execute_refusal(ctx, state, &verdict))
        .flatten()
    {
        state.statements.remove(name);
        refuse_parse(pending, state, name, refusal, out);
        return Ok(());
    }
    let (rewritten, positions) = if verdict.runs() {
        match ctx.forwarded_bytes(text, &verdict) {
            Ok(Some((sql, map))) => (Some(sql), Some(Box::new(map))),
            Ok(None) => (None, None),
            Err(refusal) => {
                state.statements.remove(name);
                refuse_parse(pending, state, name, refusal, out);
                return Ok(());
            }
        }
    } else {
        (None, None)
    };
    if verdict.runs() {
        // Its effects on the session (a PREPARE, a DEALLOCATE) come when a portal of it runs.
        let words = Words::of(text);
        state.encoding_window |= words.may_change_encoding();
        state.pinned |= verdict.leaves_state;
        state.note_settings(ctx, &verdict);
        // A named Parse of it would act only when run: sent as it came.
        let deallocates = match name.is_empty() {
            true => protocol_deallocate(state, &verdict, pending),
            false => None,
        };
        if deallocates.is_none() && name.is_empty() {
            forget_deallocated(state, &verdict, pending);
        }
        let forwarded = match (deallocates, rewritten) {
            (Some((client_name, stmt)), _) => {
                let sql = deallocate_on_server(state, &client_name, &stmt, pending, out);
                parse_message(frame, name, &sql)
            }
            (None, Some(sql)) => parse_message(frame, name, &sql),
            (None, None) => frame.raw.clone(),
        };
        // A named Parse is numbered, so that the name goes if the server does not take it.
        let named = (!name.is_empty()).then(|| {
            state.parses += 1;
            state.parses
        });
        let server_stmt = match state.pooled_server() {
            Some(server) if name.is_empty() => {
                // The unnamed statement is forwarded as is; tollgate remembers it to put it back
                // on another connection if a later Bind needs it there.
                state.parses += 1;
                let owner = (state.session_id, state.parses);
                *server.unnamed_owner.lock().expect("unnamed statement") = Some(owner);
                state.unnamed = Some(Unnamed {
                    parse: forwarded.clone(),
                    owner,
                });
                pending.push(Expect::Parse {
                    refusal: None,
                    server_name: None,
                    named: None,
                    positions,
                    started: std::time::Instant::now(),
                });
                out.extend_from_slice(&forwarded);
                None
            }
            Some(server) => {
                let stmt = statements::server_statement(
                    &forwarded,
                    name,
                    ctx.session().upstream(),
                    state.statement_scope(),
                );
                if held_in_a_failed_block(&server, &stmt, pending, text) {
                    let refusal = ctx.refuse_as_server(text, "25P02", IN_FAILED_BLOCK.into());
                    refuse_parse(pending, state, name, refusal, out);
                    return Ok(());
                }
                statements::parse(&server, &stmt, named, positions, pending, out);
                Some(stmt)
            }
            None => {
                pending.push(Expect::Parse {
                    refusal: None,
                    server_name: None,
                    named,
                    positions,
                    started: std::time::Instant::now(),
                });
                out.extend_from_slice(&forwarded);
                None
            }
        };
        let checked = Arc::new(Checked {
            text: text.into(),
            verdict,
            version: ctx.policy_version(),
            server: server_stmt,
            cursor: Default::default(),
            parse_seq: named.unwrap_or(0),
        });
        if words.may_declare() {
            checked.cursor_use(); // known at Execute, which records the cursor's name
        }
        state.statements.insert(name.to_string(), checked);
        ctx.context().record_overhead(started);
    } else {
        let refusal = ctx.refuse_verdict(text, &verdict);
        state.statements.remove(name);
        refuse_parse(pending, state, name, refusal, out);
    }
    Ok(())
}

/// PostgreSQL's words for a statement in a failed transaction block (25P02).
const IN_FAILED_BLOCK: &str =
    "current transaction is aborted, commands ignored until end of transaction block";

/// A named Parse, in a failed transaction block, of a statement the connection holds: tollgate
/// would answer its ParseComplete, where the server refuses every Parse there (25P02) but of a
/// statement that ends the block. The client then held a name it did not have: pgx prepares
/// with Parse, Describe, Sync, sees the Describe fail and prepares the name again later, which
/// tollgate answered 42P05. Known only with nothing in flight (the status is the last
/// ReadyForQuery's).
fn held_in_a_failed_block(
    server: &ServerInfo,
    stmt: &ServerStatement,
    pending: &Pending,
    text: &str,
) -> bool {
    pending.tx_status() == b'E'
        && pending.is_empty()
        && server
            .prepared
            .lock()
            .expect("prepared statements")
            .contains(&stmt.name)
        && !crate::policy::sql::exits_failed_transaction(text)
}

/// Named Parses the server refused (or skipped after an error) created no statement there:
/// their names are not the session's either, so a Bind of one is the server's 26000 and the
/// name may be prepared again (tollgate answered 42P05 for the rest of the session, and under
/// transaction pooling prepared the refused text again at each Bind).
fn forget_failed_parses(state: &mut State, pending: &Pending) {
    let failed = pending.take_failed_parses();
    if failed.is_empty() {
        return;
    }
    state
        .statements
        .retain(|c| c.parse_seq == 0 || !failed.contains(&c.parse_seq));
}

/// For `EXECUTE name` (also inside EXPLAIN): if the PREPARE was judged under an older policy and
/// the current one refuses it, the refusal.
fn stale_execute_refusal(
    ctx: &PgSession,
    state: &State,
    verdict: &Verdict,
) -> Option<PgErrorFields> {
    verdict.effects.iter().find_map(|e| match e {
        Effect::Executes(name) => {
            let prepared = state.prepared.get(name)?;
            let fresh = ctx.recheck(prepared, &state.facts)?;
            if let Some(refusal) = ctx.masking_changed(prepared, &fresh) {
                return Some(refusal);
            }
            (!fresh.runs()).then(|| ctx.refuse_verdict(&prepared.text, &fresh))
        }
        _ => None,
    })
}

/// `current_setting($n)` of a restricted agent: the setting its parameter names may not be a
/// custom one (`decide::check_setting_read`); a parameter that cannot be read is refused.
fn setting_param_refusal(
    ctx: &PgSession,
    state: &mut State,
    checked: &Checked,
    bind: &Frame,
) -> Option<PgErrorFields> {
    let params = checked.verdict.effects.iter().find_map(|e| match e {
        Effect::SettingParams(p) => Some(p),
        _ => None,
    })?;
    let upstream = ctx.session().upstream();
    let passthrough = state
        .view
        .refresh(&ctx.session().core().policy)
        .policy()
        .is_some_and(|p| p.passthrough(upstream));
    if passthrough {
        return None;
    }
    for &n in params {
        let checked_name = match fe::bind_text_parameter(bind, n) {
            Some(None) => Ok(()),
            Some(Some(value)) => crate::policy::decide::check_setting_read(
                &crate::policy::sql::setting_name(&String::from_utf8_lossy(value)),
            ),
            None => Err(crate::refusal::Refusal::permission(
                "builtin: protected-setting",
                format!("current_setting() of parameter ${n}, which tollgate cannot read"),
            )),
        };
        if let Err(r) = checked_name {
            return Some(ctx.refuse(&checked.text, r));
        }
    }
    None
}

/// The refusal (recorded) of a statement with a backend signal whose process id is not the
/// backend of one of the agent's own sessions (`policy::backends::check_target`); `param` gives
/// a parameter's value as an integer, where the statement is being bound.
fn signal_refusal(
    ctx: &PgSession,
    state: &State,
    text: &str,
    verdict: &Verdict,
    param: impl Fn(i32) -> Option<i32>,
) -> Option<PgErrorFields> {
    use crate::policy::sql::SignalTarget;
    let targets = verdict.effects.iter().find_map(|e| match e {
        Effect::Signals(t) => Some(t),
        _ => None,
    })?;
    for target in targets {
        let pid = match target {
            SignalTarget::Pid(n) => Some(*n),
            SignalTarget::Param(i) => param(*i),
            SignalTarget::OwnBackend | SignalTarget::Unknown => continue,
        };
        let owner = pid.and_then(|p| state.backends.as_ref()?.owner(p));
        let session = ctx.session();
        let checked = crate::policy::backends::check_target(
            session.agent(),
            session.upstream(),
            pid,
            owner.as_ref(),
        );
        if let Err(r) = checked {
            return Some(ctx.refuse(text, r));
        }
    }
    None
}

fn refuse_parse(
    pending: &Pending,
    state: &mut State,
    name: &str,
    refusal: PgErrorFields,
    out: &mut BytesMut,
) {
    pending.push(Expect::Parse {
        refusal: Some(refusal),
        server_name: None,
        named: None,
        positions: None,
        started: std::time::Instant::now(),
    });
    out.extend_from_slice(&substitute_parse(name));
    state.skip_until_sync = true;
    if name.is_empty() {
        // The failed Parse empties the server's unnamed statement slot.
        if let Some(server) = &state.server {
            *server.unnamed_owner.lock().expect("unnamed statement") = None;
        }
    }
}

/// What a statement being forwarded does to the session's prepared statements and portals. A
/// PREPARE is only sent here: its name becomes the session's when the server confirms it (the
/// returned tickets go with the reply's queue entry).
fn apply_effects(
    state: &mut State,
    verdict: &Arc<Verdict>,
    text: &str,
    ctx: &PgSession,
) -> PrepareTickets {
    let mut tickets = PrepareTickets::default();
    if verdict.outcome == Outcome::Block {
        return tickets;
    }
    for e in &verdict.effects {
        match e {
            Effect::Prepared(n) => {
                let checked = Checked {
                    text: text.into(),
                    verdict: verdict.clone(),
                    version: ctx.policy_version(),
                    server: None,
                    cursor: Default::default(),
                    parse_seq: 0,
                };
                state.prepared.sent(n, Arc::new(checked), &mut tickets);
            }
            Effect::Deallocated(Some(n)) => state.prepared.remove(n, &mut state.facts),
            Effect::Deallocated(None) => {
                // DEALLOCATE ALL / DISCARD ALL drop protocol-level statements too, tollgate's
                // own on this connection included. Forgotten now, before the server answered:
                // one the server refuses (inside a transaction block, after an error) leaves
                // them there, so the connection is reset before anyone else gets it (a review
                // had every agent's Parse answered 42P05 by a refused DISCARD ALL).
                state.reset_on_checkin = true;
                state.prepared.clear(&mut state.facts);
                state.statements.clear();
                state.portals.clear();
                state.declared.clear();
                state.unnamed = None;
                if let Some(server) = &state.server {
                    server.prepared.lock().expect("prepared statements").clear();
                    *server.unnamed_owner.lock().expect("unnamed statement") = None;
                }
            }
            Effect::Executes(_) | Effect::Signals(_) | Effect::SettingParams(_) => {}
        }
    }
    tickets
}

/// Under transaction pooling, a `DEALLOCATE name` (alone, in a simple Query or a Parse) where
/// `name` is one of the session's protocol-level statements: the server has it under
/// tollgate's name, so the DEALLOCATE is sent for that name (`deallocate_on_server`). It
/// answered 26000 "does not exist": psycopg on libpq 16 and older sends it at cache eviction
/// (a review). Returns the client's name and the statement on the server.
///
/// Only when it is sure to run: nothing in flight before it and no failed transaction block
/// (the status is known only once the replies before it are in). Otherwise it goes as sent,
/// and a server that refuses it (25P02) answers as it would direct: tollgate forgets the name
/// when it rewrites, and a refused DEALLOCATE forgotten left the statement on the server (a
/// later Parse of its text answered 42P05 naming `tg_...`; a re-review).
fn protocol_deallocate(
    state: &State,
    verdict: &Verdict,
    pending: &Pending,
) -> Option<(String, ServerStatement)> {
    let n = deallocated_protocol_statement(state, verdict, pending)?;
    state.pooled_server()?;
    let stmt = state.statements.get(n)?.server.clone()?;
    Some((n.to_owned(), stmt))
}

/// The session's protocol-level statement that `verdict` (one statement, let through) is the
/// `DEALLOCATE` of, when it is sure to run: nothing in flight before it and no failed
/// transaction block. The cheap checks of the verdict come first: every statement passes here.
fn deallocated_protocol_statement<'v>(
    state: &State,
    verdict: &'v Verdict,
    pending: &Pending,
) -> Option<&'v str> {
    let [Effect::Deallocated(Some(n))] = verdict.effects.as_slice() else {
        return None;
    };
    if verdict.statements != 1 || !verdict.runs() || state.prepared.has(n) {
        return None;
    }
    if !state.statements.contains_key(n) || !pending.is_empty() || pending.tx_status() == b'E' {
        return None;
    }
    Some(n)
}

/// The `DEALLOCATE` of `stmt` (the client's `client_name`) to send instead of the client's in
/// a Parse (its Sync follows). Where the attached connection lacks the statement, a placeholder
/// that always parses is prepared there under its name first, so the DEALLOCATE succeeds as
/// the client's would on its own server: preparing the statement's own text failed where it no
/// longer analyses (a column dropped since; a re-review). The reset at check-in covers a server
/// that refuses the DEALLOCATE.
fn deallocate_on_server(
    state: &mut State,
    client_name: &str,
    stmt: &ServerStatement,
    pending: &Pending,
    out: &mut BytesMut,
) -> Vec<u8> {
    if !forget_protocol_statement(state, client_name, stmt) {
        statements::prepare_placeholder(&stmt.name, pending, out);
    }
    deallocate_server_statement(state, stmt)
}

/// Forgets the session's protocol-level statement `client_name` (`stmt` on the server), in the
/// session and in the attached connection's cache; whether the connection held it.
fn forget_protocol_statement(state: &mut State, client_name: &str, stmt: &ServerStatement) -> bool {
    let held = state.pooled_server().is_some_and(|server| {
        server
            .prepared
            .lock()
            .expect("prepared statements")
            .remove(&stmt.name)
    });
    state.statements.remove(client_name);
    held
}

/// The `DEALLOCATE` of tollgate's name for `stmt`; the connection is reset at check-in, in case
/// the server refuses it and keeps the statement.
fn deallocate_server_statement(state: &mut State, stmt: &ServerStatement) -> Vec<u8> {
    state.reset_on_checkin = true;
    format!("DEALLOCATE {}", stmt.name).into_bytes()
}

/// Session pooling: the server has the client's own names, so a `DEALLOCATE` of one of the
/// session's protocol-level statements goes as sent; tollgate forgets the name too when it is
/// sure to run (as `protocol_deallocate`), or a later Parse of the name was answered 42P05 by
/// tollgate while the server would take it (a re-review).
fn forget_deallocated(state: &mut State, verdict: &Verdict, pending: &Pending) {
    if state.pooled {
        return;
    }
    if let Some(n) = deallocated_protocol_statement(state, verdict, pending) {
        state.statements.remove(n);
    }
}

/// What a simple Query's `DEALLOCATE` of a protocol-level statement becomes (pooled).
enum SimpleDeallocate {
    /// The DEALLOCATE of tollgate's name, which the attached connection holds.
    OnServer(Vec<u8>),
    /// The connection does not hold it: nothing to drop there; tollgate answers (an empty
    /// Query keeps the reply in its place). Not prepared first as for a Parse: a Query after a
    /// Parse the server refuses (its table dropped since) is ignored until a Sync the client
    /// never sends.
    Answered,
}

fn simple_deallocate(
    state: &mut State,
    (client_name, stmt): (String, ServerStatement),
) -> SimpleDeallocate {
    if !forget_protocol_statement(state, &client_name, &stmt) {
        return SimpleDeallocate::Answered;
    }
    SimpleDeallocate::OnServer(deallocate_server_statement(state, &stmt))
}

/// PostgreSQL's words for a PREPARE (or Parse) of a name that is taken.
fn already_exists(name: &str) -> String {
    format!("prepared statement \"{name}\" already exists")
}

/// The refusal (recorded) of a statement that PREPAREs a name the session has already, a SQL- or
/// protocol-level one, confirmed or in flight (or that it prepares twice): PostgreSQL's 42P05,
/// given by tollgate so its record of what the name runs stays exact.
fn duplicate_prepare(
    ctx: &PgSession,
    state: &State,
    text: &str,
    verdict: &Verdict,
) -> Option<PgErrorFields> {
    if !verdict
        .effects
        .iter()
        .any(|e| matches!(e, Effect::Prepared(_)))
    {
        return None;
    }
    let has = |n: &str| state.prepared.has(n) || state.statements.contains_key(n);
    let name = sql_prepared::duplicate(&verdict.effects, has)?;
    Some(ctx.refuse_as_server(text, "42P05", already_exists(name)))
}

#[cfg(test)]
mod tests;
