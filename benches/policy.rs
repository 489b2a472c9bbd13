//! Policy hot path: analysis of a typical SELECT (cold), the cached decision, a 5-way join with
//! CTEs, the decision-cache key (Rust scanner and PostgreSQL's), a Redis command's verdict, and
//! one audit append.

use std::path::PathBuf;
use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tollgate::audit::{AuditEvent, AuditLog, Decision};
use tollgate::auth::{AgentStore, AgentsFile};
use tollgate::config::UpstreamKind;
use tollgate::policy::{sql, Engine, PolicyContext, PolicySet, SessionFacts};

const TYPICAL: &str = "SELECT o.id, o.amount, o.created_at, c.name, c.region FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.created_at >= '2025-01-01' AND c.region = 'EU' ORDER BY o.amount DESC LIMIT 50";

const JOIN5: &str = "WITH recent AS (SELECT * FROM orders WHERE created_at > now() - interval '30 days'), \
    big AS (SELECT customer_id, sum(amount) AS total FROM recent GROUP BY customer_id HAVING sum(amount) > 100) \
    SELECT c.region, count(*), avg(b.total), max(r.amount) FROM customers c \
    JOIN big b ON b.customer_id = c.id JOIN recent r ON r.customer_id = c.id \
    JOIN orders o2 ON o2.customer_id = c.id JOIN customers c2 ON c2.id = o2.customer_id \
    WHERE c.region IN ('EU', 'US') GROUP BY c.region ORDER BY 2 DESC";

/// An engine for agent `analyst` with one policy file and the demo's table shapes.
fn engine_with(policy: &str) -> Engine {
    let mut agents = AgentsFile::default();
    agents.add("analyst", "tg_bench", vec![]).unwrap();
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
    let sources = vec![(PathBuf::from("analyst.toml"), policy.to_string())];
    let engine = Engine::new(PolicySet::from_sources(sources, &ctx).unwrap());
    engine.set_schema("shop", tollgate::demo::seed::demo_schema());
    engine
}

fn engine() -> Engine {
    engine_with("agents = [\"analyst\"]\n[[postgres]]\nupstream = \"shop\"\n[[postgres.table]]\nname = \"public.orders\"\nallow = [\"select\"]\n[[postgres.table]]\nname = \"public.customers\"\nallow = [\"select\"]\n")
}

/// The demo analyst: customers masked.
fn masked_engine() -> Engine {
    engine_with(tollgate::demo::files::ANALYST_POLICY)
}

fn benches(c: &mut Criterion) {
    let engine = engine();
    let agent: Arc<str> = "analyst".into();
    let upstream: Arc<str> = "shop".into();
    let facts = SessionFacts::default();
    assert!(engine.check_sql(&agent, &upstream, TYPICAL, &facts).runs());
    assert!(engine.check_sql(&agent, &upstream, JOIN5, &facts).runs());

    c.bench_function("analyze_typical_select_cold", |b| {
        b.iter(|| sql::analyze(black_box(TYPICAL)).unwrap())
    });
    c.bench_function("analyze_5way_join_ctes_cold", |b| {
        b.iter(|| sql::analyze(black_box(JOIN5)).unwrap())
    });
    c.bench_function("decision_cached", |b| {
        b.iter(|| engine.check_sql(&agent, &upstream, black_box(TYPICAL), &facts))
    });
    // The demo analyst's masked customers: a cached verdict plus applying its rewrite plan.
    let masked = masked_engine();
    let by_pk = "SELECT * FROM customers WHERE id = 42";
    let verdict = masked.check_sql(&agent, &upstream, by_pk, &facts);
    assert!(verdict.rewrite.is_some());
    c.bench_function("masked_select_cached_with_rewrite", |b| {
        b.iter(|| {
            let v = masked.check_sql(&agent, &upstream, black_box(by_pk), &facts);
            v.forwarded_text(by_pk).unwrap().len()
        })
    });
    // Statements differing only in literals (pgbench's random ids): the shape cache, not the
    // text cache, answers them.
    let by_id: Vec<String> = (0..1000)
        .map(|i| format!("SELECT amount FROM orders WHERE id = {}", i * 7919 % 50_000))
        .collect();
    let mut next = 0;
    c.bench_function("decision_cached_new_literals", |b| {
        b.iter(|| {
            next = (next + 1) % by_id.len();
            engine.check_sql(&agent, &upstream, black_box(&by_id[next]), &facts)
        })
    });
    // The Rust scanner (plain SQL) and PostgreSQL's scanner (a comment sends it there).
    c.bench_function("fingerprint_fast", |b| {
        b.iter(|| sql::fingerprint(black_box(TYPICAL)).unwrap())
    });
    let commented = format!("{TYPICAL} -- report");
    assert!(sql::fast_fingerprint(&commented).is_none());
    c.bench_function("fingerprint_scanner", |b| {
        b.iter(|| sql::fingerprint(black_box(&commented)).unwrap())
    });

    // A Redis GET and SET by the demo writer (Redis 7.0's command table, key patterns).
    let raw = bytes::Bytes::from_static(include_bytes!(
        "../src/policy/redis/testdata/command-7.0.resp"
    ));
    let (frame, _) = redis_protocol::resp2::decode::decode_bytes(&raw)
        .unwrap()
        .unwrap();
    let table = tollgate::policy::redis::CommandTable::from_reply(&frame).unwrap();
    let writer =
        engine_with(&tollgate::demo::files::WRITER_POLICY.replace("\"writer\"", "\"analyst\""));
    let mut redis = tollgate::policy::redis::RedisPolicy::new(agent.clone(), "cache".into());
    let get: Vec<bytes::Bytes> = ["GET", "cache:42"]
        .iter()
        .map(|w| bytes::Bytes::from_static(w.as_bytes()))
        .collect();
    let set: Vec<bytes::Bytes> = ["SET", "cache:42", "v"]
        .iter()
        .map(|w| bytes::Bytes::from_static(w.as_bytes()))
        .collect();
    assert!(redis.check(&writer, &table, &get).runs());
    assert!(redis.check(&writer, &table, &set).runs());
    c.bench_function("redis_check_get", |b| {
        b.iter(|| redis.check(&writer, &table, black_box(&get)).runs())
    });
    c.bench_function("redis_check_set", |b| {
        b.iter(|| redis.check(&writer, &table, black_box(&set)).runs())
    });

    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&dir.path().join("audit.log")).unwrap();
    let ev = AuditEvent {
        agent: "analyst".into(),
        protocol: tollgate::audit::Protocol::Postgres,
        upstream: Some("shop".into()),
        session: 1,
        client_addr: Some("127.0.0.1:50000".into()),
        statement: Some(TYPICAL.into()),
        decision: Decision::Allowed,
        ..AuditEvent::default()
    };
    c.bench_function("audit_append", |b| {
        b.iter(|| log.append(black_box(&ev)).unwrap())
    });
}

criterion_group!(policy, benches);
criterion_main!(policy);
