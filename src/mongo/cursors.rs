//! The cursors one agent opened on an upstream, with the reply plan their batches need:
//! `getMore` and `killCursors` are allowed only on these (a cursor id of another agent is
//! refused, whether or not it exists), and every `nextBatch` is masked like the `firstBatch` was.
//! An agent's connections share them ([`AgentCursors`]): a driver sends a cursor's getMore on
//! whichever connection of its pool is free (pymongo does), and every agent reaches the server as
//! the same vaulted user, so the server itself would let any connection continue it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use bson::{Bson, Document};

use crate::policy::mongo::{Command, ReplyPlan};
use crate::refusal::Refusal;

pub const FOREIGN_CURSOR_RULE: &str = "builtin: foreign-cursor";
/// Named when a cursor opened before a reload cannot be judged again (its command was not kept).
pub const RELOADED_CURSOR_RULE: &str = "builtin: policy-reloaded";
/// An agent holding more open cursors than this gets its oldest forgotten (the server's own
/// idle-cursor timeout reaps them upstream).
const MAX_CURSORS: usize = 10_000;

/// The command that opened a cursor, and the policy version it was judged under: a getMore
/// after a reload judges it again, since the server goes on running what the old policy allowed
/// (`MongoFromClient::cursor_still_allowed`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Origin {
    pub version: u64,
    /// `None` when it was too large to keep ([`Origin::KEPT_BYTES`], or the session's
    /// [`KEPT_TOTAL`]): such a cursor is not read on after a reload.
    pub command: Option<Arc<Command>>,
    /// The size of the command's message: what keeping it costs.
    pub bytes: usize,
}

impl Origin {
    /// The largest command kept for a cursor.
    pub const KEPT_BYTES: usize = 64 * 1024;
}

/// The most an agent keeps of its open cursors' commands together: beyond it a cursor keeps
/// none (`MAX_CURSORS` cursors of `KEPT_BYTES` would be 640 MiB).
const KEPT_TOTAL: usize = 8 << 20;

/// Each agent's cursors on one upstream, shared by its sessions while one of them lives (the
/// last to end takes them: the server's idle-cursor timeout reaps what is left upstream).
#[derive(Debug, Default)]
pub struct AgentCursors(Mutex<HashMap<Arc<str>, Weak<Mutex<Cursors>>>>);

