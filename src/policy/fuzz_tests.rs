//! Property tests: arbitrary text, and SQL-looking token soup, always gets a verdict (no panic),
//! and a statement touching `secrets` is never allowed for an agent without a rule for it.

use std::path::PathBuf;
use std::sync::Arc;

use proptest::prelude::*;

use super::{Engine, Outcome, PolicyContext, PolicySet, SessionFacts};
use crate::auth::{AgentStore, AgentsFile};

fn engine() -> &'static Engine {
    static E: std::sync::OnceLock<Engine> = std::sync::OnceLock::new();
    E.get_or_init(|| {
        let mut agents = AgentsFile::default();
        agents.add("analyst", "tg_x", vec![]).unwrap();
        let store = AgentStore::from_file(&PathBuf::from("agents.toml"), agents).unwrap();
        let ctx = PolicyContext::for_upstreams(&store, [("shop".into(), crate::config::UpstreamKind::Postgres, vec!["public".into()])]);
        let text = "agents = [\"analyst\"]\n[[postgres]]\nupstream = \"shop\"\n[[postgres.table]]\nname = \"orders\"\nallow = [\"select\"]\n";
        Engine::new(PolicySet::from_sources(vec![(PathBuf::from("a.toml"), text.into())], &ctx).unwrap())
    })
}

fn judge(sql: &str) -> Outcome {
    let a: Arc<str> = "analyst".into();
    let u: Arc<str> = "shop".into();
    engine()
        .check_sql(&a, &u, sql, &SessionFacts::default())
        .outcome
}

const TOKENS: &[&str] = &[
    "SELECT",
    "*",
    "FROM",
    "orders",
    "secrets",
    "public.secrets",
    "\"secrets\"",
    "WITH",
    "x",
    "AS",
    "(",
    ")",
    ",",
    ";",
    "WHERE",
    "id",
    "=",
    "1",
    "'a'",
    "UNION",
    "JOIN",
    "ON",
    "true",
    "LATERAL",
    "INSERT",
    "INTO",
    "VALUES",
    "DELETE",
    "UPDATE",
    "SET",
    "RETURNING",
    "TABLE",
    "ONLY",
    "--",
    "/*",
    "*/",
    "$$",
    "E'\\''",
    "U&\"\\0073ecrets\"",
    "EXPLAIN",
    "ANALYZE",
    "PREPARE",
    "EXECUTE",
    "DECLARE",
    "CURSOR",
    "FOR",
    "COPY",
    "TO",
    "STDOUT",
    "pg_read_file",
    "query_to_xml",
    "set_config",
    "::regclass",
    "ARRAY",
    "EXISTS",
    "IN",
    "ORDER",
    "BY",
    "LIMIT",
    "GROUP",
    "HAVING",
];

fn token_soup() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(TOKENS), 1..24).prop_map(|t| t.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_gets_a_verdict(text in "\\PC{0,200}") {
        let _ = judge(&text);
    }

    #[test]
    fn token_soup_never_reaches_secrets(sql in token_soup()) {
        let outcome = judge(&sql);
        let lower = sql.to_lowercase();
        let mentions_secrets = lower.contains("secrets") || lower.contains("\\0073ecrets");
        if mentions_secrets && outcome == Outcome::Allow {
            // Allowed only if "secrets" is not a relation: a literal, a column alias, a comment...
            let analysis = super::sql::analyze(&sql).expect("allowed statements were analysed");
            for s in &analysis.statements {
                prop_assert!(!s.relations.iter().any(|r| r.name == "secrets"), "{sql}");
            }
        }
    }
}
