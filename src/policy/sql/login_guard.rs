//! Built-in protections of the upstream login, for every agent (passthrough included): a
//! statement may not alter, rename or drop the role tollgate logs in with, lock it out of the
//! upstream's database, change the server's configuration (`ALTER SYSTEM`), or change how the
//! server reads SQL text (`standard_conforming_strings`, client encodings tollgate cannot
//! decode exactly). Pure: the login's role and database come in as data (from the vault and the
//! config, through the policy engine); they never appear in a refusal.
//!
//! Passthrough statements are not analysed at all on the fast path; [`may_touch`] is the cheap
//! screen that sends the few statements that could do any of the above to [`check`]. Code run
//! by the server from a string built at run time (`EXECUTE` in PL/pgSQL of a string read from a
//! table or decoded from base64) is beyond any text analysis, so a DO block or function body
//! that uses `EXECUTE` is refused (docs/policy.md).

use pg_query::protobuf::{
    node::Node as N, AlterDatabaseSetStmt, AlterOwnerStmt, GrantStmt, Node, ObjectType, RoleSpec,
    RoleSpecType, VariableSetStmt,
};

use super::{map_pg_query_error, runner, AnalyzeError, StatementKind};
use crate::policy::settings::check_setting_for_every_agent;
use crate::refusal::{Refusal, RefusalClass};

/// The rule named when a statement would change or lock out the upstream login.
pub const VAULT_LOGIN_RULE: &str = "builtin: vault-login";
/// The rule named for ALTER SYSTEM.
pub const SERVER_ADMIN_RULE: &str = "builtin: server-admin";
/// The rule named for settings that change how the server reads SQL text.
pub const PROTECTED_SETTING_RULE: &str = "builtin: protected-setting";

/// What tollgate logs in to an upstream as: the vaulted role (PostgreSQL) or ACL user (Redis),
/// and the real database (PostgreSQL; empty for Redis).
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamLogin {
    pub role: String,
    pub database: String,
}

impl std::fmt::Debug for UpstreamLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The role name comes from the vault: kept out of debug output and logs.
        f.debug_struct("UpstreamLogin")
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

/// Words without which a statement can do none of what [`check`] refuses (ASCII
/// case-insensitive). A statement containing none of them is passed without a parse. `u&`:
/// an identifier with Unicode escapes can spell a setting or function name without its letters.
/// `_mem`: the memory settings every agent is held to (`work_mem`, `maintenance_work_mem`,
/// `hash_mem_multiplier`). `execute`: SQL a DO block or function body builds at run time.
/// `e'`: an `E'...'` string can spell any word of a body with escapes (`\x41LTER`, `\A\L...`).
pub(super) const TRIGGERS: [&str; 15] = [
    "alter",
    "drop",
    "revoke",
    "encoding",
    "standard_conforming",
    "names",
    "set_config",
    "u&",
    "_mem",
    "execute",
    "e'",
    "pg_settings",
    "query_to_",
    "ts_stat",
    "ts_rewrite",
];

/// Whether `sql` may need [`check`]: it contains one of the trigger words.
pub fn may_touch(sql: &str) -> bool {
    static WORDS: super::screen::Screen = super::screen::Screen::new(&TRIGGERS);
    WORDS.matches(sql) || super::screen::continues_a_string(sql.as_bytes())
}

fn refuse(reason: impl Into<String>) -> Refusal {
    Refusal::permission(VAULT_LOGIN_RULE, reason)
}

/// Refuses `sql` if any of its statements would change, disable or drop the upstream login,
/// lock it out of its database, run ALTER SYSTEM, or change how the server reads SQL text.
/// `login` is `None` while the upstream's login is not known (settings are still checked).
/// A text that does not parse is refused (it is only asked about when [`may_touch`] said so).
pub fn check(sql: &str, login: Option<&UpstreamLogin>) -> Result<(), Refusal> {
    if !may_touch(sql) {
        return Ok(());
    }
    let owned = sql.to_owned();
    let login = login.cloned();
    let result = runner::run_with_large_stack(move || check_here(&owned, login.as_ref()));
    match result {
        Some(r) => r,
        None => Err(Refusal::new(
            RefusalClass::Unsupported,
            "builtin: analyser",
            "internal error: the analysis thread failed",
        )),
    }
}

