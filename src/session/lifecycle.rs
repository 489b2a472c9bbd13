//! Where the gateway is in its life (serving, draining, closing) and how many client sessions are
//! live; every front end's sessions enter it and watch it.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

/// Serving, draining (no new connections; sessions close once nothing of theirs is running), or
/// closing (the drain deadline passed: every session closes now).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Serving,
    Draining,
    Closing,
}

/// Counts live client sessions and tells them the phase.
#[derive(Debug)]
pub struct Lifecycle {
    phase: watch::Sender<Phase>,
    live: AtomicUsize,
    ended: Notify,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            phase: watch::channel(Phase::Serving).0,
            live: AtomicUsize::new(0),
            ended: Notify::new(),
        }
    }
}

/// Held by a session for its life.
#[derive(Debug)]
pub struct LiveSession(Arc<Lifecycle>);

impl Drop for LiveSession {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
        self.0.ended.notify_waiters();
    }
}

impl Lifecycle {
    pub fn enter(self: &Arc<Self>) -> LiveSession {
        self.live.fetch_add(1, Ordering::SeqCst);
        LiveSession(self.clone())
    }

    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.send_replace(phase);
    }

    /// Waits until no session is live or `deadline` passes; true if all ended.
    pub async fn wait_idle(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            let ended = self.ended.notified();
            if self.live() == 0 {
                return true;
            }
            tokio::select! {
                _ = ended => {}
                // Guards dropped between the check and `notified()` are caught by polling.
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = tokio::time::sleep_until(deadline) => return self.live() == 0,
            }
        }
    }

    /// Resolves when the gateway drains and `settled()` says the session has nothing running
    /// (no reply owed or unwritten, no open transaction); at once when the drain deadline
    /// passed. Never resolves while serving.
    pub fn drained<'a>(&self, settled: impl Fn() -> bool + 'a) -> impl Future<Output = ()> + 'a {
        let mut phase = self.phase.subscribe();
        async move {
            loop {
                let now = *phase.borrow_and_update();
                match now {
                    Phase::Closing => return,
                    Phase::Draining if settled() => return,
                    _ => {}
                }
                // Polled while draining: the session's own wake-ups belong to its relay.
                tokio::select! {
                    changed = phase.changed() => {
                        if changed.is_err() {
                            return std::future::pending().await;
                        }
                    }
                    _ = tokio::time::sleep(Duration::from_millis(20)), if now == Phase::Draining => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drained_waits_for_the_drain_and_for_the_session_to_settle() {
        let life = Arc::new(Lifecycle::default());
        let busy = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let b = busy.clone();
        let waiter = tokio::spawn({
            let life = life.clone();
            async move { life.drained(move || !b.load(Ordering::SeqCst)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "serving: never drained");
        life.set_phase(Phase::Draining);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(!waiter.is_finished(), "draining but busy");
        busy.store(false, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("drained once settled")
            .unwrap();
    }

    #[tokio::test]
    async fn live_sessions_are_counted_until_dropped() {
        let life = Arc::new(Lifecycle::default());
        let a = life.enter();
        assert_eq!(life.live(), 1);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(30);
        assert!(!life.wait_idle(deadline).await);
        drop(a);
        assert!(
            life.wait_idle(tokio::time::Instant::now() + Duration::from_secs(1))
                .await
        );
    }
}
