//! Server connections to one PostgreSQL upstream, logged in once with the vaulted credentials
//! and shared by agent sessions: `pool_size` at most, a checkout queue with a timeout, idle and
//! lifetime limits, `min_idle` kept warm, health checks at checkout, and credential rotation
//! (a new generation: older connections are closed as they come back, never handed out).
//!
//! A connection is handed only to a session that asked for the same startup settings it was
//! opened with ([`SettingsKey`]); one that ran anything that leaves session state behind is
//! reset (`DISCARD ALL`) before another session can get it. Every connection holds a
//! [`PoolSlot`]: however it ends (closed, broken, dropped with a session), its room in the pool
//! is given back.

pub mod server;
pub mod share;
pub mod stale_plans;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::oneshot;
use tracing::{debug, warn};

pub use server::{Server, ServerInfo, SettingsKey};
pub use share::AgentShare;

use super::upstream::{self, UpstreamError, UpstreamTarget};
use crate::config::PoolSettings;

#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("no server connection of pool \"{pool}\" became free within {} ms", .waited.as_millis())]
    Timeout {
        pool: String,
        waited: Duration,
        /// The setting that sized the pool: `pool_size`, or `max_session_connections` for
        /// the session pool.
        setting: &'static str,
    },
    #[error("agent \"{agent}\" already holds {limit} server connections of pool \"{pool}\" (its share), and none came back within {} ms", .waited.as_millis())]
    Share {
        agent: Arc<str>,
        pool: String,
        limit: u32,
        waited: Duration,
    },
    #[error("{0}")]
    Upstream(#[from] UpstreamError),
}

impl CheckoutError {
    /// The setting a refusal names (`None`: the upstream failed, not a limit).
    pub fn rule(&self) -> Option<String> {
        match self {
            CheckoutError::Timeout { pool, setting, .. } => {
                Some(format!("tollgate.toml: upstream.{pool}.{setting}"))
            }
            CheckoutError::Share { pool, .. } => {
                Some(format!("tollgate.toml: upstream.{pool}.max_agent_share"))
            }
            CheckoutError::Upstream(_) => None,
        }
    }
}

/// How long a connection ended in the middle of a statement keeps its room in the pool while
/// its backend is cancelled and closes ([`Server::retire`]).
const RETIRE_WITHIN: Duration = Duration::from_secs(10);

/// One connection's room in its pool (counted in `open`); given back when dropped.
pub struct PoolSlot {
    pool: Arc<Pool>,
    /// False for a slot that was never handed out (its count is taken back by hand).
    armed: bool,
    /// A connection was opened into it: counted closed when the slot goes, however the
    /// connection ends (closed politely, broken, or dropped with a session cut off mid-reply).
    connected: bool,
}

impl Drop for PoolSlot {
    fn drop(&mut self) {
        if self.connected {
            self.pool.count_closed(1);
        }
        if self.armed {
            self.pool.lock().open -= 1;
            self.pool.wake_for_room();
        }
    }
}

impl std::fmt::Debug for PoolSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PoolSlot")
    }
}

/// What a waiting checkout is given: a connection, or room to open one.
enum Grant {
    Server(Server),
    Room(PoolSlot),
}

struct Waiter {
    key: Arc<SettingsKey>,
    tx: oneshot::Sender<Grant>,
    /// Opening a connection of its own meanwhile (`open_or_take`): it takes a connection of its
    /// settings given back first, but is never given room, and no connection is closed to
    /// make room for it.
    opening: bool,
}

/// A checkout waiting in the queue. Dropped before its grant was taken (the wait timed out, or
/// the session's client hung up: `pg::from_client`), a grant sent meanwhile is not lost with
/// it: a connection goes to the next waiter or the idle list, room is given back by its slot.
struct Waiting {
    pool: Arc<Pool>,
    rx: oneshot::Receiver<Grant>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.rx.close();
        if let Ok(Grant::Server(server)) = self.rx.try_recv() {
            self.pool.give(server);
        }
        // Its entry goes now, not at the next connection given back (which, while the upstream
        // is down, may never come: the list would grow with every checkout).
        self.pool.lock().waiters.retain(|w| !w.tx.is_closed());
    }
}

