//! Upstream → client: relays every backend message as it arrives, pairs replies with what the
//! client is waiting for, swaps tollgate's refusals in, and completes audit records.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWrite;

use super::backend::{self as msg, PgErrorFields};
use super::cancel::{send_cancel, CancelSlot};
use super::cursor_rows::PortalRows;
use super::frame::{Frame, FrameError, Incoming};
use super::link::Link;
use super::pending::{Expect, Pending};
use super::statement::PgSession;
use crate::policy::limits::RowLimitMode;
use crate::policy::rules::StatementClass;
use crate::policy::AgentView;
use crate::refusal::{Refusal, RefusalClass};
use crate::session::{ClientWrites, OutcomeError, Ticket};

#[derive(Debug, thiserror::Error)]
pub enum ToClientError {
    #[error("upstream connection lost: {0}")]
    Upstream(FrameError),
    #[error("upstream closed the connection")]
    UpstreamClosed,
    #[error("client connection: {0}")]
    Client(std::io::Error),
    /// The server reported reading SQL text differently from the analysis
    /// (`sql_reading`): the session ends with this FATAL, the connection is not reused.
    #[error("{}", .0.message)]
    Fatal(PgErrorFields),
}

/// What the reply side knows about the server's state.
struct ReplyState {
    /// The server sent CopyInResponse and the copy has not been cleaned up yet.
    copy_in: bool,
    /// An error ended a COPY FROM STDIN before the client's CopyDone/CopyFail was queued.
    copy_cleanup_due: bool,
    /// The agent's policy (its limits), refreshed at each ReadyForQuery.
    view: AgentView,
    /// The attached server's backend, for tollgate's own cancels (timeouts, row limits).
    cancel: CancelSlot,
    /// The session's server connection (absent in unit tests): whose notifications these are,
    /// where tollgate's statements are prepared.
    link: Option<Arc<Link>>,
    /// The parameters the client has been shown (ParameterStatus), to replay differences when
    /// a transaction runs on another server connection.
    seen: HashMap<String, String>,
    /// The server parameters `seen` matches entirely (since the last replay, with no
    /// ParameterStatus in between): attaching a connection that shares them needs no replay.
    in_step_with: Option<Arc<[(String, String)]>>,
    /// DataRows of the current result, and whether it went past `max_rows`. For an Execute this
    /// includes the rows earlier Executes of the same portal returned before PortalSuspended.
    rows: u64,
    /// Rows each portal has returned so far, by name, whichever way it was read: suspended
    /// protocol portals resumed with Execute(n) again and again (pg-cursor, JDBC fetchSize,
    /// asyncpg cursors), SQL cursors across their FETCHes, and a portal read both ways (SQL
    /// cursors are portals). `max_rows` holds per statement, not per batch or per message kind.
    /// A protocol portal's count starts again when it is bound again.
    portals: PortalRows,
    /// What the current result's count started from (a resumed portal, a cursor's earlier
    /// FETCHes): rows shown in this result are `rows - base`.
    base: u64,
    /// DataRow bytes of the current result (for `max_result_bytes`, which holds per result).
    bytes: u64,
    /// The current result went past `max_rows` or `max_result_bytes`; its further rows are dropped.
    over_limit: bool,
    /// It was `max_result_bytes` that cut it, after this many rows of the result were relayed.
    cut_by_bytes: Option<u64>,
    /// The server sent a FATAL (its backend is going away, e.g. `pg_terminate_backend`): when it
    /// then closes, the client has had the server's own goodbye, and gets nothing more.
    server_fatal: bool,
    /// tollgate cancelled the running statement for exceeding its row limit / its timeout.
    cancelled_for_rows: bool,
    timed_out: bool,
}

impl ReplyState {
    fn new(ctx: &PgSession, cancel: CancelSlot, link: Option<Arc<Link>>) -> ReplyState {
        let mut state = ReplyState {
            copy_in: false,
            copy_cleanup_due: false,
            view: AgentView::new(ctx.agent().clone()),
            cancel,
            link,
            seen: HashMap::new(),
            in_step_with: None,
            rows: 0,
            portals: PortalRows::default(),
            base: 0,
            bytes: 0,
            over_limit: false,
            cut_by_bytes: None,
            server_fatal: false,
            cancelled_for_rows: false,
            timed_out: false,
        };
        state.refresh_limits(ctx);
        state
    }

    fn refresh_limits(&mut self, ctx: &PgSession) {
        self.view.refresh(&ctx.session().core().policy);
    }

    /// Between results (no row of the current one counted yet), the limits of a reload apply:
    /// to the next statement's timeout, and to a result's rows from its first.
    fn refresh_between_results(&mut self, ctx: &PgSession) {
        if self.rows == 0 && !self.over_limit {
            self.refresh_limits(ctx);
        }
    }

    /// Cancels the running statement; the client side forwards nothing until it is delivered.
    fn cancel_upstream(&self, pending: &Pending) {
        let Some(target) = self.cancel.load_full() else {
            return; // nothing attached, nothing running
        };
        let in_flight = pending.cancel_started();
        tokio::spawn(async move {
            send_cancel((*target).clone()).await;
            drop(in_flight);
        });
    }

