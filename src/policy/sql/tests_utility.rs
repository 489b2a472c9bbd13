//! Tests of session and transaction statements (SET/RESET/SHOW, DISCARD, LISTEN/NOTIFY, cursors, prepared statements, transactions), of literal sensitivity, statement spans and inner kinds, and of failure modes: syntax errors, empty input, NUL bytes, deeply nested statements.

use super::tests_support::{case, must, run_table, Case};
use super::{analyze, AnalyzeError, StatementKind as K};

fn set(name: &str, value: Option<&str>, local: bool) -> K {
    K::Set {
        name: name.into(),
        value: value.map(Into::into),
        local,
    }
}

fn session_statements() -> Vec<Case> {
    vec![
        case(
            "SET search_path = public",
            set("search_path", Some("public"), false),
            &[],
        ),
        case(
            "SET \"Search_Path\" TO \"$user\", public, 'My Schema'",
            set(
                "search_path",
                Some("\"$user\", public, \"My Schema\""),
                false,
            ),
            &[],
        ),
        case(
            "SET SCHEMA 'evil'",
            set("search_path", Some("evil"), false),
            &[],
        ),
        case(
            "SET LOCAL statement_timeout = 0",
            set("statement_timeout", Some("0"), true),
            &[],
        ),
        case(
            "SET statement_timeout TO '5s'",
            set("statement_timeout", Some("5s"), false),
            &[],
        ),
        case(
            "SET SESSION work_mem = DEFAULT",
            set("work_mem", None, false),
            &[],
        ),
        case(
            "SET sort_mem = 1024",
            set("work_mem", Some("1024"), false),
            &[],
        ),
        case("SET ROLE admin", set("role", Some("admin"), false), &[]),
        case("SET LOCAL ROLE NONE", set("role", Some("none"), true), &[]),
        case(
            "SET SESSION AUTHORIZATION postgres",
            set("session_authorization", Some("postgres"), false),
            &[],
        ),
        case(
            "SET SESSION AUTHORIZATION DEFAULT",
            set("session_authorization", None, false),
            &[],
        ),
        case(
            "SET TIME ZONE 'UTC'",
            set("timezone", Some("UTC"), false),
            &[],
        ),
        case("SET TIME ZONE LOCAL", set("timezone", None, false), &[]),
        case(
            "SET NAMES 'LATIN1'",
            set("client_encoding", Some("LATIN1"), false),
            &[],
        ),
        case(
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE",
            set(
                "transaction",
                Some("transaction_isolation=serializable, transaction_read_only=0"),
                false,
            ),
            &[],
        ),
        case(
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            set(
                "session_characteristics",
                Some("transaction_read_only=1"),
                false,
            ),
            &[],
        ),
        case(
            "SET default_transaction_read_only = off",
            set("default_transaction_read_only", Some("off"), false),
            &[],
        ),
        case(
            "RESET search_path",
            K::Reset {
                name: Some("search_path".into()),
            },
            &[],
        ),
        case(
            "RESET ROLE",
            K::Reset {
                name: Some("role".into()),
            },
            &[],
        ),
        case("RESET ALL", K::Reset { name: None }, &[]),
        case(
            "SHOW search_path",
            K::Show {
                name: "search_path".into(),
            },
            &[],
        ),
        case(
            "SHOW \"Search_Path\"",
            K::Show {
                name: "search_path".into(),
            },
            &[],
        ),
        case("SHOW ALL", K::Show { name: "all".into() }, &[]),
        case(
            "SHOW TIME ZONE",
            K::Show {
                name: "timezone".into(),
            },
            &[],
        ),
        case("DISCARD ALL", K::Discard { all: true }, &[]),
        case("DISCARD PLANS", K::Discard { all: false }, &[]),
        case("DISCARD TEMP", K::Discard { all: false }, &[]),
        case(
            "LISTEN ch",
            K::Listen {
                channel: "ch".into(),
            },
            &[],
        ),
        case(
            "NOTIFY \"Ch\", 'payload'",
            K::Notify {
                channel: "Ch".into(),
            },
            &[],
        ),
        case("UNLISTEN *", K::Unlisten, &[]),
        case("BEGIN", K::Transaction, &[]),
        case(
            "START TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY",
            K::Transaction,
            &[],
        ),
        case("COMMIT AND CHAIN", K::Transaction, &[]),
        case("ROLLBACK", K::Transaction, &[]),
        case("SAVEPOINT a", K::Transaction, &[]),
        case("RELEASE SAVEPOINT a", K::Transaction, &[]),
        case("ROLLBACK TO SAVEPOINT a", K::Transaction, &[]),
        case("SET CONSTRAINTS ALL DEFERRED", K::Transaction, &[]),
        case("SET CONSTRAINTS secrets_fk IMMEDIATE", K::Transaction, &[]),
        case(
            "PREPARE TRANSACTION 'x'",
            K::Other("PREPARE TRANSACTION".into()),
            &[],
        ),
        case(
            "COMMIT PREPARED 'x'",
            K::Other("COMMIT PREPARED".into()),
            &[],
        ),
        case(
            "ROLLBACK PREPARED 'x'",
            K::Other("ROLLBACK PREPARED".into()),
            &[],
        ),
        case("FETCH FORWARD 10 FROM c", K::FetchOrMove, &[]),
        case("MOVE LAST IN c", K::FetchOrMove, &[]),
        case("CLOSE c", K::ClosePortal, &[]),
        case("CLOSE ALL", K::ClosePortal, &[]),
        case("EXECUTE p(1, 'a')", K::Execute { name: "p".into() }, &[]),
        case(
            "DEALLOCATE p",
            K::Deallocate {
                name: Some("p".into()),
            },
            &[],
        ),
        case("DEALLOCATE ALL", K::Deallocate { name: None }, &[]),
        case("ALTER SYSTEM SET work_mem = '1GB'", K::AlterSystem, &[]),
        case("LOAD 'auto_explain'", K::LoadLibrary, &[]),
    ]
}

