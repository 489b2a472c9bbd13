//! Connection caps: per agent and in total. A slot is released when dropped.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TooManyConnections {
    #[error("agent already has {0} connections, the most its policy allows")]
    Agent(u32),
    #[error("tollgate already serves {0} connections, the most its configuration allows")]
    Total(u32),
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    per_agent: DashMap<Arc<str>, Arc<AtomicU32>>,
    total: Arc<AtomicU32>,
}

/// Held for the life of a session.
#[derive(Debug)]
pub struct ConnectionSlot {
    agent: Arc<AtomicU32>,
    total: Arc<AtomicU32>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.agent.fetch_sub(1, Ordering::AcqRel);
        self.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Increments `counter` unless it already reached `max`.
fn try_increment(counter: &AtomicU32, max: Option<u32>) -> Result<(), u32> {
    let max = max.unwrap_or(u32::MAX);
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .map(|_| ())
}

impl Counters {
    pub(super) fn acquire(
        &self,
        agent: &Arc<str>,
        per_agent: Option<u32>,
        total: Option<u32>,
    ) -> Result<ConnectionSlot, TooManyConnections> {
        let counter = self.per_agent.entry(agent.clone()).or_default().clone();
        try_increment(&self.total, total).map_err(TooManyConnections::Total)?;
        if let Err(n) = try_increment(&counter, per_agent) {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(TooManyConnections::Agent(n));
        }
        Ok(ConnectionSlot {
            agent: counter,
            total: self.total.clone(),
        })
    }

    pub(super) fn of(&self, agent: &str) -> u32 {
        self.per_agent
            .get(agent)
            .map_or(0, |c| c.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_agent_and_total_and_releases_on_drop() {
        let c = Counters::default();
        let a: Arc<str> = "a".into();
        let b: Arc<str> = "b".into();
        let s1 = c.acquire(&a, Some(2), Some(3)).unwrap();
        let _s2 = c.acquire(&a, Some(2), Some(3)).unwrap();
        assert_eq!(
            c.acquire(&a, Some(2), Some(3)).unwrap_err(),
            TooManyConnections::Agent(2)
        );
        let _s3 = c.acquire(&b, None, Some(3)).unwrap();
        assert_eq!(
            c.acquire(&b, None, Some(3)).unwrap_err(),
            TooManyConnections::Total(3)
        );
        drop(s1);
        assert_eq!(c.of("a"), 1);
        assert!(c.acquire(&b, None, Some(3)).is_ok());
    }
}
