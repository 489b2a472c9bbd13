//! One client connection, phase by phase: encryption → startup → agent auth → admission (on the
//! session core) → upstream login → relay. Wire work only: who may do what is the core's and the
//! policy's business.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::{info, warn};

use super::backend::{self as msg, PgErrorFields};
use super::client_auth::{self, ClientAuthError};
use super::encryption::{self, EncryptionError, TlsInfo};
use super::frame::FrameReader;
use super::from_client::{self, ClientEnd, FromClientError};
use super::link::Link;
use super::pending::{Expect, Pending};
use super::pool::{CheckoutError, SettingsKey};
use super::startup::{self, StartupError, StartupParams, StartupRequest};
use super::statement::PgSession;
use super::to_client::{self, ToClientError};
use super::upstream::UpstreamError;
use super::PgDoor;
use crate::audit::Protocol;
use crate::config::PoolMode;
use crate::refusal::{Refusal, RefusalClass};
use crate::session::{Accepted, Core, Drain, Session};
use crate::tls::{NetRead, NetWrite};

pub async fn handle(core: Arc<Core>, door: Arc<PgDoor>, mut socket: TcpStream, peer: SocketAddr) {
    let accepted = match core.try_accept(Protocol::Postgres, peer) {
        Ok(a) => a,
        Err(refusal) => {
            // Too many connections waiting to authenticate: say so before reading anything.
            let _ = socket
                .write_all(&super::refusal::fatal(&refusal).encode())
                .await;
            return;
        }
    };
    accepted.serve(|accepted| run(accepted, door, socket)).await
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
                Drain::Login,
            )
            .await;
            return Err(SessionError::Timeout);
        }
        Ok(Ok(Some(x))) => x,
        Ok(Ok(None)) => {
            // A cancel request, already handled. Closed as PostgreSQL closes it: over TLS with
            // close_notify first (libpq 17's cancel API reports a cancel whose TLS ended without
            // one as failed, though it took effect).
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), wr.shutdown()).await;
            return Ok(());
        }
        Ok(Err(e)) => {
            if let Some(fields) = refusal_of(&e) {
                send_fatal(&mut wr, fields, Drain::Login).await;
            }
            return Err(e);
        }
    };
    reader.set_limit(core.limits.max_message_bytes);
    reader.set_held(crate::ratelimit::Held::of(&core.held, session.agent()));
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

/// The last message of a session, and the close: within `LAST_WRITE`, so a client that does not
/// read cannot keep the session's task and connection slot.
async fn send_fatal(wr: &mut NetWrite, fields: &PgErrorFields, drain: Drain) {
    crate::session::last_words(wr, &fields.encode(), drain).await;
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
    let request = match startup::negotiate(reader, first_packet).await {
        Err(startup::StartupError::Denied { user, refusal }) => {
            // A replication connection, a protected setting: recorded like any refusal.
            accepted.refuse_before_auth(user.as_bytes(), &refusal);
            return Err(SessionError::Refused(super::refusal::fatal(&refusal)));
        }
        other => other?,
    };
    let params = match request {
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
        // The newest version tollgate speaks, 3.0, as the whole number (as PostgreSQL sends
        // it: libpq 18 reads 0 as a downgrade to before 3.0 and gives up).
        wr.write_all(&msg::negotiate_protocol_version(
            msg::PROTOCOL_3_0,
            params.protocol_options.clone(),
        ))
        .await?;
    }
    // A name no agent can have gets the same answer as a wrong token, without an exchange.
    let strength = startup::scram_strength(door.scram_iterations, &params);
    let Some((verifier, known)) = accepted.scram_verifier(&params.user, strength) else {
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
        accepted.refuse_unknown_upstream(params.user.as_bytes(), &params.database);
        // The name as PostgreSQL shows it, cut to 63 bytes (it was echoed whole: a review).
        return Err(SessionError::Refused(PgErrorFields::fatal(
            "3D000",
            format!(
                "database \"{}\" does not exist",
                super::name_map::clipped(&params.database)
            ),
        )));
    }
    accepted.set_upstream(&params.database);
    let session = accepted
        .admit(&verified, &params.database, tls.is_some())
        .map_err(|r| SessionError::Refused(super::refusal::fatal(&r)))?;
    Ok(Some((params, session)))
}

