//! Adversarial table-driven tests: ways to reach table `secrets` hidden by identifier tricks, comments, multi-statement strings, CTE shadowing and subqueries in every clause of a query.

use super::tests_support::{case, multi, run_table, Case};
use super::StatementKind as K;

fn identifiers_and_comments() -> Vec<Case> {
    vec![
        case("SELECT * FROM secrets", K::Select, &["select secrets"]),
        case("SELECT * FROM SECRETS", K::Select, &["select secrets"]),
        case("SeLeCt * FrOm SeCrEtS", K::Select, &["select secrets"]),
        case("SELECT * FROM \"Secrets\"", K::Select, &["select Secrets"]),
        case("SELECT * FROM \"SECRETS\"", K::Select, &["select SECRETS"]),
        case(
            "SELECT * FROM U&\"\\0073ecrets\"",
            K::Select,
            &["select secrets"],
        ),
        case(
            "SELECT * FROM U&\"!0073ecrets\" UESCAPE '!'",
            K::Select,
            &["select secrets"],
        ),
        case(
            "SELECT * FROM public.secrets",
            K::Select,
            &["select public.secrets"],
        ),
        case(
            "SELECT * FROM \"public\".\"secrets\"",
            K::Select,
            &["select public.secrets"],
        ),
        case(
            "SELECT * FROM PUBLIC.SECRETS",
            K::Select,
            &["select public.secrets"],
        ),
        case(
            "SELECT * FROM tollgate.public.secrets",
            K::Select,
            &["select public.secrets"],
        ),
        case("SELECT * FROM/**/secrets", K::Select, &["select secrets"]),
        case(
            "SELECT * FROM -- hi\nsecrets",
            K::Select,
            &["select secrets"],
        ),
        case(
            "SELECT * FROM /* a /* nested */ b */ secrets",
            K::Select,
            &["select secrets"],
        ),
        case("SELECT * FROM ONLY secrets", K::Select, &["select secrets"]),
        case("SELECT * FROM secrets*", K::Select, &["select secrets"]),
        case(
            "SELECT * FROM ONLY (secrets)",
            K::Select,
            &["select secrets"],
        ),
        case(
            "SELECT * FROM secrets AS s TABLESAMPLE SYSTEM(10)",
            K::Select,
            &["select secrets"],
        )
        .funcs(&["system"]),
        case(
            "SELECT * FROM secrets TABLESAMPLE BERNOULLI (5) REPEATABLE (42)",
            K::Select,
            &["select secrets"],
        )
        .funcs(&["bernoulli"]),
        case("TABLE secrets", K::Select, &["select secrets"]),
        case(
            "TABLE public.secrets",
            K::Select,
            &["select public.secrets"],
        ),
        case(
            "SELECT * FROM orders AS secrets",
            K::Select,
            &["select orders"],
        ),
        case(
            "SELECT secrets.* FROM orders secrets",
            K::Select,
            &["select orders"],
        ),
        case("SELECT $$; SELECT * FROM secrets$$", K::Select, &[]),
        case("SELECT '; SELECT * FROM secrets'", K::Select, &[]),
        case("SELECT 'a'';SELECT * FROM secrets'", K::Select, &[]),
        case("SELECT 1 -- ; SELECT * FROM secrets", K::Select, &[]),
        case("SELECT 1 -- ' ; SELECT * FROM secrets", K::Select, &[]),
        case(
            "SELECT 1 /* /* */ ; SELECT * FROM secrets */",
            K::Select,
            &[],
        ),
        case(
            "SELECT $a$ $$ ; SELECT * FROM secrets $$ $a$",
            K::Select,
            &[],
        ),
        multi(
            "SELECT E'\\''; SELECT * FROM secrets",
            vec![K::Select, K::Select],
            &["select secrets"],
        ),
        multi(
            "SELECT 1; SELECT * FROM secrets",
            vec![K::Select, K::Select],
            &["select secrets"],
        ),
        multi(
            ";;SELECT 1;;; SELECT * FROM secrets;",
            vec![K::Select, K::Select],
            &["select secrets"],
        ),
        multi(
            "SELECT * FROM orders; DELETE FROM secrets",
            vec![K::Select, K::Delete],
            &["select orders", "delete secrets"],
        ),
        multi(
            "SELECT '1 -- '; SELECT * FROM secrets",
            vec![K::Select, K::Select],
            &["select secrets"],
        ),
    ]
}

