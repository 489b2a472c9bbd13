//! The server connection a session is using, shared by its two relay halves.
//!
//! In session pooling the session keeps one server connection for its life. In transaction
//! pooling the client half checks a connection out when the client sends something and none is
//! attached, and hands its reading half to the reply half (`attach`); the reply half reads until
//! a ReadyForQuery `I` leaves nothing owed, then lets go of the reader (`detached`), and the
//! client half checks the connection back in — unless the client sent more meanwhile, or the
//! session left state on it (then it stays pinned to this session). The reading half lives in a
//! slot the reply half locks while it reads, so it is never lost when a half stops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use tokio::sync::{watch, Mutex, Notify};

use super::cancel::{CancelSlot, CancelTarget};
use super::frame::FrameReader;
use super::pool::{Pool, Server, ServerInfo, SettingsKey};
use crate::config::PoolMode;
use crate::tls::{NetRead, NetWrite};

pub type ServerReader = FrameReader<NetRead>;

pub struct Link {
    pub mode: PoolMode,
    pub pool: Arc<Pool>,
    pub key: Arc<SettingsKey>,
    /// The attached connection's reading half; the reply half holds the lock while it reads.
    pub reader: Mutex<Option<ServerReader>>,
    /// Bumped at every attach, so a reply half that let go knows when to read again.
    attached: watch::Sender<u64>,
    /// The reply half let go of the reader at the end of a transaction.
    pub detached: Notify,
    /// The attached connection, for pids and parameters; `None` between transactions.
    pub info: ArcSwapOption<ServerInfo>,
    /// Where cancels go (also registered under the client's key).
    pub cancel: CancelSlot,
    /// The session left state on its connection (SET, LISTEN, PREPARE, temporary tables, ...):
    /// it keeps that connection, which is reset before anyone else gets it.
    pinned: AtomicBool,
    /// The transaction ran a `SET LOCAL` (`Verdict::sets_local`): the connection is reset
    /// (its prepared statements dropped) when it goes back, though the session is not pinned.
    reset_on_checkin: AtomicBool,
    /// The process id the client was shown (BackendKeyData), for notifications' sender.
    pub client_pid: std::sync::atomic::AtomicI32,
    /// The session's agent's share of a transaction pool (`None` for session pooling).
    pub share: Option<super::pool::AgentShare>,
}

/// The writing half and the rest of a checked-out connection, kept by the client half.
pub struct Attached {
    pub writer: NetWrite,
    pub info: Arc<ServerInfo>,
    key: Arc<SettingsKey>,
    created: std::time::Instant,
    generation: u64,
    slot: super::pool::PoolSlot,
    share: Option<super::pool::share::ShareHeld>,
}

impl Link {
    pub fn new(
        mode: PoolMode,
        pool: Arc<Pool>,
        key: Arc<SettingsKey>,
        share: Option<super::pool::AgentShare>,
    ) -> Link {
        Link {
            share,
            mode,
            pool,
            key,
            reader: Mutex::new(None),
            attached: watch::channel(0).0,
            detached: Notify::new(),
            info: ArcSwapOption::empty(),
            cancel: Arc::default(),
            pinned: AtomicBool::new(false),
            reset_on_checkin: AtomicBool::new(false),
            client_pid: std::sync::atomic::AtomicI32::new(0),
        }
    }

    pub fn pooled_by_transaction(&self) -> bool {
        self.mode == PoolMode::Transaction
    }

    pub fn pin(&self) {
        if self.pool.settings.isolation {
            self.pinned.store(true, Ordering::Relaxed);
        }
    }

    pub fn pinned(&self) -> bool {
        self.pinned.load(Ordering::Relaxed)
    }

    /// The attached connection must be reset when it goes back (see `reset_on_checkin`).
    pub fn reset_on_checkin(&self) {
        self.reset_on_checkin.store(true, Ordering::Relaxed);
    }

    /// Whether the connection going back now is clean: nothing pinned the session and no
    /// `SET LOCAL` ran since it was checked out (cleared: the next checkout starts clean).
    pub fn take_clean(&self) -> bool {
        let reset = self.reset_on_checkin.swap(false, Ordering::Relaxed);
        !self.pinned() && !reset
    }

    /// Hands `server`'s reading half to the reply half; returns the rest for the client half.
    pub async fn attach(&self, server: Server) -> Attached {
        match self.attach_unless_cancelled(server, None).await {
            Ok(attached) => attached,
            Err(_) => unreachable!("attached whatever cancels came"),
        }
    }

    /// [`Link::attach`], unless a cancel for the session came since the cancel count was
    /// `seen` (`Some`): then the connection is handed back untouched, as the statement waiting
    /// for it was cancelled (`CancelRoute::store_unless_cancelled`).
    pub async fn attach_unless_cancelled(
        &self,
        server: Server,
        seen: Option<u64>,
    ) -> Result<Attached, Server> {
        let target = Arc::new(CancelTarget {
            addr: server.info.addr,
            pid: server.info.pid,
            secret: server.info.secret,
            tls: self.pool.target().tls.clone(),
        });
        match seen {
            Some(seen) => {
                if !self.cancel.store_unless_cancelled(target, seen) {
                    return Err(server);
                }
            }
            None => self.cancel.store(Some(target)),
        }
        let Server {
            reader,
            writer,
            info,
            key,
            created,
            generation,
            slot,
            share,
            ..
        } = server;
        self.info.store(Some(info.clone()));
        *self.reader.lock().await = Some(reader);
        self.resume();
        Ok(Attached {
            writer,
            info,
            key,
            created,
            generation,
            slot,
            share,
        })
    }

    /// Lets the reply half read the attached connection again (after it let go).
    pub fn resume(&self) {
        self.attached.send_modify(|n| *n += 1);
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.attached.subscribe()
    }

    /// Takes the reading half back (the reply half must have let go) and rebuilds the whole
    /// connection; `None` if the reader is not there.
    pub async fn detach(&self, rest: Attached) -> Result<Server, Attached> {
        let Some(reader) = self.reader.lock().await.take() else {
            return Err(rest);
        };
        // Bounded: a client cancel gives up after 2 s.
        self.cancel.clear_and_settle().await;
        self.info.store(None);
        Ok(Server {
            reader,
            writer: rest.writer,
            info: rest.info,
            key: rest.key,
            created: rest.created,
            idle_since: std::time::Instant::now(),
            generation: rest.generation,
            slot: rest.slot,
            share: rest.share,
        })
    }
}
