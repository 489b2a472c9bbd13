//! The decision: a pure function of (rules, analysed statement, session facts). No I/O, no clock.

use std::collections::HashSet;

use super::catalog::{is_catalog_relation, is_sensitive};
use super::glob::Glob;
use super::rules::{Op, SqlRules, StatementClass};
use super::settings::check_client_setting;
use super::sql::{
    self, Analysis, FunctionRef, Operation, RelationAccess, SettingRead, StatementInfo,
    StatementKind,
};
use crate::refusal::Refusal;

/// What the session knows that a decision may depend on.
#[derive(Debug, Default, Clone)]
pub struct SessionFacts {
    /// Names of SQL-level prepared statements (PREPARE) that passed the policy in this session.
    pub sql_prepared: HashSet<String>,
    /// The session shares server connections per transaction: every statement is analysed
    /// (no passthrough fast path), so that state it leaves behind is known.
    pub pooled: bool,
    /// The caller checks the process ids of `pg_cancel_backend` / `pg_terminate_backend` calls
    /// (the verdict's `Effect::Signals`) before forwarding, as the PostgreSQL wire front end
    /// does; without it a process id given as a value is refused (`policy::backends`).
    pub checks_signal_targets: bool,
}

pub const DEFAULT_DENY: &str = "default-deny";

/// An EXECUTE of a statement this session did not PREPARE through the policy.
pub const UNCHECKED_EXECUTE_RULE: &str = "builtin: unchecked-execute";

/// Checks every statement; the first refusal refuses the whole string.
pub fn decide(
    rules: &SqlRules,
    analysis: &Analysis,
    session: &SessionFacts,
) -> Result<(), Refusal> {
    for stmt in &analysis.statements {
        check_statement(rules, stmt, session)?;
    }
    Ok(())
}

const PROTECTED_SETTING: &str = "builtin: protected-setting";

/// Restricted agents read server settings (SHOW, `current_setting`), but not custom ones (a
/// name with a dot): those are the operator's, set with ALTER DATABASE / ALTER ROLE, and hold
/// application secrets by convention (PostgREST's `app.jwt_secret`); `pg_settings` and
/// `pg_db_role_setting`, which list them too, are refused as sensitive catalogs.
pub fn check_setting_read(name: &str) -> Result<(), Refusal> {
    if name.contains('.') {
        return Err(Refusal::permission(
            PROTECTED_SETTING,
            format!("reading the custom setting \"{name}\" is refused: custom settings are the operator's configuration, where application secrets are kept"),
        ));
    }
    Ok(())
}

/// `pg_roles.rolconfig` and `pg_user.useconfig` list each role's settings (`ALTER ROLE ... SET`),
/// where custom ones hold secrets by convention (PostgREST's `pgrst.jwt_secret`); the catalogs
/// that hold them (`pg_db_role_setting`, `pg_shadow`) are refused. The views' other columns are
/// what psql's `\du` shows: only reading that column, by name, `*` or the whole row, is refused.
fn check_role_settings(stmt: &StatementInfo) -> Result<(), Refusal> {
    for occ in &stmt.occurrences {
        let column = match (occ.schema.as_deref(), occ.name.as_str()) {
            (None | Some("pg_catalog"), "pg_roles") => "rolconfig",
            (None | Some("pg_catalog"), "pg_user") => "useconfig",
            _ => continue,
        };
        let whole_row = |c: &String| *c == occ.name || occ.alias.as_deref() == Some(c.as_str());
        let reads = stmt.column_star
            || stmt.column_names.iter().any(|c| c == column)
            || stmt.bare_column_names.iter().any(whole_row);
        if reads {
            return Err(Refusal::permission(
                "builtin: sensitive-catalog",
                format!("permission denied: pg_catalog.{}.{column} lists roles' settings, where custom ones hold secrets (name the other columns you need)", occ.name),
            ));
        }
    }
    Ok(())
}

