//! Test harness: one real PostgreSQL (SCRAM, random port) seeded as the demo's `shop`, and the
//! gateway in front of it, started once per test binary on a runtime of its own.

#![allow(dead_code)]

pub mod decision_table;
pub mod fuzz;
pub mod mongo;
pub mod served;
pub mod tls;

use std::sync::OnceLock;

use tollgate::demo::seed::SeedOptions;
use tollgate::demo::{Demo, DemoEnv, DemoOptions};

pub struct Harness {
    pub env: DemoEnv,
    pub runtime: tokio::runtime::Handle,
    /// The demo's redis-server, for tests that restart it.
    pub redis: std::sync::Arc<tokio::sync::Mutex<tollgate::demo::redis_server::RedisServer>>,
}

static HARNESS: OnceLock<Harness> = OnceLock::new();

/// The shared demo (started on first use; torn down with the process by the cluster's watchdog).
/// The analyst's statement rate is lifted (suites run thousands of statements); see
/// [`strict_harness`] for the demo exactly as shipped.
pub fn harness() -> &'static Harness {
    HARNESS.get_or_init(|| start_harness(true, false))
}

/// The shared demo with PostgreSQL serving TLS only (`hostssl`) and the gateway connecting with
/// `tls = "verify-full"`. A test binary uses either this or [`harness`] (the first call decides).
pub fn upstream_tls_harness() -> &'static Harness {
    HARNESS.get_or_init(|| start_harness(true, true))
}

/// The shared demo with every limit as the demo contract says. A test binary uses either this
/// or [`harness`], not both (the first call decides).
pub fn strict_harness() -> &'static Harness {
    HARNESS.get_or_init(|| start_harness(false, false))
}

fn start_harness(unlimited_rate: bool, upstream_tls: bool) -> Harness {
    {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("tollgate-harness".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                let handle = rt.handle().clone();
                rt.block_on(async move {
                    let opts = DemoOptions {
                        seed: SeedOptions {
                            customers: 2_000,
                            orders: 20_000,
                            ..SeedOptions::default()
                        },
                        unlimited_rate,
                        upstream_tls,
                        ..DemoOptions::default()
                    };
                    match Demo::start(opts).await {
                        Ok(demo) => {
                            tx.send(Ok((demo.env.clone(), handle, demo.redis.clone())))
                                .unwrap();
                            // Keep the demo (gateway and cluster) alive for the whole test binary.
                            let _demo = demo;
                            std::future::pending::<()>().await;
                        }
                        Err(e) => tx.send(Err(e.to_string())).unwrap(),
                    }
                });
            })
            .unwrap();
        match rx.recv().unwrap() {
            Ok((env, runtime, redis)) => Harness {
                env,
                runtime,
                redis,
            },
            Err(e) => panic!("could not start the test harness: {e}"),
        }
    }
}

/// A tokio-postgres connection to the gateway as `agent` (NoTls), its task spawned.
pub async fn connect(agent: &str) -> tokio_postgres::Client {
    connect_url(&harness().env.pg_url(agent))
        .await
        .unwrap_or_else(|e| panic!("connect as {agent}: {e}"))
}

pub async fn connect_url(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// A superuser connection straight to the upstream, for checks behind the gateway's back.
pub async fn upstream() -> tokio_postgres::Client {
    connect_url(&harness().env.upstream_pg_url)
        .await
        .expect("direct upstream connection")
}

/// The SQLSTATE of a failed statement.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("<no sqlstate: {e}>"))
}

pub fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}

/// Path of the tollgate binary cargo built for these tests.
pub fn tollgate_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tollgate")
}

