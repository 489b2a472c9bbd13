//! The session core through real clients and servers: connection caps hold across PostgreSQL
//! and Redis with one wording, and a client that leaves before its reply is recorded alike on
//! both protocols.

mod support;

use std::time::Duration;

use support::{copy_demo_dir, harness};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A gateway of its own on a copy of the demo's files: `max_client_connections = total` and the
/// trusted agent limited to `trusted_max` connections.
async fn gateway(
    total: Option<u32>,
    trusted_max: Option<u32>,
) -> (tollgate::gateway::Running, tempfile::TempDir) {
    let dir = copy_demo_dir();
    let config = dir.path().join("tollgate.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    if let Some(n) = total {
        text.push_str(&format!("\n[limits]\nmax_client_connections = {n}\n"));
    }
    std::fs::write(&config, text).unwrap();
    if let Some(n) = trusted_max {
        let policy = dir.path().join("policies/trusted.toml");
        let text = std::fs::read_to_string(&policy).unwrap();
        // Into its `[limits]` table (the demo's has one).
        assert!(text.contains("\n[limits]\n"), "{text}");
        let text = text.replacen(
            "\n[limits]\n",
            &format!("\n[limits]\nmax_connections = {n}\n"),
            1,
        );
        std::fs::write(&policy, text).unwrap();
    }
    let config = tollgate::config::Config::load(&config).unwrap();
    let running = tollgate::gateway::start(config).await.unwrap();
    (running, dir)
}

fn pg_url(running: &tollgate::gateway::Running, agent: &str) -> String {
    let token = harness().env.token(agent);
    let port = running.pg_addr.unwrap().port();
    format!("postgresql://{agent}:{token}@127.0.0.1:{port}/shop?sslmode=disable")
}

/// Logs in to the gateway's Redis listener as `agent`; returns the connection and the answer.
async fn redis_auth(
    running: &tollgate::gateway::Running,
    agent: &str,
) -> (tokio::net::TcpStream, String) {
    let mut s = tokio::net::TcpStream::connect(running.redis_addr.unwrap())
        .await
        .unwrap();
    let token = harness().env.token(agent);
    let cmd = format!("AUTH {agent} {token}\r\n");
    let answer = support::redis_exchange(&mut s, cmd.as_bytes(), "\r\n").await;
    (s, answer)
}

async fn pg_refusal(url: &str) -> (String, String) {
    match support::connect_url(url).await {
        Ok(_) => panic!("the connection was admitted"),
        Err(e) => (support::sqlstate(&e), support::db_message(&e)),
    }
}

#[test]
fn an_agent_over_its_connection_cap_is_refused_on_redis_as_on_postgresql() {
    harness().runtime.block_on(async {
        let (running, _dir) = gateway(None, Some(2)).await;
        let _pg = support::connect_url(&pg_url(&running, "trusted"))
            .await
            .expect("first session");
        let (_r, ok) = redis_auth(&running, "trusted").await;
        assert_eq!(ok, "+OK\r\n", "second session (Redis)");
        let expected = "tollgate: too many connections: agent already has 2 connections, the most its policy allows (rule: trusted: limits)";
        let (_r3, refused) = redis_auth(&running, "trusted").await;
        assert_eq!(refused, format!("-ERR {expected}\r\n"));
        let (code, message) = pg_refusal(&pg_url(&running, "trusted")).await;
        assert_eq!(code, "53300");
        assert_eq!(message, expected);
        // Other agents are not counted against it.
        let (_w, ok) = redis_auth(&running, "writer").await;
        assert_eq!(ok, "+OK\r\n");
    });
}

#[test]
fn the_gateway_wide_cap_counts_redis_sessions_too() {
    harness().runtime.block_on(async {
        let (running, _dir) = gateway(Some(2), None).await;
        let (_a, ok) = redis_auth(&running, "analyst").await;
        assert_eq!(ok, "+OK\r\n");
        let (_w, ok) = redis_auth(&running, "writer").await;
        assert_eq!(ok, "+OK\r\n");
        let expected = "tollgate: too many connections: tollgate already serves 2 connections, the most its configuration allows (rule: tollgate.toml: limits.max_client_connections)";
        let (_t, refused) = redis_auth(&running, "trusted").await;
        assert_eq!(refused, format!("-ERR {expected}\r\n"));
        let (code, message) = pg_refusal(&pg_url(&running, "trusted")).await;
        assert_eq!(code, "53300");
        assert_eq!(message, expected);
    });
}

