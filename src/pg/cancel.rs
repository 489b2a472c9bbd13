//! Cancel routing: agents get tollgate's own backend keys, mapped to the upstream backend's.

use std::net::SocketAddr;

use bytes::BytesMut;
use dashmap::DashMap;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
pub struct CancelTarget {
    pub addr: SocketAddr,
    pub pid: i32,
    pub secret: i32,
    /// The upstream's TLS: the cancel key then travels encrypted too (SSLRequest first).
    pub tls: Option<crate::tls::UpstreamTls>,
}

/// Where a session's statements run right now: the attached server connection's backend, or
/// nothing between transactions (transaction pooling). Shared by the registry and the session.
pub type CancelSlot = std::sync::Arc<arc_swap::ArcSwapOption<CancelTarget>>;

/// (the key the client was given) → the slot of its session.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    keys: DashMap<(i32, i32), CancelSlot>,
}

/// Removes the key when the session ends.
pub struct CancelKeyGuard<'a> {
    registry: &'a CancelRegistry,
    key: (i32, i32),
}

impl Drop for CancelKeyGuard<'_> {
    fn drop(&mut self) {
        self.registry.keys.remove(&self.key);
    }
}

/// Sends a CancelRequest for `target`'s running statement (tollgate's own timeouts and row
/// limits use it too).
/// Sends a CancelRequest and waits (at most 2 s) until the server closes the connection: by
/// then it has signalled the backend, so whatever the session forwards next is not hit by it.
pub async fn send_cancel(target: CancelTarget) -> bool {
    let mut buf = BytesMut::new();
    postgres_protocol::message::frontend::cancel_request(target.pid, target.secret, &mut buf);
    let deliver = async {
        let tcp = TcpStream::connect(target.addr).await?;
        let mut stream = match &target.tls {
            Some(tls) => super::upstream::start_tls(tcp, tls)
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?,
            None => crate::tls::NetStream::Plain(tcp),
        };
        stream.write_all(&buf).await?;
        stream.flush().await?;
        let mut sink = [0u8; 64];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    };
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(2), deliver).await,
        Ok(Ok(()))
    )
}

impl CancelRegistry {
    /// Registers a key for `slot` and returns it with its guard: `pid` as given (a session
    /// shows its server's process id, as PostgreSQL would) or a random one, and a fresh random
    /// secret, so keys never collide.
    pub fn register(&self, pid: Option<i32>, slot: CancelSlot) -> (i32, i32, CancelKeyGuard<'_>) {
        let mut rng = rand::thread_rng();
        loop {
            let key = (
                pid.unwrap_or_else(|| rng.gen_range(1..i32::MAX)),
                rng.gen::<i32>(),
            );
            if let dashmap::mapref::entry::Entry::Vacant(v) = self.keys.entry(key) {
                v.insert(slot);
                return (
                    key.0,
                    key.1,
                    CancelKeyGuard {
                        registry: self,
                        key,
                    },
                );
            }
        }
    }

    /// Forwards a cancel request for a known key; unknown keys are ignored (as PostgreSQL does).
    pub async fn cancel(&self, pid: i32, secret: i32) -> bool {
        let Some(slot) = self.keys.get(&(pid, secret)).map(|t| t.clone()) else {
            metrics::counter!("tollgate_cancel_requests_total", "result" => "unknown_key")
                .increment(1);
            return false;
        };
        // Between transactions nothing runs: like a cancel that arrives too late, it is a no-op.
        let Some(target) = slot.load_full() else {
            return false;
        };
        let target = (*target).clone();
        metrics::counter!("tollgate_cancel_requests_total", "result" => "forwarded").increment(1);
        send_cancel(target).await
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}
