//! The PostgreSQL front end: speaks the wire protocol to agents and relays it to the upstream,
//! message by message, with every Query and Parse passing the policy hook. Decides nothing itself.

pub mod backend;
pub mod cancel;
pub mod client_auth;
pub mod encryption;
pub mod frame;
pub mod from_client;
pub mod frontend;
pub mod pending;
pub mod schema_loader;
pub mod session;
pub mod startup;
pub mod to_client;
pub mod upstream;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::warn;

use crate::gateway::Gateway;

/// Accepts PostgreSQL clients until `shutdown` flips to true.
pub async fn serve(gw: Arc<Gateway>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    tokio::spawn(session::handle(gw.clone(), socket, peer));
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}
