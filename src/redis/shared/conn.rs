//! One upstream connection shared by many sessions (pipelined multiplexing, as twemproxy does):
//! sessions append their commands to one write buffer and, in the same step, a route saying
//! whose the next replies are; a writer task writes the buffer as it fills (one write for many
//! sessions' commands), a reader task cuts the replies into frames and hands each session its
//! own, in order. Only commands that neither read nor change connection state come here
//! (`route.rs`); a frame nobody is owed means the stream cannot be trusted any more, and the
//! connection is closed with every session on it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tracing::{debug, warn};

use super::inbox::{Budget, Inbox, Piece};
use crate::redis::reader::UpstreamReader;
use crate::redis::upstream::{RedisCredentials, Upstream};
use crate::telemetry::GaugeGuard;
use crate::tls::{NetRead, NetWrite};

/// A write buffer larger than this is not kept for reuse after a burst.
const KEEP_BUFFER: usize = 1 << 20;

/// Commands waiting to be written beyond this make sessions wait before queuing more (the
/// upstream is slower than they are; their own connections' sockets would push back too).
const OUT_LIMIT: usize = 16 << 20;

/// A reply still arriving is relayed in pieces once this much of it waits, so a large value
/// is never held whole (as on a session's own connection).
const STREAM_AFTER: usize = 256 * 1024;

/// A shared connection; dropping the last handle closes it.
pub struct SharedConn {
    inner: Arc<Inner>,
    tasks: [AbortHandle; 2],
    /// The login it was opened with: a vault rotation makes new sessions use a new connection.
    pub(super) credentials: Arc<RedisCredentials>,
    /// What its sessions' inboxes may hold together (with the upstream's other connections).
    budget: Arc<Budget>,
}

struct Inner {
    queue: Mutex<Queue>,
    wake_writer: Notify,
    /// Tells sessions waiting in `writable` that the writer made progress (or the close).
    space: Notify,
    /// Sessions cut off for not reading their replies.
    cut_offs: metrics::Counter,
    closed: AtomicBool,
    _gauge: GaugeGuard,
}

#[derive(Default)]
struct Queue {
    out: BytesMut,
    routes: VecDeque<Route>,
}

/// The next `left` replies are `to`'s.
struct Route {
    to: Arc<Inbox>,
    left: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("the shared upstream connection is closed")]
pub struct Closed;

impl SharedConn {
    /// Takes over a logged-in connection and starts its reader and writer.
    pub fn start(
        up: Upstream,
        upstream: &str,
        credentials: Arc<RedisCredentials>,
        budget: Arc<Budget>,
    ) -> SharedConn {
        let inner = Arc::new(Inner {
            queue: Mutex::new(Queue::default()),
            wake_writer: Notify::new(),
            space: Notify::new(),
            cut_offs: metrics::counter!("tollgate_redis_shared_cutoffs_total", "upstream" => upstream.to_owned()),
            closed: AtomicBool::new(false),
            _gauge: crate::telemetry::upstream_connection(upstream),
        });
        let (rd, wr) = up.stream.into_split();
        let reader = tokio::spawn(read_loop(inner.clone(), UpstreamReader::new(rd)));
        let writer = tokio::spawn(write_loop(inner.clone(), wr));
        SharedConn {
            inner,
            tasks: [reader.abort_handle(), writer.abort_handle()],
            credentials,
            budget,
        }
    }

    /// A new session's inbox (`agent`'s), counted against the upstream's budget.
    pub fn new_inbox(&self, agent: Arc<str>) -> Arc<Inbox> {
        Inbox::within(self.budget.clone(), agent)
    }

    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    /// Waits while more than `OUT_LIMIT` bytes wait to be written.
    pub async fn writable(&self) {
        // The usual case, without registering a waiter (a lock and a list insert each time).
        if self.backlog() <= OUT_LIMIT || self.is_closed() {
            return;
        }
        loop {
            let space = self.inner.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            if self.backlog() <= OUT_LIMIT || self.is_closed() {
                return;
            }
            space.await;
        }
    }

    fn backlog(&self) -> usize {
        self.inner
            .queue
            .lock()
            .expect("shared queue lock")
            .out
            .len()
    }

