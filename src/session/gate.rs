//! A future polled only when it asked to be: a session's relay waits in one `select!` on its
//! busy halves and on rare events (the gateway draining, a cut-off). `select!` polls every
//! branch whenever the task wakes, which for a rare event means a lock in its `Notify` several
//! times per statement. Gated, such a branch costs an atomic swap until its own waker fires.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use atomic_waker::AtomicWaker;

/// See the module doc.
pub struct Gated<F> {
    inner: Pin<Box<F>>,
    shared: Arc<Shared>,
    /// The waker `inner` is polled with (it sets `woken`, then wakes the task).
    waker: Waker,
}

struct Shared {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        self.task.wake();
    }
}

/// `f`, polled on its first poll and then only after it woke.
pub fn gated<F: Future>(f: F) -> Gated<F> {
    let shared = Arc::new(Shared {
        woken: AtomicBool::new(true),
        task: AtomicWaker::new(),
    });
    Gated {
        inner: Box::pin(f),
        waker: Waker::from(shared.clone()),
        shared,
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Registered before the flag is read: a wake-up in between polls the task again.
        self.shared.task.register(cx.waker());
        if !self.shared.woken.swap(false, Ordering::SeqCst) {
            return Poll::Pending;
        }
        let this = &mut *self;
        this.inner
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls; ready once `ready` is set, waking through the waker it was given.
    struct Probe {
        polls: Arc<AtomicUsize>,
        ready: Arc<AtomicBool>,
        waker: Arc<std::sync::Mutex<Option<Waker>>>,
    }

    impl Future for Probe {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.ready.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn polled_once_then_only_after_its_own_wake_up() {
        let polls = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(AtomicBool::new(false));
        let waker = Arc::new(std::sync::Mutex::new(None::<Waker>));
        let mut g = Box::pin(gated(Probe {
            polls: polls.clone(),
            ready: ready.clone(),
            waker: waker.clone(),
        }));
        let noop = Waker::noop().clone();
        let mut cx = Context::from_waker(&noop);
        assert!(g.as_mut().poll(&mut cx).is_pending());
        // The task woke for other reasons: the gated future is not polled.
        for _ in 0..10 {
            assert!(g.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        // Its own wake-up: polled again, and ready.
        ready.store(true, Ordering::SeqCst);
        waker.lock().unwrap().take().unwrap().wake();
        assert!(g.as_mut().poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_wake_up_reaches_the_task_that_polled_it() {
        let notify = Arc::new(tokio::sync::Notify::new());
        let n = notify.clone();
        let task = tokio::spawn(async move {
            let g = gated(async move { n.notified().await });
            tokio::time::timeout(std::time::Duration::from_secs(5), g).await
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        notify.notify_waiters();
        assert!(task.await.unwrap().is_ok(), "the gated future completed");
    }
}