fn need_class(rules: &SqlRules, class: StatementClass, what: &str) -> Result<(), Refusal> {
    if rules.passthrough || rules.classes.contains(class) {
        Ok(())
    } else {
        Err(Refusal::permission(
            DEFAULT_DENY,
            format!(
                "{what} statements are not allowed (statement kind \"{}\" is not in the policy)",
                class.name()
            ),
        ))
    }
}

/// Under transaction pooling a server session is shared by turns: `currval()` and `lastval()`
/// would read the sequence values another agent's transaction left on the connection.
fn check_pooled(stmt: &StatementInfo) -> Result<(), Refusal> {
    let reads_sequence_state = stmt.functions.iter().any(|f| {
        matches!(f.schema.as_deref(), None | Some("pg_catalog"))
            && matches!(f.name.as_str(), "currval" | "lastval")
    });
    if reads_sequence_state {
        return Err(Refusal::new(
            crate::refusal::RefusalClass::Unsupported,
            super::backends::TRANSACTION_POOLING_RULE,
            "currval() and lastval() read state of a server session, which transaction pooling shares between agents; use INSERT ... RETURNING",
        ));
    }
    Ok(())
}

fn check_statement(
    rules: &SqlRules,
    stmt: &StatementInfo,
    session: &SessionFacts,
) -> Result<(), Refusal> {
    check_kind(rules, &stmt.kind, session)?;
    // EXPLAIN EXECUTE p, PREPARE ... AS, DECLARE ... FOR, CREATE TABLE AS: the wrapped statement too.
    if let Some(inner) = &stmt.inner_kind {
        check_kind(rules, inner, session)?;
    }
    for rel in &stmt.relations {
        check_relation(rules, rel)?;
        // SELECT ... FOR UPDATE/SHARE locks the rows it reads: a write-level act.
        if stmt.row_locking && rel.op == Operation::Select {
            check_relation(
                rules,
                &RelationAccess {
                    op: Operation::Update,
                    ..rel.clone()
                },
            )?;
        }
    }
    if session.pooled {
        check_pooled(stmt)?;
    }
    if rules.passthrough && rules.guards() {
        check_unread_sql(rules, stmt)?;
    }
    if !rules.passthrough {
        check_role_settings(stmt)?;
        // A parameter is checked at Bind (`Effect::SettingParams`) where it can be.
        let at_bind = stmt.setting_params().is_some();
        for read in &stmt.setting_reads {
            match read {
                SettingRead::Named(name) => check_setting_read(name)?,
                SettingRead::Param(_) if at_bind => {}
                SettingRead::Param(_) | SettingRead::Computed => {
                    return Err(Refusal::permission(
                        PROTECTED_SETTING,
                        "current_setting() with a setting name computed at run time: it could read a custom setting (give the name as a string literal or a bind parameter)",
                    ))
                }
            }
        }
    }
    for f in &stmt.functions {
        if let Err(denial) = check_function(rules, f) {
            if !(is_set_config(f) && denial.rule == DEFAULT_DENY) {
                return Err(denial);
            }
            check_set_config_calls(rules, stmt, denial)?;
        }
    }
    Ok(())
}

/// Refuses a passthrough agent with denies or masks SQL the analysis cannot read, which could
/// reach what they protect: a `DO` block, a function defined with a string body, a built-in
/// that runs SQL given as text (`query_to_xml`, `table_to_xml`, `dblink`, ...). A live review
/// read a denied table through `query_to_xml` and a `DO` block. The policy may still name them
/// (`statements = ["do"]`, `["ddl"]`, `functions = [...]`): its author then trusts the agent.
fn check_unread_sql(rules: &SqlRules, stmt: &StatementInfo) -> Result<(), Refusal> {
    let refuse = |what: String| {
        Err(Refusal::permission(
            UNREAD_SQL_RULE,
            format!("{what} runs SQL tollgate cannot read, and this agent's policy denies or masks what it could reach; a policy that trusts the agent with it names it explicitly"),
        ))
    };
    let kinds = std::iter::once(&stmt.kind).chain(stmt.inner_kind.as_deref());
    if kinds.into_iter().any(|k| *k == StatementKind::Do)
        && !rules.classes.contains(StatementClass::Do)
    {
        return refuse("a DO block".into());
    }
    if stmt.defines_unread_code && !rules.classes.contains(StatementClass::Ddl) {
        return refuse(
            "a function defined with a string body, or an aggregate, operator, cast, type or rule that calls functions without naming them,"
                .into(),
        );
    }
    for f in stmt
        .functions
        .iter()
        .filter(|f| sql::runs_sql_given_as_text(f))
    {
        let forms = [
            f.name.clone(),
            format!("{}.{}", f.schema.as_deref().unwrap_or("pg_catalog"), f.name),
        ];
        let named = rules
            .allow_functions
            .iter()
            .any(|a| forms.iter().any(|n| a.glob.matches(n)));
        if !named {
            return refuse(format!("{}()", f.name));
        }
    }
    Ok(())
}