#[test]
fn session_and_transaction_statements() {
    assert!(run_table(session_statements()) >= 45);
}

#[test]
fn literal_sensitivity() {
    let sensitive = [
        "SET search_path = public",
        "SET ROLE admin",
        "COPY orders TO STDOUT",
        "EXECUTE p(1)",
        "EXPLAIN (ANALYZE 0) SELECT 1",
        "SELECT 'orders'::regclass",
        "SELECT set_config('a', 'b', false)",
        "SELECT current_setting('server_version_num')",
        "SELECT myfunc(1)",
        "CREATE TABLE t (x int)",
        "GRANT SELECT ON orders TO a",
        "DO 'begin end'",
        "PREPARE TRANSACTION 'x'",
        "ALTER SYSTEM SET work_mem = 1",
        "SELECT 1; SET ROLE admin",
    ];
    for sql in sensitive {
        let a = must(sql);
        assert!(a.statements.iter().any(|s| s.literal_sensitive), "{sql}");
    }
    let cacheable = [
        "SELECT * FROM orders WHERE id = 1",
        "EXPLAIN ANALYZE SELECT * FROM orders",
        "INSERT INTO orders (id) VALUES (1)",
        "BEGIN",
        "SHOW search_path",
        "PREPARE p AS SELECT * FROM orders WHERE id = $1",
        "DECLARE c CURSOR FOR SELECT 1",
        "SELECT count(*), now() FROM orders",
    ];
    for sql in cacheable {
        let a = must(sql);
        assert!(a.statements.iter().all(|s| !s.literal_sensitive), "{sql}");
    }
}

#[test]
fn inner_kinds() {
    let inner = |sql: &str| must(sql).statements[0].inner_kind.clone().map(|k| *k);
    assert_eq!(
        inner("EXPLAIN ANALYZE EXECUTE p"),
        Some(K::Execute { name: "p".into() })
    );
    assert_eq!(inner("EXPLAIN DELETE FROM orders"), Some(K::Delete));
    assert_eq!(
        inner("PREPARE p AS UPDATE orders SET total = 1"),
        Some(K::Update)
    );
    assert_eq!(inner("DECLARE c CURSOR FOR SELECT 1"), Some(K::Select));
    assert_eq!(inner("CREATE TABLE t AS SELECT 1"), Some(K::Select));
    assert_eq!(inner("SELECT 1"), None);
}

