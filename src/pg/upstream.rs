//! Logging in to the upstream PostgreSQL with vaulted credentials (SCRAM-SHA-256, MD5 or cleartext,
//! whichever the server asks for), up to its first ReadyForQuery; over TLS (SSLRequest, then the
//! handshake) unless the upstream's `tls` is `disable`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::scram_client::ScramClient;
use bytes::BytesMut;
use postgres_protocol::message::backend::Message as BackendMessage;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::backend as msg;
use super::frame::{Frame, FrameError, FrameReader};
use crate::tls::{NetRead, NetStream, NetWrite, UpstreamTls};
use crate::vault::Secret;

/// Everything needed to open a session upstream. Credentials stay redacted in Debug output.
#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: Secret,
    pub password: Secret,
    pub search_path: String,
    /// `None` for `tls = "disable"`.
    pub tls: Option<UpstreamTls>,
    /// Set once the server refused [`CONNECTION_CHECK`]: later logins leave it out.
    pub no_connection_check: Arc<AtomicBool>,
}

impl UpstreamTarget {
    /// Upstream `name` of the config, with its credentials resolved from `vault`.
    pub fn from_config(
        name: &str,
        u: &crate::config::UpstreamConfig,
        vault: &crate::vault::Vault,
    ) -> Result<UpstreamTarget, crate::doors::DoorError> {
        Ok(UpstreamTarget {
            name: name.to_string(),
            host: u.host.clone(),
            port: u.port,
            database: u.database_name(name).to_string(),
            user: vault.resolve(&u.user, true)?,
            password: vault.resolve(&u.password, false)?,
            search_path: u.search_path.join(", "),
            tls: crate::doors::upstream_tls(name, u)?,
            no_connection_check: Arc::default(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot reach upstream: {0}")]
    Connect(std::io::Error),
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    /// The upstream refused the login; the server's message may name the user, so only the code is kept.
    #[error("upstream refused the login (SQLSTATE {0})")]
    LoginRefused(String),
    #[error("upstream requested an unsupported authentication method ({0})")]
    UnsupportedAuth(String),
    #[error("upstream protocol error: {0}")]
    Protocol(String),
    #[error("upstream connection: {0}")]
    Frame(#[from] FrameError),
    /// The upstream answered the SSLRequest with `N`: it does not speak TLS (fail closed).
    #[error("upstream does not accept TLS connections (tls = \"{0}\" requires it)")]
    TlsRefused(&'static str),
    #[error("upstream TLS handshake failed: {0}")]
    Tls(std::io::Error),
    /// The server refused [`CONNECTION_CHECK`] (PostgreSQL before 14 does not know it, one on
    /// Windows refuses the value, a proxy in front may not pass it on): logged in again
    /// without it, and from then on.
    #[error("upstream does not know {}", CONNECTION_CHECK.0)]
    NoConnectionCheck,
}

/// Asked of every server connection: a backend whose client (tollgate) has closed the
/// connection ends its statement within a second, even one that catches cancels, so a
/// connection retired mid-statement (`pool::server::Server::retire`) frees its backend without
/// the pool's role needing the right to terminate it. A startup setting, so `RESET ALL` and
/// `DISCARD ALL` keep it. PostgreSQL 14 and later; a server that refuses it (an error naming
/// it, whatever its code) is logged in again without it, and its later logins leave it out.
pub const CONNECTION_CHECK: (&str, &str) = ("client_connection_check_interval", "1000");

/// A logged-in upstream connection, ready for queries.
pub struct UpstreamConn {
    pub reader: FrameReader<NetRead>,
    pub writer: NetWrite,
    pub addr: SocketAddr,
    /// ParameterStatus messages as the server sent them (raw frames).
    pub parameter_frames: Vec<Frame>,
    pub backend_pid: i32,
    pub backend_secret: i32,
}

pub async fn connect(
    target: &UpstreamTarget,
    settings: &[(String, String)],
    timeout: Duration,
) -> Result<UpstreamConn, UpstreamError> {
    let login = async {
        // A client that chose its own value keeps it.
        let check = !target.no_connection_check.load(Ordering::Relaxed)
            && !settings
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case(CONNECTION_CHECK.0));
        match connect_inner(target, settings, check).await {
            Err(UpstreamError::NoConnectionCheck) => {
                target.no_connection_check.store(true, Ordering::Relaxed);
                tracing::info!(upstream = %target.name, "the upstream refused {}; server connections are opened without it", CONNECTION_CHECK.0);
                connect_inner(target, settings, false).await
            }
            r => r,
        }
    };
    tokio::time::timeout(timeout, login)
        .await
        .map_err(|_| UpstreamError::Timeout(timeout))?
}

async fn connect_inner(
    target: &UpstreamTarget,
    settings: &[(String, String)],
    check: bool,
) -> Result<UpstreamConn, UpstreamError> {
    let stream = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(UpstreamError::Connect)?;
    stream.set_nodelay(true).map_err(UpstreamError::Connect)?;
    let addr = stream.peer_addr().map_err(UpstreamError::Connect)?;
    let stream = match &target.tls {
        Some(tls) => start_tls(stream, tls).await?,
        None => NetStream::Plain(stream),
    };
    let (rd, mut wr) = stream.into_split();
    // Upstream messages can be large (DataRow up to 1 GB); the client side is what we cap.
    let mut reader = FrameReader::new(rd, 1 << 30);

    let mut params: Vec<(&str, &str)> = vec![
        ("user", target.user.expose()),
        ("database", target.database.as_str()),
        ("search_path", target.search_path.as_str()),
    ];
    for (k, v) in settings {
        if !k.eq_ignore_ascii_case("search_path") {
            params.push((k.as_str(), v.as_str()));
        }
    }
    if check {
        params.push(CONNECTION_CHECK);
    }
    let mut buf = BytesMut::new();
    frontend::startup_message(params.iter().copied(), &mut buf)
        .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
    wr.write_all(&buf).await.map_err(FrameError::Io)?;

    authenticate(&mut reader, &mut wr, target, check).await?;

    let mut parameter_frames = Vec::new();
    let (mut pid, mut secret) = (0, 0);
    loop {
        let frame = next(&mut reader).await?;
        match frame.tag {
            msg::PARAMETER_STATUS => parameter_frames.push(frame),
            msg::BACKEND_KEY_DATA => {
                let b = frame.body();
                if b.len() != 8 {
                    return Err(UpstreamError::Protocol("bad BackendKeyData".into()));
                }
                pid = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                secret = i32::from_be_bytes([b[4], b[5], b[6], b[7]]);
            }
            msg::READY_FOR_QUERY => break,
            msg::NOTICE_RESPONSE => {}
            msg::ERROR_RESPONSE if check && unknown_connection_check(&frame) => {
                return Err(UpstreamError::NoConnectionCheck)
            }
            msg::ERROR_RESPONSE => return Err(login_refused(&frame)),
            t => {
                return Err(UpstreamError::Protocol(format!(
                    "unexpected message '{}' after login",
                    t as char
                )))
            }
        }
    }
    Ok(UpstreamConn {
        reader,
        writer: wr,
        addr,
        parameter_frames,
        backend_pid: pid,
        backend_secret: secret,
    })
}

/// SSLRequest, then the TLS handshake (PostgreSQL before 17 knows no direct TLS).
pub async fn start_tls(
    mut stream: TcpStream,
    tls: &UpstreamTls,
) -> Result<NetStream, UpstreamError> {
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    stream.write_all(&request).await.map_err(FrameError::Io)?;
    let mut answer = [0u8; 1];
    stream
        .read_exact(&mut answer)
        .await
        .map_err(FrameError::Io)?;
    match answer[0] {
        b'S' => {}
        b'N' => return Err(UpstreamError::TlsRefused(tls.mode.name())),
        _ => {
            return Err(UpstreamError::Protocol(
                "unexpected answer to SSLRequest".into(),
            ))
        }
    }
    let stream = tls
        .connector()
        .connect(tls.server_name.clone(), stream)
        .await
        .map_err(UpstreamError::Tls)?;
    Ok(stream.into())
}

async fn next(reader: &mut FrameReader<NetRead>) -> Result<Frame, UpstreamError> {
    reader
        .next()
        .await?
        .ok_or_else(|| UpstreamError::Protocol("upstream closed the connection".into()))
}

/// What an agent and the operator are told about a login the upstream refused: what its SQLSTATE
/// means, never the server's text (it may name the user). Only 28P01 and 28000 are about the
/// credentials; a full server or one starting up must not send anyone to rotate a good password.
pub fn login_refusal(code: &str) -> String {
    // A SQLSTATE is five letters or digits; whatever else a server put there is not shown.
    let code = if code.len() == 5 && code.bytes().all(|b| b.is_ascii_alphanumeric()) {
        code
    } else {
        "?????"
    };
    let what = match code {
        "28P01" | "28000" => "the upstream refused tollgate's credentials",
        "53300" => {
            "the upstream has no connection free for tollgate's login (too many connections)"
        }
        "57P03" => "the upstream is starting up or shutting down",
        "3D000" => "the upstream database does not exist",
        _ => "the upstream refused the login",
    };
    format!("{what} (SQLSTATE {code})")
}

fn login_refused(frame: &Frame) -> UpstreamError {
    let (code, _message) = msg::error_code_and_message(frame.body());
    UpstreamError::LoginRefused(code.unwrap_or_else(|| "?????".into()))
}

/// The server refused the login over [`CONNECTION_CHECK`]: its error names it (42704 from a
/// server that does not know it, 22023 from one that refuses the value, 08P01 from a proxy).
fn unknown_connection_check(frame: &Frame) -> bool {
    let (_, message) = msg::error_code_and_message(frame.body());
    message.is_some_and(|m| m.contains(CONNECTION_CHECK.0))
}

fn parse_auth(frame: &Frame) -> Result<BackendMessage, UpstreamError> {
    let mut buf = BytesMut::from(&frame.raw[..]);
    match BackendMessage::parse(&mut buf) {
        Ok(Some(m)) => Ok(m),
        _ => Err(UpstreamError::Protocol(
            "malformed authentication message".into(),
        )),
    }
}

async fn authenticate(
    reader: &mut FrameReader<NetRead>,
    wr: &mut NetWrite,
    target: &UpstreamTarget,
    check: bool,
) -> Result<(), UpstreamError> {
    let mut scram: Option<ScramClient> = None;
    // Once SCRAM started, only its end with the server's proof checked may log in: a server
    // that skips to AuthenticationOk, or asks for the password instead, is not the upstream.
    let mut proven = false;
    loop {
        let frame = next(reader).await?;
        if frame.tag == msg::ERROR_RESPONSE {
            // A proxy in front of the server refuses startup parameters before the login.
            if check && unknown_connection_check(&frame) {
                return Err(UpstreamError::NoConnectionCheck);
            }
            return Err(login_refused(&frame));
        }
        if frame.tag != msg::AUTHENTICATION {
            return Err(UpstreamError::Protocol(
                "expected an authentication request".into(),
            ));
        }
        let mut out = BytesMut::new();
        let io = |e: std::io::Error| UpstreamError::Protocol(e.to_string());
        match parse_auth(&frame)? {
            BackendMessage::AuthenticationOk if scram.is_some() && !proven => {
                return Err(UpstreamError::Protocol(
                    "upstream ended SCRAM without proving it knows the password".into(),
                ));
            }
            BackendMessage::AuthenticationOk => return Ok(()),
            BackendMessage::AuthenticationCleartextPassword
            | BackendMessage::AuthenticationMd5Password(_)
                if scram.is_some() =>
            {
                return Err(UpstreamError::Protocol(
                    "upstream asked for the password in the middle of SCRAM".into(),
                ));
            }
            BackendMessage::AuthenticationCleartextPassword => {
                frontend::password_message(target.password.expose().as_bytes(), &mut out)
                    .map_err(io)?;
            }
            BackendMessage::AuthenticationMd5Password(body) => {
                let hash = postgres_protocol::authentication::md5_hash(
                    target.user.expose().as_bytes(),
                    target.password.expose().as_bytes(),
                    body.salt(),
                );
                frontend::password_message(hash.as_bytes(), &mut out).map_err(io)?;
            }
            BackendMessage::AuthenticationSasl(body) => {
                let mut mechanisms = body.mechanisms();
                let mut has_scram = false;
                while let Ok(Some(m)) = fallible_iterator::FallibleIterator::next(&mut mechanisms) {
                    has_scram |= m == "SCRAM-SHA-256";
                }
                if !has_scram {
                    return Err(UpstreamError::UnsupportedAuth(
                        "SASL without SCRAM-SHA-256".into(),
                    ));
                }
                // The salted password is computed once per (password, salt, iterations): a new
                // server connection does not run PBKDF2 again.
                let s = ScramClient::for_postgres(target.password.expose());
                frontend::sasl_initial_response(
                    "SCRAM-SHA-256",
                    s.client_first().as_bytes(),
                    &mut out,
                )
                .map_err(io)?;
                scram = Some(s);
            }
            BackendMessage::AuthenticationSaslContinue(body) => {
                let s = scram
                    .as_mut()
                    .ok_or_else(|| UpstreamError::Protocol("SASL continue before start".into()))?;
                let fin = s
                    .client_final(body.data())
                    .map_err(|e| UpstreamError::Protocol(format!("SCRAM: {e}")))?;
                frontend::sasl_response(fin.as_bytes(), &mut out).map_err(io)?;
            }
            BackendMessage::AuthenticationSaslFinal(body) => {
                let s = scram
                    .as_mut()
                    .ok_or_else(|| UpstreamError::Protocol("SASL final before start".into()))?;
                s.verify_server_final(body.data()).map_err(|_| {
                    UpstreamError::Protocol("upstream's SCRAM signature is invalid".into())
                })?;
                proven = true;
                continue;
            }
            _ => {
                return Err(UpstreamError::UnsupportedAuth(
                    "not SCRAM, MD5 or password".into(),
                ))
            }
        }
        wr.write_all(&out).await.map_err(FrameError::Io)?;
    }
}

#[cfg(test)]
pub(crate) mod tests;