/// Names [`check_unread_sql`]'s refusals.
pub const UNREAD_SQL_RULE: &str = "builtin: unread-sql";

fn is_set_config(f: &FunctionRef) -> bool {
    f.name == "set_config" && matches!(f.schema.as_deref(), None | Some("pg_catalog"))
}

/// `set_config` not allowed by name: judged like `SET` instead, call by call (drivers run
/// `set_config('jit', 'off', false)` before their catalog queries). Every call must name its
/// setting with a literal that `SET` may change to the given value (a value that is not a
/// literal is accepted only for settings free to take any value); otherwise `denial` stands.
fn check_set_config_calls(
    rules: &SqlRules,
    stmt: &StatementInfo,
    denial: Refusal,
) -> Result<(), Refusal> {
    if stmt.set_config_calls.is_empty()
        || need_class(rules, StatementClass::Session, "SET").is_err()
    {
        return Err(denial);
    }
    for call in &stmt.set_config_calls {
        let Some((name, value)) = call else {
            return Err(denial);
        };
        check_client_setting(name, value.as_deref().unwrap_or(""))
            .map_err(|reason| Refusal::permission("builtin: protected-setting", reason))?;
    }
    Ok(())
}

fn check_kind(
    rules: &SqlRules,
    kind: &StatementKind,
    session: &SessionFacts,
) -> Result<(), Refusal> {
    match kind {
        StatementKind::Select
        | StatementKind::Insert
        | StatementKind::Update
        | StatementKind::Delete
        | StatementKind::Merge
        | StatementKind::Truncate => {}
        StatementKind::Copy { to_program_or_file } => {
            if *to_program_or_file {
                return Err(Refusal::permission(
                    "builtin: copy-program-file",
                    "COPY to or from a server file or program is never allowed",
                ));
            }
            need_class(rules, StatementClass::Copy, "COPY")?;
        }
        StatementKind::Explain { .. } => need_class(rules, StatementClass::Explain, "EXPLAIN")?,
        StatementKind::Transaction => {
            need_class(rules, StatementClass::Transaction, "transaction control")?
        }
        StatementKind::Set { name, value, .. } => {
            need_class(rules, StatementClass::Session, "SET")?;
            // SET TRANSACTION / SET SESSION CHARACTERISTICS only choose isolation and read-only.
            let harmless = name == "transaction" || name == "session_characteristics";
            if !rules.passthrough && !harmless {
                check_client_setting(name, value.as_deref().unwrap_or("DEFAULT"))
                    .map_err(|reason| Refusal::permission("builtin: protected-setting", reason))?;
            }
        }
        StatementKind::Reset { name: Some(name) } if !rules.passthrough && name.contains('.') => {
            need_class(rules, StatementClass::Session, "session")?;
            return Err(Refusal::permission(
                "builtin: protected-setting",
                format!("RESET of the custom setting \"{name}\" is refused: PostgreSQL would create it on the server connection, where neither RESET ALL nor DISCARD ALL removes it, and other agents' sessions would see it"),
            ));
        }
        StatementKind::Show { name } if !rules.passthrough => {
            need_class(rules, StatementClass::Session, "session")?;
            check_setting_read(name)?;
        }
        StatementKind::Reset { .. }
        | StatementKind::Show { .. }
        | StatementKind::Discard { .. } => need_class(rules, StatementClass::Session, "session")?,
        StatementKind::Prepare { .. } | StatementKind::Deallocate { .. } => {
            need_class(rules, StatementClass::Prepare, "PREPARE")?
        }
        StatementKind::Execute { name } => {
            need_class(rules, StatementClass::Prepare, "EXECUTE")?;
            if !session.sql_prepared.contains(name) {
                return Err(Refusal::permission(
                    UNCHECKED_EXECUTE_RULE,
                    format!("EXECUTE of prepared statement \"{name}\", which tollgate did not check in this session"),
                ));
            }
        }
        StatementKind::DeclareCursor { .. }
        | StatementKind::FetchOrMove
        | StatementKind::ClosePortal => need_class(rules, StatementClass::Cursor, "cursor")?,
        StatementKind::Listen { .. } | StatementKind::Notify { .. } => {
            need_class(rules, StatementClass::Listen, "LISTEN/NOTIFY")?
        }
        // UNLISTEN only drops the session's own registrations (pools reset with `UNLISTEN *`).
        StatementKind::Unlisten => need_class(rules, StatementClass::Session, "session")?,
        StatementKind::Ddl => need_class(rules, StatementClass::Ddl, "DDL")?,
        StatementKind::Dcl => need_class(rules, StatementClass::Dcl, "GRANT/REVOKE and role")?,
        StatementKind::Do => need_class(rules, StatementClass::Do, "DO block")?,
        StatementKind::Call => need_class(rules, StatementClass::Call, "CALL")?,
        StatementKind::Lock => need_class(rules, StatementClass::Lock, "LOCK")?,
        StatementKind::Maintenance => {
            need_class(rules, StatementClass::Maintenance, "maintenance")?
        }
        StatementKind::AlterSystem | StatementKind::LoadLibrary => {
            if !rules.passthrough {
                return Err(Refusal::permission(
                    "builtin: server-admin",
                    "ALTER SYSTEM and LOAD are never allowed",
                ));
            }
        }
        StatementKind::Other(what) => {
            if !rules.passthrough {
                return Err(Refusal::permission(
                    DEFAULT_DENY,
                    format!("tollgate does not allow {what} statements"),
                ));
            }
        }
    }
    Ok(())
}

