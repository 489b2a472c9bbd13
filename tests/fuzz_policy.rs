//! Fuzzing the SQL analyser with the masking rewrite, and the policy and config file loaders.
//! SQL inputs are the adversarial corpus (tests/support/decision_table.rs) mutated at token
//! level (dictionary tokens inserted, statements spliced, pieces dropped) and at byte level.
//! Oracles besides "no panic": the same verdict from the cache; nothing of `secrets` ever
//! allowed for the analyst; an allowed analyst statement that names `customers` always carries
//! a masking rewrite; a rewrite applies to its own text and gives valid SQL. Files: a mutated
//! policy or config loads or fails with an error naming the file.
//! Case count: `TOLLGATE_FUZZ_CASES` (see tests/support/fuzz.rs and docs/reliability.md).

mod support;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use support::decision_table::*;
use support::fuzz::{config, mutate, mutation};
use tollgate::auth::{AgentStore, AgentsFile};
use tollgate::config::{Config, UpstreamKind};
use tollgate::demo::files::POLICIES;
use tollgate::policy::{Engine, Outcome, PolicyContext, PolicySet, SessionFacts};

fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(demo_engine)
}

fn corpus() -> Vec<&'static str> {
    ANALYST_ALLOWED
        .iter()
        .chain(ANALYST_REFUSED)
        .chain(WRITER_ALLOWED)
        .chain(WRITER_REFUSED)
        .copied()
        .collect()
}

/// Tokens an attacker (or a confused model) would splice into a statement.
const TOKENS: &[&str] = &[
    " secrets ",
    " public.secrets ",
    " \"secrets\" ",
    " customers ",
    " email ",
    " ssn ",
    " ( ",
    " ) ",
    " , ",
    " ; ",
    " UNION ALL SELECT * FROM secrets ",
    " WHERE ",
    " ORDER BY ",
    " /* x */ ",
    " -- c\n",
    " $$ ",
    " $q$ ",
    " ' ",
    " E'\\'' ",
    " U&\"\\0073ecrets\" ",
    " LATERAL ",
    " ONLY ",
    " TABLE ",
    " WITH s AS (SELECT * FROM secrets) ",
    " RETURNING * ",
    " pg_read_file('x') ",
    " set_config('search_path','x',false) ",
    " ::text ",
    " COPY ",
    " * ",
    " 1 ",
    " NULL ",
];

/// One token-level edit.
#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, usize),
    Splice(usize, usize),
    Drop(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(p, t)| Edit::Insert(p, t)),
        (any::<usize>(), any::<usize>()).prop_map(|(p, s)| Edit::Splice(p, s)),
        (any::<usize>(), 1usize..4).prop_map(|(p, n)| Edit::Drop(p, n)),
    ]
}

/// `sql` split at spaces, edited, joined.
fn apply_edits(sql: &str, edits: &[Edit], corpus: &[&str]) -> String {
    let mut words: Vec<String> = sql.split(' ').map(str::to_string).collect();
    for e in edits {
        let at = |p: usize, len: usize| p % (len + 1);
        match e {
            Edit::Insert(p, t) => {
                let i = at(*p, words.len());
                words.insert(i, TOKENS[*t].trim().to_string());
            }
            Edit::Splice(p, s) => {
                let other = corpus[s % corpus.len()];
                let i = at(*p, words.len());
                let tail: Vec<String> = other.split(' ').skip(1).map(str::to_string).collect();
                words.splice(i..i, tail);
            }
            Edit::Drop(p, n) => {
                if !words.is_empty() {
                    let i = p % words.len();
                    let end = (i + n).min(words.len());
                    words.drain(i..end);
                }
            }
        }
    }
    words.join(" ")
}

fn sql_input() -> impl Strategy<Value = String> {
    let c = corpus();
    let seeds: Vec<String> = c.iter().map(|s| s.to_string()).collect();
    prop_oneof![
        4 => (prop::sample::select(seeds.clone()), prop::collection::vec(edit(), 0..5))
            .prop_map(move |(s, e)| apply_edits(&s, &e, &corpus())),
        2 => (prop::sample::select(seeds), prop::collection::vec(mutation(), 1..4))
            .prop_map(|(s, m)| String::from_utf8_lossy(&mutate(s.as_bytes(), &m)).into_owned()),
        1 => "\\PC{0,80}",
    ]
}

/// Relation names PostgreSQL's parser finds in `sql` (lower case, without schema).
fn relations(sql: &str) -> Option<Vec<String>> {
    let parsed = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT).ok()?;
    Some(
        parsed
            .tables()
            .into_iter()
            .map(|t| t.rsplit('.').next().unwrap_or(&t).to_ascii_lowercase())
            .collect(),
    )
}

/// The demo's agents (their verifiers cost a key derivation each: made once).
fn agents() -> &'static AgentStore {
    static A: OnceLock<AgentStore> = OnceLock::new();
    A.get_or_init(|| {
        let mut agents = AgentsFile::default();
        for name in ["analyst", "writer", "trusted"] {
            agents.add(name, "tg_test", vec![]).unwrap();
        }
        AgentStore::from_file(&PathBuf::from("agents.toml"), agents).unwrap()
    })
}

