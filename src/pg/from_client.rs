//! Client → upstream: every message passes here. Query and Parse go through the policy hook;
//! refused statements are replaced by a statement the upstream rejects, so PostgreSQL itself puts
//! the session in the right state (transaction aborted, extended batch skipped to Sync) and the
//! reply stream stays in order; the upstream's error is then swapped for tollgate's refusal.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;

use super::backend::{self as msg, PgErrorFields};
use super::frame::{Frame, FrameError, FrameReader};
use super::frontend::{self as fe, MessageError};
use super::pending::{Expect, Pending};
use super::session::{Checked, SessionCtx};
use crate::policy::{Effect, Outcome, SessionFacts, Verdict};

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

/// How the client side ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientEnd {
    Terminated,
    Closed,
}

/// Per-session protocol state the policy hook needs.
#[derive(Default)]
struct State {
    /// After a refused Parse, messages up to Sync are dropped (the upstream skips them too).
    skip_until_sync: bool,
    /// Prepared statement name → its text and verdict (as checked at Parse).
    statements: HashMap<String, Arc<Checked>>,
    /// Portal name → the statement it runs.
    portals: HashMap<String, Arc<Checked>>,
    facts: SessionFacts,
}

pub async fn run<R: AsyncRead + Unpin>(
    ctx: Arc<SessionCtx>,
    pending: Pending,
    mut client: FrameReader<R>,
    mut upstream: OwnedWriteHalf,
) -> Result<ClientEnd, FromClientError> {
    let mut state = State::default();
    let mut out = BytesMut::new();
    loop {
        let Some(frame) = client.next().await.map_err(FromClientError::Client)? else {
            return Ok(ClientEnd::Closed);
        };
        let mut end = on_frame(&ctx, &pending, &mut state, frame, &mut out)?;
        // Pipelined messages already read are handled before one write upstream.
        while end.is_none() && client.has_buffered_frame() && out.len() < 256 * 1024 {
            match client.next().await.map_err(FromClientError::Client)? {
                Some(f) => end = on_frame(&ctx, &pending, &mut state, f, &mut out)?,
                None => end = Some(ClientEnd::Closed),
            }
        }
        upstream
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

fn fatal_for(e: MessageError) -> FromClientError {
    FromClientError::Fatal(PgErrorFields::fatal("08P01", e.to_string()))
}

fn refusal_for_bad_text(e: MessageError) -> Result<PgErrorFields, FromClientError> {
    match e {
        MessageError::NotUtf8(_) => Ok(PgErrorFields::error(
            "22021",
            "invalid byte sequence for encoding \"UTF8\"",
        )),
        other => Err(fatal_for(other)),
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

fn on_frame(
    ctx: &SessionCtx,
    pending: &Pending,
    state: &mut State,
    frame: Frame,
    out: &mut BytesMut,
) -> Result<Option<ClientEnd>, FromClientError> {
    let skipping = state.skip_until_sync;
    match frame.tag {
        fe::QUERY => {
            let text = match fe::query_text(&frame) {
                Ok(t) => t,
                Err(e) => {
                    let refusal = refusal_for_bad_text(e)?;
                    pending.push(Expect::Simple {
                        ticket: None,
                        refusal: Some(refusal),
                        rows: 0,
                        error: None,
                    });
                    out.extend_from_slice(&substitute_query());
                    return Ok(None);
                }
            };
            let verdict = ctx.check_sql(text, &state.facts);
            match ctx.admit(text, &verdict) {
                Ok(ticket) => {
                    apply_effects(state, &verdict);
                    pending.push(Expect::Simple {
                        ticket,
                        refusal: None,
                        rows: 0,
                        error: None,
                    });
                    out.extend_from_slice(&frame.raw);
                }
                Err(refusal) => {
                    pending.push(Expect::Simple {
                        ticket: None,
                        refusal: Some(refusal),
                        rows: 0,
                        error: None,
                    });
                    out.extend_from_slice(&substitute_query());
                }
            }
        }
        fe::PARSE if skipping => {}
        fe::PARSE => {
            let (name, text) = match fe::parse_fields(&frame) {
                Ok(x) => x,
                Err(e) => {
                    let refusal = refusal_for_bad_text(e)?;
                    refuse_parse(pending, state, "", refusal, out);
                    return Ok(None);
                }
            };
            let verdict = ctx.check_sql(text, &state.facts);
            if verdict.runs() {
                apply_effects(state, &verdict);
                state.statements.insert(
                    name.to_string(),
                    Arc::new(Checked {
                        text: text.into(),
                        verdict,
                    }),
                );
                pending.push(Expect::Parse { refusal: None });
                out.extend_from_slice(&frame.raw);
            } else {
                let refusal = ctx
                    .admit(text, &verdict)
                    .err()
                    .unwrap_or_else(|| ctx.refusal(&verdict));
                state.statements.remove(name);
                refuse_parse(pending, state, name, refusal, out);
            }
        }
        fe::BIND if skipping => {}
        fe::BIND => {
            let (portal, statement) = fe::bind_names(&frame).map_err(fatal_for)?;
            match state.statements.get(statement) {
                Some(text) => state.portals.insert(portal.to_string(), text.clone()),
                None => state.portals.remove(portal),
            };
            pending.push(Expect::Bind);
            out.extend_from_slice(&frame.raw);
        }
        fe::DESCRIBE if skipping => {}
        fe::DESCRIBE => {
            fe::target(&frame, "Describe").map_err(fatal_for)?;
            pending.push(Expect::Describe);
            out.extend_from_slice(&frame.raw);
        }
        fe::EXECUTE if skipping => {}
        fe::EXECUTE => {
            let portal = fe::execute_portal(&frame).map_err(fatal_for)?;
            // A portal tollgate did not bind is a cursor opened by DECLARE, checked when declared.
            let checked = state.portals.get(portal).cloned();
            match ctx.record_execute(portal, checked.as_deref()) {
                Ok(ticket) => {
                    pending.push(Expect::Execute { ticket });
                    out.extend_from_slice(&frame.raw);
                }
                Err(refusal) => refuse_parse(pending, state, "", refusal, out),
            }
        }
        fe::CLOSE if skipping => {}
        fe::CLOSE => {
            let (kind, name) = fe::target(&frame, "Close").map_err(fatal_for)?;
            if kind == b'S' {
                state.statements.remove(name);
            } else {
                state.portals.remove(name);
            }
            pending.push(Expect::Close);
            out.extend_from_slice(&frame.raw);
        }
        fe::SYNC => {
            state.skip_until_sync = false;
            pending.push(Expect::Sync);
            out.extend_from_slice(&frame.raw);
        }
        fe::FLUSH if skipping => {}
        fe::FLUSH | fe::COPY_DATA | fe::COPY_DONE | fe::COPY_FAIL => {
            out.extend_from_slice(&frame.raw)
        }
        fe::TERMINATE => {
            out.extend_from_slice(&frame.raw);
            return Ok(Some(ClientEnd::Terminated));
        }
        fe::FUNCTION_CALL => {
            let refusal = ctx.refuse_function_call();
            pending.push(Expect::Simple {
                ticket: None,
                refusal: Some(refusal),
                rows: 0,
                error: None,
            });
            out.extend_from_slice(&substitute_query());
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

fn refuse_parse(
    pending: &Pending,
    state: &mut State,
    name: &str,
    refusal: PgErrorFields,
    out: &mut BytesMut,
) {
    pending.push(Expect::Parse {
        refusal: Some(refusal),
    });
    out.extend_from_slice(&substitute_parse(name));
    state.skip_until_sync = true;
}

fn apply_effects(state: &mut State, verdict: &Verdict) {
    if verdict.outcome == Outcome::Block {
        return;
    }
    for e in &verdict.effects {
        match e {
            Effect::Prepared(n) => {
                state.facts.sql_prepared.insert(n.clone());
            }
            Effect::Deallocated(Some(n)) => {
                state.facts.sql_prepared.remove(n);
            }
            Effect::Deallocated(None) => state.facts.sql_prepared.clear(),
        }
    }
}
