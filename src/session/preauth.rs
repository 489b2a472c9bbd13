//! The pre-authentication count (`limits.max_preauth_connections`): connections that have
//! arrived and not logged in yet, on every listener together.
//!
//! When it is full, a newcomer from another address than the one holding the most places takes
//! the place of that address's longest-waiting connection, which is closed, as long as that
//! address still holds more places than the newcomer's afterwards. Before, a client that opened
//! idle sockets and reopened each one the auth deadline closed kept every login out for as long
//! as it liked (a live review: 100 sockets held the cap of 100, and every new psql and
//! redis-cli was refused for the whole run); now it only keeps out clients that share its
//! address. A newcomer from the address that holds the most (or as many) is refused as before:
//! nothing tells its honest connections from its flood, and evicting its own would only turn a
//! flood into a churn of accepts.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

/// The count, and the places that may be given up, by client address in arrival order.
#[derive(Debug, Default)]
pub struct PreauthCount {
    count: AtomicUsize,
    waiting: Mutex<HashMap<IpAddr, VecDeque<Weak<PreauthSlot>>>>,
}

impl PreauthCount {
    pub fn get(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether one more, from `newcomer`, may wait: below `cap`, or after a place of a larger
    /// address was taken back for it.
    pub fn room(&self, cap: usize, newcomer: IpAddr) -> bool {
        self.get() < cap || self.evict_for(newcomer)
    }

    /// Closes the longest-waiting connection of the address with the most places, if that is
    /// not `newcomer`'s and holds at least two more than it.
    fn evict_for(&self, newcomer: IpAddr) -> bool {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        // Admitted and ended connections leave first (they are what the queues mostly hold).
        prune(&mut waiting);
        let mine = waiting.get(&newcomer).map_or(0, VecDeque::len);
        let Some((_, largest)) = waiting
            .iter_mut()
            .filter(|(addr, _)| **addr != newcomer)
            .max_by_key(|(_, q)| q.len())
        else {
            return false;
        };
        if largest.len() < mine + 2 {
            return false;
        }
        let victim = largest.pop_front().and_then(|w| w.upgrade());
        drop(waiting);
        match victim {
            Some(slot) => {
                slot.evict();
                true
            }
            None => false,
        }
    }
}

/// Drops the places no longer held, and the addresses left with none.
fn prune(waiting: &mut HashMap<IpAddr, VecDeque<Weak<PreauthSlot>>>) {
    waiting.retain(|_, q| {
        q.retain(still_held);
        !q.is_empty()
    });
}

/// Whether a queued place is still held (its connection alive and not logged in).
fn still_held(w: &Weak<PreauthSlot>) -> bool {
    w.upgrade().is_some_and(|s| s.held())
}

/// A place in the pre-authentication count, held from a connection's arrival until it
/// authenticates ([`PreauthSlot::release`]), ends (drop) or is evicted for a newcomer
/// ([`PreauthSlot::evicted`]). The HTTP listeners hold one per connection until a request on it
/// authenticates.
#[derive(Debug)]
pub struct PreauthSlot {
    count: Arc<PreauthCount>,
    held: AtomicBool,
    evicted: AtomicBool,
    wake: Notify,
}

impl PreauthSlot {
    /// Takes a place (never refused: the cap is checked by the caller). With `peer`, the place
    /// may be taken back for a newcomer when the count is full; the connection must then watch
    /// [`PreauthSlot::evicted`].
    pub fn new(count: Arc<PreauthCount>, peer: Option<SocketAddr>) -> Arc<PreauthSlot> {
        let now = count.count.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!("tollgate_preauth_connections").set(now as f64);
        let slot = Arc::new(PreauthSlot {
            count: count.clone(),
            held: AtomicBool::new(true),
            evicted: AtomicBool::new(false),
            wake: Notify::new(),
        });
        if let Some(peer) = peer {
            let mut waiting = count.waiting.lock().unwrap_or_else(|e| e.into_inner());
            let q = waiting.entry(peer.ip()).or_default();
            // Places given up since go from the front (amortised: each is pushed once).
            while q.front().is_some_and(|w| !still_held(w)) {
                q.pop_front();
            }
            q.push_back(Arc::downgrade(&slot));
            // Addresses seen once and gone keep an entry of dead places: swept whenever the
            // map has grown past twice the places held (amortised over the arrivals).
            if waiting.len() > 64 && waiting.len() > 2 * count.get() {
                prune(&mut waiting);
            }
        }
        slot
    }

    /// Still counted.
    pub fn held(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }

    /// Leaves the count (once: later calls and the drop do nothing).
    pub fn release(&self) {
        if self.held.swap(false, Ordering::SeqCst) {
            let now = self.count.count.fetch_sub(1, Ordering::Relaxed) - 1;
            metrics::gauge!("tollgate_preauth_connections").set(now as f64);
        }
    }

