//! The MCP listener's connections: HTTPS or plain HTTP on the same port (a first byte of 0x16
//! is a TLS ClientHello, answered with the front end's certificate when `[tls]` is set). Served
//! by `http_serve`, which bounds the handshake and each request's headers in time and counts the
//! connection against the pre-authentication cap until a request on it authenticates.

use std::net::SocketAddr;

use tokio::net::TcpStream;
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

/// The connection as HTTP is spoken on it, and who is on the other end (`http_serve`'s
/// negotiation step; bounded in time by it).
pub async fn negotiate(
    socket: TcpStream,
    addr: SocketAddr,
    core: std::sync::Arc<Core>,
) -> Option<(McpStream, McpPeer)> {
    let stream = tls_or_plain(socket, &core).await?;
    let encrypted = matches!(stream, Either::Right(_));
    Some((stream, McpPeer { addr, encrypted }))
}

/// Plain HTTP, or TLS when the first byte is a handshake record and a certificate is loaded.
async fn tls_or_plain(socket: TcpStream, core: &Core) -> Option<McpStream> {
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
