//! The policy engine's verdicts on the demo policies for the decision table (pure: no database).

mod support;

use std::sync::Arc;

use support::decision_table::*;
use tollgate::policy::{Engine, Outcome, SessionFacts};

fn verdict(engine: &Engine, agent: &str, sql: &str) -> Outcome {
    let agent: Arc<str> = agent.into();
    let upstream: Arc<str> = "shop".into();
    engine
        .check_sql(&agent, &upstream, sql, &SessionFacts::default())
        .outcome
}

fn check(agent: &str, allowed: &[&str], refused: &[&str]) {
    let engine = demo_engine();
    let mut wrong = Vec::new();
    for sql in allowed {
        if verdict(&engine, agent, sql) != Outcome::Allow {
            let v = engine.check_sql(&agent.into(), &"shop".into(), sql, &SessionFacts::default());
            wrong.push(format!("should be allowed: {sql}\n    {:?}", v.denial));
        }
    }
    for sql in refused {
        if verdict(&engine, agent, sql) != Outcome::Block {
            wrong.push(format!("should be refused: {sql}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong verdicts for {agent}:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn analyst_decisions() {
    assert!(ANALYST_ALLOWED.len() + ANALYST_REFUSED.len() >= 200);
    check("analyst", ANALYST_ALLOWED, ANALYST_REFUSED);
}

#[test]
fn writer_decisions() {
    check("writer", WRITER_ALLOWED, WRITER_REFUSED);
}

#[test]
fn verdicts_do_not_change_when_served_from_the_cache() {
    let engine = demo_engine();
    for sql in ANALYST_ALLOWED.iter().chain(ANALYST_REFUSED) {
        let first = verdict(&engine, "analyst", sql);
        let second = verdict(&engine, "analyst", sql);
        assert_eq!(first, second, "{sql}");
    }
    // Same shape, other literals: served by fingerprint, same verdict.
    assert_eq!(
        verdict(&engine, "analyst", "SELECT * FROM orders WHERE id = 77"),
        Outcome::Allow
    );
    assert_eq!(
        verdict(&engine, "analyst", "SELECT * FROM secrets WHERE id = 77"),
        Outcome::Block
    );
    assert_eq!(
        verdict(&engine, "analyst", "SELECT * FROM orders o WHERE id = 1"),
        Outcome::Allow
    );
    assert_eq!(
        verdict(&engine, "analyst", "SELECT * FROM secrets o WHERE id = 1"),
        Outcome::Block
    );
    // A setting's name is a literal, and decides: not one shape.
    assert_eq!(
        verdict(&engine, "analyst", "SELECT current_setting('datestyle')"),
        Outcome::Allow
    );
    assert_eq!(
        verdict(
            &engine,
            "analyst",
            "SELECT current_setting('app.jwt_secret')"
        ),
        Outcome::Block
    );
}

#[test]
fn sql_prepared_statements_are_tracked_per_session() {
    let engine = demo_engine();
    let mut facts = SessionFacts::default();
    let a: Arc<str> = "analyst".into();
    let up: Arc<str> = "shop".into();
    assert_eq!(
        engine.check_sql(&a, &up, "EXECUTE q(1)", &facts).outcome,
        Outcome::Block
    );
    facts.sql_prepared.insert("q".into());
    assert_eq!(
        engine.check_sql(&a, &up, "EXECUTE q(1)", &facts).outcome,
        Outcome::Allow
    );
    // Its plan would estimate from masked columns' statistics: the analyst masks some.
    let explained = engine.check_sql(&a, &up, "EXPLAIN ANALYZE EXECUTE q(1)", &facts);
    assert_eq!(explained.outcome, Outcome::Block);
    assert_eq!(
        explained
            .denial
            .as_ref()
            .map(|d| d.rule.to_string())
            .as_deref(),
        Some("builtin: mask-statistics")
    );
}

#[test]
fn passthrough_allows_what_the_upstream_role_may_do() {
    let engine = demo_engine();
    for sql in [
        "SELECT * FROM secrets",
        "CREATE TEMP TABLE t (i int)",
        "DO $$ BEGIN END $$",
        "SET search_path = x",
    ] {
        assert_eq!(verdict(&engine, "trusted", sql), Outcome::Allow, "{sql}");
    }
}

/// What client libraries send on their own (found by tests/clients): asyncpg's type
/// introspection turns JIT off with `set_config` and its pool resets connections with
/// `pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`; pgjdbc's metadata calls
/// `information_schema._pg_expandarray`. None of it reads data or changes identity.
#[test]
fn client_library_housekeeping() {
    check(
        "analyst",
        &[
            "SELECT current_setting('jit') AS cur, set_config('jit', 'off', false) AS new",
            "SELECT set_config('jit', $1, false)",
            "SELECT pg_catalog.set_config('statement_timeout', '5s', true)",
            "SELECT set_config('application_name', 'x', false), set_config('TimeZone', 'UTC', false)",
            "SELECT set_config('client_encoding', 'UTF8', false)",
            "SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;",
            "UNLISTEN news",
            "SELECT result.a FROM (SELECT information_schema._pg_expandarray(ARRAY[1,2]) AS a) result",
        ],
        &[
            "SELECT set_config('search_path', 'evil', false)",
            "SELECT set_config('role', 'postgres', false)",
            "SELECT set_config('session_authorization', 'postgres', false)",
            "SELECT set_config('standard_conforming_strings', 'off', false)",
            "SELECT set_config('client_encoding', 'SJIS', false)",
            "SELECT set_config('client_encoding', $1, false)",
            "SELECT set_config(current_setting('application_name'), 'x', false)",
            "SELECT set_config($1, 'x', false)",
            "SELECT set_config('jit', 'off', false), set_config('search_path', 'x', false)",
            "SELECT public.set_config('jit', 'off', false)",
            "SELECT pg_advisory_lock(1)",
            "SELECT pg_advisory_unlock(1)",
            "LISTEN news",
            "NOTIFY news",
            "SELECT public._pg_expandarray(ARRAY[1])",
            "SELECT information_schema._pg_char_max_length(25, 10)",
        ],
    );
}

/// The verdict cache is shared by an agent's sessions of every pooling: the passthrough agent's
/// unanalysed "allow" for a session-pooled session must not be served to a transaction-pooled
/// one (its MCP calls), which must learn that the statement leaves session state behind.
#[test]
fn a_passthrough_verdict_for_a_dedicated_session_is_not_reused_for_a_pooled_one() {
    let engine = demo_engine();
    let (agent, upstream): (Arc<str>, Arc<str>) = ("trusted".into(), "shop".into());
    // `set_config` makes the passthrough fast path analyse the text (the login guard's words).
    let sql = "SELECT set_config('application_name', 'x', false)";
    let dedicated = engine.check_sql(&agent, &upstream, sql, &SessionFacts::default());
    assert_eq!(dedicated.outcome, Outcome::Allow);
    let pooled = SessionFacts {
        pooled: true,
        ..SessionFacts::default()
    };
    let v = engine.check_sql(&agent, &upstream, sql, &pooled);
    assert_eq!(v.outcome, Outcome::Allow);
    assert!(
        v.leaves_state,
        "a session-level set_config leaves state behind"
    );
}

/// An engine over one policy file for `analyst` on `shop`.
fn engine_with(policy: &str) -> Engine {
    use std::path::PathBuf;
    use tollgate::auth::{AgentStore, AgentsFile};
    use tollgate::config::UpstreamKind;
    use tollgate::policy::{PolicyContext, PolicySet};
    let mut agents = AgentsFile::default();
    agents.add("analyst", "tg_test", vec![]).unwrap();
    let store = AgentStore::from_file(&PathBuf::from("agents.toml"), agents).unwrap();
    let shop = (
        "shop".to_string(),
        UpstreamKind::Postgres,
        vec!["public".to_string()],
    );
    let ctx = PolicyContext::for_upstreams(&store, [shop]);
    let set = PolicySet::from_sources(vec![(PathBuf::from("p.toml"), policy.into())], &ctx);
    Engine::new(set.unwrap())
}

fn rule_of(engine: &Engine, sql: &str) -> Option<String> {
    let v = engine.check_sql(
        &"analyst".into(),
        &"shop".into(),
        sql,
        &SessionFacts::default(),
    );
    v.denial.as_ref().map(|d| d.rule.to_string())
}

#[test]
fn an_allow_reaches_a_schema_and_a_table_each_by_its_own_part() {
    // A live review read `"public.evil".t` under `public.*`: the joined text `public.evil.t`
    // matched the glob.
    let e = engine_with(
        "agents = [\"analyst\"]\n[[postgres]]\nupstream = \"shop\"\n[[postgres.table]]\nname = \"public.*\"\nallow = [\"select\"]\n",
    );
    assert_eq!(rule_of(&e, "SELECT * FROM public.orders"), None);
    assert_eq!(
        rule_of(&e, "SELECT * FROM \"public.orders\""),
        Some("builtin: dotted-name".into())
    );
    for sql in [
        "SELECT secret FROM \"public.evil\".t",
        "SELECT * FROM public.\"x.y\"",
        "SELECT * FROM \"x.y\"",
        "SELECT * FROM shop.\"public.evil\".t",
        "SELECT \"public.evil\".f()",
    ] {
        let rule = rule_of(&e, sql);
        assert_eq!(rule.as_deref(), Some("builtin: dotted-name"), "{sql}");
    }
    assert_eq!(
        rule_of(&e, "SELECT * FROM sales.orders"),
        Some("default-deny".into())
    );
}

#[test]
fn a_bare_star_is_every_schema_but_the_system_ones() {
    // `name = "*"` was read as `public.*`: a `deny = ["*"]` left every other schema open.
    let deny_all = engine_with(
        "agents = [\"analyst\"]\n[[postgres]]\nupstream = \"shop\"\n[[postgres.table]]\nname = \"Public.*\"\nallow = [\"select\"]\n[[postgres.table]]\nname = \"*\"\ndeny = [\"*\"]\n",
    );
    for sql in [
        "SELECT * FROM \"Public\".\"Orders\"",
        "SELECT * FROM orders",
        "SELECT * FROM sales.orders",
    ] {
        assert_eq!(
            rule_of(&deny_all, sql).as_deref(),
            Some("p: table *.*"),
            "{sql}"
        );
    }
    let allow_all = engine_with(
        "agents = [\"analyst\"]\n[[postgres]]\nupstream = \"shop\"\n[[postgres.table]]\nname = \"*\"\nallow = [\"select\"]\n",
    );
    assert_eq!(rule_of(&allow_all, "SELECT * FROM sales.orders"), None);
    assert_eq!(rule_of(&allow_all, "SELECT * FROM orders"), None);
    // pg_toast holds masked columns' raw values: a wildcard schema never reaches it.
    assert_eq!(
        rule_of(&allow_all, "SELECT * FROM pg_toast.pg_toast_16384").as_deref(),
        Some("default-deny")
    );
    let named = engine_with(
        "agents = [\"analyst\"]\n[[postgres]]\nupstream = \"shop\"\n[[postgres.table]]\nname = \"pg_toast.*\"\nallow = [\"select\"]\n",
    );
    assert_eq!(
        rule_of(&named, "SELECT * FROM pg_toast.pg_toast_16384"),
        None
    );
}

/// Passthrough with a deny (or a mask): SQL the analysis cannot read would get around it. A
/// live review read a denied table through `query_to_xml('select ... from secrets', ...)` and a
/// DO block. Refused unless the policy names them; a passthrough without protections is whole.
#[test]
fn passthrough_with_a_deny_refuses_sql_it_cannot_read() {
    let base =
        "agents = [\"analyst\"]\n[[postgres]]\nupstream = \"shop\"\nprofile = \"passthrough\"\n";
    let deny = "[[postgres.table]]\nname = \"public.secrets\"\ndeny = [\"*\"]\n";
    let guarded = engine_with(&format!("{base}{deny}"));
    let unread = Some("builtin: unread-sql".to_string());
    assert_eq!(rule_of(&guarded, "SELECT * FROM orders"), None);
    assert_eq!(
        rule_of(&guarded, "SELECT * FROM secrets"),
        Some("p: table public.secrets".into())
    );
    // Functions that run SQL given as a string are refused for every agent, before any policy
    // (they could set work_mem or standard_conforming_strings: a re-review).
    let runner = Some("builtin: protected-setting".to_string());
    assert_eq!(
        rule_of(
            &guarded,
            "SELECT query_to_xml('select api_key from secrets limit 1', false, false, '')"
        ),
        runner
    );
    for sql in [
        "SELECT pg_catalog.table_to_xml('secrets', false, false, '')",
        "SELECT database_to_xml(true, false, '')",
        "SELECT * FROM dblink('dbname=shop', 'select api_key from secrets') AS t(k text)",
        "DO $$ BEGIN PERFORM * FROM secrets; END $$",
        "CREATE FUNCTION leak() RETURNS SETOF text LANGUAGE sql AS $$ SELECT api_key FROM secrets $$",
        "CREATE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN NULL; END $$",
    ] {
        assert_eq!(rule_of(&guarded, sql), unread, "{sql}");
    }
    // A body the analysis reads: judged as SQL.
    assert_eq!(
        rule_of(&guarded, "CREATE FUNCTION n() RETURNS bigint LANGUAGE sql BEGIN ATOMIC SELECT count(*) FROM orders; END"),
        None
    );
    let trusting = engine_with(&format!(
        "{base}statements = [\"do\"]\nfunctions = [\"query_to_xml\"]\n{deny}"
    ));
    assert_eq!(rule_of(&trusting, "DO $$ BEGIN NULL; END $$"), None);
    assert_eq!(
        rule_of(
            &trusting,
            "SELECT query_to_xml('select 1', false, false, '')"
        ),
        runner
    );
    assert_eq!(
        rule_of(
            &trusting,
            "SELECT table_to_xml('secrets', false, false, '')"
        ),
        unread
    );
    let open = engine_with(base);
    assert_eq!(rule_of(&open, "DO $$ BEGIN NULL; END $$"), None);
    assert_eq!(
        rule_of(&open, "SELECT query_to_xml('select 1', false, false, '')"),
        runner
    );
}

/// Memory sizes hold for every agent, passthrough included (DESIGN: no passthrough command may
/// make the upstream unavailable to others): a live review set work_mem = '1TB' as trusted.
#[test]
fn memory_settings_are_bounded_for_passthrough_agents_too() {
    let engine = demo_engine();
    for sql in [
        "SET work_mem = '64MB'",
        "SET LOCAL work_mem TO 32768",
        "SET maintenance_work_mem = '512MB'",
        "SET hash_mem_multiplier = 1.5",
        "SELECT set_config('work_mem', '16MB', false)",
        "RESET work_mem",
        "SELECT 1 AS mem_ok",
        // pg_dump's own statement: the name is the WHERE clause's literal
        "SELECT set_config(name, 'view, foreign-table', false) FROM pg_settings WHERE name = 'restrict_nonsystem_relation_kind'",
    ] {
        assert_eq!(verdict(&engine, "trusted", sql), Outcome::Allow, "{sql}");
    }
    for sql in [
        "SET work_mem = '1TB'",
        "set WORK_MEM to 1048576",
        "SET SESSION work_mem = '65MB'",
        "SELECT set_config('work_mem', '2GB', false)",
        "SET maintenance_work_mem = '2GB'",
        "SET hash_mem_multiplier = 1000",
        "DO $$ BEGIN EXECUTE 'SET work_mem = ''1TB'''; END $$",
        "SET \"work_mem\" = '1TB'",
        "SELECT set_config(name, '2GB', false) FROM pg_settings WHERE name = 'work_mem'",
        // a temporary pg_settings whose name is char(8) matches 'work_mem   ' (the re-review)
        "SELECT set_config(name, '1GB', false) FROM pg_settings WHERE name = 'work_mem   '",
        "SELECT set_config(name, 'off', false) FROM pg_settings WHERE name = 'standard_conforming_strings'",
        "SELECT set_config(name, 'off', false) FROM pg_settings WHERE name = 'restrict_nonsystem_relation_kind'",
        "SELECT set_config(name, '2GB', false) FROM pg_settings WHERE name = 'work_mem' OR name = 'x'",
        "SELECT set_config(name, '2GB', false) FROM pg_settings WHERE name LIKE 'work%'",
    ] {
        assert_eq!(verdict(&engine, "trusted", sql), Outcome::Block, "{sql}");
    }
}

/// Three ways around a deny the re-review found, next to this session's fixes: a `public.*`
/// function allow reaching the unqualified built-in `query_to_xml`; a passthrough agent with a
/// deny reading the denied table's values in `pg_stats`; and `ts_rewrite` run through a
/// temporary aggregate or operator, which calls it without naming it.
#[test]
fn a_deny_holds_against_catalog_builtins_statistics_and_wrapped_functions() {
    let restricted = engine_with(
        "agents = [\"analyst\"]\n[[postgres]]\nupstream = \"shop\"\nfunctions = [\"public.*\"]\n[[postgres.table]]\nname = \"public.*\"\nallow = [\"select\"]\n[[postgres.table]]\nname = \"public.secrets\"\ndeny = [\"*\"]\n",
    );
    assert_eq!(
        rule_of(
            &restricted,
            "SELECT query_to_xml('select api_key from secrets', true, true, '')"
        )
        .as_deref(),
        Some("builtin: protected-setting")
    );
    for sql in [
        "SELECT table_to_xml('secrets', true, true, '')",
        "SELECT pg_read_file('/etc/passwd')",
    ] {
        assert_eq!(
            rule_of(&restricted, sql).as_deref(),
            Some("default-deny"),
            "{sql}"
        );
    }
    assert_eq!(rule_of(&restricted, "SELECT public.order_total(1)"), None);
    assert_eq!(rule_of(&restricted, "SELECT order_total(1)"), None);

    let base =
        "agents = [\"analyst\"]\n[[postgres]]\nupstream = \"shop\"\nprofile = \"passthrough\"\n";
    let deny = "[[postgres.table]]\nname = \"public.secrets\"\ndeny = [\"*\"]\n";
    let guarded = engine_with(&format!("{base}{deny}"));
    let stats = "SELECT histogram_bounds FROM pg_stats WHERE tablename = 'secrets'";
    assert_eq!(
        rule_of(&guarded, stats).as_deref(),
        Some("builtin: sensitive-catalog")
    );
    let named = engine_with(&format!(
        "{base}{deny}[[postgres.table]]\nname = \"pg_catalog.pg_stats\"\nallow = [\"select\"]\n"
    ));
    assert_eq!(rule_of(&named, stats), None);
    assert_eq!(rule_of(&engine_with(base), stats), None);
    // Naming ts_rewrite (it runs a query given as a string) is refused for every agent first.
    for (sql, rule) in [
        (
            "CREATE AGGREGATE pg_temp.agg(text) (sfunc = ts_rewrite, stype = tsquery, initcond = 'x')",
            "builtin: protected-setting",
        ),
        (
            "CREATE OPERATOR pg_temp.~~~ (leftarg = tsquery, rightarg = text, function = ts_rewrite)",
            "builtin: protected-setting",
        ),
        (
            "CREATE CAST (text AS tsquery) WITH FUNCTION pg_temp.f(text)",
            "builtin: unread-sql",
        ),
    ] {
        assert_eq!(rule_of(&guarded, sql).as_deref(), Some(rule), "{sql}");
    }
}

/// A function's own SET clauses hold while it runs: they are held to the same memory sizes
/// (the re-review set work_mem = '1TB' with ALTER FUNCTION ... SET, and with CREATE FUNCTION
/// ... SET U&"work\005fmem").
#[test]
fn function_set_clauses_are_held_to_the_memory_sizes() {
    let engine = demo_engine();
    for sql in [
        "ALTER FUNCTION pg_temp.wm() SET work_mem = '1TB'",
        "ALTER ROUTINE pg_temp.wm() SET hash_mem_multiplier = 1000",
        "ALTER PROCEDURE pg_temp.p() SET maintenance_work_mem = '100GB'",
        "CREATE FUNCTION pg_temp.u1() RETURNS int LANGUAGE sql SET U&\"work\\005fmem\" = '1TB' BEGIN ATOMIC SELECT 1; END",
        "CREATE FUNCTION pg_temp.u2() RETURNS int LANGUAGE sql SET work_mem = '1TB' RETURN 1",
    ] {
        assert_eq!(verdict(&engine, "trusted", sql), Outcome::Block, "{sql}");
    }
    for sql in [
        "ALTER FUNCTION pg_temp.wm() SET work_mem = '32MB'",
        "CREATE FUNCTION pg_temp.u3() RETURNS int LANGUAGE sql SET search_path = public RETURN 1",
    ] {
        assert_eq!(verdict(&engine, "trusted", sql), Outcome::Allow, "{sql}");
    }
}

/// An agent whose policy went away (removed from the files, then a reload) may still roll back
/// the transaction it is in: ending a transaction grants nothing, and its ROLLBACK was refused,
/// so the transaction held a pooled server connection until the client left (a review).
#[test]
fn an_agent_without_a_policy_may_only_roll_back() {
    let engine = engine_with("agents = [\"someone_else\"]\n[[postgres]]\nupstream = \"shop\"\n");
    let v = engine.check_sql(
        &"analyst".into(),
        &"shop".into(),
        "ROLLBACK",
        &SessionFacts::default(),
    );
    assert!(v.runs(), "{:?}", v.denial);
    assert_eq!(rule_of(&engine, "ROLLBACK"), None);
    assert_eq!(rule_of(&engine, "abort"), None);
    for sql in [
        "COMMIT",
        "SELECT 1",
        "ROLLBACK; SELECT 1",
        "ROLLBACK TO SAVEPOINT s",
    ] {
        assert_eq!(
            rule_of(&engine, sql).as_deref(),
            Some("default-deny"),
            "{sql}"
        );
    }
}