fn load_policies(texts: &[(String, String)]) -> Result<PolicySet, String> {
    let ctx = PolicyContext::for_upstreams(
        agents(),
        [
            ("shop".into(), UpstreamKind::Postgres, vec!["public".into()]),
            ("cache".into(), UpstreamKind::Redis, vec![]),
            ("mongo".into(), UpstreamKind::Mongodb, vec![]),
        ],
    );
    let sources = texts
        .iter()
        .map(|(n, t)| (PathBuf::from(n), t.clone()))
        .collect();
    PolicySet::from_sources(sources, &ctx).map_err(|e| e.to_string())
}

/// Found by the reload storm (tests/reliability_storm.rs): an agent no policy file applies to
/// any more (its file emptied or removed by a reload, its sessions still open) was allowed
/// every statement, `secrets` included, with no rule named. (A file of comments alone is now
/// refused at load, keeping the last good policy; one that names no one stands for it here.)
#[test]
fn an_agent_whose_policy_files_are_gone_is_refused_everything() {
    let texts: Vec<(String, String)> = POLICIES
        .iter()
        .map(|(n, t)| {
            let t = if *n == "writer.toml" {
                "# emptied\nagents = []\n"
            } else {
                t
            };
            (n.to_string(), t.to_string())
        })
        .collect();
    let engine = Engine::new(load_policies(&texts).unwrap());
    let (a, u): (Arc<str>, Arc<str>) = ("writer".into(), "shop".into());
    for sql in ["SELECT * FROM secrets", "SELECT id FROM orders", "SELECT 1"] {
        let v = engine.check_sql(&a, &u, sql, &SessionFacts::default());
        assert_eq!(v.outcome, Outcome::Block, "{sql}");
        assert_eq!(v.denial.as_ref().unwrap().class.sqlstate(), "42501");
    }
    assert!(engine.may_connect("writer", "shop").is_err());
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mutated_sql_gets_a_verdict_that_keeps_the_invariants(
        sql in sql_input(),
        agent in prop::sample::select(vec!["analyst", "writer", "trusted"]),
    ) {
        let a: Arc<str> = agent.into();
        let u: Arc<str> = "shop".into();
        let facts = SessionFacts::default();
        let verdict = engine().check_sql(&a, &u, &sql, &facts);
        let again = engine().check_sql(&a, &u, &sql, &facts);
        prop_assert_eq!(verdict.outcome, again.outcome, "cache changed the verdict");
        if verdict.outcome == Outcome::Block {
            prop_assert!(verdict.denial.is_some(), "a block without a reason");
            return Ok(());
        }
        if let Some(plan) = &verdict.rewrite {
            if let Ok((rewritten, positions)) = plan.apply(&sql) {
                prop_assert!(pg_query::parse(&rewritten, pg_query::ParserOptions::DEFAULT).is_ok(),
                    "the rewrite of {sql:?} is not valid SQL: {rewritten:?}");
                // Error positions map back in order, onto the client's text.
                let (ours, theirs) = (rewritten.chars().count(), sql.chars().count());
                let mapped: Vec<usize> = (1..=ours + 1).map(|p| positions.original(p)).collect();
                prop_assert!(mapped.windows(2).all(|w| w[0] <= w[1]), "{sql:?}: {mapped:?}");
                prop_assert!(mapped.iter().all(|&p| (1..=theirs + 1).contains(&p)), "{sql:?}: {mapped:?}");
            }
        }
        if agent == "analyst" {
            let rels = relations(&sql).unwrap_or_default();
            prop_assert!(!rels.iter().any(|r| r == "secrets"),
                "analyst allowed to read secrets: {sql:?}");
            if rels.iter().any(|r| r == "customers") {
                prop_assert!(verdict.rewrite.as_ref().is_some_and(|p| p.has_edits()),
                    "analyst reads customers without masking: {sql:?}");
            }
        }
    }

    /// A policy file changed anywhere loads or fails with an error naming the file.
    #[test]
    fn mutated_policy_files_load_or_name_the_file(
        which in 0usize..POLICIES.len(),
        edits in prop::collection::vec(mutation(), 1..5),
    ) {
        let mut texts: Vec<(String, String)> = POLICIES
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        let bytes = mutate(texts[which].1.as_bytes(), &edits);
        texts[which].1 = String::from_utf8_lossy(&bytes).into_owned();
        if let Err(e) = load_policies(&texts) {
            prop_assert!(POLICIES.iter().any(|(n, _)| e.contains(n)), "{e}");
        }
    }

    /// `tollgate.toml` changed anywhere parses or fails with an error naming the file.
    #[test]
    fn mutated_config_files_parse_or_name_the_file(
        edits in prop::collection::vec(mutation(), 1..5),
        tls in any::<bool>(),
    ) {
        let text = tollgate::demo::files::config(5432, 6379, 27017, tls, Some(100));
        let bytes = mutate(text.as_bytes(), &edits);
        let text = String::from_utf8_lossy(&bytes);
        if let Err(e) = Config::parse(std::path::Path::new("/etc/tollgate/tollgate.toml"), &text) {
            prop_assert!(e.to_string().contains("tollgate.toml"), "{e}");
        }
    }
}
