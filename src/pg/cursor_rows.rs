//! `max_rows` per portal: the rows each portal has returned so far, kept by the reply side. SQL
//! cursors are portals: a cursor DECLAREd in SQL can be read by protocol Execute, and a portal
//! Bound through the protocol by SQL FETCH, so there is one count per portal name, whichever way
//! it is read. A SQL cursor's count starts at DECLARE, grows with every row a FETCH or an
//! Execute returns (MOVE returns none), and ends at CLOSE, DISCARD ALL, or the end of its
//! transaction (a WITH HOLD cursor outlives it); a protocol portal's starts at its Bind.

use super::name_map::NameMap;
use crate::policy::sql::cursors::CursorUse;

/// The cursor use of each statement of one simple Query, and which statement is running.
#[derive(Debug, Default)]
pub struct StatementCursors {
    uses: Vec<Option<CursorUse>>,
    next: usize,
}

impl StatementCursors {
    pub fn new(uses: Vec<Option<CursorUse>>) -> StatementCursors {
        StatementCursors { uses, next: 0 }
    }

    /// The use of the statement whose results are arriving.
    pub fn current(&self) -> Option<&CursorUse> {
        self.uses.get(self.next).and_then(Option::as_ref)
    }

    /// The statement ended (CommandComplete, EmptyQueryResponse): the next one runs.
    pub fn advance(&mut self) {
        self.next += 1;
    }
}

#[derive(Debug, Default)]
pub struct PortalRows {
    /// Portal name → (rows returned so far, outlives its transaction).
    open: NameMap<(u64, bool)>,
}

impl PortalRows {
    /// Rows portal `name` has returned so far, if tollgate counted any.
    pub fn rows(&self, name: &str) -> Option<u64> {
        self.open.get(name).map(|(n, _)| *n)
    }

    /// Rows a FETCH from the cursor `u` names starts counting from (0 for anything else).
    pub fn before(&self, u: Option<&CursorUse>) -> u64 {
        match u {
            Some(CursorUse::Fetch(name)) => self.rows(name).unwrap_or(0),
            _ => 0,
        }
    }

    /// A Bind (re)created protocol portal `name`: its count starts again.
    pub fn bound(&mut self, name: &str) {
        self.open.remove(name);
    }

    /// Portal `name` was read (Execute) up to `counted` rows in all: later reads, by Execute or
    /// FETCH, count on from there.
    pub fn read(&mut self, name: &str, counted: u64) {
        match self.open.get_mut(name) {
            Some((n, _)) => *n = (*n).max(counted),
            None => {
                self.open.insert(name.to_string(), (counted, false));
            }
        }
    }

    /// Statement `u` completed; `rows` is the count its result reached (including what the
    /// cursor had returned before, as [`PortalRows::before`] gave it).
    pub fn completed(&mut self, u: Option<&CursorUse>, rows: u64) {
        match u {
            Some(CursorUse::Declare { name, hold }) => {
                self.open.insert(name.clone(), (0, *hold));
            }
            Some(CursorUse::Fetch(name)) => match self.open.get_mut(name) {
                Some((n, _)) => *n = (*n).max(rows),
                // Declared where tollgate did not see it (a function): count from here.
                None => {
                    self.open.insert(name.clone(), (rows, true));
                }
            },
            Some(CursorUse::Close(Some(name))) => {
                self.open.remove(name);
            }
            Some(CursorUse::Close(None)) => self.open.clear(),
            Some(CursorUse::Move(_)) | None => {}
        }
    }

    /// The transaction ended (ReadyForQuery idle): portals and cursors without HOLD are gone.
    pub fn transaction_ended(&mut self) {
        self.open.retain(|(_, hold)| *hold);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetch(name: &str) -> CursorUse {
        CursorUse::Fetch(name.into())
    }

    #[test]
    fn counts_follow_declare_fetch_close_and_transactions() {
        let mut c = PortalRows::default();
        let declare = CursorUse::Declare {
            name: "c".into(),
            hold: false,
        };
        c.completed(Some(&declare), 0);
        assert_eq!(c.before(Some(&fetch("c"))), 0);
        c.completed(Some(&fetch("c")), 800);
        assert_eq!(c.before(Some(&fetch("c"))), 800);
        c.completed(Some(&CursorUse::Move("c".into())), 0);
        assert_eq!(c.before(Some(&fetch("c"))), 800);
        c.completed(Some(&fetch("c")), 1001);
        assert_eq!(c.before(Some(&fetch("c"))), 1001);
        c.transaction_ended();
        assert_eq!(c.before(Some(&fetch("c"))), 0, "gone with its transaction");
        let held = CursorUse::Declare {
            name: "h".into(),
            hold: true,
        };
        c.completed(Some(&held), 0);
        c.completed(Some(&fetch("h")), 600);
        c.transaction_ended();
        assert_eq!(c.before(Some(&fetch("h"))), 600, "WITH HOLD outlives it");
        c.completed(Some(&CursorUse::Close(None)), 0);
        assert_eq!(c.before(Some(&fetch("h"))), 0);
        // A protocol portal and a SQL cursor share one count per name.
        c.read("p1", 1001);
        assert_eq!(c.before(Some(&fetch("p1"))), 1001, "FETCH after Execute");
        c.completed(Some(&fetch("p1")), 1500);
        assert_eq!(c.rows("p1"), Some(1500));
        c.bound("p1");
        assert_eq!(c.rows("p1"), None, "a new Bind starts again");
        c.completed(Some(&declare), 0);
        c.completed(Some(&fetch("c")), 1000);
        c.read("c", 1001);
        assert_eq!(c.rows("c"), Some(1001), "Execute after FETCH");
        c.read("c", 5);
        assert_eq!(c.rows("c"), Some(1001), "never counts down");
        c.transaction_ended();
        assert_eq!(c.rows("c"), None);
        let mut s = StatementCursors::new(vec![None, Some(fetch("h"))]);
        assert_eq!(s.current(), None);
        s.advance();
        assert_eq!(s.current(), Some(&fetch("h")));
    }
}
