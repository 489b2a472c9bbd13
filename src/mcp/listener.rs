//! The MCP listener's connections: HTTPS or plain HTTP on the same port (a first byte of 0x16
//! is a TLS ClientHello, answered with the front end's certificate when `[tls]` is set). Served
//! by `http_serve`, which bounds the handshake and each request's headers in time and counts the
//! connection against the pre-authentication cap until a request on it authenticates.

use std::net::SocketAddr;

use tokio::net::TcpStream;
use tokio_util::either::Either;

use crate::session::Core;

/// A connection as HTTP is served on it.
pub type McpStream = crate::http_serve::HttpStream;

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
    let stream = crate::http_serve::tls_or_plain(socket, &core, "mcp").await?;
    let encrypted = matches!(stream, Either::Right(_));
    Some((stream, McpPeer { addr, encrypted }))
}
