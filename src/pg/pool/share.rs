//! Each agent's share of a transaction pool: how many of the pool's connections one agent may
//! hold at once (`max_agent_share`). Without it, one agent holding connections (pinned sessions,
//! open transactions, long statements) could leave every other agent of the pool waiting until
//! 53300 (DESIGN principle 6). An agent at its share waits for one of its own connections to come
//! back, within the same checkout timeout; other agents are not affected.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One agent's share of one pool.
#[derive(Debug, Clone)]
pub struct AgentShare {
    pub agent: Arc<str>,
    pub limit: u32,
    permits: Arc<Semaphore>,
}

/// A connection counted against its agent's share while the agent holds it.
#[derive(Debug)]
pub struct ShareHeld(#[allow(dead_code)] OwnedSemaphorePermit);

impl AgentShare {
    /// One permit, or `None` once `deadline` passes.
    pub async fn take(&self, deadline: tokio::time::Instant) -> Option<ShareHeld> {
        match tokio::time::timeout_at(deadline, self.permits.clone().acquire_owned()).await {
            Ok(Ok(p)) => Some(ShareHeld(p)),
            // The semaphore is never closed; a timeout is the only other way out.
            _ => None,
        }
    }

    /// Connections the agent holds now.
    pub fn held(&self) -> u32 {
        self.limit - self.permits.available_permits() as u32
    }
}

/// The shares of one pool, by agent.
#[derive(Debug, Default)]
pub struct Shares {
    by_agent: Mutex<HashMap<Arc<str>, AgentShare>>,
}

impl Shares {
    pub fn of(&self, agent: &Arc<str>, limit: u32) -> AgentShare {
        let mut map = self.by_agent.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(agent.clone())
            .or_insert_with(|| AgentShare {
                agent: agent.clone(),
                limit,
                permits: Arc::new(Semaphore::new(limit as usize)),
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn an_agent_at_its_share_waits_and_others_do_not() {
        let shares = Shares::default();
        let a = shares.of(&Arc::from("a"), 2);
        let b = shares.of(&Arc::from("b"), 2);
        let soon = || tokio::time::Instant::now() + Duration::from_millis(50);
        let h1 = a.take(soon()).await.expect("first");
        let _h2 = a.take(soon()).await.expect("second");
        assert_eq!(a.held(), 2);
        assert!(a.take(soon()).await.is_none(), "a third is over a's share");
        assert!(b.take(soon()).await.is_some(), "b has its own share");
        drop(h1);
        assert!(a.take(soon()).await.is_some(), "one came back");
        // The same agent gets the same share, whoever asks.
        assert_eq!(shares.of(&Arc::from("a"), 2).held(), a.held());
    }
}
