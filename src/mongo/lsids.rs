//! Logical sessions (`lsid`s) belong to the agent that first used them. Every agent reaches a
//! MongoDB upstream as the same vaulted user, and a server ties a session (and its
//! transaction) to the user only: an agent that learned another's session id could join or
//! abort its transaction, or end it. So the gateway keeps, per upstream, which agent's
//! connections use each session id, and refuses a command naming one another agent uses. A
//! driver uses one session over several of its pooled connections: the agent's own connections
//! share their sessions freely.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::refusal::Refusal;

pub const FOREIGN_SESSION_RULE: &str = "builtin: foreign-session";
/// Session ids one connection may use; past this a new one is refused (a driver reuses a few).
const MAX_PER_CONNECTION: usize = 10_000;

/// A session id's agent, and how many of its connections use it.
type Owners = HashMap<Vec<u8>, (Arc<str>, usize)>;

/// The session ids in use on one upstream: whose, and by how many of its connections.
#[derive(Debug, Default)]
pub struct LogicalSessions {
    owners: Mutex<Owners>,
}

impl LogicalSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Owners> {
        self.owners.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn claim(&self, id: &[u8], agent: &Arc<str>) -> Result<(), Refusal> {
        let mut owners = self.lock();
        match owners.get_mut(id) {
            Some((owner, n)) if owner == agent => {
                *n += 1;
                Ok(())
            }
            Some(_) => Err(Refusal::permission(
                FOREIGN_SESSION_RULE,
                "the logical session (lsid) is in use by another agent".to_string(),
            )),
            None => {
                owners.insert(id.to_vec(), (agent.clone(), 1));
                Ok(())
            }
        }
    }

    fn release(&self, id: &[u8]) {
        let mut owners = self.lock();
        if let Some((_, n)) = owners.get_mut(id) {
            *n -= 1;
            if *n == 0 {
                owners.remove(id);
            }
        }
    }

    #[cfg(test)]
    fn in_use(&self) -> usize {
        self.lock().len()
    }
}

/// The session ids one connection used; given back when it closes.
#[derive(Debug)]
pub struct ConnectionSessions {
    all: Arc<LogicalSessions>,
    agent: Arc<str>,
    used: HashSet<Vec<u8>>,
}

impl ConnectionSessions {
    pub fn new(all: Arc<LogicalSessions>, agent: Arc<str>) -> ConnectionSessions {
        ConnectionSessions {
            all,
            agent,
            used: HashSet::new(),
        }
    }

    /// Session `id` for this connection: refused if another agent uses it, or past
    /// [`MAX_PER_CONNECTION`].
    pub fn use_session(&mut self, id: &[u8]) -> Result<(), Refusal> {
        if self.used.contains(id) {
            return Ok(());
        }
        if self.used.len() >= MAX_PER_CONNECTION {
            return Err(Refusal::permission(
                FOREIGN_SESSION_RULE,
                format!("more than {MAX_PER_CONNECTION} logical sessions on one connection"),
            ));
        }
        self.all.claim(id, &self.agent)?;
        self.used.insert(id.to_vec());
        Ok(())
    }

    pub fn contains(&self, id: &[u8]) -> bool {
        self.used.contains(id)
    }
}

impl Drop for ConnectionSessions {
    fn drop(&mut self) {
        for id in &self.used {
            self.all.release(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_id_is_the_first_agents_until_its_connections_close() {
        let all = Arc::new(LogicalSessions::default());
        let (a, b): (Arc<str>, Arc<str>) = ("analyst".into(), "writer".into());
        let mut a1 = ConnectionSessions::new(all.clone(), a.clone());
        let mut a2 = ConnectionSessions::new(all.clone(), a);
        let mut b1 = ConnectionSessions::new(all.clone(), b);
        a1.use_session(b"s1").unwrap();
        a1.use_session(b"s1").unwrap();
        // The agent's other connection (a driver's pool) shares it.
        a2.use_session(b"s1").unwrap();
        let e = b1.use_session(b"s1").unwrap_err();
        assert_eq!(e.rule, FOREIGN_SESSION_RULE);
        b1.use_session(b"s2").unwrap();
        drop(a1);
        assert!(b1.use_session(b"s1").is_err(), "a2 still uses it");
        drop(a2);
        assert_eq!(all.in_use(), 1);
        b1.use_session(b"s1").unwrap();
        drop(b1);
        assert_eq!(all.in_use(), 0);
    }
}
