//! The relay of a logged-in MongoDB session: two halves in one task.
//! - [`from_client`](super::from_client) parses each message, asks the policy, records the
//!   decision through the session core, and forwards the command (as received, or as the policy
//!   rewrote it), or queues tollgate's own reply in its place;
//! - [`to_client`](super::to_client) pairs each upstream reply with the request it answers,
//!   masks what the plan says, keeps the session's cursors, cuts results at `max_rows`, and
//!   records outcomes.
//!
//! The halves share an ordered, bounded queue of [`Entry`]s (at most `MAX_IN_FLIGHT` replies
//! owed: a client that pipelines without reading waits) and the session's cursor registry; the
//! reply half asks the client half to kill an upstream cursor it cut short.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::cursors::Cursors;
use super::from_client::FromClient;
use super::hello::UpstreamFacts;
use super::op_msg::OpMsg;
use super::reply::{self, code};
use super::to_client::ToClient;
use super::wire::{MessageReader, MAX_MESSAGE_BYTES};
use crate::policy::limits::{Limits, RowLimitMode};
use crate::policy::mongo::{MongoPolicy, MongoRules, ReplyPlan};
use crate::session::{Session, Ticket};
use crate::tls::NetStream;

pub(super) const MAX_IN_FLIGHT: usize = 1024;

/// What a logged-in session relays with.
pub struct Relay {
    pub session: Session,
    pub policy: MongoPolicy,
    /// The upstream's wire versions and limits (tollgate's `hello` in the session says them).
    pub facts: UpstreamFacts,
    /// What `hello` reports as `connectionId` (the session id).
    pub connection_id: i64,
    /// The upstream's logical sessions and whose they are.
    pub lsids: Arc<super::lsids::LogicalSessions>,
    /// The agent's open cursors on this upstream, shared with its other sessions.
    pub cursors: SharedCursors,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("client: {0}")]
    Client(std::io::Error),
    #[error("connection to the upstream lost: {0}")]
    Upstream(std::io::Error),
    #[error("the upstream broke the protocol: {0}")]
    UpstreamProtocol(String),
}

/// What the session does with a document-returning cursor past the agent's `max_rows`.
#[derive(Debug, Clone)]
pub(super) struct RowLimit {
    pub max: u64,
    pub mode: RowLimitMode,
    pub rule: String,
}

impl RowLimit {
    /// The agent's `max_rows` (with its mode and rule), if its policy sets one.
    pub(super) fn of(limits: &Limits) -> Option<RowLimit> {
        limits.max_rows.as_ref().map(|(max, rule)| RowLimit {
            max: *max,
            mode: limits.on_max_rows,
            rule: rule.clone(),
        })
    }
}

/// What the reply to a forwarded command means for the session's cursors.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Track {
    /// A cursor the reply opens (find, aggregate, listCollections, ...) is remembered.
    Open,
    /// getMore on this (own) cursor.
    GetMore(i64),
    /// killCursors of these (own) cursors.
    Kill(Vec<i64>),
}

/// What to do with the upstream's reply to a forwarded command.
#[derive(Debug)]
pub(super) struct Expect {
    pub plan: ReplyPlan,
    /// The rules listings are cut with (`None`: nothing visible).
    pub rules: Option<Arc<MongoRules>>,
    pub track: Track,
    /// Where a cursor opened by this command lives (when the reply does not say).
    pub namespace: String,
    pub limit: Option<RowLimit>,
    /// The agent's `max_result_bytes`, for this reply.
    pub bytes: Option<ByteCap>,
    /// What a cursor this reply opens remembers of the command (`Track::Open`).
    pub origin: super::cursors::Origin,
}

/// `max_result_bytes` on the MongoDB listener: per reply (a find's first batch, each getMore's),
/// as `max_rows`' mode says (truncate the batch and close the cursor, or refuse).
#[derive(Debug, Clone)]
pub(super) struct ByteCap {
    pub max: u64,
    pub mode: RowLimitMode,
    pub rule: String,
}

impl ByteCap {
    pub(super) fn of(limits: &Limits) -> Option<ByteCap> {
        limits.max_result_bytes.as_ref().map(|(max, rule)| ByteCap {
            max: *max,
            mode: limits.on_max_rows,
            rule: rule.clone(),
        })
    }
}

