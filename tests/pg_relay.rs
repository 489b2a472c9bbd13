//! The PostgreSQL relay end to end: real PostgreSQL behind the gateway, tokio-postgres in front.

mod support;

use std::time::{Duration, Instant};

use futures_util::{pin_mut, StreamExt, TryStreamExt};
use support::{connect, db_message, harness, sqlstate, upstream};

#[tokio::test]
async fn simple_and_extended_queries_with_binary_results() {
    let c = connect("analyst").await;
    let rows = c.simple_query("SELECT count(*) FROM orders").await.unwrap();
    let count = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(count.as_deref(), Some("20000"));
    // Extended protocol with a parameter; tokio-postgres asks for binary results.
    let row = c
        .query_one(
            "SELECT id, amount::float8, created_at FROM orders WHERE id = $1",
            &[&42i64],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 42);
    let _amount: f64 = row.get(1);
    let _ts: std::time::SystemTime = row.get(2);
}

#[tokio::test]
async fn prepared_statement_reused_many_times() {
    let c = connect("analyst").await;
    let stmt = c
        .prepare("SELECT customer_id FROM orders WHERE id = $1")
        .await
        .unwrap();
    for id in 1..=300i64 {
        let row = c.query_one(&stmt, &[&id]).await.unwrap();
        let _: i64 = row.get(0);
    }
}

#[tokio::test]
async fn error_inside_a_transaction_then_rollback() {
    let c = connect("writer").await;
    let id = 9_000_001i64;
    c.batch_execute("BEGIN").await.unwrap();
    c.execute(
        "INSERT INTO orders (id, customer_id, amount, created_at) VALUES ($1, 1, 10, now())",
        &[&id],
    )
    .await
    .unwrap();
    let e = c
        .simple_query("SELECT 1/0 FROM orders LIMIT 1")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "22012");
    let e = c
        .simple_query("SELECT 1 FROM orders LIMIT 1")
        .await
        .unwrap_err();
    assert_eq!(
        sqlstate(&e),
        "25P02",
        "the transaction is aborted, as in PostgreSQL"
    );
    c.batch_execute("ROLLBACK").await.unwrap();
    let n: i64 = upstream()
        .await
        .query_one("SELECT count(*) FROM orders WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the rolled-back insert must not exist");
}

#[tokio::test]
async fn copy_out_and_in_for_an_agent_allowed_to() {
    let c = connect("writer").await;
    let stream = c
        .copy_out("COPY (SELECT id, amount FROM orders WHERE id <= 100) TO STDOUT")
        .await
        .unwrap();
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
    let text: String = chunks
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert_eq!(text.lines().count(), 100);

    let sink = c
        .copy_in("COPY orders (id, customer_id, amount, created_at) FROM STDIN")
        .await
        .unwrap();
    pin_mut!(sink);
    use futures_util::SinkExt;
    let data =
        "9100001\t1\t1.50\t2026-01-01 00:00:00+00\n9100002\t2\t2.50\t2026-01-02 00:00:00+00\n";
    sink.send(bytes::Bytes::from(data)).await.unwrap();
    let n = sink.finish().await.unwrap();
    assert_eq!(n, 2);
    c.execute("DELETE FROM orders WHERE id IN (9100001, 9100002)", &[])
        .await
        .unwrap();
    // Review finding: the Syncs libpq and tokio-postgres send during COPY FROM STDIN get no
    // ReadyForQuery; replies after the COPY must still pair with their own statements.
    let e = c
        .simple_query("SELECT api_key FROM secrets")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert!(db_message(&e).starts_with("tollgate"), "{e}");
    let e = c
        .simple_query("SELECT 1/0 FROM orders LIMIT 1")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "22012", "{e}");
    let n: i64 = c
        .query_one("SELECT count(*) FROM orders WHERE id < $1", &[&11i64])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 10);
    // The analyst may not COPY (statement kind not allowed).
    let a = connect("analyst").await;
    let Err(e) = a.copy_out("COPY orders TO STDOUT").await else {
        panic!("analyst COPY must be refused")
    };
    assert_eq!(sqlstate(&e), "42501");
}

fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn rows_larger_than_a_piece_arrive_intact_in_every_framing() {
    // Values above the relay's 256 KiB piece size are relayed as they arrive: extended protocol
    // with a parameter on a transaction pool (writer), simple protocol and COPY TO (trusted);
    // the small rows around them and the next statements stay in step.
    const BIG: usize = 3 << 20;
    let w = connect("writer").await;
    let rows = w
        .query(
            "SELECT n, CASE WHEN n = 2 THEN repeat('x', 3 << 20) ELSE 'y' END \
             FROM generate_series(1, $1::int) n ORDER BY n",
            &[&3i32],
        )
        .await
        .unwrap();
    let got: Vec<(i32, usize)> = rows
        .iter()
        .map(|r| (r.get(0), r.get::<_, &str>(1).len()))
        .collect();
    assert_eq!(got, vec![(1, 1), (2, BIG), (3, 1)]);
    let t = connect("trusted").await;
    let rows = t
        .simple_query("SELECT repeat('ab', 3 << 19) || 'z'; SELECT 'next'")
        .await
        .unwrap();
    let values: Vec<String> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(values.len(), 2);
    assert_eq!(values[0].len(), BIG + 1);
    assert!(values[0].starts_with("abab") && values[0].ends_with("abz"));
    assert_eq!(values[1], "next");
    let copied: Vec<u8> = t
        .copy_out("COPY (SELECT repeat('x', 3 << 20) UNION ALL SELECT 'tail') TO STDOUT")
        .await
        .unwrap()
        .try_fold(Vec::new(), |mut all, piece| async move {
            all.extend_from_slice(&piece);
            Ok(all)
        })
        .await
        .unwrap();
    assert_eq!(copied.len(), BIG + 1 + "tail\n".len());
    assert!(copied.ends_with(b"x\ntail\n"));
    let one: i32 = t.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

#[tokio::test]
async fn large_result_is_streamed_not_buffered() {
    // 100,000 rows of 1 KiB (about 100 MiB) through the gateway, which runs in this process:
    // streaming keeps its memory flat while buffering would add the whole result.
    let c = connect("trusted").await;
    let before = rss_kb();
    let stream = c
        .query_raw(
            "SELECT g, repeat('x', 1000) FROM generate_series(1, 100000) g",
            std::iter::empty::<i32>(),
        )
        .await
        .unwrap();
    pin_mut!(stream);
    let mut n = 0u64;
    let mut peak = before;
    while let Some(row) = stream.next().await {
        let row = row.unwrap();
        let s: &str = row.get(1);
        assert_eq!(s.len(), 1000);
        n += 1;
        if n.is_multiple_of(10_000) {
            peak = peak.max(rss_kb());
        }
    }
    assert_eq!(n, 100_000);
    let grown_mb = peak.saturating_sub(before) / 1024;
    assert!(
        grown_mb < 60,
        "RSS grew by {grown_mb} MiB while streaming 100 MiB"
    );
}

#[tokio::test]
async fn cancel_of_pg_sleep_within_a_second() {
    let c = connect("analyst").await;
    let token = c.cancel_token();
    let started = Instant::now();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    });
    let e = c.simple_query("SELECT pg_sleep(30)").await.unwrap_err();
    canceller.await.unwrap();
    assert_eq!(sqlstate(&e), "57014", "{e}");
    assert!(
        started.elapsed() < Duration::from_millis(1300),
        "took {:?}",
        started.elapsed()
    );
    // The session is still usable.
    c.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn notices_and_listen_notify_are_relayed() {
    let c = connect("trusted").await;
    c.batch_execute("DO $$ BEGIN RAISE NOTICE 'hello from upstream'; END $$")
        .await
        .unwrap();
    let (client, mut conn) =
        tokio_postgres::connect(&harness().env.pg_url("trusted"), tokio_postgres::NoTls)
            .await
            .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
    tokio::spawn(async move {
        let mut stream = Box::pin(stream);
        while let Some(Ok(m)) = stream.next().await {
            let _ = tx.send(m);
        }
    });
    client.batch_execute("LISTEN tollgate_test").await.unwrap();
    c.batch_execute("NOTIFY tollgate_test, 'payload-1'")
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(m) = rx.recv().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                return n.payload().to_string();
            }
        }
        String::new()
    })
    .await
    .unwrap();
    assert_eq!(got, "payload-1");
}

#[tokio::test]
async fn wrong_token_and_unknown_agent_look_the_same() {
    let env = &harness().env;
    let wrong = env
        .pg_url("analyst")
        .replace(env.token("analyst"), "tg_wrongwrongwrong");
    let e1 = support::connect_url(&wrong)
        .await
        .expect_err("wrong token must fail");
    let ghost = env.pg_url("analyst").replace("analyst:", "ghost:");
    let e2 = support::connect_url(&ghost)
        .await
        .expect_err("unknown agent must fail");
    assert_eq!(sqlstate(&e1), "28P01");
    assert_eq!(sqlstate(&e2), "28P01");
    assert_eq!(
        db_message(&e1).replace("analyst", "X"),
        db_message(&e2).replace("ghost", "X")
    );
    // Recorded with the code the client was answered (it was null: a review).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let log = std::fs::read_to_string(&env.audit_log).unwrap();
    assert!(log.lines().any(|l| l.contains(r#""protocol":"postgres""#)
        && l.contains(r#""rule":"builtin: authentication""#)
        && l.contains(r#""sqlstate":"28P01""#)));
}

#[tokio::test]
async fn unknown_database_is_3d000() {
    let url = harness()
        .env
        .pg_url("analyst")
        .replace("/shop?", "/nosuchdb?");
    let e = support::connect_url(&url)
        .await
        .expect_err("unknown database");
    assert_eq!(sqlstate(&e), "3D000");
    // A long name is shown as PostgreSQL shows it: cut to 63 bytes (it was echoed whole).
    let long = harness()
        .env
        .pg_url("analyst")
        .replace("/shop?", &format!("/{}?", "x".repeat(100)));
    let e = support::connect_url(&long)
        .await
        .expect_err("unknown database");
    assert_eq!(
        db_message(&e),
        format!("database \"{}\" does not exist", "x".repeat(63))
    );
    // Recorded as the agent's refused connection (it left no record: a review).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let log = std::fs::read_to_string(&harness().env.audit_log).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains(r#""kind":"session","agent":"analyst""#)
                && l.contains(r#""rule":"builtin: unknown-upstream""#)
                && l.contains(r#""sqlstate":"3D000""#)
                && l.contains("nosuchdb")),
        "no record of the refused connection"
    );
}

#[tokio::test]
async fn upstream_backend_killed_mid_query_gives_a_clear_error() {
    let c = connect("trusted").await;
    c.batch_execute("SET application_name = 'victim-session'")
        .await
        .unwrap();
    let killer = tokio::spawn(async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        upstream()
            .await
            .execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'victim-session'", &[])
            .await
            .unwrap();
    });
    let e = c.simple_query("SELECT pg_sleep(20)").await.unwrap_err();
    killer.await.unwrap();
    let msg = e.to_string();
    assert!(
        sqlstate(&e) == "57P01" || msg.contains("upstream") || msg.contains("closed"),
        "unexpected error: {msg}"
    );
    // The gateway keeps serving other sessions.
    connect("analyst")
        .await
        .simple_query("SELECT 1")
        .await
        .unwrap();
}