fn op_of(op: Operation) -> Op {
    match op {
        Operation::Select | Operation::CopyTo => Op::Select,
        Operation::Insert | Operation::CopyFrom => Op::Insert,
        Operation::Update => Op::Update,
        Operation::Delete => Op::Delete,
        Operation::Truncate => Op::Truncate,
        Operation::Ddl => Op::Ddl,
        Operation::Dcl => Op::Dcl,
        Operation::Lock => Op::Lock,
        Operation::Maintenance => Op::Maintenance,
    }
}

/// Where an unqualified name can resolve: `pg_catalog` first (if the catalog has it, or may have
/// it), then the pinned search path. Every candidate must be allowed, so an ambiguous name fails
/// closed.
fn candidates(rules: &SqlRules, rel: &RelationAccess) -> Vec<String> {
    resolve_name(rules, rel.schema.as_deref(), &rel.name)
}

pub(crate) fn resolve_name(rules: &SqlRules, schema: Option<&str>, name: &str) -> Vec<String> {
    match schema {
        Some(s) => vec![format!("{s}.{name}")],
        None if is_catalog_relation(name) => vec![format!("pg_catalog.{name}")],
        None => {
            // A `pg_` name the list does not know may be a catalog view of a newer server
            // (PostgreSQL 16's `pg_stat_io`), which `pg_catalog`, searched first, would give: it
            // must be allowed there too (fail closed; a user's `public.pg_x` can be named so).
            let catalog = name
                .starts_with("pg_")
                .then(|| format!("pg_catalog.{name}"));
            catalog
                .into_iter()
                .chain(rules.search_path.iter().map(|s| format!("{s}.{name}")))
                .collect()
        }
    }
}