#[derive(Debug)]
pub(super) enum Kind {
    /// tollgate's own reply (refusals, `hello`), already encoded.
    Local(Vec<u8>),
    /// Close the connection once everything before has been written.
    Close,
    Reply(Box<Expect>),
    /// The reply to tollgate's own message (killCursors of a cursor cut short): dropped.
    Internal,
}

/// One reply the client (or tollgate) is owed, with the decision record its outcome completes.
#[derive(Debug)]
pub(super) struct Entry {
    /// The request the reply answers (its `responseTo`).
    pub request_id: i32,
    pub kind: Kind,
    pub ticket: Option<Ticket>,
}

/// State both halves touch: the cursors this session opened.
pub(super) type SharedCursors = Arc<Mutex<Cursors>>;

/// An error reply to request `request_id`.
pub(super) fn error_reply(request_id: i32, c: (i32, &str), message: &str) -> Vec<u8> {
    OpMsg::reply(request_id, 0, &reply::error(c, message)).encode(false)
}

/// Relays until the client leaves, the upstream goes away, or a drain closes the session.
pub async fn run<CR, CW>(
    relay: Relay,
    client: MessageReader<CR>,
    mut client_wr: CW,
    upstream: NetStream,
    leftover: BytesMut,
) -> Result<(), RelayError>
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin + crate::session::ClientSocket,
{
    let (up_rd, up_wr) = upstream.into_split();
    let up_reader = MessageReader::with_buffer(up_rd, MAX_MESSAGE_BYTES, leftover);
    let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT);
    let (kill_tx, kill_rx) = mpsc::unbounded_channel();
    let owed = Arc::new(AtomicUsize::new(0));
    let cursors: SharedCursors = relay.cursors.clone();
    let ctx = relay.session.context().clone();
    let lifecycle = relay.session.core().lifecycle.clone();
    let mut to = ToClient::new(ctx.clone(), cursors.clone(), kill_tx, owed.clone());
    let mut from = FromClient::new(relay, cursors, owed.clone());
    // Shutting down: closed once every reply owed has been written (or at the deadline).
    // Gated: the relay's wake-ups do not poll it (`session::gate`).
    let drained =
        crate::session::gate::gated(lifecycle.drained(|| owed.load(Ordering::SeqCst) == 0));
    tokio::pin!(drained);
    let result = {
        let from_fut = from.run(client, up_wr, tx, kill_rx);
        let to_fut = to.run(up_reader, &mut client_wr, rx);
        tokio::pin!(from_fut, to_fut);
        tokio::select! {
            r = &mut from_fut => match r {
                // The client stopped sending (EOF after a half-close): the requests it sent are
                // answered first, as a server answers what it read before the end.
                Ok(()) => tokio::select! {
                    r = &mut to_fut => r,
                    _ = &mut drained => Ok(()),
                    _ = tokio::time::sleep(crate::session::REPLY_GRACE) => Ok(()),
                },
                Err(e) => Err(e),
            },
            r = &mut to_fut => r,
            _ = &mut drained => Ok(()),
        }
    };
    // A client that stopped reading its replies: recorded, and its commands' records say so.
    if let Err(RelayError::Client(e)) = &result {
        from.session().client_stalled(e);
    }
    let front = to.front_request();
    for ticket in to.abandon() {
        ctx.abandoned(ticket);
    }
    let last_line = match &result {
        _ if to.mid_reply() => None,
        Err(RelayError::Upstream(_) | RelayError::UpstreamProtocol(_)) => {
            let msg = ctx.upstream_lost();
            front.map(|id| error_reply(id, code::HOST_UNREACHABLE, &msg))
        }
        _ => None,
    };
    // What the reply half held for the client (cursor state, a reply in pieces) is freed
    // before the last words and the lingering close, which may take seconds.
    drop(to);
    // A client that does not read cannot hold the session open (`LAST_WRITE`).
    crate::session::last_words(
        &mut client_wr,
        &last_line.unwrap_or_default(),
        crate::session::Drain::Session,
    )
    .await;
    result
}
