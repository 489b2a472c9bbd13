//! Upstream → client: relays every backend message as it arrives, pairs replies with what the
//! client is waiting for, swaps tollgate's refusals in, and completes audit records.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;

use super::backend::{self as msg, PgErrorFields};
use super::frame::{Frame, FrameError, FrameReader};
use super::pending::{AuditTicket, Expect, Pending};
use super::session::SessionCtx;

#[derive(Debug, thiserror::Error)]
pub enum ToClientError {
    #[error("upstream connection lost: {0}")]
    Upstream(FrameError),
    #[error("upstream closed the connection")]
    UpstreamClosed,
    #[error("client connection: {0}")]
    Client(std::io::Error),
}

/// Runs until the upstream closes or a write to the client fails.
pub async fn run<W: AsyncWrite + Unpin>(
    ctx: Arc<SessionCtx>,
    pending: Pending,
    mut upstream: FrameReader<OwnedReadHalf>,
    client: &mut W,
) -> Result<(), ToClientError> {
    let mut out = BytesMut::new();
    loop {
        let frame = match upstream.next().await {
            Ok(Some(f)) => f,
            Ok(None) => return Err(ToClientError::UpstreamClosed),
            Err(e) => return Err(ToClientError::Upstream(e)),
        };
        on_frame(&ctx, &pending, frame, &mut out);
        // Drain what is already buffered before writing, so a burst of rows costs one write.
        while upstream.has_buffered_frame() && out.len() < 256 * 1024 {
            match upstream.next().await {
                Ok(Some(f)) => on_frame(&ctx, &pending, f, &mut out),
                Ok(None) => break,
                Err(e) => return Err(ToClientError::Upstream(e)),
            }
        }
        client
            .write_all(&out)
            .await
            .map_err(ToClientError::Client)?;
        out.clear();
        if out.capacity() > 256 * 1024 {
            out = BytesMut::new(); // release what a burst grew
        }
    }
}

fn on_frame(ctx: &SessionCtx, pending: &Pending, frame: Frame, out: &mut BytesMut) {
    match frame.tag {
        msg::COMMAND_COMPLETE | msg::EMPTY_QUERY | msg::PORTAL_SUSPENDED => {
            let rows = if frame.tag == msg::COMMAND_COMPLETE {
                msg::command_rows(frame.body())
            } else {
                None
            };
            pending.with(|q| match q.front_mut() {
                Some(Expect::Simple { rows: r, .. }) => *r += rows.unwrap_or(0),
                Some(Expect::Execute { .. }) => {
                    if let Some(Expect::Execute { ticket }) = q.pop_front() {
                        complete(ctx, ticket, rows, None);
                    }
                }
                _ => {}
            });
            out.extend_from_slice(&frame.raw);
        }
        msg::PARSE_COMPLETE
        | msg::BIND_COMPLETE
        | msg::CLOSE_COMPLETE
        | msg::NO_DATA
        | msg::ROW_DESCRIPTION => {
            pending.with(|q| {
                let done = matches!(
                    (frame.tag, q.front()),
                    (msg::PARSE_COMPLETE, Some(Expect::Parse { .. }))
                        | (msg::BIND_COMPLETE, Some(Expect::Bind))
                        | (msg::CLOSE_COMPLETE, Some(Expect::Close))
                        | (msg::NO_DATA | msg::ROW_DESCRIPTION, Some(Expect::Describe))
                );
                if done {
                    q.pop_front();
                }
            });
            out.extend_from_slice(&frame.raw);
        }
        msg::ERROR_RESPONSE => on_error(ctx, pending, frame, out),
        msg::READY_FOR_QUERY => {
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
                        Expect::Execute { ticket } => complete(ctx, ticket, None, Some(skipped())),
                        _ => {}
                    }
                }
            });
            out.extend_from_slice(&frame.raw);
        }
        msg::PARAMETER_STATUS => out.extend_from_slice(&ctx.rewrite_parameter_status(&frame)),
        _ => out.extend_from_slice(&frame.raw),
    }
}

fn skipped() -> (String, String) {
    (
        "".into(),
        "not executed: an earlier message in the same batch failed".into(),
    )
}

/// An ErrorResponse ends the current request; in extended mode the server then skips to Sync.
fn on_error(ctx: &SessionCtx, pending: &Pending, frame: Frame, out: &mut BytesMut) {
    let (code, message) = msg::error_code_and_message(frame.body());
    let err = (code.unwrap_or_default(), message.unwrap_or_default());
    let replacement: Option<PgErrorFields> = pending.with(|q| match q.front_mut() {
        None => None, // asynchronous error (e.g. the server shutting down): relay as is
        Some(Expect::Simple { refusal, error, .. }) => {
            if refusal.is_none() {
                *error = Some(err.clone());
            }
            refusal.take()
        }
        Some(_) => {
            let mut replacement = None;
            let mut first = true;
            while let Some(front) = q.front() {
                if matches!(front, Expect::Sync | Expect::Simple { .. }) {
                    break;
                }
                match q.pop_front() {
                    Some(Expect::Parse { refusal }) if first => replacement = refusal,
                    Some(Expect::Execute { ticket }) => complete(
                        ctx,
                        ticket,
                        None,
                        Some(if first { err.clone() } else { skipped() }),
                    ),
                    _ => {}
                }
                first = false;
            }
            replacement
        }
    });
    match replacement {
        Some(fields) => out.extend_from_slice(&fields.encode()),
        None => out.extend_from_slice(&frame.raw),
    }
}

/// Writes the outcome record of a finished statement (best effort: the decision is already on disk).
fn complete(
    ctx: &SessionCtx,
    ticket: Option<AuditTicket>,
    rows: Option<u64>,
    error: Option<(String, String)>,
) {
    if let Some(t) = ticket {
        ctx.audit_outcome(t, rows, error);
    }
}