#[derive(Default)]
struct State {
    /// Idle connections, most recently used last.
    idle: Vec<Server>,
    /// Connections open or being opened (idle + handed out + connecting): the slots alive.
    open: u32,
    waiters: VecDeque<Waiter>,
    /// The settings last asked for (what `min_idle` connections are opened with).
    last_key: Option<Arc<SettingsKey>>,
}

/// Counters for metrics and tests.
#[derive(Debug, Default)]
pub struct PoolCounters {
    pub checkouts: AtomicU64,
    pub waits: AtomicU64,
    pub timeouts: AtomicU64,
    pub opened: AtomicU64,
    pub closed: AtomicU64,
    pub resets: AtomicU64,
}

pub struct Pool {
    pub name: String,
    pub settings: PoolSettings,
    target: ArcSwap<UpstreamTarget>,
    /// Bumped when the vaulted credentials change: connections of older generations are closed.
    generation: AtomicU64,
    state: Mutex<State>,
    connect_timeout: Duration,
    pub counters: PoolCounters,
    /// What the last connection opened with each settings reported at login (its
    /// ParameterStatus): a transaction-pooled session's login shows it without a connection.
    templates: Mutex<std::collections::HashMap<Arc<SettingsKey>, Arc<ServerInfo>>>,
    /// Each agent's share (transaction pooling).
    shares: share::Shares,
    /// The setting `settings.size` comes from, named when a checkout times out.
    size_setting: &'static str,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("name", &self.name).finish()
    }
}

enum Next {
    Got(Server),
    Open(PoolSlot, Option<Server>),
    Wait(oneshot::Receiver<Grant>),
}

impl Pool {
    pub fn new(target: UpstreamTarget, settings: PoolSettings, connect_timeout: Duration) -> Pool {
        Pool {
            name: target.name.clone(),
            settings,
            target: ArcSwap::from_pointee(target),
            generation: AtomicU64::new(1),
            state: Mutex::new(State::default()),
            connect_timeout,
            counters: PoolCounters::default(),
            templates: Mutex::new(std::collections::HashMap::new()),
            shares: share::Shares::default(),
            size_setting: "pool_size",
        }
    }

    /// The pool of session-pooled sessions, sized by `max_session_connections`.
    pub fn for_sessions(mut self) -> Pool {
        self.size_setting = "max_session_connections";
        self
    }

    /// `agent`'s share of this pool (`max_agent_share`).
    pub fn share_of(&self, agent: &Arc<str>) -> AgentShare {
        self.shares.of(agent, self.settings.agent_share)
    }

