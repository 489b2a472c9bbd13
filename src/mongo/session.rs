//! One client connection, phase by phase: TLS handshake (on the `mongodb_tls` listener) → login
//! (`login::LoginPhase`: the handshake, SCRAM-SHA-256 against the verifier the session core
//! hands out, then the core's admission) → upstream connection with the vaulted login → relay.
//! Wire work only.
//!
//! Drivers keep a monitoring connection that only ever says `hello` and never logs in: before
//! authentication a connection may stay as long as each message arrives within
//! `limits.auth_timeout_ms`, and it can never do more than `hello`, `ping` and the login.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use super::door::{MongoDoor, MongoUpstream};
use super::login::{LoginOutcome, LoginPhase};
use super::op_msg::OpMsg;
use super::relay::{self, Relay};
use super::reply::{self, code};
use super::upstream::MongoConnection;
use super::wire::{Message, MessageReader, WireError, PRE_AUTH_MAX_BYTES};
use crate::audit::Protocol;
use crate::auth::ScramVerifier;
use crate::session::{Accepted, Core, Session, VerifierStrength};

pub async fn handle(
    core: Arc<Core>,
    door: Arc<MongoDoor>,
    up: Arc<MongoUpstream>,
    socket: TcpStream,
    peer: SocketAddr,
    tls: bool,
) {
    let mut accepted = match core.try_accept(Protocol::Mongo, peer) {
        Ok(a) => a,
        // Too many connections waiting to authenticate. MongoDB speaks only in answer to a
        // request, so there is nothing to say before reading one: closing at once is the
        // refusal (drivers report the connection closed and retry with backoff).
        Err(refusal) => {
            debug!(client = %peer, reason = %refusal.reason, "connection closed before reading");
            return;
        }
    };
    accepted.set_upstream(up.name());
    accepted
        .serve(|accepted| run(accepted, door, up, socket, tls))
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
    Wire(#[from] WireError),
    #[error("{0}")]
    Upstream(#[from] super::upstream::UpstreamError),
    #[error("{0}")]
    Relay(#[from] relay::RelayError),
}

/// A reply from tollgate to `msg` (request ids of tollgate's own replies need not be unique).
fn answer(msg: &Message, body: &bson::Document) -> Vec<u8> {
    OpMsg::reply(msg.header.request_id, 0, body).encode(false)
}

async fn run(
    accepted: Accepted,
    door: Arc<MongoDoor>,
    up: Arc<MongoUpstream>,
    socket: TcpStream,
    tls: bool,
) -> Result<(), SessionError> {
    let core = accepted.core().clone();
    let stream = accepted.client_stream(socket, tls).await?;
    let (rd, mut wr) = stream.into_split();
    let mut client = MessageReader::new(rd, PRE_AUTH_MAX_BYTES);
    let Some((session, upstream)) = login(&accepted, &door, &up, &mut client, &mut wr, tls).await?
    else {
        // The client left, or was told why it must: closed lingering.
        crate::session::last_words(&mut wr, b"", crate::session::Drain::Login).await;
        return Ok(());
    };
    session.opened();
    info!(agent = %session.agent(), upstream = %up.name(), "session started");
    let facts = upstream.facts;
    // The upstream's maxMessageSizeBytes, within tollgate's own limits.max_message_bytes.
    client.set_limit(
        (facts.max_message_size_bytes.max(1024) as usize).min(core.limits.max_message_bytes),
    );
    client.set_held(crate::ratelimit::Held::of(&core.held, session.agent()));
    let (up_stream, leftover) = upstream.into_parts();
    let _upstream_gauge = crate::telemetry::upstream_connection(up.name());
    let session_agent = session.agent().clone();
    let relay = Relay {
        policy: crate::policy::mongo::MongoPolicy::new(
            session.agent().clone(),
            session.upstream().clone(),
        )
        .with_login_db(&up.target.auth_source),
        session,
        facts,
        connection_id: accepted.id as i64,
        lsids: up.lsids.clone(),
        cursors: up.cursors.of(&session_agent),
    };
    relay::run(relay, client, wr, up_stream, leftover).await?;
    // `accepted` (the live count and the client gauge) lasts as long as the session.
    drop(accepted);
    Ok(())
}

/// The login phase: until an agent is authenticated, admitted and connected upstream. `None`:
/// the client left (or was closed after a protocol error).
async fn login<R, W>(
    accepted: &Accepted,
    door: &MongoDoor,
    up: &MongoUpstream,
    client: &mut MessageReader<R>,
    wr: &mut W,
    tls: bool,
) -> Result<Option<(Session, MongoConnection)>, SessionError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let core = accepted.core();
    let idle = Duration::from_millis(core.limits.auth_timeout_ms);
    let mut phase: Option<LoginPhase> = None;
    // Unknown-agent verifiers for names no agent can have: any fixed secret will do, the
    // exchange fails either way (the core's own mock covers every valid name).
    let mock_secret: [u8; 32] = rand::random();
    loop {
        let next = tokio::time::timeout(idle, client.next()).await;
        let msg = match next {
            Err(_) => return Err(SessionError::Timeout),
            Ok(Ok(Some(m))) => m,
            Ok(Ok(None)) => return Ok(None),
            Ok(Err(WireError::Io(e))) => return Err(SessionError::Wire(WireError::Io(e))),
            Ok(Err(e)) => {
                // Framing errors before login close the connection (nothing is skipped).
                let id = client.front_request_id().unwrap_or(0);
                let r = reply::error(code::PROTOCOL_ERROR, format!("tollgate: {e}"));
                let _ = say(wr, &OpMsg::reply(id, 0, &r).encode(false), idle).await;
                return Ok(None);
            }
        };
        if phase.is_none() {
            match up.facts(door.connect_timeout).await {
                Ok(f) => phase = Some(LoginPhase::new(f, accepted.id as i64)),
                Err(e) => {
                    warn!(upstream = %up.name(), error = %e, "MongoDB upstream unreachable");
                    let msg_text = crate::session::upstream_unavailable(up.name());
                    let r = reply::error(code::HOST_UNREACHABLE, msg_text);
                    say(wr, &reply_for(&msg, &r), idle).await?;
                    return Ok(None);
                }
            }
        }
        let phase_ref = phase.as_mut().expect("set above");
        let outcome = phase_ref.handle(
            &msg,
            bson::DateTime::now(),
            // MongoDB drivers refuse fewer than 4096 SCRAM iterations: the full verifier.
            |user| {
                accepted
                    .scram_verifier(user, VerifierStrength::Full)
                    .map(|(v, _)| v)
            },
            |user| ScramVerifier::mock_for(user, &mock_secret),
        );
        match outcome {
            LoginOutcome::Reply(bytes) => say(wr, &bytes, idle).await?,
            LoginOutcome::Close(bytes) => {
                say(wr, &bytes, idle).await?;
                return Ok(None);
            }
            LoginOutcome::Failed { user, reply } => {
                accepted.auth_failed(user.as_bytes(), "authentication failed");
                say(wr, &reply, idle).await?;
                if !accepted.login_attempts_left() {
                    // The reply said why; the connection ends (MongoDB has no error for this).
                    return Ok(None);
                }
            }
            LoginOutcome::Authenticated {
                agent,
                reply: ok,
                request_id,
            } => {
                // A mock verifier cannot be satisfied; checked anyway.
                let still_real = accepted
                    .scram_verifier(&agent, VerifierStrength::Full)
                    .is_some_and(|(_, is_real)| is_real);
                if !still_real {
                    accepted.auth_failed(agent.as_bytes(), "authentication failed");
                    let r = reply::error(code::AUTHENTICATION_FAILED, super::sasl::AUTH_FAILED);
                    say(wr, &OpMsg::reply(request_id, 0, &r).encode(false), idle).await?;
                    continue;
                }
                let verified = accepted.scram_verified(&agent);
                let session = match accepted.admit(&verified, up.name(), tls) {
                    Ok(s) => s,
                    Err(refusal) => {
                        let r = reply::refusal(&refusal);
                        say(wr, &OpMsg::reply(request_id, 0, &r).encode(false), idle).await?;
                        continue;
                    }
                };
                // The login succeeds only once the upstream accepted tollgate's: a failure is
                // the login's error, and the driver reports it as such.
                match up.connect(door.connect_timeout).await {
                    Ok(conn) => {
                        say(wr, &ok, idle).await?;
                        return Ok(Some((session, conn)));
                    }
                    Err(e) => {
                        warn!(upstream = %up.name(), error = %e, "upstream connection failed");
                        let text = crate::session::upstream_unavailable(up.name());
                        session.not_opened(None, &text, None);
                        let r = reply::error(code::HOST_UNREACHABLE, text);
                        say(wr, &OpMsg::reply(request_id, 0, &r).encode(false), idle).await?;
                        return Ok(None);
                    }
                }
            }
        }
    }
}

/// A reply during login, within the login's idle limit: a client that does not read cannot
/// keep its place in the pre-authentication count (it is not read meanwhile either).
async fn say<W: AsyncWrite + Unpin>(
    wr: &mut W,
    bytes: &[u8],
    within: Duration,
) -> Result<(), SessionError> {
    let written = async {
        wr.write_all(bytes).await?;
        wr.flush().await // a TLS stream may keep the tail until flushed
    };
    match tokio::time::timeout(within, written).await {
        Ok(written) => Ok(written?),
        Err(_) => Err(SessionError::Timeout),
    }
}

/// An error reply to `msg` in its own format (OP_REPLY for a legacy OP_QUERY handshake).
fn reply_for(msg: &Message, body: &bson::Document) -> Vec<u8> {
    if msg.header.op_code == super::wire::OpCode::Query {
        super::op_query::encode_reply(0, msg.header.request_id, body)
    } else {
        answer(msg, body)
    }
}
