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
    if only_clears_session_state(s) {
        return false;
    }
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

/// A statement that only takes session state back to what a server connection has when the
/// pool lends it (`RESET`, `SET x TO DEFAULT`, `DISCARD`, `DEALLOCATE`, `UNLISTEN`): on the
/// clean connection of a session that keeps nothing (not pinned) it leaves nothing either, so it
/// does not pin (`leaves_session_state` is false for it). Clients send these routinely: asyncpg's
/// pool runs `... UNLISTEN *; RESET ALL` at every release, psycopg `DEALLOCATE ALL` after a
/// failed pipeline; pinning on them had idle sessions hold the agent's whole share of the pool.
/// A session already pinned stays pinned.
pub fn only_clears_session_state(s: &StatementInfo) -> bool {
    s.inner_kind.is_none()
        && s.functions.is_empty()
        && s.set_config_calls.is_empty()
        && matches!(
            s.kind,
            StatementKind::Reset { .. }
                | StatementKind::Set {
                    value: None,
                    local: false,
                    ..
                }
                | StatementKind::Discard { .. }
                | StatementKind::Deallocate { .. }
                | StatementKind::Unlisten
        )
}

/// Settings a `SET LOCAL` may change without a statement prepared meanwhile reading anything
/// otherwise: limits and resources, which act when a statement runs, never when it is parsed.
/// Custom settings (`app.tenant_id`, a row-level-security key) are read by `current_setting`
/// when a statement runs, so they are neutral too. Any other setting may change how a text or
/// a literal is read (DateStyle, TimeZone, client_encoding, standard_conforming_strings, ...):
/// fail closed.
const READING_NEUTRAL: [&str; 9] = [
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
    "transaction_timeout",
    "work_mem",
    "maintenance_work_mem",
    "synchronous_commit",
    "application_name",
];

/// A `SET LOCAL` that may change how a statement prepared before the transaction ends reads
/// its text or literals (not `SET LOCAL TRANSACTION ...`, not a setting of `READING_NEUTRAL`,
/// not a custom `x.y` setting): it leaves nothing after the transaction, but a statement
/// prepared meanwhile keeps what it read under it (`pg::statements` shares prepared
/// statements between sessions).
pub fn sets_local_setting(s: &StatementInfo) -> bool {
    let local = |k: &StatementKind| match k {
        StatementKind::Set {
            local: true, name, ..
        } => {
            let name = name.to_ascii_lowercase();
            name != "transaction" && !name.contains('.') && !READING_NEUTRAL.contains(&&*name)
        }
        _ => false,
    };
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
            "SET LOCAL standard_conforming_strings = off",
            "SET LOCAL IntervalStyle = 'sql_standard'",
            "SET LOCAL \"DateStyle\" = 'German'",
        ] {
            assert_eq!(local(sql), (true, false), "{sql}");
        }
        for sql in [
            "SET LOCAL TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SET TRANSACTION READ ONLY",
            "SELECT 1",
            // Read when a statement runs, never when it is parsed.
            "SET LOCAL statement_timeout = '5s'",
            "SET LOCAL Lock_Timeout TO 100",
            "SET LOCAL work_mem = '64MB'",
            "SET LOCAL app.tenant_id = '42'",
            "SET LOCAL \"request.jwt.claims\" = '{}'",
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
            "PREPARE p AS SELECT 1",
            "LISTEN x",
            "CREATE TEMP TABLE t (a int)",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "SELECT set_config('x.y', '1', false)",
            "SELECT pg_advisory_lock(1)",
            "SELECT my_function()",
            "DO $$ BEGIN END $$",
            "EXPLAIN ANALYZE SELECT my_function()",
            "SET DateStyle TO 'ISO'",
        ] {
            assert!(leaves(sql), "{sql}");
        }
    }

    /// What asyncpg's pool sends at every release and psycopg after a failed pipeline: back to
    /// the connection's defaults, nothing left on a connection that was clean (a review saw
    /// idle sessions pinned by them hold the agent's whole share of the pool).
    #[test]
    fn statements_that_only_clear_state_do_not_pin() {
        for sql in [
            "RESET ALL",
            "RESET statement_timeout",
            "RESET ROLE",
            "SET statement_timeout TO DEFAULT",
            "DEALLOCATE p",
            "DEALLOCATE ALL",
            "UNLISTEN *",
            "UNLISTEN x",
            "DISCARD ALL",
            "DISCARD PLANS",
            "DISCARD SEQUENCES",
            "DISCARD TEMP",
        ] {
            let a = super::super::analyze(sql).unwrap();
            let s = &a.statements[0];
            assert!(
                only_clears_session_state(s) && !leaves_session_state(s),
                "{sql}"
            );
        }
        for sql in ["SET LOCAL DateStyle TO DEFAULT", "SELECT 1", "SET x.y = 1"] {
            let a = super::super::analyze(sql).unwrap();
            assert!(!only_clears_session_state(&a.statements[0]), "{sql}");
        }
    }
}

