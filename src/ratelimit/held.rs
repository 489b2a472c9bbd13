//! The memory client messages hold while they arrive, across every session and door.
//!
//! A message is buffered whole before it is judged (a Bind's parameters, a Redis command's
//! arguments, a MongoDB document, an MCP request body), up to `limits.max_message_bytes` each.
//! One agent sending many such messages slowly, on many sessions, could otherwise make the
//! gateway hold gigabytes and take it down for everyone. A read buffer up to [`FREE`] bytes is
//! not counted (every session may hold that much); beyond it, the whole buffer is taken from
//! two budgets at once: the gateway's, `limits.max_held_client_bytes`, and its agent's share of
//! it, `limits.max_held_client_bytes_per_agent`, so that one agent filling its share leaves the
//! rest to the others. Both are given back as the buffer empties. A read that would take either
//! past its cap fails: that message cannot be received now, and the front end says so natively.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What a session's read buffer may hold without counting against the budget.
pub const FREE: usize = 256 * 1024;

/// The gateway-wide budget and every agent's share of it.
#[derive(Debug)]
pub struct HeldBytes {
    used: AtomicUsize,
    cap: usize,
    per_agent: usize,
    /// What each agent's readers hold now; an agent's entry is made at its first session.
    agents: Mutex<HashMap<Arc<str>, Arc<AtomicUsize>>>,
}

/// Which budget a message did not fit in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldScope {
    /// Every session of every agent together (`limits.max_held_client_bytes`).
    Gateway,
    /// The sessions of the message's agent (`limits.max_held_client_bytes_per_agent`).
    Agent,
}

/// A budget is spent: the message being received does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub struct HeldExhausted {
    pub cap: usize,
    pub wanted: usize,
    pub scope: HeldScope,
}

impl std::fmt::Display for HeldExhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (held, setting) = match self.scope {
            HeldScope::Gateway => ("across all sessions", "limits.max_held_client_bytes"),
            HeldScope::Agent => (
                "across this agent's sessions",
                "limits.max_held_client_bytes_per_agent",
            ),
        };
        write!(
            f,
            "tollgate: client messages being received hold {} bytes {held} ({setting}); a message that needs {} bytes cannot be received now",
            self.cap, self.wanted
        )
    }
}

/// Adds `n` to `used` unless that goes past `cap`.
fn take_within(used: &AtomicUsize, n: usize, cap: usize) -> bool {
    used.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |u| {
        u.checked_add(n).filter(|&total| total <= cap)
    })
    .is_ok()
}

impl HeldBytes {
    /// A budget of `cap` bytes, of which one agent may hold at most `per_agent`.
    pub fn new(cap: usize, per_agent: usize) -> Arc<HeldBytes> {
        Arc::new(HeldBytes {
            used: AtomicUsize::new(0),
            cap,
            per_agent,
            agents: Mutex::new(HashMap::new()),
        })
    }

    /// Bytes counted now (metrics, tests).
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// What `agent`'s readers hold now (its entry is made here when it has none).
    fn agent_counter(&self, agent: &Arc<str>) -> Arc<AtomicUsize> {
        let mut agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        agents.entry(agent.clone()).or_default().clone()
    }

    /// Takes `n` more bytes for a reader of the agent whose share `agent` counts: from that
    /// share, then from the gateway's budget; neither is touched when either is short.
    fn take(&self, agent: &AtomicUsize, n: usize) -> Result<(), HeldScope> {
        if !take_within(agent, n, self.per_agent) {
            return Err(HeldScope::Agent);
        }
        if !take_within(&self.used, n, self.cap) {
            agent.fetch_sub(n, Ordering::AcqRel);
            return Err(HeldScope::Gateway);
        }
        Ok(())
    }

