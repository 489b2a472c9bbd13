//! Masking end to end: the demo's analyst and writer read `customers` with `email`, `phone` and
//! `ssn` masked. For every way of asking (select list, `*`, `TABLE`, whole-row references, JSON,
//! expressions and casts, aggregates, subqueries, CTEs, set operations, LATERAL, cursors,
//! prepared statements, predicates, ordering, grouping, joins, COPY), in text and binary
//! formats, over the simple and the extended protocol, none of the raw values fetched directly
//! from the upstream, nor a simple transform of one, reaches the agent.

mod support;

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use futures_util::StreamExt;
use support::{connect, harness, sqlstate, upstream};
use tokio_postgres::types::{FromSql, Type};

/// Any column value, as the raw bytes the protocol carried (binary format).
struct Raw(Vec<u8>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Raw PII straight from the upstream, with simple transforms of each value, indexed by their
/// first four bytes so a large result is searched in one pass.
struct Secrets {
    by_prefix: HashMap<[u8; 4], Vec<Vec<u8>>>,
}

impl Secrets {
    async fn load() -> Secrets {
        let up = upstream().await;
        let rows = up
            .query("SELECT email, phone, ssn FROM customers", &[])
            .await
            .unwrap();
        let mut set = HashSet::new();
        for r in rows {
            for i in 0..3 {
                let Some(v): Option<String> = r.get(i) else {
                    continue;
                };
                let digits: String = v.chars().filter(|c| c.is_ascii_digit()).collect();
                let mut forms = vec![v.clone(), v.to_uppercase(), v.to_lowercase()];
                forms.push(v.chars().rev().collect());
                if let Some((local, _)) = v.split_once('@') {
                    forms.push(format!("{local}@"));
                }
                if digits.len() >= 7 {
                    forms.push(digits);
                }
                set.extend(forms.into_iter().filter(|f| f.len() >= 7));
            }
        }
        assert!(set.len() > 1000, "expected plenty of raw PII upstream");
        let mut by_prefix: HashMap<[u8; 4], Vec<Vec<u8>>> = HashMap::new();
        for n in set {
            let b = n.into_bytes();
            by_prefix
                .entry([b[0], b[1], b[2], b[3]])
                .or_default()
                .push(b);
        }
        Secrets { by_prefix }
    }

    /// The first raw value or transform found in `haystack` (text or binary).
    fn find(&self, haystack: &[u8]) -> Option<String> {
        for i in 0..haystack.len().saturating_sub(3) {
            let key = [
                haystack[i],
                haystack[i + 1],
                haystack[i + 2],
                haystack[i + 3],
            ];
            if let Some(candidates) = self.by_prefix.get(&key) {
                if let Some(n) = candidates.iter().find(|n| haystack[i..].starts_with(n)) {
                    return Some(String::from_utf8_lossy(n).into_owned());
                }
            }
        }
        None
    }

    fn assert_absent(&self, what: &str, haystack: &[u8]) {
        if let Some(n) = self.find(haystack) {
            panic!("{what}: raw value {n:?} reached the agent");
        }
    }
}

/// Every way of reading customers an agent might try.
const POSITIONS: &[&str] = &[
    "SELECT email, phone, ssn FROM customers",
    "SELECT email AS e, phone p, ssn AS \"S\" FROM customers",
    "SELECT * FROM customers",
    "SELECT c.* FROM customers c",
    "TABLE customers",
    "SELECT * FROM ONLY customers",
    "SELECT * FROM public.customers",
    "SELECT * FROM \"customers\"",
    "SELECT c FROM customers c",
    "SELECT customers FROM customers",
    "SELECT row_to_json(c) FROM customers c",
    "SELECT to_jsonb(c) FROM customers c",
    "SELECT json_agg(c) FROM customers c",
    "SELECT upper(email), lower(ssn), substr(phone, 1, 20), email || '|' || ssn FROM customers",
    "SELECT email::bytea, ssn::bytea, md5(email), encode(ssn::bytea, 'hex') FROM customers",
    "SELECT reverse(ssn), translate(phone, '0123456789', 'abcdefghij'), replace(email, '@', '#') FROM customers",
    "SELECT string_agg(email, ','), string_agg(ssn, ','), array_agg(phone) FROM customers",
    "SELECT min(email), max(email), min(ssn), max(phone) FROM customers",
    "SELECT (SELECT ssn FROM customers c2 WHERE c2.id = o.customer_id) FROM orders o LIMIT 500",
    "WITH x AS (SELECT * FROM customers) SELECT * FROM x",
    "WITH RECURSIVE x AS (SELECT email FROM customers) SELECT * FROM x",
    "SELECT email FROM customers UNION ALL SELECT ssn FROM customers",
    "SELECT ssn FROM customers EXCEPT SELECT 'x'",
    "SELECT o.id, l.email FROM orders o CROSS JOIN LATERAL (SELECT email FROM customers c WHERE c.id = o.customer_id) l LIMIT 500",
    "SELECT id FROM customers WHERE ssn LIKE '1%' OR email LIKE 'a%' OR phone LIKE '5%'",
    "SELECT id, name FROM customers ORDER BY ssn, email, phone",
    "SELECT email, count(*) FROM customers GROUP BY email",
    "SELECT a.id, b.id FROM customers a JOIN customers b ON a.email = b.email AND a.id < b.id",
    "SELECT id FROM customers WHERE position('@' in email) > 3 AND length(ssn) = 11",
    "SELECT format('%s %s %s', email, phone, ssn) FROM customers",
    "SELECT regexp_replace(email, '(.*)@(.*)', '\\2 \\1') FROM customers",
    "SELECT (array_agg(ssn ORDER BY id))[1:3] FROM customers",
    "SELECT email FROM customers WHERE id IN (SELECT customer_id FROM orders WHERE amount > 50)",
    "SELECT EXISTS (SELECT 1 FROM customers WHERE ssn = 'x')",
    "SELECT * FROM (SELECT * FROM (TABLE customers) t1) t2",
    "VALUES ((SELECT max(ssn) FROM customers))",
];

async fn check_simple(client: &tokio_postgres::Client, secrets: &Secrets, sql: &str) {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut text = String::new();
    for m in messages {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            for i in 0..r.len() {
                text.push_str(r.get(i).unwrap_or(""));
                text.push('\u{1}');
            }
        }
    }
    secrets.assert_absent(&format!("simple: {sql}"), text.as_bytes());
}

