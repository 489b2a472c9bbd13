//! The decision table: statements an analyst or writer would write (allowed) and attempts to get
//! around the demo policies (refused), by the threat model's classes. Used by the pure engine
//! test (`policy_decisions.rs`) and end to end through the gateway (`pg_adversarial.rs`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use tollgate::auth::{AgentStore, AgentsFile};
use tollgate::demo::files::POLICIES;
use tollgate::policy::mask::{ColumnShape, SchemaSnapshot, TableShape};
use tollgate::policy::{Engine, PolicyContext, PolicySet};

pub fn demo_engine() -> Engine {
    let mut agents = AgentsFile::default();
    for name in ["analyst", "writer", "trusted"] {
        agents.add(name, "tg_test", vec![]).unwrap();
    }
    let store = AgentStore::from_file(&PathBuf::from("agents.toml"), agents).unwrap();
    let ctx = PolicyContext {
        agents: &store,
        upstreams: BTreeMap::from([("shop".to_string(), vec!["public".to_string()])]),
    };
    let sources = POLICIES
        .iter()
        .map(|(n, t)| (PathBuf::from(n), t.to_string()))
        .collect();
    let engine = Engine::new(PolicySet::from_sources(sources, &ctx).unwrap());
    engine.set_schema("shop", demo_schema());
    engine
}

/// The demo's tables as the schema loader reads them from the upstream.
pub fn demo_schema() -> SchemaSnapshot {
    let mut s = SchemaSnapshot::default();
    let table = |oid, name: &str, cols: &[(&str, &str, char)]| TableShape {
        oid,
        schema: "public".into(),
        name: name.into(),
        columns: cols
            .iter()
            .enumerate()
            .map(|(i, (n, t, c))| ColumnShape {
                name: n.to_string(),
                attnum: i as i16 + 1,
                type_sql: t.to_string(),
                category: *c,
            })
            .collect(),
    };
    s.insert(table(
        16001,
        "customers",
        &[
            ("id", "bigint", 'N'),
            ("name", "text", 'S'),
            ("email", "text", 'S'),
            ("phone", "text", 'S'),
            ("ssn", "text", 'S'),
            ("region", "text", 'S'),
        ],
    ));
    s.insert(table(
        16002,
        "orders",
        &[
            ("id", "bigint", 'N'),
            ("customer_id", "bigint", 'N'),
            ("amount", "numeric(10,2)", 'N'),
            ("created_at", "timestamp with time zone", 'D'),
        ],
    ));
    s
}

/// Statements the analyst may run.
pub const ANALYST_ALLOWED: &[&str] = &[
    "SELECT * FROM orders",
    "SELECT count(*) FROM customers",
    "select id, name from CUSTOMERS where region = 'EU'",
    "SELECT o.id, c.name FROM orders o JOIN customers c ON c.id = o.customer_id",
    "SELECT * FROM public.orders WHERE amount > 100 ORDER BY created_at DESC LIMIT 10",
    "SELECT region, count(*), avg(o.amount) FROM customers c JOIN orders o ON o.customer_id = c.id GROUP BY region",
    "SELECT region, count(*) FROM customers GROUP BY ROLLUP (region)",
    "WITH t AS (SELECT customer_id, sum(amount) s FROM orders GROUP BY 1) SELECT * FROM t WHERE s > 10",
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10) SELECT * FROM n",
    "SELECT id, amount, rank() OVER (PARTITION BY customer_id ORDER BY amount DESC) FROM orders",
    "SELECT id, sum(amount) OVER (ORDER BY created_at ROWS BETWEEN 6 PRECEDING AND CURRENT ROW) FROM orders",
    "SELECT date_trunc('month', created_at) m, sum(amount) FROM orders GROUP BY 1 ORDER BY 1",
    "SELECT * FROM orders WHERE customer_id IN (SELECT id FROM customers WHERE region = 'US')",
    "SELECT * FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id)",
    "SELECT c.*, l.total FROM customers c CROSS JOIN LATERAL (SELECT sum(amount) total FROM orders o WHERE o.customer_id = c.id) l",
    "SELECT id FROM orders UNION SELECT id FROM customers",
    "SELECT id FROM orders INTERSECT SELECT customer_id FROM orders",
    "TABLE orders",
    "SELECT * FROM ONLY orders",
    "SELECT * FROM orders TABLESAMPLE SYSTEM (10)",
    "SELECT lower(name), upper(region), length(email), coalesce(phone, '-') FROM customers",
    "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY amount) FROM orders",
    "SELECT count(*) FILTER (WHERE amount > 50) FROM orders",
    "SELECT json_agg(o) FROM (SELECT id, amount FROM orders LIMIT 5) o",
    "SELECT to_char(created_at, 'YYYY-MM'), round(avg(amount), 2) FROM orders GROUP BY 1",
    "SELECT * FROM orders WHERE created_at > now() - interval '7 days'",
    "SELECT $1::int + 1",
    "SELECT 1",
    "SELECT version()",
    "SELECT pg_sleep(0.1)",
    "SELECT * FROM generate_series(1, 10) g",
    "EXPLAIN SELECT * FROM orders WHERE id = 1",
    "EXPLAIN ANALYZE SELECT count(*) FROM orders",
    "BEGIN",
    "BEGIN ISOLATION LEVEL REPEATABLE READ",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT a",
    "ROLLBACK TO SAVEPOINT a",
    "RELEASE SAVEPOINT a",
    "SET application_name = 'report'",
    "SET statement_timeout = '5s'",
    "SET TIME ZONE 'UTC'",
    "SET datestyle TO ISO",
    "SET TRANSACTION READ ONLY",
    "SHOW search_path",
    "SHOW ALL",
    "RESET application_name",
    "RESET ALL",
    "DISCARD ALL",
    "PREPARE q(int) AS SELECT * FROM orders WHERE id = $1",
    "DEALLOCATE ALL",
    "DECLARE c CURSOR FOR SELECT * FROM orders",
    "FETCH 10 FROM c",
    "CLOSE c",
    "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'",
    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
    "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'orders'",
    "SELECT attname FROM pg_attribute WHERE attrelid = 'orders'::regclass",
    "SELECT pg_catalog.format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute LIMIT 1",
    "SELECT o.id FROM orders o WHERE o.amount = (SELECT max(amount) FROM orders)",
    "SELECT CASE WHEN amount > 100 THEN 'big' ELSE 'small' END FROM orders",
    "SELECT DISTINCT ON (customer_id) customer_id, amount FROM orders ORDER BY customer_id, amount DESC",
    "VALUES (1), (2)",
    "SELECT * FROM (VALUES (1, 'a')) v(i, s)",
    "SELECT ARRAY(SELECT id FROM orders LIMIT 3)",
    "SELECT string_agg(name, ', ') FROM customers",
    "",
    "-- only a comment",
    ";",
];