fn check_here(sql: &str, login: Option<&UpstreamLogin>) -> Result<(), Refusal> {
    let parsed = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT).map_err(|e| {
        let e = map_pg_query_error(e);
        let class = match e {
            AnalyzeError::Syntax(_) => RefusalClass::Syntax,
            AnalyzeError::Unsupported(_) => RefusalClass::Unsupported,
        };
        Refusal::new(class, "builtin: analyser", e.to_string())
    })?;
    if let Some(r) = runs_sql_strings(&words_of(&[sql.to_ascii_lowercase()])) {
        return Err(r);
    }
    for raw in &parsed.protobuf.stmts {
        let Some(node) = raw.stmt.as_ref().and_then(|s| s.node.as_ref()) else {
            continue;
        };
        check_statement(node, statement_text(sql, raw), login)?;
    }
    static SET_CONFIG: super::screen::Screen = super::screen::Screen::new(&["set_config", "u&"]);
    if SET_CONFIG.matches(sql) {
        check_set_config(sql)?;
    }
    Ok(())
}

/// The text of one statement of `sql` (the rest of the string when the parser gives no length).
fn statement_text<'a>(sql: &'a str, raw: &pg_query::protobuf::RawStmt) -> &'a str {
    let start = usize::try_from(raw.stmt_location)
        .unwrap_or(0)
        .min(sql.len());
    let end = match usize::try_from(raw.stmt_len) {
        Ok(0) | Err(_) => sql.len(),
        Ok(len) => start.saturating_add(len).min(sql.len()),
    };
    sql.get(start..end).unwrap_or(sql)
}

fn is_login(login: Option<&UpstreamLogin>, role: Option<&RoleSpec>) -> bool {
    let Some(role) = role else {
        // `ALTER ROLE ALL ...`: every role, the login included.
        return true;
    };
    match RoleSpecType::try_from(role.roletype) {
        Ok(RoleSpecType::RolespecCstring) => is_login_name(login, &role.rolename),
        // CURRENT_USER, SESSION_USER, CURRENT_ROLE name the login itself through the gateway;
        // PUBLIC and unknown kinds are refused too (fail closed).
        _ => true,
    }
}

fn is_database(login: Option<&UpstreamLogin>, name: &str) -> bool {
    // Without a known login every database is treated as the upstream's (fail closed).
    match login {
        Some(l) => l.database == name,
        None => true,
    }
}

fn is_login_name(login: Option<&UpstreamLogin>, name: &str) -> bool {
    match login {
        Some(l) => l.role == name,
        None => true,
    }
}

fn string_of(node: Option<&Node>) -> Option<&str> {
    match node?.node.as_ref()? {
        N::String(s) => Some(&s.sval),
        _ => None,
    }
}