async fn check_extended(client: &tokio_postgres::Client, secrets: &Secrets, sql: &str) {
    let rows = client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut bytes = Vec::new();
    for r in rows {
        for i in 0..r.len() {
            if let Some(Raw(v)) = r.get::<_, Option<Raw>>(i) {
                bytes.extend_from_slice(&v);
                bytes.push(1);
            }
        }
    }
    secrets.assert_absent(&format!("extended/binary: {sql}"), &bytes);
}

#[test]
fn no_raw_pii_reaches_the_analyst_in_any_position_or_format() {
    let h = harness();
    h.runtime.block_on(async {
        let secrets = Secrets::load().await;
        // The search does find raw values where they are not masked (trusted: passthrough).
        let trusted = connect("trusted").await;
        let raw = trusted
            .query_one(
                "SELECT email || ssn FROM customers WHERE ssn IS NOT NULL LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        assert!(secrets.find(raw.get::<_, String>(0).as_bytes()).is_some());
        let analyst = connect("analyst").await;
        for sql in POSITIONS {
            check_simple(&analyst, &secrets, sql).await;
            check_extended(&analyst, &secrets, sql).await;
        }
        // A prepared statement reused, and a cursor fetched in pieces.
        let stmt = analyst
            .prepare("SELECT email, ssn FROM customers WHERE id = $1")
            .await
            .unwrap();
        for id in 1..50i64 {
            let rows = analyst.query(&stmt, &[&id]).await.unwrap();
            for r in rows {
                let email: String = r.get(0);
                secrets.assert_absent("prepared", email.as_bytes());
                assert!(email.starts_with("***@"), "{email}");
            }
        }
        analyst.batch_execute("BEGIN").await.unwrap();
        analyst
            .batch_execute("DECLARE c CURSOR FOR SELECT * FROM customers")
            .await
            .unwrap();
        for _ in 0..3 {
            let rows = analyst.query("FETCH 400 FROM c", &[]).await.unwrap();
            for r in rows {
                for i in 0..r.len() {
                    if let Some(Raw(v)) = r.get::<_, Option<Raw>>(i) {
                        secrets.assert_absent("cursor", &v);
                    }
                }
            }
        }
        analyst.batch_execute("COMMIT").await.unwrap();
    });
}

#[test]
fn predicates_see_masked_values_and_unmasked_columns_stay_intact() {
    let h = harness();
    h.runtime.block_on(async {
        let up = upstream().await;
        let raw = up
            .query_one(
                "SELECT id, name, email, ssn, region FROM customers ORDER BY id LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        let (id, name, email, ssn, region): (i64, String, String, String, String) =
            (raw.get(0), raw.get(1), raw.get(2), raw.get(3), raw.get(4));
        let analyst = connect("analyst").await;
        // Probing a raw value through a predicate finds nothing: the predicate sees the mask.
        for (sql, value) in [
            ("SELECT count(*) FROM customers WHERE email = $1", &email),
            ("SELECT count(*) FROM customers WHERE ssn = $1", &ssn),
            (
                "SELECT count(*) FROM customers WHERE ssn LIKE left($1, 3) || '%'",
                &ssn,
            ),
        ] {
            let n: i64 = analyst
                .query_one(sql, &[value])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
                .get(0);
            assert_eq!(n, 0, "{sql}");
        }
        let row = analyst
            .query_one(
                "SELECT id, name, email, phone, ssn, region FROM customers WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), id);
        assert_eq!(row.get::<_, String>(1), name);
        assert_eq!(row.get::<_, String>(5), region);
        let masked_email: String = row.get(2);
        assert_eq!(
            masked_email,
            format!("***@{}", email.split_once('@').unwrap().1)
        );
        assert_eq!(row.get::<_, String>(4), "REDACTED");
        let phone: Option<String> = row.get(3);
        if let Some(p) = phone {
            assert!(p.starts_with("***") && p.len() <= 7, "{p}");
        }
        // Same row count, names and types as the unmasked query would have.
        let n_up: i64 = up
            .query_one("SELECT count(*) FROM customers", &[])
            .await
            .unwrap()
            .get(0);
        let n: i64 = analyst
            .query_one("SELECT count(*) FROM customers", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, n_up);
        let stmt = analyst.prepare("SELECT * FROM customers").await.unwrap();
        let names: Vec<&str> = stmt.columns().iter().map(|c| c.name()).collect();
        assert_eq!(names, ["id", "name", "email", "phone", "ssn", "region"]);
        assert_eq!(stmt.columns()[2].type_(), &Type::TEXT);
        // Hash-free masks are stable: the same customer masks the same way twice.
        let a: String = analyst
            .query_one("SELECT email FROM customers WHERE id = 1", &[])
            .await
            .unwrap()
            .get(0);
        let b: String = analyst
            .query_one("SELECT email FROM customers WHERE id = 1", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(a, b);
    });
}

#[test]
fn copy_out_of_a_masked_table_is_masked_for_the_writer() {
    let h = harness();
    h.runtime.block_on(async {
        let secrets = Secrets::load().await;
        let writer = connect("writer").await;
        for sql in [
            "COPY customers TO STDOUT",
            "COPY customers (id, email, ssn) TO STDOUT WITH (FORMAT csv)",
            "COPY (SELECT * FROM customers) TO STDOUT WITH (FORMAT binary)",
            "COPY public.customers TO STDOUT",
        ] {
            let stream = writer
                .copy_out(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            let chunks: Vec<Bytes> = stream.map(|c| c.unwrap()).collect().await;
            let all: Vec<u8> = chunks.concat();
            assert!(all.len() > 1000, "{sql}: some data");
            secrets.assert_absent(sql, &all);
        }
    });
}

#[test]
fn positions_the_rewrite_cannot_handle_are_refused() {
    let h = harness();
    h.runtime.block_on(async {
        let analyst = connect("analyst").await;
        for sql in [
            "SELECT * FROM customers TABLESAMPLE SYSTEM (50)",
            "SELECT * FROM customers TABLESAMPLE BERNOULLI (50) REPEATABLE (1)",
        ] {
            let e = analyst.simple_query(sql).await.unwrap_err();
            assert_eq!(sqlstate(&e), "42501", "{sql}");
        }
        let writer = connect("writer").await;
        // DML on a masked table may not read masked columns.
        for sql in [
            "UPDATE customers SET name = name WHERE ssn LIKE '1%'",
            "DELETE FROM customers WHERE email = 'x' RETURNING id",
            "UPDATE customers SET name = 'x' WHERE id = -1 RETURNING *",
        ] {
            let e = writer.simple_query(sql).await.unwrap_err();
            assert_eq!(sqlstate(&e), "42501", "{sql}: {e}");
        }
        // A qualified column reference through the masked name fails upstream; nothing leaks.
        let e = analyst
            .simple_query("SELECT public.customers.ssn FROM public.customers")
            .await
            .unwrap_err();
        assert_ne!(sqlstate(&e), "00000");
        // The session is still usable.
        analyst.simple_query("SELECT 1").await.unwrap();
    });
}

#[test]
fn audit_records_masked_reads_with_the_rule() {
    let h = harness();
    h.runtime.block_on(async {
        let analyst = connect("analyst").await;
        analyst
            .simple_query("SELECT ssn FROM customers WHERE id = 7 -- audit-masked-probe")
            .await
            .unwrap();
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let log = std::fs::read_to_string(&h.env.audit_log).unwrap();
    let rec = log
        .lines()
        .filter(|l| l.contains("audit-masked-probe"))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["kind"] == "decision")
        .expect("decision record");
    assert_eq!(rec["decision"], "masked");
    assert!(rec["rule"]
        .as_str()
        .unwrap()
        .contains("analyst: table public.customers"));
}

/// The position of the first error of `sql`, as the client sees it.
fn error_position(e: &tokio_postgres::Error) -> Option<u32> {
    match e.as_db_error()?.position()? {
        tokio_postgres::error::ErrorPosition::Original(p) => Some(*p),
        tokio_postgres::error::ErrorPosition::Internal { .. } => None,
    }
}

#[test]
fn an_error_after_a_masked_table_points_where_the_server_would_in_the_clients_text() {
    let h = harness();
    h.runtime.block_on(async {
        let analyst = connect("analyst").await;
        let direct = upstream().await;
        // Each fails after (or between) masked names, which the rewrite replaces with longer
        // subqueries: the server's position is in the rewritten text.
        let both = [
            "SELECT name FROM customers WHERE nosuch = 1",
            "SELECT c.name, 'é€ü' AS x FROM customers c JOIN customers d ON d.id = c.id WHERE d.nosuch = 1",
            "SELECT name FROM customers WHERE id = 'x'",
            "SELECT name FROM customers c /* ünïcode */ JOIN orders o ON o.customer_id = c.id ORDER BY o.nosuch",
        ];
        let simple_only = ["SELECT 1; SELECT 'ß' FROM customers WHERE email = 'x' AND nosuch"];
        for sql in both.iter().chain(&simple_only) {
            let want = error_position(&direct.simple_query(sql).await.unwrap_err());
            assert!(want.is_some(), "{sql}: the server gives a position");
            let got = analyst.simple_query(sql).await.unwrap_err();
            assert_eq!(error_position(&got), want, "simple: {sql}: {got:?}");
        }
        for sql in both {
            let want = error_position(&direct.prepare(sql).await.unwrap_err());
            let got = analyst.prepare(sql).await.unwrap_err();
            assert_eq!(error_position(&got), want, "extended: {sql}: {got:?}");
        }
        analyst.simple_query("SELECT 1").await.unwrap();
    });
}
