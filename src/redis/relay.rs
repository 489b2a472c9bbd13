//! The relay of a logged-in Redis session: two halves in one task.
//! - [`from_client`](super::from_client) parses each command, asks the policy, records the
//!   decision through the session core, and forwards the command's bytes (or queues tollgate's
//!   own reply, in order);
//! - [`to_client`](super::to_client) cuts upstream replies into frames, pairs each with the
//!   command it answers, masks what the plan says, records outcomes, and relays pub/sub and push
//!   frames as they come.
//!
//! A session starts on a connection shared with other sessions (`shared/`) when it can, and
//! moves to a connection of its own at its first command that needs connection state: the
//! command half opens it, waits until the shared connection has answered everything the
//! session sent there, and hands the new connection's reader to the reply half in order, as
//! an entry ([`Kind::Switch`]).
//!
//! The halves share a bounded channel of batches of [`Entry`]s (one batch per read of the
//! client's pipeline, one wake-up of the other half): at most `MAX_IN_FLIGHT` replies are owed
//! (on a connection of the session's own, at most `own_window`'s, so that Redis does not hold
//! replies the client does not read); a client that pipelines without reading waits, the
//! gateway's memory does not grow.

use crate::refusal::{Refusal, RefusalClass};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::clients::ClientEntry;
use super::from_client::FromClient;
use super::pubsub::SubKind;
use super::reader::{ClientReader, UpstreamReader};
use super::reply;
use super::shared::{Inbox, SharedConn};
use super::to_client::ToClient;
use super::upstream::RedisTarget;
use crate::policy::redis::{CommandTable, MaskPlan, RedisPolicy};
use crate::session::gate::gated;
use crate::session::{Session, Ticket};
use crate::tls::{NetRead, NetWrite};

pub(super) const MAX_IN_FLIGHT: usize = 4096;
/// Commands judged per batch (one audit write per batch).
pub(super) const MAX_BATCH: usize = 512;
/// The most replies a session may be owed on a shared upstream connection: a deeper pipeline
/// moves it to a connection of its own (`FromClient::command`). Pipelines of a few dozen
/// commands (redis-benchmark -P 16, client libraries' batches) stay shared.
pub(super) const SHARED_DEPTH: usize = 32;

/// What a logged-in session relays with.
pub struct Relay {
    pub session: Session,
    pub table: Arc<CommandTable>,
    pub policy: RedisPolicy,
    /// The client speaks RESP3 (after `HELLO 3`).
    pub resp3: bool,
    /// The upstream: its vaulted login (sent again after a client's RESET) and which of its
    /// connections are whose.
    pub target: Arc<RedisTarget>,
    /// This session's upstream connection in `target.clients` (`None` if the upstream gave no
    /// client id).
    pub client: Option<ClientEntry>,
}