    /// What a connection opened with `key` reports at login, if one was opened already.
    pub fn template(&self, key: &Arc<SettingsKey>) -> Option<Arc<ServerInfo>> {
        self.templates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The upstream with its current credentials.
    pub fn target(&self) -> Arc<UpstreamTarget> {
        self.target.load_full()
    }

    /// New credentials: new connections use them; older ones are closed as they come back.
    pub fn set_target(self: &Arc<Self>, target: UpstreamTarget) {
        self.target.store(Arc::new(target));
        self.generation.fetch_add(1, Ordering::SeqCst);
        let stale = std::mem::take(&mut self.lock().idle);
        self.close(stale);
    }

    /// The pool as operators see it.
    pub fn view(&self, mode: &'static str) -> crate::doors::PoolView {
        let (open, idle, waiting) = self.sizes();
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        crate::doors::PoolView {
            upstream: self.name.clone(),
            mode,
            size: self.settings.size,
            open,
            idle,
            waiting,
            checkouts: n(&self.counters.checkouts),
            waits: n(&self.counters.waits),
            timeouts: n(&self.counters.timeouts),
            opened: n(&self.counters.opened),
            closed: n(&self.counters.closed),
            resets: n(&self.counters.resets),
        }
    }

    /// (open, idle, waiting) right now.
    pub fn sizes(&self) -> (u32, usize, usize) {
        let st = self.lock();
        let waiting = st
            .waiters
            .iter()
            .filter(|w| !w.opening && !w.tx.is_closed())
            .count();
        (st.open, st.idle.len(), waiting)
    }

    fn current(&self, s: &Server) -> bool {
        s.generation == self.generation.load(Ordering::SeqCst)
            && s.created.elapsed() < self.settings.max_lifetime
    }

    /// A connection opened with `key`'s settings: an idle one, a new one, or the next one to
    /// come back; within `checkout_timeout`. With `share`, the connection counts against that
    /// agent's share until it comes back, and an agent at its share waits first.
    pub async fn checkout(
        self: &Arc<Self>,
        key: &Arc<SettingsKey>,
        share: Option<&AgentShare>,
    ) -> Result<Server, CheckoutError> {
        self.counters.checkouts.fetch_add(1, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + self.settings.checkout_timeout;
        let held = match share {
            None => None,
            Some(s) => match s.take(deadline).await {
                Some(h) => Some(h),
                None => {
                    self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("tollgate_pool_share_timeouts_total", "upstream" => self.name.clone())
                        .increment(1);
                    return Err(CheckoutError::Share {
                        agent: s.agent.clone(),
                        pool: self.name.clone(),
                        limit: s.limit,
                        waited: self.settings.checkout_timeout,
                    });
                }
            },
        };
        let mut server = self.checkout_by(key, deadline).await?;
        server.share = held;
        Ok(server)
    }

    async fn checkout_by(
        self: &Arc<Self>,
        key: &Arc<SettingsKey>,
        deadline: tokio::time::Instant,
    ) -> Result<Server, CheckoutError> {
        loop {
            match self.next(key) {
                Next::Got(mut s) => {
                    if self.current(&s) && s.looks_alive().await {
                        return Ok(s);
                    }
                    self.close(vec![s]);
                }
                Next::Open(slot, evicted) => {
                    if let Some(old) = evicted {
                        self.close(vec![old]);
                    }
                    return self.open_or_take(key, slot, deadline).await;
                }
                Next::Wait(rx) => {
                    self.counters.waits.fetch_add(1, Ordering::Relaxed);
                    let mut waiting = Waiting {
                        pool: self.clone(),
                        rx,
                    };
                    match tokio::time::timeout_at(deadline, &mut waiting.rx).await {
                        Ok(Ok(Grant::Server(s))) => return Ok(s),
                        Ok(Ok(Grant::Room(slot))) => {
                            return self.open_or_take(key, slot, deadline).await
                        }
                        // The pool dropped our waiter (it never does): look again.
                        Ok(Err(_)) => {}
                        Err(_) => {
                            self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                            metrics::counter!("tollgate_pool_checkout_timeouts_total", "upstream" => self.name.clone())
                                .increment(1);
                            return Err(CheckoutError::Timeout {
                                pool: self.name.clone(),
                                waited: self.settings.checkout_timeout,
                                setting: self.size_setting,
                            });
                        }
                    }
                }
            }
        }
    }

    fn next(self: &Arc<Self>, key: &Arc<SettingsKey>) -> Next {
        let mut st = self.lock();
        st.last_key = Some(key.clone());
        if let Some(i) = st.idle.iter().rposition(|s| s.key == *key) {
            return Next::Got(st.idle.remove(i));
        }
        if st.open < self.settings.size {
            st.open += 1;
            return Next::Open(self.slot(), None);
        }
        if !st.idle.is_empty() {
            // Full, but idle connections of other settings: replace the least recently used.
            // Its slot becomes ours: count the new one before the old one goes.
            st.open += 1;
            let old = st.idle.remove(0);
            return Next::Open(self.slot(), Some(old));
        }
        let (tx, rx) = oneshot::channel();
        st.waiters.push_back(Waiter {
            key: key.clone(),
            tx,
            opening: false,
        });
        Next::Wait(rx)
    }

    /// A slot for a connection already counted in `open`.
    fn slot(self: &Arc<Self>) -> PoolSlot {
        PoolSlot {
            pool: self.clone(),
            armed: true,
            connected: false,
        }
    }

    /// Opens a connection into `slot`, unless a connection of `key`'s settings comes back first:
    /// that one is taken, and the one being opened goes on to the idle list. An upstream slow to
    /// log in (overloaded, stalled) then delays only the sessions no check-in can serve, as
    /// PgBouncer's queued clients take whichever server connection is free first.
    async fn open_or_take(
        self: &Arc<Self>,
        key: &Arc<SettingsKey>,
        slot: PoolSlot,
        deadline: tokio::time::Instant,
    ) -> Result<Server, CheckoutError> {
        let pool = self.clone();
        let k = key.clone();
        let mut opening = Box::pin(async move { pool.open(&k, slot).await });
        let (tx, rx) = oneshot::channel();
        self.lock().waiters.push_back(Waiter {
            key: key.clone(),
            tx,
            opening: true,
        });
        // Dropped on every way out: a connection granted meanwhile is given back, not lost.
        let mut waiting = Waiting {
            pool: self.clone(),
            rx,
        };
        let opened = tokio::select! {
            biased;
            opened = &mut opening => opened,
            granted = &mut waiting.rx => return match granted {
                Ok(Grant::Server(s)) => {
                    let pool = self.clone();
                    tokio::spawn(async move {
                        match opening.await {
                            Ok(opened) => pool.give(opened),
                            Err(e) => debug!(pool = %pool.name, error = %e, "a connection opened for a session served meanwhile failed"),
                        }
                    });
                    Ok(s)
                }
                // Room is never granted to an opening waiter; a dropped sender: open on.
                Ok(Grant::Room(_)) | Err(_) => opening.await,
            },
        };
        match opened {
            // The server has no connection free for the pool's login (its max_connections or
            // the role's CONNECTION LIMIT, 53300): while the pool has connections of its own,
            // one coming back serves the statement, as a full pool's would, until the checkout
            // timeout; then the server's refusal is what the session is told.
            Err(CheckoutError::Upstream(UpstreamError::LoginRefused(code)))
                if code == "53300" && self.lock().open > 0 =>
            {
                match tokio::time::timeout_at(deadline, &mut waiting.rx).await {
                    Ok(Ok(Grant::Server(s))) => Ok(s),
                    _ => Err(CheckoutError::Upstream(UpstreamError::LoginRefused(code))),
                }
            }
            other => other,
        }
    }

    /// Opens a connection into `slot`.
    async fn open(
        &self,
        key: &Arc<SettingsKey>,
        mut slot: PoolSlot,
    ) -> Result<Server, CheckoutError> {
        let target = self.target();
        let generation = self.generation.load(Ordering::SeqCst);
        let conn = upstream::connect(&target, &key.0, self.connect_timeout).await?;
        slot.connected = true;
        self.counters.opened.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("tollgate_upstream_connections", "upstream" => self.name.clone())
            .increment(1.0);
        let like = self
            .templates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .map(|t| t.params.clone());
        let server = Server::new(conn, key.clone(), generation, slot, like.as_ref());
        self.templates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), server.info.clone());
        Ok(server)
    }