#[test]
fn spans_locate_each_statement() {
    let sql = "SELECT 1;  SELECT * FROM orders ; DELETE FROM t";
    let a = must(sql);
    let texts: Vec<&str> = a
        .statements
        .iter()
        .map(|s| sql[s.span.clone()].trim())
        .collect();
    assert_eq!(texts, ["SELECT 1", "SELECT * FROM orders", "DELETE FROM t"]);
}

#[test]
fn empty_input_is_zero_statements() {
    for sql in ["", "   ", "-- only a comment", "/* c */ ;;", ";"] {
        assert_eq!(must(sql).statements.len(), 0, "{sql:?}");
    }
}

#[test]
fn syntax_errors_are_reported() {
    for sql in [
        "SELEC * FROM orders",
        "SELECT * FROM",
        "SELECT 'unterminated",
        "SELECT 1; SELEC 2",
        "SELECT * FROM orders WHERE",
        "DROP",
    ] {
        match analyze(sql) {
            Err(AnalyzeError::Syntax(_)) => {}
            other => panic!("{sql}: expected a syntax error, got {other:?}"),
        }
    }
    assert!(matches!(
        analyze("SELECT 1\0; SELECT * FROM secrets"),
        Err(AnalyzeError::Syntax(_))
    ));
}

#[test]
fn deep_expression_does_not_overflow_the_stack() {
    // PostgreSQL itself refuses this one ("stack depth limit exceeded"); we must refuse it
    // too, without crashing the process.
    let sql = format!("SELECT {}1", "1+".repeat(10_000));
    match analyze(&sql) {
        Err(AnalyzeError::Unsupported(msg)) => assert!(msg.contains("nested too deeply"), "{msg}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The deepest statements libpg_query accepts are analysed, in any build profile.
    let sql = format!("SELECT {}1", "1+".repeat(700));
    assert_eq!(must(&sql).statements.len(), 1);
    let sql = format!(
        "SELECT {}(SELECT s FROM secrets){}",
        "(SELECT ".repeat(200),
        ")".repeat(200)
    );
    assert_eq!(must(&sql).statements[0].relations.len(), 1);
    // Long but flat statements are fine.
    let list: Vec<String> = (0..20_000).map(|i| i.to_string()).collect();
    let sql = format!("SELECT * FROM orders WHERE id IN ({})", list.join(","));
    assert_eq!(must(&sql).statements.len(), 1);
    let sql = format!("SELECT 1 {}", "UNION ALL SELECT 1 ".repeat(500));
    assert_eq!(must(&sql).statements.len(), 1);
    // Too deep for libpg_query's protobuf output (and for PostgreSQL's default stack limit):
    // refused, never skipped.
    let sql = format!("SELECT 1 {}", "UNION ALL SELECT 1 ".repeat(20_000));
    assert!(matches!(analyze(&sql), Err(AnalyzeError::Unsupported(_))));
}

#[test]
fn many_threads_analyse_concurrently() {
    let handles: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                for j in 0..50 {
                    let a = must(&format!("SELECT * FROM t{i} WHERE id = {j}"));
                    assert_eq!(a.statements[0].relations[0].name, format!("t{i}"));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
}

/// The scanner's statement count (the rate's tokens for texts the analyser did not see) agrees
/// with the analysis, quotes, comments and empty statements included.
#[test]
fn the_scanner_counts_statements_as_the_analysis_does() {
    for sql in [
        "SELECT 1",
        "SELECT 1; SELECT 2;",
        "SELECT ';'; SELECT $$;$$ /* ; */ -- ;\n",
        "SELECT 1;;SELECT 2",
        "",
        ";",
        "BEGIN; INSERT INTO t VALUES (1); COMMIT",
    ] {
        let analysed = analyze(sql).map(|a| a.statements.len()).unwrap_or(1);
        assert_eq!(super::count_statements(sql), analysed, "{sql:?}");
    }
}
