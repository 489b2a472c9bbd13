//! Length-checked framing of PostgreSQL messages: `tag | int32 len | body`, zero-copy.
//!
//! The length is validated before any allocation, so a client declaring a 1 GB message is refused
//! without buffering it. Frames are split off the read buffer as `Bytes`, so relaying one costs no copy.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// A read buffer larger than this is released once it is empty.
const MAX_IDLE_BUFFER: usize = 64 * 1024;

/// The most [`FrameReader::chunk`] reads at once.
pub const CHUNK: usize = 64 * 1024;

/// Startup-phase packets (startup, SSLRequest, CancelRequest) are small; PostgreSQL caps them at 10000.
pub const MAX_STARTUP_PACKET: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed in the middle of a message")]
    Truncated,
    #[error("invalid message length {0}")]
    BadLength(i64),
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    /// The gateway-wide budget for client messages being received is spent.
    #[error("{0}")]
    Held(#[from] crate::ratelimit::HeldExhausted),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One whole message: `tag` plus the full encoding (tag, length and body) in `raw`.
#[derive(Debug, Clone)]
pub struct Frame {
    pub tag: u8,
    pub raw: Bytes,
}

impl Frame {
    /// The body after the tag and the length.
    pub fn body(&self) -> &[u8] {
        &self.raw[5..]
    }
}

/// What [`FrameReader::next_or_large`] found next.
#[derive(Debug)]
pub enum Incoming {
    Whole(Frame),
    /// A message too large to hold, still unread: `len` bytes with tag, length and body.
    Large {
        tag: u8,
        len: usize,
    },
}

/// Reads frames from one direction of a connection.
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    limit: usize,
    /// The buffer's share of `limits.max_held_client_bytes` (a client's reader only).
    held: crate::ratelimit::Held,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, limit: usize) -> FrameReader<R> {
        FrameReader {
            inner,
            buf: BytesMut::new(),
            limit,
            held: Default::default(),
        }
    }

    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// Counts this reader's buffer against the gateway-wide budget from now on.
    pub fn set_held(&mut self, held: crate::ratelimit::Held) {
        self.held = held;
    }

    /// True when a complete frame is already buffered (so reading it will not wait on the socket).
    pub fn has_buffered_frame(&self) -> bool {
        self.peek_len()
            .map(|l| self.buf.len() >= l)
            .unwrap_or(false)
    }

    fn peek_len(&self) -> Option<usize> {
        if self.buf.len() < 5 {
            return None;
        }
        let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        usize::try_from(len).ok().map(|l| l + 1)
    }

    /// The next frame, or `None` on a clean end of stream between messages.
    pub async fn next(&mut self) -> Result<Option<Frame>, FrameError> {
        match self.next_or_large(usize::MAX, |_| false).await? {
            Some(Incoming::Whole(frame)) => Ok(Some(frame)),
            // Never: nothing is streamed here.
            Some(Incoming::Large { len, .. }) => Err(FrameError::TooLarge {
                len,
                limit: self.limit,
            }),
            None => Ok(None),
        }
    }

    /// The next frame, or only the header of one longer than `whole_up_to` (tag, length and
    /// body) whose tag `streamed` accepts: that message stays unread, for the caller to take
    /// in pieces with [`FrameReader::chunk`] (its header first), so it is never held whole.
    /// `None` on a clean end of stream between messages. Cancel-safe.
    pub async fn next_or_large(
        &mut self,
        whole_up_to: usize,
        streamed: fn(u8) -> bool,
    ) -> Result<Option<Incoming>, FrameError> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                if len < 4 {
                    return Err(FrameError::BadLength(len as i64));
                }
                let total = len as usize + 1;
                if total > self.limit {
                    return Err(FrameError::TooLarge {
                        len: total,
                        limit: self.limit,
                    });
                }
                if self.buf.len() >= total {
                    let raw = self.buf.split_to(total).freeze();
                    crate::ratelimit::detach_after(&mut self.buf, total);
                    return Ok(Some(Incoming::Whole(Frame { tag: raw[0], raw })));
                }
                if total > whole_up_to && streamed(self.buf[0]) {
                    return Ok(Some(Incoming::Large {
                        tag: self.buf[0],
                        len: total,
                    }));
                }
                self.buf.reserve(total - self.buf.len());
            }
            if self.fill().await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
        }
    }

    /// The next message's tag and total length (tag, length and body), once its five header
    /// bytes are buffered; the message itself stays unread, so the caller can decide to read it
    /// ([`FrameReader::next`]) or drop it as it arrives ([`FrameReader::chunk`]) without ever
    /// holding it. `None` on a clean end of stream between messages. The length is checked for
    /// sense, not against the limit. Cancel-safe.
    pub async fn next_header(&mut self) -> Result<Option<(u8, usize)>, FrameError> {
        while self.buf.len() < 5 {
            if self.fill().await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
        }
        let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        if len < 4 {
            return Err(FrameError::BadLength(len as i64));
        }
        Ok(Some((self.buf[0], len as usize + 1)))
    }

    /// Up to `max` bytes of the stream, taken out of it: what is buffered first, else what one
    /// read brings (at most [`CHUNK`]). Reading a message this way in pieces, and dropping each,
    /// skips it holding no more than one piece. An end of stream is `Truncated`. Cancel-safe.
    pub async fn chunk(&mut self, max: usize) -> Result<Bytes, FrameError> {
        if max == 0 {
            return Ok(Bytes::new());
        }
        if self.buf.is_empty() {
            if self.buf.capacity() < CHUNK {
                // Reclaims the same allocation once the previous piece was dropped.
                self.buf.reserve(CHUNK);
            }
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return Err(FrameError::Truncated);
            }
        }
        let n = max.min(self.buf.len());
        Ok(self.buf.split_to(n).freeze())
    }

    /// The first `keep` bytes of a message of `len` bytes that [`FrameReader::next_or_large`]
    /// announced (its header included); the rest is read and dropped in pieces as it arrives.
    pub async fn head_of(&mut self, len: usize, keep: usize) -> Result<Bytes, FrameError> {
        // The head is held while the rest arrives, maybe slowly: it counts like a buffer of
        // its size (given back at the next read, once the message it makes is judged).
        self.held.track(keep.min(len))?;
        let mut head = BytesMut::with_capacity(keep.min(len));
        let mut left = len;
        while left > 0 {
            let piece = self.chunk(left.min(CHUNK)).await?;
            left -= piece.len();
            let room = keep.saturating_sub(head.len()).min(piece.len());
            head.extend_from_slice(&piece[..room]);
        }
        Ok(head.freeze())
    }

    /// Gives back the memory a large message left behind: the buffer is replaced by a fresh one
    /// holding only what is buffered (nothing, between statements). A buffer the last message
    /// was split off still points into that message's allocation, whatever its capacity says,
    /// and keeps it alive while the connection sits idle in a pool.
    pub fn shrink(&mut self) {
        if self.buf.len() <= MAX_IDLE_BUFFER {
            self.buf = BytesMut::from(&self.buf[..]);
        }
    }

    /// An untagged startup-phase packet (`int32 len | body`), body returned without the length.
    pub async fn next_startup_packet(&mut self) -> Result<Option<Bytes>, FrameError> {
        loop {
            if self.buf.len() >= 4 {
                let len = i32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
                if !(8..=MAX_STARTUP_PACKET as i32).contains(&len) {
                    return Err(FrameError::BadLength(len as i64));
                }
                let len = len as usize;
                if self.buf.len() >= len {
                    let mut raw = self.buf.split_to(len);
                    raw.advance(4);
                    return Ok(Some(raw.freeze()));
                }
            }
            if self.fill().await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
        }
    }

    /// Bytes read past the startup phase (a client must not pipeline before TLS/auth replies).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing is waiting to be read and the peer has not hung up, judged from one
    /// non-blocking read attempt. No timer: tokio rounds a timer up to its next millisecond
    /// tick, and a zero timeout here once made every transaction-pooled checkout wait ~1 ms.
    pub async fn quiet(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut read = std::pin::pin!(self.fill());
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::future::Future::poll(read.as_mut(), cx).is_pending())
        })
        .await
    }

    /// Completes once the peer has closed its end (or the connection broke); never while it is
    /// there. Reads on meanwhile, so a close behind pipelined messages is seen, but stops reading
    /// (and only waits) once `keep` bytes are buffered or the held budget is spent: waiting here
    /// cannot grow memory. Cancel-safe: what it read stays buffered for the next frame.
    pub async fn hung_up(&mut self, keep: usize) {
        while self.buf.len() < keep {
            match self.fill().await {
                Ok(0) | Err(FrameError::Io(_)) => return,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        std::future::pending().await
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    pub fn into_parts(self) -> (R, BytesMut) {
        (self.inner, self.buf)
    }

    pub fn from_parts(inner: R, buf: BytesMut, limit: usize) -> FrameReader<R> {
        FrameReader {
            inner,
            buf,
            limit,
            held: Default::default(),
        }
    }

    async fn fill(&mut self) -> Result<usize, FrameError> {
        if self.buf.is_empty() && self.buf.capacity() > MAX_IDLE_BUFFER {
            // Give back what a burst grew, so idle sessions stay small.
            self.buf = BytesMut::new();
        }
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(8 * 1024);
        }
        // What was consumed since the last read is given back before waiting for the next.
        self.held.track(self.buf.len())?;
        let n = self.inner.read_buf(&mut self.buf).await?;
        self.held.track(self.buf.len())?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::tests_support::Dribble;
    use std::time::Duration;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    /// `quiet` answers on its first poll: a timer (even a zero timeout) would leave it pending
    /// until the runtime's next millisecond tick.
    fn first_poll<F: std::future::Future>(f: F) -> std::task::Poll<F::Output> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        std::future::Future::poll(std::pin::pin!(f), &mut cx)
    }

    /// `hung_up` sees a close behind pipelined messages and keeps them for `next`; once `keep`
    /// bytes are buffered it stops reading (and so stops seeing a close).
    #[tokio::test]
    async fn hung_up_reads_ahead_up_to_its_bound_and_loses_nothing() {
        use tokio::io::AsyncWriteExt;
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        let mut reader = FrameReader::new(near, 1024);
        far.write_all(&msg(b'Q', b"SELECT 1\0")).await.unwrap();
        let early = tokio::time::timeout(Duration::from_millis(50), reader.hung_up(4096)).await;
        assert!(early.is_err(), "the peer is still there");
        far.write_all(&msg(b'X', b"")).await.unwrap();
        drop(far);
        tokio::time::timeout(Duration::from_secs(1), reader.hung_up(4096))
            .await
            .expect("the close is seen");
        assert_eq!(reader.next().await.unwrap().unwrap().tag, b'Q');
        assert_eq!(reader.next().await.unwrap().unwrap().tag, b'X');
        assert!(reader.next().await.unwrap().is_none());

        let (near, mut far) = tokio::io::duplex(64 * 1024);
        let mut reader = FrameReader::new(near, 1 << 20);
        far.write_all(&msg(b'Q', &[b'x'; 500])).await.unwrap();
        drop(far);
        let bounded = tokio::time::timeout(Duration::from_millis(100), reader.hung_up(100)).await;
        assert!(bounded.is_err(), "past its bound it only waits");
    }

    #[tokio::test]
    async fn quiet_is_one_poll_without_a_timer() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut reader = FrameReader::new(near, 1024);
        assert_eq!(first_poll(reader.quiet()), std::task::Poll::Ready(true));
        assert!(reader.quiet().await, "nothing sent yet");
        tokio::io::AsyncWriteExt::write_all(&mut far, b"N")
            .await
            .unwrap();
        assert!(!reader.quiet().await, "a byte arrived unasked");
        drop(far);
        let (near, far) = tokio::io::duplex(64);
        drop(far);
        assert!(
            !FrameReader::new(near, 1024).quiet().await,
            "the peer hung up"
        );
    }

    #[tokio::test]
    async fn reassembles_frames_fed_three_bytes_at_a_time() {
        let mut input = msg(b'Q', b"SELECT 1\0");
        input.extend(msg(b'S', b""));
        let mut r = FrameReader::new(Dribble(input, 3), 1 << 20);
        let f = r.next().await.unwrap().unwrap();
        assert_eq!((f.tag, f.body()), (b'Q', &b"SELECT 1\0"[..]));
        assert_eq!(r.next().await.unwrap().unwrap().tag, b'S');
        assert!(r.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn refuses_oversized_and_negative_lengths_before_buffering() {
        let mut huge = vec![b'Q'];
        huge.extend_from_slice(&i32::MAX.to_be_bytes());
        let mut r = FrameReader::new(Dribble(huge, 100), 1 << 20);
        assert!(matches!(r.next().await, Err(FrameError::TooLarge { .. })));
        let mut neg = vec![b'Q'];
        neg.extend_from_slice(&(-5i32).to_be_bytes());
        let mut r = FrameReader::new(Dribble(neg, 100), 1 << 20);
        assert!(matches!(r.next().await, Err(FrameError::BadLength(-5))));
    }

    #[tokio::test]
    async fn a_message_is_skipped_by_its_header_in_pieces_never_held_whole() {
        let big = vec![b'x'; 1 << 20];
        let mut input = msg(b'D', &big);
        input.extend(msg(b'Z', b"I"));
        let mut r = FrameReader::new(Dribble(input, 100_000), 1 << 30);
        let (tag, len) = r.next_header().await.unwrap().unwrap();
        assert_eq!((tag, len), (b'D', big.len() + 5));
        let mut left = len;
        while left > 0 {
            let piece = r.chunk(left).await.unwrap();
            assert!(
                !piece.is_empty() && piece.len() <= 2 * CHUNK,
                "{}",
                piece.len()
            );
            left -= piece.len();
            assert!(r.buf.capacity() <= 2 * CHUNK, "{}", r.buf.capacity());
        }
        // The next message is intact, its first bytes included.
        assert_eq!(r.next_header().await.unwrap(), Some((b'Z', 6)));
        let f = r.next().await.unwrap().unwrap();
        assert_eq!((f.tag, f.body()), (b'Z', &b"I"[..]));
        assert_eq!(r.next_header().await.unwrap(), None);
        let mut r = FrameReader::new(Dribble(vec![b'D', 0, 0, 0, 2], 5), 1 << 20);
        assert!(matches!(
            r.next_header().await,
            Err(FrameError::BadLength(2))
        ));
        let mut r = FrameReader::new(Dribble(msg(b'D', b"abc")[..6].to_vec(), 6), 1 << 20);
        r.next_header().await.unwrap();
        r.chunk(6).await.unwrap();
        assert!(matches!(r.chunk(1).await, Err(FrameError::Truncated)));
    }

    #[tokio::test]
    async fn only_large_messages_of_streamed_kinds_are_left_unread() {
        let big = vec![b'x'; 300_000];
        let mut input = msg(b'D', b"small");
        input.extend(msg(b'D', &big));
        input.extend(msg(b'E', &big));
        input.extend(msg(b'Z', b"I"));
        let rows = |tag: u8| tag == b'D';
        let mut r = FrameReader::new(Dribble(input, 70_000), 1 << 30);
        let Some(Incoming::Whole(f)) = r.next_or_large(1000, rows).await.unwrap() else {
            panic!("a small row arrives whole")
        };
        assert_eq!(f.body(), b"small");
        let Some(Incoming::Large { tag, len }) = r.next_or_large(1000, rows).await.unwrap() else {
            panic!("a large row is announced, not read")
        };
        assert_eq!((tag, len), (b'D', big.len() + 5));
        assert!(r.buf.capacity() < 2 * CHUNK, "{}", r.buf.capacity());
        // Taken in pieces, header first, every byte once.
        let mut got = Vec::new();
        while got.len() < len {
            got.extend_from_slice(&r.chunk(len - got.len()).await.unwrap());
        }
        assert_eq!(got, msg(b'D', &big));
        // Another kind is read whole whatever its size; the stream goes on in step.
        let Some(Incoming::Whole(f)) = r.next_or_large(1000, rows).await.unwrap() else {
            panic!("an error message is not streamed")
        };
        assert_eq!((f.tag, f.body().len()), (b'E', big.len()));
        assert_eq!(r.next().await.unwrap().unwrap().tag, b'Z');
        assert!(r.next_or_large(1000, rows).await.unwrap().is_none());
        // The limit still holds for streamed kinds.
        let mut r = FrameReader::new(Dribble(msg(b'D', &big), 70_000), 100_000);
        assert!(matches!(
            r.next_or_large(1000, rows).await,
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn shrink_lets_go_of_a_large_message_allocation() {
        // Both messages arrived in one read: reading them reserves nothing new.
        let mut input = msg(b'D', &vec![b'x'; 1 << 20]);
        input.extend(msg(b'Z', b"I"));
        let mut r = FrameReader::from_parts(Dribble(Vec::new(), 1), input[..].into(), 1 << 30);
        let f = r.next().await.unwrap().unwrap();
        assert_eq!(r.next().await.unwrap().unwrap().tag, b'Z');
        assert!(r.buf.is_empty() && r.buf.capacity() < MAX_IDLE_BUFFER);
        // A message over held::FREE leaves the buffer on an allocation of its own at once: the
        // frame alone owns its 1 MiB, and dropping it frees it (an idle session used to keep
        // it, uncounted by the held budget).
        assert!(f.raw.is_unique(), "not shared with the reader's buffer");
        r.shrink();
        assert_eq!(r.buf.capacity(), 0);
    }

    #[tokio::test]
    async fn truncated_message_is_an_error_not_a_hang() {
        let mut input = msg(b'Q', b"SELECT 1\0");
        input.truncate(7);
        let mut r = FrameReader::new(Dribble(input, 2), 1 << 20);
        assert!(matches!(r.next().await, Err(FrameError::Truncated)));
    }

    #[tokio::test]
    async fn startup_packets_are_capped() {
        let mut r = FrameReader::new(Dribble(20_000i32.to_be_bytes().to_vec(), 4), 1 << 20);
        assert!(matches!(
            r.next_startup_packet().await,
            Err(FrameError::BadLength(20_000))
        ));
        let mut ok = 8i32.to_be_bytes().to_vec();
        ok.extend_from_slice(&80877103i32.to_be_bytes());
        let mut r = FrameReader::new(Dribble(ok, 1), 1 << 20);
        assert_eq!(
            &r.next_startup_packet().await.unwrap().unwrap()[..],
            &80877103i32.to_be_bytes()
        );
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary bytes in arbitrary chunk sizes: frames, a clean end, or an error; no panic.
        #[test]
        fn arbitrary_streams_never_panic(input in proptest::collection::vec(any::<u8>(), 0..2000), chunk in 1usize..64) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let mut r = FrameReader::new(tests_support::Dribble(input.clone(), chunk), 4096);
                for _ in 0..1000 {
                    match r.next().await {
                        Ok(Some(f)) => assert_eq!(f.raw.len(), 1 + i32::from_be_bytes([f.raw[1], f.raw[2], f.raw[3], f.raw[4]]) as usize),
                        _ => break,
                    }
                }
                let mut r = FrameReader::new(tests_support::Dribble(input, chunk), 4096);
                let _ = r.next_startup_packet().await;
            });
        }
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use tokio::io::AsyncRead;

    /// A reader that yields its input a few bytes at a time.
    pub struct Dribble(pub Vec<u8>, pub usize);

    impl AsyncRead for Dribble {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let n = self.1.min(self.0.len()).min(buf.remaining());
            let chunk: Vec<u8> = self.0.drain(..n).collect();
            buf.put_slice(&chunk);
            std::task::Poll::Ready(Ok(()))
        }
    }
}