    /// A connection comes back. `clean`: nothing it ran left session state behind; otherwise it
    /// is reset first. `usable`: false when the session ended mid-statement or the connection
    /// broke: it is retired (cancelled and closed, keeping its room until the server has let
    /// it go).
    pub fn checkin(self: &Arc<Self>, mut server: Server, clean: bool, usable: bool) {
        if !usable {
            self.retire(server);
            return;
        }
        // The agent no longer holds it, whatever happens to it now.
        server.share = None;
        if !self.current(&server) {
            self.close(vec![server]);
            return;
        }
        if clean || !self.settings.isolation {
            self.give(server);
            return;
        }
        let pool = self.clone();
        tokio::spawn(async move {
            let mut server = server;
            pool.counters.resets.fetch_add(1, Ordering::Relaxed);
            if server.reset(pool.connect_timeout).await {
                pool.give(server);
            } else {
                warn!(pool = %pool.name, "a server connection could not be reset; closed");
                pool.close(vec![server]);
            }
        });
    }

    /// A usable connection goes to the first waiter for its settings, else to the idle list;
    /// while others wait for other settings it is closed, which gives them room.
    fn give(self: &Arc<Self>, mut server: Server) {
        // Opened before a credentials rotation (a login that was in progress) or past its
        // lifetime: never handed out again.
        if !self.current(&server) {
            self.close(vec![server]);
            return;
        }
        server.idle_since = Instant::now();
        let mut st = self.lock();
        // Waiters that gave up (timed out, or their client hung up) wait for nothing: a
        // connection closed for them would be lost for nobody.
        st.waiters.retain(|w| !w.tx.is_closed());
        while let Some(i) = st.waiters.iter().position(|w| w.key == server.key) {
            let w = st.waiters.remove(i).expect("position is valid");
            match w.tx.send(Grant::Server(server)) {
                Ok(()) => return,
                // That waiter gave up: try the next one.
                Err(Grant::Server(s)) => server = s,
                Err(Grant::Room(_)) => return,
            }
        }
        if st.waiters.iter().any(|w| !w.opening) {
            drop(st);
            self.close(vec![server]);
            return;
        }
        st.idle.push(server);
    }

