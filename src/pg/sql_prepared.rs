//! A session's SQL-level prepared statements (`PREPARE name AS ...`), which `EXECUTE` is checked
//! against. Names are keyed as the server keys them (`name_map::server_key`): a protocol-level
//! name 64 bytes long is the SQL name of its first 63. A name becomes the session's only when
//! the server confirms its PREPARE (CommandComplete `PREPARE`): a PREPARE the server refused
//! (the name exists already on a shared connection, the body fails) leaves nothing behind, so no
//! EXECUTE can reach a statement tollgate did not check. Until the answer comes the name is "in flight": taken (a second
//! PREPARE of it is refused, as the server would), but not yet executable.
//!
//! The client half records each forwarded PREPARE ([`SqlPrepared::sent`]) and gives the reply
//! half a ticket ([`PrepareTickets`]) in the reply's queue entry; the reply half confirms the
//! ticket at the PREPARE's CommandComplete, and a ticket that goes without one (an error, a
//! skipped statement, the session's end) reports a failure when it is dropped. The reports wait
//! in [`PrepareReports`] until the client half next looks ([`SqlPrepared::settle`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use super::name_map::server_key;

use super::statement::Checked;
use crate::policy::SessionFacts;

/// What the reply half learned about forwarded PREPAREs: (number, confirmed by the server).
#[derive(Debug, Clone, Default)]
pub struct PrepareReports(Arc<Mutex<Vec<(u64, bool)>>>);

