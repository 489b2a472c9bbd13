//! One client connection, phase by phase: encryption → startup → agent auth → admission (on the
//! session core) → upstream login → relay. Wire work only: who may do what is the core's and the
//! policy's business.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::{debug, info, warn, Instrument};

use super::backend::{self as msg, PgErrorFields};
use super::cancel::CancelTarget;
use super::client_auth::{self, ClientAuthError};
use super::encryption::{self, EncryptionError, TlsInfo};
use super::frame::FrameReader;
use super::from_client::{self, ClientEnd, FromClientError};
use super::pending::{Expect, Pending};
use super::startup::{self, StartupError, StartupParams, StartupRequest};
use super::statement::PgSession;
use super::to_client::{self, ToClientError};
use super::upstream::{self, UpstreamError};
use super::PgDoor;
use crate::audit::Protocol;
use crate::refusal::{Refusal, RefusalClass};
use crate::session::{Accepted, Core, Session};
use crate::tls::{NetRead, NetWrite};

pub async fn handle(core: Arc<Core>, door: Arc<PgDoor>, socket: TcpStream, peer: SocketAddr) {
    let accepted = core.accept(Protocol::Postgres, peer);
    let span = accepted.span();
    async move {
        if let Err(e) = run(accepted, door, socket).await {
            debug!(error = %e, "session ended with an error");
        }
    }
    .instrument(span)
    .await
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("{0}")]
    Startup(#[from] StartupError),
    #[error("{0}")]
    Encryption(#[from] EncryptionError),
    #[error("{0}")]
    Auth(#[from] ClientAuthError),
    #[error("client refused: {}", .0.message)]
    Refused(PgErrorFields),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("startup timed out")]
    Timeout,
}

/// Before authentication nothing needs more than a SCRAM message (PostgreSQL allows 64 KiB).
const LOGIN_MESSAGE_LIMIT: usize = 64 * 1024;

async fn run(
    mut accepted: Accepted,
    door: Arc<PgDoor>,
    socket: TcpStream,
) -> Result<(), SessionError> {
    socket.set_nodelay(true)?;
    let core = accepted.core().clone();
    let deadline = accepted.deadline;
    // Encryption first: a TLS client gets every later message (errors included) inside TLS.
    let negotiated =
        match tokio::time::timeout_at(deadline, encryption::negotiate(socket, core.tls.current()))
            .await
        {
            Err(_) => return Err(SessionError::Timeout),
            Ok(Ok(n)) => n,
            Ok(Err(e @ (EncryptionError::Startup(_) | EncryptionError::Refused(_)))) => {
                return Err(e.into());
            }
            Ok(Err(e)) => {
                metrics::counter!("tollgate_tls_handshake_failures_total", "protocol" => "postgres")
                    .increment(1);
                return Err(e.into());
            }
        };
    let (rd, mut wr) = negotiated.stream.into_split();
    let mut reader = FrameReader::from_parts(rd, negotiated.buffered, LOGIN_MESSAGE_LIMIT);
    let tls = negotiated.tls;
    let phase = tokio::time::timeout_at(
        deadline,
        login(
            &mut accepted,
            &door,
            &mut reader,
            &mut wr,
            tls.as_ref(),
            negotiated.first_packet,
        ),
    )
    .await;
    let (params, session) = match phase {
        Err(_) => {
            send_fatal(
                &mut wr,
                &PgErrorFields::fatal("08006", "tollgate: authentication timed out"),
            )
            .await;
            return Err(SessionError::Timeout);
        }
        Ok(Ok(Some(x))) => x,
        Ok(Ok(None)) => return Ok(()), // a cancel request, already handled
        Ok(Err(e)) => {
            if let Some(fields) = refusal_of(&e) {
                send_fatal(&mut wr, fields).await;
            }
            return Err(e);
        }
    };
    reader.set_limit(core.limits.max_message_bytes);
    // `accepted` lives as long as the session: it holds the live count and the client gauge.
    let result = relay(&door, session, params, reader, wr).await;
    drop(accepted);
    result
}

fn refusal_of(e: &SessionError) -> Option<&PgErrorFields> {
    match e {
        SessionError::Startup(StartupError::Refused(f))
        | SessionError::Auth(ClientAuthError::Refused(f))
        | SessionError::Refused(f) => Some(f),
        _ => None,
    }
}

async fn send_fatal(wr: &mut NetWrite, fields: &PgErrorFields) {
    let _ = wr.write_all(&fields.encode()).await;
    let _ = wr.shutdown().await;
}

/// Startup, authentication and admission. `None` when the connection was a cancel request.
async fn login(
    accepted: &mut Accepted,
    door: &PgDoor,
    reader: &mut FrameReader<NetRead>,
    wr: &mut NetWrite,
    tls: Option<&TlsInfo>,
    first_packet: Option<Bytes>,
) -> Result<Option<(StartupParams, Session)>, SessionError> {
    let params = match startup::negotiate(reader, first_packet).await? {
        StartupRequest::Cancel { pid, secret } => {
            // Accepted in plain text even where TLS is required, as PostgreSQL does (libpq
            // before 17 always sends cancels unencrypted); the key itself is the secret.
            door.cancels.cancel(pid, secret).await;
            return Ok(None);
        }
        StartupRequest::Startup(p) => p,
    };
    if tls.is_none() && door.require_tls {
        // Like pg_hba.conf's `hostssl`: refused before authentication.
        let refusal = Refusal::new(
            RefusalClass::TlsRequired,
            crate::config::ListenConfig::POSTGRES_REQUIRE_TLS_RULE,
            "this listener requires TLS; connect with sslmode=require or stronger",
        );
        accepted.refuse_before_auth(params.user.as_bytes(), &refusal);
        return Err(SessionError::Refused(super::refusal::fatal(&refusal)));
    }
    if params.minor_version > 0 || !params.protocol_options.is_empty() {
        wr.write_all(&msg::negotiate_protocol_version(
            0,
            params.protocol_options.clone(),
        ))
        .await?;
    }
    // A name no agent can have gets the same answer as a wrong token, without an exchange.
    let Some((verifier, known)) = accepted.scram_verifier(&params.user) else {
        accepted.auth_failed(
            params.user.as_bytes(),
            "authentication failed: invalid agent name",
        );
        let shown = crate::session::shown_name(params.user.as_bytes());
        return Err(client_auth::failed(&shown).into());
    };
    let end_point = tls.and_then(|t| t.end_point.as_deref());
    if let Err(e) =
        client_auth::authenticate(reader, wr, &verifier, known, &params.user, end_point).await
    {
        accepted.auth_failed(params.user.as_bytes(), "authentication failed");
        return Err(e.into());
    }
    let verified = accepted.scram_verified(&params.user);
    if !door.has_upstream(&params.database) {
        return Err(SessionError::Refused(PgErrorFields::fatal(
            "3D000",
            format!("database \"{}\" does not exist", params.database),
        )));
    }
    accepted.set_upstream(&params.database);
    let session = accepted
        .admit(&verified, &params.database, tls.is_some())
        .map_err(|r| SessionError::Refused(super::refusal::fatal(&r)))?;
    Ok(Some((params, session)))
}

async fn relay(
    door: &PgDoor,
    session: Session,
    params: StartupParams,
    reader: FrameReader<NetRead>,
    mut wr: NetWrite,
) -> Result<(), SessionError> {
    let core = session.core().clone();
    let Some(target) = door.target(session.upstream()) else {
        return Ok(()); // the upstream was checked at login; a reload cannot remove it
    };
    let timeout = Duration::from_millis(core.limits.upstream_connect_timeout_ms);
    let up = match upstream::connect(&target, &params.settings, timeout).await {
        Ok(up) => up,
        Err(e) => {
            warn!(upstream = %target.name, error = %e, "upstream login failed");
            let fields = upstream_failure(&target.name, &e);
            send_fatal(&mut wr, &fields).await;
            return Err(SessionError::Refused(fields));
        }
    };
    let _upstream_gauge = crate::telemetry::upstream_connection(&target.name);
    let cancel = CancelTarget {
        addr: up.addr,
        pid: up.backend_pid,
        secret: up.backend_secret,
        tls: target.tls.clone(),
    };
    let (pid, secret, _cancel_guard) = door.cancels.register(cancel.clone());
    let pg = Arc::new(PgSession::new(session));
    let mut hello = Vec::new();
    for f in &up.parameter_frames {
        hello.extend_from_slice(&pg.rewrite_parameter_status(f));
    }
    hello.extend_from_slice(&msg::backend_key_data(pid, secret));
    hello.extend_from_slice(&msg::ready_for_query(b'I'));
    wr.write_all(&hello).await?;
    pg.session().opened();
    info!(agent = %pg.agent(), upstream = %target.name, "session started");

    let pending = Pending::default();
    let mut to_client_fut = Box::pin(to_client::run(
        pg.clone(),
        pending.clone(),
        up.reader,
        &mut wr,
        cancel,
    ));
    let from_client_fut = from_client::run(pg.clone(), pending.clone(), reader, up.writer);
    // Shutting down: once nothing runs (or at the deadline) the session ends like a server's.
    let drained = core
        .lifecycle
        .drained(|| pending.settled() && pending.tx_status() == b'I');
    let result = tokio::select! {
        r = from_client_fut => ClientSide(r),
        r = &mut to_client_fut => UpstreamSide(r),
        _ = drained => ClientSide(Err(FromClientError::Fatal(
            PgErrorFields::fatal("57P01", "terminating connection due to administrator command (tollgate is shutting down)"),
        ))),
    };
    drop(to_client_fut);
    // Statements in flight when the session ends get an "outcome unknown" record.
    for e in pending.drain() {
        if let Expect::Simple {
            ticket: Some(t), ..
        }
        | Expect::Execute {
            ticket: Some(t), ..
        } = e
        {
            pg.context().abandoned(t);
        }
    }
    let lost = || PgErrorFields::fatal("08006", pg.context().upstream_lost());
    match result {
        ClientSide(Ok(ClientEnd::Terminated | ClientEnd::Closed)) => Ok(()),
        ClientSide(Err(FromClientError::Fatal(fields))) => {
            send_fatal(&mut wr, &fields).await;
            Err(SessionError::Refused(fields))
        }
        ClientSide(Err(e)) => {
            if let FromClientError::Upstream(_) = e {
                send_fatal(&mut wr, &lost()).await;
            }
            Err(SessionError::Io(std::io::Error::other(e.to_string())))
        }
        UpstreamSide(Ok(())) => Ok(()),
        UpstreamSide(Err(ToClientError::Client(e))) => Err(SessionError::Io(e)),
        UpstreamSide(Err(e)) => {
            send_fatal(&mut wr, &lost()).await;
            Err(SessionError::Io(std::io::Error::other(e.to_string())))
        }
    }
}

enum SideResult<A, B> {
    ClientSide(A),
    UpstreamSide(B),
}
use SideResult::{ClientSide, UpstreamSide};

/// FATAL for an upstream tollgate could not log in to: what failed, never the server's text.
fn upstream_failure(name: &str, e: &UpstreamError) -> PgErrorFields {
    let detail = match e {
        UpstreamError::Connect(_) | UpstreamError::Timeout(_) => {
            "the upstream is not accepting connections"
        }
        UpstreamError::LoginRefused(_) => "the upstream refused tollgate's credentials",
        _ => "the upstream did not complete the login",
    };
    PgErrorFields::fatal("08006", crate::session::upstream_unavailable(name)).with_detail(detail)
}
