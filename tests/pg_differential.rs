//! Differential test: for every plannable statement of the decision table, each relation that
//! PostgreSQL's own planner touches (EXPLAIN (VERBOSE, FORMAT JSON), run directly upstream) must
//! be among the relations the walker reports. The walker may report more (a CTE the planner
//! drops, a subquery it proves empty), never less. Catalog views expand into catalog tables in a
//! plan while the walker reports the view (the access boundary), so catalogs are left out.

mod support;

use std::collections::BTreeSet;

use support::decision_table::{ANALYST_ALLOWED, ANALYST_REFUSED, WRITER_ALLOWED, WRITER_REFUSED};
use tollgate::policy::catalog::is_catalog_relation;
use tollgate::policy::sql;

/// Extra statements aimed at name resolution and scoping.
const EXTRA: &[&str] = &[
    "WITH orders AS (SELECT * FROM secrets) SELECT * FROM orders",
    "WITH x AS (SELECT 1) SELECT * FROM (WITH orders AS (SELECT 2) SELECT * FROM orders) a, orders",
    "WITH RECURSIVE r AS (SELECT id FROM orders WHERE id = 1 UNION ALL SELECT o.id FROM orders o JOIN r ON o.id = r.id + 1 WHERE o.id < 5) SELECT * FROM r",
    "SELECT * FROM orders o WHERE o.id = (WITH secrets AS (SELECT 1 AS id) SELECT id FROM secrets)",
    "SELECT (SELECT count(*) FROM customers c WHERE c.id = o.customer_id) FROM orders o",
    "SELECT * FROM customers WHERE id IN (WITH t AS (SELECT customer_id FROM orders) SELECT * FROM t)",
];

fn plan_relations(plan: &serde_json::Value, out: &mut BTreeSet<String>) {
    match plan {
        serde_json::Value::Object(m) => {
            if let (Some(schema), Some(rel)) = (m.get("Schema"), m.get("Relation Name")) {
                out.insert(format!(
                    "{}.{}",
                    schema.as_str().unwrap_or(""),
                    rel.as_str().unwrap_or("")
                ));
            }
            m.values().for_each(|v| plan_relations(v, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| plan_relations(v, out)),
        _ => {}
    }
}

/// The walker's relations, for single plannable statements only: EXPLAIN would cover just the
/// first statement of a string and run the rest, as superuser.
fn walker_relations(text: &str) -> Option<BTreeSet<String>> {
    let analysis = sql::analyze(text).ok()?;
    let [only] = analysis.statements.as_slice() else {
        return None;
    };
    use sql::StatementKind::*;
    if !matches!(only.kind, Select | Insert | Update | Delete | Merge) {
        return None;
    }
    let mut out = BTreeSet::new();
    for s in &analysis.statements {
        for r in &s.relations {
            let schema = match &r.schema {
                Some(s) => s.clone(),
                None if is_catalog_relation(&r.name) => "pg_catalog".into(),
                None => "public".into(),
            };
            out.insert(format!("{schema}.{}", r.name));
        }
    }
    Some(out)
}

#[tokio::test]
async fn walker_reports_every_relation_postgres_plans() {
    let up = support::upstream().await;
    let corpus = ANALYST_ALLOWED
        .iter()
        .chain(ANALYST_REFUSED)
        .chain(WRITER_ALLOWED)
        .chain(WRITER_REFUSED)
        .chain(EXTRA);
    let mut compared = 0;
    let mut missed = Vec::new();
    for text in corpus {
        let Some(ours) = walker_relations(text) else {
            continue;
        };
        // EXPLAIN plans without running (no ANALYZE): writes are planned, not executed.
        up.batch_execute("BEGIN").await.unwrap();
        let explained = up
            .simple_query(&format!("EXPLAIN (VERBOSE, FORMAT JSON) {text}"))
            .await;
        up.batch_execute("ROLLBACK").await.unwrap();
        let Ok(messages) = explained else { continue }; // not a plannable statement
        let Some(json) = messages.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        }) else {
            continue;
        };
        let plan: serde_json::Value = serde_json::from_str(&json).unwrap();
        let mut theirs = BTreeSet::new();
        plan_relations(&plan, &mut theirs);
        compared += 1;
        // Views expand into their base tables in a plan; the walker reports the view, which is
        // the access boundary. The demo has no user views, so catalog views are the only case:
        // compare user relations, where a miss would be a leak.
        let missing: Vec<_> = theirs
            .difference(&ours)
            .filter(|r| !r.starts_with("pg_catalog.") && !r.starts_with("information_schema."))
            .collect();
        if !missing.is_empty() {
            missed.push(format!(
                "{text}\n    planner: {theirs:?}\n    walker:  {ours:?}"
            ));
        }
    }
    eprintln!("compared {compared} plannable statements with EXPLAIN");
    assert!(
        compared >= 80,
        "only {compared} statements could be compared"
    );
    assert!(
        missed.is_empty(),
        "the walker missed relations:\n{}",
        missed.join("\n")
    );
}
