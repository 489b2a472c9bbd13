//! What a SQL string does to SQL-level cursors, statement by statement: DECLARE (WITH HOLD or
//! not), FETCH, MOVE, CLOSE, DISCARD ALL. The PostgreSQL front end uses it to count `max_rows`
//! per cursor across FETCHes, which are separate statements. Pure; parses only texts that
//! mention a cursor keyword.

use pg_query::protobuf::node::Node as N;

use super::runner;

/// `CURSOR_OPT_HOLD` in PostgreSQL's parsenodes.h.
const CURSOR_OPT_HOLD: i32 = 0x0020;

/// One statement's effect on a cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CursorUse {
    /// `DECLARE name ... CURSOR [WITH HOLD] FOR ...`: a WITH HOLD cursor outlives its transaction.
    Declare { name: String, hold: bool },
    /// `FETCH ... FROM name`: the rows it returns count towards the cursor's limit.
    Fetch(String),
    /// `MOVE ... IN name`: returns no rows.
    Move(String),
    /// `CLOSE name`, or `CLOSE ALL` / `DISCARD ALL` (`None`).
    Close(Option<String>),
}

/// The words without which a text touches no cursor.
pub const WORDS: [&str; 5] = ["fetch", "move", "declare", "close", "discard"];

/// Whether `sql` may touch a cursor (one of the keywords appears, in any case).
pub fn may_use_cursors(sql: &str) -> bool {
    static SCREEN: super::screen::Screen = super::screen::Screen::new(&WORDS);
    SCREEN.matches(sql)
}

/// One entry per statement of `sql` (`None` for statements that touch no cursor); empty when
/// no statement does, or when `sql` does not parse (the server then refuses it too).
pub fn cursor_uses(sql: &str) -> Vec<Option<CursorUse>> {
    if !may_use_cursors(sql) {
        return Vec::new();
    }
    cursor_uses_parsed(sql)
}

/// [`cursor_uses`] for a text the caller already screened for [`WORDS`].
pub fn cursor_uses_parsed(sql: &str) -> Vec<Option<CursorUse>> {
    let owned = sql.to_owned();
    runner::run_with_large_stack(move || uses_here(&owned)).unwrap_or_default()
}

fn uses_here(sql: &str) -> Vec<Option<CursorUse>> {
    let Ok(parsed) = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT) else {
        return Vec::new();
    };
    let uses: Vec<Option<CursorUse>> = parsed
        .protobuf
        .stmts
        .iter()
        .map(
            |raw| match raw.stmt.as_ref().and_then(|s| s.node.as_ref()) {
                Some(N::DeclareCursorStmt(d)) => Some(CursorUse::Declare {
                    name: d.portalname.clone(),
                    hold: d.options & CURSOR_OPT_HOLD != 0,
                }),
                Some(N::FetchStmt(f)) if f.ismove => Some(CursorUse::Move(f.portalname.clone())),
                Some(N::FetchStmt(f)) => Some(CursorUse::Fetch(f.portalname.clone())),
                Some(N::ClosePortalStmt(c)) => Some(CursorUse::Close(
                    (!c.portalname.is_empty()).then(|| c.portalname.clone()),
                )),
                // Only DISCARD ALL closes cursors (PLANS, SEQUENCES, TEMP leave them open:
                // their rows keep counting towards the row limit).
                Some(N::DiscardStmt(d))
                    if d.target() == pg_query::protobuf::DiscardMode::DiscardAll =>
                {
                    Some(CursorUse::Close(None))
                }
                _ => None,
            },
        )
        .collect();
    if uses.iter().all(Option::is_none) {
        return Vec::new();
    }
    uses
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_statements_are_told_apart() {
        assert!(cursor_uses("SELECT 1").is_empty());
        assert!(cursor_uses("SELECT 'fetch'").is_empty());
        assert_eq!(
            cursor_uses(
                "DECLARE c CURSOR WITH HOLD FOR SELECT 1; FETCH 800 FROM c; MOVE 5 IN \"C\""
            ),
            vec![
                Some(CursorUse::Declare {
                    name: "c".into(),
                    hold: true
                }),
                Some(CursorUse::Fetch("c".into())),
                Some(CursorUse::Move("C".into())),
            ]
        );
        assert_eq!(
            cursor_uses("declare x binary cursor for select 1"),
            vec![Some(CursorUse::Declare {
                name: "x".into(),
                hold: false
            })]
        );
        assert_eq!(
            cursor_uses("SELECT 1; CLOSE ALL; DISCARD ALL"),
            vec![
                None,
                Some(CursorUse::Close(None)),
                Some(CursorUse::Close(None))
            ]
        );
        assert_eq!(
            cursor_uses("FETCH FORWARD 10 FROM \"my cursor\""),
            vec![Some(CursorUse::Fetch("my cursor".into()))]
        );
        assert!(cursor_uses("FETCH garbage (").is_empty());
        // DISCARD PLANS/SEQUENCES/TEMP close no cursor: a cursor's rows keep counting.
        assert_eq!(
            cursor_uses("DISCARD PLANS; DISCARD SEQUENCES; DISCARD TEMP"),
            Vec::<Option<CursorUse>>::new()
        );
    }
}