    fn give_back(&self, agent: &AtomicUsize, n: usize) {
        agent.fetch_sub(n, Ordering::AcqRel);
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    fn cap_of(&self, scope: HeldScope) -> usize {
        match scope {
            HeldScope::Gateway => self.cap,
            HeldScope::Agent => self.per_agent,
        }
    }
}

/// One reader's share of the budget; given back when dropped. A reader without a budget
/// (upstream connections, tests) counts nothing.
#[derive(Debug, Default)]
pub struct Held {
    /// The budget and the counter of the reader's agent's share of it.
    budget: Option<(Arc<HeldBytes>, Arc<AtomicUsize>)>,
    held: usize,
}

impl Held {
    /// A reader of `agent`'s, counted in the gateway's budget and in the agent's share.
    pub fn of(budget: &Arc<HeldBytes>, agent: &Arc<str>) -> Held {
        Held {
            budget: Some((budget.clone(), budget.agent_counter(agent))),
            held: 0,
        }
    }

    /// Accounts for a read buffer holding `len` bytes: nothing up to [`FREE`], all of it
    /// beyond. Growing past the budget fails and holds no more than before.
    pub fn track(&mut self, len: usize) -> Result<(), HeldExhausted> {
        let Some((budget, agent)) = &self.budget else {
            return Ok(());
        };
        let want = if len > FREE { len } else { 0 };
        if want > self.held {
            if let Err(scope) = budget.take(agent, want - self.held) {
                return Err(HeldExhausted {
                    cap: budget.cap_of(scope),
                    wanted: want,
                    scope,
                });
            }
        } else if want < self.held {
            budget.give_back(agent, self.held - want);
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
        if let (Some((budget, agent)), true) = (&self.budget, self.held > 0) {
            budget.give_back(agent, self.held);
            metrics::gauge!("tollgate_held_client_bytes").set(budget.used() as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_past_free_share_one_cap_and_give_it_back() {
        let budget = HeldBytes::new(3 * FREE, usize::MAX);
        let mut a = Held::of(&budget, &Arc::from("a"));
        let mut b = Held::of(&budget, &Arc::from("b"));
        a.track(FREE).unwrap();
        assert_eq!(budget.used(), 0, "up to FREE is not counted");
        a.track(2 * FREE).unwrap();
        assert_eq!(budget.used(), 2 * FREE, "beyond it, the whole buffer");
        let e = b.track(2 * FREE).unwrap_err();
        assert_eq!((e.wanted, e.scope), (2 * FREE, HeldScope::Gateway));
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
    fn one_agent_fills_its_share_and_leaves_the_rest_to_others() {
        let budget = HeldBytes::new(6 * FREE, 3 * FREE);
        let greedy: Arc<str> = Arc::from("greedy");
        let mut g1 = Held::of(&budget, &greedy);
        let mut g2 = Held::of(&budget, &greedy);
        g1.track(2 * FREE).unwrap();
        let e = g2.track(2 * FREE).unwrap_err();
        assert_eq!(
            (e.cap, e.wanted, e.scope),
            (3 * FREE, 2 * FREE, HeldScope::Agent)
        );
        assert!(
            e.to_string()
                .contains("limits.max_held_client_bytes_per_agent"),
            "{e}"
        );
        assert_eq!(budget.used(), 2 * FREE, "the refused growth took nothing");
        // Another agent has the rest of the gateway's budget.
        let mut other = Held::of(&budget, &Arc::from("other"));
        other.track(3 * FREE).unwrap();
        assert_eq!(budget.used(), 5 * FREE);
        // The gateway's budget short: the agent's share is given back too.
        let mut third = Held::of(&budget, &Arc::from("third"));
        assert_eq!(third.track(2 * FREE).unwrap_err().scope, HeldScope::Gateway);
        drop(other);
        let mut again = Held::of(&budget, &Arc::from("third"));
        again
            .track(3 * FREE)
            .expect("third's whole share: the refusal took none of it");
        drop((g1, g2, third, again));
        assert_eq!(budget.used(), 0);
        // Every share is back as well: greedy may hold its whole share again.
        Held::of(&budget, &greedy).track(3 * FREE).unwrap();
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
