//! Writes to a client that has to keep reading. A client that stops reading its replies would
//! otherwise keep the write, and with it its server connection (a pooled one under transaction
//! pooling) and the locks and snapshot of its statement, for as long as it likes: every door's
//! reply half writes through [`ClientWrites`], which gives up once the client has accepted no
//! byte for `limits.client_write_timeout_ms`. The clock restarts whenever the client takes
//! bytes, so a slow reader is never cut, only one that stopped.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

/// The rule a stalled client's session is closed under.
pub const CLIENT_WRITE_TIMEOUT_RULE: &str = "limits.client_write_timeout_ms";

/// A write to the client made no progress for `limits.client_write_timeout_ms`. Carried inside
/// the `io::Error` the write returns, so the front ends' error types need no new variant.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the client read none of its replies for {} ms ({CLIENT_WRITE_TIMEOUT_RULE})", .0.as_millis())]
pub struct WriteStalled(pub Duration);

impl WriteStalled {
    /// The stall inside `e`, when that is what ended a write.
    pub fn of(e: &io::Error) -> Option<&WriteStalled> {
        e.get_ref()?.downcast_ref()
    }
}

/// How much unsent data a client socket may queue (`TCP_NOTSENT_LOWAT`). Without it Linux
/// reports a full socket writable again only once a third of its send buffer (which grows to
/// 4 MiB) has drained, so a client reading a steady 20 KB/s showed no progress for a minute and
/// was taken for one that stopped. With it, each window the client opens by reading (an MSS
/// or more: 64 KiB on loopback) drains the unsent queue and lets a write go on. It bounds what
/// the kernel queues unsent, not what is in flight; the cost is more wake-ups per megabyte of a
/// bulk result (measured: bench/results/2026-12-06-lowat.md).
const NOTSENT_LOWAT: u32 = 16 * 1024;

/// Makes an accepted client socket report the client's progress early (`NOTSENT_LOWAT`).
/// Best effort: where the option does not exist, the clock only sees coarser progress.
pub fn watch_progress(socket: &tokio::net::TcpStream) {
    if let Err(e) = socket2::SockRef::from(socket).set_tcp_notsent_lowat(NOTSENT_LOWAT) {
        tracing::debug!(error = %e, "TCP_NOTSENT_LOWAT not set");
    }
}

/// `limits.client_write_timeout_ms` as a limit (0: none).
fn limit_of(timeout_ms: u64) -> Option<Duration> {
    (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms))
}

/// Time since a client last took a byte, while a write to it is pending: the one clock every
/// stall bound uses. Armed at the first pending write after progress; no timer is allocated
/// while writes go through at once.
#[derive(Debug)]
struct StallClock {
    limit: Option<Duration>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
}

impl StallClock {
    fn new(limit: Option<Duration>) -> StallClock {
        StallClock {
            limit,
            timer: None,
            armed: false,
        }
    }

    /// The client took bytes.
    fn progress(&mut self) {
        self.armed = false;
    }

