//! Redis front end (protocol only, decides nothing): RESP2/RESP3 listener, agent AUTH/HELLO,
//! one upstream connection per session logged in with the vaulted password, and a relay that
//! asks `policy::redis` about every command and masks replies as told.

pub mod audit;
pub mod auth;
pub mod command;
pub mod mask_reply;
pub mod relay;
pub mod reply;
pub mod scan;
pub mod session;
pub mod upstream;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::warn;

use crate::gateway::Gateway;
use upstream::RedisTarget;

/// Accepts connections until shutdown; each runs in its own task. With `tls`, every
/// connection starts with a TLS handshake (Redis has no in-band upgrade).
pub async fn serve(
    gw: Arc<Gateway>,
    target: Arc<RedisTarget>,
    listener: TcpListener,
    tls: bool,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((socket, peer)) => {
                    tokio::spawn(session::handle(gw.clone(), target.clone(), socket, peer, tls));
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}
