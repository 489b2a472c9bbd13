//! Upstream connections shared by sessions: a few logged-in connections per Redis upstream
//! (`shared_connections`, default 2) carry the plain keyed commands of every session that has no
//! connection of its own, pipelined together. A session starts on one of them and moves to a
//! connection of its own, for the rest of its life, at its first command that reads or changes
//! connection state (`route::sharable` says which). Sessions never share anything a command can
//! leave behind on a connection.

mod conn;
pub mod inbox;
pub mod route;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use conn::{Closed, SharedConn};
pub use inbox::Inbox;

use super::upstream::{RedisTarget, UpstreamError};

/// The shared connections of one upstream.
pub struct SharedUpstream {
    slots: Vec<tokio::sync::Mutex<Option<Arc<SharedConn>>>>,
    next: AtomicUsize,
    /// Replies its connections' sessions have queued, together (`inbox::QUEUED_BYTES_TOTAL_LIMIT`).
    budget: Arc<inbox::Budget>,
}

impl SharedUpstream {
    /// `n` connections; 0 gives every session a connection of its own from the start.
    pub fn new(n: usize) -> SharedUpstream {
        SharedUpstream {
            slots: (0..n).map(|_| Default::default()).collect(),
            next: AtomicUsize::new(0),
            budget: Arc::new(inbox::Budget::new(inbox::QUEUED_BYTES_TOTAL_LIMIT)),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.slots.is_empty()
    }

    /// A connection for a new session, in turn. A slot whose connection closed, or was logged
    /// in with credentials the vault has since replaced, gets a new one; the old one closes
    /// when its last session ends.
    pub async fn pick(
        &self,
        target: &RedisTarget,
        timeout: Duration,
    ) -> Result<Arc<SharedConn>, UpstreamError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[i].lock().await;
        let credentials = target.credentials.load_full();
        if let Some(c) = &*slot {
            if !c.is_closed() && Arc::ptr_eq(&c.credentials, &credentials) {
                return Ok(c.clone());
            }
        }
        let up = target.connect(timeout).await?;
        let conn = Arc::new(SharedConn::start(
            up,
            &target.name,
            credentials,
            self.budget.clone(),
        ));
        *slot = Some(conn.clone());
        Ok(conn)
    }
}

#[cfg(test)]
mod tests;