    /// Room for one more connection: the first waiter that still waits may open it.
    fn wake_for_room(self: &Arc<Self>) {
        let mut st = self.lock();
        while st.open < self.settings.size {
            let Some(i) = st.waiters.iter().position(|w| !w.opening) else {
                return;
            };
            let w = st.waiters.remove(i).expect("position is valid");
            st.open += 1;
            match w.tx.send(Grant::Room(self.slot())) {
                Ok(()) => return,
                // That waiter gave up: take the count back by hand (its drop must not, under
                // this lock) and try the next one.
                Err(Grant::Room(mut slot)) => {
                    slot.armed = false;
                    st.open -= 1;
                }
                Err(Grant::Server(_)) => st.open -= 1,
            }
        }
    }

    /// `n` server connections are gone: the counter and the upstream's gauge.
    fn count_closed(&self, n: u64) {
        self.counters.closed.fetch_add(n, Ordering::Relaxed);
        metrics::gauge!("tollgate_upstream_connections", "upstream" => self.name.clone())
            .decrement(n as f64);
    }

    /// A connection that may still be running something is ended by [`Server::retire`]: it
    /// keeps its room (and its agent's share) until its backend is gone.
    fn retire(self: &Arc<Self>, server: Server) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return; // no runtime: the process is ending, and the server sees the close
        };
        let target = self.target();
        let (upstream, pid) = (self.name.clone(), server.info.pid);
        let timeout = self.connect_timeout;
        handle.spawn(async move {
            let Err(retained) = server.retire(target.tls.clone(), RETIRE_WITHIN).await else {
                return;
            };
            // Its statement ignores cancels (a function that catches them, say): its backend
            // is ended from a connection of tollgate's own (a role may end its own backends),
            // the room held until then.
            let ended = terminate_backend(&target, pid, timeout).await;
            drop(retained);
            metrics::counter!("tollgate_pool_retire_timeouts_total", "upstream" => upstream.clone())
                .increment(1);
            warn!(
                upstream = %upstream,
                pid,
                ended,
                "a server connection whose session ended mid-statement was still open {} s after it was cancelled; its backend was terminated (ended = whether that worked)",
                RETIRE_WITHIN.as_secs()
            );
        });
    }

    /// Closes idle `servers` (a polite Terminate, off the caller's path); their slots are
    /// freed at once.
    fn close(self: &Arc<Self>, servers: Vec<Server>) {
        if servers.is_empty() {
            return;
        }
        // Counted closed now (their slots, dropped once the Terminate is sent, do not again).
        let mut servers = servers;
        for s in &mut servers {
            s.slot.connected = false;
        }
        self.count_closed(servers.len() as u64);
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    for s in servers {
                        s.close().await;
                    }
                });
            }
            Err(_) => drop(servers),
        }
    }

    /// Housekeeping, every second until `stop`: closes idle connections past `idle_timeout`
    /// (beyond `min_idle`) or `max_lifetime`, and opens connections up to `min_idle`.
    pub async fn maintain(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => return,
            }
            // Run as a poll so the liveness checks below can read with this task's context.
            let (expired, slots, key) = std::future::poll_fn(|cx| {
                let mut st = self.lock();
                let min_idle = self.settings.min_idle as usize;
                let idle = std::mem::take(&mut st.idle);
                let n = idle.len();
                let (mut keep, mut expired) = (Vec::new(), Vec::new());
                for (i, mut s) in idle.into_iter().enumerate() {
                    // The most recently used are at the end: they are the ones kept.
                    let beyond_min = n - i > min_idle;
                    let too_idle =
                        beyond_min && s.idle_since.elapsed() >= self.settings.idle_timeout;
                    // A server that went away (restart, pg_terminate_backend, its own idle
                    // timeouts) is noticed now, not at the next checkout: the pool's figures
                    // and min_idle stay true while no traffic comes. `looks_alive` is one
                    // non-blocking read, done at its first poll.
                    if too_idle || !self.current(&s) || !alive_now(&mut s, cx) {
                        expired.push(s);
                    } else {
                        keep.push(s);
                    }
                }
                st.idle = keep;
                // Slots of the expired are freed when they are dropped; count the room now.
                let open_after = st.open - expired.len() as u32;
                let missing = min_idle.saturating_sub(st.idle.len());
                let room = self.settings.size.saturating_sub(open_after) as usize;
                let missing = missing.min(room) as u32;
                st.open += missing;
                let slots: Vec<PoolSlot> = (0..missing).map(|_| self.slot()).collect();
                let key = st.last_key.clone().unwrap_or_default();
                std::task::Poll::Ready((expired, slots, key))
            })
            .await;
            if !expired.is_empty() {
                debug!(pool = %self.name, n = expired.len(), "closing expired idle connections");
                self.close(expired);
            }
            for slot in slots {
                match self.open(&key, slot).await {
                    Ok(s) => self.give(s),
                    Err(e) => {
                        debug!(pool = %self.name, error = %e, "could not open a min_idle connection");
                        break;
                    }
                }
            }
        }
    }
}

