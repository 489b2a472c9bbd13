//! The MCP listener: TCP connections, HTTPS or plain HTTP on the same port (a first byte of
//! 0x16 is a TLS ClientHello, answered with the front end's certificate when `[tls]` is set),
//! handed to axum as they become ready. Handshakes run in tasks of their own, so a slow or
//! silent client never holds up the accept loop.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;
use tracing::debug;

use crate::session::Core;

/// A connection as HTTP is served on it.
pub type McpStream = Either<TcpStream, TlsStream<TcpStream>>;

/// Who is on the other end, for the authentication middleware.
#[derive(Debug, Clone, Copy)]
pub struct McpPeer {
    pub addr: SocketAddr,
    /// The connection negotiated TLS (`require_tls` policies need it).
    pub encrypted: bool,
}

impl Connected<IncomingStream<'_, McpListener>> for McpPeer {
    fn connect_info(stream: IncomingStream<'_, McpListener>) -> Self {
        *stream.remote_addr()
    }
}

/// The connections axum serves: accepted, their TLS negotiated, in arrival order.
pub struct McpListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(McpStream, McpPeer)>,
}

/// The whole handshake (first byte included) must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl McpListener {
    /// Starts accepting on `listener`; connections are negotiated in the background until the
    /// returned listener is dropped.
    pub fn start(listener: TcpListener, core: std::sync::Arc<Core>) -> McpListener {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (socket, addr) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "MCP accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    _ = tx.closed() => return,
                };
                let (tx, core) = (tx.clone(), core.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, negotiate(socket, &core)).await {
                        Ok(Some(stream)) => {
                            let encrypted = matches!(stream, Either::Right(_));
                            let _ = tx.send((stream, McpPeer { addr, encrypted })).await;
                        }
                        Ok(None) => {}
                        Err(_) => debug!(%addr, "MCP connection: no request or handshake in time"),
                    }
                });
            }
        });
        McpListener { local, ready }
    }
}

/// Plain HTTP, or TLS when the first byte is a handshake record and a certificate is loaded.
async fn negotiate(socket: TcpStream, core: &Core) -> Option<McpStream> {
    let _ = socket.set_nodelay(true);
    let mut first = [0u8; 1];
    let n = socket.peek(&mut first).await.ok()?;
    if n == 0 || first[0] != 0x16 {
        return Some(Either::Left(socket));
    }
    let Some(server) = core.tls.current() else {
        debug!("TLS ClientHello on the MCP listener, but no [tls] certificate is configured");
        return None;
    };
    // No ALPN: HTTP/1.1 is what the listener speaks, and clients fall back to it.
    let acceptor = tokio_rustls::TlsAcceptor::from(server.redis.clone());
    match acceptor.accept(socket).await {
        Ok(s) => Some(Either::Right(s)),
        Err(e) => {
            metrics::counter!("tollgate_tls_handshake_failures_total", "protocol" => "mcp")
                .increment(1);
            debug!(error = %e, "MCP TLS handshake failed");
            None
        }
    }
}

impl axum::serve::Listener for McpListener {
    type Io = McpStream;
    type Addr = McpPeer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(McpPeer {
            addr: self.local,
            encrypted: false,
        })
    }
}
