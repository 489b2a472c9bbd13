//! How many replies a session may be owed on a connection of its own before its next commands
//! wait. Redis runs every command it is sent and keeps the replies until they are read (its
//! normal clients have no output buffer limit by default): a client that pipelined GETs of a
//! large value and read nothing made the upstream grow by every reply, hundreds of MiB in a
//! live review, all of it before the gateway could read a byte. So at most [`OWN_DEPTH`]
//! replies are owed at once, and fewer once replies have been large: the window times the
//! largest reply seen stays within [`OWN_BUDGET`] (at least one). The command half waits for
//! room; the reply half makes it as it writes replies to the client.
//!
//! A client that reads its replies loses nothing to it: tollgate's round trip to Redis is short
//! beside the client's own, and 32 in flight keep a session's pipeline full.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// The most replies owed on a connection of the session's own.
pub const OWN_DEPTH: usize = 32;

/// Replies in flight are limited so that this many of the largest reply seen fit here.
pub const OWN_BUDGET: usize = 64 << 20;

#[derive(Debug, Default)]
pub struct OwnWindow {
    /// The largest reply seen on the session's own connection, bytes (only grows).
    largest: AtomicUsize,
    /// The command half waits for room.
    waiting: AtomicBool,
    freed: Notify,
}

impl OwnWindow {
    /// How many replies may be owed now.
    pub fn depth(&self) -> usize {
        let largest = self.largest.load(Ordering::Relaxed).max(1);
        (OWN_BUDGET / largest).clamp(1, OWN_DEPTH)
    }

    /// A reply (or the part of one seen so far) of `len` bytes. Called for every reply: a
    /// load, and a write only when it is the largest yet.
    pub fn saw_reply(&self, len: usize) {
        if len > self.largest.load(Ordering::Relaxed) {
            self.largest.fetch_max(len, Ordering::Relaxed);
        }
    }

    /// Waits until fewer than [`OwnWindow::depth`] replies are owed (`owed`, the count the
    /// reply half lowers).
    pub async fn room(&self, owed: &AtomicUsize) {
        if owed.load(Ordering::SeqCst) < self.depth() {
            return;
        }
        self.waiting.store(true, Ordering::SeqCst);
        while owed.load(Ordering::SeqCst) >= self.depth() {
            self.freed.notified().await;
        }
        self.waiting.store(false, Ordering::SeqCst);
    }

    /// Replies were written to the client (after `owed` was lowered).
    pub fn freed(&self) {
        if self.waiting.load(Ordering::SeqCst) {
            self.freed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_window_narrows_as_replies_grow() {
        let w = OwnWindow::default();
        assert_eq!(w.depth(), OWN_DEPTH);
        w.saw_reply(100);
        assert_eq!(w.depth(), OWN_DEPTH);
        w.saw_reply(4 << 20);
        assert_eq!(w.depth(), 16);
        w.saw_reply(100);
        assert_eq!(w.depth(), 16, "it does not widen again");
        w.saw_reply(512 << 20);
        assert_eq!(w.depth(), 1);
    }

    #[tokio::test]
    async fn the_command_half_waits_until_replies_are_written() {
        let w = Arc::new(OwnWindow::default());
        let owed = Arc::new(AtomicUsize::new(OWN_DEPTH));
        let waiter = tokio::spawn({
            let (w, owed) = (w.clone(), owed.clone());
            async move { w.room(&owed).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "a full window waits");
        owed.fetch_sub(1, Ordering::SeqCst);
        w.freed();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("room once a reply was written")
            .unwrap();
    }
}