fn cte_scoping() -> Vec<Case> {
    vec![
        case(
            "WITH orders AS (SELECT * FROM secrets) SELECT * FROM orders",
            K::Select,
            &["select secrets"],
        ),
        case("WITH secrets AS (SELECT 1) SELECT * FROM secrets", K::Select, &[]),
        case("WITH secrets AS (SELECT 1) SELECT * FROM \"secrets\"", K::Select, &[]),
        case(
            "WITH \"Secrets\" AS (SELECT 1) SELECT * FROM secrets",
            K::Select,
            &["select secrets"],
        ),
        case(
            "WITH secrets AS (SELECT 1) SELECT * FROM public.secrets",
            K::Select,
            &["select public.secrets"],
        ),
        case(
            "WITH secrets AS (SELECT * FROM secrets) SELECT * FROM secrets",
            K::Select,
            &["select secrets"],
        ),
        case(
            "WITH a AS (SELECT * FROM secrets), secrets AS (SELECT 1) SELECT * FROM a",
            K::Select,
            &["select secrets"],
        ),
        case(
            "WITH RECURSIVE a AS (SELECT * FROM secrets), secrets AS (SELECT 1) SELECT * FROM a",
            K::Select,
            &[],
        ),
        case(
            "WITH RECURSIVE secrets(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM secrets WHERE n < 3) SELECT * FROM secrets",
            K::Select,
            &[],
        ),
        case(
            "SELECT * FROM (WITH secrets AS (SELECT 1) SELECT * FROM secrets) x, secrets",
            K::Select,
            &["select secrets"],
        ),
        case(
            "SELECT * FROM secrets UNION (WITH secrets AS (SELECT 1) SELECT * FROM secrets)",
            K::Select,
            &["select secrets"],
        ),
        case(
            "(WITH secrets AS (SELECT 1) SELECT * FROM secrets) UNION SELECT * FROM secrets",
            K::Select,
            &["select secrets"],
        ),
        case(
            "WITH secrets AS (SELECT 1) SELECT * FROM secrets UNION SELECT * FROM secrets",
            K::Select,
            &[],
        ),
        case(
            "WITH secrets AS (SELECT 1) SELECT (SELECT count(*) FROM secrets)",
            K::Select,
            &[],
        ),
        case(
            "SELECT (WITH secrets AS (SELECT 1) SELECT count(*) FROM secrets), (SELECT count(*) FROM secrets)",
            K::Select,
            &["select secrets"],
        ),
        case(
            "WITH x AS (SELECT 1) SELECT * FROM x, LATERAL (WITH secrets AS (SELECT 2) SELECT 1) y, secrets",
            K::Select,
            &["select secrets"],
        ),
        case(
            "WITH a AS (WITH secrets AS (SELECT 1) SELECT * FROM secrets) SELECT * FROM a, secrets",
            K::Select,
            &["select secrets"],
        ),
        case(
            "WITH d AS (DELETE FROM secrets RETURNING *) SELECT * FROM d",
            K::Select,
            &["delete secrets", "select secrets"],
        ),
        case(
            "WITH u AS (UPDATE secrets SET s = 'x' RETURNING s) SELECT * FROM u",
            K::Select,
            &["update secrets", "select secrets"],
        ),
        case(
            "WITH i AS (INSERT INTO secrets VALUES (1, 'x') RETURNING id) SELECT * FROM i",
            K::Select,
            &["insert secrets", "select secrets"],
        ),
        case("WITH secrets AS (SELECT 1) DELETE FROM secrets", K::Delete, &["delete secrets"]),
        case(
            "WITH secrets AS (SELECT 1) INSERT INTO secrets SELECT * FROM secrets",
            K::Insert,
            &["insert secrets"],
        ),
        case(
            "WITH secrets AS (SELECT 1 AS id) UPDATE orders SET total = 0 FROM secrets WHERE secrets.id = orders.id",
            K::Update,
            &["update orders", "select orders"],
        ),
        case(
            "WITH secrets AS (SELECT 1 AS id) MERGE INTO secrets USING orders o ON true WHEN MATCHED THEN DELETE",
            K::Merge,
            &["select secrets", "delete secrets", "select orders"],
        ),
        case(
            "WITH t AS MATERIALIZED (SELECT * FROM secrets) SELECT * FROM t",
            K::Select,
            &["select secrets"],
        ),
        case(
            "WITH RECURSIVE t(n) AS (SELECT id FROM secrets UNION ALL SELECT n FROM t) SEARCH DEPTH FIRST BY n SET ord CYCLE n SET is_cycle USING path SELECT * FROM t",
            K::Select,
            &["select secrets"],
        ),
    ]
}