impl super::mask::ProtectionSource for SqlRules {
    fn candidates(&self, schema: Option<&str>, name: &str) -> Vec<String> {
        resolve_name(self, schema, name)
    }
    fn protection(&self, qualified: &str) -> Option<super::mask::Protection> {
        let p = self.protection_of(qualified);
        (!p.is_empty()).then_some(p)
    }
}

/// The masking rewrite of an allowed statement, if it reads a protected table. Pure, like
/// `decide`: the upstream's table shapes come in as an argument.
pub fn plan_masking(
    rules: &SqlRules,
    sql_text: &str,
    analysis: &Analysis,
    schema: Option<&super::mask::SchemaSnapshot>,
    hash_key: &str,
) -> Result<Option<super::mask::RewritePlan>, Refusal> {
    if !rules.has_protections() {
        return Ok(None);
    }
    // A reason quoting the rewritten text (a parse error of it) must not quote the key.
    let refusal = |e: super::mask::RewriteError| {
        Refusal::permission(e.rule, super::mask::key::hide(&e.reason, hash_key))
    };
    let plan =
        super::mask::plan_rewrite(sql_text, analysis, rules, schema, hash_key).map_err(refusal)?;
    if let Some(p) = plan.as_ref().filter(|p| p.has_edits()) {
        // Defence in depth: the rewritten text must parse, and name protected tables only
        // inside the masking subqueries.
        super::mask::verify_rewrite(p, sql_text, rules).map_err(refusal)?;
    }
    Ok(plan)
}

/// Functions and relations that show the text of statements the server runs, the calling one
/// or another (this session's prepared statements and cursors, other sessions' statements).
const SHOWS_STATEMENT_TEXT: &[&str] = &[
    "current_query",
    "pg_stat_get_activity",
    "pg_stat_get_backend_activity",
    "pg_stat_activity",
    "pg_prepared_statements",
    "pg_cursors",
];

/// `SET debug_print_plan` and its siblings (or `set_config` of them, or of a name computed at
/// run time): with `client_min_messages = log` the server sends the client the statement's
/// parse or plan tree, constants (the key among them) included.
fn prints_trees(stmt: &StatementInfo) -> bool {
    let debug_print = |name: &str| {
        name.get(..12)
            .is_some_and(|p| p.eq_ignore_ascii_case("debug_print_"))
    };
    matches!(&stmt.kind, StatementKind::Set { name, .. } if debug_print(name))
        || stmt
            .set_config_calls
            .iter()
            .any(|c| c.as_ref().is_none_or(|(name, _)| debug_print(name)))
}

/// `SET client_min_messages` (or `set_config` of it, or of a name computed at run time) to a
/// level at which the server sends the client the statements it runs, rewrites included.
fn echoes_statements(stmt: &StatementInfo) -> bool {
    let lowers = |name: &str, value: Option<&str>| {
        name.eq_ignore_ascii_case("client_min_messages")
            && super::settings::check_message_level(value.unwrap_or("")).is_err()
    };
    matches!(&stmt.kind, StatementKind::Set { name, value, .. }
        if lowers(name, Some(value.as_deref().unwrap_or("DEFAULT"))))
        || stmt.set_config_calls.iter().any(|c| {
            c.as_ref()
                .is_none_or(|(name, value)| lowers(name, value.as_deref()))
        })
}

fn shows_statement_text(stmt: &StatementInfo) -> bool {
    let builtin = |schema: &Option<String>, name: &str| {
        matches!(schema.as_deref(), None | Some("pg_catalog"))
            && SHOWS_STATEMENT_TEXT.contains(&name)
    };
    stmt.functions.iter().any(|f| builtin(&f.schema, &f.name))
        || stmt.relations.iter().any(|r| builtin(&r.schema, &r.name))
}