/// Reads the gateway's audit log (flushed every 100 ms) until `want` records match `pick`.
async fn wait_for_records(
    path: &std::path::Path,
    want: usize,
    pick: impl Fn(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found: Vec<serde_json::Value> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|r| pick(r))
            .collect();
        if found.len() >= want || std::time::Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn a_client_leaving_before_the_reply_is_recorded_alike_on_both_protocols() {
    harness().runtime.block_on(async {
        let (running, dir) = gateway(None, None).await;
        // PostgreSQL: a statement slower than the grace a stopped client's replies get
        // (`session::REPLY_GRACE`), then the client disappears.
        let mut pg = support::raw_login_at(running.pg_addr.unwrap(), "trusted").await;
        pg.write_all(&support::message(b'Q', b"SELECT pg_sleep(30)\0"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(pg);
        // Redis: a blocking command, then the client disappears.
        let (mut redis, ok) = redis_auth(&running, "trusted").await;
        assert_eq!(ok, "+OK\r\n");
        redis
            .write_all(b"BLPOP cache:never-filled 1\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut sink = [0u8; 16];
        assert!(
            tokio::time::timeout(Duration::from_millis(50), redis.read(&mut sink))
                .await
                .is_err(),
            "no reply yet"
        );
        drop(redis);
        let records = wait_for_records(&dir.path().join("audit.log"), 2, |r| {
            r["reason"] == "outcome unknown: the session ended before the reply"
        })
        .await;
        assert_eq!(records.len(), 2, "{records:?}");
        let shape = |r: &serde_json::Value| {
            let mut r = r.clone();
            for volatile in [
                "ts",
                "seq",
                "ref_seq",
                "hash",
                "prev_hash",
                "session",
                "duration_us",
                "client_addr",
                "protocol",
                "upstream",
            ] {
                r.as_object_mut().unwrap().remove(volatile);
            }
            r
        };
        let protocols: Vec<_> = records.iter().map(|r| r["protocol"].clone()).collect();
        assert!(protocols.contains(&"postgres".into()) && protocols.contains(&"redis".into()));
        assert_eq!(shape(&records[0]), shape(&records[1]));
        assert_eq!(records[0]["decision"], "allowed");
        assert!(records[0]["error"].is_null());
        drop(running);
    });
}

/// The rate counts statements, not requests: a Query holding many takes a token for each, all
/// or none, and one the bucket cannot pay for runs nothing (a reviewer ran 700 statements, and
/// 40 x 1000 rows, on one token). The refusal is recorded like any other.
#[test]
fn a_query_of_many_statements_takes_a_token_for_each() {
    harness().runtime.block_on(async {
        // The shared harness lifts the analyst's rate; this gateway has it as shipped.
        let dir = copy_demo_dir();
        let policy = dir.path().join("policies/analyst.toml");
        let text = std::fs::read_to_string(&policy).unwrap().replace(
            "statements_per_minute = 100000000",
            "statements_per_minute = 600",
        );
        assert!(text.contains("statements_per_minute = 600"));
        std::fs::write(&policy, text).unwrap();
        let config = tollgate::config::Config::load(&dir.path().join("tollgate.toml")).unwrap();
        let running = tollgate::gateway::start(config).await.unwrap();
        let addr = running.pg_addr.unwrap();
        let mut a = support::raw_login_at(addr, "analyst").await;
        let many = |n: usize| {
            (0..n)
                .map(|i| format!("SELECT {i}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        // The analyst's rate: 600 a minute, burst 60, so at most 61 statements at once.
        let (values, _, code) = support::raw_query(&mut a, &many(700)).await;
        assert_eq!((values.len(), code.as_deref()), (0, Some("53400")));
        let (values, _, code) = support::raw_query(&mut a, &many(40)).await;
        assert_eq!((values.len(), code), (40, None));
        // 21 tokens left (and a few more per second): 40 more are refused as a whole.
        let (values, _, code) = support::raw_query(&mut a, &many(40)).await;
        assert_eq!((values.len(), code.as_deref()), (0, Some("53400")));
        let (values, _, code) = support::raw_query(&mut a, &many(15)).await;
        assert_eq!((values.len(), code), (15, None));
        let records = wait_for_records(&dir.path().join("audit.log"), 2, |r| {
            r["kind"] == "decision" && r["sqlstate"] == "53400"
        })
        .await;
        assert_eq!(records.len(), 2, "{records:?}");
        assert!(
            records[0]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("a request of 700 statements")),
            "{records:?}"
        );
        assert!(records[1]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("retry in")));
        drop(running);
    });
}