/// Named in the record of a session cut off a shared connection for its unread replies
/// (docs/pooling.md).
pub const UNREAD_REPLIES_RULE: &str = "builtin: unread-replies";

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("client: {0}")]
    Client(std::io::Error),
    #[error("connection to the upstream lost: {0}")]
    Upstream(std::io::Error),
    /// A new upstream connection (the session's own, or a shared one replacing a dead one)
    /// could not be opened.
    #[error("{0}")]
    Connect(#[from] super::upstream::UpstreamError),
    #[error("{0}")]
    Shared(#[from] super::shared::Closed),
    /// The client left more replies unread than a shared connection holds for it.
    #[error("the client did not read its replies")]
    Unread,
    #[error("{0}")]
    Scan(#[from] super::scan::ScanError),
    /// A reply fit no command sent: the pairing of replies with commands is lost.
    #[error("the upstream's replies no longer pair with the commands sent")]
    Desync,
}

/// What the reply to one command is, and what to do with it.
#[derive(Debug)]
pub(super) enum Kind {
    /// tollgate's own reply (refusals, AUTH, QUIT's +OK).
    Local(Bytes),
    /// Close the connection once everything before has been written.
    Close,
    Reply(MaskPlan),
    /// A blocking command's reply (BLPOP, XREAD BLOCK, ...): it may come long after it was
    /// judged, so after a reload the command is judged again, and a refusal takes the reply's
    /// place (what it popped is not shown to an agent no longer allowed it).
    Blocking {
        plan: MaskPlan,
        args: Vec<Bytes>,
        version: u64,
    },
    /// A command queued inside MULTI; its plan applies to its slot in EXEC's reply.
    Queued(MaskPlan),
    Exec,
    /// DISCARD was forwarded in place of EXEC (a queued command was refused, or the policy
    /// changed since MULTI): this EXECABORT error is the reply.
    ExecAbort(&'static [u8]),
    Discard,
    /// HELLO: switches the reply protocol when the upstream accepts it.
    Hello(Option<u8>),
    /// (P|S)(UN)SUBSCRIBE: answered by one confirmation per channel (`None`: "all of them").
    Subscribe {
        remaining: Option<usize>,
        kind: SubKind,
    },
    /// RESET: the reply protocol is RESP2 again; subscriptions, MONITOR and MULTI end.
    Reset,
    /// tollgate's own AUTH after a RESET, answered by the upstream and never shown.
    Relogin,
    /// CLIENT KILL sent once per own connection: `left` replies still to come, summed.
    KillParts {
        left: usize,
        killed: i64,
        old_style: bool,
        error: Option<Bytes>,
    },
    /// A reply kept to `agent`'s own connections.
    Own {
        filter: OwnFilter,
        agent: Arc<str>,
    },
    /// The replies after this one come from the session's own connection, this reader's.
    Switch(OwnReader),
}

/// The reading half of a session's own upstream connection, on its way to the reply half.
pub(super) struct OwnReader(pub UpstreamReader<NetRead>);

impl std::fmt::Debug for OwnReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OwnReader")
    }
}

/// The upstream connection a session starts on.
pub enum Start {
    /// Its own (logged in with HELLO, or sharing is off).
    Own {
        reader: UpstreamReader<NetRead>,
        writer: NetWrite,
    },
    /// One shared with other sessions, until it needs its own.
    Shared(Arc<SharedConn>),
}

/// Where the command half writes.
pub(super) enum Sink {
    Own(NetWrite),
    Shared {
        conn: Arc<SharedConn>,
        inbox: Arc<Inbox>,
    },
}

/// Where the reply half reads.
pub(super) enum Source {
    Own(UpstreamReader<NetRead>),
    Shared(Arc<Inbox>),
}

impl Source {
    /// Waits for more from the upstream (an error when the connection closed).
    pub(super) async fn more(&mut self) -> Result<(), RelayError> {
        match self {
            Source::Own(up) => {
                if !up.fill().await.map_err(RelayError::Upstream)? {
                    return Err(RelayError::Upstream(
                        std::io::ErrorKind::UnexpectedEof.into(),
                    ));
                }
            }
            // Closed with replies owed (or the client cut off): the next `take` reports it.
            // Closed with none owed: nothing more comes from it; a `Switch` entry is on its
            // way, or the command half is ending the session.
            Source::Shared(inbox) if inbox.is_closed() => {
                if !inbox.owes() && !inbox.was_cut_off() {
                    std::future::pending::<()>().await;
                }
            }
            Source::Shared(inbox) => inbox.arrived().await,
        }
        Ok(())
    }
}

/// How a reply is kept to the agent's own connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OwnFilter {
    ClientList,
    /// SLOWLOG GET, asked as `GET -1`: the first `n` own entries.
    SlowlogGet(usize),
    /// SLOWLOG LEN, asked as `GET -1`: the number of own entries.
    SlowlogLen,
    /// MONITOR: after its `+OK`, only the lines of own connections.
    Monitor,
}

/// One reply the client is owed, with the decision record its outcome completes.
#[derive(Debug)]
pub(super) struct Entry {
    pub kind: Kind,
    pub ticket: Option<Ticket>,
}

impl Entry {
    pub fn local(bytes: Bytes) -> Entry {
        Entry {
            kind: Kind::Local(bytes),
            ticket: None,
        }
    }
}

