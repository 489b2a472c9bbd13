//! Which server processes an agent may signal (`pg_cancel_backend`, `pg_terminate_backend`),
//! and `pg_backend_pid()` under transaction pooling. Built in, for every agent (passthrough
//! included): the backend running the agent's own statement (`pg_backend_pid()`), or the backend
//! of one of the agent's own sessions on the same upstream that has one (session pooling, where
//! the process id the client was shown is its server's); never another agent's, never a pooled
//! connection's, never a process tollgate cannot name. Pure: whose session shows a process id
//! comes in as data from the front end (docs/pooling.md, "Backend identity").

use std::sync::Arc;

use super::decide::SessionFacts;
use super::sql::{SignalTarget, StatementInfo, StatementKind};
use crate::refusal::{Refusal, RefusalClass};

/// The rule named when a signal names a process that is not the agent's own.
pub const OWN_BACKEND_RULE: &str = "builtin: own-backend";
/// The rule named for what transaction pooling cannot offer (shared with currval/lastval).
pub const TRANSACTION_POOLING_RULE: &str = "builtin: transaction-pooling";

const WHAT_WORKS: &str = "pg_cancel_backend(pg_backend_pid()) and pg_terminate_backend(pg_backend_pid()) act on the backend running the statement; the process id a session-pooled session of yours was shown (BackendKeyData) names its backend";

/// Whose session shows a process id (BackendKeyData) on the PostgreSQL door.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendOwner {
    pub agent: Arc<str>,
    pub upstream: Arc<str>,
    /// The id is the session's server process (session pooling); otherwise it is tollgate's
    /// own, for a transaction-pooled session whose statements run on shared connections.
    pub server_process: bool,
}

/// A statement's signals and `pg_backend_pid()` reads, judged with the rest of it. Process ids
/// given as literals or parameters pass here only for a front end that checks them before
/// forwarding ([`check_target`]); they are the verdict's `Effect::Signals`.
pub fn check_statement(stmt: &StatementInfo, facts: &SessionFacts) -> Result<(), Refusal> {
    if facts.pooled && stmt.reads_backend_pid {
        return Err(Refusal::new(
            RefusalClass::Unsupported,
            TRANSACTION_POOLING_RULE,
            "pg_backend_pid() names the server connection running this transaction, which transaction pooling lends to other sessions between transactions; the process id this session was shown (BackendKeyData, notifications) is tollgate's own",
        )
        .with_instead(format!(
            "{WHAT_WORKS}; a policy may ask for pool_mode = \"session\" to be shown the server's process id"
        )));
    }
    if stmt.signals.is_empty() {
        return Ok(());
    }
    let kinds = std::iter::once(&stmt.kind).chain(stmt.inner_kind.as_deref());
    let mut runs_now = true;
    let mut prepared = false;
    for kind in kinds {
        match kind {
            StatementKind::Select
            | StatementKind::Insert
            | StatementKind::Update
            | StatementKind::Delete
            | StatementKind::Merge
            | StatementKind::Copy { .. }
            | StatementKind::Explain { .. }
            | StatementKind::DeclareCursor { .. }
            | StatementKind::Call => {}
            StatementKind::Prepare { .. } => prepared = true,
            _ => runs_now = false,
        }
    }
    for target in &stmt.signals {
        match target {
            SignalTarget::Unknown => {
                return Err(refuse(
                    "tollgate cannot tell which server process this signals: pg_cancel_backend and pg_terminate_backend may name only pg_backend_pid(), a literal process id or a parameter, in a statement tollgate reads (not a DO block, a function body, another object or a computed value)",
                ))
            }
            _ if !runs_now => {
                return Err(refuse(
                    "a backend signal stored in an object (a view, rule, default or function) would signal the backend of whichever session uses it",
                ))
            }
            SignalTarget::OwnBackend => {}
            SignalTarget::Pid(_) | SignalTarget::Param(_) if prepared => {
                return Err(refuse(
                    "the process id of a signal in a PREPAREd statement would be checked when it is prepared, not when EXECUTE runs it: send the statement itself",
                ))
            }
            SignalTarget::Pid(_) | SignalTarget::Param(_) if !facts.checks_signal_targets => {
                return Err(refuse(
                    "a process id given as a value can only be checked on a PostgreSQL wire session",
                ))
            }
            SignalTarget::Pid(_) | SignalTarget::Param(_) => {}
        }
    }
    Ok(())
}

/// The process ids of a statement's signals that must be checked before it is forwarded, once
/// their values are known (literals now, parameters at Bind).
pub fn deferred(stmt: &StatementInfo) -> impl Iterator<Item = SignalTarget> + '_ {
    stmt.signals
        .iter()
        .copied()
        .filter(|t| matches!(t, SignalTarget::Pid(_) | SignalTarget::Param(_)))
}

/// One signal of `agent`'s session on `upstream` whose process id is now known: `pid` (`None`:
/// a parameter that is not an integer tollgate can read), `owner`: whose session shows that
/// process id on the PostgreSQL door, if any.
pub fn check_target(
    agent: &str,
    upstream: &str,
    pid: Option<i32>,
    owner: Option<&BackendOwner>,
) -> Result<(), Refusal> {
    let Some(pid) = pid else {
        return Err(refuse(
            "the process id parameter is not an integer tollgate can read",
        ));
    };
    match owner {
        Some(o) if &*o.agent == agent && &*o.upstream == upstream && o.server_process => Ok(()),
        Some(o) if &*o.agent == agent && &*o.upstream == upstream => Err(Refusal::new(
            RefusalClass::Unsupported,
            TRANSACTION_POOLING_RULE,
            format!("process id {pid} is tollgate's own for a transaction-pooled session, not a server process: the session's statements run on whichever server connection is free"),
        )
        .with_instead(format!(
            "{WHAT_WORKS}; the driver's cancel (CancelRequest) cancels the session's statement, closing the connection ends it"
        ))),
        // Whether another agent's session shows it is not said.
        _ => Err(refuse(format!(
            "process {pid} is not the backend of a session of agent \"{agent}\" on upstream \"{upstream}\": an agent may signal only its own sessions' backends"
        ))),
    }
}