/// Whether `sql` is one statement PostgreSQL takes inside a failed transaction block (its
/// `IsTransactionExitStmt`: COMMIT, ROLLBACK, ROLLBACK TO SAVEPOINT, PREPARE TRANSACTION); the
/// server refuses every other one there with 25P02. A text that does not parse is not one.
pub fn exits_failed_transaction(sql: &str) -> bool {
    use pg_query::protobuf::{node::Node as N, TransactionStmtKind as K};
    let Ok(parsed) = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT) else {
        return false;
    };
    let [stmt] = parsed.protobuf.stmts.as_slice() else {
        return false;
    };
    match stmt.stmt.as_ref().and_then(|s| s.node.as_ref()) {
        Some(N::TransactionStmt(t)) => matches!(
            K::try_from(t.kind),
            Ok(K::TransStmtCommit
                | K::TransStmtRollback
                | K::TransStmtRollbackTo
                | K::TransStmtPrepare)
        ),
        _ => false,
    }
}

/// Whether `sql` is one plain ROLLBACK (or ABORT): it ends a transaction and grants nothing, so
/// an agent whose policy went away mid-transaction may still send it (a review: its ROLLBACK
/// was refused, and the transaction held a pooled server connection until the client left).
pub fn only_rolls_back(sql: &str) -> bool {
    use pg_query::protobuf::{node::Node as N, TransactionStmtKind as K};
    let Ok(parsed) = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT) else {
        return false;
    };
    let [stmt] = parsed.protobuf.stmts.as_slice() else {
        return false;
    };
    matches!(
        stmt.stmt.as_ref().and_then(|s| s.node.as_ref()),
        Some(N::TransactionStmt(t)) if K::try_from(t.kind) == Ok(K::TransStmtRollback)
    )
}

#[cfg(test)]
mod exit_tests {
    use super::exits_failed_transaction;

    #[test]
    fn only_a_plain_rollback_rolls_back() {
        use super::only_rolls_back;
        for sql in ["ROLLBACK", "abort", "rollback work", "/* c */ ROLLBACK;"] {
            assert!(only_rolls_back(sql), "{sql}");
        }
        for sql in [
            "COMMIT",
            "ROLLBACK TO SAVEPOINT s",
            "ROLLBACK PREPARED 'x'",
            "ROLLBACK; DELETE FROM t",
            "ROLLBACK AND CHAIN; SELECT 1",
            "SELECT 1",
        ] {
            assert!(!only_rolls_back(sql), "{sql}");
        }
    }

    #[test]
    fn only_the_statements_postgresql_takes_in_a_failed_block_exit_it() {
        for sql in [
            "COMMIT",
            "end",
            "ROLLBACK",
            "abort",
            "/* c */ ROLLBACK TO SAVEPOINT s",
            "rollback to s",
            "PREPARE TRANSACTION 'x'",
        ] {
            assert!(exits_failed_transaction(sql), "{sql}");
        }
        for sql in [
            "SELECT 1",
            "BEGIN",
            "SAVEPOINT s",
            "RELEASE s",
            "COMMIT PREPARED 'x'",
            "ROLLBACK PREPARED 'x'",
            "ROLLBACK; SELECT 1",
            "ROLLBACK garbage (",
            "",
        ] {
            assert!(!exits_failed_transaction(sql), "{sql}");
        }
    }
}