/// Relays until the client leaves, the upstream goes away, or a drain closes the session.
pub async fn run<CR, CW>(
    relay: Relay,
    client: ClientReader<CR>,
    mut client_wr: CW,
    start: Start,
) -> Result<(), RelayError>
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin + crate::session::ClientSocket,
{
    // The shared inbox, watched for a cut-off.
    let mut shared_inbox = None;
    let (sink, source) = match start {
        Start::Own { reader, writer } => (Sink::Own(writer), Source::Own(reader)),
        Start::Shared(conn) => {
            let inbox = conn.new_inbox(relay.session.agent().clone());
            shared_inbox = Some(inbox.clone());
            (
                Sink::Shared {
                    conn,
                    inbox: inbox.clone(),
                },
                Source::Shared(inbox),
            )
        }
    };
    let (tx, mut rx) = mpsc::channel(MAX_IN_FLIGHT / MAX_BATCH);
    let owed = Arc::new(AtomicUsize::new(0));
    let ctx = relay.session.context().clone();
    let lifecycle = relay.session.core().lifecycle.clone();
    let mut to = ToClient::new(
        ctx.clone(),
        relay.resp3,
        owed.clone(),
        relay.target.clients.clone(),
    );
    let recheck = super::sub_recheck::SubsRecheck::new(
        relay.session.agent().clone(),
        relay.session.upstream().clone(),
        relay.table.clone(),
        relay.session.core().policy.version(),
    );
    let mut from = FromClient::new(relay, owed.clone());
    from.window = to.window.clone();
    from.reply_cap = to.reply_cap.clone();
    from.agent_seen = Some(recheck.agent());
    from.standing = Some(recheck.standing());
    to.subs_recheck = Some(recheck);
    // Shutting down: closed once every reply owed has been written (or at the deadline).
    // Both rare: gated, so the busy halves' wake-ups do not poll them (`session::gate`).
    let drained = gated(lifecycle.drained(|| owed.load(Ordering::SeqCst) == 0));
    // A session cut off for unread replies ends now: its reply half may be stuck writing to a
    // client that does not read, and its command half waiting for commands.
    let cut_off = gated(async {
        match &shared_inbox {
            Some(inbox) => inbox.cut_off().await,
            None => std::future::pending().await,
        }
    });
    tokio::pin!(drained, cut_off);
    let result = {
        let from_fut = from.run(client, sink, tx);
        let to_fut = to.run(source, &mut client_wr, &mut rx);
        tokio::pin!(from_fut, to_fut);
        tokio::select! {
            r = &mut from_fut => match r {
                // The client stopped sending (EOF after a half-close): the commands it sent
                // are answered first. Whatever then ends the reply half, the client had left.
                Ok(()) => tokio::select! {
                    // Only a client that stopped reading is worth a record (`client_stalled`).
                    r = &mut to_fut => match r {
                        Err(RelayError::Client(e)) if crate::session::WriteStalled::of(&e).is_some() => {
                            Err(RelayError::Client(e))
                        }
                        _ => Ok(()),
                    },
                    _ = &mut drained => Ok(()),
                    _ = &mut cut_off => Err(RelayError::Unread),
                    _ = tokio::time::sleep(crate::session::REPLY_GRACE) => Ok(()),
                },
                Err(e) => Err(e),
            },
            r = &mut to_fut => r,
            _ = &mut drained => Ok(()),
            _ = &mut cut_off => Err(RelayError::Unread),
        }
    };
    let mid_reply = to.mid_reply();
    // However the session ended, a cut-off is why (not a lost upstream).
    let result = match result {
        Err(RelayError::Client(_)) | Ok(()) => result,
        _ if shared_inbox.as_ref().is_some_and(|i| i.was_cut_off()) => Err(RelayError::Unread),
        _ => result,
    };
    // Entries still in the channel were forwarded (or about to be) but never answered.
    rx.close();
    let mut queued = Vec::new();
    while let Ok(batch) = rx.try_recv() {
        queued.extend(batch.into_iter().filter_map(|e| e.ticket));
    }
    // A client that stopped reading its replies: recorded, and its commands' records say so.
    if let Err(RelayError::Client(e)) = &result {
        from.session().client_stalled(e);
    }
    // Cut off a shared connection for its unread replies: the client may see only the close
    // (a cut inside a reply has no error line), so the log says why.
    if matches!(result, Err(RelayError::Unread)) {
        let refusal = Refusal::new(
            RefusalClass::TooLarge,
            UNREAD_REPLIES_RULE,
            format!(
                "session closed: more than {} MiB of replies waited unread on a shared upstream connection",
                super::shared::inbox::QUEUED_BYTES_HARD_LIMIT >> 20
            ),
        );
        ctx.closed_by_policy(from.session().agent().clone(), &refusal);
    }
    for ticket in to.abandon().chain(from.unsent_tickets()).chain(queued) {
        ctx.abandoned(ticket);
    }
    // What the reply half held for the client is freed before the last write, which may wait.
    drop(to);
    // Past the middle of a reply no error line can follow: the close alone says it.
    let last_line = match &result {
        _ if mid_reply => None,
        Err(
            RelayError::Upstream(_)
            | RelayError::Connect(_)
            | RelayError::Scan(_)
            | RelayError::Shared(_),
        ) => Some(reply::error("ERR", &ctx.upstream_lost())),
        Err(RelayError::Desync) => Some(reply::error(
            "ERR",
            "tollgate: the upstream sent a reply that fits no command sent; session closed",
        )),
        Err(RelayError::Unread) => Some(reply::error(
            "ERR",
            &format!(
                "tollgate: more than {} MiB of replies waited unread; session closed",
                super::shared::inbox::QUEUED_BYTES_HARD_LIMIT >> 20
            ),
        )),
        _ => None,
    };
    // A client that does not read cannot hold the session open: the last line and the close
    // get `LAST_WRITE` (the socket closes when the halves are dropped either way).
    crate::session::last_words(
        &mut client_wr,
        &last_line.unwrap_or_default(),
        crate::session::Drain::Session,
    )
    .await;
    result
}
