//! Logical sessions (`lsid`s) belong to the agent that first used them. Every agent reaches a
//! MongoDB upstream as the same vaulted user, and a server ties a session (and its
//! transaction) to the user only: an agent that learned another's session id could join or
//! abort its transaction, or end it. So the gateway keeps, per upstream, which agent uses each
//! session id, and refuses a command naming one another agent has. A driver uses one session
//! over several of its pooled connections, and reuses pooled sessions on new connections: the
//! agent's own connections share their sessions, and an id stays the agent's for as long as the
//! server keeps an idle session (30 minutes) after its last connection closed, unless it was
//! ended (`endSessions`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::refusal::Refusal;

pub const FOREIGN_SESSION_RULE: &str = "builtin: foreign-session";
/// How long a server keeps an idle session (MongoDB's `localLogicalSessionTimeoutMinutes`
/// default): an id stays its agent's this long after its last connection closed.
const KEEP_AFTER_USE: Duration = Duration::from_secs(30 * 60);
/// Session ids one connection remembers; past this it forgets its least recently used one
/// (which stays its agent's for `KEEP_AFTER_USE`).
const MAX_PER_CONNECTION: usize = 10_000;
/// Session ids kept per upstream; past this (after dropping the expired) a new one is refused.
const MAX_PER_UPSTREAM: usize = 1_000_000;

struct Owner {
    agent: Arc<str>,
    /// Connections that use it now.
    users: usize,
    /// When the last of them let it go.
    released: Option<Instant>,
}

/// The session ids in use on one upstream, and whose they are.
#[derive(Default)]
pub struct LogicalSessions {
    owners: Mutex<HashMap<[u8; 16], Owner>>,
}

impl std::fmt::Debug for LogicalSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogicalSessions").finish_non_exhaustive()
    }
}

impl LogicalSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 16], Owner>> {
        self.owners.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn claim(&self, id: [u8; 16], agent: &Arc<str>) -> Result<(), Refusal> {
        let mut owners = self.lock();
        let now = Instant::now();
        let expired = |o: &Owner| o.released.is_some_and(|t| now - t >= KEEP_AFTER_USE);
        if let Some(o) = owners.get_mut(&id) {
            if &o.agent == agent || expired(o) {
                o.agent = agent.clone();
                o.users += 1;
                o.released = None;
                return Ok(());
            }
            return Err(Refusal::permission(
                FOREIGN_SESSION_RULE,
                "the logical session (lsid) is another agent's".to_string(),
            ));
        }
        if owners.len() >= MAX_PER_UPSTREAM {
            owners.retain(|_, o| !expired(o));
            if owners.len() >= MAX_PER_UPSTREAM {
                return Err(Refusal::permission(
                    FOREIGN_SESSION_RULE,
                    format!("more than {MAX_PER_UPSTREAM} logical sessions in use on the upstream"),
                ));
            }
        }
        owners.insert(
            id,
            Owner {
                agent: agent.clone(),
                users: 1,
                released: None,
            },
        );
        Ok(())
    }

    /// A connection stops using `id`; `ended`: the session was ended on the server
    /// (`endSessions`), so once no connection uses it the id is nobody's.
    fn release(&self, id: &[u8; 16], ended: bool) {
        let mut owners = self.lock();
        if let Some(o) = owners.get_mut(id) {
            o.users = o.users.saturating_sub(1);
            if o.users == 0 {
                if ended {
                    owners.remove(id);
                } else {
                    o.released = Some(Instant::now());
                }
            }
        }
    }

    #[cfg(test)]
    fn in_use(&self) -> usize {
        self.lock().len()
    }

    #[cfg(test)]
    fn age(&self, id: &[u8; 16], by: Duration) {
        if let Some(o) = self.lock().get_mut(id) {
            o.released = o.released.map(|t| t - by);
        }
    }
}

/// A session id from a command's `lsid`: `{id: UUID}` (binary subtype 4, 16 bytes), as a
/// server requires. `Err` for any other shape (refused before it reaches the server).
pub fn session_id(lsid: &bson::Bson) -> Result<[u8; 16], Refusal> {
    let id = lsid.as_document().and_then(|d| d.get("id"));
    match id {
        Some(bson::Bson::Binary(b)) if b.subtype == bson::spec::BinarySubtype::Uuid => {
            b.bytes.as_slice().try_into().map_err(|_| malformed())
        }
        _ => Err(malformed()),
    }
}

fn malformed() -> Refusal {
    Refusal::new(
        crate::refusal::RefusalClass::Encoding,
        crate::policy::mongo::command::MALFORMED_RULE,
        "lsid must be a document whose id is a UUID (binary subtype 4, 16 bytes)".to_string(),
    )
}