/// Attempts the analyst must be refused, by threat-model class.
pub const ANALYST_REFUSED: &[&str] = &[
    // plain forbidden table and its spellings
    "SELECT * FROM secrets",
    "SELECT * FROM SECRETS",
    "SELECT * FROM \"secrets\"",
    "SELECT * FROM public.secrets",
    "SELECT * FROM \"public\".\"secrets\"",
    "SELECT * FROM U&\"\\0073ecrets\"",
    "SELECT * FROM/**/secrets",
    "SELECT * FROM ONLY secrets",
    "TABLE secrets",
    "SELECT * FROM secrets TABLESAMPLE BERNOULLI (50)",
    "SELECT * FROM orders, secrets",
    "SELECT * FROM orders JOIN secrets ON true",
    // multi-statement strings and comments
    "SELECT 1; SELECT * FROM secrets",
    "SELECT * FROM orders; DELETE FROM orders",
    "SELECT 1 /* ; */ ; SELECT api_key FROM secrets",
    "SELECT '--'; SELECT * FROM secrets",
    // CTEs and subqueries
    "WITH x AS (SELECT * FROM secrets) SELECT * FROM x",
    "WITH orders AS (SELECT * FROM secrets) SELECT * FROM orders",
    "WITH secrets AS (SELECT 1) SELECT * FROM public.secrets",
    "WITH a AS (SELECT 1) SELECT * FROM a, (WITH b AS (SELECT * FROM secrets) SELECT * FROM b) s",
    "SELECT (SELECT api_key FROM secrets LIMIT 1)",
    "SELECT * FROM orders WHERE id IN (SELECT id FROM secrets)",
    "SELECT * FROM orders WHERE EXISTS (SELECT 1 FROM secrets)",
    "SELECT * FROM orders ORDER BY (SELECT count(*) FROM secrets)",
    "SELECT * FROM orders LIMIT (SELECT count(*) FROM secrets)",
    "SELECT * FROM orders GROUP BY id HAVING count(*) > (SELECT 0 FROM secrets LIMIT 1)",
    "SELECT coalesce((SELECT api_key FROM secrets LIMIT 1), 'x')",
    "SELECT ARRAY(SELECT api_key FROM secrets)",
    "SELECT * FROM orders o, LATERAL (SELECT * FROM secrets) s",
    "SELECT * FROM (VALUES ((SELECT api_key FROM secrets LIMIT 1))) v",
    "SELECT CASE WHEN true THEN (SELECT api_key FROM secrets LIMIT 1) END",
    "SELECT id FROM orders UNION SELECT id FROM secrets",
    "SELECT id FROM orders EXCEPT SELECT id FROM secrets",
    "SELECT id FROM orders WHERE id = ANY (SELECT id FROM secrets)",
    // writes, in every disguise
    "INSERT INTO orders (id, customer_id, amount, created_at) VALUES (1, 1, 1, now())",
    "UPDATE orders SET amount = 0",
    "DELETE FROM orders",
    "TRUNCATE orders",
    "MERGE INTO orders o USING customers c ON o.customer_id = c.id WHEN MATCHED THEN DELETE",
    "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d",
    "WITH u AS (UPDATE orders SET amount = 1 RETURNING id) SELECT count(*) FROM u",
    "INSERT INTO orders SELECT * FROM orders",
    "SELECT * FROM orders FOR UPDATE",
    "SELECT * FROM orders FOR SHARE",
    "COPY orders FROM STDIN",
    "COPY orders TO STDOUT",
    "COPY (SELECT * FROM orders) TO STDOUT",
    "COPY secrets TO STDOUT",
    "COPY orders TO '/tmp/x'",
    "COPY orders FROM PROGRAM 'id'",
    "COPY (SELECT 1) TO PROGRAM 'sh -c id'",
    // DDL, DCL and objects the agent would create
    "CREATE TABLE x (id int)",
    "CREATE TEMP TABLE t AS SELECT * FROM orders",
    "CREATE TABLE s AS SELECT * FROM secrets",
    "SELECT * INTO x FROM orders",
    "SELECT * INTO TEMP y FROM secrets",
    "CREATE VIEW v AS SELECT * FROM secrets",
    "CREATE VIEW v AS SELECT * FROM orders",
    "CREATE MATERIALIZED VIEW mv AS SELECT * FROM orders",
    "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS 'SELECT api_key FROM secrets LIMIT 1'",
    "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$",
    "CREATE OR REPLACE RULE r AS ON SELECT TO orders DO INSTEAD SELECT * FROM secrets",
    "CREATE TRIGGER t BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION f()",
    "CREATE EXTENSION dblink",
    "CREATE INDEX ON orders (amount)",
    "ALTER TABLE orders ADD COLUMN x int",
    "DROP TABLE orders",
    "DROP TABLE secrets",
    "COMMENT ON TABLE orders IS 'x'",
    "GRANT SELECT ON secrets TO PUBLIC",
    "REVOKE ALL ON orders FROM PUBLIC",
    "CREATE ROLE evil LOGIN SUPERUSER",
    "ALTER ROLE tollgate_shop SUPERUSER",
    "ALTER SYSTEM SET log_statement = 'none'",
    "LOAD 'auto_explain'",
    "DO $$ BEGIN PERFORM 1; END $$",
    "DO $$ BEGIN EXECUTE 'SELECT * FROM secrets'; END $$",
    "CALL p()",
    "LOCK TABLE orders",
    "VACUUM orders",
    "ANALYZE orders",
    "REINDEX TABLE orders",
    "CLUSTER orders",
    "CHECKPOINT",
    "REFRESH MATERIALIZED VIEW mv",
    "PREPARE TRANSACTION 'x'",
    // functions that read files, run SQL from text, change settings, signal, reach out
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT pg_read_binary_file('/etc/passwd')",
    "SELECT pg_ls_dir('.')",
    "SELECT pg_stat_file('postgresql.conf')",
    "SELECT query_to_xml('SELECT * FROM secrets', true, true, '')",
    "SELECT table_to_xml('secrets', true, true, '')",
    "SELECT database_to_xml(true, true, '')",
    "SELECT cursor_to_xml('c', 10, true, true, '')",
    "SELECT xpath('/a', query_to_xml('select 1', true, true, ''))",
    "SELECT set_config('search_path', 'pg_temp', false)",
    "SELECT set_config('role', 'postgres', false)",
    "SELECT pg_terminate_backend(1)",
    "SELECT pg_cancel_backend(1)",
    "SELECT pg_reload_conf()",
    "SELECT lo_import('/etc/passwd')",
    "SELECT lo_export(1, '/tmp/x')",
    "SELECT lo_get(1)",
    "SELECT dblink('host=evil', 'SELECT 1')",
    "SELECT dblink_exec('SELECT 1')",
    "SELECT nextval('orders_id_seq')",
    "SELECT setval('orders_id_seq', 1)",
    "SELECT pg_advisory_lock(1)",
    "SELECT public.evil()",
    "SELECT evil_function(1)",
    "SELECT pg_catalog.pg_read_file('x')",
    "SELECT * FROM orders WHERE id = (SELECT length(pg_read_file('/etc/passwd')))",
    "SELECT ts_stat('SELECT to_tsvector(api_key) FROM secrets')",
    "SELECT pg_logical_emit_message(true, 'x', 'y')",
    "SELECT current_setting('x') FROM orders WHERE set_config('a.b', 'c', false) IS NOT NULL",
    // catalogs and statistics that reveal stored values or secrets
    "SELECT * FROM pg_stats",
    "SELECT * FROM pg_catalog.pg_stats WHERE tablename = 'customers'",
    "SELECT most_common_vals FROM pg_stats WHERE attname = 'ssn'",
    "SELECT * FROM pg_statistic",
    "SELECT * FROM pg_stats_ext",
    "SELECT * FROM pg_authid",
    "SELECT passwd FROM pg_shadow",
    "SELECT * FROM pg_user_mappings",
    "SELECT * FROM pg_largeobject",
    "SELECT query FROM pg_stat_activity",
    "SELECT * FROM pg_file_settings",
    "SELECT * FROM pg_hba_file_rules",
    "SELECT * FROM pg_settings",
    "SELECT * FROM pg_prepared_statements",
    "SELECT * FROM pg_toast.pg_toast_1234",
    // session settings and identity
    "SET ROLE postgres",
    "SET LOCAL ROLE postgres",
    "SET SESSION AUTHORIZATION postgres",
    "SET search_path = secret_schema, public",
    "SET search_path TO DEFAULT",
    "SET \"search_path\" = pg_temp",
    "SET standard_conforming_strings = off",
    "SET client_encoding = 'SJIS'",
    "SET log_statement = 'none'",
    "SET session_replication_role = replica",
    "RESET ROLE; SET ROLE postgres",
    // prepared statements and cursors
    "PREPARE p AS SELECT * FROM secrets",
    "PREPARE p AS DELETE FROM orders",
    "EXECUTE never_prepared",
    "EXECUTE never_prepared(1)",
    "EXPLAIN ANALYZE EXECUTE never_prepared",
    "DECLARE c CURSOR FOR SELECT * FROM secrets",
    "DECLARE c CURSOR WITH HOLD FOR SELECT api_key FROM secrets",
    "EXPLAIN SELECT * FROM secrets",
    "EXPLAIN ANALYZE DELETE FROM orders",
    "EXPLAIN (ANALYZE, FORMAT JSON) WITH d AS (DELETE FROM orders RETURNING 1) SELECT 1",
    // listen/notify
    "LISTEN events",
    "NOTIFY events, 'x'",
    // unparsable
    "SELEC * FROM orders",
    "SELECT * FROM orders WHERE",
    "SELECT 'unterminated",
];

