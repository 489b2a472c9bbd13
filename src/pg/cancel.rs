//! Cancel routing: agents get tollgate's own backend keys, mapped to the upstream backend's;
//! and whose session shows which process id (for the built-in rule on backend signals).

use std::net::SocketAddr;

use bytes::BytesMut;
use dashmap::DashMap;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::policy::backends::BackendOwner;

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
pub type CancelSlot = std::sync::Arc<CancelRoute>;

/// A session's cancel target and the client cancels on their way to it. A connection is handed
/// to another session only once the target is cleared and no client cancel read it before:
/// a cancel sent as the statement ended must never land on the next session's statement.
#[derive(Debug, Default)]
pub struct CancelRoute {
    target: arc_swap::ArcSwapOption<CancelTarget>,
    in_flight: CancelsInFlight,
    /// Wakes a session whose statement waits for a server connection: a cancel with no target
    /// cancels that wait (nothing stored: one that comes while nothing waits is a no-op).
    waiting: tokio::sync::Notify,
    /// Cancels received, counted under the same lock as the target is read by them and stored
    /// by [`CancelRoute::store_unless_cancelled`]: a cancel that comes as a connection arrives
    /// either finds its target or stops it from being attached, never neither.
    cancels: std::sync::Mutex<u64>,
}

/// Cancel requests on their way to a server connection, counted: the connection serves another
/// statement (or session) only once they have landed. Tollgate's own cancels are counted per
/// session (`Pending`), clients' per cancel route.
#[derive(Debug, Clone, Default)]
pub struct CancelsInFlight(std::sync::Arc<tokio::sync::watch::Sender<u32>>);

/// Held while one cancel request is on its way; dropping it marks it delivered (or given up).
#[derive(Debug)]
pub struct CancelInFlight(std::sync::Arc<tokio::sync::watch::Sender<u32>>);

impl Drop for CancelInFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl CancelsInFlight {
    pub fn start(&self) -> CancelInFlight {
        self.0.send_modify(|n| *n += 1);
        CancelInFlight(self.0.clone())
    }