/// The session ids one connection used; given back when it closes.
pub struct ConnectionSessions {
    all: Arc<LogicalSessions>,
    agent: Arc<str>,
    /// Each id with when it was last used (a counter).
    used: HashMap<[u8; 16], u64>,
    uses: u64,
}

impl std::fmt::Debug for ConnectionSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionSessions")
            .field("used", &self.used.len())
            .finish_non_exhaustive()
    }
}

impl ConnectionSessions {
    pub fn new(all: Arc<LogicalSessions>, agent: Arc<str>) -> ConnectionSessions {
        ConnectionSessions {
            all,
            agent,
            used: HashMap::new(),
            uses: 0,
        }
    }

    /// Session `id` for this connection: refused if it is another agent's.
    pub fn use_session(&mut self, id: [u8; 16]) -> Result<(), Refusal> {
        self.uses += 1;
        if let Some(last) = self.used.get_mut(&id) {
            *last = self.uses;
            return Ok(());
        }
        self.all.claim(id, &self.agent)?;
        if self.used.len() >= MAX_PER_CONNECTION {
            let oldest = self.used.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                self.used.remove(&oldest);
                self.all.release(&oldest, false);
            }
        }
        self.used.insert(id, self.uses);
        Ok(())
    }

    pub fn contains(&self, id: &[u8]) -> bool {
        <[u8; 16]>::try_from(id).is_ok_and(|id| self.used.contains_key(&id))
    }

    /// The client ended these sessions (`endSessions` forwarded for them).
    pub fn ended(&mut self, ids: &[[u8; 16]]) {
        for id in ids {
            if self.used.remove(id).is_some() {
                self.all.release(id, true);
            }
        }
    }
}

impl Drop for ConnectionSessions {
    fn drop(&mut self) {
        for id in self.used.keys() {
            self.all.release(id, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_id_stays_its_agents_while_used_and_for_the_servers_timeout_after() {
        let all = Arc::new(LogicalSessions::default());
        let (a, b): (Arc<str>, Arc<str>) = ("analyst".into(), "writer".into());
        let (s1, s2) = ([1u8; 16], [2u8; 16]);
        let mut a1 = ConnectionSessions::new(all.clone(), a.clone());
        let mut a2 = ConnectionSessions::new(all.clone(), a.clone());
        let mut b1 = ConnectionSessions::new(all.clone(), b);
        a1.use_session(s1).unwrap();
        a1.use_session(s1).unwrap();
        // The agent's other connection (a driver's pool) shares it.
        a2.use_session(s1).unwrap();
        let e = b1.use_session(s1).unwrap_err();
        assert_eq!(e.rule, FOREIGN_SESSION_RULE);
        b1.use_session(s2).unwrap();
        drop((a1, a2));
        // No connection of the agent uses it now, but the server keeps the session: still the
        // agent's (a driver reuses pooled sessions on new connections).
        assert!(b1.use_session(s1).is_err());
        let mut a3 = ConnectionSessions::new(all.clone(), a);
        a3.use_session(s1).unwrap();
        drop(a3);
        // Past the server's idle-session timeout it is free.
        all.age(&s1, KEEP_AFTER_USE);
        b1.use_session(s1).unwrap();
        assert_eq!(all.in_use(), 2);
        // Ended by its client: nobody's at once.
        b1.ended(&[s1, s2]);
        assert_eq!(all.in_use(), 0);
    }

    #[test]
    fn only_a_uuid_names_a_session() {
        use bson::{bson, Binary};
        let uuid = |n: usize| bson!({ "id": Binary { subtype: bson::spec::BinarySubtype::Uuid, bytes: vec![7; n] } });
        assert_eq!(session_id(&uuid(16)).unwrap(), [7; 16]);
        for bad in [
            uuid(1 << 20),
            uuid(15),
            bson!({ "id": Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: vec![7; 16] } }),
            bson!({ "id": "a string" }),
            bson!({ "uid": 1 }),
            bson!("not a document"),
        ] {
            assert!(session_id(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_connection_forgets_its_least_recently_used_session_past_its_cap() {
        let all = Arc::new(LogicalSessions::default());
        let mut c = ConnectionSessions::new(all.clone(), "analyst".into());
        let id = |n: usize| {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&(n as u64).to_le_bytes());
            b
        };
        for n in 0..MAX_PER_CONNECTION {
            c.use_session(id(n)).unwrap();
        }
        c.use_session(id(0)).unwrap(); // used again: not the oldest any more
        c.use_session(id(MAX_PER_CONNECTION)).unwrap();
        assert!(c.contains(&id(0)) && !c.contains(&id(1)));
        assert_eq!(c.used.len(), MAX_PER_CONNECTION);
        // Forgotten by the connection, still the agent's.
        let mut other = ConnectionSessions::new(all, "writer".into());
        assert!(other.use_session(id(1)).is_err());
    }
}
