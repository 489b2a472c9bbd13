//! Load and exhaustion against `tollgate serve` as a child process:
//! - many idle authenticated agent connections (`TOLLGATE_IDLE_CONNECTIONS`, 1,000 in the
//!   suite, 10,000 for the figure in docs/reliability.md): the gateway's RSS and bytes per
//!   connection, and a new agent served meanwhile;
//! - connections that send nothing or a byte a second before authenticating: closed at the
//!   auth deadline, capped by `limits.max_preauth_connections` (the excess refused at once with
//!   53300 / `-ERR`), while real agents keep being served and memory stays bounded;
//! - half-sent HTTP requests (and silent connections) on the MCP and admin listeners: closed at
//!   `limits.http_header_timeout_ms`, counted against the same cap (the excess gets a 503 at
//!   once), while agents on PostgreSQL, MCP and the admin API are served; authenticated MCP
//!   requests whose bodies never finish: counted the same way, cut at `limits.auth_timeout_ms`;
//! - rows far larger than memory should hold (64 MiB values, several sessions at once):
//!   relayed, or dropped at an agent's byte limit, in pieces as they arrive;
//! - clients that stop reading their replies (PostgreSQL on a transaction pool, Redis, MongoDB):
//!   closed at `limits.client_write_timeout_ms`, their pooled connections given back.

mod support;

use std::time::{Duration, Instant};

use support::served::{demo_dir_with, with_limits, Served};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn idle_count() -> usize {
    std::env::var("TOLLGATE_IDLE_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000)
}

/// The hard file limit, which the child gateway is started with (`ulimit -n`); this process
/// raises its own soft limit the same way through `prlimit` on itself.
fn raise_nofile() -> u64 {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -Hn")
        .output()
        .unwrap();
    let hard: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(1024);
    let ok = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={hard}:{hard}"),
        ])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "prlimit raised this process's file limit");
    hard
}

/// A new agent's connect + first statement, timed.
async fn served_in(served: &Served) -> Duration {
    let started = Instant::now();
    let c = support::connect_url(&served.pg_url("writer"))
        .await
        .expect("a new agent connects");
    c.simple_query("SELECT id FROM orders LIMIT 1")
        .await
        .expect("and is served");
    started.elapsed()
}

#[test]
fn idle_authenticated_connections_cost_little_and_new_agents_are_still_served() {
    let n = idle_count();
    let hard = raise_nofile();
    assert!(
        hard as usize > n + 200,
        "the hard file limit ({hard}) is too low for {n} connections"
    );
    let dir = demo_dir_with(|t| t);
    let served = Served::start(dir, &format!("ulimit -n {hard}"));
    // The client side runs on a runtime of its own.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (baseline, clients, first_ms) = rt.block_on(async {
        // Warm up (pools, caches) before the baseline.
        served_in(&served).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let baseline = served.rss_kib();
        let mut clients = Vec::with_capacity(n);
        // Logins in waves of 100 (well under the pre-authentication cap), half on each protocol
        // kind of agent connection: PostgreSQL (transaction-pooled writer: no server
        // connection while idle) and Redis is left out (one upstream connection per session
        // would measure redis-server's limit, not the gateway).
        let started = Instant::now();
        while clients.len() < n {
            let wave = (n - clients.len()).min(100);
            let mut tasks = Vec::new();
            for _ in 0..wave {
                let url = served.pg_url("writer");
                tasks.push(tokio::spawn(
                    async move { support::connect_url(&url).await },
                ));
            }
            for t in tasks {
                clients.push(t.await.unwrap().expect("an idle agent logs in"));
            }
        }
        let login_s = started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let first = served_in(&served).await;
        println!(
            "{n} idle connections logged in in {login_s:.1} s; a new agent then served in {} ms",
            first.as_millis()
        );
        (baseline, clients, first)
    });
    let rss = served.rss_kib();
    let per_conn = (rss.saturating_sub(baseline)) * 1024 / n as u64;
    println!(
        "gateway RSS: {baseline} KiB before, {rss} KiB with {n} idle connections: {per_conn} bytes per connection; {} open descriptors",
        served.open_fds()
    );
    assert!(
        served.open_fds() >= n,
        "the connections are open in the gateway"
    );
    // Generous bounds: the goal is 10,000 connections in < 300 MB (docs/reliability.md).
    assert!(per_conn < 64 * 1024, "{per_conn} bytes per idle connection");
    assert!(
        first_ms < Duration::from_secs(2),
        "a new agent waited {first_ms:?}"
    );
    // Every idle session still works.
    rt.block_on(async {
        for c in clients.iter().step_by((n / 20).max(1)) {
            c.simple_query("SELECT 1")
                .await
                .expect("an idle session answers");
        }
    });
    drop(clients);
    drop(rt);
}