impl PrepareReports {
    fn report(&self, seq: u64, confirmed: bool) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((seq, confirmed));
    }

    fn take(&self) -> Vec<(u64, bool)> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The PREPAREs of one forwarded Query or Execute, in statement order (the server answers them
/// in that order, and stops at the first error). Each is reported exactly once.
#[derive(Debug, Default)]
pub struct PrepareTickets {
    seqs: VecDeque<u64>,
    reports: Option<PrepareReports>,
}

impl PrepareTickets {
    /// The server answered the next PREPARE with CommandComplete `PREPARE`.
    pub fn confirm_next(&mut self) {
        if let (Some(seq), Some(reports)) = (self.seqs.pop_front(), &self.reports) {
            reports.report(seq, true);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }
}

impl Drop for PrepareTickets {
    /// PREPAREs never confirmed did not happen (an error stopped them, or the session ended).
    fn drop(&mut self) {
        if let Some(reports) = &self.reports {
            for seq in self.seqs.drain(..) {
                reports.report(seq, false);
            }
        }
    }
}

/// The client half's record of the session's SQL-prepared statements.
#[derive(Debug, Default)]
pub struct SqlPrepared {
    /// Confirmed by the server: name → the PREPARE as checked (re-judged after a reload).
    confirmed: HashMap<String, Arc<Checked>>,
    /// Forwarded, not answered yet: name → (its number, the PREPARE as checked).
    in_flight: HashMap<String, (u64, Arc<Checked>)>,
    sent: u64,
    reports: PrepareReports,
}

impl SqlPrepared {
    /// A record whose reply half reports through `reports` (the session's `Pending` holds it).
    pub fn new(reports: PrepareReports) -> SqlPrepared {
        SqlPrepared {
            reports,
            ..SqlPrepared::default()
        }
    }

    /// The PREPARE of `name` confirmed by the server, if it was.
    pub fn get(&self, name: &str) -> Option<&Arc<Checked>> {
        self.confirmed.get(&*server_key(name))
    }

    /// Whether `name` is the session's, confirmed or in flight.
    pub fn has(&self, name: &str) -> bool {
        let name = server_key(name);
        self.confirmed.contains_key(&*name) || self.in_flight.contains_key(&*name)
    }

    /// Whether a PREPARE is waiting for the server's answer.
    pub fn in_flight(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// A PREPARE of `name` is being forwarded: its ticket goes into `tickets`.
    pub fn sent(&mut self, name: &str, checked: Arc<Checked>, tickets: &mut PrepareTickets) {
        self.sent += 1;
        self.in_flight
            .insert(server_key(name).into_owned(), (self.sent, checked));
        tickets.seqs.push_back(self.sent);
        tickets.reports = Some(self.reports.clone());
    }

    /// Applies what the reply half reported: confirmed names become executable (`facts`).
    pub fn settle(&mut self, facts: &mut SessionFacts) {
        if self.in_flight.is_empty() {
            return;
        }
        for (seq, confirmed) in self.reports.take() {
            let Some(name) = self
                .in_flight
                .iter()
                .find_map(|(n, (s, _))| (*s == seq).then(|| n.clone()))
            else {
                continue; // deallocated while in flight: the server dropped it after
            };
            let (_, checked) = self.in_flight.remove(&name).expect("found above");
            if confirmed {
                facts.sql_prepared.insert(name.clone());
                self.confirmed.insert(name, checked);
            }
        }
    }

    /// `DEALLOCATE name` was forwarded (or a protocol Close of it).
    pub fn remove(&mut self, name: &str, facts: &mut SessionFacts) {
        let name = server_key(name);
        self.confirmed.remove(&*name);
        self.in_flight.remove(&*name);
        facts.sql_prepared.remove(&*name);
    }

    /// `DEALLOCATE ALL` / `DISCARD ALL` was forwarded.
    pub fn clear(&mut self, facts: &mut SessionFacts) {
        self.confirmed.clear();
        self.in_flight.clear();
        facts.sql_prepared.clear();
    }
}

/// The first name a statement's effects PREPARE that is taken: one the session has (`has`)
/// unless the statement deallocates it first, or one it prepares twice (in statement order).
pub fn duplicate(effects: &[crate::policy::Effect], has: impl Fn(&str) -> bool) -> Option<&str> {
    use crate::policy::Effect;
    let mut added: HashSet<&str> = HashSet::new();
    let mut dropped: HashSet<&str> = HashSet::new();
    let mut cleared = false;
    for e in effects {
        match e {
            Effect::Prepared(n) => {
                let earlier = !cleared && !dropped.contains(n.as_str()) && has(n);
                if earlier || !added.insert(n) {
                    return Some(n);
                }
            }
            Effect::Deallocated(Some(n)) => {
                added.remove(n.as_str());
                dropped.insert(n);
            }
            Effect::Deallocated(None) => {
                added.clear();
                cleared = true;
            }
            Effect::Executes(_) | Effect::Signals(_) | Effect::SettingParams(_) => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Effect, Verdict};

    fn checked(text: &str) -> Arc<Checked> {
        Arc::new(Checked {
            text: text.into(),
            verdict: Arc::new(Verdict::blocked(crate::refusal::Refusal::permission(
                "t", "t",
            ))),
            version: 0,
            server: None,
            cursor: Default::default(),
            parse_seq: 0,
        })
    }

    /// The server keeps names to their first 63 bytes, SQL and protocol ones in one table: a
    /// protocol Bind of a 64-byte name is the SQL statement of its first 63 (a review found it
    /// judged as unknown, and so not re-judged after a reload).
    #[test]
    fn names_are_the_servers_first_63_bytes() {
        let mut p = SqlPrepared::new(PrepareReports::default());
        let mut facts = SessionFacts::default();
        let mut ok = PrepareTickets::default();
        let s63 = "s".repeat(63);
        p.sent(&s63, checked("PREPARE s AS SELECT 1"), &mut ok);
        ok.confirm_next();
        drop(ok);
        p.settle(&mut facts);
        assert!(p.get(&format!("{s63}X")).is_some() && p.has(&format!("{s63}Y")));
        p.remove(&format!("{s63}Z"), &mut facts);
        assert!(!p.has(&s63) && facts.sql_prepared.is_empty());
    }

    #[test]
    fn a_name_is_executable_only_once_the_server_confirmed_its_prepare() {
        let mut p = SqlPrepared::new(PrepareReports::default());
        let mut facts = SessionFacts::default();
        let mut ok = PrepareTickets::default();
        let mut refused = PrepareTickets::default();
        p.sent("a", checked("PREPARE a AS SELECT 1"), &mut ok);
        p.sent("b", checked("PREPARE b AS SELECT 1"), &mut refused);
        assert!(p.has("a") && p.has("b") && p.in_flight());
        p.settle(&mut facts);
        assert!(p.get("a").is_none() && facts.sql_prepared.is_empty());
        ok.confirm_next();
        drop(ok);
        drop(refused); // the server answered b's PREPARE with an error
        p.settle(&mut facts);
        assert!(p.get("a").is_some() && facts.sql_prepared.contains("a"));
        assert!(!p.has("b") && !facts.sql_prepared.contains("b"));
        assert!(!p.in_flight());
    }

    #[test]
    fn a_name_deallocated_while_in_flight_stays_gone() {
        let mut p = SqlPrepared::new(PrepareReports::default());
        let mut facts = SessionFacts::default();
        let mut t = PrepareTickets::default();
        p.sent("a", checked("PREPARE a AS SELECT 1"), &mut t);
        p.remove("a", &mut facts);
        t.confirm_next();
        p.settle(&mut facts);
        assert!(!p.has("a") && facts.sql_prepared.is_empty());
        // Prepared again after: the second PREPARE's answer counts, not the first's.
        let mut first = PrepareTickets::default();
        let mut second = PrepareTickets::default();
        p.sent("c", checked("PREPARE c AS SELECT 1"), &mut first);
        p.clear(&mut facts);
        p.sent("c", checked("PREPARE c AS SELECT 2"), &mut second);
        first.confirm_next();
        p.settle(&mut facts);
        assert!(p.get("c").is_none() && p.has("c"), "still in flight");
        second.confirm_next();
        p.settle(&mut facts);
        assert_eq!(p.get("c").map(|c| &*c.text), Some("PREPARE c AS SELECT 2"));
    }

    #[test]
    fn duplicates_follow_statement_order() {
        let prep = |n: &str| Effect::Prepared(n.into());
        let dealloc = |n: &str| Effect::Deallocated(Some(n.into()));
        let has_a = |n: &str| n == "a";
        let none = |_: &str| false;
        assert_eq!(duplicate(&[prep("a")], has_a), Some("a"));
        assert_eq!(duplicate(&[prep("a"), prep("a")], none), Some("a"));
        assert_eq!(duplicate(&[dealloc("a"), prep("a")], has_a), None);
        assert_eq!(
            duplicate(&[dealloc("a"), prep("a"), prep("a")], has_a),
            Some("a")
        );
        assert_eq!(
            duplicate(&[Effect::Deallocated(None), prep("a")], has_a),
            None
        );
        assert_eq!(duplicate(&[prep("b")], has_a), None);
    }
}