    /// After another server connection was attached: the parameters it reports differently
    /// from what the client was shown, as ParameterStatus messages.
    fn replay_parameters(&mut self, out: &mut BytesMut) {
        let Some(info) = self.link.as_ref().and_then(|l| l.info.load_full()) else {
            return;
        };
        if self
            .in_step_with
            .as_ref()
            .is_some_and(|p| Arc::ptr_eq(p, &info.params))
        {
            return;
        }
        for (name, value) in info.params.iter() {
            if name == "session_authorization" {
                continue; // always shown as the agent
            }
            if self.seen.get(name) != Some(value) {
                self.seen.insert(name.clone(), value.clone());
                out.extend_from_slice(&msg::parameter_status(name, value));
            }
        }
        self.in_step_with = Some(info.params.clone());
    }

    /// A result ended (CommandComplete, PortalSuspended, EmptyQueryResponse, ErrorResponse).
    fn end_result(&mut self) {
        self.rows = 0;
        self.base = 0;
        self.bytes = 0;
        self.over_limit = false;
        self.cut_by_bytes = None;
        self.cancelled_for_rows = false;
    }

    /// The first row of a result: where its count starts (the rows a resumed portal or the
    /// cursor a FETCH reads from returned before).
    fn resume_count(&mut self, pending: &Pending) {
        let base = pending.with(|q| match q.front() {
            Some(Expect::Execute { portal, cursor, .. }) => match self.portals.rows(portal) {
                Some(n) => n,
                None => self.portals.before(cursor.as_ref()),
            },
            Some(Expect::Simple { cursors, .. }) => self.portals.before(cursors.current()),
            _ => 0,
        });
        self.rows = base;
        self.base = base;
    }
}

/// A statement's result is complete (`rows` counted, including what came before): the cursor
/// it used records it, and a simple Query moves on to its next statement.
fn statement_done(pending: &Pending, state: &mut ReplyState, rows: u64) {
    pending.with(|q| match q.front_mut() {
        Some(Expect::Simple { cursors, .. }) => {
            state.portals.completed(cursors.current(), rows);
            cursors.advance();
        }
        Some(Expect::Execute { cursor, .. }) => state.portals.completed(cursor.as_ref(), rows),
        _ => {}
    });
}

/// Runs until the upstream closes or a write to the client fails. Reads whichever server
/// connection is attached to `link`; under transaction pooling it lets go of it when a
/// transaction ends with nothing owed, and waits for the next.
pub async fn run<W: AsyncWrite + Unpin>(
    ctx: Arc<PgSession>,
    pending: Pending,
    link: Arc<Link>,
    shown: Vec<(String, String)>,
    client: &mut W,
) -> Result<(), ToClientError> {
    let client = &mut ClientOut {
        writes: ctx.context().client_writes(),
        socket: client,
    };
    let mut out = BytesMut::new();
    let mut state = ReplyState::new(&ctx, link.cancel.clone(), Some(link.clone()));
    state.seen = shown.into_iter().collect();
    let mut attached = link.subscribe();
    let mut epoch = *attached.borrow_and_update();
    loop {
        let mut guard = link.reader.lock().await;
        let Some(upstream) = guard.as_mut() else {
            drop(guard);
            // Nothing attached: wait for a connection (or replies tollgate gives itself).
            tokio::select! {
                r = attached.changed() => if r.is_err() { return Ok(()) },
                _ = pending.synthetic_pushed() => {}
            }
            flush_synthetic(&pending, client, &mut out).await?;
            continue;
        };
        let now = *attached.borrow_and_update();
        if now != epoch {
            epoch = now;
            state.replay_parameters(&mut out);
        }
        // Between results, the limits of a reload apply from the next statement on (the view
        // was refreshed only at ReadyForQuery: each session's first statement after a reload ran
        // under the old max_rows and timeout).
        state.refresh_between_results(&ctx);
        let timeout = state
            .view
            .limits()
            .statement_timeout
            .as_ref()
            .map(|(d, _)| *d);
        let deadline = match timeout {
            Some(d) if !state.timed_out => pending.oldest_statement_start().map(|s| s + d),
            _ => None,
        };
        let next = tokio::select! {
            f = upstream.next_or_large(STREAM_OVER, streamed) => f,
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(far_future).into()), if deadline.is_some() => {
                state.timed_out = true;
                metrics::counter!("tollgate_statement_timeouts_total", "protocol" => "postgres").increment(1);
                state.cancel_upstream(&pending);
                continue;
            }
            _ = pending.statement_pushed(), if timeout.is_some() && deadline.is_none() && !state.timed_out => continue,
            _ = pending.synthetic_pushed() => {
                drop(guard);
                flush_synthetic(&pending, client, &mut out).await?;
                continue;
            }
        };
        let frame = match next {
            Ok(Some(Incoming::Whole(f))) => f,
            // An error or notice too large to hold: each field cut to its head, then as usual.
            Ok(Some(Incoming::Large { tag, len })) if !is_row(tag) => {
                super::cut_fields::read_cut(upstream, tag, len)
                    .await
                    .map_err(ToClientError::Upstream)?
            }
            Ok(Some(Incoming::Large { tag, len })) => {
                relay_large(&pending, &mut state, upstream, (tag, len), &mut out, client).await?;
                continue;
            }
            // After a FATAL the server closes, as it does direct: the session ends quietly.
            Ok(None) if state.server_fatal => return Ok(()),
            Ok(None) => return Err(ToClientError::UpstreamClosed),
            Err(e) => return Err(ToClientError::Upstream(e)),
        };
        pending.set_unwritten(true);
        on_frame(&ctx, &pending, &mut state, frame, &mut out);
        // Drain what is already buffered before writing, so a burst of rows costs one write.
        while ctx.ending().is_none() && upstream.has_buffered_frame() && out.len() < 256 * 1024 {
            match upstream.next().await {
                Ok(Some(f)) => on_frame(&ctx, &pending, &mut state, f, &mut out),
                Ok(None) => break,
                Err(e) => return Err(ToClientError::Upstream(e)),
            }
        }
        // The transaction is over and nothing is owed: the connection may go back to the pool
        // (not one whose server said FATAL: it is closing).
        let let_go = link.pooled_by_transaction()
            && !state.server_fatal
            && !link.pinned()
            && pending.between_transactions()
            && !upstream.has_buffered_frame();
        drop(guard);
        if let Some(fields) = ctx.ending() {
            // What came before the report was read as analysed; nothing after it is relayed.
            client.send(&out).await?;
            return Err(ToClientError::Fatal(fields.clone()));
        }
        pending.notify_drained();
        client.send(&out).await?;
        pending.set_unwritten(false);
        out.clear();
        if out.capacity() > 256 * 1024 {
            out = BytesMut::new(); // release what a burst grew
        }
        if let_go {
            epoch = *attached.borrow_and_update();
            link.detached.notify_one();
            // Until the client half resumes us (it sent more) or attaches another connection.
            loop {
                tokio::select! {
                    r = attached.changed() => {
                        if r.is_err() {
                            return Ok(());
                        }
                        break;
                    }
                    _ = pending.synthetic_pushed() => {
                        flush_synthetic(&pending, client, &mut out).await?;
                    }
                }
            }
        }
    }
}