    /// Queues `commands` (`replies` of them answered) for `inbox`'s session.
    pub fn send(&self, inbox: &Arc<Inbox>, commands: &[u8], replies: usize) -> Result<(), Closed> {
        if replies == 0 && commands.is_empty() {
            return Ok(());
        }
        inbox.expect(replies);
        {
            let mut q = self.inner.queue.lock().expect("shared queue lock");
            // Checked under the lock: `close` takes it too, so no route is added after it
            // closed the inboxes of the routes it found.
            // The session's inbox closed too: it was cut off for unread replies, and what
            // it still sends must not run.
            if self.is_closed() || inbox.is_closed() {
                drop(q);
                inbox.close();
                return Err(Closed);
            }
            q.out.extend_from_slice(commands);
            match q.routes.back_mut() {
                Some(r) if Arc::ptr_eq(&r.to, inbox) => r.left += replies,
                _ if replies == 0 => {}
                _ => q.routes.push_back(Route {
                    to: inbox.clone(),
                    left: replies,
                }),
            }
        }
        self.inner.wake_writer.notify_one();
        Ok(())
    }
}

#[cfg(test)]
impl SharedConn {
    pub fn inner_close_for_tests(&self) {
        self.inner.close();
    }
}

impl Drop for SharedConn {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.inner.close();
    }
}

impl Inner {
    /// No more commands are taken, and every session waiting for a reply is told.
    fn close(&self) {
        let routes = {
            let mut q = self.queue.lock().expect("shared queue lock");
            self.closed.store(true, Ordering::SeqCst);
            q.out.clear();
            std::mem::take(&mut q.routes)
        };
        for r in routes {
            r.to.close();
        }
        self.wake_writer.notify_one();
        self.space.notify_waiters();
    }

    /// Hands `pieces` to their sessions, in order; `false` if a piece was owed to nobody (the
    /// pieces before it still reach their sessions, whose routes are gone by then: the close
    /// that follows would not tell them).
    fn route(&self, pieces: &mut Vec<Piece>) -> bool {
        // The routes are taken under the lock, the pieces delivered after it: (whose, how many).
        let mut plan: Vec<(Arc<Inbox>, usize)> = Vec::new();
        let mut owed = true;
        {
            let mut q = self.queue.lock().expect("shared queue lock");
            for piece in pieces.iter() {
                let Some(front) = q.routes.front_mut() else {
                    owed = false;
                    break;
                };
                match plan.last_mut() {
                    Some((to, n)) if Arc::ptr_eq(to, &front.to) => *n += 1,
                    _ => plan.push((front.to.clone(), 1)),
                }
                if piece.ends() {
                    front.left -= 1;
                    if front.left == 0 {
                        q.routes.pop_front();
                    }
                }
            }
        }
        let mut pieces = pieces.drain(..);
        for (to, k) in plan {
            let cut = to.deliver(pieces.by_ref().take(k));
            if cut > 0 {
                self.cut_offs.increment(cut as u64);
                warn!(
                    sessions = cut,
                    "sessions did not read their replies; cut off from the shared connection"
                );
            }
        }
        owed
    }
}

async fn read_loop(inner: Arc<Inner>, mut rd: UpstreamReader<NetRead>) {
    let mut pieces = Vec::new();
    // The reply at the front is being relayed in pieces.
    let mut streaming = false;
    let why = loop {
        loop {
            match rd.next_frame() {
                Ok(Some(f)) if std::mem::take(&mut streaming) => pieces.push(Piece::Tail(f)),
                Ok(Some(f)) => pieces.push(Piece::Whole(f)),
                Ok(None) => break,
                Err(e) => {
                    warn!(error = %e, "unreadable reply on a shared upstream connection");
                    inner.close();
                    return;
                }
            }
        }
        if streaming || rd.buffered().len() >= STREAM_AFTER {
            let head = rd.take_scanned();
            if !head.is_empty() {
                streaming = true;
                pieces.push(Piece::Head(head));
            }
        }
        if !pieces.is_empty() && !inner.route(&mut pieces) {
            warn!("a reply nobody was owed on a shared upstream connection; closing it");
            break "unowed reply";
        }
        match rd.fill().await {
            Ok(true) => {}
            Ok(false) => break "closed by the upstream",
            Err(_) => break "read error",
        }
    };
    debug!(why, "shared upstream connection closed");
    inner.close();
}

async fn write_loop(inner: Arc<Inner>, mut wr: NetWrite) {
    let mut buf = BytesMut::new();
    loop {
        {
            let mut q = inner.queue.lock().expect("shared queue lock");
            std::mem::swap(&mut q.out, &mut buf);
        }
        if buf.is_empty() {
            if inner.closed.load(Ordering::SeqCst) {
                break;
            }
            inner.wake_writer.notified().await;
            // Let the other sessions that are ready now add their commands first: one write
            // then carries all of them (the batching that makes sharing pay).
            tokio::task::yield_now().await;
            continue;
        }
        if wr.write_all(&buf).await.is_err() {
            inner.close();
            break;
        }
        buf.clear();
        if buf.capacity() > KEEP_BUFFER {
            buf = BytesMut::new();
        }
        inner.space.notify_waiters();
    }
    let _ = wr.shutdown().await;
}