impl AgentCursors {
    /// `agent`'s cursors, shared with its other sessions.
    pub fn of(&self, agent: &Arc<str>) -> Arc<Mutex<Cursors>> {
        let mut agents = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = agents.get(agent).and_then(Weak::upgrade) {
            return c;
        }
        agents.retain(|_, c| c.strong_count() > 0);
        let c = Arc::default();
        agents.insert(agent.clone(), Arc::downgrade(&c));
        c
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OpenCursor {
    pub namespace: String,
    pub plan: ReplyPlan,
    pub origin: Origin,
    /// Documents relayed from it so far (the agent's `max_rows` counts across batches).
    pub delivered: u64,
    opened: u64,
}

#[derive(Debug, Default)]
pub struct Cursors {
    open: HashMap<i64, OpenCursor>,
    counter: u64,
    /// The bytes of the commands the open cursors keep (`KEPT_TOTAL`).
    kept: usize,
}

/// `cursor.id` and `cursor.ns` of a cursor reply.
fn cursor_of(reply: &Document) -> Option<(i64, Option<&str>)> {
    let c = reply.get_document("cursor").ok()?;
    Some((cursor_id(c)?, c.get_str("ns").ok()))
}

/// A cursor document's `id` (servers send it as a 64-bit integer, some as 32).
pub fn cursor_id(cursor: &Document) -> Option<i64> {
    match cursor.get("id")? {
        Bson::Int64(v) => Some(*v),
        Bson::Int32(v) => Some((*v).into()),
        _ => None,
    }
}

impl Cursors {
    /// After a reply to find/aggregate/listCollections/...: remembers a cursor left open.
    pub fn opened(&mut self, reply: &Document, namespace: &str, plan: &ReplyPlan) {
        let Some((id, ns)) = cursor_of(reply) else {
            return;
        };
        self.open(id, ns.unwrap_or(namespace), plan, 0, Origin::default());
    }

    /// Remembers cursor `id` (0: exhausted, nothing to remember) with `delivered` documents
    /// already relayed from it.
    pub fn open(
        &mut self,
        id: i64,
        namespace: &str,
        plan: &ReplyPlan,
        delivered: u64,
        origin: Origin,
    ) {
        if id == 0 {
            return;
        }
        if self.open.len() >= MAX_CURSORS {
            if let Some(oldest) = self
                .open
                .iter()
                .min_by_key(|(_, c)| c.opened)
                .map(|(k, _)| *k)
            {
                self.forget(oldest);
            }
        }
        self.counter += 1;
        // A reused id replaces its cursor: what the old one kept is given back first.
        self.forget(id);
        let mut origin = origin;
        if origin.command.is_some() {
            if self.kept + origin.bytes > KEPT_TOTAL {
                origin.command = None;
            } else {
                self.kept += origin.bytes;
            }
        }
        self.open.insert(
            id,
            OpenCursor {
                namespace: namespace.to_string(),
                plan: plan.clone(),
                origin,
                delivered,
                opened: self.counter,
            },
        );
    }

    /// After a getMore reply: `next` is the cursor id it reports (0: exhausted), `more` the
    /// documents it carried. An exhausted cursor is forgotten.
    pub fn advanced(&mut self, id: i64, next: i64, more: u64) {
        if next == 0 {
            self.forget(id);
        } else if let Some(c) = self.open.get_mut(&id) {
            c.delivered += more;
        }
    }

    /// Forgets cursor `id`, and what it kept.
    fn forget(&mut self, id: i64) {
        if let Some(c) = self.open.remove(&id) {
            if c.origin.command.is_some() {
                self.kept -= c.origin.bytes;
            }
        }
    }

    /// This session's cursor `id`, if it is one.
    pub fn get(&self, id: i64) -> Option<&OpenCursor> {
        self.open.get(&id)
    }

    /// May this session `getMore`/`killCursors` cursor `id` on `namespace`?
    pub fn check(&self, id: i64, namespace: &str) -> Result<&OpenCursor, Refusal> {
        match self.open.get(&id) {
            Some(c) if c.namespace == namespace => Ok(c),
            Some(c) => Err(Refusal::permission(
                FOREIGN_CURSOR_RULE,
                format!("cursor {id} belongs to {}, not {namespace}", c.namespace),
            )),
            // CursorNotFound (43), as the server answers: drivers raise their cursor-not-found
            // error for it.
            None => Err(Refusal::new(
                crate::refusal::RefusalClass::CursorNotFound,
                FOREIGN_CURSOR_RULE,
                format!("cursor id {id} not found among this agent's cursors"),
            )),
        }
    }

    /// After a getMore reply: an exhausted cursor (id 0) or an error is forgotten.
    pub fn after_get_more(&mut self, id: i64, reply: &Document) {
        let open = matches!(cursor_of(reply), Some((id, _)) if id != 0);
        let exhausted = !open || super::reply::is_error(reply);
        if exhausted {
            self.forget(id);
        }
    }

    pub fn killed(&mut self, ids: &[i64]) {
        for id in ids {
            self.forget(*id);
        }
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    /// The commands cursors keep for a reload are bounded per session: past `KEPT_TOTAL` a
    /// cursor keeps none, and a cursor that ends gives its room back.
    #[test]
    fn kept_commands_share_one_bound() {
        let mut c = Cursors::default();
        let command =
            Arc::new(Command::new(doc! { "find": "orders", "$db": "shop" }, Vec::new()).unwrap());
        let origin = || Origin {
            version: 1,
            command: Some(command.clone()),
            bytes: Origin::KEPT_BYTES,
        };
        let per = KEPT_TOTAL / Origin::KEPT_BYTES;
        for id in 1..=(per as i64 + 2) {
            c.open(id, "shop.orders", &ReplyPlan::None, 0, origin());
        }
        let kept = |c: &Cursors, id| c.get(id).unwrap().origin.command.is_some();
        assert!((1..=per as i64).all(|id| kept(&c, id)));
        assert!(!kept(&c, per as i64 + 1) && !kept(&c, per as i64 + 2));
        assert_eq!(c.kept, KEPT_TOTAL);
        c.killed(&[1]);
        assert_eq!(c.kept, KEPT_TOTAL - Origin::KEPT_BYTES);
        c.open(10_000, "shop.orders", &ReplyPlan::None, 0, origin());
        assert!(kept(&c, 10_000), "room given back");
        c.advanced(10_000, 0, 0);
        // A reused id gives back what its old cursor kept before taking its own.
        c.open(3, "shop.orders", &ReplyPlan::None, 0, origin());
        assert!(kept(&c, 3));
        c.after_get_more(2, &doc! { "ok": 0.0 });
        assert_eq!(c.kept, KEPT_TOTAL - 2 * Origin::KEPT_BYTES);
    }

    #[test]
    fn only_own_cursors_and_their_plans() {
        let mut c = Cursors::default();
        let plan = ReplyPlan::Databases;
        c.opened(&doc! { "cursor": { "id": 42i64, "ns": "shop.customers", "firstBatch": [] }, "ok": 1.0 }, "shop.customers", &plan);
        c.opened(
            &doc! { "cursor": { "id": 0i64, "ns": "shop.orders", "firstBatch": [] }, "ok": 1.0 },
            "shop.orders",
            &plan,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c.check(42, "shop.customers").unwrap().plan, plan);
        assert!(c.check(42, "shop.orders").is_err());
        let e = c.check(7, "shop.customers").unwrap_err();
        assert_eq!(e.rule, FOREIGN_CURSOR_RULE);
        c.after_get_more(
            42,
            &doc! { "cursor": { "id": 42i64, "nextBatch": [] }, "ok": 1.0 },
        );
        assert!(c.check(42, "shop.customers").is_ok());
        c.after_get_more(
            42,
            &doc! { "cursor": { "id": 0i64, "nextBatch": [] }, "ok": 1.0 },
        );
        assert!(c.is_empty());
        c.opened(
            &doc! { "cursor": { "id": 9i64, "firstBatch": [] }, "ok": 1.0 },
            "shop.x",
            &plan,
        );
        c.killed(&[9]);
        assert!(c.is_empty());
    }

    #[test]
    fn bounded() {
        let mut c = Cursors::default();
        for i in 1..=(MAX_CURSORS as i64 + 5) {
            c.opened(
                &doc! { "cursor": { "id": i, "firstBatch": [] }, "ok": 1.0 },
                "a.b",
                &ReplyPlan::None,
            );
        }
        assert_eq!(c.len(), MAX_CURSORS);
        assert!(c.check(1, "a.b").is_err());
        assert!(c.check(MAX_CURSORS as i64 + 5, "a.b").is_ok());
    }
}
