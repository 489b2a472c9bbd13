//! The `hash` mask's key in rewritten text. A masking subquery carries the key as a literal
//! (PostgreSQL computes the keyed digest), and whoever holds it can reverse hashed values by
//! trying every likely value (SSNs, phone numbers) offline. So a rewritten statement shown to a
//! person (the MCP `explain` tool, `tollgate explain`) shows [`PLACEHOLDER`] instead, and a
//! statement that would make the server show its own text, or a prepared statement's, is refused
//! under [`RULE`] (`decide::check_mask_key`).

use std::borrow::Cow;

/// The rule named by refusals of statements that would show the key.
pub const RULE: &str = "builtin: mask-key";

/// What takes the key's place in a rewritten statement shown to a person: inside the string
/// literal, so the text reads `'<mask key>' || "ssn"::text`.
pub const PLACEHOLDER: &str = "<mask key>";

/// `text` with every occurrence of `key` (the hex key) replaced by [`PLACEHOLDER`]. An empty key
/// (none loaded) hides nothing.
pub fn hide<'a>(text: &'a str, key: &str) -> Cow<'a, str> {
    if key.is_empty() || !text.contains(key) {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.replace(key, PLACEHOLDER))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::mask::MaskStrategy;

    const KEY: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn the_key_of_a_hash_expression_becomes_the_placeholder() {
        let expr = MaskStrategy::Hash.expression("\"ssn\"", "text", 'S', KEY);
        assert!(expr.contains(KEY), "{expr}");
        let shown = hide(&expr, KEY);
        assert!(!shown.contains(KEY), "{shown}");
        assert!(
            shown.contains("convert_to('<mask key>' || \"ssn\"::text, 'UTF8')"),
            "{shown}"
        );
    }

    #[test]
    fn every_occurrence_is_hidden_and_other_text_is_kept() {
        let two = format!("SELECT '{KEY}' || a, x'{KEY}' FROM t -- {KEY}");
        assert_eq!(
            hide(&two, KEY),
            "SELECT '<mask key>' || a, x'<mask key>' FROM t -- <mask key>"
        );
        let none = "SELECT name FROM customers";
        assert!(matches!(hide(none, KEY), Cow::Borrowed(t) if t == none));
    }

    /// DDL on every table of `public` (views, tables), for `builder` and `plain`.
    const DDL: &str =
        "statements = [\"ddl\"]\n[[postgres.table]]\nname = \"public.*\"\nallow = [\"ddl\"]";

    /// An engine on the demo schema where `analyst` reads customers with `ssn` hashed (and may
    /// call `current_query()`), `trusted` is a passthrough agent with the same hash mask,
    /// `builder` has it too and may run DDL, and `plain` may run DDL and masks `ssn` with
    /// `redact` only.
    fn engine() -> crate::policy::Engine {
        use crate::auth::{AgentStore, AgentsFile};
        use crate::policy::{PolicyContext, PolicySet};
        use std::path::PathBuf;
        let mut agents = AgentsFile::default();
        for name in ["analyst", "trusted", "builder", "plain"] {
            agents.add(name, "tg_x", vec![]).unwrap();
        }
        let store = AgentStore::from_file(&PathBuf::from("agents.toml"), agents).unwrap();
        let ctx = PolicyContext::for_upstreams(
            &store,
            [(
                "shop".into(),
                crate::config::UpstreamKind::Postgres,
                vec!["public".into()],
            )],
        );
        let file = |agent: &str, head: &str, mask: &str| {
            format!(
                "agents = [\"{agent}\"]\n[[postgres]]\nupstream = \"shop\"\n{head}\n\
                 [[postgres.table]]\nname = \"public.customers\"\nallow = [\"select\"]\n\
                 mask = {{ ssn = \"{mask}\" }}\n\
                 [[postgres.table]]\nname = \"public.orders\"\nallow = [\"select\"]\n"
            )
        };
        let sources = vec![
            (
                PathBuf::from("analyst.toml"),
                file("analyst", "functions = [\"current_query\"]", "hash"),
            ),
            (
                PathBuf::from("trusted.toml"),
                file("trusted", "profile = \"passthrough\"", "hash"),
            ),
            (PathBuf::from("builder.toml"), file("builder", DDL, "hash")),
            (PathBuf::from("plain.toml"), file("plain", DDL, "redact")),
        ];
        let engine = crate::policy::Engine::new(PolicySet::from_sources(sources, &ctx).unwrap());
        engine.set_schema("shop", crate::demo::seed::demo_schema());
        engine.set_mask_key(KEY.into());
        engine
    }

    fn verdict(
        engine: &crate::policy::Engine,
        agent: &str,
        sql: &str,
    ) -> std::sync::Arc<crate::policy::Verdict> {
        let facts = crate::policy::SessionFacts {
            sql_prepared: ["p".to_string()].into(),
            ..Default::default()
        };
        engine.check_sql(&agent.into(), &"shop".into(), sql, &facts)
    }

    #[test]
    fn statements_that_would_show_the_key_are_refused_naming_the_rule() {
        let engine = engine();
        let refused = [
            "EXPLAIN (VERBOSE, COSTS OFF) SELECT ssn FROM customers WHERE id = 1",
            "EXPLAIN SELECT ssn FROM customers",
            "explain select id from customers order by ssn",
            "EXPLAIN SELECT id FROM customers WHERE ssn = 'h_0011223344556677'",
            "EXPLAIN ANALYZE SELECT count(*) FROM customers",
            "EXPLAIN (FORMAT JSON) SELECT o.id FROM orders o JOIN customers c ON c.id = o.customer_id",
            "EXPLAIN (GENERIC_PLAN) SELECT ssn FROM customers WHERE id = $1",
            "EXPLAIN SELECT * FROM orders WHERE customer_id IN (SELECT id FROM customers)",
            "SELECT ssn FROM customers; EXPLAIN SELECT 1",
            "PREPARE q AS SELECT ssn FROM customers; EXPLAIN VERBOSE SELECT 1",
            "EXPLAIN EXECUTE p",
            "EXPLAIN (VERBOSE) EXECUTE p(1)",
            "EXPLAIN ANALYZE EXECUTE p",
            "SELECT current_query(), ssn FROM customers",
            "SELECT current_query()",
        ];
        // Statement texts in views, and plan trees (refused to restricted agents anyway: sensitive
        // catalogs, protected settings).
        let texts = [
            "SELECT query FROM pg_stat_activity",
            "SELECT pg_stat_get_backend_activity(s) FROM pg_stat_get_backend_idset() s",
            "SELECT statement FROM pg_catalog.pg_prepared_statements",
            "SELECT statement FROM pg_cursors",
            "SET debug_print_plan = on",
            "SET LOCAL DEBUG_PRINT_PARSE TO true",
            "SELECT set_config('debug_print_rewritten', 'on', false)",
        ];
        // Stored definitions would keep the key where the catalog shows it.
        let ddl = [
            "CREATE VIEW v AS SELECT ssn FROM customers",
            "CREATE MATERIALIZED VIEW m AS SELECT id, ssn FROM customers",
            "CREATE TABLE t AS SELECT ssn FROM customers",
            "SELECT ssn INTO t FROM customers",
            "EXPLAIN CREATE TABLE t AS EXECUTE p",
        ];
        let cases = [("analyst", &refused[..]), ("trusted", &refused[..])]
            .into_iter()
            .chain([("trusted", &ddl[..]), ("builder", &ddl[..])])
            .chain([("trusted", &texts[..])]);
        for (agent, texts) in cases {
            for sql in texts {
                // Twice: the second verdict may come from the cache.
                for _ in 0..2 {
                    let v = verdict(&engine, agent, sql);
                    let d = v
                        .denial
                        .as_ref()
                        .unwrap_or_else(|| panic!("{agent}: {sql}"));
                    assert_eq!(v.outcome, crate::policy::Outcome::Block, "{agent}: {sql}");
                    // A passthrough agent with masks is refused the statistics and activity
                    // views by the sensitive-catalog rule first: either names a built-in.
                    let views = sql.contains("pg_stat_activity")
                        || sql.contains("pg_prepared_statements")
                        || sql.contains("pg_cursors");
                    let sensitive =
                        agent == "trusted" && views && d.rule == "builtin: sensitive-catalog";
                    assert!(d.rule == RULE || sensitive, "{agent}: {sql}: {d:?}");
                    assert_eq!(d.class.sqlstate(), "42501", "{sql}");
                    assert!(!d.message().contains(KEY), "{sql}");
                }
            }
        }
    }

    #[test]
    fn what_shows_no_key_still_runs() {
        let engine = engine();
        for sql in [
            "SELECT id, ssn FROM customers",
            "SELECT ssn, count(*) FROM customers GROUP BY ssn ORDER BY ssn",
            "EXPLAIN SELECT * FROM orders",
            "PREPARE q AS SELECT ssn FROM customers",
            "EXECUTE p",
        ] {
            let v = verdict(&engine, "analyst", sql);
            assert!(v.denial.is_none(), "{sql}: {:?}", v.denial);
        }
        let v = verdict(&engine, "builder", "CREATE VIEW v AS SELECT id FROM orders");
        assert!(v.denial.is_none(), "{:?}", v.denial);
        // A mask without a key: stored definitions show nothing secret. EXPLAIN is refused
        // for another reason: its estimates come from the masked column's statistics.
        let v = verdict(
            &engine,
            "plain",
            "CREATE VIEW v AS SELECT ssn FROM customers",
        );
        assert!(v.denial.is_none(), "{:?}", v.denial);
        for sql in [
            "EXPLAIN (VERBOSE) SELECT ssn FROM customers",
            "EXPLAIN EXECUTE p",
        ] {
            let v = verdict(&engine, "plain", sql);
            let rule = v.denial.as_ref().map(|d| d.rule.as_str());
            assert_eq!(
                rule,
                Some(crate::policy::decide::MASK_STATISTICS_RULE),
                "{sql}"
            );
        }
    }

    #[test]
    fn a_rewrite_is_shown_with_the_placeholder_and_forwarded_with_the_key() {
        let engine = engine();
        let sql = "SELECT id, ssn FROM customers";
        let v = verdict(&engine, "analyst", sql);
        let forwarded = v.forwarded_text(sql).unwrap();
        assert!(forwarded.contains(KEY), "{forwarded}");
        assert!(v.rewrite.as_ref().unwrap().carries(KEY));
        let shown = engine.shown_rewrite(&v, sql).unwrap();
        assert!(!shown.contains(KEY), "{shown}");
        assert!(shown.contains("'<mask key>'"), "{shown}");
        assert_eq!(shown, forwarded.replace(KEY, PLACEHOLDER));
    }

    #[test]
    fn an_empty_key_hides_nothing() {
        let text = "SELECT '' || a";
        assert!(matches!(hide(text, ""), Cow::Borrowed(t) if t == text));
    }
}
