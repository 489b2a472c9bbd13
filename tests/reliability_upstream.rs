//! Fault injection on the PostgreSQL upstream: a backend killed mid-query, every pooled server
//! connection killed at once (what a restart does to the pools), an upstream unreachable at
//! start that comes back, one that accepts and then hangs, and one that answers slowly (an
//! in-test TCP proxy between the gateway and PostgreSQL). Each time the client gets a clear
//! error, other sessions are unaffected, and the gateway recovers without a restart.

mod support;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::served::{demo_dir_with, upstream_pg_port, with_limits, Proxy, ProxyMode, Served};
use support::{connect, harness, sqlstate};

/// The tests here kill server connections of the demo's role: one at a time.
static TURN: Mutex<()> = Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

async fn wait_for_backend(up: &tokio_postgres::Client, like: &str) -> i32 {
    for _ in 0..100 {
        let rows = up
            .query(
                "SELECT pid FROM pg_stat_activity WHERE query LIKE $1 AND pid <> pg_backend_pid()",
                &[&like],
            )
            .await
            .unwrap();
        if let Some(r) = rows.first() {
            return r.get(0);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no backend runs {like}");
}

#[test]
fn a_backend_killed_mid_query_fails_its_statement_only_and_the_pools_recover() {
    let _turn = turn();
    harness().runtime.block_on(async {
        let up = support::upstream().await;
        let victim = connect("trusted").await;
        let bystander = connect("writer").await;
        let redis_bystander = &mut support::redis_connect("writer", false).await;
        let running = tokio::spawn(async move {
            (
                victim.simple_query("SELECT pg_sleep(30), 'victim'").await,
                victim,
            )
        });
        let pid = wait_for_backend(&up, "SELECT pg_sleep(30), 'victim'%").await;
        up.execute("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .unwrap();
        let started = Instant::now();
        let (result, victim) = running.await.unwrap();
        let e = result.expect_err("the killed statement fails");
        assert!(started.elapsed() < Duration::from_secs(5));
        // PostgreSQL's own FATAL reaches the client, or tollgate's "upstream lost".
        let code = sqlstate(&e);
        assert!(
            ["57P01", "08006", "08003"].contains(&code.as_str()) || e.is_closed(),
            "{e:?}"
        );
        let _ = victim;
        // Others never noticed.
        for _ in 0..5 {
            bystander
                .simple_query("SELECT count(*) FROM orders")
                .await
                .unwrap();
        }
        let _: Option<String> = redis::cmd("GET")
            .arg("cache:1")
            .query_async(redis_bystander)
            .await
            .unwrap();
        // A fresh session of the same agent works.
        connect("trusted")
            .await
            .simple_query("SELECT 1")
            .await
            .unwrap();

        // Every server connection of the gateway's role dies at once (as in a restart): the
        // pools find out and reconnect; no statement of a pooled session fails.
        let killed = up
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                &[&tollgate::demo::files::UPSTREAM_ROLE],
            )
            .await
            .unwrap()
            .len();
        assert!(killed >= 1, "the pool had server connections");
        tokio::time::sleep(Duration::from_millis(100)).await;
        for i in 0..30 {
            bystander
                .simple_query("SELECT id FROM orders LIMIT 1")
                .await
                .unwrap_or_else(|e| panic!("pooled statement {i} after the kill: {e}"));
        }
        connect("analyst")
            .await
            .simple_query("SELECT count(*) FROM customers")
            .await
            .unwrap();
    });
}

#[test]
fn an_unreachable_hung_or_slow_upstream_gives_clear_errors_and_recovers_without_restart() {
    let _turn = turn();
    // A port with nothing listening: the upstream is down when the gateway starts.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let real = upstream_pg_port();
    let dir = demo_dir_with(|t| {
        with_limits(
            t.replace(&format!("port = {real}"), &format!("port = {port}")),
            "upstream_connect_timeout_ms = 1000",
        )
    });
    let served = Served::start(dir, "");
    harness().runtime.block_on(async {
        let try_writer = || async {
            let c = support::connect_url(&served.pg_url("writer")).await?;
            c.simple_query("SELECT id FROM orders LIMIT 1").await?;
            Ok::<_, tokio_postgres::Error>(c)
        };
        // Down: a clear error, quickly; Redis on the same gateway is unaffected.
        let started = Instant::now();
        let e = try_writer().await.expect_err("the upstream is down");
        assert!(started.elapsed() < Duration::from_secs(5));
        let msg = support::db_message(&e);
        assert!(
            msg.contains("unavailable") || msg.contains("upstream"),
            "{}: {msg}",
            sqlstate(&e)
        );
        let mut r = redis::Client::open(served.redis_url("writer"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: Option<String> = redis::cmd("GET")
            .arg("cache:1")
            .query_async(&mut r)
            .await
            .unwrap();

        // It comes back: served without restarting the gateway.
        let proxy = Proxy::start_on(port, real, ProxyMode::Forward);
        let mut ok = None;
        for _ in 0..50 {
            if let Ok(c) = try_writer().await {
                ok = Some(c);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let writer = ok.expect("served once the upstream is back");

        // Hung: accepts and says nothing. A new session-mode login fails within the connect
        // timeout with a clear error; the pooled session goes on over its live connection.
        proxy.set(ProxyMode::Stall);
        let started = Instant::now();
        let e = support::connect_url(&served.pg_url("trusted"))
            .await
            .expect_err("no login through a hung upstream");
        let waited = started.elapsed();
        assert!(waited < Duration::from_secs(4), "waited {waited:?}");
        assert!(
            support::db_message(&e).contains("unavailable"),
            "{}: {e}",
            sqlstate(&e)
        );
        writer
            .simple_query("SELECT id FROM orders LIMIT 1")
            .await
            .expect("the pooled session is unaffected");

        // Slow: every chunk held back 200 ms (a session opened before); statements still
        // complete, correctly, however long they take.
        proxy.set(ProxyMode::Forward);
        let trusted = support::connect_url(&served.pg_url("trusted"))
            .await
            .unwrap();
        proxy.set(ProxyMode::Slow);
        let rows = trusted
            .simple_query("SELECT 41 + 1 AS answer")
            .await
            .unwrap();
        let answer = rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get("answer").map(str::to_owned),
            _ => None,
        });
        assert_eq!(answer.as_deref(), Some("42"));

        // Back to normal.
        proxy.set(ProxyMode::Forward);
        support::connect_url(&served.pg_url("trusted"))
            .await
            .unwrap()
            .simple_query("SELECT 1")
            .await
            .unwrap();
    });
    drop(served);
}

/// An agent that logged in while its upstream was down leaves a record: `session not opened`,
/// decision `error`, with what the client was told (PostgreSQL and Redis; a MongoDB login fails
/// before authentication when the upstream cannot be asked for its hello).
#[test]
fn a_login_whose_upstream_is_down_is_recorded() {
    let dead = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    // The `port = N` line of an upstream's table.
    let port_line = |t: &str, table: &str| {
        let rest = &t[t.find(table).unwrap()..];
        let at = rest.find("\nport = ").unwrap() + 1;
        rest[at..at + rest[at..].find('\n').unwrap()].to_string()
    };
    let dir = demo_dir_with(|t| {
        let (pg, redis) = (
            port_line(&t, "[upstream.shop]"),
            port_line(&t, "[upstream.cache]"),
        );
        let t = t
            .replace(&pg, &format!("port = {}", dead()))
            .replace(&redis, &format!("port = {}", dead()));
        with_limits(t, "upstream_connect_timeout_ms = 1000")
    });
    let served = Served::start(dir, "");
    harness().runtime.block_on(async {
        let e = support::connect_url(&served.pg_url("writer"))
            .await
            .expect_err("the upstream is down");
        assert_eq!(sqlstate(&e), "08006", "{e}");
        let redis_failed = async {
            let mut r = redis::Client::open(served.redis_url("analyst"))
                .unwrap()
                .get_multiplexed_async_connection()
                .await?;
            redis::cmd("GET")
                .arg("cache:1")
                .query_async::<Option<String>>(&mut r)
                .await
        }
        .await;
        assert!(redis_failed.is_err(), "{redis_failed:?}");
    });
    std::thread::sleep(Duration::from_millis(300)); // session records: the 100 ms flusher
    let log = std::fs::read_to_string(served.dir.path().join("audit.log")).unwrap();
    let records: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (agent, protocol, upstream) in [
        ("writer", "postgres", "shop"),
        ("analyst", "redis", "cache"),
    ] {
        let found = records
            .iter()
            .find(|r| r["kind"] == "session" && r["agent"] == agent && r["protocol"] == protocol);
        let r = found.unwrap_or_else(|| panic!("no session record for {agent}: {log}"));
        assert_eq!(r["decision"], "error", "{r}");
        assert_eq!(r["upstream"], upstream, "{r}");
        // PostgreSQL's FATAL had a SQLSTATE; Redis's error line none.
        let sqlstate = (protocol == "postgres").then_some("08006");
        assert_eq!(r["sqlstate"].as_str(), sqlstate, "{r}");
        let reason = r["reason"].as_str().unwrap();
        assert!(
            reason.starts_with("session not opened: tollgate: upstream")
                && reason.contains("is unavailable"),
            "{reason}"
        );
        assert!(
            reason.contains("(the upstream is not accepting connections)"),
            "what failed is said on every door: {reason}"
        );
    }
    drop(served);
}