fn refuse(reason: impl Into<String>) -> Refusal {
    Refusal::permission(OWN_BACKEND_RULE, reason).with_instead(WHAT_WORKS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(pooled: bool, checks: bool) -> SessionFacts {
        SessionFacts {
            pooled,
            checks_signal_targets: checks,
            ..SessionFacts::default()
        }
    }

    fn judge(sql: &str, f: &SessionFacts) -> Result<(), String> {
        let a = super::super::sql::analyze(sql).unwrap();
        a.statements
            .iter()
            .try_for_each(|s| check_statement(s, f))
            .map_err(|r| r.rule)
    }

    #[test]
    fn statements_are_judged_by_what_they_signal() {
        let wire = facts(false, true);
        let pooled = facts(true, true);
        let other_door = facts(true, false);
        let own = Err(OWN_BACKEND_RULE.to_string());
        let tx = Err(TRANSACTION_POOLING_RULE.to_string());
        let cases: &[(&str, &SessionFacts, Result<(), String>)] = &[
            (
                "SELECT pg_terminate_backend(pg_backend_pid())",
                &wire,
                Ok(()),
            ),
            (
                "SELECT pg_terminate_backend(pg_backend_pid())",
                &pooled,
                Ok(()),
            ),
            (
                "SELECT pg_cancel_backend(pg_backend_pid())",
                &other_door,
                Ok(()),
            ),
            ("SELECT pg_terminate_backend(42)", &wire, Ok(())),
            ("SELECT pg_terminate_backend($1)", &pooled, Ok(())),
            ("SELECT pg_terminate_backend(42)", &other_door, own.clone()),
            (
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
                &wire,
                own.clone(),
            ),
            (
                "CREATE VIEW v AS SELECT pg_terminate_backend(pg_backend_pid())",
                &wire,
                own.clone(),
            ),
            (
                "CREATE TABLE t (a bool DEFAULT pg_cancel_backend(pg_backend_pid()))",
                &wire,
                own.clone(),
            ),
            (
                "DO $$ BEGIN PERFORM pg_terminate_backend(1); END $$",
                &wire,
                own.clone(),
            ),
            (
                "PREPARE p AS SELECT pg_terminate_backend($1)",
                &wire,
                own.clone(),
            ),
            (
                "PREPARE p AS SELECT pg_terminate_backend(pg_backend_pid())",
                &wire,
                Ok(()),
            ),
            ("EXPLAIN ANALYZE SELECT pg_cancel_backend(7)", &wire, Ok(())),
            (
                "DECLARE c CURSOR FOR SELECT pg_cancel_backend(7)",
                &wire,
                Ok(()),
            ),
            (
                "COPY (SELECT pg_cancel_backend(pg_backend_pid())) TO STDOUT",
                &wire,
                Ok(()),
            ),
            ("SELECT pg_backend_pid()", &wire, Ok(())),
            ("SELECT pg_backend_pid()", &pooled, tx.clone()),
            ("SELECT 1 WHERE pg_backend_pid() > 0", &pooled, tx.clone()),
            ("SELECT 1", &pooled, Ok(())),
        ];
        for (sql, f, expected) in cases {
            assert_eq!(&judge(sql, f), expected, "{sql}");
        }
    }

    #[test]
    fn targets_are_checked_against_whose_session_shows_them() {
        let owner = |agent: &str, upstream: &str, server_process| BackendOwner {
            agent: agent.into(),
            upstream: upstream.into(),
            server_process,
        };
        let rule = |r: Result<(), Refusal>| r.map_err(|r| r.rule);
        // One of the agent's own session-pooled sessions: its server's process.
        assert_eq!(
            rule(check_target(
                "a",
                "shop",
                Some(7),
                Some(&owner("a", "shop", true))
            )),
            Ok(())
        );
        // Another agent's, another upstream's, nobody's: refused alike.
        for o in [
            Some(owner("b", "shop", true)),
            Some(owner("a", "other", true)),
            None,
        ] {
            let r = check_target("a", "shop", Some(7), o.as_ref());
            let r = r.unwrap_err();
            assert_eq!(r.rule, OWN_BACKEND_RULE);
            assert_eq!(r.class, RefusalClass::Permission);
            assert!(!r.reason.contains("\"b\""), "{}", r.reason);
        }
        // tollgate's own id for a transaction-pooled session: no process to signal.
        let r = check_target("a", "shop", Some(7), Some(&owner("a", "shop", false))).unwrap_err();
        assert_eq!(
            (r.rule.as_str(), r.class),
            (TRANSACTION_POOLING_RULE, RefusalClass::Unsupported)
        );
        assert!(r.instead.unwrap().contains("pg_backend_pid()"));
        // A parameter tollgate cannot read.
        assert_eq!(
            rule(check_target("a", "shop", None, None)),
            Err(OWN_BACKEND_RULE.into())
        );
    }
}
