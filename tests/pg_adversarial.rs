//! The decision table end to end: every statement through the real gateway to real PostgreSQL.
//! Refused ones must come back as tollgate refusals and leave the session usable; allowed ones
//! must never be refused by tollgate (they may still fail in PostgreSQL for their own reasons).

mod support;

use support::decision_table::{ANALYST_ALLOWED, ANALYST_REFUSED, WRITER_REFUSED};
use support::{connect, sqlstate};

/// SQLSTATEs tollgate uses for refusals.
const REFUSAL_CODES: [&str; 3] = ["42501", "42601", "0A000"];

async fn run_table(agent: &str, allowed: &[&str], refused: &[&str]) {
    let c = connect(agent).await;
    let mut wrong = Vec::new();
    for sql in refused {
        match c.simple_query(sql).await {
            Ok(_) => wrong.push(format!("ran, should be refused: {sql}")),
            Err(e) => {
                let is_ours = e
                    .as_db_error()
                    .is_some_and(|d| d.message().starts_with("tollgate"));
                if !REFUSAL_CODES.contains(&sqlstate(&e).as_str())
                    || (!is_ours && sqlstate(&e) != "42601")
                {
                    wrong.push(format!("not refused by tollgate: {sql}: {e}"));
                }
            }
        }
        let _ = c.simple_query("ROLLBACK").await;
    }
    for sql in allowed {
        if let Err(e) = c.simple_query(sql).await {
            if e.as_db_error()
                .is_some_and(|d| d.message().starts_with("tollgate"))
            {
                wrong.push(format!("refused, should be allowed: {sql}: {e}"));
            }
        }
        let _ = c.simple_query("ROLLBACK").await;
    }
    // The session survived all of it.
    c.simple_query("SELECT 1").await.unwrap();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test]
async fn analyst_table_end_to_end() {
    run_table("analyst", ANALYST_ALLOWED, ANALYST_REFUSED).await;
}

#[tokio::test]
async fn writer_refusals_end_to_end() {
    run_table("writer", &[], WRITER_REFUSED).await;
}

#[tokio::test]
async fn secrets_table_is_untouched_by_the_whole_suite() {
    run_table("analyst", &[], ANALYST_REFUSED).await;
    let up = support::upstream().await;
    let n: i64 = up
        .query_one("SELECT count(*) FROM secrets", &[])
        .await
        .unwrap()
        .get(0);
    assert!(n > 0);
    let orders: i64 = up
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        orders >= 20_000,
        "the refused DELETE/TRUNCATE statements did not run"
    );
}

/// Statements nested past what the parser and the analyser can walk (parentheses that exhaust
/// the grammar's stack, a 100,000-term sum whose tree is that deep) are refused with the
/// analyser's rule, once "tollgate:" in the message; the gateway and the session carry on.
#[tokio::test]
async fn statements_nested_too_deeply_are_refused_and_nothing_breaks() {
    let c = connect("analyst").await;
    let parens = format!("SELECT {}1{}", "(".repeat(100_000), ")".repeat(100_000));
    let sum = format!("SELECT 1{}", "+1".repeat(100_000));
    for sql in [parens, sum] {
        let e = c.simple_query(&sql).await.unwrap_err();
        let message = support::db_message(&e);
        assert!(
            message.starts_with("tollgate: ")
                && message.matches("tollgate").count() == 1
                && message.ends_with("(rule: builtin: analyser)"),
            "{message}"
        );
    }
    let rows = c.simple_query("SELECT 1+1").await.unwrap();
    assert!(
        matches!(&rows[1], tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("2"))
    );
}

/// `current_setting($1)`: SQLAlchemy's reflection passes the setting's name as a parameter
/// (`default_table_access_method`), so a name computed at run time cannot simply be refused:
/// the parameter is read at Bind, and a custom setting (a name with a dot) refused there; for
/// a passthrough agent it is not checked. A SQL PREPARE of it is refused (its EXECUTEs' values
/// are not read for this).
#[tokio::test]
async fn current_setting_of_a_parameter_is_judged_at_bind() {
    let analyst = connect("analyst").await;
    let sql = "SELECT current_setting($1::varchar, true)";
    let row = analyst
        .query_one(sql, &[&"default_table_access_method"])
        .await
        .expect("a server setting by parameter");
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("heap"));
    for name in ["app.jwt_secret", "APP.Jwt_Secret", "pgrst.jwt_secret"] {
        let e = analyst.query_one(sql, &[&name]).await.unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{name}: {e:?}");
        assert!(support::db_message(&e).contains("custom setting"), "{e:?}");
    }
    // The session goes on, and the same statement with a server setting runs.
    analyst
        .query_one(sql, &[&"datestyle"])
        .await
        .expect("the session goes on");
    let e = analyst
        .simple_query("PREPARE cs(text) AS SELECT current_setting($1)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    // Passthrough: not the policy's to check.
    let trusted = connect("trusted").await;
    let row = trusted.query_one(sql, &[&"app.not_set"]).await.unwrap();
    assert_eq!(row.get::<_, Option<String>>(0), None);
}
