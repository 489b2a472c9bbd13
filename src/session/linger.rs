//! A lingering close, as web servers do it: after a session's last words (an error, a FATAL)
//! and its FIN, what the client is still sending is read and thrown away for a moment before
//! the socket closes. Linux answers a close with unread bytes in the receive queue with RST,
//! not FIN, and RST fails the client's next write: a client refused in the middle of sending a
//! large message (over a limit, say) saw "connection reset" or "broken pipe" from its write
//! and never read the error that said why. While tollgate drains, its write goes through and
//! the client reads the error, then the end of the stream.

use std::time::Duration;

use tokio::net::TcpStream;

/// How long the drain waits for more bytes: a client still sending sends them back to back; a
/// client that has stopped gets the close after this pause.
const LINGER_IDLE: Duration = Duration::from_millis(300);

/// The longest a drain lasts: a client that streams on is cut off (with RST) after this, and
/// holds the session's task and slot no longer.
const LINGER_TIME: Duration = Duration::from_secs(2);

/// How much a drain may read: what a client may still be sending when it is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Before authentication nothing legitimate is large (a SCRAM message, an AUTH): a peer
    /// with no token cannot make the gateway read more than this.
    Login,
    /// A session's message refused while it arrives (over `limits.max_message_bytes`, 64 MiB
    /// by default, or the held budget): up to four times that limit's default is read.
    Session,
}

impl Drain {
    fn bytes(self) -> usize {
        match self {
            Drain::Login => 1 << 20,
            Drain::Session => 256 << 20,
        }
    }
}

/// The TCP socket under a client's write half, for reading past its stream.
pub enum LingerSocket<'a> {
    /// A plain connection's own socket.
    Registered(&'a TcpStream),
    /// The socket under a TLS stream, reached through the lock its halves share (taken only
    /// inside each poll).
    Tls(&'a crate::tls::SharedTls),
}

impl LingerSocket<'_> {
    fn with_socket<R>(&self, f: impl FnOnce(&TcpStream) -> R) -> R {
        match self {
            LingerSocket::Registered(s) => f(s),
            LingerSocket::Tls(m) => f(m.lock().unwrap_or_else(|e| e.into_inner()).get_ref().0),
        }
    }
}

/// A client writer that can hand out its socket for a lingering close.
pub trait ClientSocket {
    /// `None` where there is no socket (in-memory streams) or it was handed out already.
    fn linger_socket(&mut self) -> Option<LingerSocket<'_>>;
}

impl ClientSocket for tokio::io::DuplexStream {
    fn linger_socket(&mut self) -> Option<LingerSocket<'_>> {
        None
    }
}

/// Reads and discards what arrives until the client closes, pauses for [`LINGER_IDLE`], or
/// the drain reaches [`LINGER_TIME`] or `drain`'s bytes. Call after the last words were sent
/// and before the write side is shut.
pub async fn linger<W: ClientSocket + ?Sized>(w: &mut W, drain: Drain) {
    let Some(socket) = w.linger_socket() else {
        return;
    };
    read_away(&socket, drain.bytes()).await;
}

async fn read_away(socket: &LingerSocket<'_>, most: usize) {
    let until = tokio::time::Instant::now() + LINGER_TIME;
    let mut buf = vec![0u8; 16 * 1024];
    let mut read = 0usize;
    while read < most {
        let pause = (tokio::time::Instant::now() + LINGER_IDLE).min(until);
        let readable = std::future::poll_fn(|cx| socket.with_socket(|s| s.poll_read_ready(cx)));
        match tokio::time::timeout_at(pause, readable).await {
            Ok(Ok(())) => match socket.with_socket(|s| s.try_read(&mut buf)) {
                Ok(0) => return, // the client closed: the close is clean now
                Ok(n) => read += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            },
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// The server refuses after the first bytes of a large message and closes: without the
    /// drain the client's write fails (RST) and the refusal is lost.
    async fn refused_mid_message(drain_it: bool) -> (Result<(), std::io::Error>, Vec<u8>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let (mut rd, mut wr) = socket.into_split();
            let mut head = [0u8; 1024];
            rd.read_exact(&mut head).await.unwrap();
            wr.write_all(b"-ERR too large\r\n").await.unwrap();
            drop(rd);
            if drain_it {
                linger(&mut wr, Drain::Session).await;
            }
            let _ = wr.shutdown().await;
        });
        let mut client = TcpStream::connect(addr).await.unwrap();
        let sent = client.write_all(&vec![b'x'; 16 << 20]).await;
        let mut got = Vec::new();
        let _ = client.read_to_end(&mut got).await;
        server.await.unwrap();
        (sent, got)
    }

    #[tokio::test]
    async fn a_client_refused_mid_message_reads_why() {
        let (sent, got) = refused_mid_message(true).await;
        assert!(sent.is_ok(), "{sent:?}");
        assert_eq!(got, b"-ERR too large\r\n");
    }

    #[tokio::test]
    async fn without_the_drain_the_client_write_is_reset() {
        let (sent, _) = refused_mid_message(false).await;
        assert!(
            sent.is_err(),
            "the test must show the reset it guards against"
        );
    }

    #[tokio::test]
    async fn a_quiet_client_is_closed_after_the_pause() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (socket, _) = listener.accept().await.unwrap();
        let (_rd, mut wr) = socket.into_split();
        let started = std::time::Instant::now();
        linger(&mut wr, Drain::Login).await;
        let took = started.elapsed();
        assert!(took >= LINGER_IDLE && took < LINGER_TIME, "{took:?}");
    }
}
