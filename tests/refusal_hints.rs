//! Refusals an agent can act on: every policy refusal says what the agent may use instead on that
//! upstream (tables and operations, masked columns; Redis commands, keys, channels, masks), with
//! the same words on PostgreSQL (HINT) and Redis (the error line), and never the unreachable
//! "see `tollgate explain`".

mod support;

use support::{connect, db_message, harness, redis_connect, redis_error, sqlstate};

const SHOP: &str = "allowed on \"shop\": public.customers (select; masked: email, phone, ssn); \
                    public.orders (select); catalog tables (select); statement kinds: transaction, session, explain, prepare, cursor";
const CACHE: &str = "allowed on \"cache\": commands @read, @pubsub; read keys cache:*, session:*; \
                     channels news.*; masked: session:* (fields email); denied: publish, spublish";

#[test]
fn postgres_refusals_say_what_the_agent_may_use() {
    harness().runtime.block_on(async {
        let c = connect("analyst").await;
        for sql in [
            "SELECT * FROM secrets",
            "DELETE FROM orders",
            "CREATE TABLE t (x int)",
            "SELECT pg_read_file('/etc/passwd')",
        ] {
            let e = c.simple_query(sql).await.expect_err(sql);
            assert_eq!(sqlstate(&e), "42501", "{sql}");
            let db = e.as_db_error().unwrap();
            assert_eq!(db.hint(), Some(SHOP), "{sql}");
            assert!(!db_message(&e).contains("tollgate explain"));
        }
    });
}

#[test]
fn redis_refusals_say_the_same_in_the_error_line() {
    harness().runtime.block_on(async {
        let mut c = redis_connect("analyst", false).await;
        for words in [
            &["GET", "admin:1"][..],
            &["SET", "cache:1", "x"],
            &["FLUSHALL"],
        ] {
            let mut q = redis::cmd(words[0]);
            for w in &words[1..] {
                q.arg(*w);
            }
            let e = q.query_async::<redis::Value>(&mut c).await.unwrap_err();
            let line = redis_error(&e);
            assert!(line.starts_with("NOPERM tollgate: "), "{line}");
            assert!(
                line.ends_with(&format!("; hint: {CACHE}")),
                "{words:?}: {line}"
            );
        }
    });
}
