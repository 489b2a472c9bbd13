//! SQL analyser: walks PostgreSQL's own parse tree (libpg_query) and reports, per statement, its kind, every relation it reaches with the operation done on it, and every function it calls. Fails closed.
//!
//! The analyser never decides anything: the policy engine takes an [`Analysis`] and decides.
//! Guarantees the policy engine can rely on:
//!
//! * The SQL text is parsed by PostgreSQL's grammar (`pg_query::parse`); anything it rejects is
//!   [`AnalyzeError::Syntax`].
//! * The parse tree is walked by this module's own exhaustive walker (an explicit stack, no
//!   recursion). Every node type of the parse tree is either handled or refused with
//!   [`AnalyzeError::Unsupported`] naming the node type; the match over node types has no
//!   wildcard arm, so a node type added by a future `pg_query` fails the build instead of being
//!   skipped.
//! * Parsing and the walk run on a pool of threads with large stacks (see `runner.rs`):
//!   `pg_query`'s protobuf decoding is recursive and overflows a normal 2 MiB stack on crafted,
//!   deeply nested statements of a few hundred bytes, which would abort the whole process.
//! * Identifiers are reported as PostgreSQL resolves them: unquoted names folded to lower case,
//!   quoted names kept, `U&"..."` decoded (the parser does all of this).
//! * [`fingerprint`] comes from PostgreSQL's own scanner, never from a hand-written lexer.
//!
//! What the caller must guarantee for the analysis to describe what the server runs: the
//! session keeps `standard_conforming_strings = on`, `client_encoding = UTF8` and the default
//! `backslash_quote` (the parser assumes them; a session that changes them can make the server
//! read a string literal differently, so SET of these, and startup options setting them, must
//! be refused), and `search_path` is pinned or tracked. The grammar is PostgreSQL 18's.
//!
//! Not visible in a statement's text, hence not reported: functions run implicitly (triggers,
//! column defaults, domain checks, type input functions, views' own bodies, rules, RLS
//! policies), operators called without `OPERATOR(schema.op)` syntax, and functions called with
//! attribute notation (`SELECT t.f FROM t` calls `f(t)` when `t` has no column `f`).

pub mod backend_signals;
mod builtins;
mod classify;
pub use classify::setting_name;
pub mod cursors;
mod ddl_objects;
mod ddl_other;
mod ddl_relations;
mod ddl_server;
mod ddl_tables;
mod dispatch;
mod dml;
mod expr;
mod fast_scan;
pub mod fastpath;
mod fingerprint;
mod json;
pub mod login_guard;
mod names;
mod query;
mod runner;
pub mod screen;
mod session_state;
mod settings_filter;
mod utility;
mod walker;

#[cfg(test)]
mod tests_adversarial;
#[cfg(test)]
mod tests_analyst;
#[cfg(test)]
mod tests_corpus;
#[cfg(test)]
mod tests_ddl;
#[cfg(test)]
mod tests_dml;
#[cfg(test)]
mod tests_psql;
#[cfg(test)]
mod tests_support;
#[cfg(test)]
mod tests_utility;

pub use backend_signals::SignalTarget;
pub use builtins::{
    is_catalog_function, is_safe_builtin_function, is_sequence_function, runs_sql_given_as_text,
};
pub use fingerprint::{
    fast_fingerprint, fingerprint, scanner_fingerprint, structural_tokens, ScannedToken,
};
pub use pg_query::protobuf::Token;
pub use session_state::{
    exits_failed_transaction, leaves_session_state, only_clears_session_state, only_rolls_back,
    sets_local_setting,
};

/// The result of analysing one SQL string: one entry per statement, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    pub statements: Vec<StatementInfo>,
}

