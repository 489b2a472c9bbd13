//! Policy refusals through the gateway: native errors naming the rule, usable sessions, audit.

mod support;

use support::{connect, db_message, harness, sqlstate};
use tokio_postgres::SimpleQueryMessage;

fn audit_lines() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(&harness().env.audit_log).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn refused_in_simple_protocol_then_session_goes_on() {
    let c = connect("analyst").await;
    let e = c
        .simple_query("SELECT api_key FROM secrets")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    let m = db_message(&e);
    assert!(m.contains("public.secrets") && m.contains("rule:"), "{m}");
    let rows = c
        .simple_query("SELECT count(*) FROM customers")
        .await
        .unwrap();
    assert!(rows.iter().any(|r| matches!(r, SimpleQueryMessage::Row(_))));
}

#[tokio::test]
async fn refused_in_extended_protocol_then_session_goes_on() {
    let c = connect("analyst").await;
    let e = c
        .query("SELECT api_key FROM secrets WHERE id = $1", &[&1i32])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    let e = c
        .prepare(
            "INSERT INTO orders (id, customer_id, amount, created_at) VALUES ($1, 1, 1, now())",
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    let row = c
        .query_one("SELECT count(*) FROM orders WHERE id < $1", &[&10i64])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 9);
}

#[tokio::test]
async fn refusal_inside_a_transaction_aborts_it_like_postgres() {
    let c = connect("analyst").await;
    c.batch_execute("BEGIN").await.unwrap();
    c.simple_query("SELECT 1 FROM orders LIMIT 1")
        .await
        .unwrap();
    let e = c.simple_query("DELETE FROM orders").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    let e = c
        .simple_query("SELECT 1 FROM orders LIMIT 1")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "25P02");
    c.batch_execute("ROLLBACK").await.unwrap();
    c.simple_query("SELECT 1 FROM orders LIMIT 1")
        .await
        .unwrap();
}

#[tokio::test]
async fn multi_statement_string_is_refused_whole() {
    let c = connect("analyst").await;
    let e = c
        .simple_query("SELECT 1 FROM orders LIMIT 1; SELECT api_key FROM secrets")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
}

