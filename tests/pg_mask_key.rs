//! The `hash` mask's key never reaches an agent. Masking subqueries carry it as a literal in the
//! text PostgreSQL receives, and PostgreSQL prints expressions in EXPLAIN output: with the key,
//! every hashed value (SSNs, phone numbers) could be reversed by trying likely values offline.
//! A gateway of the test's own (a copy of the demo, the analyst's `name` and `ssn` masked with
//! `hash`) is asked every way we know of; no byte the client receives, over the simple and the
//! extended protocol and MCP, nor the operator's `tollgate explain`, the audit log or the
//! gateway's log, holds the key. The refusals name `builtin: mask-key` (or, for a name tollgate
//! never checked, `builtin: unchecked-execute`), and hash-masked reads still return `h_` values.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::served::Served;
use support::{copy_demo_dir, error_field, harness, message, raw_login_at, read_message};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The demo analyst's PostgreSQL masks, and the same with `name` and `ssn` hashed.
const DEMO_MASK: &str = r#"mask = { email = "email", phone = "partial:4", ssn = "redact" }"#;
const HASH_MASK: &str =
    r#"mask = { name = "hash", email = "email", phone = "partial:4", ssn = "hash" }"#;

/// What the client received for one request, up to ReadyForQuery.
struct Reply {
    /// Every message: (tag, body).
    messages: Vec<(u8, Vec<u8>)>,
}

impl Reply {
    fn bytes(&self) -> Vec<u8> {
        self.messages
            .iter()
            .flat_map(|(t, b)| std::iter::once(*t).chain(b.iter().copied()))
            .collect()
    }

    /// The first column of each DataRow, as text.
    fn values(&self) -> Vec<String> {
        self.messages
            .iter()
            .filter(|(t, _)| *t == b'D')
            .map(|(_, body)| {
                let len = i32::from_be_bytes([body[2], body[3], body[4], body[5]]);
                String::from_utf8_lossy(&body[6..6 + len.max(0) as usize]).into_owned()
            })
            .collect()
    }

    /// (SQLSTATE, message) of the first ErrorResponse.
    fn error(&self) -> Option<(String, String)> {
        self.messages
            .iter()
            .find(|(t, _)| *t == b'E')
            .map(|(_, b)| {
                (
                    error_field(b, b'C').unwrap_or_default(),
                    error_field(b, b'M').unwrap_or_default(),
                )
            })
    }
}

/// Sends `bytes` and reads every message up to ReadyForQuery.
async fn exchange(s: &mut TcpStream, bytes: &[u8]) -> Reply {
    s.write_all(bytes).await.unwrap();
    let mut messages = Vec::new();
    loop {
        let (tag, body) = read_message(s).await;
        messages.push((tag, body));
        if tag == b'Z' {
            return Reply { messages };
        }
    }
}

fn query(sql: &str) -> Vec<u8> {
    message(b'Q', format!("{sql}\0").as_bytes())
}

/// Parse (`name`, `sql`, no parameter types), Bind of an unnamed portal with text `params`,
/// Execute, Sync; `bind: false` sends Parse and Sync only.
fn extended(name: &str, sql: &str, params: &[&str], bind: bool) -> Vec<u8> {
    let mut parse = format!("{name}\0{sql}\0").into_bytes();
    parse.extend_from_slice(&0i16.to_be_bytes());
    let mut out = message(b'P', &parse);
    if bind {
        let mut b = format!("\0{name}\0").into_bytes();
        b.extend_from_slice(&0i16.to_be_bytes()); // parameters in text
        b.extend_from_slice(&(params.len() as i16).to_be_bytes());
        for p in params {
            b.extend_from_slice(&(p.len() as i32).to_be_bytes());
            b.extend_from_slice(p.as_bytes());
        }
        b.extend_from_slice(&0i16.to_be_bytes()); // results in text
        out.extend(message(b'B', &b));
        out.extend(message(b'E', b"\0\0\0\0\0"));
    }
    out.extend(message(b'S', b""));
    out
}

/// `h_` + 16 hex digits of SHA-256(key || value), as the `hash` mask computes it.
fn hashed(key: &str, value: &str) -> String {
    let digest = Sha256::digest(format!("{key}{value}").as_bytes());
    format!("h_{}", &hex::encode(digest)[..16])
}

