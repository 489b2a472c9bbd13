//! One client connection, phase by phase: agent login (only AUTH, HELLO, PING and QUIT before
//! it) → upstream connection with the vaulted password → relay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, info, warn, Instrument};

use super::audit::SessionAudit;
use super::auth::{parse_hello, upstream_hello, verify, HelloError};
use super::command::{encode_command, CommandParser};
use super::relay;
use super::reply;
use super::scan::ReplyScanner;
use super::upstream::RedisTarget;
use crate::audit::Decision;
use crate::gateway::Gateway;
use crate::tls::{NetRead, NetStream, NetWrite};

/// Before authentication no command needs more than this.
const LOGIN_LIMIT: usize = 64 * 1024;

pub async fn handle(
    gw: Arc<Gateway>,
    target: Arc<RedisTarget>,
    socket: TcpStream,
    peer: SocketAddr,
    tls: bool,
) {
    let id = gw.next_session_id();
    let span = tracing::info_span!("redis_session", session = id, client = %peer, tls);
    async move {
        let _live = gw.lifecycle.enter();
        let _gauge = crate::telemetry::GaugeGuard::new(metrics::gauge!(
            "tollgate_client_connections",
            "protocol" => "redis"
        ));
        if let Err(e) = run(gw.clone(), target, socket, peer, id, tls).await {
            debug!(error = %e, "session ended with an error");
        }
    }
    .instrument(span)
    .await
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("authentication timed out")]
    Timeout,
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("TLS listener without a certificate")]
    NoCertificate,
    #[error("{0}")]
    Upstream(#[from] super::upstream::UpstreamError),
    #[error("{0}")]
    Relay(#[from] relay::RelayError),
}

/// What the login phase settled.
struct Login {
    agent: String,
    /// The HELLO that logged in (answered by the upstream), or `None` for AUTH (`+OK`).
    hello: Option<super::auth::Hello>,
}

async fn run(
    gw: Arc<Gateway>,
    target: Arc<RedisTarget>,
    socket: TcpStream,
    peer: SocketAddr,
    id: u64,
    tls: bool,
) -> Result<(), SessionError> {
    socket.set_nodelay(true)?;
    let auth_timeout = Duration::from_millis(gw.config.limits.auth_timeout_ms);
    let deadline = tokio::time::Instant::now() + auth_timeout;
    let stream = if tls {
        let config = gw.tls.current().ok_or(SessionError::NoCertificate)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(config.redis.clone());
        match tokio::time::timeout_at(deadline, acceptor.accept(socket)).await {
            Err(_) => return Err(SessionError::Timeout),
            Ok(Err(e)) => {
                metrics::counter!("tollgate_tls_handshake_failures_total", "protocol" => "redis")
                    .increment(1);
                return Err(SessionError::Handshake(e));
            }
            Ok(Ok(s)) => NetStream::from(s),
        }
    } else {
        NetStream::Plain(socket)
    };
    let (mut rd, mut wr) = stream.into_split();
    let audit = SessionAudit {
        gw: gw.clone(),
        id,
        upstream: target.name.as_str().into(),
        client_addr: peer.to_string(),
    };
    let mut parser = CommandParser::new(LOGIN_LIMIT);
    let mut buf = BytesMut::with_capacity(4096);
    let login = tokio::time::timeout_at(
        deadline,
        login(&gw, &audit, &mut rd, &mut wr, &mut parser, &mut buf, tls),
    )
    .await;
    let login = match login {
        Err(_) => {
            let _ = wr
                .write_all(&reply::error("ERR", "tollgate: authentication timed out"))
                .await;
            return Err(SessionError::Timeout);
        }
        Ok(Ok(Some(l))) => l,
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(e)) => return Err(e),
    };
    let timeout = Duration::from_millis(gw.config.limits.upstream_connect_timeout_ms);
    let connected = async {
        let table = target.table(timeout).await?;
        let up = target.connect(timeout).await?;
        Ok::<_, super::upstream::UpstreamError>((table, up))
    }
    .await;
    let (table, up) = match connected {
        Ok(x) => x,
        Err(e) => {
            metrics::counter!("tollgate_upstream_errors_total", "upstream" => target.name.clone())
                .increment(1);
            warn!(upstream = %target.name, error = %e, "upstream connection failed");
            let msg = format!("tollgate: upstream \"{}\" is unavailable", target.name);
            let _ = wr.write_all(&reply::error("ERR", &msg)).await;
            return Err(e.into());
        }
    };
    let agent: Arc<str> = login.agent.as_str().into();
    let upstream: Arc<str> = target.name.as_str().into();
    let _open = gw
        .stats
        .pair(&agent, &upstream, crate::audit::Protocol::Redis)
        .open_session();
    let _upstream_gauge = crate::telemetry::upstream_connection(&target.name);
    let (mut up_rd, mut up_wr) = up.stream.into_split();
    let mut resp3 = false;
    let mut up_buf = BytesMut::with_capacity(4096);
    match &login.hello {
        None => wr.write_all(reply::OK).await?,
        Some(h) => {
            // The upstream answers the HELLO (server, version, proto, id, mode, role, modules).
            up_wr.write_all(&encode_command(&upstream_hello(h))).await?;
            let frame = read_frame(&mut up_rd, &mut up_buf).await?;
            resp3 = h.proto == Some(3) && frame.first() != Some(&b'-');
            wr.write_all(&frame).await?;
        }
    }
    audit.session(&login.agent, Decision::Allowed, "session opened");
    info!(agent = %login.agent, upstream = %target.name, "session started");
    parser.set_limit(gw.config.limits.max_message_bytes);
    let session = relay::Session {
        audit,
        table,
        policy: crate::policy::redis::RedisPolicy::new(agent, upstream),
        resp3,
    };
    relay::run(session, rd, parser, buf, wr, up_rd, up_wr, up_buf).await?;
    Ok(())
}

