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
const MAX_PER_CONNECTION: usize = if cfg!(test) { 100 } else { 10_000 };
/// Session ids kept per upstream; past this (after dropping the expired) a new one is refused.
const MAX_PER_UPSTREAM: usize = 1_000_000;
/// Session ids one agent may hold on an upstream (in use or kept after use): an agent minting
/// ids cannot fill the upstream's table and lock the others out. Drivers use a few per client.
const MAX_PER_AGENT: usize = if cfg!(test) { 1_000 } else { 100_000 };

struct Owner {
    agent: Arc<str>,
    /// Connections that use it now.
    users: usize,
    /// When the last of them let it go.
    released: Option<Instant>,
    /// Ended on the server from another of the agent's connections while these used it: it is
    /// nobody's once they let it go.
    ended: bool,
}

#[derive(Default)]
struct Table {
    owners: HashMap<[u8; 16], Owner>,
    /// How many of `owners` each agent has.
    per_agent: HashMap<Arc<str>, usize>,
}

impl Table {
    fn count(&mut self, agent: &Arc<str>, up: bool) {
        let n = self.per_agent.entry(agent.clone()).or_default();
        if up {
            *n += 1;
        } else {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_agent.remove(agent);
            }
        }
    }

    fn remove(&mut self, id: &[u8; 16]) {
        if let Some(o) = self.owners.remove(id) {
            self.count(&o.agent, false);
        }
    }

    /// Forgets the ids kept past the server's timeout.
    fn sweep(&mut self, now: Instant) {
        let gone: Vec<[u8; 16]> = self
            .owners
            .iter()
            .filter(|(_, o)| o.released.is_some_and(|t| now - t >= KEEP_AFTER_USE))
            .map(|(k, _)| *k)
            .collect();
        for id in gone {
            self.remove(&id);
        }
    }
}

/// The session ids in use on one upstream, and whose they are.
#[derive(Default)]
pub struct LogicalSessions {
    table: Mutex<Table>,
}

impl std::fmt::Debug for LogicalSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogicalSessions").finish_non_exhaustive()
    }
}