/// What one statement does.
#[derive(Debug, Clone, PartialEq)]
pub struct StatementInfo {
    pub kind: StatementKind,
    /// Every relation the statement reaches, anywhere in it, with the operation done on it.
    /// A relation read AND written appears twice (once per op). Deduplicated otherwise.
    /// Order: deterministic, not meaningful.
    ///
    /// `name == "*"` stands for "every relation in `schema`" (`GRANT ... ON ALL TABLES IN
    /// SCHEMA s`, `DROP SCHEMA s`, `IMPORT FOREIGN SCHEMA ... INTO s`, publications `FOR ALL
    /// TABLES` with `schema: None`).
    pub relations: Vec<RelationAccess>,
    /// Every function/procedure called by name, anywhere (including DEFAULT expressions, trigger
    /// functions, TABLESAMPLE methods, and `::regclass`-style casts reported as
    /// `pg_catalog.regclass` etc.). Deduplicated.
    pub functions: Vec<FunctionRef>,
    /// true when the decision may depend on literal values, or on session state rather than on
    /// the text (SET, COPY, EXECUTE, DDL/DCL, calls of functions outside the safe built-ins,
    /// reg* casts, EXPLAIN options with values, ...): do not serve such a statement from a
    /// decision cache keyed by [`fingerprint`].
    pub literal_sensitive: bool,
    /// The statement wrapped by EXPLAIN, PREPARE, DECLARE CURSOR or CREATE TABLE AS, if any
    /// (e.g. `EXPLAIN ANALYZE EXECUTE p` has `inner_kind == Some(Execute { name: "p" })`).
    pub inner_kind: Option<Box<StatementKind>>,
    /// `FOR UPDATE` / `FOR NO KEY UPDATE` / `FOR SHARE` / `FOR KEY SHARE` appears somewhere:
    /// the statement takes row locks on the relations it reads.
    pub row_locking: bool,
    /// Byte range of this statement in the analysed string.
    pub span: std::ops::Range<usize>,
    /// Every place a relation is named (not CTE references), with its byte offset in the
    /// analysed string: what the masking rewrite edits.
    pub occurrences: Vec<RelationOccurrence>,
    /// Every name part of every column reference (`t.email` gives `t` and `email`), so a rule
    /// can tell whether a statement may read a column; `column_star` for `*` / `t.*`.
    pub column_names: Vec<String>,
    pub column_star: bool,
    /// The column references of one name (`x`, not `t.x`): a column, or a whole row of the
    /// relation named or aliased so.
    pub bare_column_names: Vec<String>,
    /// Every call of the built-in `set_config(name, value, is_local)`: the setting's name (as
    /// PostgreSQL looks it up) when it is a string literal, with the value when that is one too;
    /// `None` when the name is computed. Lets the policy judge `set_config` like `SET`.
    pub set_config_calls: Vec<Option<(String, Option<String>)>>,
    /// Every call of the built-in `current_setting(name[, missing_ok])`. A custom setting (a
    /// name with a dot) is the operator's configuration, where secrets are kept by convention
    /// (PostgREST's `app.jwt_secret`), not the agent's.
    pub setting_reads: Vec<SettingRead>,
    /// The process each `pg_cancel_backend` / `pg_terminate_backend` call names, and an
    /// [`SignalTarget::Unknown`] for any other mention of them (bodies, DDL, string constants).
    pub signals: Vec<SignalTarget>,
    /// `pg_backend_pid()` is called other than as the process id of a signal call.
    pub reads_backend_pid: bool,
    /// `CREATE FUNCTION`/`PROCEDURE` with a body given as a string (`AS $$ ... $$`): code the
    /// analysis does not read, which runs whenever the function is called (a `BEGIN ATOMIC`
    /// or `RETURN` body is SQL, and analysed); or a definition that makes a function callable
    /// without its name (CREATE AGGREGATE, OPERATOR, CAST, TYPE, RULE, ...).
    pub defines_unread_code: bool,
}

/// One place in the text where a relation is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationOccurrence {
    pub schema: Option<String>,
    pub name: String,
    pub op: Operation,
    /// Byte offset of the name's first token; `None` when the parser did not say.
    pub location: Option<usize>,
    /// A FROM item (FROM, JOIN, USING, MERGE source), where a subquery may replace the name.
    pub from_item: bool,
    /// The alias the name carries (`FROM t AS x`).
    pub alias: Option<String>,
    /// `false` for `ONLY t`.
    pub inh: bool,
    /// The relation of a TABLESAMPLE clause.
    pub tablesample: bool,
}