/// The `hash` mask's key (hex) never reaches the agent (docs/policy.md, "What the agent can see
/// of a hash mask"). Masking subqueries carry it in the text PostgreSQL receives, and
/// PostgreSQL shows a statement's expressions in EXPLAIN output (VERBOSE's Output lines, Filter,
/// Sort Key, Index Cond), so refused, for every profile, shadow mode or not:
/// - a text whose rewrite (`plan`) carries the key and that holds an EXPLAIN (any options,
///   ANALYZE included): the whole text is judged, so `SELECT ssn FROM t; EXPLAIN SELECT 1` goes
///   too;
/// - DDL whose rewrite carries the key: a view's or materialized view's definition would keep
///   it where `pg_get_viewdef` and the catalog show it (CREATE TABLE AS stores no definition,
///   but is one node with CREATE MATERIALIZED VIEW for the analysis, so it goes too);
/// - `EXPLAIN EXECUTE` (and EXPLAIN of DDL: `CREATE TABLE ... AS EXECUTE`) when `rules` mask
///   any column with `hash`: the prepared statement it explains may carry the key, and which
///   statement a name stands for when the EXPLAIN runs (a Parse now, an Execute later, a
///   DEALLOCATE and a new PREPARE in between) is the server's to say, so tollgate does not guess;
/// - for such an agent, `SET debug_print_plan` and its siblings (passthrough agents only: the
///   others may not set them at all), whose trees show constants;
/// - for such an agent, `SET client_min_messages` to `log` or a `debug` level (passthrough
///   agents only: the others may choose only notice, warning or error), at which the server
///   echoes each statement it receives, rewrite and key included;
/// - for such an agent, reading statement texts (`current_query()`, `pg_stat_activity`,
///   `pg_prepared_statements`, `pg_cursors`; restricted agents are refused the views anyway as
///   sensitive catalogs): its own masked statements, prepared statements and cursors are there.
pub fn check_mask_key(
    rules: &SqlRules,
    analysis: &Analysis,
    plan: Option<&super::mask::RewritePlan>,
    hash_key: &str,
) -> Result<(), Refusal> {
    use super::mask::key::RULE;
    let carries = plan.is_some_and(|p| p.carries(hash_key));
    for stmt in &analysis.statements {
        let explain = matches!(stmt.kind, StatementKind::Explain { .. });
        if explain && explains_prepared(stmt) && rules.has_hash_mask() {
            return Err(Refusal::permission(
                RULE,
                "EXPLAIN EXECUTE (or EXPLAIN of DDL) is refused for an agent with a hash mask: the plan of the prepared statement would show the mask's key; EXPLAIN the statement's own text, or EXECUTE it",
            ));
        }
        if carries && explain {
            return Err(Refusal::permission(
                RULE,
                "EXPLAIN of a statement that reads a column masked with hash is refused: the plan would show the mask's key; run the statement itself, or EXPLAIN one that reads no hash-masked column",
            ));
        }
        if carries && stmt.kind == StatementKind::Ddl {
            return Err(Refusal::permission(
                RULE,
                "DDL that reads a column masked with hash is refused (CREATE VIEW, CREATE MATERIALIZED VIEW, CREATE TABLE AS, ...): a stored definition would keep the mask's key where the catalog shows it",
            ));
        }
        if prints_trees(stmt) && rules.has_hash_mask() {
            return Err(Refusal::permission(
                RULE,
                "an agent with a hash mask may not turn on debug_print_parse, debug_print_rewritten or debug_print_plan: the trees the server prints show the mask's key",
            ));
        }
        if echoes_statements(stmt) && rules.has_hash_mask() {
            return Err(Refusal::permission(
                RULE,
                "an agent with a hash mask may not set client_min_messages to log or a debug level: the server would send back the statements as rewritten, with the mask's key",
            ));
        }
        if shows_statement_text(stmt) && rules.has_hash_mask() {
            return Err(Refusal::permission(
                RULE,
                "an agent with a hash mask may not read statement texts (current_query(), pg_stat_activity, pg_stat_get_backend_activity(), pg_prepared_statements, pg_cursors): the texts of masked statements show the mask's key",
            ));
        }
    }
    Ok(())
}