/// `tollgate explain --agent AGENT --upstream UPSTREAM --config CONFIG STATEMENT`, the master
/// key from the config's key file (never from the environment).
pub fn explain_cli(
    config: &std::path::Path,
    agent: &str,
    upstream: &str,
    statement: &str,
) -> std::process::Output {
    std::process::Command::new(tollgate_bin())
        .args([
            "explain",
            "--agent",
            agent,
            "--upstream",
            upstream,
            "--config",
        ])
        .arg(config)
        .arg(statement)
        .env_remove("TOLLGATE_MASTER_KEY")
        .output()
        .expect("tollgate explain runs")
}

/// A raw protocol connection, logged in as `agent` with SCRAM, positioned after the first
/// ReadyForQuery: for tests that send hand-made (and malformed) messages.
pub async fn raw_login(agent: &str) -> tokio::net::TcpStream {
    let port = harness().env.pg_port;
    raw_login_at(([127, 0, 0, 1], port).into(), agent).await
}

/// [`raw_login`] to the PostgreSQL listener at `addr` (a gateway of the test's own).
pub async fn raw_login_at(addr: std::net::SocketAddr, agent: &str) -> tokio::net::TcpStream {
    use bytes::BytesMut;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
    use postgres_protocol::message::frontend;
    use tokio::io::AsyncWriteExt;

    let env = &harness().env;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = BytesMut::new();
    frontend::startup_message([("user", agent), ("database", "shop")], &mut buf).unwrap();
    s.write_all(&buf).await.unwrap();
    let (tag, _) = read_message(&mut s).await;
    assert_eq!(tag, b'R');
    let mut scram = ScramSha256::new(env.token(agent).as_bytes(), ChannelBinding::unsupported());
    buf.clear();
    frontend::sasl_initial_response("SCRAM-SHA-256", scram.message(), &mut buf).unwrap();
    s.write_all(&buf).await.unwrap();
    let (_, body) = read_message(&mut s).await;
    scram.update(&body[4..]).unwrap();
    buf.clear();
    frontend::sasl_response(scram.message(), &mut buf).unwrap();
    s.write_all(&buf).await.unwrap();
    loop {
        let (tag, body) = read_message(&mut s).await;
        if tag == b'K' {
            let pid = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
            LAST_BACKEND_PID.with(|p| p.set(pid));
        }
        if tag == b'Z' {
            return s;
        }
        assert_ne!(tag, b'E', "login failed");
    }
}

thread_local! {
    /// The process id in the BackendKeyData of the last raw login on this thread.
    pub static LAST_BACKEND_PID: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

/// A raw simple query: (the first column of each DataRow as text, the messages' tags, SQLSTATE).
pub async fn raw_query(
    s: &mut tokio::net::TcpStream,
    sql: &str,
) -> (Vec<String>, Vec<u8>, Option<String>) {
    use tokio::io::AsyncWriteExt;
    s.write_all(&message(b'Q', format!("{sql}\0").as_bytes()))
        .await
        .unwrap();
    let mut values = Vec::new();
    let mut tags = Vec::new();
    let mut code = None;
    loop {
        let (tag, body) = read_message(s).await;
        tags.push(tag);
        match tag {
            b'D' => {
                let len = i32::from_be_bytes([body[2], body[3], body[4], body[5]]);
                let v = if len < 0 {
                    String::new()
                } else {
                    String::from_utf8_lossy(&body[6..6 + len as usize]).into_owned()
                };
                values.push(v);
            }
            b'E' => code = error_field(&body, b'C'),
            b'Z' => return (values, tags, code),
            _ => {}
        }
    }
}

/// Reads one backend message: (tag, body).
pub async fn read_message(s: &mut tokio::net::TcpStream) -> (u8, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 5];
    s.read_exact(&mut head)
        .await
        .expect("backend message header");
    let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).await.expect("backend message body");
    (head[0], body)
}

/// Reads messages until ReadyForQuery; returns the tags seen and the SQLSTATE of any error.
pub async fn read_until_ready(s: &mut tokio::net::TcpStream) -> (Vec<u8>, Option<String>, u8) {
    let mut tags = Vec::new();
    let mut code = None;
    loop {
        let (tag, body) = read_message(s).await;
        tags.push(tag);
        if tag == b'E' {
            code = error_field(&body, b'C');
        }
        if tag == b'Z' {
            return (tags, code, body[0]);
        }
    }
}

