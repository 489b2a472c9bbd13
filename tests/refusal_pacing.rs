//! Refusals cost no rate token, and each is an audit record: an agent refused as fast as it
//! can send would write the log as fast as the disk takes it (and rotate older records out of
//! retention). Beyond `limits.refusals_per_second` (and `refusal_burst`), a session that was
//! just refused waits before its next message, on every door; every refusal is still answered
//! and recorded, and other agents are not slowed.

mod support;

use std::time::{Duration, Instant};

use bson::doc;
use support::mongo::RawMongo;
use support::served::{demo_dir_with, with_limits, Served};
use support::{harness, sqlstate};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// 20 a second after a burst of 10: `N` refusals at once take at least
/// (N - 11) × 50 ms.
const LIMITS: &str = "refusals_per_second = 20\nrefusal_burst = 10";
const N: usize = 40;
/// (40 - 11) × 50 ms = 1.45 s, less a margin for the first refusals' timing.
const PACED: Duration = Duration::from_millis(1300);

fn blocked_records(served: &Served, agent: &str, needle: &str) -> usize {
    let log = std::fs::read_to_string(served.dir.path().join("audit.log")).unwrap();
    log.lines()
        .filter(|l| {
            l.contains(&format!(r#""agent":"{agent}""#))
                && l.contains(r#""decision":"blocked""#)
                && l.contains(needle)
        })
        .count()
}

#[test]
fn an_agent_refused_faster_than_the_pace_waits_on_every_door_and_others_do_not() {
    let served = Served::start(demo_dir_with(|t| with_limits(t, LIMITS)), "");
    let h = harness();
    h.runtime.block_on(async {
        // PostgreSQL, pipelined: the writer may not delete customers.
        let pg = support::connect_url(&served.pg_url("writer"))
            .await
            .unwrap();
        let texts: Vec<String> = (0..N)
            .map(|i| format!("DELETE FROM customers WHERE id = -{i}"))
            .collect();
        let t = Instant::now();
        let replies =
            futures_util::future::join_all(texts.iter().map(|q| pg.simple_query(q))).await;
        let took = t.elapsed();
        for r in &replies {
            assert_eq!(sqlstate(r.as_ref().unwrap_err()), "42501");
        }
        assert!(took >= PACED, "{N} refusals in {took:?}");
        // The session is usable, and every refusal was recorded.
        pg.simple_query("SELECT 1").await.unwrap();
        assert_eq!(
            blocked_records(&served, "writer", "DELETE FROM customers WHERE id = -"),
            N
        );

        // Meanwhile another agent is refused at once: the pace is per agent.
        let other = support::connect_url(&served.pg_url("analyst"))
            .await
            .unwrap();
        let t = Instant::now();
        for _ in 0..5 {
            let e = other.simple_query("DELETE FROM orders").await.unwrap_err();
            assert_eq!(sqlstate(&e), "42501");
        }
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());

        // Redis: the writer may not read admin:* keys. (Each door after the bucket emptied:
        // the pace it shows is its own.)
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Pipelined in one write: the session must stop taking commands from its batch once
        // the agent is beyond the pace (review: sequential commands did not show that).
        let mut rs = tokio::net::TcpStream::connect(("127.0.0.1", served.redis_port))
            .await
            .unwrap();
        let token = harness().env.token("writer");
        let mut batch = format!(
            "*3\r\n$4\r\nAUTH\r\n$6\r\nwriter\r\n${}\r\n{token}\r\n",
            token.len()
        );
        for i in 0..N {
            let key = format!("admin:paced:{i}");
            batch.push_str(&format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()));
        }
        batch.push_str("*3\r\n$3\r\nSET\r\n$11\r\ncache:paced\r\n$1\r\n1\r\n");
        let t = Instant::now();
        rs.write_all(batch.as_bytes()).await.unwrap();
        let mut replies = String::new();
        let mut buf = vec![0u8; 65536];
        let mut half_at = None;
        while replies.lines().count() < N + 2 {
            if half_at.is_none() && replies.lines().count() > N / 2 {
                half_at = Some(t.elapsed());
            }
            let n = tokio::time::timeout(Duration::from_secs(30), rs.read(&mut buf))
                .await
                .expect("the replies come")
                .unwrap();
            assert!(n > 0, "closed after {replies}");
            replies.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        let took = t.elapsed();
        let lines: Vec<&str> = replies.lines().collect();
        assert_eq!(lines[0], "+OK");
        assert!(
            lines[1..=N].iter().all(|l| l.starts_with("-NOPERM")),
            "{replies}"
        );
        assert_eq!(lines[N + 1], "+OK", "the session goes on");
        assert!(took >= PACED, "{N} Redis refusals in {took:?}");
        // The replies themselves come at the pace, not all at once before one long wait:
        // half of them take (N/2 - 11) × 50 ms.
        let half_at = half_at.expect("replies counted");
        assert!(
            half_at >= Duration::from_millis(350),
            "{} replies in {half_at:?}",
            N / 2
        );
        assert_eq!(blocked_records(&served, "writer", "admin:paced:"), N);

        // MongoDB: the analyst may not read `secrets`.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let env = &harness().env;
        let mut m = RawMongo::login(served.mongo_port(), "analyst", env.token("analyst")).await;
        let t = Instant::now();
        for _ in 0..N {
            let r = m
                .command(doc! { "find": "secrets", "filter": {}, "$db": "shop" })
                .await;
            assert_eq!(r.get_f64("ok").ok(), Some(0.0), "{r:?}");
        }
        let took = t.elapsed();
        assert!(took >= PACED, "{N} MongoDB refusals in {took:?}");

        // MCP: each call is paced while the agent is beyond the rate.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mcp = served.mcp_port();
        let url = format!("http://127.0.0.1:{mcp}/mcp");
        let t = Instant::now();
        for _ in 0..N {
            let args = serde_json::json!({"sql": "DELETE FROM orders", "upstream": "shop"});
            let body = support::mcp_tool_call(&url, "analyst", "query", args).await;
            assert_eq!(body["result"]["isError"], true, "{body}");
        }
        let took = t.elapsed();
        // A call is paced before it runs: the first past the burst is not slowed.
        assert!(
            took >= PACED - Duration::from_millis(50),
            "{N} MCP refusals in {took:?}"
        );
    });
}

/// MCP calls refused before they reach a session (malformed arguments, an upstream or tool
/// that is not there) are records like any refusal, and paced like them: before, they were
/// neither recorded nor charged, so an agent could send them as fast as it liked unseen.
#[test]
fn malformed_mcp_calls_are_recorded_and_paced_like_refused_statements() {
    let served = Served::start(demo_dir_with(|t| with_limits(t, LIMITS)), "");
    harness().runtime.block_on(async {
        let url = format!("http://127.0.0.1:{}/mcp", served.mcp_port());
        let calls = [
            ("query", serde_json::json!({"sql": 5, "upstream": "shop"})),
            (
                "query",
                serde_json::json!({"sql": "SELECT 1", "upstream": "nowhere"}),
            ),
            (
                "query",
                serde_json::json!({"sql": "SELECT $1", "params": [[1]]}),
            ),
            ("redis", serde_json::json!({"command": "GET \"cache:1"})),
        ];
        let t = Instant::now();
        for i in 0..N {
            let (tool, args) = &calls[i % calls.len()];
            let body = support::mcp_tool_call(&url, "analyst", tool, args.clone()).await;
            assert_eq!(body["result"]["isError"], true, "{tool} {args}: {body}");
        }
        // A tool the agent does not have: a JSON-RPC error, recorded and paced the same.
        let body =
            support::mcp_tool_call(&url, "analyst", "drop_everything", serde_json::json!({})).await;
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("unknown tool"),
            "{body}"
        );
        let took = t.elapsed();
        assert!(
            took >= PACED - Duration::from_millis(50),
            "{N} malformed calls in {took:?}"
        );
        // Malformed below the tool: params of the wrong shape, a body that is not JSON.
        for (body, code) in [
            (
                r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"query","arguments":"x"}}"#,
                -32602,
            ),
            (
                r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":123}}"#,
                -32602,
            ),
            // The MCP service's own refusals (415, -32601, a 202 for a call without an id)
            // were unrecorded: a live review.
            (
                r#"{"jsonrpc":"2.0","id":9223372036854775808,"method":"tools/call","params":{"name":"query","arguments":{"sql":"select 1"}}}"#,
                -32600,
            ),
            (
                r#"{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"query","arguments":{"sql":"select * from secrets"}},"params":{"name":"query","arguments":{"sql":"select 1"}}}"#,
                -32600,
            ),
            (
                r#"{"jsonrpc":"2.0","id":11,"method":"tools/call","params":{"name":"query","name":"list_tables","arguments":{}}}"#,
                -32600,
            ),
            (
                r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"query","arguments":{"sql":"select * from secrets"}}}"#,
                -32600,
            ),
            (r#"{"jsonrpc":"2.0","id":9,"method":"#, -32700),
        ] {
            let resp = reqwest::Client::new()
                .post(&url)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("mcp-protocol-version", "2025-06-18")
                .header(
                    "authorization",
                    format!("Bearer {}", harness().env.mcp_token("analyst")),
                )
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 400, "{body}");
            let reply: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(reply["error"]["code"], code, "{body}: {reply}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            blocked_records(&served, "analyst", "builtin: request"),
            N + 8
        );
        let log = std::fs::read_to_string(served.dir.path().join("audit.log")).unwrap();
        let records: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|r: &serde_json::Value| r["rule"] == "builtin: request")
            .collect();
        let first = &records[0];
        assert_eq!(first["protocol"], "mcp");
        assert_eq!(first["upstream"], "shop", "a known upstream is named");
        assert_eq!(first["sqlstate"], "42601");
        assert_eq!(
            first["statement"],
            "-- mcp: query (arguments: sql, upstream)"
        );
        assert!(
            first["reason"]
                .as_str()
                .unwrap()
                .contains("invalid arguments for query"),
            "{first}"
        );
        let unknown_upstream = &records[1];
        assert!(unknown_upstream["upstream"].is_null(), "{unknown_upstream}");
        assert!(
            unknown_upstream["reason"]
                .as_str()
                .unwrap()
                .starts_with("there is no postgres upstream"),
            "{unknown_upstream}"
        );
        let last = &records[N];
        assert_eq!(last["statement"], "-- mcp: drop_everything", "{last}");
        let malformed = records.last().unwrap();
        assert_eq!(malformed["statement"], "-- mcp: a malformed request");
        assert_eq!(malformed["reason"], "the request body is not valid JSON");
        // Arguments that did not parse leave no value in the log: names only.
        assert!(
            !log.contains("cache:1") && !log.contains("nowhere"),
            "a value was recorded"
        );
    });
}