impl StatementInfo {
    /// The parameters whose values name a setting `current_setting()` reads, to be checked at
    /// Bind. `None` when such a parameter cannot be checked there: in a SQL `PREPARE`, the
    /// values come with its EXECUTEs, which are not read for this.
    pub fn setting_params(&self) -> Option<Vec<i32>> {
        let params: Vec<i32> = self
            .setting_reads
            .iter()
            .filter_map(|r| match r {
                SettingRead::Param(n) => Some(*n),
                _ => None,
            })
            .collect();
        let sql_prepare = matches!(self.kind, StatementKind::Prepare { .. });
        (params.is_empty() || !sql_prepare).then_some(params)
    }
}

/// The name a `current_setting()` call reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingRead {
    /// A string literal: the setting's name as PostgreSQL looks it up.
    Named(String),
    /// A bind parameter (`$n`, cast or not): known at Bind (SQLAlchemy's reflection passes
    /// `default_table_access_method` so).
    Param(i32),
    /// Anything else: computed at run time.
    Computed,
}

/// One relation reached by a statement.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RelationAccess {
    /// `None` = unqualified: the policy resolves it via the (pinned) search_path, remembering
    /// that PostgreSQL searches `pg_temp` and `pg_catalog` implicitly. Temporary relations
    /// created by the statement are reported with `Some("pg_temp")`.
    pub schema: Option<String>,
    pub name: String,
    pub op: Operation,
}

/// What a statement does to a relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Select,
    Insert,
    Update,
    Delete,
    Truncate,
    /// DDL on the object (create/alter/drop/comment/rename..., also the new relation of CREATE
    /// TABLE AS / SELECT INTO / CREATE VIEW).
    Ddl,
    /// GRANT/REVOKE and ownership changes.
    Dcl,
    CopyTo,
    CopyFrom,
    Lock,
    /// VACUUM/ANALYZE/REINDEX/CLUSTER.
    Maintenance,
}

/// A function named by a statement. `schema` is `None` when unqualified.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FunctionRef {
    pub schema: Option<String>,
    pub name: String,
}

/// The kind of a top-level statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatementKind {
    Select,
    Insert,
    Update,
    Delete,
    Merge,
    /// TRUNCATE (each relation has op `Truncate`).
    Truncate,
    Copy {
        /// COPY ... TO/FROM PROGRAM or a server file: always to be refused.
        to_program_or_file: bool,
    },
    /// Relations/functions are those of the inner statement; see `inner_kind`.
    Explain {
        analyze: bool,
    },
    /// BEGIN/START/COMMIT/ROLLBACK/SAVEPOINT/RELEASE/ROLLBACK TO/SET CONSTRAINTS. Two-phase
    /// commit (PREPARE TRANSACTION, COMMIT/ROLLBACK PREPARED) is `Other`.
    Transaction,
    /// SET x = ..., SET LOCAL, SET ROLE (name "role"), SET SESSION AUTHORIZATION (name
    /// "session_authorization"), SET TIME ZONE (name "timezone"), SET TRANSACTION (name
    /// "transaction"), SET SESSION CHARACTERISTICS (name "session_characteristics"). `name` is
    /// lower-cased (PostgreSQL's setting names are case-insensitive) and old aliases are mapped
    /// (`sort_mem` -> `work_mem`). `value` is None for `SET x TO DEFAULT`; otherwise the values
    /// joined with ", " (list elements of search_path-like settings quoted as PostgreSQL does).
    Set {
        name: String,
        value: Option<String>,
        local: bool,
    },
    /// RESET x; RESET ALL => None.
    Reset {
        name: Option<String>,
    },
    Show {
        name: String,
    },
    /// `all`: DISCARD ALL (closes cursors, drops prepared statements); PLANS, SEQUENCES and
    /// TEMP leave both alone.
    Discard {
        all: bool,
    },
    /// Relations/functions are those of the prepared body.
    Prepare {
        name: String,
    },
    Execute {
        name: String,
    },
    /// DEALLOCATE ALL => None.
    Deallocate {
        name: Option<String>,
    },
    /// Relations are those of the cursor query.
    DeclareCursor {
        name: String,
        /// `WITH HOLD`: the cursor outlives its transaction.
        hold: bool,
    },
    FetchOrMove,
    ClosePortal,
    Listen {
        channel: String,
    },
    Notify {
        channel: String,
    },
    Unlisten,
    /// CREATE/ALTER/DROP/COMMENT/... including CREATE TABLE AS, SELECT INTO, CREATE VIEW,
    /// FUNCTION, TRIGGER, RULE, EXTENSION, REFRESH MATERIALIZED VIEW.
    Ddl,
    /// GRANT/REVOKE, roles, ALTER DEFAULT PRIVILEGES, ownership changes.
    Dcl,
    /// DO blocks: opaque code.
    Do,
    /// CALL proc().
    Call,
    /// LOCK TABLE.
    Lock,
    /// VACUUM/ANALYZE/CLUSTER/REINDEX/CHECKPOINT.
    Maintenance,
    AlterSystem,
    /// LOAD.
    LoadLibrary,
    /// Recognised but unclassified: callers refuse it.
    Other(String),
}