/// The client's socket, written within `limits.client_write_timeout_ms`.
struct ClientOut<'a, W> {
    socket: &'a mut W,
    writes: ClientWrites,
}

impl<W: AsyncWrite + Unpin> ClientOut<'_, W> {
    async fn send(&mut self, bytes: &[u8]) -> Result<(), ToClientError> {
        self.writes
            .write_all(self.socket, bytes)
            .await
            .map_err(ToClientError::Client)
    }
}

/// Writes tollgate's own replies that reached the front of the queue.
async fn flush_synthetic<W: AsyncWrite + Unpin>(
    pending: &Pending,
    client: &mut ClientOut<'_, W>,
    out: &mut BytesMut,
) -> Result<(), ToClientError> {
    // Marked unwritten before they leave the queue: a drain must not see the session settled
    // (and close it) while they wait on a full client socket (a live review).
    pending.set_unwritten(true);
    if pending.take_synthetic(out) > 0 {
        pending.notify_drained();
        client.send(out).await?;
        out.clear();
    }
    pending.set_unwritten(false);
    Ok(())
}

fn on_frame(
    ctx: &PgSession,
    pending: &Pending,
    state: &mut ReplyState,
    frame: Frame,
    out: &mut BytesMut,
) {
    // tollgate's own replies that came due before this one.
    pending.take_synthetic(out);
    handle(ctx, pending, state, frame, out);
    pending.take_synthetic(out);
}

/// A NotificationResponse from the attached server about itself names the process the client
/// was shown (transaction pooling shows tollgate's own key), so drivers see their own.
fn notification(state: &ReplyState, frame: Frame) -> bytes::Bytes {
    let body = frame.body();
    let (Some(link), Some(pid)) = (
        state.link.as_ref(),
        body.get(..4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]])),
    ) else {
        return frame.raw;
    };
    let shown = link.client_pid.load(std::sync::atomic::Ordering::Relaxed);
    let own = link.info.load().as_ref().is_some_and(|i| i.pid == pid);
    if !own || shown == 0 || shown == pid {
        return frame.raw;
    }
    let mut rewritten = BytesMut::with_capacity(body.len());
    rewritten.extend_from_slice(&shown.to_be_bytes());
    rewritten.extend_from_slice(&body[4..]);
    msg::raw_message(msg::NOTIFICATION_RESPONSE, &rewritten)
}