/// The pool mode of this session: its agent's policy may ask for session pooling.
fn pool_mode(session: &Session, default: PoolMode) -> PoolMode {
    let policy = session.core().policy.agent_policy(session.agent());
    let asked = policy.and_then(|p| p.pool_mode(session.upstream()));
    asked.unwrap_or(default)
}

/// A session refused because its upstream's pool could not give it a connection (at login, or
/// for a transaction on a transaction pool).
pub(super) fn checkout_failure(e: &CheckoutError, pool: &str) -> PgErrorFields {
    match e {
        CheckoutError::Upstream(u) => {
            warn!(upstream = %pool, error = %u, "upstream login failed");
            upstream_failure(pool, u)
        }
        // A limit: `rule` names its setting.
        _ => super::refusal::fatal(&Refusal::new(
            RefusalClass::TooManyConnections,
            e.rule().unwrap_or_default(),
            e.to_string(),
        )),
    }
}

async fn relay(
    door: &PgDoor,
    session: Session,
    params: StartupParams,
    reader: FrameReader<NetRead>,
    mut wr: NetWrite,
) -> Result<(), SessionError> {
    let core = session.core().clone();
    let Some(pools) = door.pools(session.upstream()) else {
        return Ok(()); // the upstream was checked at login; a reload cannot remove it
    };
    let mode = pool_mode(&session, pools.mode());
    let pool = pools.for_mode(mode).clone();
    let key = Arc::new(SettingsKey::new(
        &params.settings,
        mode == PoolMode::Transaction,
    ));
    // The login shows what a server connection of these settings reports (ParameterStatus): a
    // transaction-pooled session needs no connection for that once one was opened; a
    // session-pooled one keeps the connection it gets now.
    // A template that reads SQL text otherwise than the analysis (`sql_reading`) may be stale
    // (an administrator fixed the setting since): a real connection is checked instead.
    let template = match mode {
        PoolMode::Transaction => pool
            .template(&key)
            .filter(|t| super::sql_reading::check_all(&t.params).is_ok()),
        PoolMode::Session => None,
    };
    // Transaction pooling: the connections this session holds count against its agent's share.
    let share = (mode == PoolMode::Transaction).then(|| pool.share_of(session.agent()));
    let server = match template {
        Some(_) => None,
        None => match pool.checkout(&key, share.as_ref()).await {
            Ok(s) => Some(s),
            Err(e) => {
                let fields = checkout_failure(&e, &pool.name);
                session.not_opened(e.rule().as_deref(), &told(&fields), Some(fields.code));
                send_fatal(&mut wr, &fields, Drain::Session).await;
                return Err(SessionError::Refused(fields));
            }
        },
    };
    let info = template.unwrap_or_else(|| server.as_ref().expect("checked out").info.clone());
    let pg = Arc::new(PgSession::new(session));
    // A connection that reads SQL text otherwise than the analysis is never used for an
    // analysed session (`sql_reading`): closed, and the session refused.
    if let Err(fields) = pg.check_server(&info.params) {
        if let Some(server) = server {
            pool.checkin(server, false, false);
        }
        send_fatal(&mut wr, &fields, Drain::Session).await;
        return Err(SessionError::Refused(fields));
    }
    let link = Arc::new(Link::new(mode, pool.clone(), key, share));
    // Session pooling shows the server's own process id, as PostgreSQL would, so
    // pg_backend_pid(), notifications and backend signals agree with BackendKeyData; with
    // transaction pooling the process id is tollgate's own, stable for the session (the server
    // changes between transactions). Either way the secret is tollgate's: cancels are routed here.
    let shown_pid = (mode == PoolMode::Session).then_some(info.pid);
    let owner = crate::policy::backends::BackendOwner {
        agent: pg.agent().clone(),
        upstream: pg.session().upstream().clone(),
        server_process: shown_pid.is_some(),
    };
    let (pid, secret, cancel_guard) = door.cancels.register(shown_pid, link.cancel.clone(), owner);
    link.client_pid
        .store(pid, std::sync::atomic::Ordering::Relaxed);
    let mut hello = Vec::new();
    for f in &info.param_frames {
        hello.extend_from_slice(&pg.rewrite_parameter_status(f));
    }
    hello.extend_from_slice(&msg::backend_key_data(pid, secret));
    hello.extend_from_slice(&msg::ready_for_query(b'I'));
    let params_seen = info.params.to_vec();
    let attached = match (mode, server) {
        (PoolMode::Session, Some(server)) => Some(link.attach(server).await),
        (_, Some(server)) => {
            pool.checkin(server, true, true);
            None
        }
        (_, None) => None,
    };
    pg.context()
        .client_writes()
        .write_all(&mut wr, &hello)
        .await?;
    pg.session().opened();
    info!(agent = %pg.agent(), upstream = %pool.name, mode = mode.name(), "session started");

    let pending = Pending::default();
    let mut to_client_fut = Box::pin(to_client::run(
        pg.clone(),
        pending.clone(),
        link.clone(),
        params_seen,
        &mut wr,
    ));
    let from_client_fut = from_client::run(
        pg.clone(),
        pending.clone(),
        reader,
        link.clone(),
        attached,
        door.cancels.clone(),
    );
    // Shutting down: once nothing runs (or at the deadline) the session ends like a server's.
    // Gated: the relay's wake-ups do not poll it (`session::gate`).
    let drained = crate::session::gate::gated(
        core.lifecycle
            .drained(|| pending.settled() && pending.tx_status() == b'I'),
    );
    tokio::pin!(drained);
    let shutting_down = || {
        ClientSide(
            Err(FromClientError::Fatal(PgErrorFields::fatal(
                "57P01",
                "terminating connection due to administrator command (tollgate is shutting down)",
            ))),
            None,
        )
    };
    let mut result = tokio::select! {
        (r, rest) = from_client_fut => ClientSide(r, rest),
        r = &mut to_client_fut => UpstreamSide(r),
        _ = &mut drained => shutting_down(),
    };
    // The client stopped sending (Terminate, or EOF after a half-close) with replies owed: as a
    // server would, its statements are answered before the session ends, for at most
    // `REPLY_GRACE`. Not a batch without Sync: PostgreSQL holds those replies until a Sync or
    // Flush that will not come; nor a COPY FROM STDIN the client left unended: the server waits
    // for data that will not come, holding the transaction's locks (a live review: 5 s), so
    // the connection is closed at once, which aborts it.
    if matches!(result, ClientSide(Ok(_), _)) && !pending.batch_open() && !pending.copy_waiting() {
        let grace = tokio::time::sleep(crate::session::REPLY_GRACE);
        tokio::pin!(grace);
        // A COPY FROM STDIN whose CopyInResponse comes during the grace (the client sent the
        // COPY and its data and left at once) waits for data as well: no reply will come.
        while !pending.settled() && !pending.copy_waiting() {
            tokio::select! {
                _ = &mut grace => break,
                // The reply half ended (the client is gone or stopped reading, or the server
                // closed): nothing more can be delivered.
                r = &mut to_client_fut => {
                    if let Err(ToClientError::Client(e)) = &r {
                        pg.session().client_stalled(e);
                    }
                    break;
                }
                _ = tokio::time::sleep(std::time::Duration::from_millis(10)) => {}
                _ = &mut drained => {
                    result = shutting_down();
                    break;
                }
            }
        }
    }
    drop(to_client_fut);
    // A client that stopped reading its replies: recorded, and its statements' records say so.
    if let UpstreamSide(Err(ToClientError::Client(e))) = &result {
        pg.session().client_stalled(e);
    }
    // The process id the client was shown names no session of its from here: before its server
    // connection can serve another session (session pooling shows that one the same id).
    drop(cancel_guard);
    // Statements in flight when the session ends get an "outcome unknown" record.
    let mut owed = false;
    for e in pending.drain() {
        owed = true;
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
    // The server connection goes back (reset if the session left state on it), unless the
    // session ended with something running or the connection broke.
    let clean_end = matches!(result, ClientSide(Ok(_), _));
    let (result, rest) = match result {
        ClientSide(r, rest) => (ClientSide(r, None), rest),
        other => (other, None),
    };
    if let Some(rest) = rest {
        // Not before a cancel of tollgate's own has landed (it must not hit the next session).
        tokio::time::timeout(std::time::Duration::from_secs(3), pending.cancels_settled())
            .await
            .ok();
        if let Ok(server) = link.detach(rest).await {
            let usable = clean_end && !owed && pending.between_transactions();
            // Session pooling resets every connection its session used (as PgBouncer's
            // server_reset_query): statements can leave state tollgate cannot see (a serial
            // column's nextval, say); transaction pooling resets only a session that was pinned.
            let clean = link.pooled_by_transaction() && link.take_clean();
            pool.checkin(server, clean, usable);
        }
    }
    let lost = || PgErrorFields::fatal("08006", pg.context().upstream_lost());
    match result {
        ClientSide(Ok(ClientEnd::Terminated | ClientEnd::Closed), _) => Ok(()),
        ClientSide(Err(FromClientError::Fatal(fields)), _) => {
            send_fatal(&mut wr, &fields, Drain::Session).await;
            Err(SessionError::Refused(fields))
        }
        ClientSide(Err(e), _) => {
            if let FromClientError::Upstream(_) = e {
                send_fatal(&mut wr, &lost(), Drain::Session).await;
            }
            Err(SessionError::Io(std::io::Error::other(e.to_string())))
        }
        UpstreamSide(Ok(())) => Ok(()),
        UpstreamSide(Err(ToClientError::Client(e))) => Err(SessionError::Io(e)),
        UpstreamSide(Err(ToClientError::Fatal(fields))) => {
            send_fatal(&mut wr, &fields, Drain::Session).await;
            Err(SessionError::Refused(fields))
        }
        UpstreamSide(Err(e)) => {
            send_fatal(&mut wr, &lost(), Drain::Session).await;
            Err(SessionError::Io(std::io::Error::other(e.to_string())))
        }
    }
}

/// What a FATAL told the client, for the record of a session or statement that did not run.
pub(super) fn told(fields: &PgErrorFields) -> String {
    match &fields.detail {
        Some(d) => format!("{} ({d})", fields.message),
        None => fields.message.clone(),
    }
}

enum SideResult<A, B, C> {
    ClientSide(A, Option<C>),
    UpstreamSide(B),
}
use SideResult::{ClientSide, UpstreamSide};

/// What failed when tollgate could not log in upstream, by class and SQLSTATE (never the
/// server's text): the DETAIL of the wire's FATAL and of the MCP `query` tool's error.
pub fn upstream_failure_detail(e: &UpstreamError) -> String {
    match e {
        UpstreamError::Connect(_) | UpstreamError::Timeout(_) => {
            "the upstream is not accepting connections".to_string()
        }
        UpstreamError::LoginRefused(code) => super::upstream::login_refusal(code),
        _ => "the upstream did not complete the login".to_string(),
    }
}

/// FATAL for an upstream tollgate could not log in to: what failed, never the server's text.
fn upstream_failure(name: &str, e: &UpstreamError) -> PgErrorFields {
    let detail = upstream_failure_detail(e);
    PgErrorFields::fatal("08006", crate::session::upstream_unavailable(name)).with_detail(detail)
}