/// A refusal: SQLSTATE 42501 and a message naming one of `rules`, without `key`.
fn assert_refused(what: &str, r: &Reply, rules: &[&str], key: &str) {
    let leaked = String::from_utf8_lossy(&r.bytes()).contains(key);
    let (code, msg) = r.error().unwrap_or_else(|| {
        panic!(
            "{what}: not refused (the key in the reply: {leaked}): {:?}",
            r.values()
        )
    });
    assert!(!leaked, "{what}: the key in the refusal");
    assert_eq!(code, "42501", "{what}: {msg}");
    assert!(
        rules
            .iter()
            .any(|rule| msg.contains(&format!("(rule: {rule})"))),
        "{what}: {msg}"
    );
}

async fn mcp_call(port: u16, agent: &str, tool: &str, args: Value) -> String {
    let url = format!("http://127.0.0.1:{port}/mcp");
    support::mcp_tool_call(&url, agent, tool, args)
        .await
        .to_string()
}

#[test]
fn the_hash_mask_key_reaches_no_agent_by_explain_or_otherwise() {
    let dir = copy_demo_dir();
    let policy = dir.path().join("policies/analyst.toml");
    let text = std::fs::read_to_string(&policy).unwrap();
    // The first occurrence is the PostgreSQL table rule (the MongoDB one follows).
    assert!(text.contains(DEMO_MASK), "{text}");
    std::fs::write(&policy, text.replacen(DEMO_MASK, HASH_MASK, 1)).unwrap();
    // The passthrough agent gets the hash mask too (the demo gives it none).
    let trusted = dir.path().join("policies/trusted.toml");
    let text = std::fs::read_to_string(&trusted).unwrap();
    let session = "pool_mode = \"session\"";
    assert!(text.contains(session), "{text}");
    let masked = format!(
        "{session}\n\n[[postgres.table]]\nname = \"public.customers\"\nmask = {{ ssn = \"hash\" }}\n"
    );
    std::fs::write(&trusted, text.replacen(session, &masked, 1)).unwrap();
    let master = std::fs::read_to_string(dir.path().join("master.key")).unwrap();
    let key =
        tollgate::gateway::mask_hash_key(&tollgate::vault::MasterKey::parse(&master).unwrap());
    let served = Served::start(dir, "");
    let h = harness();
    h.runtime.block_on(async {
        let up = support::upstream().await;
        let raw = up
            .query_one("SELECT name, ssn FROM customers WHERE id = 1", &[])
            .await
            .unwrap();
        let (name, ssn): (String, String) = (raw.get(0), raw.get(1));
        let mut s = raw_login_at(([127, 0, 0, 1], served.pg_port).into(), "analyst").await;
        let mut received: Vec<u8> = Vec::new();

        // A hash-masked read runs (once the gateway has loaded the table's columns), and its
        // values are the keyed hashes of this key: the key the checks below look for.
        let select = "SELECT name, ssn FROM customers WHERE id = 1";
        let until = Instant::now() + Duration::from_secs(30);
        let r = loop {
            let r = exchange(&mut s, &query(select)).await;
            if r.error().is_none() || Instant::now() > until {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(r.error(), None);
        assert_eq!(r.values(), [hashed(&key, &name)]);
        let row = &r.messages.iter().find(|(t, _)| *t == b'D').unwrap().1;
        assert!(
            String::from_utf8_lossy(row).contains(&hashed(&key, &ssn)),
            "ssn hashed with the same key"
        );
        received.extend(r.bytes());

        // EXPLAIN of a hash-masked read, in every form: the plan would print the expression.
        let explains = [
            "EXPLAIN (VERBOSE, COSTS OFF) SELECT name FROM customers WHERE id = 1",
            "EXPLAIN SELECT name FROM customers WHERE id = 1",
            "EXPLAIN SELECT id FROM customers ORDER BY ssn LIMIT 5",
            "EXPLAIN (COSTS OFF) SELECT id FROM customers WHERE ssn = '123-45-6789'",
            "EXPLAIN ANALYZE SELECT name FROM customers WHERE id = 1",
            "EXPLAIN (FORMAT JSON, VERBOSE) SELECT * FROM customers LIMIT 1",
            "explain (verbose) select o.id, c.name from orders o join customers c on c.id = o.customer_id limit 1",
            "SELECT 1; EXPLAIN (VERBOSE) SELECT name FROM customers",
        ];
        for sql in explains {
            let r = exchange(&mut s, &query(sql)).await;
            assert_refused(sql, &r, &["builtin: mask-key"], &key);
            received.extend(r.bytes());
        }

        // Message levels at which the server echoes each statement it receives ("parse
        // <unnamed>: <text>" at debug2), the rewrite with the key among them (a live review):
        // refused however they are asked for; the extended read after them echoes nothing.
        for sql in [
            "SET client_min_messages = debug2",
            "SET client_min_messages TO 'DEBUG5'",
            "SET LOCAL client_min_messages = log",
            "SELECT set_config('client_min_messages', 'debug1', false)",
            "SELECT set_config('client_min_messages', lower('LOG'), false)",
        ] {
            let r = exchange(&mut s, &query(sql)).await;
            assert_refused(sql, &r, &["builtin: protected-setting"], &key);
            received.extend(r.bytes());
            let read = "SELECT ssn FROM customers WHERE id = $1";
            let r = exchange(&mut s, &extended("", read, &["1"], true)).await;
            assert_eq!(r.values(), [hashed(&key, &ssn)]);
            let echoed = String::from_utf8_lossy(&r.bytes()).contains(&key);
            assert!(!echoed, "the server echoed the rewrite after {sql}");
            received.extend(r.bytes());
        }
        for sql in [
            "SET client_min_messages = warning",
            "SET client_min_messages TO DEFAULT",
        ] {
            let r = exchange(&mut s, &query(sql)).await;
            assert_eq!(r.error(), None, "{sql}");
        }
        // (At startup: `pg_protocol_raw::replication_and_unsafe_startup_parameters_are_refused`.)

        // SQL PREPARE: EXECUTE runs, EXPLAIN EXECUTE (which prints the prepared plan) does not.
        let r = exchange(
            &mut s,
            &query("PREPARE p(bigint) AS SELECT name FROM customers WHERE id = $1"),
        )
        .await;
        assert_eq!(r.error(), None);
        let r = exchange(&mut s, &query("EXECUTE p(1)")).await;
        assert_eq!(r.values(), [hashed(&key, &name)]);
        received.extend(r.bytes());
        for sql in [
            "EXPLAIN (VERBOSE, COSTS OFF) EXECUTE p(1)",
            "EXPLAIN EXECUTE p(1)",
            "EXPLAIN ANALYZE EXECUTE p(1)",
        ] {
            let r = exchange(&mut s, &query(sql)).await;
            assert_refused(sql, &r, &["builtin: mask-key"], &key);
            received.extend(r.bytes());
            // The same text as an extended-protocol statement.
            let r = exchange(&mut s, &extended("", sql, &[], true)).await;
            assert_refused(sql, &r, &["builtin: mask-key"], &key);
            received.extend(r.bytes());
        }

        // A protocol-level prepared statement, then EXPLAIN EXECUTE of it by name.
        let r = exchange(
            &mut s,
            &extended("s1", "SELECT name FROM customers WHERE id = $1", &[], false),
        )
        .await;
        assert_eq!(r.error(), None);
        for sql in [
            "EXPLAIN (VERBOSE, COSTS OFF) EXECUTE s1(1)",
            "EXPLAIN EXECUTE s1(1)",
        ] {
            let r = exchange(&mut s, &query(sql)).await;
            assert_refused(sql, &r, &["builtin: mask-key", "builtin: unchecked-execute"], &key);
            received.extend(r.bytes());
        }

        // Extended protocol: EXPLAIN with a parameter is refused, the read itself runs.
        let sql = "EXPLAIN (VERBOSE, COSTS OFF) SELECT name FROM customers WHERE id = $1";
        let r = exchange(&mut s, &extended("", sql, &["1"], true)).await;
        assert_refused(sql, &r, &["builtin: mask-key"], &key);
        received.extend(r.bytes());
        let sql = "SELECT name FROM customers WHERE id = $1";
        let r = exchange(&mut s, &extended("", sql, &["1"], true)).await;
        assert_eq!(r.values(), [hashed(&key, &name)]);
        received.extend(r.bytes());

        // The session stays usable; EXPLAIN of what reads no hash-masked column still works.
        let r = exchange(&mut s, &query("EXPLAIN SELECT * FROM orders WHERE id = 1")).await;
        assert_eq!(r.error(), None);
        assert!(!r.values().is_empty());
        received.extend(r.bytes());

        // A passthrough agent with a hash mask: the same refusals, and no stored definition
        // (a view's, which pg_get_viewdef shows) may keep the key.
        let mut t = raw_login_at(([127, 0, 0, 1], served.pg_port).into(), "trusted").await;
        let r = exchange(&mut t, &query("SELECT ssn FROM customers WHERE id = 1")).await;
        assert_eq!(r.values(), [hashed(&key, &ssn)]);
        received.extend(r.bytes());
        let r = exchange(&mut t, &query("PREPARE p AS SELECT ssn FROM customers")).await;
        assert_eq!(r.error(), None);
        for sql in [
            "SET client_min_messages = log",
            "SET client_min_messages = debug2",
            "SELECT set_config('client_min_messages', 'debug5', false)",
            "EXPLAIN (VERBOSE, COSTS OFF) SELECT ssn FROM customers WHERE id = 1",
            "EXPLAIN (VERBOSE, COSTS OFF) EXECUTE p",
            "CREATE TEMPORARY VIEW v AS SELECT ssn FROM customers",
            "SELECT current_query(), ssn FROM customers WHERE id = 1",
            "SELECT statement FROM pg_prepared_statements",
            "SELECT query FROM pg_stat_activity",
            "SET debug_print_plan = on",
        ] {
            let r = exchange(&mut t, &query(sql)).await;
            // The views that show statement texts are refused to a passthrough agent with masks
            // by the sensitive-catalog rule first.
            assert_refused(
                sql,
                &r,
                &["builtin: mask-key", "builtin: sensitive-catalog"],
                &key,
            );
            received.extend(r.bytes());
        }
        // Nothing printed a tree either: the key's bytes in decimal (as debug_print_plan
        // prints a constant) are not in the reply.
        let r = exchange(&mut t, &query("SELECT ssn FROM customers WHERE id = 1")).await;
        let decimal: Vec<String> = key.bytes().take(8).map(|b| b.to_string()).collect();
        assert!(!String::from_utf8_lossy(&r.bytes()).contains(&decimal.join(" ")));
        received.extend(r.bytes());

        let received = String::from_utf8_lossy(&received).into_owned();
        assert!(!received.contains(&key), "the key reached the client");

        // MCP: `explain` shows the rewrite with a placeholder; `query` refuses EXPLAIN.
        let mcp = served.mcp_port();
        let explained = mcp_call(
            mcp,
            "analyst",
            "explain",
            json!({"sql": "SELECT name FROM customers WHERE id = 1", "upstream": "shop"}),
        )
        .await;
        assert!(!explained.contains(&key), "MCP explain shows the key");
        assert!(explained.contains("'<mask key>'"), "{explained}");
        let explained = mcp_call(
            mcp,
            "analyst",
            "explain",
            json!({"sql": "EXPLAIN VERBOSE SELECT name FROM customers", "upstream": "shop"}),
        )
        .await;
        assert!(!explained.contains(&key));
        assert!(explained.contains("builtin: mask-key"), "{explained}");
        let refused = mcp_call(
            mcp,
            "analyst",
            "query",
            json!({"sql": "EXPLAIN (VERBOSE, COSTS OFF) SELECT name FROM customers WHERE id = 1", "upstream": "shop"}),
        )
        .await;
        assert!(!refused.contains(&key), "MCP query shows the key");
        assert!(refused.contains("builtin: mask-key"), "{refused}");
        let rows = mcp_call(
            mcp,
            "analyst",
            "query",
            json!({"sql": "SELECT name FROM customers WHERE id = 1", "upstream": "shop"}),
        )
        .await;
        assert!(rows.contains(&hashed(&key, &name)), "{rows}");
    });

    // The operator's dry run shows the placeholder too.
    let out = support::explain_cli(
        &served.dir().join("tollgate.toml"),
        "analyst",
        "shop",
        "SELECT name FROM customers WHERE id = 1",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(!stdout.contains(&key), "tollgate explain prints the key");
    assert!(!String::from_utf8_lossy(&out.stderr).contains(&key));
    assert!(stdout.contains("'<mask key>'"), "{stdout}");

    // Neither the audit log nor the gateway's own log holds the key; the refusals are recorded.
    std::thread::sleep(Duration::from_millis(300));
    let audit = std::fs::read_to_string(served.dir().join("audit.log")).unwrap();
    assert!(!audit.contains(&key), "the audit log holds the key");
    assert!(
        audit
            .lines()
            .any(|l| l.contains(r#""decision":"blocked""#) && l.contains("builtin: mask-key")),
        "refusals recorded"
    );
    assert!(
        !served.log_text().contains(&key),
        "the gateway log holds the key"
    );
}