fn handle(
    ctx: &PgSession,
    pending: &Pending,
    state: &mut ReplyState,
    frame: Frame,
    out: &mut BytesMut,
) {
    pending.with(|q| {
        if !state.copy_in {
            // CopyDone/CopyFail sent outside a COPY are ignored by the server, and so are their markers.
            while matches!(q.front(), Some(Expect::CopyEnd)) {
                q.pop_front();
            }
        }
    });
    if state.over_limit && row_limit_end(ctx, pending, state, &frame, out) {
        return;
    }
    match frame.tag {
        msg::DATA_ROW => {
            // The first row of a result counts under the limits in force now (the reply may
            // have been awaited since before a reload).
            state.refresh_between_results(ctx);
            if admit_row(pending, state, frame.raw.len()) {
                out.extend_from_slice(&frame.raw);
            }
        }
        msg::COPY_IN_RESPONSE => {
            state.copy_in = true;
            pending.set_copy_waiting(true);
            out.extend_from_slice(&frame.raw);
        }
        msg::COMMAND_COMPLETE | msg::EMPTY_QUERY | msg::PORTAL_SUSPENDED => {
            // tollgate's own reply to a Query it sent empty in its place.
            let answer = match frame.tag {
                msg::EMPTY_QUERY => pending.with(|q| match q.front_mut() {
                    Some(Expect::Simple { answer, .. }) => answer.take(),
                    _ => None,
                }),
                _ => None,
            };
            if frame.body() == b"PREPARE\0" {
                // The server has the statement: its name becomes the session's.
                pending.with(|q| {
                    if let Some(
                        Expect::Simple { prepares, .. } | Expect::Execute { prepares, .. },
                    ) = q.front_mut()
                    {
                        prepares.confirm_next()
                    }
                });
            }
            let rows = match frame.tag {
                msg::COMMAND_COMPLETE => msg::command_rows(frame.body()),
                // A portal suspended after this Execute's rows (drivers' fetch sizes): those
                // rows, as counted here (the server's tag would say them only at the end).
                msg::PORTAL_SUSPENDED => Some(state.rows.saturating_sub(state.base)),
                _ => None,
            };
            if frame.tag != msg::PORTAL_SUSPENDED {
                let counted = state.rows;
                statement_done(pending, state, counted);
            }
            pending.with(|q| match q.front_mut() {
                Some(Expect::Simple { rows: r, .. }) => *r += rows.unwrap_or(0),
                Some(Expect::Execute { .. }) => {
                    if let Some(Expect::Execute {
                        ticket,
                        portal,
                        cursor,
                        ..
                    }) = q.pop_front()
                    {
                        if frame.tag != msg::PORTAL_SUSPENDED && reads_cursor(cursor.as_ref()) {
                            // A FETCH statement's own portal is done; the cursor it read keeps
                            // the count (statement_done).
                            state.portals.bound(&portal);
                        } else if state.rows > 0 {
                            // Suspended, or done but still readable by SQL (FETCH, a scrollable
                            // cursor backwards): later reads count on from here.
                            state.portals.read(&portal, state.rows);
                        }
                        complete(ctx, ticket, rows, None);
                    }
                }
                _ => {}
            });
            end_copy(pending, state);
            state.end_result();
            out.extend_from_slice(answer.as_deref().unwrap_or(&frame.raw));
        }
        msg::PARSE_COMPLETE
        | msg::BIND_COMPLETE
        | msg::CLOSE_COMPLETE
        | msg::NO_DATA
        | msg::ROW_DESCRIPTION => {
            let hidden = pending.with(|q| {
                if let (msg::BIND_COMPLETE, Some(Expect::Bind { portal, .. })) =
                    (frame.tag, q.front())
                {
                    state.portals.bound(portal);
                }
                // How a shared statement was described to the client; and a copy prepared
                // anew before a Bind, described otherwise: the schema changed since the client
                // was told, and the name is stale (`pool::stale_plans`).
                match (frame.tag, q.front()) {
                    (
                        msg::NO_DATA | msg::ROW_DESCRIPTION,
                        Some(Expect::Describe {
                            server_name: Some(name),
                            ..
                        }),
                    ) => pending.described(name, &frame.raw),
                    (
                        msg::NO_DATA | msg::ROW_DESCRIPTION,
                        Some(Expect::HiddenDescribe {
                            server_name: name,
                            params_differ,
                            ..
                        }),
                    ) => {
                        if *params_differ || pending.described_otherwise(name, &frame.raw) {
                            crate::pg::pool::stale_plans::mark(name);
                        }
                        q.pop_front();
                        return true;
                    }
                    _ => {}
                }
                // The reply to a Parse or Close tollgate sent on its own is not the client's.
                let hidden = matches!(
                    (frame.tag, q.front()),
                    (
                        msg::PARSE_COMPLETE | msg::CLOSE_COMPLETE,
                        Some(Expect::Hidden { .. })
                    )
                );
                let done = hidden
                    || matches!(
                        (frame.tag, q.front()),
                        (msg::PARSE_COMPLETE, Some(Expect::Parse { .. }))
                            | (msg::BIND_COMPLETE, Some(Expect::Bind { .. }))
                            | (msg::CLOSE_COMPLETE, Some(Expect::Close))
                            | (
                                msg::NO_DATA | msg::ROW_DESCRIPTION,
                                Some(Expect::Describe { .. })
                            )
                    );
                if done {
                    q.pop_front();
                }
                hidden
            });
            if !hidden {
                out.extend_from_slice(&frame.raw);
            }
        }
        msg::ERROR_RESPONSE => {
            let timed_out =
                state.timed_out && msg::error_field(frame.body(), b'C').as_deref() == Some("57014");
            let own = timed_out.then(|| {
                let (d, rule) = state
                    .view
                    .limits()
                    .statement_timeout
                    .clone()
                    .unwrap_or_default();
                PgErrorFields::error(
                    "57014",
                    format!(
                        "tollgate: canceling statement due to statement timeout of {} ms (rule: {rule})",
                        d.as_millis()
                    ),
                )
            });
            state.server_fatal |= is_fatal(frame.body());
            let frame = match hide_detail(ctx, state, &frame) {
                Some(raw) => Frame {
                    tag: frame.tag,
                    raw,
                },
                None => frame,
            };
            on_error(ctx, pending, state.link.as_deref(), frame, out, own);
            end_copy(pending, state);
            state.end_result();
        }
        msg::READY_FOR_QUERY => {
            pending.ready_now();
            state.timed_out = false;
            state.end_result();
            if let Some(&status) = frame.body().first() {
                pending.set_tx_status(status);
                if status == b'I' {
                    // Portals live until the transaction ends, and so do cursors without HOLD.
                    state.portals.transaction_ended();
                }
            }
            state.refresh_limits(ctx);
            if state.copy_cleanup_due {
                end_copy(pending, state);
            }
            pending.with(|q| {
                // Everything up to and including the Sync or simple Query this answers is done.
                while let Some(e) = q.pop_front() {
                    match e {
                        Expect::Sync => break,
                        Expect::Simple {
                            ticket,
                            rows,
                            error,
                            ..
                        } => {
                            complete(ctx, ticket, Some(rows), error);
                            break;
                        }
                        Expect::Execute { ticket, .. } => {
                            complete(ctx, ticket, None, Some(skipped()))
                        }
                        _ => {}
                    }
                }
            });
            out.extend_from_slice(&frame.raw);
        }
        msg::PARAMETER_STATUS => {
            let mut parts = frame.body().split(|b| *b == 0);
            if let (Some(name), Some(value)) = (parts.next(), parts.next()) {
                state.in_step_with = None;
                state.seen.insert(
                    String::from_utf8_lossy(name).into_owned(),
                    String::from_utf8_lossy(value).into_owned(),
                );
            }
            let shown = ctx.rewrite_parameter_status(&frame);
            // A server that now reads SQL text otherwise ends the session (`run`).
            if ctx.ending().is_none() {
                out.extend_from_slice(&shown);
            }
        }
        msg::PARAMETER_DESCRIPTION => {
            // The parameter types of a shared statement: the client's told, a copy prepared
            // anew compared (a type inferred otherwise after a schema change reads the client's
            // values otherwise: int8 bytes as a float8 matched no row; a re-review).
            let hidden = pending.with(|q| match q.front_mut() {
                Some(Expect::Describe {
                    server_name: Some(name),
                    ..
                }) => {
                    pending.described_params(name, &frame.raw);
                    false
                }
                Some(Expect::HiddenDescribe {
                    server_name,
                    params_differ,
                    ..
                }) => {
                    *params_differ = pending.params_otherwise(server_name, &frame.raw);
                    true
                }
                _ => false,
            });
            if !hidden {
                out.extend_from_slice(&frame.raw);
            }
        }
        msg::NOTIFICATION_RESPONSE => {
            // The LISTEN was judged when it ran; a reload may have taken it away since.
            state.refresh_limits(ctx);
            let listens = state
                .view
                .policy()
                .is_some_and(|p| p.allows_class(ctx.session().upstream(), StatementClass::Listen));
            if !listens {
                ctx.end_for_revoked_listen();
            } else if ctx.ending().is_none() {
                out.extend_from_slice(&notification(state, frame));
            }
        }
        _ => out.extend_from_slice(&frame.raw),
    }
}

