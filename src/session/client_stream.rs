//! The client's byte stream for the doors whose TLS listeners take the handshake first (Redis,
//! MongoDB): the socket as is, or after a TLS handshake with the current front-end certificate,
//! within the authentication deadline; failures counted per protocol.

use tokio::net::TcpStream;

use super::Accepted;
use crate::tls::NetStream;

#[derive(Debug, thiserror::Error)]
pub enum ClientStreamError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("authentication timed out")]
    Timeout,
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("TLS listener without a certificate")]
    NoCertificate,
}

impl Accepted {
    /// `socket` with Nagle off, through a TLS handshake when it came to a TLS listener (the
    /// config without ALPN: neither Redis nor MongoDB clients send any).
    pub async fn client_stream(
        &self,
        socket: TcpStream,
        tls: bool,
    ) -> Result<NetStream, ClientStreamError> {
        socket.set_nodelay(true)?;
        if !tls {
            return Ok(NetStream::Plain(socket));
        }
        let config = self
            .core()
            .tls
            .current()
            .ok_or(ClientStreamError::NoCertificate)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(config.redis.clone());
        match tokio::time::timeout_at(self.deadline, acceptor.accept(socket)).await {
            Err(_) => Err(ClientStreamError::Timeout),
            Ok(Err(e)) => {
                metrics::counter!("tollgate_tls_handshake_failures_total", "protocol" => self.protocol.as_str())
                    .increment(1);
                Err(ClientStreamError::Handshake(e))
            }
            Ok(Ok(s)) => Ok(NetStream::from(s)),
        }
    }
}
