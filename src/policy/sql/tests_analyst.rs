//! Table-driven tests of ordinary analyst queries over `orders` and `customers` (joins, CTEs, window functions, aggregates, ROLLUP, JSON, date arithmetic): they must report exactly the tables read and only safe built-in functions.

use super::tests_support::{case, must, run_table, Case};
use super::{is_safe_builtin_function, StatementKind as K};

const OC: &[&str] = &["select orders", "select customers"];

fn analyst_queries() -> Vec<Case> {
    vec![
        case("SELECT * FROM orders", K::Select, &["select orders"]),
        case(
            "SELECT o.id, o.total, c.name FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.created_at > now() - interval '7 days' ORDER BY o.total DESC LIMIT 50",
            K::Select,
            OC,
        )
        .funcs(&["now"]),
        case(
            "SELECT c.name, count(*), sum(o.total), avg(o.total), min(o.created_at), max(o.created_at) FROM customers c LEFT JOIN orders o ON o.customer_id = c.id GROUP BY c.name HAVING count(*) > 1",
            K::Select,
            OC,
        )
        .funcs(&["count", "sum", "avg", "min", "max"]),
        case(
            "SELECT customer_id, total, row_number() OVER (PARTITION BY customer_id ORDER BY created_at), lag(total) OVER w, sum(total) OVER (ORDER BY created_at ROWS BETWEEN 6 PRECEDING AND CURRENT ROW) FROM orders WINDOW w AS (PARTITION BY customer_id ORDER BY created_at)",
            K::Select,
            &["select orders"],
        )
        .funcs(&["row_number", "lag", "sum"]),
        case(
            "SELECT date_trunc('month', created_at) AS m, customer_id, sum(total) FROM orders GROUP BY ROLLUP (1, 2) ORDER BY 1",
            K::Select,
            &["select orders"],
        )
        .funcs(&["date_trunc", "sum"]),
        case(
            "SELECT customer_id, GROUPING(customer_id), count(*) FROM orders GROUP BY CUBE (customer_id)",
            K::Select,
            &["select orders"],
        ),
        case(
            "WITH monthly AS (SELECT date_trunc('month', created_at) m, sum(total) t FROM orders GROUP BY 1), ranked AS (SELECT m, t, rank() OVER (ORDER BY t DESC) r FROM monthly) SELECT * FROM ranked WHERE r <= 3",
            K::Select,
            &["select orders"],
        ),
        case(
            "WITH RECURSIVE days(d) AS (SELECT date '2024-01-01' UNION ALL SELECT d + 1 FROM days WHERE d < date '2024-01-31') SELECT d, count(o.id) FROM days LEFT JOIN orders o ON o.created_at::date = d GROUP BY d",
            K::Select,
            &["select orders"],
        ),
        case(
            "SELECT c.*, (SELECT count(*) FROM orders o WHERE o.customer_id = c.id) AS n FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id)",
            K::Select,
            OC,
        ),
        case(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total), mode() WITHIN GROUP (ORDER BY customer_id) FROM orders",
            K::Select,
            &["select orders"],
        )
        .funcs(&["percentile_cont", "mode"]),
        case(
            "SELECT string_agg(name, ', ' ORDER BY name) FILTER (WHERE email IS NOT NULL), array_agg(DISTINCT id), json_agg(c) FROM customers c",
            K::Select,
            &["select customers"],
        )
        .funcs(&["string_agg", "array_agg", "json_agg"]),
        case(
            "SELECT jsonb_build_object('id', id, 'total', total) ->> 'id', to_char(created_at, 'YYYY-MM'), extract(dow FROM created_at), coalesce(total, 0), greatest(total, 1) FROM orders",
            K::Select,
            &["select orders"],
        )
        .funcs(&["jsonb_build_object", "to_char", "pg_catalog.extract"]),
        case(
            "SELECT lower(name), upper(email), length(name), substring(email FROM '@(.*)$'), trim(both ' ' FROM name), position('a' IN name), round(random()::numeric, 2) FROM customers",
            K::Select,
            &["select customers"],
        )
        .funcs(&[
            "lower",
            "upper",
            "length",
            "pg_catalog.substring",
            "pg_catalog.btrim",
            "pg_catalog.position",
            "round",
            "random",
        ]),
        case(
            "SELECT o.* FROM orders o WHERE o.customer_id IN (SELECT id FROM customers WHERE email LIKE '%@example.com') AND o.total BETWEEN 10 AND 100 AND o.created_at AT TIME ZONE 'UTC' > '2024-01-01'",
            K::Select,
            OC,
        ),
        case(
            "SELECT DISTINCT customer_id FROM orders UNION SELECT id FROM customers ORDER BY 1 FETCH FIRST 10 ROWS ONLY",
            K::Select,
            OC,
        ),
        case(
            "SELECT c.name, x.total FROM customers c CROSS JOIN LATERAL (SELECT total FROM orders o WHERE o.customer_id = c.id ORDER BY total DESC LIMIT 1) x",
            K::Select,
            OC,
        ),
        case(
            "SELECT * FROM orders o JOIN customers c USING (id) FULL JOIN customers c2 ON c2.id = o.customer_id",
            K::Select,
            OC,
        ),
        case(
            "SELECT width_bucket(total, 0, 1000, 10) AS b, count(*) FROM orders GROUP BY b ORDER BY b",
            K::Select,
            &["select orders"],
        ),
        case("SELECT count(*) FROM public.orders", K::Select, &["select public.orders"]),
        case("SELECT 1", K::Select, &[]),
        case("SELECT now(), current_date, current_user, version()", K::Select, &[]),
        case("VALUES (1, 'a'), (2, 'b')", K::Select, &[]),
        case(
            "SELECT * FROM (VALUES (1), (2)) AS v(x) JOIN orders ON orders.id = v.x",
            K::Select,
            &["select orders"],
        ),
        case(
            "SELECT id, total, total - lag(total) OVER (ORDER BY id) AS delta, ntile(4) OVER (ORDER BY total), first_value(total) OVER (PARTITION BY customer_id) FROM orders",
            K::Select,
            &["select orders"],
        ),
        case(
            "SELECT customer_id, count(*) FILTER (WHERE total > 100) AS big FROM orders GROUP BY customer_id",
            K::Select,
            &["select orders"],
        ),
        case(
            "SELECT * FROM orders WHERE created_at >= $1 AND customer_id = ANY($2::int[])",
            K::Select,
            &["select orders"],
        ),
        case("SELECT * FROM orders FOR SHARE", K::Select, &["select orders"]),
        case(
            "SELECT * FROM orders o, generate_series(1, 3) g(n) WHERE o.id = g.n",
            K::Select,
            &["select orders"],
        )
        .funcs(&["generate_series"]),
        case(
            "SELECT to_jsonb(o) - 'total' FROM orders o WHERE o.total IS DISTINCT FROM 0",
            K::Select,
            &["select orders"],
        ),
        case(
            "SELECT * FROM orders WHERE id = 1 FOR UPDATE OF orders SKIP LOCKED",
            K::Select,
            &["select orders"],
        ),
    ]
}

#[test]
fn analyst_queries_report_exactly_the_tables_read() {
    assert!(run_table(analyst_queries()) >= 30);
}

#[test]
fn analyst_queries_call_only_safe_builtins_and_are_cacheable() {
    for c in analyst_queries() {
        let a = must(&c.sql);
        for st in &a.statements {
            for f in &st.functions {
                assert!(is_safe_builtin_function(f), "{}: {f:?}", c.sql);
            }
            assert!(!st.literal_sensitive, "{} should be cacheable", c.sql);
        }
    }
}

#[test]
fn row_locking_is_flagged() {
    assert!(must("SELECT * FROM orders FOR UPDATE").statements[0].row_locking);
    assert!(must("SELECT * FROM (SELECT * FROM orders FOR KEY SHARE) x").statements[0].row_locking);
    assert!(!must("SELECT * FROM orders").statements[0].row_locking);
}
