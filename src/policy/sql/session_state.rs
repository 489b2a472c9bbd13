//! Whether a statement can leave state in its server session beyond its transaction: what
//! decides, under transaction pooling, that a session must keep its server connection (and
//! that the connection is reset before anyone else uses it). Fails closed: anything not known
//! to be transaction-scoped counts as leaving state.

use super::{is_safe_builtin_function, StatementInfo, StatementKind};

/// Built-ins whose effects end with the transaction, though the policy may refuse them; and the
/// backend signals, which leave nothing in the session (a terminated connection is gone, a
/// cancel ends with its statement).
const TRANSACTION_SCOPED: [&str; 6] = [
    "pg_advisory_xact_lock",
    "pg_advisory_xact_lock_shared",
    "pg_try_advisory_xact_lock",
    "pg_try_advisory_xact_lock_shared",
    "pg_cancel_backend",
    "pg_terminate_backend",
];

pub fn leaves_session_state(s: &StatementInfo) -> bool {
    let kind_leaves = |k: &StatementKind| match k {
        StatementKind::Select
        | StatementKind::Insert
        | StatementKind::Update
        | StatementKind::Delete
        | StatementKind::Merge
        | StatementKind::Truncate
        | StatementKind::Copy { .. }
        | StatementKind::Transaction
        | StatementKind::Show { .. }
        | StatementKind::FetchOrMove
        | StatementKind::ClosePortal
        | StatementKind::Notify { .. }
        | StatementKind::Lock
        | StatementKind::Explain { .. } => false,
        // SET LOCAL and SET TRANSACTION end with the transaction.
        StatementKind::Set { local, name, .. } => !*local && name != "transaction",
        StatementKind::DeclareCursor { hold, .. } => *hold,
        // EXECUTE needs its PREPARE on the same connection: PREPARE already kept it.
        StatementKind::Execute { .. } => false,
        StatementKind::Reset { .. }
        | StatementKind::Discard { .. }
        | StatementKind::Prepare { .. }
        | StatementKind::Deallocate { .. }
        | StatementKind::Listen { .. }
        | StatementKind::Unlisten
        | StatementKind::Ddl
        | StatementKind::Dcl
        | StatementKind::Do
        | StatementKind::Call
        | StatementKind::Maintenance
        | StatementKind::AlterSystem
        | StatementKind::LoadLibrary
        | StatementKind::Other(_) => true,
    };
    if kind_leaves(&s.kind) || s.inner_kind.as_deref().is_some_and(kind_leaves) {
        return true;
    }
    // Functions outside the safe built-ins can do anything (a PL/pgSQL `SET`, say).
    let builtin = |f: &super::FunctionRef| matches!(f.schema.as_deref(), None | Some("pg_catalog"));
    !s.set_config_calls.is_empty()
        || s.functions.iter().any(|f| {
            let name = f.name.as_str();
            if builtin(f) && TRANSACTION_SCOPED.contains(&name) {
                return false;
            }
            // (nextval and setval leave sequence state, but nothing can read it under transaction
            // pooling: currval and lastval are refused there.)
            let sequence_writer = builtin(f) && matches!(name, "nextval" | "setval");
            !(is_safe_builtin_function(f) || sequence_writer)
        })
}

/// A `SET LOCAL` of a setting (not `SET LOCAL TRANSACTION ...`, which changes no reading):
/// it leaves nothing after the transaction, but a statement prepared before then keeps what it
/// read under it (`pg::statements` shares prepared statements between sessions).
pub fn sets_local_setting(s: &StatementInfo) -> bool {
    let local = |k: &StatementKind| matches!(k, StatementKind::Set { local: true, name, .. } if name != "transaction");
    local(&s.kind) || s.inner_kind.as_deref().is_some_and(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_local_of_a_setting_resets_the_connection_without_pinning() {
        let local = |sql: &str| {
            let a = super::super::analyze(sql).unwrap();
            let s = &a.statements[0];
            (sets_local_setting(s), leaves_session_state(s))
        };
        for sql in [
            "SET LOCAL DateStyle = 'SQL, DMY'",
            "SET LOCAL TimeZone TO 'UTC'",
            "set local client_encoding = 'LATIN1'",
        ] {
            assert_eq!(local(sql), (true, false), "{sql}");
        }
        for sql in [
            "SET LOCAL TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SET TRANSACTION READ ONLY",
            "SELECT 1",
        ] {
            assert_eq!(local(sql), (false, false), "{sql}");
        }
        assert_eq!(local("SET DateStyle = 'SQL, DMY'"), (false, true));
    }

    fn leaves(sql: &str) -> bool {
        super::super::analyze(sql)
            .unwrap()
            .statements
            .iter()
            .any(leaves_session_state)
    }

    #[test]
    fn transaction_scoped_statements_leave_nothing() {
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1",
            "BEGIN",
            "UPDATE t SET a = 1",
            "INSERT INTO t VALUES (1)",
            "COMMIT",
            "SET LOCAL statement_timeout = 10",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "DECLARE c CURSOR FOR SELECT 1",
            "SELECT now(), lower('A')",
            "SELECT pg_advisory_xact_lock(1)",
            "SELECT nextval('s')",
            "NOTIFY x",
            "SELECT pg_cancel_backend(pg_backend_pid())",
            "SELECT pg_terminate_backend(pg_backend_pid())",
        ] {
            assert!(!leaves(sql), "{sql}");
        }
    }

    #[test]
    fn session_state_is_recognised() {
        for sql in [
            "SET statement_timeout = 10",
            "SET search_path = x",
            "RESET ALL",
            "PREPARE p AS SELECT 1",
            "DEALLOCATE p",
            "LISTEN x",
            "UNLISTEN *",
            "CREATE TEMP TABLE t (a int)",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "SELECT set_config('x.y', '1', false)",
            "SELECT pg_advisory_lock(1)",
            "SELECT my_function()",
            "DISCARD ALL",
            "DO $$ BEGIN END $$",
            "EXPLAIN ANALYZE SELECT my_function()",
        ] {
            assert!(leaves(sql), "{sql}");
        }
    }
}