/// A server error with a DETAIL, for an agent whose policy masks columns or filters rows here:
/// the error without it. PostgreSQL's DETAIL quotes stored rows ("Failing row contains (...)"
/// of a NOT NULL or CHECK violation prints the whole row, masked columns included: the
/// re-review read emails and SSNs with `INSERT ... ON CONFLICT DO UPDATE SET name = NULL`) and
/// key values.
fn hide_detail(ctx: &PgSession, state: &mut ReplyState, frame: &Frame) -> Option<bytes::Bytes> {
    state.refresh_limits(ctx);
    let protects = state
        .view
        .policy()
        .is_some_and(|p| p.protects_rows(ctx.session().upstream()));
    protects.then(|| msg::without_detail(&frame.raw)).flatten()
}

/// Counts a DataRow of `len` bytes against the agent's row and byte limits; `false` when the
/// row is past them (dropped, the statement cut as the limit's mode says).
fn admit_row(pending: &Pending, state: &mut ReplyState, len: usize) -> bool {
    if state.over_limit {
        return false;
    }
    let limits = state.view.limits();
    if state.rows == 0 && limits.max_rows.is_some() {
        // The first row of a result: resume the portal's or the cursor's count.
        state.resume_count(pending);
    }
    let limits = state.view.limits();
    state.rows += 1;
    let over_rows = limits
        .max_rows
        .as_ref()
        .is_some_and(|(max, _)| state.rows > *max);
    let over_bytes = limits.max_result_bytes.as_ref().is_some_and(|(max, _)| {
        state.bytes += len as u64;
        state.bytes > *max
    });
    if !(over_rows || over_bytes) {
        return true;
    }
    state.over_limit = true;
    if over_rows {
        metrics::counter!("tollgate_row_limit_hits_total", "protocol" => "postgres").increment(1);
    } else {
        metrics::counter!("tollgate_result_bytes_limit_hits_total", "protocol" => "postgres")
            .increment(1);
        // The rows relayed before this one are the result the client keeps.
        state.cut_by_bytes = Some(state.rows - 1 - state.base);
    }
    // An Execute was sent with a row cap of max+1 (truncate mode): the portal stops by itself.
    // A simple query outside a transaction block, or any statement in refuse mode, is
    // cancelled upstream. Inside a transaction block a cancel would abort the agent's
    // transaction, so the rest of the result is read and dropped (bounded by the statement
    // timeout). With more statements already forwarded behind it, a cancel could land on one
    // of them: the rest is read and dropped instead.
    let (simple, alone) = pending.with(|q| {
        (
            matches!(q.front(), Some(Expect::Simple { .. })),
            q.len() == 1,
        )
    });
    let refuse = limits.on_max_rows == RowLimitMode::Refuse;
    if refuse || (simple && alone && pending.tx_status() == b'I') {
        state.cancelled_for_rows = true;
        state.cancel_upstream(pending);
    }
    false
}