/// Whether an EXPLAIN's statement runs a prepared statement: `EXPLAIN EXECUTE p`, and
/// `EXPLAIN CREATE TABLE ... AS EXECUTE p` (DDL inside).
fn explains_prepared(stmt: &StatementInfo) -> bool {
    matches!(
        stmt.inner_kind.as_deref(),
        Some(StatementKind::Execute { .. } | StatementKind::Ddl)
    )
}

/// Rule named when an EXPLAIN would show estimates drawn from masked columns' statistics.
pub const MASK_STATISTICS_RULE: &str = "builtin: mask-statistics";

/// EXPLAIN of a statement that reads a table with masked columns (whichever of its columns it
/// names: the masking rewrite replaces the whole table), whatever the mask: the planner estimates
/// from the raw column's statistics (a GROUP BY or DISTINCT over the masked expression is
/// estimated with the column's own number of distinct values), which the mask hides, as the
/// statistics views are refused (a live review read `n_distinct` of `ssn`, `email` and `phone`
/// through the row estimates). `EXPLAIN EXECUTE` (and of DDL) too when `rules` mask any column:
/// which statement the name stands for when it runs is the server's to say. The statement
/// itself, and EXPLAIN of what reads no masked table, still run.
pub fn check_masked_explain(
    rules: &SqlRules,
    analysis: &Analysis,
    plan: Option<&super::mask::RewritePlan>,
) -> Result<(), Refusal> {
    let masks = plan.is_some_and(|p| p.masks);
    for stmt in &analysis.statements {
        if !matches!(stmt.kind, StatementKind::Explain { .. }) {
            continue;
        }
        if masks || (explains_prepared(stmt) && rules.has_mask()) {
            return Err(Refusal::permission(
                MASK_STATISTICS_RULE,
                "EXPLAIN of a statement that reads a table with masked columns is refused: the plan's estimates come from the unmasked columns' statistics; run the statement itself, or EXPLAIN one that reads no table with masked columns",
            ));
        }
    }
    Ok(())
}

fn check_relation(rules: &SqlRules, rel: &RelationAccess) -> Result<(), Refusal> {
    let op = op_of(rel.op);
    let names = candidates(rules, rel);
    if names.is_empty() {
        return Err(Refusal::permission(
            DEFAULT_DENY,
            format!("relation \"{}\" cannot be resolved", rel.name),
        ));
    }
    for qualified in names {
        check_table(rules, &qualified, op)?;
    }
    Ok(())
}

/// The operations `rules` allow on the table `qualified` (`schema.name`), as `decide` judges
/// them: for the admin API's view of what an agent may see.
pub fn allowed_ops(rules: &SqlRules, qualified: &str) -> Vec<Op> {
    Op::ALL
        .into_iter()
        .filter(|op| check_table(rules, qualified, *op).is_ok())
        .collect()
}

/// Refuses a relation or function whose schema or name holds a dot, for whom only an allow
/// would have to match it (`"public.evil".t` against `public.*`).
pub const DOTTED_NAME_RULE: &str = "builtin: dotted-name";

/// Whether an allow pattern reaches (`schema`, `name`). A wildcard in the pattern's schema
/// part does not reach the system schemas (`pg_catalog`, `information_schema`, `pg_toast*`):
/// the `catalog` switch governs those, and `pg_toast` holds the raw values of masked columns;
/// a pattern that names one does.
fn allow_reaches(glob: &Glob, schema: &str, name: &str) -> bool {
    let wildcard_schema = glob
        .as_str()
        .split_once('.')
        .is_none_or(|(s, _)| s.contains(['*', '?']));
    let system =
        schema == "pg_catalog" || schema == "information_schema" || schema.starts_with("pg_toast");
    !(system && wildcard_schema) && glob.matches_parts(schema, name)
}

