//! Serving an axum router over HTTP/1 on a TCP listener, for the MCP and admin listeners: each
//! connection holds a place in the core's pre-authentication count until a request on it
//! authenticates (beyond `limits.max_preauth_connections` it is refused at once with a 503), its
//! handshake and every request's headers must arrive within `limits.http_header_timeout_ms`
//! (hyper's header-read timeout, which also bounds an idle keep-alive connection), and `stop`
//! ends the accept loop and lets each connection finish the request it is in (a drain waits for
//! the MCP listener's: `HttpServe::drained`).
//!
//! axum's own `serve` sets no timer, so hyper never times out a request that never completes:
//! 20,000 connections that each sent half a request header held 20,000 descriptors forever.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::refusal::Refusal;
use crate::session::{Core, PreauthSlot};

/// How an HTTP listener serves its connections.
pub struct HttpServe {
    pub core: Arc<Core>,
    /// The listener's name in logs and in `tollgate_preauth_refused_total` (`mcp`, `admin`).
    pub label: &'static str,
    /// The JSON body of the 503 a connection over the pre-authentication cap gets.
    pub refusal_body: fn(&Refusal) -> String,
    pub stop: watch::Receiver<bool>,
    /// Each connection counts as a live client session (`session::lifecycle`) for its life, so
    /// a drain waits for the request in progress (`stop` lets it finish) before the process
    /// exits. The admin listener's do not: it keeps serving until the drain is over.
    pub drained: bool,
}

/// Serves `app` on `listener` until `stop` flips to true. `negotiate` turns an accepted socket
/// into the stream HTTP is spoken on and what requests see as `ConnectInfo<Info>` (the MCP
/// listener negotiates TLS there); `None` closes the connection.
pub async fn serve<N, Fut, Io, Info>(
    listener: TcpListener,
    app: Router,
    serve: HttpServe,
    negotiate: N,
) where
    N: Fn(TcpStream, SocketAddr) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Option<(Io, Info)>> + Send + 'static,
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Info: Clone + Send + Sync + 'static,
{
    let HttpServe {
        core,
        label,
        refusal_body,
        mut stop,
        drained,
    } = serve;
    let timeout = Duration::from_millis(core.limits.http_header_timeout_ms);
    loop {
        let (socket, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(listener = label, error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => return,
        };
        crate::session::watch_progress(&socket);
        let slot = match core.try_preauth(label, addr) {
            Ok(slot) => slot,
            Err(refusal) => {
                refuse(&socket, &refusal, refusal_body);
                continue;
            }
        };
        let (app, negotiate, mut stop) = (app.clone(), negotiate.clone(), stop.clone());
        let write_stall_ms = core.limits.client_write_timeout_ms;
        let live = drained.then(|| core.lifecycle.enter());
        tokio::spawn(async move {
            let _live = live;
            // A connection still negotiating (TLS, or nothing sent yet) when the gateway stops
            // has no request in progress: closed then, not at the end of its timeout.
            let negotiated = tokio::select! {
                n = tokio::time::timeout(timeout, negotiate(socket, addr)) => n,
                _ = stopped(&mut stop) => return,
                // Its place went to a connection from another address (`session::preauth`).
                _ = slot.evicted() => return,
            };
            let Ok(Some((io, info))) = negotiated else {
                debug!(listener = label, %addr, "HTTP connection: no handshake in time, or a failed one");
                return;
            };
            // A response the client does not read cannot keep the connection for ever.
            let io = crate::session::StallGuard::new(io, write_stall_ms);
            connection(io, info, slot, app, timeout, stop).await;
        });
    }
}

/// One connection: HTTP/1 with the header-read timeout, each request carrying the connection's
/// `ConnectInfo` and its pre-authentication place (`Arc<PreauthSlot>`, released by the
/// listener's authentication once a request proves who it is).
async fn connection<Io, Info>(
    io: Io,
    info: Info,
    slot: Arc<PreauthSlot>,
    app: Router,
    timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Info: Clone + Send + Sync + 'static,
{
    let app = TowerToHyperService::new(app);
    let place = slot.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(info.clone()));
        req.extensions_mut().insert(slot.clone());
        hyper::service::Service::call(&app, req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        ended = conn.as_mut() => {
            if let Err(e) = ended {
                debug!(error = %e, "HTTP connection ended");
            }
            return;
        }
        _ = stopped(&mut stop) => {}
        // Its place in the pre-authentication count went to a connection from another address
        // while no request on it had authenticated: closed (`session::preauth`).
        _ = place.evicted() => {
            debug!("HTTP connection closed before authenticating: its place went to another address");
            return;
        }
    }
    // Stopping: finish the request in progress, take no new one.
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// Until `stop` flips to true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The 503 for a connection over the pre-authentication cap, written without waiting (the
/// socket's send buffer is empty) and before anything is read; then the socket is closed.
fn refuse(socket: &TcpStream, refusal: &Refusal, body: fn(&Refusal) -> String) {
    let body = body(refusal);
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = socket.try_write(response.as_bytes());
}

/// A connection of an HTTP listener: plain, or TLS when the client opened with a handshake.
pub type HttpStream =
    tokio_util::either::Either<TcpStream, tokio_rustls::server::TlsStream<TcpStream>>;

/// Plain HTTP, or TLS when the first byte is a handshake record (0x16) and `[tls]` has a
/// certificate: the MCP and admin listeners take both on one port. `protocol` labels the
/// handshake failure counter.
pub async fn tls_or_plain(
    socket: TcpStream,
    core: &crate::session::Core,
    protocol: &'static str,
) -> Option<HttpStream> {
    use tokio_util::either::Either;
    let _ = socket.set_nodelay(true);
    let mut first = [0u8; 1];
    let n = socket.peek(&mut first).await.ok()?;
    if n == 0 || first[0] != 0x16 {
        return Some(Either::Left(socket));
    }
    let Some(server) = core.tls.current() else {
        tracing::debug!(
            listener = protocol,
            "TLS ClientHello, but no [tls] certificate is configured"
        );
        return None;
    };
    // No ALPN: HTTP/1.1 is what the listeners speak, and clients fall back to it.
    let acceptor = tokio_rustls::TlsAcceptor::from(server.redis.clone());
    match acceptor.accept(socket).await {
        Ok(s) => Some(Either::Right(s)),
        Err(e) => {
            metrics::counter!("tollgate_tls_handshake_failures_total", "protocol" => protocol)
                .increment(1);
            tracing::debug!(listener = protocol, error = %e, "TLS handshake failed");
            None
        }
    }
}