#[tokio::test]
async fn writer_inserts_analyst_cannot() {
    let w = connect("writer").await;
    let id = 9_200_001i64;
    let n = w
        .execute(
            "INSERT INTO orders (id, customer_id, amount, created_at) VALUES ($1, 3, 9.99, now())",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    w.execute("DELETE FROM orders WHERE id = $1", &[&id])
        .await
        .unwrap();
    let a = connect("analyst").await;
    let e = a
        .simple_query(
            "INSERT INTO orders (id, customer_id, amount, created_at) VALUES (1, 1, 1, now())",
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    // The writer still may not read secrets.
    assert_eq!(
        sqlstate(&w.simple_query("TABLE secrets").await.unwrap_err()),
        "42501"
    );
}

#[tokio::test]
async fn session_settings_that_change_identity_are_refused() {
    let c = connect("analyst").await;
    for sql in [
        "SET ROLE postgres",
        "SET search_path = pg_temp, public",
        "SET SESSION AUTHORIZATION postgres",
        "SELECT set_config('search_path', 'x', false)",
    ] {
        let e = c.simple_query(sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{sql}: {e}");
    }
    c.simple_query("SET application_name = 'report-bot'")
        .await
        .unwrap();
}

#[tokio::test]
async fn unparsable_sql_is_refused_with_a_syntax_error() {
    let c = connect("analyst").await;
    let e = c.simple_query("SELEC * FROM orders").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42601");
    c.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn blocked_statements_are_audited_with_their_rule() {
    let c = connect("analyst").await;
    let marker = "audit_marker_7781";
    let _ = c
        .simple_query(&format!("SELECT api_key AS {marker} FROM secrets"))
        .await
        .unwrap_err();
    c.simple_query(&format!("SELECT 1 AS {marker}_ok"))
        .await
        .unwrap();
    let lines = audit_lines();
    let blocked = lines
        .iter()
        .find(|l| {
            l["statement"]
                .as_str()
                .is_some_and(|s| s.contains(marker) && !s.contains("_ok"))
        })
        .expect("blocked record");
    assert_eq!(blocked["decision"], "blocked");
    assert_eq!(blocked["agent"], "analyst");
    assert_eq!(blocked["sqlstate"], "42501");
    assert!(blocked["rule"].as_str().is_some());
    let allowed = lines
        .iter()
        .find(|l| {
            l["statement"]
                .as_str()
                .is_some_and(|s| s.contains(&format!("{marker}_ok")))
        })
        .expect("allowed record");
    assert_eq!(allowed["decision"], "allowed");
    let seq = allowed["seq"].as_u64().unwrap();
    // Outcome records are written with the next decision or by the 100 ms flusher.
    let mut outcome = None;
    for _ in 0..40 {
        outcome = audit_lines()
            .into_iter()
            .find(|l| l["ref_seq"].as_u64() == Some(seq));
        if outcome.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let outcome = outcome.expect("outcome record");
    assert_eq!(outcome["rows"], 1);
    assert!(outcome["duration_us"].as_u64().is_some());
}

/// A statement is recorded whole, however long: a 66,000-byte comment once pushed the DELETE
/// after it past a 64 KiB cut, and the record showed only the comment.
#[tokio::test]
async fn a_long_statement_is_recorded_whole_so_nothing_after_a_comment_hides() {
    let c = connect("trusted").await;
    let marker = "long_statement_marker_5521";
    let sql = format!(
        "SELECT 1 /* {} */; SELECT '{marker}' AS tail",
        "x".repeat(66_000)
    );
    c.simple_query(&sql).await.unwrap();
    let lines = audit_lines();
    let record = lines
        .iter()
        .find(|l| {
            l["statement"]
                .as_str()
                .is_some_and(|s| s.starts_with("SELECT 1 /* xxx"))
                && l["statement"].as_str().is_some_and(|s| s.contains(marker))
        })
        .expect("the record holds the statement after the comment");
    assert_eq!(record["statement"].as_str().unwrap(), sql);
    // A refused one (nothing ran, no rate token taken) keeps its head only.
    let analyst = connect("analyst").await;
    let refused = format!("SELECT api_key /* {} */ FROM secrets", "y".repeat(20_000));
    analyst.simple_query(&refused).await.unwrap_err();
    let lines = audit_lines();
    let record = lines
        .iter()
        .rev()
        .find(|l| {
            l["statement"]
                .as_str()
                .is_some_and(|s| s.starts_with("SELECT api_key /* yyy"))
        })
        .expect("the refusal's record");
    assert_eq!(record["decision"], "blocked");
    let marker = format!(
        "... [{} bytes in all; refused, not run: the first 4096 recorded]",
        refused.len()
    );
    let statement = record["statement"].as_str().unwrap();
    assert!(statement.ends_with(&marker), "{}", &statement[4000..]);
}

/// A role password is never in the audit log, whether the statement reached the server (which
/// refused it: the demo's role may not create roles) or was refused by the policy (the admin
/// API's viewers read the log; a live review read a role's password there).
#[tokio::test]
async fn role_passwords_never_reach_the_audit_log() {
    let role = format!("pw_probe_{}", std::process::id());
    let trusted = connect("trusted").await;
    let e = trusted
        .simple_query(&format!("CREATE ROLE {role} PASSWORD 'Pw-Sent-7731'"))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "the server's refusal: {e}");
    let analyst = connect("analyst").await;
    let e = analyst
        .simple_query(&format!(
            "ALTER ROLE {role} ENCRYPTED PASSWORD 'Pw-Refused-7733'"
        ))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    // Where a re-review still found them: a quoted option name, a DO block, a URI, a server's
    // error quoting the literal.
    for sql in [
        "CREATE USER MAPPING FOR CURRENT_USER SERVER nosuch OPTIONS (user 'u', \"password\" 'Pw-Quoted-7734')".to_string(),
        format!("DO $$ BEGIN ALTER ROLE {role} PASSWORD 'Pw-Do-7735'; END $$"),
        "SELECT dblink_connect('postgresql://u:Pw-Uri-7736@127.0.0.1/shop')".to_string(),
        "SELECT 'host=h password=Pw-Error-7737'::int".to_string(),
    ] {
        assert!(trusted.simple_query(&sql).await.is_err(), "{sql}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let log = std::fs::read_to_string(&harness().env.audit_log).unwrap();
    for pw in [
        "Pw-Sent-7731",
        "Pw-Refused-7733",
        "Pw-Quoted-7734",
        "Pw-Do-7735",
        "Pw-Uri-7736",
        "Pw-Error-7737",
    ] {
        assert!(!log.contains(pw), "{pw} in the audit log");
    }
    for recorded in [
        format!("CREATE ROLE {role} PASSWORD '<password>'"),
        format!("ALTER ROLE {role} ENCRYPTED PASSWORD '<password>'"),
    ] {
        assert!(log.contains(&recorded), "{recorded}");
    }
}