/// Messages longer than this are relayed in pieces as they arrive (`relay_large`).
const STREAM_OVER: usize = 256 * 1024;

/// The messages that are never held whole when large: rows (DataRow, COPY TO's CopyData),
/// relayed in pieces as the server wrote them (masks are applied in the SQL, not here), and
/// errors and notices, each of whose fields is cut to its head (`cut_fields`).
fn streamed(tag: u8) -> bool {
    is_row(tag) || matches!(tag, msg::ERROR_RESPONSE | msg::NOTICE_RESPONSE)
}

fn is_row(tag: u8) -> bool {
    matches!(tag, msg::DATA_ROW | msg::COPY_DATA)
}

/// A row too large to hold (`len` bytes with its header, still unread): judged against the
/// limits by its length, then written to the client, or dropped, piece by piece as it arrives.
/// A 500 MB value costs the gateway one piece of memory, not 500 MB per session.
async fn relay_large<W: AsyncWrite + Unpin>(
    pending: &Pending,
    state: &mut ReplyState,
    upstream: &mut super::link::ServerReader,
    (tag, len): (u8, usize),
    out: &mut BytesMut,
    client: &mut ClientOut<'_, W>,
) -> Result<(), ToClientError> {
    pending.set_unwritten(true);
    // tollgate's own replies that came due before it go first.
    pending.take_synthetic(out);
    let keep = tag != msg::DATA_ROW || admit_row(pending, state, len);
    pending.notify_drained();
    client.send(out).await?;
    out.clear();
    let mut left = len;
    while left > 0 {
        let piece = upstream
            .chunk(left.min(super::frame::CHUNK))
            .await
            .map_err(ToClientError::Upstream)?;
        left -= piece.len();
        if keep {
            client.send(&piece).await?;
        }
    }
    pending.set_unwritten(false);
    Ok(())
}

/// The end of a result that went past `max_rows`: in truncate mode the agent gets a notice and a
/// normal completion with `max_rows` rows (also when the end is the upstream's answer to
/// tollgate's cancel); in refuse mode an error. Returns whether `frame` was handled.
fn row_limit_end(
    ctx: &PgSession,
    pending: &Pending,
    state: &mut ReplyState,
    frame: &Frame,
    out: &mut BytesMut,
) -> bool {
    let our_cancel = frame.tag == msg::ERROR_RESPONSE
        && state.cancelled_for_rows
        && msg::error_field(frame.body(), b'C').as_deref() == Some("57014");
    let ends = matches!(frame.tag, msg::COMMAND_COMPLETE | msg::PORTAL_SUSPENDED) || our_cancel;
    if !ends {
        return frame.tag == msg::DATA_ROW; // rows past the limit are dropped
    }
    let cut = Cut::of(state);
    if state.view.limits().on_max_rows == RowLimitMode::Refuse {
        let refusal =
            Refusal::new(RefusalClass::TooLarge, cut.rule, cut.refused).with_instead(cut.instead);
        let fields = ctx.render(&refusal);
        statement_done(pending, state, cut.counted);
        on_error(
            ctx,
            pending,
            state.link.as_deref(),
            frame.clone(),
            out,
            Some(fields),
        );
        state.end_result();
        return true;
    }
    out.extend_from_slice(&msg::notice("01000", &cut.notice));
    let shown = cut.shown;
    let tag = if frame.tag == msg::COMMAND_COMPLETE {
        msg::command_tag_with_rows(frame.body(), shown)
    } else {
        format!("SELECT {shown}")
    };
    out.extend_from_slice(&msg::command_complete(&tag));
    statement_done(pending, state, cut.counted);
    pending.with(|q| match q.front_mut() {
        Some(Expect::Simple { rows, .. }) => *rows += shown,
        Some(Expect::Execute { .. }) => {
            if let Some(Expect::Execute {
                ticket,
                portal,
                cursor,
                ..
            }) = q.pop_front()
            {
                if frame.tag == msg::PORTAL_SUSPENDED || !reads_cursor(cursor.as_ref()) {
                    // The client sees the result complete; should it read the portal again (an
                    // Execute, a SQL FETCH), its count goes on from here.
                    state.portals.read(&portal, cut.counted);
                }
                complete(ctx, ticket, Some(shown), None);
            }
        }
        _ => {}
    });
    state.end_result();
    true
}