    /// Waits until every cancel started so far was delivered.
    pub async fn settled(&self) {
        if *self.0.borrow() == 0 {
            return;
        }
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

impl CancelRoute {
    pub fn store(&self, target: Option<std::sync::Arc<CancelTarget>>) {
        self.target.store(target);
    }

    pub fn load_full(&self) -> Option<std::sync::Arc<CancelTarget>> {
        self.target.load_full()
    }

    /// How many cancels came so far.
    pub fn cancels(&self) -> u64 {
        *self.cancels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `target` unless a cancel came since [`CancelRoute::cancels`] said `seen`: false
    /// then, and nothing is stored (the statement waiting for this connection was cancelled).
    pub fn store_unless_cancelled(&self, target: std::sync::Arc<CancelTarget>, seen: u64) -> bool {
        let count = self.cancels.lock().unwrap_or_else(|e| e.into_inner());
        if *count != seen {
            return false;
        }
        self.target.store(Some(target));
        true
    }

    /// Counts a cancel and reads its target, under one lock (see `cancels`).
    fn cancel_target(&self) -> Option<std::sync::Arc<CancelTarget>> {
        let mut count = self.cancels.lock().unwrap_or_else(|e| e.into_inner());
        *count += 1;
        self.target.load_full()
    }

    /// Resolves when a cancel comes for the session while no server connection runs anything
    /// of it (its statement waits for one).
    pub async fn cancelled_while_waiting(&self) {
        self.waiting.notified().await
    }

    /// Clears the target (nothing runs) and waits until the client cancels that read it were
    /// delivered (each gives up after 2 s).
    pub async fn clear_and_settle(&self) {
        self.target.store(None);
        self.in_flight.settled().await;
    }
}

/// Process ids tollgate shows transaction-pooled sessions start above this: Linux's
/// `PID_MAX_LIMIT` (2^22; the BSDs and macOS stay far below), so they never name a server process.
pub const PID_MAX_LIMIT: i32 = 1 << 22;

/// (the key the client was given) → the slot of its session; and (the process id a live session
/// was shown) → whose session it is, with the secret of its key.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    keys: DashMap<(i32, i32), CancelSlot>,
    shown: DashMap<i32, (i32, BackendOwner)>,
}

/// Removes the key when the session ends.
pub struct CancelKeyGuard<'a> {
    registry: &'a CancelRegistry,
    key: (i32, i32),
}

impl Drop for CancelKeyGuard<'_> {
    fn drop(&mut self) {
        self.registry.keys.remove(&self.key);
        let (pid, secret) = self.key;
        self.registry
            .shown
            .remove_if(&pid, |_, (s, _)| *s == secret);
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
    /// Registers a key for `slot` of `owner`'s session and returns it with its guard: the
    /// process id is `server_pid` (session pooling shows the server's, as PostgreSQL would;
    /// `owner.server_process` says so) or a random one above [`PID_MAX_LIMIT`] no live session
    /// shows; the secret is fresh and random, so keys never collide.
    pub fn register(
        &self,
        server_pid: Option<i32>,
        slot: CancelSlot,
        owner: BackendOwner,
    ) -> (i32, i32, CancelKeyGuard<'_>) {
        let mut rng = rand::thread_rng();
        loop {
            let key = (
                server_pid.unwrap_or_else(|| rng.gen_range(PID_MAX_LIMIT + 1..=i32::MAX)),
                rng.gen::<i32>(),
            );
            if server_pid.is_none() && self.shown.contains_key(&key.0) {
                continue;
            }
            if let dashmap::mapref::entry::Entry::Vacant(v) = self.keys.entry(key) {
                v.insert(slot);
                self.shown.insert(key.0, (key.1, owner));
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
        // Counted before the target is read, so `clear_and_settle` sees it.
        let _flight = slot.in_flight.start();
        // Between transactions nothing runs: like a cancel that arrives too late, it is a no-op;
        // unless the session's statement waits for a server connection: that wait is cancelled.
        let Some(target) = slot.cancel_target() else {
            slot.waiting.notify_waiters();
            metrics::counter!("tollgate_cancel_requests_total", "result" => "no_server")
                .increment(1);
            return false;
        };
        let target = (*target).clone();
        metrics::counter!("tollgate_cancel_requests_total", "result" => "forwarded").increment(1);
        send_cancel(target).await
    }

    /// Whose live session shows process id `pid`, if any.
    pub fn owner(&self, pid: i32) -> Option<BackendOwner> {
        self.shown.get(&pid).map(|e| e.value().1.clone())
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(agent: &str, server_process: bool) -> BackendOwner {
        BackendOwner {
            agent: agent.into(),
            upstream: "shop".into(),
            server_process,
        }
    }

    fn slot() -> CancelSlot {
        std::sync::Arc::default()
    }

    /// A client cancel read the target just before the session let its connection go: the
    /// connection is not handed on until that cancel reached the server.
    #[tokio::test]
    async fn a_connection_is_let_go_only_after_the_client_cancels_that_read_it() {
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let r = std::sync::Arc::new(CancelRegistry::default());
        let s = slot();
        s.store(Some(std::sync::Arc::new(CancelTarget {
            addr,
            pid: 4242,
            secret: 7,
            tls: None,
        })));
        let (pid, secret, _guard) = r.register(Some(4242), s.clone(), owner("a", true));
        let cancel = tokio::spawn({
            let r = r.clone();
            async move { r.cancel(pid, secret).await }
        });
        // The server takes the request and holds the connection a while, as a busy one might.
        let (mut conn, _) = server.accept().await.unwrap();
        let settle = tokio::spawn({
            let s = s.clone();
            async move { s.clear_and_settle().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(
            !settle.is_finished(),
            "let go while a cancel was on its way"
        );
        let mut request = [0u8; 16];
        conn.read_exact(&mut request).await.unwrap();
        drop(conn);
        assert!(cancel.await.unwrap());
        tokio::time::timeout(std::time::Duration::from_secs(1), settle)
            .await
            .expect("let go once the cancel was delivered")
            .unwrap();
        // And nothing reaches a connection that was let go.
        assert!(!r.cancel(pid, secret).await);
    }

    #[test]
    fn a_session_shows_its_servers_process_while_it_lives() {
        let r = CancelRegistry::default();
        let (pid, _, guard) = r.register(Some(4242), slot(), owner("a", true));
        assert_eq!(pid, 4242);
        assert_eq!(r.owner(4242), Some(owner("a", true)));
        drop(guard);
        assert_eq!(r.owner(4242), None);
        assert!(r.is_empty());
    }

    #[test]
    fn transaction_pooled_ids_are_never_a_server_process_and_never_shared() {
        let r = CancelRegistry::default();
        let mut guards = Vec::new();
        let mut ids = std::collections::HashSet::new();
        for _ in 0..2000 {
            let (pid, _, g) = r.register(None, slot(), owner("a", false));
            assert!(pid > PID_MAX_LIMIT, "{pid}");
            assert!(ids.insert(pid), "{pid} shown twice");
            guards.push(g);
        }
        assert_eq!(r.len(), 2000);
    }

    #[test]
    fn the_session_that_ended_does_not_take_the_next_ones_id_with_it() {
        let r = CancelRegistry::default();
        let (_, _, first) = r.register(Some(77), slot(), owner("a", true));
        // The same server connection, handed to another session before the first guard drops.
        let (_, _, second) = r.register(Some(77), slot(), owner("b", true));
        drop(first);
        assert_eq!(r.owner(77), Some(owner("b", true)));
        drop(second);
        assert_eq!(r.owner(77), None);
    }

    /// A cancel that comes as a connection arrives either finds the target or keeps it from
    /// being stored (the waiting statement is then cancelled), never neither.
    #[test]
    fn a_cancel_racing_the_attach_is_never_lost() {
        let route = CancelRoute::default();
        let target = || {
            std::sync::Arc::new(CancelTarget {
                addr: "127.0.0.1:5432".parse().unwrap(),
                pid: 1,
                secret: 2,
                tls: None,
            })
        };
        let seen = route.cancels();
        assert!(route.cancel_target().is_none(), "no target yet");
        assert!(
            !route.store_unless_cancelled(target(), seen),
            "cancelled since"
        );
        assert!(route.load_full().is_none());
        let seen = route.cancels();
        assert!(route.store_unless_cancelled(target(), seen));
        assert!(
            route.cancel_target().is_some(),
            "after the store, cancels find it"
        );
    }
}