fn check_statement(node: &N, sql: &str, login: Option<&UpstreamLogin>) -> Result<(), Refusal> {
    match node {
        N::AlterRoleStmt(s) if is_login(login, s.role.as_ref()) => Err(refuse(
            "the upstream login tollgate uses may not be altered through tollgate",
        )),
        N::AlterRoleSetStmt(s) if is_login(login, s.role.as_ref()) => Err(refuse(
            "settings of the upstream login tollgate uses (or of every role) may not be changed through tollgate",
        )),
        N::DropRoleStmt(s) => {
            let hits = s.roles.iter().any(|r| match r.node.as_ref() {
                Some(N::RoleSpec(spec)) => is_login(login, Some(spec)),
                _ => true,
            });
            if hits {
                return Err(refuse(
                    "the upstream login tollgate uses may not be dropped through tollgate",
                ));
            }
            Ok(())
        }
        N::RenameStmt(s) => match ObjectType::try_from(s.rename_type) {
            Ok(ObjectType::ObjectRole) if is_login_name(login, &s.subname) => Err(
                refuse("the upstream login tollgate uses may not be renamed through tollgate"),
            ),
            Ok(ObjectType::ObjectDatabase) if is_database(login, &s.subname) => Err(refuse(
                "the upstream's database may not be renamed through tollgate",
            )),
            _ => Ok(()),
        },
        N::AlterDatabaseStmt(s) if is_database(login, &s.dbname) => Err(refuse(
            "the upstream's database may not be altered through tollgate (connection limits and ALLOW_CONNECTIONS lock every agent out)",
        )),
        N::AlterDatabaseSetStmt(AlterDatabaseSetStmt { dbname, .. })
            if is_database(login, dbname) =>
        {
            Err(refuse(
                "settings of the upstream's database may not be changed through tollgate (they apply to every agent's sessions)",
            ))
        }
        N::DropdbStmt(s) if is_database(login, &s.dbname) => Err(refuse(
            "the upstream's database may not be dropped through tollgate",
        )),
        N::AlterOwnerStmt(o) if owner_of_database(o, login) =>
        {
            Err(refuse(
                "the owner of the upstream's database may not be changed through tollgate",
            ))
        }
        N::GrantStmt(g) if revokes_connect(g, login) => Err(refuse(
            "CONNECT on the upstream's database may not be revoked through tollgate (it would lock every agent out)",
        )),
        N::AlterSystemStmt(_) => Err(Refusal::permission(
            SERVER_ADMIN_RULE,
            "ALTER SYSTEM changes the server for every agent and is never allowed through tollgate",
        )),
        N::VariableSetStmt(v) => check_set(v),
        // A rule on the view calls set_config for each row updated: any setting, by any name
        // (a re-review set work_mem to 3GB with `WHERE name LIKE 'work%em'`).
        N::UpdateStmt(u)
            if u.relation.as_ref().is_some_and(|r| {
                r.relname.eq_ignore_ascii_case("pg_settings")
                    && matches!(r.schemaname.as_str(), "" | "pg_catalog")
            }) =>
        {
            Err(Refusal::permission(
                PROTECTED_SETTING_RULE,
                "pg_settings may not be updated through tollgate: it sets any setting, including those no agent may",
            ))
        }
        // `CREATE FUNCTION ... SET x = v` and `ALTER FUNCTION/ROUTINE/PROCEDURE ... SET x = v`:
        // the setting holds while the function runs (the re-review set work_mem = '1TB' so).
        N::DoStmt(_) | N::CreateFunctionStmt(_) => {
            let texts = body_texts(node, sql);
            // Bodies as written and with string continuations joined, as nested SQL is read.
            let bodies: Vec<String> = texts[1..]
                .iter()
                .flat_map(|b| [b.clone(), joined(b)])
                .collect();
            if bodies.iter().any(|b| nests_escapes(b)) {
                return Err(refuse(
                    "a DO block or function body holding a string or identifier written with escapes (E'...', U&'...') is refused: SQL nested in it could hide what it does",
                ));
            }
            if let Some(reason) = bodies.iter().find_map(|b| computed_set_config(b)) {
                return Err(Refusal::permission(PROTECTED_SETTING_RULE, reason));
            }
            let words = words_of(&texts);
            if let Some(r) = runs_sql_strings(&words) {
                return Err(r);
            }
            if words.contains("pg_settings") {
                return Err(Refusal::permission(
                    PROTECTED_SETTING_RULE,
                    "a DO block or function body naming pg_settings is refused: updating it sets any setting",
                ));
            }
            if may_lock_out(&words) {
                return Err(refuse(
                    "a DO block or function body that alters or drops roles or databases, changes how the server reads SQL or sets the server's memory sizes, is refused: tollgate cannot tell which role or setting it would change",
                ));
            }
            if words.contains("execute") {
                return Err(refuse(
                    "a DO block or function body that runs SQL built at run time (EXECUTE) is refused: tollgate cannot tell whether it changes the upstream login (a role may always change its own password)",
                ));
            }
            match node {
                N::CreateFunctionStmt(f) => function_settings(&f.options),
                _ => Ok(()),
            }
        }
        N::AlterFunctionStmt(f) => function_settings(&f.actions),
        _ => Ok(()),
    }
}

fn owner_of_database(o: &AlterOwnerStmt, login: Option<&UpstreamLogin>) -> bool {
    o.object_type == ObjectType::ObjectDatabase as i32
        && is_database(login, string_of(o.object.as_deref()).unwrap_or(""))
}

/// `REVOKE CONNECT` (or ALL) `ON DATABASE <the upstream's>`.
fn revokes_connect(g: &GrantStmt, login: Option<&UpstreamLogin>) -> bool {
    if g.is_grant || g.objtype != ObjectType::ObjectDatabase as i32 {
        return false;
    }
    let on_ours = g
        .objects
        .iter()
        .any(|o| is_database(login, string_of(Some(o)).unwrap_or("")));
    // No privilege list means ALL PRIVILEGES.
    let connect = g.privileges.is_empty()
        || g.privileges.iter().any(|p| match p.node.as_ref() {
            Some(N::AccessPriv(a)) => a.priv_name.eq_ignore_ascii_case("connect"),
            _ => true,
        });
    on_ours && connect
}

