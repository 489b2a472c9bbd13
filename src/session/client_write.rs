//! Writes to a client that has to keep reading. A client that stops reading its replies would
//! otherwise keep the write, and with it its server connection (a pooled one under transaction
//! pooling) and the locks and snapshot of its statement, for as long as it likes: every door's
//! reply half writes through [`ClientWrites`], which gives up once the client has accepted no
//! byte for `limits.client_write_timeout_ms`. The clock restarts whenever the client takes
//! bytes, so a slow reader is never cut, only one that stopped.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::io::AsyncWrite;

/// The rule a stalled client's session is closed under.
pub const CLIENT_WRITE_TIMEOUT_RULE: &str = "limits.client_write_timeout_ms";

/// A write to the client made no progress for `limits.client_write_timeout_ms`. Carried inside
/// the `io::Error` the write returns, so the front ends' error types need no new variant.
#[derive(Debug, thiserror::Error)]
#[error("the client read none of its replies for {} ms ({CLIENT_WRITE_TIMEOUT_RULE})", .0.as_millis())]
pub struct WriteStalled(pub Duration);

impl WriteStalled {
    /// The stall inside `e`, when that is what ended a write.
    pub fn of(e: &io::Error) -> Option<&WriteStalled> {
        e.get_ref()?.downcast_ref()
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
            stall: (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms)),
        }
    }

    /// Writes all of `buf`. A write the socket takes at once arms no timer (the relay's usual
    /// case); the timer starts when the client's window is full and restarts at every byte it
    /// accepts.
    pub async fn write_all<W: AsyncWrite + Unpin + ?Sized>(
        self,
        w: &mut W,
        mut buf: &[u8],
    ) -> io::Result<()> {
        let mut stall: Option<Pin<Box<tokio::time::Sleep>>> = None;
        poll_fn(|cx| {
            while !buf.is_empty() {
                match Pin::new(&mut *w).poll_write(cx, buf) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        buf = &buf[n..];
                        stall = None; // progress: the clock starts again
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        let Some(limit) = self.stall else {
                            return Poll::Pending;
                        };
                        let timer =
                            stall.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                        return match timer.as_mut().poll(cx) {
                            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                                io::ErrorKind::TimedOut,
                                WriteStalled(limit),
                            ))),
                            Poll::Pending => Poll::Pending,
                        };
                    }
                }
            }
            Poll::Ready(Ok(()))
        })
        .await
    }
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