/// Whether an idle connection still looks usable (`Server::looks_alive`), without waiting: the
/// check answers at its first poll, so it can run under the pool's lock.
fn alive_now(s: &mut Server, cx: &mut std::task::Context<'_>) -> bool {
    let mut check = std::pin::pin!(s.looks_alive());
    !matches!(
        std::future::Future::poll(check.as_mut(), cx),
        std::task::Poll::Ready(false)
    )
}

/// `pg_terminate_backend(pid)` on a connection of its own to `target` (logged in as the pool's
/// role, which may end its own backends); whether the server said it did.
async fn terminate_backend(target: &UpstreamTarget, pid: i32, timeout: Duration) -> bool {
    let Ok(mut conn) = upstream::connect(target, &[], timeout).await else {
        return false;
    };
    let mut ended = false;
    let sql = format!("SELECT pg_terminate_backend({pid})");
    let answered = server::simple_query(&mut conn.reader, &mut conn.writer, &sql, timeout, |f| {
        // One column, one value: `t` when the backend was signalled.
        if f.tag == super::backend::DATA_ROW {
            ended = f.body().ends_with(b"t");
        }
    })
    .await;
    server::terminate(&mut conn.writer).await;
    ended && answered.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PoolMode;

    /// While the upstream refuses every connection no connection is ever given back: the
    /// queue entries of checkouts that opened (and failed) must not pile up until one is.
    #[tokio::test]
    async fn failed_openings_leave_nothing_in_the_queue() {
        // A port nothing listens on: every login fails at once.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let target = crate::pg::upstream::tests::target(port);
        let settings = PoolSettings {
            isolation: true,
            mode: PoolMode::Transaction,
            size: 2,
            agent_share: 2,
            session_size: 2,
            min_idle: 0,
            max_lifetime: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(600),
            checkout_timeout: Duration::from_secs(1),
        };
        let pool = Arc::new(Pool::new(target, settings, Duration::from_secs(1)));
        let key = Arc::new(SettingsKey::new(&[], true));
        for _ in 0..50 {
            assert!(matches!(
                pool.checkout(&key, None).await,
                Err(CheckoutError::Upstream(_))
            ));
        }
        let st = pool.lock();
        assert_eq!((st.open, st.waiters.len()), (0, 0));
    }
}
