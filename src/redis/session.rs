//! One client connection, phase by phase: TLS handshake (on the TLS listener) → login (only AUTH,
//! HELLO, PING and QUIT before it; the token checked and the agent admitted by the session core)
//! → upstream connection with the vaulted password → relay. Wire work only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{info, warn};

use super::auth::{parse_hello, upstream_hello, HelloError};
use super::command::encode_command;
use super::door::RedisDoor;
use super::reader::{ClientReader, UpstreamReader};
use super::relay::{self, Relay, Start};
use super::reply;
use super::upstream::RedisTarget;
use crate::audit::Protocol;
use crate::refusal::{Refusal, RefusalClass};
use crate::session::{Accepted, Core, Session};
use crate::tls::NetWrite;

/// Before authentication no command needs more than this.
const LOGIN_LIMIT: usize = 64 * 1024;

pub async fn handle(
    core: Arc<Core>,
    door: Arc<RedisDoor>,
    target: Arc<RedisTarget>,
    socket: TcpStream,
    peer: SocketAddr,
    tls: bool,
) {
    let mut accepted = match core.try_accept(Protocol::Redis, peer) {
        Ok(a) => a,
        Err(refusal) => {
            // Too many connections waiting to authenticate: say so before reading anything.
            let mut socket = socket;
            let _ = socket.write_all(&reply::refusal(&refusal)).await;
            return;
        }
    };
    accepted.set_upstream(&target.name);
    accepted
        .serve(|accepted| run(accepted, door, target, socket, tls))
        .await
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("authentication timed out")]
    Timeout,
    #[error("{0}")]
    Stream(#[from] crate::session::ClientStreamError),
    #[error("{0}")]
    Upstream(#[from] super::upstream::UpstreamError),
    #[error("{0}")]
    Relay(#[from] relay::RelayError),
}

/// The upstream connection a session starts on, once connected.
enum Connection {
    Own(super::upstream::Upstream),
    Shared(Arc<super::shared::SharedConn>),
}

/// What the login phase settled.
struct Login {
    session: Session,
    /// The HELLO that logged in (answered by the upstream), or `None` for AUTH (`+OK`).
    hello: Option<super::auth::Hello>,
}

async fn run(
    accepted: Accepted,
    door: Arc<RedisDoor>,
    target: Arc<RedisTarget>,
    socket: TcpStream,
    tls: bool,
) -> Result<(), SessionError> {
    let core = accepted.core().clone();
    let deadline = accepted.deadline;
    let stream = accepted.client_stream(socket, tls).await?;
    let (rd, mut wr) = stream.into_split();
    let mut client = ClientReader::new(rd, LOGIN_LIMIT);
    let require_tls = !tls && door.require_tls;
    let login = tokio::time::timeout_at(
        deadline,
        login(&accepted, &target, &mut client, &mut wr, tls, require_tls),
    )
    .await;
    let login = match login {
        Err(_) => {
            let line = reply::error("ERR", "tollgate: authentication timed out");
            crate::session::last_words(&mut wr, &line, crate::session::Drain::Login).await;
            return Err(SessionError::Timeout);
        }
        Ok(Ok(Some(l))) => l,
        // The client left, or was told why it must (a protocol error, QUIT): closed lingering.
        Ok(Ok(None)) => {
            crate::session::last_words(&mut wr, b"", crate::session::Drain::Login).await;
            return Ok(());
        }
        Ok(Err(e)) => return Err(e),
    };
    let timeout = Duration::from_millis(core.limits.upstream_connect_timeout_ms);
    // A session logged in with HELLO has its own connection from the start (the upstream
    // answers the HELLO, and RESP3 replies differ); others start on a shared one.
    let shared = login.hello.is_none() && target.shared.enabled();
    let connected = async {
        let table = target.table(timeout).await?;
        let up = if shared {
            Connection::Shared(target.shared.pick(&target, timeout).await?)
        } else {
            Connection::Own(target.connect(timeout).await?)
        };
        Ok::<_, super::upstream::UpstreamError>((table, up))
    }
    .await;
    let (table, up) = match connected {
        Ok(x) => x,
        Err(e) => {
            warn!(upstream = %target.name, error = %e, "upstream connection failed");
            not_opened(&login.session, &target.name, Some(&e), &mut wr).await;
            return Err(e.into());
        }
    };
    // From here the session holds an upstream connection (or its place on a shared one).
    let writes = login.session.context().client_writes();
    let mut client_entry = None;
    let mut _upstream_gauge = None;
    let mut resp3 = false;
    let start = match up {
        Connection::Shared(conn) => {
            metrics::counter!("tollgate_redis_shared_sessions_total", "upstream" => target.name.clone())
                .increment(1);
            writes.write_all(&mut wr, reply::OK).await?;
            Start::Shared(conn)
        }
        Connection::Own(up) => {
            let (gauge, entry) = target.own(&up, login.session.agent().clone());
            _upstream_gauge = Some(gauge);
            client_entry = entry;
            let (up_rd, mut up_wr) = up.stream.into_split();
            let mut upstream = UpstreamReader::new(up_rd);
            match &login.hello {
                None => writes.write_all(&mut wr, reply::OK).await?,
                Some(h) => {
                    // The upstream answers the HELLO (server, version, proto, id, mode, role,
                    // modules).
                    let answered = async {
                        up_wr.write_all(&encode_command(&upstream_hello(h))).await?;
                        upstream.read_frame().await
                    }
                    .await;
                    let frame = match answered {
                        Ok(frame) => frame,
                        // The upstream went away before it answered: told and recorded like
                        // a connection that failed.
                        Err(e) => {
                            warn!(upstream = %target.name, error = %e, "upstream failed during HELLO");
                            not_opened(&login.session, &target.name, None, &mut wr).await;
                            return Err(e.into());
                        }
                    };
                    resp3 = h.proto == Some(3) && frame.first() != Some(&b'-');
                    writes.write_all(&mut wr, &frame).await?;
                }
            }
            Start::Own {
                reader: upstream,
                writer: up_wr,
            }
        }
    };
    let session = login.session;
    session.opened();
    info!(agent = %session.agent(), upstream = %target.name, "session started");
    client.set_limit(core.limits.max_message_bytes);
    client.set_held(crate::ratelimit::Held::of(&core.held, session.agent()));
    let relay = Relay {
        policy: crate::policy::redis::RedisPolicy::new(
            session.agent().clone(),
            session.upstream().clone(),
        ),
        session,
        table,
        resp3,
        target: target.clone(),
        client: client_entry,
    };
    relay::run(relay, client, wr, start).await?;
    // `accepted` (the live count and the client gauge) lasts as long as the session.
    drop(accepted);
    Ok(())
}

/// An admitted session whose upstream connection failed: recorded, told, closed.
async fn not_opened(
    session: &Session,
    upstream: &str,
    failure: Option<&super::upstream::UpstreamError>,
    wr: &mut NetWrite,
) {
    use super::upstream::UpstreamError as E;
    // What failed, by class, as the PostgreSQL door says it (never the server's own text).
    let detail = match failure {
        Some(E::LoginRefused(line)) => Some(super::upstream::login_refusal(line)),
        Some(E::Connect(_) | E::Timeout(_)) => {
            Some("the upstream is not accepting connections".to_string())
        }
        _ => None,
    };
    let mut msg = crate::session::upstream_unavailable(upstream);
    if let Some(d) = detail {
        msg = format!("{msg} ({d})");
    }
    session.not_opened(None, &msg, None);
    let line = reply::error("ERR", &msg);
    crate::session::last_words(wr, &line, crate::session::Drain::Session).await;
}

/// Serves AUTH, HELLO and QUIT until an agent logs in (NOAUTH to the rest). `None`: the client left.
async fn login<R, W>(
    accepted: &Accepted,
    target: &RedisTarget,
    client: &mut ClientReader<R>,
    wr: &mut W,
    tls: bool,
    require_tls: bool,
) -> Result<Option<Login>, SessionError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let cmd = match client.next().await {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(None),
            Err(super::reader::ReadError::Io(e)) => return Err(e.into()),
            // (No budget before login: the login limit is small.)
            Err(
                e @ (super::reader::ReadError::Protocol(_) | super::reader::ReadError::Held(_)),
            ) => {
                wr.write_all(&reply::error("ERR", &e.to_string())).await?;
                return Ok(None);
            }
        };
        if require_tls {
            // Before anything else, tokens included: answer the first command and close.
            let refusal = Refusal::new(
                RefusalClass::TlsRequired,
                crate::config::ListenConfig::REDIS_REQUIRE_TLS_RULE,
                "this listener requires TLS; connect to the TLS listener",
            );
            accepted.refuse_before_auth(b"", &refusal);
            wr.write_all(&reply::refusal(&refusal)).await?;
            return Ok(None);
        }
        let name = cmd.args[0].to_ascii_lowercase();
        if matches!(&name[..], b"post" | b"host:") {
            // An HTTP request (a browser made to post to this port from a web page: a
            // cross-protocol attack). Closed at once without an answer, as redis-server does.
            accepted.refuse_before_auth(b"", &super::http_request_refusal());
            return Ok(None);
        }
        let (user, token, hello) = match &name[..] {
            // PING too gets NOAUTH, as from redis-server with a password: a PONG told
            // `redis-cli -u URL ping` with a wrong token that all was well.
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
        let Some(verified) = accepted.verify_token(&user, &token) else {
            wr.write_all(reply::WRONGPASS).await?;
            if !accepted.login_attempts_left() {
                wr.write_all(&reply::error(
                    "ERR",
                    crate::session::TOO_MANY_LOGIN_FAILURES,
                ))
                .await?;
                return Ok(None);
            }
            continue;
        };
        match accepted.admit(&verified, &target.name, tls) {
            Ok(session) => return Ok(Some(Login { session, hello })),
            Err(refusal) => {
                wr.write_all(&reply::refusal(&refusal)).await?;
                continue;
            }
        }
    }
}
