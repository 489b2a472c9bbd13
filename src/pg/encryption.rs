//! The first bytes of a PostgreSQL connection: encryption negotiation, before the startup packet.
//!
//! - PostgreSQL 17 direct TLS: the client opens with a TLS ClientHello (first byte 0x16, which
//!   no startup packet can start with); the handshake must negotiate ALPN `postgresql`.
//! - SSLRequest: answered `S` when a certificate is configured (then the TLS handshake, and the
//!   startup continues inside TLS; ALPN optional, `postgresql` if offered), `N` otherwise.
//! - GSSENCRequest: answered `N` (the client may then ask for SSL or go on in plain text).
//!
//! Bytes sent after an SSLRequest before our answer are refused (they could be plaintext
//! injected ahead of the handshake, CVE-2021-23214). A failed handshake closes only this
//! connection.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::backend::PgErrorFields;
use super::frame::{FrameError, FrameReader, MAX_STARTUP_PACKET};
use super::startup::{StartupError, GSSENC_REQUEST, SSL_REQUEST};
use crate::tls::{NetStream, ServerTls, ALPN_POSTGRESQL};

/// First byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// How the connection is encrypted, for authentication (channel binding) and policy.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// `tls-server-end-point` data of the certificate this handshake used.
    pub end_point: Option<Arc<[u8]>>,
    /// Direct TLS (PostgreSQL 17 `sslnegotiation=direct`) rather than SSLRequest.
    pub direct: bool,
}

/// The connection after negotiation.
pub struct Negotiated {
    pub stream: NetStream,
    /// Bytes already read past the negotiation (plain connections only).
    pub buffered: BytesMut,
    /// The first packet after negotiation on a plain connection (startup or cancel), already read.
    pub first_packet: Option<Bytes>,
    pub tls: Option<TlsInfo>,
}

#[derive(Debug, thiserror::Error)]
pub enum EncryptionError {
    #[error("{0}")]
    Startup(#[from] StartupError),
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("direct TLS connection but no certificate is configured")]
    NoCertificate,
    #[error("direct TLS connection without ALPN \"postgresql\"")]
    NoAlpn,
    /// A protocol violation, already reported to the client.
    #[error("{}", .0.message)]
    Refused(PgErrorFields),
}

/// Sends a FATAL protocol violation on the still-plain connection; the error to return.
async fn refuse(socket: &mut TcpStream, message: &str) -> EncryptionError {
    let fields = PgErrorFields::fatal("08P01", message);
    let _ = socket.write_all(&fields.encode()).await;
    let _ = socket.shutdown().await;
    EncryptionError::Refused(fields)
}

/// Negotiates encryption on a fresh connection. `tls` is the certificate in force now.
pub async fn negotiate(
    socket: TcpStream,
    tls: Option<Arc<ServerTls>>,
) -> Result<Negotiated, EncryptionError> {
    let mut first = [0u8; 1];
    let n = socket
        .peek(&mut first)
        .await
        .map_err(|e| StartupError::Frame(FrameError::Io(e)))?;
    if n == 0 {
        return Err(StartupError::Closed.into());
    }
    if first[0] == TLS_HANDSHAKE {
        let tls = tls.ok_or(EncryptionError::NoCertificate)?;
        return handshake(socket, tls, true).await;
    }
    let mut reader = FrameReader::new(socket, MAX_STARTUP_PACKET);
    let (mut ssl_done, mut gss_done) = (false, false);
    loop {
        let packet = reader
            .next_startup_packet()
            .await
            .map_err(StartupError::Frame)?
            .ok_or(StartupError::Closed)?;
        let code = i32::from_be_bytes([packet[0], packet[1], packet[2], packet[3]]);
        let is_ssl = code == SSL_REQUEST;
        if !(is_ssl || code == GSSENC_REQUEST) {
            let (socket, buffered) = reader.into_parts();
            return Ok(Negotiated {
                stream: NetStream::Plain(socket),
                buffered,
                first_packet: Some(packet),
                tls: None,
            });
        }
        // At most one of each, as PostgreSQL allows.
        let done = if is_ssl { &mut ssl_done } else { &mut gss_done };
        if std::mem::replace(done, true) {
            return Err(refuse(reader.get_mut(), "too many negotiation requests").await);
        }
        if reader.buffered() > 0 {
            // Data sent before our answer could be a TLS handshake injected in plaintext.
            return Err(refuse(
                reader.get_mut(),
                "received unencrypted data after SSL request",
            )
            .await);
        }
        let (mut socket, _) = reader.into_parts();
        match (&tls, is_ssl) {
            (Some(tls), true) => {
                socket
                    .write_all(b"S")
                    .await
                    .map_err(|e| StartupError::Frame(FrameError::Io(e)))?;
                return handshake(socket, tls.clone(), false).await;
            }
            _ => socket
                .write_all(b"N")
                .await
                .map_err(|e| StartupError::Frame(FrameError::Io(e)))?,
        }
        reader = FrameReader::new(socket, MAX_STARTUP_PACKET);
    }
}

async fn handshake(
    socket: TcpStream,
    tls: Arc<ServerTls>,
    direct: bool,
) -> Result<Negotiated, EncryptionError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.pg.clone());
    let mut stream = acceptor
        .accept(socket)
        .await
        .map_err(EncryptionError::Handshake)?;
    let alpn = stream.get_ref().1.alpn_protocol();
    if direct && alpn != Some(ALPN_POSTGRESQL) {
        // PostgreSQL 17 refuses direct TLS without ALPN (it guards against cross-protocol use).
        let fields = PgErrorFields::fatal(
            "08P01",
            "received direct SSL connection request without ALPN protocol negotiation extension",
        );
        let _ = stream.write_all(&fields.encode()).await;
        let _ = stream.shutdown().await;
        return Err(EncryptionError::NoAlpn);
    }
    Ok(Negotiated {
        stream: stream.into(),
        buffered: BytesMut::new(),
        first_packet: None,
        tls: Some(TlsInfo {
            end_point: tls.end_point.clone(),
            direct,
        }),
    })
}