pub fn error_field(body: &[u8], field: u8) -> Option<String> {
    let mut rest = body;
    while let Some((&f, tail)) = rest.split_first() {
        if f == 0 {
            return None;
        }
        let nul = tail.iter().position(|&b| b == 0)?;
        if f == field {
            return Some(String::from_utf8_lossy(&tail[..nul]).into_owned());
        }
        rest = &tail[nul + 1..];
    }
    None
}

pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// A `redis` crate connection to the gateway as `agent` (RESP2, or RESP3 with `resp3`).
pub async fn redis_connect(agent: &str, resp3: bool) -> redis::aio::MultiplexedConnection {
    redis_client(agent, resp3)
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("redis connect as {agent}: {e}"))
}

pub fn redis_client(agent: &str, resp3: bool) -> redis::Client {
    let mut url = harness().env.redis_url(agent);
    if resp3 {
        url.push_str("?protocol=resp3");
    }
    redis::Client::open(url).unwrap()
}

/// Sends a SET whose value is over `limits.max_message_bytes` (64 MiB), refused once its length
/// is read, then 8 MiB of it as a client still sending would (each write must go through: the
/// gateway drains what comes after its error), and returns everything the gateway sent until it
/// closed.
pub async fn redis_refused_mid_argument<S>(s: &mut S) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"*3\r\n$3\r\nSET\r\n$7\r\ncache:9\r\n$100000000\r\n")
        .await
        .unwrap();
    let junk = vec![b'x'; 64 * 1024];
    for _ in 0..128 {
        s.write_all(&junk)
            .await
            .expect("the gateway drains, no reset");
    }
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got).await;
    String::from_utf8_lossy(&got).into_owned()
}

/// A raw TCP connection to the Redis listener (nothing sent yet).
pub async fn redis_raw() -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(("127.0.0.1", harness().env.redis_port))
        .await
        .unwrap()
}