    /// A write is pending: `Ready(error)` once it has been pending for the limit since the last
    /// progress (the task is woken then), else `Pending`.
    fn pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let Some(limit) = self.limit else {
            return Poll::Pending;
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if !self.armed {
            timer.as_mut().reset(tokio::time::Instant::now() + limit);
            self.armed = true;
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, WriteStalled(limit)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// How a session writes to its client: all of it, or an error once the client stalls.
#[derive(Debug, Clone, Copy)]
pub struct ClientWrites {
    stall: Option<Duration>,
}

impl ClientWrites {
    /// `timeout_ms` 0: no limit.
    pub fn new(timeout_ms: u64) -> ClientWrites {
        ClientWrites {
            stall: limit_of(timeout_ms),
        }
    }

    /// Writes all of `buf` and flushes it (a TLS stream may keep the tail of a write until
    /// flushed). A write the socket takes at once arms no timer (the relay's usual case); the
    /// timer starts when the client's window is full and restarts at every byte it accepts.
    pub async fn write_all<W: AsyncWrite + Unpin + ?Sized>(
        self,
        w: &mut W,
        mut buf: &[u8],
    ) -> io::Result<()> {
        let mut clock = StallClock::new(self.stall);
        poll_fn(|cx| loop {
            let progress = if buf.is_empty() {
                Pin::new(&mut *w).poll_flush(cx)
            } else {
                match Pin::new(&mut *w).poll_write(cx, buf) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        buf = &buf[n..];
                        clock.progress();
                        continue;
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            };
            if progress.is_ready() {
                return progress;
            }
            return clock.pending(cx).map(Err);
        })
        .await
    }
}

/// A connection whose writes fail once the client has taken no byte for the limit: for the
/// HTTP listeners, where hyper does the writing (a response nobody reads would otherwise keep
/// its connection and task for ever). Reads pass through.
pub struct StallGuard<Io> {
    io: Io,
    clock: StallClock,
}

impl<Io> StallGuard<Io> {
    /// `timeout_ms` 0: no limit.
    pub fn new(io: Io, timeout_ms: u64) -> StallGuard<Io> {
        StallGuard {
            io,
            clock: StallClock::new(limit_of(timeout_ms)),
        }
    }

    fn watch<T>(
        &mut self,
        polled: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending => self.clock.pending(cx).map(Err),
            done => {
                self.clock.progress();
                done
            }
        }
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for StallGuard<Io> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for StallGuard<Io> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(polled, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(polled, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(polled, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_shutdown(cx);
        self.watch(polled, cx)
    }
}

/// [`ClientWrites`] that remember whether the session ended inside a write: no error line may
/// follow a reply cut in the middle (the client would read it as part of the reply), only the
/// close.
#[derive(Debug)]
pub struct ReplyWrites {
    writes: ClientWrites,
    inside: bool,
}

impl ReplyWrites {
    pub fn new(writes: ClientWrites) -> ReplyWrites {
        ReplyWrites {
            writes,
            inside: false,
        }
    }

    pub async fn write_all<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        w: &mut W,
        buf: &[u8],
    ) -> io::Result<()> {
        self.inside = true;
        self.writes.write_all(w, buf).await?;
        self.inside = false;
        Ok(())
    }

    /// A write was under way when the session ended (or failed).
    pub fn inside(&self) -> bool {
        self.inside
    }
}

/// How long a session's last words (an error line, a FATAL) and its close may take: a client
/// that does not read cannot keep a finished session's task and connection slot.
pub const LAST_WRITE: Duration = Duration::from_secs(2);

/// Writes a session's last words (may be empty), lingers ([`super::linger`]) and closes the
/// write side: a client still sending keeps being read (up to `drain` bytes), so the close does
/// not reset the connection before the client has read the last words. The drain comes before
/// the FIN: libpq, finding the end of the stream while its own write is blocked, reports a lost
/// connection instead of the FATAL it has read. The write gets [`LAST_WRITE`]; failures are not
/// the session's business any more.
pub async fn last_words<W: AsyncWrite + Unpin + super::ClientSocket + ?Sized>(
    w: &mut W,
    bytes: &[u8],
    drain: super::Drain,
) {
    use tokio::io::AsyncWriteExt;
    let written = tokio::time::timeout(LAST_WRITE, async {
        if !bytes.is_empty() {
            w.write_all(bytes).await?;
        }
        w.flush().await
    })
    .await;
    // A client that did not take the last words in time, or is gone, is not waited for.
    if let Ok(Ok(())) = written {
        super::linger(w, drain).await;
    }
    let _ = tokio::time::timeout(LAST_WRITE, w.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_reader_that_stops_is_cut_and_a_slow_one_is_not() {
        let writes = ClientWrites::new(200);
        // The reader takes 1 KiB every 50 ms: slower than the writer, never stalled for 200 ms.
        let (mut ours, mut theirs) = tokio::io::duplex(1024);
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut chunk = [0u8; 1024];
            while got < 16 * 1024 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                got += theirs.read(&mut chunk).await.unwrap();
            }
            theirs
        });
        writes
            .write_all(&mut ours, &[7u8; 16 * 1024])
            .await
            .unwrap();
        let _theirs = reader.await.unwrap();
        // Nobody reads now: the window fills and the write gives up after the limit.
        let started = std::time::Instant::now();
        let e = writes.write_all(&mut ours, &[7u8; 4096]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let stalled = WriteStalled::of(&e).expect("the stall is carried");
        assert_eq!(stalled.0, Duration::from_millis(200));
        assert!(e.to_string().contains(CLIENT_WRITE_TIMEOUT_RULE), "{e}");
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    /// Takes bytes into a buffer of its own and sends them on only when flushed, as a TLS
    /// stream may (tokio-rustls accepts plaintext while the socket is full).
    #[derive(Default)]
    struct Buffering {
        held: Vec<u8>,
        sent: Vec<u8>,
    }

    impl AsyncWrite for Buffering {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.held.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            mut self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> Poll<io::Result<()>> {
            let held = std::mem::take(&mut self.held);
            self.sent.extend_from_slice(&held);
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn what_a_stream_buffers_is_flushed_to_the_client() {
        let mut w = Buffering::default();
        ClientWrites::new(100)
            .write_all(&mut w, b"ReadyForQuery")
            .await
            .unwrap();
        assert_eq!(
            w.sent, b"ReadyForQuery",
            "nothing left behind in the stream"
        );
    }

    #[tokio::test]
    async fn last_words_give_up_on_a_client_that_does_not_read() {
        let (mut ours, _theirs) = tokio::io::duplex(16);
        let started = std::time::Instant::now();
        last_words(&mut ours, &[0u8; 1024], crate::session::Drain::Login).await;
        let took = started.elapsed();
        assert!(took >= LAST_WRITE && took < LAST_WRITE * 2, "{took:?}");
    }

    #[tokio::test]
    async fn a_guarded_connection_fails_a_write_nobody_reads_and_never_an_idle_one() {
        use tokio::io::AsyncWriteExt;
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut guarded = StallGuard::new(ours, 200);
        // Idle (nothing pending: flushes are ready at once), longer than the limit.
        for _ in 0..4 {
            guarded.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Read slowly, in pieces: the clock restarts at each.
        let reader = tokio::spawn(async move {
            let mut chunk = [0u8; 64];
            for _ in 0..8 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                theirs.read_exact(&mut chunk).await.unwrap();
            }
            theirs
        });
        guarded.write_all(&[1u8; 8 * 64 + 64]).await.unwrap();
        let _theirs = reader.await.unwrap();
        // Nobody reads now: the next write fails after the limit, with the stall inside.
        let e = guarded.write_all(&[1u8; 256]).await.unwrap_err();
        assert_eq!(
            WriteStalled::of(&e).map(|s| s.0),
            Some(Duration::from_millis(200))
        );
    }

    #[tokio::test]
    async fn without_a_limit_a_stalled_write_waits() {
        let (mut ours, _theirs) = tokio::io::duplex(16);
        let write = ClientWrites::new(0).write_all(&mut ours, &[1u8; 64]);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), write)
                .await
                .is_err(),
            "no limit: the write is still waiting"
        );
    }

    #[tokio::test]
    async fn other_errors_are_passed_on() {
        let (mut ours, theirs) = tokio::io::duplex(16);
        drop(theirs);
        let e = ClientWrites::new(100)
            .write_all(&mut ours, b"hello")
            .await
            .unwrap_err();
        assert!(WriteStalled::of(&e).is_none());
    }
}