/// The `SET` clauses among a function's options or ALTER FUNCTION's actions, each judged as a
/// `SET` statement.
fn function_settings(items: &[Node]) -> Result<(), Refusal> {
    for item in items {
        if let Some(N::DefElem(d)) = &item.node {
            if let Some(N::VariableSetStmt(v)) = d.arg.as_ref().and_then(|a| a.node.as_ref()) {
                check_set(v)?;
            }
        }
    }
    Ok(())
}

fn check_set(v: &VariableSetStmt) -> Result<(), Refusal> {
    let kind = super::classify::variable_set(v).map_err(|e| {
        Refusal::new(
            RefusalClass::Unsupported,
            "builtin: analyser",
            e.to_string(),
        )
    })?;
    if let StatementKind::Set { name, value, .. } = kind {
        check_setting_for_every_agent(&name, value.as_deref().unwrap_or("DEFAULT"))
            .map_err(|reason| Refusal::permission(PROTECTED_SETTING_RULE, reason))?;
    }
    Ok(())
}

/// `set_config(...)` calls: each must name a literal setting, and one that changes how SQL text
/// is read only to a value tollgate reads the same way.
fn check_set_config(sql: &str) -> Result<(), Refusal> {
    let analysis = super::analyze_here(sql).map_err(|e| {
        Refusal::new(
            RefusalClass::Unsupported,
            "builtin: analyser",
            e.to_string(),
        )
    })?;
    for call in analysis.statements.iter().flat_map(|s| &s.set_config_calls) {
        match call {
            Some((name, value)) => {
                check_setting_for_every_agent(name, value.as_deref().unwrap_or(""))
                    .map_err(|reason| Refusal::permission(PROTECTED_SETTING_RULE, reason))?;
            }
            None => {
                return Err(Refusal::permission(
                    PROTECTED_SETTING_RULE,
                    "set_config with a computed setting name is refused: it could change how the server reads SQL text",
                ))
            }
        }
    }
    Ok(())
}

/// The lower-case texts of a DO block or CREATE FUNCTION/PROCEDURE: the statement's, then its
/// body as the server reads it (escapes resolved: a body written as `E'...'` or `U&'...'`
/// spells its words with escapes the statement's text does not show).
fn body_texts(node: &N, sql: &str) -> Vec<String> {
    let defs: &[Node] = match node {
        N::DoStmt(d) => &d.args,
        N::CreateFunctionStmt(f) => &f.options,
        _ => &[],
    };
    let mut texts = vec![sql.to_ascii_lowercase()];
    for def in defs {
        let Some(N::DefElem(d)) = &def.node else {
            continue;
        };
        if d.defname != "as" {
            continue;
        }
        let mut push = |n: &Node| {
            if let Some(N::String(s)) = &n.node {
                texts.push(s.sval.to_ascii_lowercase());
            }
        };
        match d.arg.as_deref() {
            Some(Node {
                node: Some(N::List(l)),
            }) => l.items.iter().for_each(&mut push),
            Some(n) => push(n),
            None => {}
        }
    }
    texts
}