fn subqueries_everywhere() -> Vec<Case> {
    let s = &["select secrets"];
    let os = &["select orders", "select secrets"];
    vec![
        case("SELECT length((SELECT s FROM secrets LIMIT 1))", K::Select, s).funcs(&["length"]),
        case("SELECT id FROM orders ORDER BY (SELECT count(*) FROM secrets)", K::Select, os),
        case("VALUES ((SELECT s FROM secrets LIMIT 1))", K::Select, s),
        case("SELECT ARRAY(SELECT s FROM secrets)", K::Select, s),
        case("SELECT (ARRAY(SELECT s FROM secrets))[1]", K::Select, s),
        case("SELECT 1 WHERE EXISTS (SELECT 1 FROM secrets WHERE s LIKE 'a%')", K::Select, s),
        case("SELECT * FROM orders WHERE id IN (SELECT id FROM secrets)", K::Select, os),
        case("SELECT * FROM orders WHERE id = ANY (SELECT id FROM secrets)", K::Select, os),
        case("SELECT * FROM orders WHERE total > ALL (SELECT id FROM secrets)", K::Select, os),
        case(
            "SELECT customer_id FROM orders GROUP BY 1 HAVING count(*) > (SELECT count(*) FROM secrets)",
            K::Select,
            os,
        ),
        case("SELECT * FROM orders LIMIT (SELECT count(*) FROM secrets)", K::Select, os),
        case("SELECT * FROM orders OFFSET (SELECT count(*) FROM secrets)", K::Select, os),
        case("SELECT CASE WHEN (SELECT count(*) FROM secrets) > 0 THEN 1 END", K::Select, s),
        case(
            "SELECT CASE (SELECT s FROM secrets LIMIT 1) WHEN 'a' THEN 1 ELSE (SELECT 2 FROM secrets) END",
            K::Select,
            s,
        ),
        case(
            "SELECT * FROM orders o, LATERAL (SELECT * FROM secrets s WHERE s.id = o.id) x",
            K::Select,
            os,
        ),
        case("SELECT * FROM orders o JOIN secrets s ON s.id = o.id", K::Select, os),
        case(
            "SELECT * FROM orders o JOIN customers c ON c.id = (SELECT id FROM secrets LIMIT 1)",
            K::Select,
            &["select orders", "select customers", "select secrets"],
        ),
        case(
            "SELECT * FROM orders NATURAL FULL JOIN (customers CROSS JOIN secrets)",
            K::Select,
            &["select orders", "select customers", "select secrets"],
        ),
        case("SELECT id FROM orders UNION SELECT id FROM secrets", K::Select, os),
        case("SELECT id FROM orders INTERSECT ALL SELECT id FROM secrets", K::Select, os),
        case("SELECT id FROM orders EXCEPT SELECT id FROM secrets", K::Select, os),
        case("SELECT * FROM orders WHERE id = 1 UNION ALL TABLE secrets", K::Select, os),
        case(
            "SELECT sum(total) OVER (PARTITION BY (SELECT 1 FROM secrets LIMIT 1)) FROM orders",
            K::Select,
            os,
        ),
        case(
            "SELECT sum(total) OVER w FROM orders WINDOW w AS (ORDER BY (SELECT 1 FROM secrets LIMIT 1))",
            K::Select,
            os,
        ),
        case(
            "SELECT count(*) FILTER (WHERE EXISTS (SELECT FROM secrets)) FROM orders",
            K::Select,
            os,
        ),
        case(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY (SELECT 1 FROM secrets LIMIT 1)) FROM orders",
            K::Select,
            os,
        ),
        case(
            "SELECT count(*) FROM orders GROUP BY ROLLUP ((SELECT 1 FROM secrets LIMIT 1))",
            K::Select,
            os,
        ),
        case(
            "SELECT count(*) FROM orders GROUP BY GROUPING SETS ((customer_id), ((SELECT 1 FROM secrets LIMIT 1)))",
            K::Select,
            os,
        ),
        case(
            "SELECT DISTINCT ON ((SELECT 1 FROM secrets LIMIT 1)) * FROM orders",
            K::Select,
            os,
        ),
        case(
            "SELECT * FROM ROWS FROM (generate_series(1, (SELECT count(*) FROM secrets)))",
            K::Select,
            s,
        )
        .funcs(&["generate_series", "count"]),
        case(
            "SELECT * FROM generate_series(1, (SELECT max(id) FROM secrets)) WITH ORDINALITY",
            K::Select,
            s,
        ),
        case(
            "SELECT * FROM XMLTABLE('/r' PASSING (SELECT s::xml FROM secrets LIMIT 1) COLUMNS a int PATH 'a')",
            K::Select,
            s,
        ),
        case(
            "SELECT * FROM JSON_TABLE((SELECT s::jsonb FROM secrets LIMIT 1), '$[*]' COLUMNS (a int PATH '$.a'))",
            K::Select,
            s,
        ),
        case("SELECT JSON_ARRAY(SELECT s FROM secrets)", K::Select, s),
        case("SELECT JSON_OBJECT('a': (SELECT s FROM secrets LIMIT 1))", K::Select, s),
        case(
            "SELECT JSON_VALUE(jsonb '{}', '$.a' PASSING (SELECT s FROM secrets LIMIT 1) AS x)",
            K::Select,
            s,
        ),
        case("SELECT (SELECT s FROM secrets LIMIT 1) IS JSON", K::Select, s),
        case("SELECT JSON_ARRAYAGG((SELECT s FROM secrets LIMIT 1))", K::Select, s),
        case("SELECT xmlelement(name x, (SELECT s FROM secrets LIMIT 1))", K::Select, s),
        case("SELECT (1, 2) = (SELECT id, id FROM secrets LIMIT 1)", K::Select, s),
        case("SELECT COALESCE(NULL, (SELECT s FROM secrets LIMIT 1))", K::Select, s),
        case("SELECT GREATEST(1, (SELECT id FROM secrets LIMIT 1))", K::Select, s),
        case("SELECT NULLIF(1, (SELECT id FROM secrets LIMIT 1))", K::Select, s),
        case("SELECT ROW((SELECT s FROM secrets LIMIT 1))", K::Select, s),
        case("SELECT ARRAY[(SELECT s FROM secrets LIMIT 1)]", K::Select, s),
        case("SELECT CAST((SELECT s FROM secrets LIMIT 1) AS int)", K::Select, s),
        case("SELECT (SELECT s FROM secrets LIMIT 1) COLLATE \"C\"", K::Select, s),
        case(
            "SELECT * FROM orders WHERE id BETWEEN (SELECT min(id) FROM secrets) AND 5",
            K::Select,
            os,
        ),
        case(
            "SELECT * FROM orders WHERE (SELECT s FROM secrets LIMIT 1) IS NOT NULL",
            K::Select,
            os,
        ),
        case(
            "SELECT * FROM orders WHERE ((SELECT s FROM secrets LIMIT 1) = 'a') IS TRUE",
            K::Select,
            os,
        ),
        case(
            "SELECT (SELECT (SELECT (SELECT (SELECT s FROM secrets LIMIT 1))))",
            K::Select,
            s,
        ),
        case(
            "SELECT * FROM orders CROSS JOIN LATERAL jsonb_to_record((SELECT to_jsonb(s) FROM secrets s LIMIT 1)) AS x(a int)",
            K::Select,
            os,
        ),
        case(
            "SELECT f(n => (SELECT 1 FROM secrets), VARIADIC ARRAY[(SELECT s FROM secrets LIMIT 1)])",
            K::Select,
            s,
        )
        .funcs(&["f"]),
        case("SELECT ('{1}'::int[])[(SELECT 1 FROM secrets):2]", K::Select, s),
    ]
}

#[test]
fn adversarial_identifiers_and_comments() {
    assert!(run_table(identifiers_and_comments()) >= 30);
}

#[test]
fn adversarial_cte_scoping() {
    assert!(run_table(cte_scoping()) >= 20);
}

#[test]
fn adversarial_subqueries_everywhere() {
    assert!(run_table(subqueries_everywhere()) >= 45);
}