/// Sends `bytes` and reads until the reply ends with `until` (or 5 s pass); returns the text.
pub async fn redis_exchange(s: &mut tokio::net::TcpStream, bytes: &[u8], until: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !String::from_utf8_lossy(&got).ends_with(until) && std::time::Instant::now() < deadline {
        match tokio::time::timeout(std::time::Duration::from_millis(200), s.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => break,
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// One command as a RESP array of bulk strings.
pub fn redis_cmd(words: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", words.len()).into_bytes();
    for w in words {
        out.extend_from_slice(format!("${}\r\n{w}\r\n", w.len()).as_bytes());
    }
    out
}

/// A raw connection logged in as `agent` with `AUTH`.
pub async fn redis_login(agent: &str) -> tokio::net::TcpStream {
    redis_login_to(redis_raw().await, agent).await
}

/// [`redis_login`] to the Redis listener on `port` (a gateway of the test's own).
pub async fn redis_login_at(port: u16, agent: &str) -> tokio::net::TcpStream {
    let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    redis_login_to(s, agent).await
}

async fn redis_login_to(mut s: tokio::net::TcpStream, agent: &str) -> tokio::net::TcpStream {
    let token = harness().env.token(agent).to_string();
    let cmd = format!(
        "*3\r\n$4\r\nAUTH\r\n${}\r\n{agent}\r\n${}\r\n{token}\r\n",
        agent.len(),
        token.len()
    );
    assert_eq!(
        redis_exchange(&mut s, cmd.as_bytes(), "\r\n").await,
        "+OK\r\n"
    );
    s
}

/// The server's error text of a failed `redis` crate call.
pub fn redis_error(e: &redis::RedisError) -> String {
    format!("{} {}", e.code().unwrap_or(""), e.detail().unwrap_or(""))
}

/// Which admin token a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAs {
    Nobody,
    BadToken,
    Viewer,
    Admin,
}

/// An admin API request against `base` (`http://127.0.0.1:PORT`): (status, body as JSON, or
/// the text wrapped in a JSON string when it is not JSON).
pub async fn admin_request(
    base: &str,
    method: &str,
    path: &str,
    who: AdminAs,
) -> (u16, serde_json::Value) {
    let env = &harness().env;
    let client = reqwest::Client::new();
    let url = format!("{base}{path}");
    let mut req = match method {
        "post" | "POST" => client.post(&url),
        _ => client.get(&url),
    };
    match who {
        AdminAs::Nobody => {}
        AdminAs::BadToken => req = req.bearer_auth("tga_not_a_real_token"),
        AdminAs::Viewer => req = req.bearer_auth(&env.admin_viewer_token),
        AdminAs::Admin => req = req.bearer_auth(&env.admin_token),
    }
    let resp = req.send().await.expect("admin API answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, body)
}

/// One authenticated MCP `tools/call` of `tool` with `arguments`, as `agent` (the demo's
/// bearer `AGENT:TOKEN`), on the MCP endpoint `url`, answered as plain JSON: the response
/// body (a JSON-RPC reply).
pub async fn mcp_tool_call(
    url: &str,
    agent: &str,
    tool: &str,
    arguments: serde_json::Value,
) -> serde_json::Value {
    let resp = mcp_tool_post(url, agent, tool, arguments).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("a JSON-RPC reply")
}

/// The HTTP response to one authenticated MCP `tools/call` (see [`mcp_tool_call`]), whatever
/// its status.
pub async fn mcp_tool_post(
    url: &str,
    agent: &str,
    tool: &str,
    arguments: serde_json::Value,
) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .header(
            "authorization",
            format!("Bearer {}", harness().env.mcp_token(agent)),
        )
        .json(
            &serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments}}),
        )
        .send()
        .await
        .expect("the MCP endpoint answers")
}

/// The value of the Prometheus sample `name` (with its labels, if any) in `/metrics` text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `admin_request` against the harness's own admin listener.
pub async fn admin(method: &str, path: &str, who: AdminAs) -> (u16, serde_json::Value) {
    admin_request(&harness().env.admin_url(), method, path, who).await
}

/// A copy of the demo's config, agents, vault, key, admin tokens, policies and TLS files, for a
/// second gateway (or `tollgate serve`) of a test's own.
pub fn copy_demo_dir() -> tempfile::TempDir {
    let src = &harness().env.dir;
    let dst = tempfile::tempdir().unwrap();
    for f in [
        "tollgate.toml",
        "agents.toml",
        "vault.json",
        "master.key",
        "admin_tokens.toml",
    ] {
        std::fs::copy(src.join(f), dst.path().join(f)).unwrap();
    }
    for sub in ["policies", "tls"] {
        std::fs::create_dir(dst.path().join(sub)).unwrap();
        for e in std::fs::read_dir(src.join(sub)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dst.path().join(sub).join(e.file_name())).unwrap();
        }
    }
    dst
}

/// This process's resident memory (the in-process gateway's buffers show in it), in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// `tollgate ARGS` with `input` on its stdin (the master key from the config's key file, never
/// from the environment).
pub fn tollgate_with_stdin<I, S>(args: I, input: &[u8]) -> std::process::Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    use std::io::Write;
    let mut child = std::process::Command::new(tollgate_bin())
        .args(args)
        .env_remove("TOLLGATE_MASTER_KEY")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// `tollgate vault set NAME` in the gateway's directory, the value on stdin.
pub fn vault_set(dir: &std::path::Path, name: &str, value: &str) {
    let config = dir.join("tollgate.toml");
    let out = tollgate_with_stdin(
        [
            std::ffi::OsStr::new("vault"),
            "--config".as_ref(),
            config.as_os_str(),
            "set".as_ref(),
            name.as_ref(),
        ],
        value.as_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
