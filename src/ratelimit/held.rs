//! The memory client messages hold while they arrive, across every session and door.
//!
//! A message is buffered whole before it is judged (a Bind's parameters, a Redis command's
//! arguments, a MongoDB document), up to `limits.max_message_bytes` each. One agent sending
//! many such messages slowly, on many sessions, could otherwise make the gateway hold
//! gigabytes and take it down for everyone. A read buffer up to [`FREE`] bytes is not counted
//! (every session may hold that much); beyond it, the whole buffer is taken from one budget,
//! `limits.max_held_client_bytes`, and given back as the buffer empties. A read that would
//! take the budget past its cap fails: that message cannot be received now, and the front end
//! says so natively.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What a session's read buffer may hold without counting against the budget.
pub const FREE: usize = 256 * 1024;

/// The gateway-wide budget.
#[derive(Debug)]
pub struct HeldBytes {
    used: AtomicUsize,
    cap: usize,
}

/// The budget is spent: the message being received does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("tollgate: client messages being received hold {cap} bytes across all sessions (limits.max_held_client_bytes); a message that needs {wanted} bytes cannot be received now")]
pub struct HeldExhausted {
    pub cap: usize,
    pub wanted: usize,
}

impl HeldBytes {
    pub fn new(cap: usize) -> Arc<HeldBytes> {
        Arc::new(HeldBytes {
            used: AtomicUsize::new(0),
            cap,
        })
    }

    /// Bytes counted now (metrics, tests).
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |used| {
                used.checked_add(n).filter(|&total| total <= self.cap)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// One reader's share of the budget; given back when dropped. A reader without a budget
/// (upstream connections, tests) counts nothing.
#[derive(Debug, Default)]
pub struct Held {
    budget: Option<Arc<HeldBytes>>,
    held: usize,
}

impl Held {
    pub fn of(budget: &Arc<HeldBytes>) -> Held {
        Held {
            budget: Some(budget.clone()),
            held: 0,
        }
    }

    /// Accounts for a read buffer holding `len` bytes: nothing up to [`FREE`], all of it
    /// beyond. Growing past the budget fails and holds no more than before.
    pub fn track(&mut self, len: usize) -> Result<(), HeldExhausted> {
        let Some(budget) = &self.budget else {
            return Ok(());
        };
        let want = if len > FREE { len } else { 0 };
        if want > self.held {
            if !budget.take(want - self.held) {
                return Err(HeldExhausted {
                    cap: budget.cap,
                    wanted: want,
                });
            }
        } else if want < self.held {
            budget.give_back(self.held - want);
        } else {
            return Ok(());
        }
        self.held = want;
        metrics::gauge!("tollgate_held_client_bytes").set(budget.used() as f64);
        Ok(())
    }
}

/// After a message longer than [`FREE`] was split off `buf`: the buffer still points into that
/// message's allocation, and would keep it alive (and take it back whole at its next reserve)
/// while the session sits idle, uncounted. What remains is copied into a buffer of its own.
pub fn detach_after(buf: &mut bytes::BytesMut, message_len: usize) {
    if message_len > FREE {
        *buf = bytes::BytesMut::from(&buf[..]);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let (Some(budget), true) = (&self.budget, self.held > 0) {
            budget.give_back(self.held);
            metrics::gauge!("tollgate_held_client_bytes").set(budget.used() as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_past_free_share_one_cap_and_give_it_back() {
        let budget = HeldBytes::new(3 * FREE);
        let mut a = Held::of(&budget);
        let mut b = Held::of(&budget);
        a.track(FREE).unwrap();
        assert_eq!(budget.used(), 0, "up to FREE is not counted");
        a.track(2 * FREE).unwrap();
        assert_eq!(budget.used(), 2 * FREE, "beyond it, the whole buffer");
        let e = b.track(2 * FREE).unwrap_err();
        assert_eq!(e.wanted, 2 * FREE);
        assert!(
            e.to_string().contains("limits.max_held_client_bytes"),
            "{e}"
        );
        assert_eq!(
            budget.used(),
            2 * FREE,
            "a refused growth holds nothing more"
        );
        a.track(10).unwrap();
        assert_eq!(budget.used(), 0, "an emptied buffer gives it back");
        b.track(3 * FREE).unwrap();
        drop(b);
        assert_eq!(budget.used(), 0, "so does a closed session");
        let mut free = Held::default();
        free.track(usize::MAX).unwrap();
    }

    #[test]
    fn a_buffer_left_after_a_large_message_lets_go_of_its_allocation() {
        let mut buf = bytes::BytesMut::with_capacity(4 * FREE);
        buf.extend_from_slice(&vec![7u8; 2 * FREE + 3]);
        let message = buf.split_to(2 * FREE).freeze();
        detach_after(&mut buf, message.len());
        assert_eq!(&buf[..], &[7, 7, 7]);
        assert!(buf.capacity() < FREE, "{}", buf.capacity());
        // The message's allocation is its own now: dropping it frees it.
        assert!(message.is_unique());
    }
}