/// How a result over a limit ends, in the words of the limit that cut it.
struct Cut {
    rule: String,
    /// The refusal's reason (refuse mode).
    refused: String,
    instead: String,
    /// The notice of truncate mode.
    notice: String,
    /// Rows the client was shown in this result.
    shown: u64,
    /// What the statement counts as having returned (a cursor's later FETCHes continue from it;
    /// past `max_rows` every further FETCH is over the limit too).
    counted: u64,
}

impl Cut {
    fn of(state: &ReplyState) -> Cut {
        let limits = state.view.limits();
        if let Some(shown) = state.cut_by_bytes {
            let (max, rule) = limits.max_result_bytes.clone().unwrap_or_default();
            return Cut {
                notice: format!(
                    "tollgate: result truncated to {shown} rows, the first {max} bytes of row data (rule: {rule})"
                ),
                refused: format!(
                    "the statement returned more than {max} bytes of row data, the most the policy allows"
                ),
                instead: "ask for fewer rows or columns (LIMIT, a narrower WHERE, fewer or shorter columns)".into(),
                rule,
                shown,
                counted: state.base + shown,
            };
        }
        let (max, rule) = limits.max_rows.clone().unwrap_or_default();
        Cut {
            notice: format!("tollgate: result truncated to {max} rows (rule: {rule})"),
            refused: format!("the statement returned more than {max} rows, the most the policy allows"),
            instead: format!(
                "ask for at most {max} rows (LIMIT, a narrower WHERE); a cursor's FETCHes count together"
            ),
            rule,
            // This result shows what was left of the limit after earlier batches or FETCHes.
            shown: max.saturating_sub(state.base),
            counted: max.saturating_add(1),
        }
    }
}

/// Whether a statement is a FETCH (its rows count towards the cursor it reads).
fn reads_cursor(u: Option<&crate::policy::sql::cursors::CursorUse>) -> bool {
    matches!(u, Some(crate::policy::sql::cursors::CursorUse::Fetch(_)))
}

fn far_future() -> std::time::Instant {
    std::time::Instant::now() + std::time::Duration::from_secs(86_400)
}

/// After a COPY FROM STDIN ended (CommandComplete or ErrorResponse), drops the Syncs the server
/// ignored while in copy-in mode: those queued before the client's CopyDone/CopyFail marker.
fn end_copy(pending: &Pending, state: &mut ReplyState) {
    if !state.copy_in {
        return;
    }
    let cleaned = pending.with(|q| {
        let Some(marker) = q.iter().position(|e| matches!(e, Expect::CopyEnd)) else {
            return false; // the client is still sending: clean up at the next ReadyForQuery
        };
        let mut i = 0;
        let mut seen = 0;
        q.retain(|e| {
            let before_marker = seen <= marker;
            seen += 1;
            let drop = before_marker && matches!(e, Expect::Sync | Expect::CopyEnd);
            i += usize::from(drop);
            !drop
        });
        true
    });
    state.copy_in = !cleaned;
    state.copy_cleanup_due = !cleaned;
}

fn skipped() -> OutcomeError {
    OutcomeError {
        code: None,
        message: "not executed: an earlier message in the same batch failed".into(),
    }
}

fn is_fatal(body: &[u8]) -> bool {
    let severity = msg::error_field(body, b'V').or_else(|| msg::error_field(body, b'S'));
    matches!(severity.as_deref(), Some("FATAL" | "PANIC"))
}

