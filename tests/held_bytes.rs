//! Client messages are buffered whole before they are judged, up to `limits.max_message_bytes`
//! each: many sessions sending large messages slowly could make the gateway hold gigabytes.
//! `limits.max_held_client_bytes` bounds what messages being received hold, across every
//! session and door: a message that would go past it gets a native error (PostgreSQL FATAL
//! 53200, Redis `-ERR` then close, MongoDB a refusal and the session goes on), other sessions'
//! ordinary statements go on, and the budget comes back when the holder leaves.

mod support;

use std::time::Duration;

use bson::doc;
use support::mongo::RawMongo;
use support::served::{demo_dir_with, with_limits, Served};
use support::{harness, sqlstate};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// 2 MiB for the whole gateway.
const LIMITS: &str = "max_held_client_bytes = 2097152";

/// The gateway's `tollgate_held_client_bytes` gauge.
async fn held(served: &Served) -> f64 {
    let (_, body) = support::admin_request(
        &served.admin_url(),
        "get",
        "/metrics",
        support::AdminAs::Viewer,
    )
    .await;
    support::metric(
        body.as_str().unwrap_or_default(),
        "tollgate_held_client_bytes",
    )
    .unwrap_or(0.0)
}

/// Waits (up to 20 s) until the gauge says `ok`.
async fn wait_held(served: &Served, what: &str, ok: impl Fn(f64) -> bool) {
    let until = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = held(served).await;
        if ok(now) {
            return;
        }
        assert!(std::time::Instant::now() < until, "{what}: held {now}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Redis session of `agent`, logged in.
async fn redis_raw(port: u16, agent: &str) -> TcpStream {
    let env = &harness().env;
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let auth = format!(
        "*3\r\n$4\r\nAUTH\r\n${}\r\n{agent}\r\n${}\r\n{}\r\n",
        agent.len(),
        env.token(agent).len(),
        env.token(agent)
    );
    s.write_all(auth.as_bytes()).await.unwrap();
    assert_eq!(read_some(&mut s).await, "+OK\r\n");
    s
}

async fn read_some(s: &mut TcpStream) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("a reply")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A Redis session of `agent` holding 1.5 MB of a 4 MiB `SET` it never finishes, once the
/// gateway counts it.
async fn holder(served: &Served, agent: &str) -> TcpStream {
    let mut s = redis_raw(served.redis_port, agent).await;
    s.write_all(&partial_set("cache:held:a", 4 << 20, 1_500_000))
        .await
        .unwrap();
    wait_held(served, "the holder's 1.5 MB are counted", |n| {
        n >= 1_500_000.0
    })
    .await;
    s
}

/// A new Redis session of `agent` sends a whole 1 MB `SET key`: the reply.
async fn one_megabyte_set(port: u16, agent: &str, key: &str) -> String {
    let mut s = redis_raw(port, agent).await;
    s.write_all(&partial_set(key, 1_000_000, 1_000_000))
        .await
        .unwrap();
    s.write_all(b"\r\n").await.unwrap();
    read_some(&mut s).await
}

/// The head of `SET key <len bytes>` with `sent` bytes of the value: the rest never comes.
fn partial_set(key: &str, len: usize, sent: usize) -> Vec<u8> {
    let mut v = format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${len}\r\n", key.len()).into_bytes();
    v.extend(vec![b'v'; sent]);
    v
}

#[test]
fn messages_being_received_share_one_budget_across_sessions_and_doors() {
    let served = Served::start(demo_dir_with(|t| with_limits(t, LIMITS)), "");
    let h = harness();
    h.runtime.block_on(async {
        // A Redis session holds 1.5 MB of a command it never finishes.
        let holder = holder(&served, "writer").await;

        // Another Redis session's 1 MB command does not fit: said, then closed.
        let reply = one_megabyte_set(served.redis_port, "writer", "cache:held:b").await;
        assert!(
            reply.starts_with("-ERR tollgate: client messages being received hold 2097152 bytes")
                && reply.contains("limits.max_held_client_bytes"),
            "{reply}"
        );

        // PostgreSQL: a 1.2 MB parameter (a Bind buffered whole) does not fit either: FATAL
        // 53200. Ordinary statements of other sessions go on meanwhile.
        let pg = support::connect_url(&served.pg_url("writer")).await.unwrap();
        let big = "p".repeat(1_200_000);
        let e = pg
            .query_one("SELECT length($1::text)", &[&big])
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), "53200", "{e}");
        assert!(
            support::db_message(&e).contains("limits.max_held_client_bytes"),
            "{e}"
        );
        let other = support::connect_url(&served.pg_url("analyst")).await.unwrap();
        let n: i64 = other
            .query_one("SELECT count(*) FROM orders WHERE id < 10", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 9);

        // MongoDB: a 1.2 MB insert is refused, and the session goes on.
        let env = &harness().env;
        let mut m = RawMongo::login(served.mongo_port(), "writer", env.token("writer")).await;
        let r = m
            .command(doc! { "insert": "orders", "documents": [ { "_id": -77_001i64, "note": "q".repeat(1_200_000) } ], "$db": "shop" })
            .await;
        assert_eq!(r.get_f64("ok").ok(), Some(0.0), "{r:?}");
        assert!(
            r.get_str("errmsg")
                .unwrap_or_default()
                .contains("limits.max_held_client_bytes"),
            "{r:?}"
        );
        let r = m.command(doc! { "ping": 1, "$db": "shop" }).await;
        assert_eq!(r.get_f64("ok").ok(), Some(1.0), "{r:?}");

        // The holder leaves: its share comes back, and the same messages are received.
        drop(holder);
        wait_held(&served, "the holder's share comes back", |n| n == 0.0).await;
        let pg = support::connect_url(&served.pg_url("writer")).await.unwrap();
        let n: i32 = pg
            .query_one("SELECT length($1::text)", &[&big])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1_200_000);
        assert_eq!(
            one_megabyte_set(served.redis_port, "writer", "cache:held:b").await,
            "+OK\r\n"
        );
        // Received and consumed, the messages hold nothing: not even the allocation an idle
        // session's buffer kept pointing into (review).
        wait_held(&served, "consumed messages hold nothing", |n| n == 0.0).await;
    });
}