impl LogicalSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `id` for one more of `agent`'s connections; `true` when the id was nobody's before.
    fn claim(&self, id: [u8; 16], agent: &Arc<str>) -> Result<bool, Refusal> {
        let mut t = self.lock();
        let now = Instant::now();
        if let Some(o) = t.owners.get_mut(&id) {
            let expired = o.released.is_some_and(|r| now - r >= KEEP_AFTER_USE);
            if &o.agent == agent {
                o.users += 1;
                o.released = None;
                o.ended = false;
                return Ok(false);
            }
            if !expired {
                return Err(Refusal::permission(
                    FOREIGN_SESSION_RULE,
                    "the logical session (lsid) is another agent's".to_string(),
                ));
            }
            t.remove(&id);
        }
        let full = |t: &Table| {
            t.owners.len() >= MAX_PER_UPSTREAM
                || t.per_agent.get(agent).copied().unwrap_or(0) >= MAX_PER_AGENT
        };
        if full(&t) {
            t.sweep(now);
            if full(&t) {
                return Err(Refusal::permission(
                    FOREIGN_SESSION_RULE,
                    format!(
                        "too many logical sessions (at most {MAX_PER_AGENT} per agent, kept {} minutes after use)",
                        KEEP_AFTER_USE.as_secs() / 60
                    ),
                ));
            }
        }
        t.owners.insert(
            id,
            Owner {
                agent: agent.clone(),
                users: 1,
                released: None,
                ended: false,
            },
        );
        t.count(agent, true);
        Ok(true)
    }

    /// A connection stops using `id`; `ended`: the session was ended on the server
    /// (`endSessions`), or never reached it, so once no connection uses it the id is nobody's.
    fn release(&self, id: &[u8; 16], ended: bool) {
        let mut t = self.lock();
        if let Some(o) = t.owners.get_mut(id) {
            o.users = o.users.saturating_sub(1);
            if o.users == 0 {
                if ended || o.ended {
                    t.remove(id);
                } else {
                    o.released = Some(Instant::now());
                }
            }
        }
    }

    /// Whether `id` is `agent`'s now (in use or kept after use, not expired).
    fn is_agents(&self, id: &[u8; 16], agent: &Arc<str>) -> bool {
        let now = Instant::now();
        self.lock().owners.get(id).is_some_and(|o| {
            &o.agent == agent && o.released.is_none_or(|r| now - r < KEEP_AFTER_USE)
        })
    }

    /// `agent` ended `id` on the server from a connection that does not use it: nobody's once
    /// no connection does (if one still does, it stays the agent's as after any use).
    fn ended_elsewhere(&self, id: &[u8; 16], agent: &Arc<str>) {
        let mut t = self.lock();
        match t.owners.get_mut(id) {
            Some(o) if &o.agent == agent && o.users == 0 => t.remove(id),
            Some(o) if &o.agent == agent => o.ended = true,
            _ => {}
        }
    }

    #[cfg(test)]
    fn in_use(&self) -> usize {
        self.lock().owners.len()
    }

    #[cfg(test)]
    fn age(&self, id: &[u8; 16], by: Duration) {
        if let Some(o) = self.lock().owners.get_mut(id) {
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

/// A session id a connection used for the first time.
#[derive(Debug, Clone, Copy)]
pub struct NewUse {
    id: [u8; 16],
    /// Nobody's before.
    fresh: bool,
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

    /// Session `id` for this connection: refused if it is another agent's. `Some` when this
    /// connection had not used it yet (see [`ConnectionSessions::undo`]).
    pub fn use_session(&mut self, id: [u8; 16]) -> Result<Option<NewUse>, Refusal> {
        self.uses += 1;
        if let Some(last) = self.used.get_mut(&id) {
            *last = self.uses;
            return Ok(None);
        }
        let fresh = self.all.claim(id, &self.agent)?;
        if self.used.len() >= MAX_PER_CONNECTION {
            // The least recently used tenth, in one pass (not a scan per new id).
            let mut by_age: Vec<([u8; 16], u64)> =
                self.used.iter().map(|(k, t)| (*k, *t)).collect();
            let cut = MAX_PER_CONNECTION / 10;
            by_age.select_nth_unstable_by_key(cut, |(_, t)| *t);
            for (old, _) in &by_age[..cut] {
                self.used.remove(old);
                self.all.release(old, false);
            }
        }
        self.used.insert(id, self.uses);
        Ok(Some(NewUse { id, fresh }))
    }

    /// The command that first used `new.id` here did not go upstream after all (refused by a
    /// later check): the id is given back as it was (nobody's, if it was nobody's before).
    pub fn undo(&mut self, new: NewUse) {
        if self.used.remove(&new.id).is_some() {
            self.all.release(&new.id, new.fresh);
        }
    }

    #[cfg(test)]
    fn contains(&self, id: &[u8; 16]) -> bool {
        self.used.contains_key(id)
    }

    /// Whether `id` is this connection's agent's: used here, or on another of its connections
    /// (a driver's `endSessions` at close names the sessions of its whole pool, sent on one
    /// connection), or kept after use.
    pub fn is_agents(&self, id: &[u8; 16]) -> bool {
        self.used.contains_key(id) || self.all.is_agents(id, &self.agent)
    }

    /// The client ended these sessions (`endSessions` forwarded for them).
    pub fn ended(&mut self, ids: &[[u8; 16]]) {
        for id in ids {
            if self.used.remove(id).is_some() {
                self.all.release(id, true);
            } else {
                self.all.ended_elsewhere(id, &self.agent);
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

    /// Session id number `n`.
    fn id(n: usize) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&(n as u64).to_le_bytes());
        b
    }

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

    /// A command refused after it took its id (its rate, say) gives it back as it was.
    #[test]
    fn an_id_whose_command_never_went_upstream_is_given_back() {
        let all = Arc::new(LogicalSessions::default());
        let mut a = ConnectionSessions::new(all.clone(), "analyst".into());
        let new = a.use_session([5; 16]).unwrap().expect("new here");
        a.undo(new);
        assert_eq!(all.in_use(), 0);
        let mut b = ConnectionSessions::new(all.clone(), "writer".into());
        b.use_session([5; 16]).unwrap();
    }

    /// An agent minting session ids fills its own quota, not the upstream's table: the others'
    /// sessions go on.
    #[test]
    fn one_agent_cannot_fill_the_table() {
        let all = Arc::new(LogicalSessions::default());
        let mut minter = ConnectionSessions::new(all.clone(), "writer".into());
        let mut taken = 0;
        for n in 0..2 * MAX_PER_AGENT {
            if minter.use_session(id(n)).is_ok() {
                taken += 1;
            }
        }
        assert_eq!(taken, MAX_PER_AGENT);
        let mut other = ConnectionSessions::new(all.clone(), "analyst".into());
        other.use_session(id(usize::MAX)).unwrap();
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
        for n in 0..MAX_PER_CONNECTION {
            c.use_session(id(n)).unwrap();
        }
        c.use_session(id(0)).unwrap(); // used again: not among the oldest any more
        c.use_session(id(MAX_PER_CONNECTION)).unwrap();
        assert!(c.contains(&id(0)) && !c.contains(&id(1)));
        assert!(c.contains(&id(MAX_PER_CONNECTION)));
        assert_eq!(
            c.used.len(),
            MAX_PER_CONNECTION - MAX_PER_CONNECTION / 10 + 1
        );
        // Forgotten by the connection, still the agent's.
        let mut other = ConnectionSessions::new(all, "writer".into());
        assert!(other.use_session(id(1)).is_err());
    }

    /// A driver's `endSessions` at close names its whole pool's sessions and goes out on one
    /// connection: the agent's sessions used on its other connections end too, and are nobody's
    /// once those let them go (they stayed reserved for 30 minutes: a review). Another agent's
    /// are not this connection's to end.
    #[test]
    fn end_sessions_from_one_connection_ends_the_agents_sessions_of_the_others() {
        let all = Arc::new(LogicalSessions::default());
        let (a, b): (Arc<str>, Arc<str>) = ("analyst".into(), "writer".into());
        let mut a1 = ConnectionSessions::new(all.clone(), a.clone());
        let mut a2 = ConnectionSessions::new(all.clone(), a.clone());
        let mut b1 = ConnectionSessions::new(all.clone(), b.clone());
        a1.use_session(id(1)).unwrap();
        a2.use_session(id(2)).unwrap();
        b1.use_session(id(3)).unwrap();
        assert!(a1.is_agents(&id(1)) && a1.is_agents(&id(2)));
        assert!(!a1.is_agents(&id(3)));
        a1.ended(&[id(1), id(2)]);
        drop(a2);
        // Both are nobody's now: the writer may use them.
        let mut b2 = ConnectionSessions::new(all.clone(), b);
        b2.use_session(id(1)).unwrap();
        b2.use_session(id(2)).unwrap();
        assert!(a1.use_session(id(3)).is_err());
    }
}