/// `text` with string continuations joined (`'AL'` newline `'TER'` reads `'ALTER'`), as the
/// server will read SQL nested in a body.
fn joined(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\'' {
            if let Some(gap) = super::screen::continuation_after(&b[i + 1..]) {
                i += gap + 2;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The words of [`body_texts`] (string continuations joined). Judged on words: the body is
/// another language.
fn words_of(texts: &[String]) -> std::collections::HashSet<String> {
    texts
        .iter()
        .map(|t| joined(t))
        .collect::<Vec<_>>()
        .iter()
        .flat_map(|t| t.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Whether a body (the decoded text, not the statement's) holds a string or identifier written
/// with escapes (`E'...'`, `U&'...'`, `U&"..."`): SQL nested in it (a function it creates, a DO
/// it runs) would spell its words with them, one level further than the body's own words show
/// (a re-review created a function whose `E'\x45XECUTE ...'` body changed the role's defaults).
fn nests_escapes(body: &str) -> bool {
    let b = body.as_bytes();
    (0..b.len()).any(|i| {
        let starts_token =
            i == 0 || !(b[i - 1].is_ascii_alphanumeric() || matches!(b[i - 1], b'_' | b'$'));
        starts_token
            && (b[i..].starts_with(b"e'")
                || b[i..].starts_with(b"u&'")
                || b[i..].starts_with(b"u&\""))
    })
}

/// Whether a body calls `set_config` with a setting name that is not a plain literal, or one
/// no agent may set: the name could be built to spell a protected setting (`'work_' ||
/// 'mem'`), which no word of the body shows.
fn computed_set_config(body: &str) -> Option<String> {
    let mut rest = body;
    while let Some(at) = rest.find("set_config") {
        rest = &rest[at + "set_config".len()..];
        let args = rest.trim_start();
        let Some(args) = args.strip_prefix('(') else {
            // `"set_config"(`, `set_config/**/(`: a call all the same, in a form this reading
            // does not follow (a re-review), so refused; a name merely containing the word
            // (`my_set_config_log`) too, fail closed.
            return Some(
                "set_config written in a form tollgate does not read (quoted, a comment before its arguments) in a body is refused".to_string(),
            );
        };
        let args = args.trim_start();
        let literal = args.strip_prefix('\'').and_then(|a| {
            let end = a.find('\'')?;
            let after = a[end + 1..].trim_start();
            (after.starts_with(',') && !a[..end].contains('\\')).then(|| &a[..end])
        });
        match literal {
            Some(name) => {
                if let Err(reason) = check_setting_for_every_agent(name, "") {
                    return Some(reason);
                }
            }
            None => {
                return Some(
                    "set_config with a computed setting name in a body is refused: it could change a setting no agent may".to_string(),
                )
            }
        }
    }
    None
}

/// Core functions that run a query given as a string (through SPI, read-only): the string can
/// be built at run time to set any setting (`set_con' || 'fig('work_m' || 'em', ...)`: a
/// re-review set work_mem to 5GB that way, and turned standard_conforming_strings off and back
/// on inside one statement). Refused for every agent, in any text or body that names them.
const SQL_STRING_RUNNERS: [&str; 5] = [
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "ts_stat",
    "ts_rewrite",
];

fn runs_sql_strings(words: &std::collections::HashSet<String>) -> Option<Refusal> {
    let name = SQL_STRING_RUNNERS.iter().find(|w| words.contains(**w))?;
    Some(Refusal::permission(
        PROTECTED_SETTING_RULE,
        format!("{name} runs SQL given as a string, which tollgate cannot read (it could change settings no agent may): refused through tollgate"),
    ))
}

/// Words that could alter or drop a role or database, revoke CONNECT, or change how SQL is read.
fn may_lock_out(words: &std::collections::HashSet<String>) -> bool {
    let has = |w: &str| words.contains(w);
    let target = ["role", "user", "group", "database", "system"]
        .iter()
        .any(|w| has(w));
    ((has("alter") || has("drop")) && target)
        || (has("revoke") && (has("connect") || has("database")))
        || has("standard_conforming_strings")
        || has("client_encoding")
        || (has("set") && has("names"))
        || has("work_mem")
        || has("maintenance_work_mem")
        || has("hash_mem_multiplier")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login() -> UpstreamLogin {
        UpstreamLogin {
            role: "tollgate_shop".into(),
            database: "shop".into(),
        }
    }

    fn rule(sql: &str) -> Option<String> {
        check(sql, Some(&login())).err().map(|r| r.rule)
    }

    #[test]
    fn statements_that_touch_the_login_are_refused() {
        for sql in [
            "ALTER ROLE tollgate_shop PASSWORD 'x'",
            "alter user tollgate_shop with password 'x'",
            "ALTER ROLE tollgate_shop NOLOGIN",
            "ALTER ROLE tollgate_shop VALID UNTIL '2000-01-01'",
            "ALTER ROLE tollgate_shop CONNECTION LIMIT 0",
            "ALTER ROLE CURRENT_USER PASSWORD 'x'",
            "ALTER USER SESSION_USER PASSWORD NULL",
            "ALTER ROLE current_role NOINHERIT",
            "ALTER ROLE tollgate_shop RENAME TO other",
            "ALTER ROLE tollgate_shop SET statement_timeout = 1",
            "ALTER ROLE ALL SET default_transaction_read_only = on",
            "DROP ROLE tollgate_shop",
            "DROP USER IF EXISTS someone, tollgate_shop",
            "ALTER DATABASE shop CONNECTION LIMIT 0",
            "ALTER DATABASE shop WITH ALLOW_CONNECTIONS false",
            "ALTER DATABASE shop RENAME TO gone",
            "ALTER DATABASE shop OWNER TO someone",
            "ALTER DATABASE shop SET client_encoding = 'SJIS'",
            "DROP DATABASE shop WITH (FORCE)",
            "REVOKE CONNECT ON DATABASE shop FROM PUBLIC",
            "REVOKE ALL ON DATABASE shop FROM tollgate_shop",
            "SELECT 1; ALTER ROLE tollgate_shop PASSWORD 'x'",
            "/* hidden */ ALTER/**/ROLE tollgate_shop PASSWORD 'x'",
            "DO $$ BEGIN EXECUTE 'ALTER ROLE ' || current_user || ' PASSWORD ''x'''; END $$",
            "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$ ALTER ROLE tollgate_shop NOLOGIN $$",
            "CREATE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN EXECUTE 'DROP ROLE x'; END $$",
            // SQL built at run time: its words are not in the text (a review changed the
            // vaulted role's password from a base64 string).
            "DO $$ DECLARE s text := convert_from(decode('QUxURVIgUk9MRQ==', 'base64'), 'UTF8'); BEGIN EXECUTE s || ' CURRENT_USER PASSWORD ''z'''; END $$",
            "DO $$ BEGIN EXECUTE concat('ALT', 'ER RO', 'LE ', current_user, ' PASSWORD ''z'''); END $$",
            "CREATE FUNCTION h(q text) RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE q; END $$",
            "DO $$ DECLARE r record; BEGIN FOR r IN EXECUTE 'SELECT 1' LOOP END LOOP; END $$",
            // Words spelt with escapes in an E'' or U&'' body.
            "DO E'BEGIN \\x41LTER ROLE tollgate_shop PASSWORD ''q''; END'",
            "DO e'BEGIN \\A\\L\\T\\E\\R ROLE CURRENT_USER NOLOGIN; END'",
            "CREATE FUNCTION k() RETURNS void LANGUAGE plpgsql AS E'BEGIN \\x45XECUTE ''x''; END'",
            "DO U&'BEGIN \\0041LTER ROLE CURRENT_USER NOLOGIN; END'",
            // Escapes one level further down: in SQL a body creates or runs (a re-review).
            "CREATE FUNCTION mk() RETURNS void LANGUAGE sql AS $$ CREATE FUNCTION inner_f() RETURNS void LANGUAGE plpgsql AS E'BEGIN \\x45XECUTE ''x''; END' $$",
            "DO $$ BEGIN DO E'BEGIN \\x45XECUTE ''x''; END'; END $$",
            "DO $$ BEGIN SET U&\"standard\\005fconforming_strings\" = off; END $$",
            // String continuations: PostgreSQL joins 'AL' newline 'TER' (a re-review).
            "DO 'BEGIN AL'\n'TER ROLE CURRENT_USER SET application_name = ''x''; END'",
            "DO $f$ BEGIN DO 'BEGIN AL'\n  'TER ROLE CURRENT_USER SET application_name = ''x''; END'; END $f$",
            "DO 'BEGIN SET work_m'\n'em = ''2GB''; END'",
            // Continuations across a `--` comment or a bare CR (a re-review).
            "DO 'BEGIN AL' --x\n'TER ROLE CURRENT_USER SET application_name = ''x''; END'",
            "DO 'BEGIN AL'\r'TER ROLE CURRENT_USER SET application_name = ''x''; END'",
            "SELECT 1 AS names; DO $f$ BEGIN DO 'BEGIN AL' -- c\n'TER ROLE CURRENT_USER SET application_name = ''x''; END'; END $f$",
        ] {
            assert_eq!(rule(sql).as_deref(), Some(VAULT_LOGIN_RULE), "{sql}");
        }
        assert_eq!(
            rule("ALTER SYSTEM SET password_encryption = 'md5'").as_deref(),
            Some(SERVER_ADMIN_RULE)
        );
        assert_eq!(
            rule("ALTER SYSTEM RESET ALL").as_deref(),
            Some(SERVER_ADMIN_RULE)
        );
    }

    #[test]
    fn everything_else_passes() {
        for sql in [
            "SELECT 1",
            "ALTER TABLE orders ADD COLUMN note text",
            "DROP TABLE IF EXISTS scratch",
            "ALTER ROLE someone_else PASSWORD 'x'",
            "DROP ROLE someone_else",
            "ALTER ROLE someone_else RENAME TO other",
            "ALTER DATABASE other CONNECTION LIMIT 0",
            "DROP DATABASE other",
            "REVOKE SELECT ON orders FROM PUBLIC",
            "REVOKE TEMP ON DATABASE shop FROM PUBLIC",
            "SET client_encoding = 'UTF8'",
            "SET standard_conforming_strings = on",
            "SELECT set_config('application_name', 'x', false)",
            "DO $$ BEGIN PERFORM 1; END $$",
            "CREATE FUNCTION g() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$",
            "SELECT names FROM t",
            "SELECT 'true', E'a\\nb'",
            "DO E'BEGIN RAISE NOTICE ''hi\\n''; END'",
            "PREPARE q AS SELECT 1; EXECUTE q",
            "DO $$ BEGIN PERFORM set_config('application_name', 'x', false); RAISE NOTICE 'done'; END $$",
            "CREATE FUNCTION al() RETURNS text LANGUAGE sql AS $$ SELECT 'alice' $$",
        ] {
            assert_eq!(rule(sql), None, "{sql}");
        }
    }

    #[test]
    fn settings_that_change_how_sql_is_read_are_refused() {
        for sql in [
            "SET standard_conforming_strings = off",
            "SET SESSION standard_conforming_strings TO false",
            "SET client_encoding = 'SJIS'",
            "SET NAMES 'BIG5'",
            "SELECT set_config('standard_conforming_strings', 'off', false)",
            "SELECT set_config('client_' || 'encoding', 'GBK', false)",
            // Names spelled with U& escapes carry none of the screen's words.
            "SET U&\"standard\\005fconforming_strings\" = off",
            "SET U&\"client\\005fencoding\" = 'SJIS'",
            "SELECT U&\"set\\005fconfig\"('standard_conforming_strings', 'off', false)",
            // A setting name built at run time in a body.
            "DO $$ BEGIN PERFORM set_config('standard_' || 'conforming_strings', 'off', false); END $$",
            "CREATE FUNCTION s() RETURNS text LANGUAGE sql AS $$ SELECT set_config('work_' || 'mem', '1TB', false) $$",
            "DO $$ BEGIN PERFORM set_config( 'work_mem', '1TB', false); END $$",
            // pg_settings' rule calls set_config; quoted or commented set_config calls.
            "UPDATE pg_settings SET setting = '3GB' WHERE name LIKE 'work%em'",
            "update pg_catalog.pg_settings set setting = 'off' where name = 'standard_conforming_strings'",
            "DO $$ BEGIN UPDATE pg_settings SET setting = 'off' WHERE name LIKE 'standard%strings'; END $$",
            "DO $$ BEGIN PERFORM \"set_config\"('work_' || 'mem', '3GB', false); END $$",
            "DO $$ BEGIN PERFORM set_config/**/('work_' || 'mem', '4GB', false); END $$",
            // Functions that run a query given as a string.
            "SELECT query_to_xml('select set_con'||'fig(''work_m'||'em'', ''3GB'', false) AS v', false, false, '')",
            "SELECT * FROM ts_stat('select to_tsvector(''x'')')",
            "DO $$ BEGIN PERFORM query_to_xml('select 1', false, false, ''); END $$",
        ] {
            assert_eq!(rule(sql).as_deref(), Some(PROTECTED_SETTING_RULE), "{sql}");
        }
    }

    #[test]
    fn the_screen_is_cheap_and_case_blind() {
        assert!(!may_touch("SELECT * FROM orders WHERE id = 1"));
        assert!(may_touch("AlTeR role x"));
        assert!(may_touch("select set_config('a','b',false)"));
        // Unparseable text that trips the screen is refused, never passed unchecked.
        assert_eq!(rule("ALTER ROLE").as_deref(), Some("builtin: analyser"));
        // Without a known login, every role name and database is treated as the login's.
        assert!(check("DROP DATABASE anything", None).is_err());
        assert!(check("SELECT 1", None).is_ok());
    }

    #[test]
    fn the_role_never_shows_in_debug_output() {
        assert!(!format!("{:?}", login()).contains("tollgate_shop"));
    }
}