/// An MCP `tools/call` of `query` as `agent` whose body carries `sql`: the HTTP status and the
/// response body.
async fn mcp_query(url: &str, agent: &str, sql: &str) -> (u16, String) {
    let args = serde_json::json!({"sql": sql, "upstream": "shop"});
    let resp = support::mcp_tool_post(url, agent, "query", args).await;
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

#[test]
fn one_agent_fills_its_share_and_other_agents_still_have_room() {
    // 8 MiB for the gateway, at most 2 MiB of it for one agent.
    let served = Served::start(
        demo_dir_with(|t| {
            with_limits(
                t,
                "max_held_client_bytes = 8388608\nmax_held_client_bytes_per_agent = 2097152",
            )
        }),
        "",
    );
    let h = harness();
    let mcp = format!("http://127.0.0.1:{}/mcp", served.mcp_port());
    let big_sql = format!("SELECT length('{}')", "m".repeat(900_000));
    h.runtime.block_on(async {
        // writer holds 1.5 MB of a Redis command it never finishes.
        let holder = holder(&served, "writer").await;

        // writer's next large messages do not fit in its share, on any door.
        let reply = one_megabyte_set(served.redis_port, "writer", "cache:held:b").await;
        assert!(
            reply.starts_with("-ERR tollgate: client messages being received hold 2097152 bytes across this agent's sessions")
                && reply.contains("limits.max_held_client_bytes_per_agent"),
            "{reply}"
        );
        let (status, body) = mcp_query(&mcp, "writer", &big_sql).await;
        assert_eq!(status, 503, "{body}");
        assert!(
            body.contains("limits.max_held_client_bytes_per_agent"),
            "{body}"
        );

        // PostgreSQL: the head an oversize Query keeps for its refusal (1.5 MiB: the statement
        // limit and what a Parse carries besides) is held too while the rest arrives.
        let mut pg = support::raw_login_at(([127, 0, 0, 1], served.pg_port).into(), "writer").await;
        let text_len: i32 = 5 << 20;
        let mut query = vec![b'Q'];
        query.extend_from_slice(&(text_len + 5).to_be_bytes());
        query.extend(vec![b'q'; 64 << 10]);
        pg.write_all(&query).await.unwrap();
        let (tag, body) = tokio::time::timeout(Duration::from_secs(10), support::read_message(&mut pg))
            .await
            .expect("refused at once, not read on");
        assert_eq!(tag, b'E');
        let text = String::from_utf8_lossy(&body).into_owned();
        assert!(
            text.contains("53200") && text.contains("limits.max_held_client_bytes_per_agent"),
            "{text}"
        );

        // Other agents' messages of the same size are received meanwhile.
        assert_eq!(
            one_megabyte_set(served.redis_port, "trusted", "cache:held:t").await,
            "+OK\r\n"
        );
        let (status, body) = mcp_query(&mcp, "analyst", &big_sql).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("900000"), "the analyst's statement ran: {body}");

        // The holder leaves: writer's large messages are received again.
        drop(holder);
        wait_held(&served, "the holder's share comes back", |n| n == 0.0).await;
        let (status, body) = mcp_query(&mcp, "writer", &big_sql).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("900000"), "{body}");
        // The MCP request's body was counted while it ran, and given back after.
        wait_held(&served, "the MCP body is given back", |n| n == 0.0).await;
    });
}
