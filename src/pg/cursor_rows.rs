//! `max_rows` per SQL cursor: the rows each cursor has returned so far across its FETCHes (each
//! a statement of its own), kept by the reply side. A cursor's count starts at DECLARE, grows with
//! every row a FETCH returns (MOVE returns none), and ends at CLOSE, DISCARD ALL, or the end of
//! its transaction; a WITH HOLD cursor outlives its transaction.

use std::collections::HashMap;

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
pub struct CursorRows {
    /// Cursor name → (rows returned so far, WITH HOLD).
    open: HashMap<String, (u64, bool)>,
}

impl CursorRows {
    /// Rows a FETCH from the cursor `u` names starts counting from (0 for anything else).
    pub fn before(&self, u: Option<&CursorUse>) -> u64 {
        match u {
            Some(CursorUse::Fetch(name)) => self.open.get(name).map_or(0, |(n, _)| *n),
            _ => 0,
        }
    }

    /// Statement `u` completed; `rows` is the count its result reached (including what the
    /// cursor had returned before, as [`CursorRows::before`] gave it).
    pub fn completed(&mut self, u: Option<&CursorUse>, rows: u64) {
        match u {
            Some(CursorUse::Declare { name, hold }) => {
                self.open.insert(name.clone(), (0, *hold));
            }
            Some(CursorUse::Fetch(name)) => {
                if let Some((n, _)) = self.open.get_mut(name) {
                    *n = (*n).max(rows);
                } else {
                    // Declared where tollgate did not see it (a function): count from here.
                    self.open.insert(name.clone(), (rows, true));
                }
            }
            Some(CursorUse::Close(Some(name))) => {
                self.open.remove(name);
            }
            Some(CursorUse::Close(None)) => self.open.clear(),
            Some(CursorUse::Move(_)) | None => {}
        }
    }

    /// The transaction ended (ReadyForQuery idle): cursors without HOLD are gone.
    pub fn transaction_ended(&mut self) {
        self.open.retain(|_, (_, hold)| *hold);
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
        let mut c = CursorRows::default();
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
        let mut s = StatementCursors::new(vec![None, Some(fetch("h"))]);
        assert_eq!(s.current(), None);
        s.advance();
        assert_eq!(s.current(), Some(&fetch("h")));
    }
}