/// Reads one reply frame from the upstream (only during login, nothing else in flight).
async fn read_frame(rd: &mut NetRead, buf: &mut BytesMut) -> Result<Bytes, SessionError> {
    let mut scanner = ReplyScanner::default();
    loop {
        if let Some(n) = scanner
            .next_frame(buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?
        {
            return Ok(buf.split_to(n).freeze());
        }
        if rd.read_buf(buf).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
}

/// Serves AUTH, HELLO, PING and QUIT until an agent logs in. `None`: the client left.
async fn login(
    gw: &Arc<Gateway>,
    audit: &SessionAudit,
    rd: &mut NetRead,
    wr: &mut NetWrite,
    parser: &mut CommandParser,
    buf: &mut BytesMut,
    tls: bool,
) -> Result<Option<Login>, SessionError> {
    loop {
        let cmd = match parser.next(buf) {
            Ok(Some(c)) => c,
            Ok(None) => {
                if rd.read_buf(buf).await? == 0 {
                    return Ok(None);
                }
                continue;
            }
            Err(e) => {
                wr.write_all(&reply::error("ERR", &e.to_string())).await?;
                return Ok(None);
            }
        };
        if !tls && gw.config.listen.redis_require_tls {
            // Before anything else, tokens included: answer the first command and close.
            let rule = crate::config::ListenConfig::REDIS_REQUIRE_TLS_RULE;
            audit.session(
                "",
                Decision::Blocked,
                &format!("plain connection refused: TLS required (rule: {rule})"),
            );
            let msg = format!(
                "tollgate: this listener requires TLS; connect to the TLS listener (rule: {rule})"
            );
            wr.write_all(&reply::error("NOPERM", &msg)).await?;
            return Ok(None);
        }
        let name = cmd.args[0].to_ascii_lowercase();
        let attempt = match &name[..] {
            b"ping" => {
                wr.write_all(&reply::pong(cmd.args.get(1).map(|a| &a[..])))
                    .await?;
                continue;
            }
            b"quit" => {
                wr.write_all(reply::OK).await?;
                return Ok(None);
            }
            b"auth" => match cmd.args.len() {
                2 => (Bytes::from_static(b"default"), cmd.args[1].clone(), None),
                3 => (cmd.args[1].clone(), cmd.args[2].clone(), None),
                _ => {
                    wr.write_all(&reply::error(
                        "ERR",
                        "wrong number of arguments for 'auth' command",
                    ))
                    .await?;
                    continue;
                }
            },
            b"hello" => match parse_hello(&cmd.args) {
                Err(HelloError::NoProto) => {
                    wr.write_all(reply::NOPROTO).await?;
                    continue;
                }
                Err(HelloError::Syntax(m)) => {
                    wr.write_all(&reply::error("ERR", &m)).await?;
                    continue;
                }
                Ok(h) => match h.auth.clone() {
                    Some((u, p)) => (u, p, Some(h)),
                    None => {
                        wr.write_all(reply::NOAUTH_HELLO).await?;
                        continue;
                    }
                },
            },
            _ => {
                wr.write_all(reply::NOAUTH).await?;
                continue;
            }
        };
        let (user, token, hello) = attempt;
        let shown: String = String::from_utf8_lossy(&user).chars().take(64).collect();
        let Some(agent) = verify(gw, &user, &token) else {
            audit.session(&shown, Decision::Blocked, "authentication failed");
            wr.write_all(reply::WRONGPASS).await?;
            continue;
        };
        if !tls {
            if let Some(req) = gw.policy.tls_requirement(&agent) {
                let reason = format!(
                    "agent \"{agent}\" must connect over TLS; this connection is not encrypted"
                );
                if req.enforced {
                    audit.session(&agent, Decision::Blocked, &reason);
                    let msg = format!("tollgate: {reason} (rule: {})", req.rule);
                    wr.write_all(&reply::error("NOPERM", &msg)).await?;
                    continue;
                }
                audit.session(
                    &agent,
                    Decision::WouldBlock,
                    &format!("{reason} (rule: {}, shadow mode)", req.rule),
                );
            }
        }
        if let Err(d) = gw.policy.may_connect(&agent, &audit.upstream) {
            audit.session(&agent, Decision::Blocked, &d.reason);
            let msg = format!("tollgate: {} (rule: {})", d.reason, d.rule);
            wr.write_all(&reply::error("NOPERM", &msg)).await?;
            continue;
        }
        return Ok(Some(Login { agent, hello }));
    }
}