fn check_table(rules: &SqlRules, qualified: &str, op: Op) -> Result<(), Refusal> {
    if let Some(t) = rules
        .tables
        .iter()
        .find(|t| t.deny.contains(op) && t.glob.matches(qualified))
    {
        return Err(Refusal::permission(
            t.rule.clone(),
            format!("permission denied: {} on {qualified} is denied", op.name()),
        ));
    }
    let (schema, name) = qualified.split_once('.').unwrap_or(("", qualified));
    if rules.passthrough {
        // With a deny or a mask to keep, the statistics of the denied or masked columns are not
        // the agent's either: pg_stats holds their most common values and histogram bounds (the
        // re-review read every API key of a denied table there). Where the policy names such a
        // view in a table rule, it is the author's to give.
        if rules.guards() && schema == "pg_catalog" && is_sensitive(name) {
            let named = rules
                .tables
                .iter()
                .any(|t| t.allow.contains(op) && allow_reaches(&t.glob, schema, name));
            if !named {
                return Err(Refusal::permission(
                    "builtin: sensitive-catalog",
                    format!("permission denied: {qualified} reveals stored values of what this agent's policy denies or masks"),
                ));
            }
        }
        return Ok(());
    }
    if schema == "pg_catalog" || schema == "information_schema" || schema.starts_with("pg_toast") {
        if schema == "pg_catalog" && is_sensitive(name) {
            return Err(Refusal::permission(
                "builtin: sensitive-catalog",
                format!("permission denied: {qualified} reveals stored values or server secrets"),
            ));
        }
        if rules.catalog && op == Op::Select && !schema.starts_with("pg_toast") {
            return Ok(());
        }
    }
    // An allow is matched part by part (a deny, above, on the joined text: it can only reach
    // more). With a dot inside a part the joined text does not say where the schema ends.
    if qualified.matches('.').count() != 1 {
        return Err(Refusal::permission(
            DOTTED_NAME_RULE,
            format!(
                "permission denied: {qualified}: a schema or table name with a dot in it cannot be told apart from its qualified name by the policy's patterns"
            ),
        ));
    }
    if rules
        .tables
        .iter()
        .any(|t| t.allow.contains(op) && allow_reaches(&t.glob, schema, name))
    {
        return Ok(());
    }
    Err(Refusal::permission(
        DEFAULT_DENY,
        format!(
            "permission denied: no rule allows {} on {qualified}",
            op.name()
        ),
    ))
}

fn check_function(rules: &SqlRules, f: &FunctionRef) -> Result<(), Refusal> {
    let forms: Vec<String> = match &f.schema {
        Some(s) => vec![format!("{s}.{}", f.name)],
        None => std::iter::once(f.name.clone())
            .chain(std::iter::once(format!("pg_catalog.{}", f.name)))
            .chain(rules.search_path.iter().map(|s| format!("{s}.{}", f.name)))
            .collect(),
    };
    if let Some(d) = rules
        .deny_functions
        .iter()
        .find(|d| forms.iter().any(|n| d.glob.matches(n)))
    {
        return Err(Refusal::permission(
            d.rule.clone(),
            format!("function {} is denied", forms[0]),
        ));
    }
    if rules.passthrough || sql::is_safe_builtin_function(f) {
        return Ok(());
    }
    if f.name.contains('.') || f.schema.as_deref().is_some_and(|s| s.contains('.')) {
        return Err(Refusal::permission(
            DOTTED_NAME_RULE,
            format!(
                "function {}: a schema or function name with a dot in it cannot be told apart from its qualified name by the policy's patterns",
                forms[0]
            ),
        ));
    }
    // An unqualified name that `pg_catalog` has resolves there (searched first): only its bare
    // name or `pg_catalog.NAME` allows it. `functions = ["public.*"]` allowed an unqualified
    // `query_to_xml(...)` through the form `public.query_to_xml` (the re-review read a denied
    // table and masked columns with it).
    let resolves_to_catalog = f.schema.is_none() && sql::is_catalog_function(&f.name);
    let allow_forms = match resolves_to_catalog {
        true => &forms[..2],
        false => &forms[..],
    };
    if rules
        .allow_functions
        .iter()
        .any(|a| allow_forms.iter().any(|n| a.glob.matches(n)))
    {
        return Ok(());
    }
    Err(Refusal::permission(
        DEFAULT_DENY,
        format!("function {} is not allowed", forms[0]),
    ))
}