/// Failed logins are records with no agent to pace: a connection that may retry (Redis
/// `AUTH`, MongoDB SASL) is closed after ten, with a reason where the protocol has one.
#[test]
fn a_connection_is_closed_after_ten_failed_logins() {
    let h = harness();
    h.runtime.block_on(async {
        let mut s = support::redis_raw().await;
        s.write_all("AUTH analyst tg_wrong\r\n".repeat(12).as_bytes())
            .await
            .unwrap();
        let mut text = String::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut text))
            .await
            .expect("the connection is closed")
            .ok();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 11, "{text}");
        assert!(
            lines[..10].iter().all(|l| l.starts_with("-WRONGPASS")),
            "{text}"
        );
        assert_eq!(
            lines[10],
            "-ERR tollgate: too many failed logins on this connection; connect again"
        );

        let mut m = RawMongo::connect(harness().env.mongo_port).await;
        for i in 0..10 {
            let r = m.try_login("analyst", "tg_wrong").await;
            assert_eq!(r.get_f64("ok").ok(), Some(0.0), "try {i}: {r:?}");
        }
        assert!(
            m.try_command(doc! { "hello": 1, "$db": "admin" })
                .await
                .is_none(),
            "closed after ten failures"
        );
    });
}

/// Failed logins have no agent to pace, and an unauthenticated client can retry as fast as it
/// likes (here an MCP keep-alive connection with a wrong bearer token). Beyond their name's
/// bucket (names that are no agent's share one: 200 at once, 20 a second) they are counted, and
/// a summary record a second says how many: every failure is accounted for, and the log grows
/// at the rate, not at the client's speed.
#[test]
fn failed_logins_beyond_the_rate_are_counted_in_a_summary() {
    let served = Served::start(demo_dir_with(|t| t), "");
    let url = format!("http://127.0.0.1:{}/mcp", served.mcp_port());
    const N: usize = 600;
    harness().runtime.block_on(async {
        let client = reqwest::Client::new();
        let t = Instant::now();
        for _ in 0..N {
            let resp = client
                .post(&url)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("authorization", "Bearer ghost:tg_wrong")
                .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 401);
        }
        let took = t.elapsed();
        // The summary of what was not recorded one by one comes within a second.
        let read = || {
            let audit = std::fs::read_to_string(served.dir().join("audit.log")).unwrap();
            audit
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|r| r["protocol"] == "mcp" && r["decision"] == "blocked")
                .collect::<Vec<_>>()
        };
        let count = |records: &[serde_json::Value]| -> usize {
            records
                .iter()
                .map(|r| {
                    let reason = r["reason"].as_str().unwrap_or_default();
                    match reason.split_once("; ") {
                        Some((_, rest)) => rest.split(' ').next().unwrap().parse().unwrap(),
                        None => 1,
                    }
                })
                .sum()
        };
        let until = Instant::now() + Duration::from_secs(10);
        let failed = loop {
            let failed = read();
            if count(&failed) >= N || Instant::now() > until {
                break failed;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(
            count(&failed),
            N,
            "every failure is a record or counted in a summary ({} records)",
            failed.len()
        );
        let allowed = 200 + 1 + (took.as_secs_f64() * 21.0).ceil() as usize + 2;
        assert!(
            failed.len() <= allowed,
            "{} records for {N} failures in {took:?}",
            failed.len()
        );
        assert!(
            failed.iter().any(|r| r["reason"].as_str().is_some_and(|r| r
                .contains("failed logins under names that are no agent's over mcp from ")
                && r.contains(" were counted, not recorded one by one"))),
            "{:?}",
            failed.last()
        );

        // The agents themselves are not affected.
        let body = support::mcp_tool_call(
            &url,
            "analyst",
            "query",
            serde_json::json!({"sql": "SELECT 1 AS one", "upstream": "shop"}),
        )
        .await;
        assert_eq!(body["result"]["isError"], false, "{body}");
    });
}
