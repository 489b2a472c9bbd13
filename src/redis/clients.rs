//! Which upstream Redis connections are tollgate's sessions', and whose: the upstream's client id
//! (`CLIENT ID`, asked at login) and the address the upstream sees (tollgate's local address of
//! that connection), with the agent the session is logged in as. `CLIENT KILL`, `CLIENT LIST`,
//! `SLOWLOG` and `MONITOR` use it so an agent sees and acts on its own connections only.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use dashmap::DashMap;

#[derive(Debug)]
struct Owner {
    agent: Mutex<Arc<str>>,
    addr: String,
}

/// The live upstream connections of one Redis upstream, by upstream client id.
#[derive(Debug, Default)]
pub struct UpstreamClients {
    by_id: DashMap<u64, Owner>,
}

/// A registered connection; dropping it removes the entry (the session ended).
#[derive(Debug)]
pub struct ClientEntry {
    clients: Arc<UpstreamClients>,
    pub id: u64,
}

impl Drop for ClientEntry {
    fn drop(&mut self) {
        self.clients.by_id.remove(&self.id);
    }
}

impl ClientEntry {
    /// The session switched agents (`AUTH` inside a session).
    pub fn set_agent(&self, agent: Arc<str>) {
        if let Some(o) = self.clients.by_id.get(&self.id) {
            *o.agent.lock().expect("owner lock") = agent;
        }
    }
}

impl UpstreamClients {
    /// Registers upstream client `id`, seen by the upstream at `addr` (`ip:port`), as `agent`'s.
    pub fn register(self: &Arc<Self>, id: u64, addr: String, agent: Arc<str>) -> ClientEntry {
        self.by_id.insert(
            id,
            Owner {
                agent: Mutex::new(agent),
                addr,
            },
        );
        ClientEntry {
            clients: self.clone(),
            id,
        }
    }

    fn owned_by(o: &Owner, agent: &str) -> bool {
        &**o.agent.lock().expect("owner lock") == agent
    }

    /// Whether upstream client `id` is one of `agent`'s sessions.
    pub fn is_own(&self, id: u64, agent: &str) -> bool {
        self.by_id
            .get(&id)
            .is_some_and(|o| Self::owned_by(&o, agent))
    }

    /// The upstream client ids of `agent`'s sessions, in ascending order.
    pub fn ids_of(&self, agent: &str) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .by_id
            .iter()
            .filter(|e| Self::owned_by(e.value(), agent))
            .map(|e| *e.key())
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The addresses (`ip:port`) the upstream sees for `agent`'s sessions.
    pub fn addrs_of(&self, agent: &str) -> HashSet<String> {
        self.by_id
            .iter()
            .filter(|e| Self::owned_by(e.value(), agent))
            .map(|e| e.value().addr.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_follow_sessions_and_agents() {
        let clients = Arc::new(UpstreamClients::default());
        let a = clients.register(7, "127.0.0.1:5000".into(), "analyst".into());
        let b = clients.register(9, "127.0.0.1:5001".into(), "writer".into());
        assert!(clients.is_own(7, "analyst"));
        assert!(!clients.is_own(9, "analyst"));
        assert_eq!(clients.ids_of("writer"), vec![9]);
        b.set_agent("analyst".into());
        assert_eq!(clients.ids_of("analyst"), vec![7, 9]);
        assert!(clients.addrs_of("analyst").contains("127.0.0.1:5001"));
        drop(a);
        assert_eq!(clients.ids_of("analyst"), vec![9]);
        drop(b);
        assert!(clients.ids_of("analyst").is_empty());
    }
}