/// Why a string could not be analysed. Every error means "refuse".
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum AnalyzeError {
    /// PostgreSQL's grammar rejects the text.
    #[error("syntax error: {0}")]
    Syntax(String),
    /// The text is (or may be) valid, but tollgate cannot analyse it: a node type the walker
    /// does not know, a statement nested too deeply, an internal failure. Worth counting: it may
    /// be legitimate SQL.
    #[error("the statement cannot be analysed: {0}")]
    Unsupported(String),
}

/// How many statements `sql` holds, by PostgreSQL's scanner alone (no parse): for texts the
/// analyser did not see (the passthrough fast path). A text the scanner rejects counts as one.
pub fn count_statements(sql: &str) -> usize {
    pg_query::split_with_scanner(sql).map_or(1, |parts| parts.len())
}

/// Analyse a SQL string (possibly several statements). Fails closed. An empty string, or one
/// holding only comments or semicolons, is legal in PostgreSQL and yields zero statements.
pub fn analyze(sql: &str) -> Result<Analysis, AnalyzeError> {
    let owned = sql.to_owned();
    match runner::run_with_large_stack(move || analyze_here(&owned)) {
        Some(result) => result,
        None => Err(AnalyzeError::Unsupported(
            "internal error: the analysis thread failed".to_owned(),
        )),
    }
}

/// Analysis on the current thread: only call this on a thread with a large stack.
fn analyze_here(sql: &str) -> Result<Analysis, AnalyzeError> {
    let parsed =
        pg_query::parse(sql, pg_query::ParserOptions::DEFAULT).map_err(map_pg_query_error)?;
    let mut statements = Vec::with_capacity(parsed.protobuf.stmts.len());
    let may_signal = backend_signals::may_signal(sql);
    for raw in &parsed.protobuf.stmts {
        let mut info = walker::analyze_statement(raw, sql.len())?;
        if may_signal {
            backend_signals::account(&mut info, raw);
        }
        statements.push(info);
    }
    Ok(Analysis { statements })
}

/// Translate a `pg_query` failure into our error type.
pub(crate) fn map_pg_query_error(e: pg_query::Error) -> AnalyzeError {
    match e {
        pg_query::Error::Parse(msg) | pg_query::Error::Scan(msg) => {
            if msg.contains("stack depth limit exceeded") || msg.contains("nested too deeply") {
                AnalyzeError::Unsupported(format!("statement is nested too deeply ({msg})"))
            } else {
                AnalyzeError::Syntax(msg)
            }
        }
        pg_query::Error::Conversion(_) => {
            AnalyzeError::Syntax("the statement contains a NUL byte".to_owned())
        }
        other => AnalyzeError::Unsupported(format!("parser failure: {other}")),
    }
}
