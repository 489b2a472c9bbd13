//! tollgate's own namespace on pooled server connections: under transaction pooling a client's
//! protocol-level prepared statements are prepared on every server connection as `tg_` and a
//! hash of their text (`pg::statements`), a name anyone can compute offline. A statement named
//! that way by an agent — SQL `PREPARE`, `EXECUTE`, `DEALLOCATE` (also inside `EXPLAIN` or
//! `CREATE TABLE AS`), or a protocol Parse, Bind, Describe — could reach another agent's statement
//! on the shared connection, so names whose lower-case form starts with `tg_` are refused for
//! every agent, whatever the policy allows. Unquoted names are folded to lower case by the
//! parser, quoted ones are not: comparing the lower-case form refuses both `TG_x` and `"Tg_x"`.

use super::sql::{StatementInfo, StatementKind};
use crate::refusal::Refusal;

/// The prefix of the names tollgate prepares statements under on server connections.
pub const RESERVED_PREFIX: &str = "tg_";

/// The rule named when a statement names something in tollgate's namespace.
pub const RESERVED_NAME_RULE: &str = "builtin: reserved-name";

/// Whether `name` is in tollgate's namespace (ASCII case ignored).
pub fn is_reserved(name: &str) -> bool {
    name.as_bytes()
        .get(..RESERVED_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_PREFIX.as_bytes()))
}

/// The refusal of a prepared statement named `name` in tollgate's namespace.
pub fn refusal(name: &str) -> Refusal {
    Refusal::permission(
        RESERVED_NAME_RULE,
        format!(
            "prepared statement name \"{name}\" is reserved: names starting with \"{RESERVED_PREFIX}\" (in any case) are tollgate's own on shared server connections"
        ),
    )
    .with_instead(format!(
        "name prepared statements without the \"{RESERVED_PREFIX}\" prefix"
    ))
}

/// Refuses a statement that prepares, executes or deallocates a statement in tollgate's
/// namespace (directly, or wrapped by EXPLAIN / CREATE TABLE AS).
pub fn check_statement(stmt: &StatementInfo) -> Result<(), Refusal> {
    for kind in std::iter::once(&stmt.kind).chain(stmt.inner_kind.as_deref()) {
        let name = match kind {
            StatementKind::Prepare { name } | StatementKind::Execute { name } => Some(name),
            StatementKind::Deallocate { name } => name.as_ref(),
            _ => None,
        };
        if let Some(name) = name.filter(|n| is_reserved(n)) {
            return Err(refusal(name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(sql: &str) -> Option<String> {
        let analysis = crate::policy::sql::analyze(sql).expect("parses");
        analysis
            .statements
            .iter()
            .try_for_each(check_statement)
            .err()
            .map(|r| r.rule)
    }

    #[test]
    fn tollgates_names_are_refused_in_every_spelling() {
        for sql in [
            "PREPARE tg_1cba37a088ebfb64a32cf4ca18ca69ce AS SELECT 1",
            "prepare TG_x as select 1",
            "PREPARE \"Tg_x\" AS SELECT 1",
            "EXECUTE tg_1cba37a088ebfb64a32cf4ca18ca69ce",
            "execute tg_x(1, 2)",
            "EXPLAIN ANALYZE EXECUTE tg_x",
            "CREATE TABLE t AS EXECUTE tg_x",
            "DEALLOCATE tg_x",
            "DEALLOCATE PREPARE \"TG_X\"",
            "SELECT 1; EXECUTE tg_x",
        ] {
            assert_eq!(rule(sql).as_deref(), Some(RESERVED_NAME_RULE), "{sql}");
        }
    }

    #[test]
    fn other_names_pass() {
        for sql in [
            "PREPARE p AS SELECT 1",
            "PREPARE tgx AS SELECT 1",
            "PREPARE t_g AS SELECT 1",
            "EXECUTE p",
            "DEALLOCATE ALL",
            "DEALLOCATE p",
            "SELECT 'tg_x'",
            "DECLARE tg_c CURSOR FOR SELECT 1",
        ] {
            assert_eq!(rule(sql), None, "{sql}");
        }
        assert!(is_reserved("TG_"));
        assert!(!is_reserved("tg"));
        assert!(!is_reserved("é_tg_"));
    }
}