/// Writer: reads and writes orders, reads customers, may COPY.
pub const WRITER_ALLOWED: &[&str] = &[
    "INSERT INTO orders (id, customer_id, amount, created_at) VALUES (1, 1, 1, now())",
    "UPDATE orders SET amount = amount + 1 WHERE id = 1",
    "DELETE FROM orders WHERE id = 1",
    "INSERT INTO orders (id, customer_id, amount, created_at) SELECT 2, id, 1, now() FROM customers LIMIT 1",
    "WITH d AS (DELETE FROM orders WHERE id = 3 RETURNING *) SELECT count(*) FROM d",
    "INSERT INTO orders (id, customer_id, amount, created_at) VALUES (4, 1, 1, now()) ON CONFLICT (id) DO UPDATE SET amount = excluded.amount",
    "COPY orders TO STDOUT",
    "COPY orders (id, amount) FROM STDIN",
    "COPY (SELECT o.id, c.region FROM orders o JOIN customers c ON c.id = o.customer_id) TO STDOUT",
    "SELECT * FROM orders FOR UPDATE",
    "MERGE INTO orders o USING (VALUES (1, 2.0)) v(id, amount) ON o.id = v.id WHEN MATCHED THEN UPDATE SET amount = v.amount",
];

pub const WRITER_REFUSED: &[&str] = &[
    "UPDATE customers SET email = 'x'",
    "DELETE FROM customers",
    "INSERT INTO secrets VALUES (1, 'x')",
    "SELECT * FROM secrets",
    "INSERT INTO orders SELECT * FROM secrets",
    "UPDATE orders SET amount = (SELECT count(*) FROM secrets)",
    "DELETE FROM orders WHERE id IN (SELECT id FROM secrets)",
    "WITH s AS (SELECT * FROM secrets) INSERT INTO orders SELECT id, id, 1, now() FROM s",
    "COPY customers FROM STDIN",
    "COPY secrets TO STDOUT",
    "TRUNCATE orders",
    "SELECT * FROM customers FOR UPDATE",
    "MERGE INTO customers c USING orders o ON o.customer_id = c.id WHEN MATCHED THEN DELETE",
    "UPDATE orders o SET amount = 1 FROM secrets s WHERE s.id = o.id",
    "INSERT INTO orders (id, customer_id, amount, created_at) VALUES (5, 1, 1, now()) RETURNING (SELECT api_key FROM secrets LIMIT 1)",
];