/// An ErrorResponse ends the current request; in extended mode the server then discards
/// everything (including simple Queries) up to the next Sync.
fn on_error(
    ctx: &PgSession,
    pending: &Pending,
    link: Option<&Link>,
    frame: Frame,
    out: &mut BytesMut,
    own: Option<PgErrorFields>,
) {
    // A statement tollgate prepared under its name did not make it onto the connection.
    let forget = |name: &Option<Arc<str>>| {
        if let (Some(name), Some(info)) = (name, link.and_then(|l| l.info.load_full())) {
            info.prepared
                .lock()
                .expect("prepared statements")
                .remove(name);
        }
    };
    // tollgate's own words where it caused the error (its statement timeout's cancel): the
    // audit says what the client is told, not the server's "canceling statement due to user
    // request" (a review).
    let err = match &own {
        Some(fields) => OutcomeError {
            code: Some(fields.code.to_string()),
            message: fields.message.clone(),
        },
        None => {
            let (code, message) = msg::error_code_and_message(frame.body());
            OutcomeError {
                code,
                message: message.unwrap_or_default(),
            }
        }
    };
    // A FATAL error (the backend is going away) is never dressed up as a refusal.
    let may_replace = !is_fatal(frame.body());
    // The plan of a prepared statement went stale (a schema change): PostgreSQL's 0A000 from
    // the plan cache's revalidation (its routine field: the message may be translated).
    let stale_plan = err.code.as_deref() == Some("0A000")
        && msg::error_field(frame.body(), b'R').as_deref() == Some("RevalidateCachedQuery");
    // The error's statement, if tollgate rewrote it: where its text came from.
    let mut positions = None;
    let replacement: Option<PgErrorFields> = pending.with(|q| match q.front_mut() {
        None => None, // asynchronous error (e.g. the server shutting down): relay as is
        Some(Expect::Simple {
            refusal,
            error,
            positions: map,
            ..
        }) => {
            positions = map.take();
            let r = if may_replace { refusal.take() } else { None };
            if r.is_none() {
                *error = Some(err.clone());
            }
            if !may_replace {
                // No ReadyForQuery follows a FATAL: the statement's outcome is this error.
                if let Some(Expect::Simple { ticket, error, .. }) = q.pop_front() {
                    complete(ctx, ticket, None, error);
                }
            }
            r
        }
        Some(_) => {
            let mut replacement = None;
            let mut first = true;
            // The error belongs to the first request; an Execute after a failed Parse, Bind or
            // Describe of the same batch carries it in the audit, later ones are "not executed".
            let mut error_for_execute = Some(err.clone());
            while let Some(front) = q.front() {
                if matches!(front, Expect::Sync) {
                    break;
                }
                match q.pop_front() {
                    Some(Expect::Parse {
                        refusal,
                        server_name,
                        named,
                        positions: map,
                        ..
                    }) => {
                        forget(&server_name);
                        if let Some(seq) = named {
                            pending.report_failed_parse(seq);
                        }
                        if first && may_replace {
                            replacement = refusal;
                        }
                        if first {
                            positions = map;
                        }
                    }
                    Some(Expect::Hidden { server_name, .. }) => forget(&server_name),
                    Some(Expect::SyntheticParse(seq)) => pending.report_failed_parse(seq),
                    // The server refused the plan of a statement tollgate shares between
                    // sessions (`cached plan must not change result type` after a schema
                    // change, at Bind or Describe): prepared again at its next use,
                    // everywhere. The client gets the error as it would direct, and so does
                    // every session that prepared it before (`stale_plans`); its driver
                    // prepares again.
                    Some(
                        Expect::Bind {
                            server_name: Some(name),
                            ..
                        }
                        | Expect::Describe {
                            server_name: Some(name),
                            ..
                        },
                    ) if first && stale_plan => crate::pg::pool::stale_plans::mark(&name),
                    // A statement tollgate renamed is missing on the server (its Parse, in
                    // flight, failed): the server named tollgate's statement.
                    Some(
                        Expect::Bind {
                            statement: Some(name),
                            server_name,
                            ..
                        }
                        | Expect::Describe {
                            statement: Some(name),
                            server_name,
                        },
                    ) if first && may_replace && err.code.as_deref() == Some("26000") => {
                        // The connection lacks it whatever tollgate counted: prepared again at
                        // its next use (a connection that kept counting it failed every
                        // session's Bind of the text: a re-review).
                        forget(&server_name);
                        replacement = Some(PgErrorFields::error(
                            "26000",
                            format!("prepared statement \"{name}\" does not exist"),
                        ));
                    }
                    Some(Expect::Execute { ticket, .. }) => complete(
                        ctx,
                        ticket,
                        None,
                        Some(error_for_execute.take().unwrap_or_else(skipped)),
                    ),
                    Some(Expect::Simple { ticket, .. }) => {
                        complete(ctx, ticket, None, Some(skipped()))
                    }
                    _ => {}
                }
                first = false;
            }
            replacement
        }
    });
    let positioned = || {
        let map = positions.as_deref()?;
        msg::with_error_position(&frame.raw, |p| map.original(p))
    };
    match (replacement.or(own), positioned()) {
        (Some(fields), _) => out.extend_from_slice(&ctx.encode_error(&fields)),
        (None, Some(mapped)) => out.extend_from_slice(&mapped),
        (None, None) => out.extend_from_slice(&frame.raw),
    }
}

/// Writes the outcome record of a finished statement (best effort: the decision is already on disk).
fn complete(
    ctx: &PgSession,
    ticket: Option<Ticket>,
    rows: Option<u64>,
    error: Option<OutcomeError>,
) {
    if let Some(t) = ticket {
        ctx.context().outcome(t, rows, error);
    }
}

#[cfg(test)]
mod tests;