    /// Gives the place to a newcomer: released, and the connection told to close.
    fn evict(&self) {
        if self.held() {
            self.evicted.store(true, Ordering::SeqCst);
            self.release();
            metrics::counter!("tollgate_preauth_evicted_total").increment(1);
            self.wake.notify_one();
        }
    }

    /// Resolves when the place was given to a newcomer; never once the client has logged in.
    /// Raced against the whole session, so it is polled at each of its wake-ups: once the
    /// place is released each poll is one atomic load (polling the `Notify` cost about 400
    /// instructions per PostgreSQL statement, callgrind).
    pub fn evicted(self: &Arc<Self>) -> impl std::future::Future<Output = ()> + Send + 'static {
        let slot = self.clone();
        let mut wait = Box::pin({
            let slot = slot.clone();
            async move {
                while !slot.evicted.load(Ordering::SeqCst) {
                    slot.wake.notified().await;
                }
            }
        });
        std::future::poll_fn(move |cx| {
            // SeqCst, as in `evict`: a place seen released by an eviction is seen evicted.
            if slot.evicted.load(Ordering::SeqCst) {
                return std::task::Poll::Ready(());
            }
            // Released (logged in, or the connection ended): never evicted from here on.
            if !slot.held.load(Ordering::SeqCst) {
                return std::task::Poll::Pending;
            }
            std::future::Future::poll(wait.as_mut(), cx)
        })
    }
}

impl Drop for PreauthSlot {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(count: &Arc<PreauthCount>, a: &str) -> Arc<PreauthSlot> {
        PreauthSlot::new(count.clone(), Some(a.parse().unwrap()))
    }

    fn ip(a: &str) -> IpAddr {
        a.parse().unwrap()
    }

    #[tokio::test]
    async fn a_full_count_gives_the_flooding_address_s_oldest_place_to_another_address() {
        let count = Arc::new(PreauthCount::default());
        let flood: Vec<_> = (1..=3)
            .map(|p| place(&count, &format!("10.0.0.1:{p}")))
            .collect();
        let honest = place(&count, "10.0.0.2:1");
        assert!(count.room(5, ip("10.0.0.2")), "below the cap");
        assert!(
            !count.room(4, ip("10.0.0.1")),
            "full: the flooder's own newcomer is refused"
        );
        assert_eq!(count.get(), 4);
        assert!(
            count.room(4, ip("10.0.0.2")),
            "full: the flood gives a place back"
        );
        assert_eq!(count.get(), 3);
        assert!(!flood[0].held(), "its oldest place went");
        flood[0].evicted().await;
        assert!(flood[1].held() && flood[2].held() && honest.held());
        // The newcomer takes it: 10.0.0.1 and 10.0.0.2 hold two each, and neither may take
        // the other's.
        let newcomer = place(&count, "10.0.0.2:2");
        assert!(!count.room(4, ip("10.0.0.2")));
        assert!(!count.room(4, ip("10.0.0.1")));
        // A third address may take from either (two against none).
        assert!(count.room(4, ip("10.0.0.3")));
        assert_eq!(
            [&flood[1], &flood[2], &honest, &newcomer]
                .iter()
                .filter(|s| s.held())
                .count(),
            3
        );
    }

    #[test]
    fn an_address_alone_is_refused_over_the_cap() {
        let count = Arc::new(PreauthCount::default());
        let _a = place(&count, "127.0.0.1:1");
        let _b = place(&count, "127.0.0.1:2");
        assert!(
            !count.room(2, ip("127.0.0.1")),
            "no place of its own is taken back"
        );
        assert!(_a.held() && _b.held());
    }

    #[test]
    fn admitted_and_ended_places_are_never_taken_and_leave_the_queues() {
        let count = Arc::new(PreauthCount::default());
        let a = place(&count, "10.0.0.1:1");
        a.release();
        drop(place(&count, "10.0.0.1:2"));
        let c = place(&count, "10.0.0.1:3");
        let d = place(&count, "10.0.0.1:4");
        assert_eq!(count.get(), 2);
        assert!(count.room(2, ip("10.0.0.9")));
        assert!(!c.held() && d.held(), "the oldest still waiting went");
        assert_eq!(count.waiting.lock().unwrap()[&ip("10.0.0.1")].len(), 1);
        // Addresses that came once and went are swept as others arrive.
        let count = Arc::new(PreauthCount::default());
        for i in 0..1000u32 {
            let a = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            place(&count, &format!("{a}:1")).release();
        }
        assert!(count.waiting.lock().unwrap().len() <= 65);
        // Places without an address (an MCP request's body) are never taken back.
        let count = Arc::new(PreauthCount::default());
        let _own = PreauthSlot::new(count.clone(), None);
        assert!(!count.room(1, ip("10.0.0.9")));
    }
}
