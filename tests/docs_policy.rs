//! Every `toml policy` example in docs/policy.md loads (with agents and upstream it names).

use std::path::PathBuf;

use tollgate::auth::{AgentStore, AgentsFile};
use tollgate::config::UpstreamKind;
use tollgate::policy::{PolicyContext, PolicySet};

fn examples() -> Vec<String> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/policy.md")).unwrap();
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```toml policy") => current = Some(String::new()),
            (Some(buf), "```") => {
                out.push(std::mem::take(buf));
                current = None;
            }
            (Some(buf), l) => {
                buf.push_str(l);
                buf.push('\n');
            }
            _ => {}
        }
    }
    out
}

#[test]
fn every_policy_example_in_the_docs_loads() {
    let mut agents = AgentsFile::default();
    for (name, groups) in [
        ("analyst", vec!["reporting".to_string()]),
        ("writer", vec![]),
        ("trusted", vec![]),
    ] {
        agents.add(name, "tg_doc_token", groups).unwrap();
    }
    let store = AgentStore::from_file(&PathBuf::from("agents.toml"), agents).unwrap();
    let ctx = PolicyContext::for_upstreams(
        &store,
        [
            (
                "shop".to_string(),
                UpstreamKind::Postgres,
                vec!["public".to_string()],
            ),
            ("cache".to_string(), UpstreamKind::Redis, vec![]),
            ("mongo".to_string(), UpstreamKind::Mongodb, vec![]),
        ],
    );
    let examples = examples();
    assert!(examples.len() >= 6, "found {} examples", examples.len());
    for (i, text) in examples.iter().enumerate() {
        let path = PathBuf::from(format!("docs-example-{i}.toml"));
        if let Err(e) = PolicySet::from_sources(vec![(path, text.clone())], &ctx) {
            panic!("example {i} does not load: {e}\n{text}");
        }
    }
}