/// What the gateway still sent before closing the connection (its length), or `None` if it was
/// still open after `within`.
async fn gone_within(s: &mut tokio::net::TcpStream, within: Duration) -> Option<usize> {
    let (closed, got) = closed_within(s, within).await;
    closed.then_some(got.len())
}

/// Reads until EOF or `within`; true if the gateway closed the connection.
async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> (bool, Vec<u8>) {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let until = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(until, s.read(&mut buf)).await {
            Err(_) => return (false, got),
            Ok(Ok(0)) | Ok(Err(_)) => return (true, got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn silent_and_slow_clients_are_cut_at_the_deadline_and_capped_while_agents_are_served() {
    const CAP: usize = 200;
    let dir = demo_dir_with(|t| {
        with_limits(
            t,
            &format!("auth_timeout_ms = 2000\nmax_preauth_connections = {CAP}"),
        )
    });
    let served = Served::start(dir, "");
    let h = support::harness();
    h.runtime.block_on(async {
        served_in(&served).await;
        let baseline = served.rss_kib();
        // 150 silent connections and 40 that send a startup packet a byte every 300 ms,
        // on both listeners.
        let mut silent = Vec::new();
        for i in 0..150 {
            let port = if i % 2 == 0 {
                served.pg_port
            } else {
                served.redis_port
            };
            silent.push(
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .unwrap(),
            );
        }
        let mut slow = Vec::new();
        for _ in 0..40 {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", served.pg_port))
                .await
                .unwrap();
            slow.push(tokio::spawn(async move {
                let packet =
                    b"\x00\x00\x00\x29\x00\x03\x00\x00user\x00writer\x00database\x00shop\x00\x00";
                for b in packet {
                    if s.write_all(&[*b]).await.is_err() {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                false
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Under the cap: real agents are served meanwhile, on both protocols.
        let t = served_in(&served).await;
        assert!(
            t < Duration::from_secs(1),
            "agent waited {t:?} behind slow logins"
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
        // Over the cap: refused at once, with the rule named, on both protocols (opened
        // together, so the auth deadline cannot free places meanwhile).
        let mut extra = Vec::new();
        for i in 0..40 {
            let port = if i % 2 == 0 {
                served.pg_port
            } else {
                served.redis_port
            };
            extra.push((
                i,
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .unwrap(),
            ));
        }
        let checks = extra.into_iter().map(|(i, mut s)| async move {
            let (closed, got) = closed_within(&mut s, Duration::from_millis(500)).await;
            (i, s, closed, got)
        });
        let mut refused = 0;
        for (i, s, closed, got) in futures_util::future::join_all(checks).await {
            if closed {
                let text = String::from_utf8_lossy(&got);
                assert!(
                    text.contains("limits.max_preauth_connections"),
                    "refusal names the rule: {text:?}"
                );
                if i % 2 == 0 {
                    assert!(text.contains("53300"), "{text:?}");
                } else {
                    assert!(text.starts_with("-ERR"), "{text:?}");
                }
                refused += 1;
            } else {
                silent.push(s);
            }
        }
        assert!(
            refused >= 25,
            "only {refused} of 40 over the cap were refused"
        );
        let peak = served.rss_kib();
        // The deadline closes every silent and slow connection.
        let started = Instant::now();
        for s in silent.iter_mut() {
            let (closed, _) = closed_within(s, Duration::from_secs(5)).await;
            assert!(closed, "a silent connection outlived the auth deadline");
        }
        for t in slow {
            assert!(
                t.await.unwrap(),
                "a byte-a-second login outlived the auth deadline"
            );
        }
        assert!(started.elapsed() < Duration::from_secs(6));
        // And new logins are accepted again.
        let t = served_in(&served).await;
        assert!(t < Duration::from_secs(1));
        let grown = peak.saturating_sub(baseline);
        println!(
            "pre-auth flood: RSS {baseline} KiB -> {peak} KiB; {refused} refused over the cap"
        );
        assert!(
            grown < 64 * 1024,
            "RSS grew {grown} KiB for 230 idle pre-auth connections"
        );
    });
    drop(served);
}

/// An authenticated MCP `tools/call` of `query` as `agent` on `port`: its structured result.
async fn mcp_query(port: u16, agent: &str, sql: &str) -> serde_json::Value {
    let url = format!("http://127.0.0.1:{port}/mcp");
    let args = serde_json::json!({"sql": sql, "upstream": "shop"});
    let body = support::mcp_tool_call(&url, agent, "query", args).await;
    let result = body["result"].clone();
    assert_eq!(result["isError"], false, "{body}");
    result["structuredContent"].clone()
}

/// A connection to `port` that sent `head` (a request line and a header, never finished).
async fn partial_request(port: u16, head: &str) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

#[test]
fn partial_http_requests_are_cut_at_the_header_deadline_and_capped_while_agents_are_served() {
    const CAP: usize = 60;
    const HEADER_MS: u64 = 2000;
    let dir = demo_dir_with(|t| {
        with_limits(
            t,
            &format!("max_preauth_connections = {CAP}\nhttp_header_timeout_ms = {HEADER_MS}"),
        )
    });
    let served = Served::start(dir, "");
    let mcp = served.mcp_port();
    let admin = served.admin_port;
    let h = support::harness();
    h.runtime.block_on(async {
        served_in(&served).await;
        // A statement that runs longer than the header deadline, over MCP: a request in
        // progress is never cut (checked below).
        let long = tokio::spawn(mcp_query(mcp, "trusted", "SELECT pg_sleep(3), 7 AS n"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        // 20 half-sent requests on each HTTP listener (headers never finished), plus 5 silent
        // connections on each: 50 of the 60 pre-authentication places.
        let mut stalled = Vec::new();
        for _ in 0..20 {
            stalled.push(partial_request(mcp, "POST /mcp HTTP/1.1\r\nHost: x\r\n").await);
            stalled.push(partial_request(admin, "GET /api/v1/stats HTTP/1.1\r\nHost: x\r\n").await);
        }
        for port in [mcp, admin] {
            for _ in 0..5 {
                stalled.push(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Under the cap: agents on PostgreSQL and the admin API are served meanwhile (their
        // connections authenticate and leave the count).
        let t = served_in(&served).await;
        assert!(t < Duration::from_secs(1), "agent waited {t:?}");
        let (status, body) = support::admin_request(
            &served.admin_url(),
            "GET",
            "/api/v1/stats",
            support::AdminAs::Viewer,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        // 20 more on the two HTTP listeners at once: the 10 over the cap get a 503 naming the
        // rule, before sending anything (opened together, well before the deadline frees
        // places).
        let mut refused = 0;
        let mut extra = Vec::new();
        for i in 0..20 {
            let port = if i % 2 == 0 { mcp } else { admin };
            extra.push(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap());
        }
        let checks = extra.into_iter().map(|mut s| async move {
            let (closed, got) = closed_within(&mut s, Duration::from_millis(300)).await;
            (s, closed, got)
        });
        for (s, closed, got) in futures_util::future::join_all(checks).await {
            if closed {
                let text = String::from_utf8_lossy(&got);
                assert!(text.starts_with("HTTP/1.1 503"), "{text:?}");
                assert!(
                    text.contains("limits.max_preauth_connections"),
                    "refusal names the rule: {text:?}"
                );
                refused += 1;
            } else {
                stalled.push(s);
            }
        }
        assert!(refused >= 8, "only {refused} of 20 over the cap were refused");
        let r = long.await.unwrap();
        assert_eq!(r["row_count"], 1, "{r}");
        // The header deadline closes every stalled connection.
        let waiting = Instant::now();
        for s in stalled.iter_mut() {
            let (closed, _) = closed_within(s, Duration::from_secs(5)).await;
            assert!(closed, "a half-sent HTTP request outlived the header deadline");
        }
        assert!(
            waiting.elapsed() < Duration::from_millis(HEADER_MS + 1500),
            "stalled connections closed only after {:?}",
            waiting.elapsed()
        );
        // An authenticated keep-alive connection left idle is closed at the same deadline.
        let token = support::harness().env.mcp_token("trusted");
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        let mut idle = tokio::net::TcpStream::connect(("127.0.0.1", mcp)).await.unwrap();
        idle.write_all(
            format!(
                "POST /mcp HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
                 Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
                 Mcp-Protocol-Version: 2025-06-18\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let idle_since = Instant::now();
        let (closed, got) = closed_within(&mut idle, Duration::from_secs(5)).await;
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(closed, "an idle keep-alive connection was never closed");
        let idle_for = idle_since.elapsed();
        assert!(
            idle_for >= Duration::from_millis(HEADER_MS - 200)
                && idle_for < Duration::from_millis(HEADER_MS + 1500),
            "idle connection closed after {idle_for:?}"
        );
        // And everyone is served again.
        assert!(served_in(&served).await < Duration::from_secs(1));
        let r = mcp_query(mcp, "trusted", "SELECT 1 AS n").await;
        assert_eq!(r["row_count"], 1, "{r}");
        let (status, _) = support::admin_request(
            &served.admin_url(),
            "GET",
            "/api/v1/stats",
            support::AdminAs::Viewer,
        )
        .await;
        assert_eq!(status, 200);
        println!(
            "HTTP pre-auth flood: {refused} of 20 over the cap refused; 60 stalled closed {:?} after the wait began",
            waiting.elapsed()
        );
    });
    drop(served);
}

/// The head of an authenticated MCP POST whose body is `len` bytes long.
fn mcp_post_head(token: &str, len: usize) -> String {
    format!(
        "POST /mcp HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
         Mcp-Protocol-Version: 2025-06-18\r\nContent-Length: {len}\r\n\r\n"
    )
}

#[test]
fn mcp_bodies_that_never_finish_are_cut_at_the_login_deadline_and_counted_until_then() {
    const CAP: usize = 30;
    const AUTH_MS: u64 = 2000;
    let dir = demo_dir_with(|t| {
        with_limits(
            t,
            &format!("max_preauth_connections = {CAP}\nauth_timeout_ms = {AUTH_MS}"),
        )
    });
    let served = Served::start(dir, "");
    let mcp = served.mcp_port();
    let token = support::harness().env.mcp_token("trusted");
    support::harness().runtime.block_on(async {
        let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        // 20 connections whose first request's body stops after 10 of 1000 bytes, and 5 whose
        // second request's does (the first one served on the keep-alive connection).
        let mut stalled = Vec::new();
        for _ in 0..20 {
            let head = mcp_post_head(&token, 1000);
            stalled.push(partial_request(mcp, &format!("{head}{{\"jsonrpc\"")).await);
        }
        for _ in 0..5 {
            let mut s =
                partial_request(mcp, &format!("{}{list}", mcp_post_head(&token, list.len()))).await;
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&got).contains("\"tools\"") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(format!("{}{{\"jsonrpc\"", mcp_post_head(&token, 1000)).as_bytes())
                .await
                .unwrap();
            stalled.push(s);
        }
        let waiting = Instant::now();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Until their bodies arrive they count against the pre-authentication cap: of 10 more
        // connections, those over it are refused at once.
        let mut extra = Vec::new();
        for _ in 0..10 {
            extra.push(
                tokio::net::TcpStream::connect(("127.0.0.1", mcp))
                    .await
                    .unwrap(),
            );
        }
        let checks = extra.into_iter().map(|mut s| async move {
            let (closed, got) = closed_within(&mut s, Duration::from_millis(300)).await;
            (s, closed, got)
        });
        let mut refused = 0;
        for (_s, closed, got) in futures_util::future::join_all(checks).await {
            if closed {
                let text = String::from_utf8_lossy(&got);
                assert!(text.contains("limits.max_preauth_connections"), "{text}");
                refused += 1;
            }
        }
        assert!(
            refused >= 4,
            "only {refused} of 10 over the cap were refused"
        );
        // At the deadline each gets a 408 naming the setting, and its connection is closed.
        for s in stalled.iter_mut() {
            let (closed, got) = closed_within(s, Duration::from_secs(5)).await;
            let text = String::from_utf8_lossy(&got);
            assert!(closed, "a body sent in part outlived the deadline: {text}");
            assert!(
                text.contains("HTTP/1.1 408") && text.contains("limits.auth_timeout_ms"),
                "{text}"
            );
        }
        assert!(
            waiting.elapsed() < Duration::from_millis(AUTH_MS + 1500),
            "closed after {:?}",
            waiting.elapsed()
        );
        // And agents are served again.
        let r = mcp_query(mcp, "trusted", "SELECT 1 AS n").await;
        assert_eq!(r["row_count"], 1, "{r}");
    });
}

/// `psql -XAtq` as `url`'s agent running `sqls` in one session: (stdout bytes, stderr text).
fn psql(url: &str, sqls: &[&str]) -> (usize, String) {
    let mut cmd = std::process::Command::new("psql");
    cmd.arg(url).arg("-XAtq");
    for sql in sqls {
        cmd.args(["-c", sql]);
    }
    let out = cmd.output().expect("psql runs");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "psql failed: {err}");
    (out.stdout.len(), err)
}

#[test]
fn huge_rows_are_relayed_in_pieces_never_held_whole() {
    const MIB: usize = 1 << 20;
    let served = Served::start(demo_dir_with(|t| t), "");
    support::harness()
        .runtime
        .block_on(async { served_in(&served).await });
    let before = served.peak_kib();
    // Three sessions at once, each reading one 64 MiB value (passthrough, and a writer on its
    // transaction pool, in both query protocols' framing: psql sends simple queries, so the
    // extended protocol is the same relay). Held whole, that is 192 MiB of gateway memory.
    let big = "SELECT repeat('x', 64 << 20)";
    let readers: Vec<_> = [("trusted", big), ("trusted", big), ("writer", big)]
        .into_iter()
        .map(|(agent, sql)| {
            let url = served.pg_url(agent);
            std::thread::spawn(move || psql(&url, &[sql, "SELECT 'after'"]))
        })
        .collect();
    for r in readers {
        let (bytes, err) = r.join().unwrap();
        // The value, its newline, then the next statement's `after` line: every byte arrived
        // and the session went on in step.
        assert_eq!(bytes, 64 * MIB + 1 + "after\n".len(), "{err}");
    }
    // The analyst's `max_result_bytes` (256 KiB) cuts the result: the row is dropped as it
    // arrives, the agent is told, and the session goes on.
    let (bytes, err) = psql(&served.pg_url("analyst"), &[big, "SELECT 'after'"]);
    assert_eq!(
        bytes,
        "after\n".len(),
        "only the next statement's row: {err}"
    );
    assert!(
        err.contains("result truncated to 0 rows, the first 262144 bytes of row data"),
        "{err}"
    );
    // A server error quoting a 64 MiB value (43 bytes sent): every field cut to its head, for
    // the client and for the audit record; the session goes on.
    let (bytes, err) = psql(
        &served.pg_url("analyst"),
        &["SELECT repeat('x', 64 << 20)::int", "SELECT 'after'"],
    );
    assert_eq!(bytes, "after\n".len(), "{err}");
    assert!(
        err.contains("invalid input syntax for type integer")
            && err.contains(" ... [67108905 bytes in all]")
            && err.len() < 80 * 1024,
        "{} bytes: {}",
        err.len(),
        &err[err.len().saturating_sub(300)..]
    );
    let log = std::fs::read_to_string(served.dir().join("audit.log")).unwrap();
    let outcome = log
        .lines()
        .rev()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["sqlstate"] == "22P02")
        .expect("the error's outcome record");
    let recorded = outcome["error"].as_str().unwrap();
    assert!(
        recorded.len() < 5000 && recorded.ends_with("bytes in all]"),
        "{}",
        recorded.len()
    );
    let grown = served.peak_kib().saturating_sub(before) / 1024;
    assert!(
        grown < 40,
        "the gateway's peak memory grew by {grown} MiB relaying 4 x 64 MiB rows and a 64 MiB error"
    );
}

fn audit_records(served: &Served) -> Vec<serde_json::Value> {
    let log = std::fs::read_to_string(served.dir().join("audit.log")).unwrap();
    log.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Sessions of `writer` closed for not reading, by protocol: (PostgreSQL, Redis, MongoDB).
fn closed_counts(served: &Served) -> (usize, usize, usize) {
    let records = audit_records(served);
    let closed = |protocol: &str| {
        records
            .iter()
            .filter(|r| {
                r["protocol"] == protocol
                    && r["rule"] == "limits.client_write_timeout_ms"
                    && r["decision"] == "error"
                    && r["agent"] == "writer"
                    && r["reason"].as_str().unwrap_or_default().starts_with(
                        "session closed: the client read none of its replies for 1500 ms",
                    )
            })
            .count()
    };
    (closed("postgres"), closed("redis"), closed("mongodb"))
}

#[test]
fn clients_that_stop_reading_are_closed_and_their_pooled_connections_given_back() {
    const MIB: usize = 1 << 20;
    let served = Served::start(
        demo_dir_with(|t| with_limits(t, "client_write_timeout_ms = 1500\nauth_timeout_ms = 3000")),
        "",
    );
    let env = &support::harness().env;
    support::harness().runtime.block_on(async {
        let addr = ([127, 0, 0, 1], served.pg_port).into();
        // The writer's share of the demo's 10-connection transaction pool is 8 (the pool less a
        // quarter). Eight sessions stop reading in the middle of a result, in both ways a result
        // comes: a 64 MiB row (relayed in pieces) and a stream of ordinary rows.
        let mut stalled = Vec::new();
        for i in 0..8 {
            let mut s = support::raw_login_at(addr, "writer").await;
            let sql = if i % 2 == 0 {
                "SELECT repeat('x', 64 << 20)"
            } else {
                "SELECT a.*, b.* FROM orders a, orders b"
            };
            let query = support::message(b'Q', format!("{sql}\0").as_bytes());
            s.write_all(&query).await.unwrap();
            stalled.push(s);
        }
        // Redis: 24 MiB of replies asked for and none read (under the shared connections' 64
        // MiB cut-off, so it is the write timeout that ends it).
        let mut redis = support::redis_login_at(served.redis_port, "writer").await;
        let big = "v".repeat(MIB);
        let set = support::redis_cmd(&["SET", "cache:stall", &big]);
        assert_eq!(
            support::redis_exchange(&mut redis, &set, "\r\n").await,
            "+OK\r\n"
        );
        let gets = support::redis_cmd(&["GET", "cache:stall"]).repeat(24);
        redis.write_all(&gets).await.unwrap();
        // MongoDB: ten finds of every order, none read.
        let mut mongo =
            support::mongo::RawMongo::login(served.mongo_port(), "writer", env.token("writer"))
                .await;
        for _ in 0..10 {
            let id = mongo.next_id();
            let find = bson::doc! { "find": "orders", "batchSize": 100_000, "$db": "shop" };
            let msg = tollgate::mongo::OpMsg::reply(0, id, &find).encode(false);
            mongo.stream.write_all(&msg).await.unwrap();
        }
        // Before login: a MongoDB client asks `hello` 100,000 times and reads nothing. Its writes
        // are bounded by the login's idle limit (auth_timeout_ms), not left waiting for ever
        // with the connection's place in the pre-authentication count.
        let hello = |id: i32| {
            let cmd = bson::doc! { "hello": 1, "$db": "admin" };
            tollgate::mongo::OpMsg::reply(0, id, &cmd).encode(false)
        };
        let mut probe = support::mongo::RawMongo::connect(served.mongo_port()).await;
        probe.stream.write_all(&hello(1)).await.unwrap();
        let mut one = vec![0u8; 4];
        probe.stream.read_exact(&mut one).await.unwrap();
        let reply_len = i32::from_le_bytes(one[..4].try_into().unwrap()) as usize;
        let mut hellos = tokio::net::TcpStream::connect(("127.0.0.1", served.mongo_port()))
            .await
            .unwrap();
        let asked: Vec<u8> = (1..=100_000).flat_map(hello).collect();
        // MCP: eight pipelined tool calls of about 1 MB of rows each (2 MB of JSON), none of
        // their responses read (hyper writes them: the listener's connection fails its writes
        // instead). Eight, so that they cannot all fit in the loopback socket's buffers, which
        // autotuning may grow to hold three (6 MB) before the client reads anything.
        let mut mcp = tokio::net::TcpStream::connect(("127.0.0.1", served.mcp_port()))
            .await
            .unwrap();
        for id in 1..=8 {
            let call = serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": "query", "arguments": {"upstream": "shop",
                "sql": "SELECT o.*, repeat('x', 500) AS pad FROM orders o LIMIT 2000"}}})
            .to_string();
            let head = mcp_post_head(&env.mcp_token("writer"), call.len());
            mcp.write_all(format!("{head}{call}").as_bytes())
                .await
                .unwrap();
        }
        // A slow but steady reader (trusted, its own server connection): 64 KiB every 200 ms
        // of a 64 MiB row, far slower than the gateway writes, never stopped: it is not cut.
        // (Before TCP_NOTSENT_LOWAT, a full socket showed progress only per ~1.3 MB drained.)
        let mut slow = support::raw_login_at(addr, "trusted").await;
        let query = support::message(b'Q', b"SELECT repeat('x', 64 << 20)\0");
        slow.write_all(&query).await.unwrap();
        let slow_reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = 0;
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(6) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                match slow.read(&mut buf).await {
                    Ok(0) | Err(_) => return (got, false),
                    Ok(n) => got += n,
                }
            }
            (got, true)
        });
        let asked_at = Instant::now();
        // (The gateway stops reading them once its replies back up, and may close the
        // connection before all are sent.)
        let _ = tokio::time::timeout(Duration::from_secs(10), hellos.write_all(&asked)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The writer's next statement needs a connection of its share: it gets one once the
        // stalled sessions were closed (before, it waited for the 5 s checkout timeout: 53300).
        let c = support::connect_url(&served.pg_url("writer"))
            .await
            .expect("the writer connects");
        let started = Instant::now();
        let rows = c.simple_query("SELECT count(*) FROM orders").await;
        assert!(
            rows.is_ok(),
            "served after {:?}: {:?}",
            started.elapsed(),
            rows.err().map(|e| support::db_message(&e))
        );
        // Every stalled session is closed by the gateway, and recorded as such (waited for
        // before reading: a read would un-stall a session whose clock is still running).
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut counts = closed_counts(&served);
        while counts != (8, 1, 1) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            counts = closed_counts(&served);
        }
        assert_eq!(
            counts,
            (8, 1, 1),
            "sessions closed for not reading (PostgreSQL, Redis, MongoDB), one record each"
        );
        for (i, s) in stalled.iter_mut().enumerate() {
            let got = gone_within(s, Duration::from_secs(20)).await;
            let got = got.unwrap_or_else(|| panic!("PostgreSQL session {i} still open"));
            assert!(
                got < 64 * MIB,
                "session {i} got its whole reply ({got} bytes)"
            );
        }
        let got = gone_within(&mut redis, Duration::from_secs(20)).await;
        assert!(got.expect("the Redis session is closed") < 24 * MIB);
        let got = gone_within(&mut mongo.stream, Duration::from_secs(20)).await;
        assert!(got.is_some(), "the MongoDB session is closed");
        let got = gone_within(&mut mcp, Duration::from_secs(20)).await;
        let got = got.expect("the MCP connection is closed");
        assert!(
            got < 12 << 20, // the eight responses are about 16 MB
            "the MCP responses were all written ({got} bytes)"
        );
        let (got, open) = slow_reader.await.unwrap();
        let cut = audit_records(&served)
            .into_iter()
            .find(|r| r["agent"] == "trusted" && r["rule"] == "limits.client_write_timeout_ms");
        assert!(cut.is_none(), "the slow reader's session was cut: {cut:?}");
        assert!(
            open && got > 1_000_000,
            "the slow reader was cut after {got} bytes"
        );
        // Read only once the login's idle limit has passed: the connection was closed with
        // most of its replies unwritten.
        tokio::time::sleep(Duration::from_millis(3500).saturating_sub(asked_at.elapsed())).await;
        let got = gone_within(&mut hellos, Duration::from_secs(20)).await;
        let got = got.expect("the hello-asking connection is closed");
        assert!(
            got < 100_000 * reply_len / 2,
            "{got} bytes of 100,000 replies of {reply_len}: it was not closed while stalled"
        );
        // All eight connections of the writer's share came back: eight transactions hold one
        // each at once.
        let mut open = Vec::new();
        for _ in 0..8 {
            let c = support::connect_url(&served.pg_url("writer"))
                .await
                .unwrap();
            c.batch_execute("BEGIN; SELECT id FROM orders LIMIT 1")
                .await
                .expect("a connection of the writer's share");
            open.push(c);
        }
        for c in &open {
            c.batch_execute("COMMIT").await.unwrap();
        }
        // The statements cut short say why their outcome is unknown (outcome records are
        // flushed within a tick).
        let unknown = || {
            audit_records(&served)
                .iter()
                .filter(|r| {
                    r["protocol"] == "postgres"
                        && r["rule"] == "limits.client_write_timeout_ms"
                        && r["reason"].as_str().unwrap_or_default().starts_with(
                            "outcome unknown: the session was closed: the client read none",
                        )
                })
                .count()
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while unknown() < 8 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(unknown(), 8, "an outcome record per statement cut short");
    });
    // The pool's books balance: every connection the stalled sessions held counted closed.
    let (status, stats) = support::harness().runtime.block_on(support::admin_request(
        &served.admin_url(),
        "GET",
        "/api/v1/stats",
        support::AdminAs::Viewer,
    ));
    assert_eq!(status, 200, "{stats}");
    let pool = stats["pools"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["mode"] == "transaction"))
        .unwrap_or_else(|| panic!("{stats}"));
    let n = |k: &str| pool[k].as_u64().unwrap_or_else(|| panic!("{k}: {pool}"));
    assert_eq!(n("opened") - n("closed"), n("open"), "{pool}");
}
