//! The MCP door against the demo: JSON-RPC over HTTP as any MCP client sends it. Bearer
//! authentication (401 otherwise), tools per agent, the query tool through the same policy as
//! the wire (the adversarial table refused with the wire's very SQLSTATE and words), masking,
//! writes, result caps, the Redis tool, the MongoDB tools (`mcp/mongo.rs`), audit records with
//! protocol `mcp`, and the stdio bridge over HTTPS.

mod support;

#[path = "mcp/mongo.rs"]
mod mongo;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use support::{harness, tollgate_bin};

fn mcp_url() -> String {
    harness().env.mcp_url()
}

/// POSTs one JSON-RPC message with `bearer` (the raw header value, if any).
fn post(bearer: Option<&str>, body: Value) -> (u16, Value) {
    harness().runtime.block_on(async {
        let client = reqwest::Client::new();
        let mut req = client
            .post(mcp_url())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .json(&body);
        if let Some(b) = bearer {
            req = req.header("authorization", b);
        }
        let resp = req.send().await.expect("MCP endpoint answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(json!({"raw": text})),
        )
    })
}

/// POSTs a JSON-RPC message written as text (key order as written) as `agent`.
fn post_raw(agent: &str, body: &str) -> (u16, Value) {
    harness().runtime.block_on(async {
        let resp = reqwest::Client::new()
            .post(mcp_url())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .header("authorization", bearer(agent))
            .body(body.to_string())
            .send()
            .await
            .expect("MCP endpoint answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(json!({"raw": text})),
        )
    })
}

fn bearer(agent: &str) -> String {
    format!("Bearer {}", harness().env.mcp_token(agent))
}

fn rpc(agent: &str, method: &str, params: Value) -> Value {
    let (status, body) = post(
        Some(&bearer(agent)),
        json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}),
    );
    assert_eq!(status, 200, "{body}");
    body
}

/// A tool call's result (`isError` included).
fn call(agent: &str, tool: &str, args: Value) -> Value {
    let body = rpc(
        agent,
        "tools/call",
        json!({"name": tool, "arguments": args}),
    );
    body["result"].clone()
}

fn ok(agent: &str, tool: &str, args: Value) -> Value {
    let r = call(agent, tool, args.clone());
    assert_eq!(r["isError"], json!(false), "{tool} {args}: {r}");
    r["structuredContent"].clone()
}

fn err(agent: &str, tool: &str, args: Value) -> Value {
    let r = call(agent, tool, args.clone());
    assert_eq!(
        r["isError"],
        json!(true),
        "{tool} {args} was not refused: {r}"
    );
    r["structuredContent"]["error"].clone()
}

fn text(r: &Value) -> String {
    r["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn audit_lines() -> Vec<Value> {
    std::thread::sleep(std::time::Duration::from_millis(250)); // outcomes: 100 ms flusher
    std::fs::read_to_string(&harness().env.audit_log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn missing_or_wrong_bearers_get_401_with_a_json_rpc_error() {
    let env = &harness().env;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let wrong = format!("Bearer analyst:{}", env.token("writer"));
    let ghost = format!(
        "Bearer ghost-{}:{}",
        std::process::id(),
        env.token("analyst")
    );
    let bare = format!("Bearer {}", env.token("analyst"));
    for b in [
        None,
        Some(wrong.as_str()),
        Some(ghost.as_str()),
        Some(bare.as_str()),
        Some("Basic x"),
    ] {
        let (status, body) = post(b, init.clone());
        assert_eq!(status, 401, "{b:?}: {body}");
        assert_eq!(body["jsonrpc"], "2.0");
        assert_eq!(body["error"]["code"], -32001);
        let shown = body.to_string();
        assert!(!shown.contains(env.token("analyst")) && !shown.contains(env.token("writer")));
    }
    let lines = audit_lines();
    // Recorded under a hash of the name, never the name itself (it may be a pasted token).
    let ghost_name = format!("ghost-{}", std::process::id());
    let failed: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| {
            l["protocol"] == "mcp"
                && l["decision"] == "blocked"
                && l["reason"] == "authentication failed"
                && l["agent"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("(unknown #"))
        })
        .collect();
    assert!(
        !failed.is_empty(),
        "the unknown agent's failed login is recorded"
    );
    let text = lines.iter().map(|l| l.to_string()).collect::<String>();
    assert!(!text.contains(&ghost_name) && !text.contains(env.token("analyst")));
    let (status, body) = post(Some(&bearer("analyst")), init);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["serverInfo"]["name"], "tollgate");
}

/// Two Authorization headers are refused, whichever comes first (tollgate read the first): a
/// proxy in front that reads the last would disagree on who calls (a live review).
#[test]
fn two_authorization_headers_are_refused() {
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    for (first, second) in [
        (bearer("analyst"), bearer("writer")),
        (bearer("analyst"), "Bearer analyst:wrong".to_string()),
        ("Bearer analyst:wrong".to_string(), bearer("analyst")),
    ] {
        let status = harness().runtime.block_on(async {
            reqwest::Client::new()
                .post(mcp_url())
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("mcp-protocol-version", "2025-06-18")
                .header("authorization", &first)
                .header("authorization", &second)
                .json(&init)
                .send()
                .await
                .expect("MCP endpoint answers")
                .status()
                .as_u16()
        });
        assert_eq!(status, 401);
    }
}

/// What is not one JSON-RPC message is answered with a JSON-RPC error (-32600), not the MCP
/// service's 415 and a line of text, and recorded; a body of too many JSON values is refused
/// before anything parses it (the MCP review's 4 MiB of `[],` held 260 MB once parsed and
/// stalled every door while it was parsed).
#[test]
fn bodies_that_are_not_one_json_rpc_message_get_a_json_rpc_error() {
    let many = format!(
        r#"{{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{{"name":"query","arguments":{{"sql":"select 1","x":[{}[]]}}}}}}"#,
        "[],".repeat(150_000)
    );
    let batch = r#"[{"jsonrpc":"2.0","id":6,"method":"ping"},{"jsonrpc":"2.0","id":7,"method":"tools/list"}]"#;
    // Valid JSON nested past the reader's depth was called "not valid JSON" (a review).
    let deep = format!(
        r#"{{"jsonrpc":"2.0","id":5,"method":"ping","params":{{"x":{}1{}}}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    for (body, why) in [
        (deep.as_str(), "more than 128 levels deep"),
        (batch, "batches are not supported"),
        ("[]", "batches are not supported"),
        (r#""x""#, "not a JSON-RPC message"),
        (r#"{"id":1,"method":"ping"}"#, "must be \"2.0\""),
        (
            r#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#,
            "must be a string or an integer",
        ),
        (many.as_str(), "more than 100000 JSON values"),
    ] {
        let (status, answer) = post_raw("analyst", body);
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["code"], -32600, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(why), "{message}");
    }
    let refused = audit_lines()
        .iter()
        .filter(|l| {
            l["protocol"] == "mcp"
                && l["agent"] == "analyst"
                && l["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("more than 100000 JSON values"))
        })
        .count();
    assert!(refused >= 1, "the refusal is recorded");
    // The session goes on.
    let (status, answer) = post_raw("analyst", r#"{"jsonrpc":"2.0","id":8,"method":"ping"}"#);
    assert_eq!((status, &answer["result"]), (200, &json!({})), "{answer}");
}

#[test]
fn every_agent_gets_its_own_tool_list_with_honest_hints() {
    let list = |agent: &str| rpc(agent, "tools/list", json!({}))["result"]["tools"].clone();
    let (analyst, writer, trusted) = (list("analyst"), list("writer"), list("trusted"));
    let names: Vec<&str> = analyst
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "list_upstreams",
            "list_tables",
            "describe_table",
            "query",
            "explain",
            "list_keys",
            "redis",
            "list_collections",
            "find",
            "aggregate"
        ]
    );
    let hints = |tools: &Value, name: &str| {
        let t = tools
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap()
            .clone();
        assert_eq!(t["inputSchema"]["type"], "object", "{t}");
        (
            t["annotations"]["readOnlyHint"].clone(),
            t["annotations"]["destructiveHint"].clone(),
        )
    };
    assert_eq!(hints(&analyst, "query"), (json!(true), json!(false)));
    assert_eq!(hints(&analyst, "redis"), (json!(true), json!(false)));
    assert_eq!(hints(&writer, "query"), (json!(false), json!(true)));
    assert_eq!(hints(&writer, "redis"), (json!(false), json!(true)));
    assert_eq!(hints(&trusted, "query"), (json!(false), json!(true)));
    assert_eq!(hints(&analyst, "list_tables"), (json!(true), json!(false)));
    assert_ne!(analyst, writer);
    let ups = ok("analyst", "list_upstreams", json!({}));
    let kinds: Vec<(String, String)> = ups["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["name"].as_str().unwrap().into(),
                u["kind"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("cache".into(), "redis".into()),
            ("mongo".into(), "mongodb".into()),
            ("shop".into(), "postgres".into())
        ]
    );
    assert!(ups["upstreams"][2]["description"]
        .as_str()
        .unwrap()
        .contains("customers"));
    // A tool the agent was not offered is not callable.
    let (_, body) = post(
        Some(&bearer("analyst")),
        json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "drop_everything", "arguments": {}}}),
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown tool"),
        "{body}"
    );
    // A megabyte of name is not echoed back (nor logged).
    let (_, body) = post(
        Some(&bearer("analyst")),
        json!({"jsonrpc": "2.0", "id": 10, "method": "tools/call", "params": {"name": "y".repeat(1 << 20), "arguments": {}}}),
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("unknown tool") && message.len() < 200,
        "{} bytes",
        message.len()
    );
}

#[test]
fn the_analyst_reads_masked_customers_and_secrets_are_refused_naming_the_rule() {
    let r = ok(
        "analyst",
        "query",
        json!({"sql": "SELECT id, email, phone, ssn FROM customers ORDER BY id LIMIT 3"}),
    );
    assert_eq!(r["decision"], "masked");
    assert_eq!(r["row_count"], 3);
    assert_eq!(r["content_trust"], "untrusted");
    assert_eq!(r["columns"][0]["name"], "id");
    for row in r["rows"].as_array().unwrap() {
        assert!(row[0].is_i64(), "integers stay numbers: {row}");
        assert!(row[1].as_str().unwrap().starts_with("***@"), "{row}");
        assert!(
            row[2].is_null() || row[2].as_str().unwrap().starts_with("***"),
            "{row}"
        );
        assert!(row[3].is_null() || row[3] == "REDACTED", "{row}");
    }
    let full = call(
        "analyst",
        "query",
        json!({"sql": "SELECT email FROM customers LIMIT 1"}),
    );
    let t = text(&full);
    let marker = t.find("<untrusted-data-").expect("data inside a boundary");
    assert!(t[marker..].contains("</untrusted-data-"), "{t}");

    let e = err(
        "analyst",
        "query",
        json!({"sql": "SELECT api_key FROM secrets"}),
    );
    assert_eq!(e["sqlstate"], "42501");
    let message = e["message"].as_str().unwrap();
    assert!(
        message.starts_with("tollgate: ") && message.contains("(rule: "),
        "{message}"
    );
    let with_params = ok(
        "analyst",
        "query",
        json!({"sql": "SELECT count(*) AS n FROM orders WHERE customer_id = $1 AND amount > $2", "params": [1, "0"]}),
    );
    assert_eq!(with_params["columns"][0]["name"], "n");

    let lines = audit_lines();
    let mine = |decision: &str, needle: &str| {
        lines.iter().any(|l| {
            l["protocol"] == "mcp"
                && l["agent"] == "analyst"
                && l["kind"] == "decision"
                && l["decision"] == decision
                && l["statement"].as_str().unwrap_or("").contains(needle)
        })
    };
    assert!(mine("masked", "FROM customers ORDER BY id LIMIT 3"));
    assert!(mine("blocked", "FROM secrets"));
    let (code, out, _) = run_bin(&["audit", "verify", harness().env.audit_log.to_str().unwrap()]);
    assert_eq!(code, 0, "the chain with MCP records verifies: {out}");
}

fn run_bin(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(tollgate_bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Statements agents have used to get past "read only" MCP servers; each is refused through the
/// query tool exactly as on the wire (same SQLSTATE, same message).
const ADVERSARIAL: &[&str] = &[
    "COMMIT; DELETE FROM orders",
    "ROLLBACK; DELETE FROM orders WHERE id = 1",
    "END; UPDATE orders SET amount = 0",
    "WITH gone AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM gone",
    "WITH x AS (UPDATE orders SET amount = 0 RETURNING id) SELECT * FROM x",
    "SELECT * FROM pg_read_file('/etc/passwd')",
    "SELECT * FROM pg_ls_dir('.')",
    "SELECT * FROM generate_series(1, 2), pg_read_binary_file('/etc/hostname')",
    "SELECT * FROM dblink('dbname=shop', 'DELETE FROM orders') AS t(x text)",
    "SELECT pg_terminate_backend(pg_backend_pid())",
    "EXPLAIN ANALYZE DELETE FROM orders",
    "EXPLAIN (ANALYZE, FORMAT JSON) UPDATE orders SET amount = 0",
    "SELECT 1; DROP TABLE orders",
    "SELECT id FROM orders; DELETE FROM orders",
    "SELECT * FROM U&\"\\0073ecrets\"",
    "SELECT * FROM public.\"secrets\"",
    "SET ROLE postgres",
    "SET SESSION AUTHORIZATION postgres",
    "SELECT set_config('role', 'postgres', false)",
    "COPY orders TO PROGRAM 'id'",
    "COPY (SELECT * FROM secrets) TO STDOUT",
    "DO $$ BEGIN DELETE FROM orders; END $$",
    "PREPARE p AS DELETE FROM orders",
    "CREATE TABLE mcp_was_here (x int)",
    "ALTER ROLE tollgate_shop PASSWORD 'x'",
    "SELECT * FROM pg_shadow",
    "DELETE FROM orders",
];

#[test]
fn the_adversarial_table_is_refused_through_the_query_tool_exactly_as_on_the_wire() {
    let orders_before = count_orders();
    let wire = harness().runtime.block_on(async {
        let c = support::connect("analyst").await;
        let mut out = Vec::new();
        for sql in ADVERSARIAL {
            let e = c
                .simple_query(sql)
                .await
                .expect_err(&format!("the wire refuses {sql}"));
            out.push((support::sqlstate(&e), support::db_message(&e)));
        }
        out
    });
    for (sql, (code, message)) in ADVERSARIAL.iter().zip(wire) {
        let e = err("analyst", "query", json!({"sql": sql}));
        assert_eq!(
            (
                e["sqlstate"].as_str().unwrap(),
                e["message"].as_str().unwrap()
            ),
            (code.as_str(), message.as_str()),
            "{sql}"
        );
        assert!(message.contains("(rule: "), "{sql}: {message}");
    }
    assert_eq!(
        count_orders(),
        orders_before,
        "nothing was deleted or changed"
    );
    let gone = harness().runtime.block_on(async {
        support::upstream()
            .await
            .query_opt("SELECT 1 FROM pg_class WHERE relname = 'mcp_was_here'", &[])
            .await
            .unwrap()
    });
    assert!(gone.is_none());
}

fn count_orders() -> i64 {
    harness().runtime.block_on(async {
        support::upstream()
            .await
            .query_one("SELECT count(*) FROM orders", &[])
            .await
            .unwrap()
            .get(0)
    })
}

#[test]
fn the_writer_inserts_and_its_rows_land_upstream() {
    let r = ok(
        "writer",
        "query",
        json!({"sql": "INSERT INTO orders (customer_id, amount) VALUES ($1, $2) RETURNING id", "params": [2, "12.50"]}),
    );
    assert_eq!(r["command"], "INSERT 0 1");
    let id = r["rows"][0][0].as_i64().unwrap();
    let amount: String = harness().runtime.block_on(async {
        support::upstream()
            .await
            .query_one("SELECT amount::text FROM orders WHERE id = $1", &[&id])
            .await
            .unwrap()
            .get(0)
    });
    assert_eq!(amount, "12.50");
    // The writer's customers stay masked; secrets stay out of reach.
    let c = ok(
        "writer",
        "query",
        json!({"sql": "SELECT email FROM customers LIMIT 1"}),
    );
    assert!(c["rows"][0][0].as_str().unwrap().starts_with("***@"));
    err("writer", "query", json!({"sql": "DELETE FROM customers"}));
}

#[test]
fn results_are_cut_at_max_rows_and_max_result_bytes_and_say_so() {
    let r = ok("analyst", "query", json!({"sql": "SELECT id FROM orders"}));
    assert_eq!(r["row_count"], 1000);
    assert_eq!(r["truncated"], true);
    assert_eq!(r["truncated_by"], "max_rows");
    assert_eq!(
        r["notice"],
        "tollgate: result truncated to 1000 rows (rule: analyst: limits)"
    );
    // The model may ask for fewer rows, never more.
    let few = ok(
        "analyst",
        "query",
        json!({"sql": "SELECT id FROM orders", "max_rows": 5}),
    );
    assert_eq!(
        (few["row_count"].clone(), few["truncated"].clone()),
        (json!(5), json!(true))
    );
    let more = ok(
        "analyst",
        "query",
        json!({"sql": "SELECT id FROM orders", "max_rows": 5000}),
    );
    assert_eq!(more["row_count"], 1000);
    // 500 rows of 2000 bytes: past the analyst's 256 KiB.
    let big = ok(
        "analyst",
        "query",
        json!({"sql": "SELECT id, repeat('x', 2000) AS pad FROM orders LIMIT 500"}),
    );
    assert_eq!(big["truncated"], true);
    assert_eq!(big["truncated_by"], "max_result_bytes");
    let n = big["row_count"].as_u64().unwrap();
    assert!(n > 100 && n < 140, "{n} rows of ~2 KB fit in 256 KiB");
    assert!(
        big["notice"]
            .as_str()
            .unwrap()
            .contains("(rule: analyst: limits)"),
        "{big}"
    );
    // Without a policy limit the built-in 1 MiB applies (writer).
    let w = ok(
        "writer",
        "query",
        json!({"sql": "SELECT repeat('y', 10000) FROM orders LIMIT 300"}),
    );
    assert_eq!(w["truncated_by"], "max_result_bytes");
    assert!(w["notice"]
        .as_str()
        .unwrap()
        .contains("builtin: mcp max_result_bytes"));
    // The connection the cut statement ran on is usable again.
    let after = ok("writer", "query", json!({"sql": "SELECT 1 AS one"}));
    assert_eq!(after["rows"], json!([[1]]));
}

#[test]
fn a_row_past_the_byte_cap_and_too_many_parameters_end_the_call_cleanly() {
    // A 64 MiB value over the analyst's 256 KiB: cut before it is read, as any byte cut.
    let big = ok(
        "analyst",
        "query",
        json!({"sql": "SELECT repeat('x', 64 << 20) AS big"}),
    );
    assert_eq!(
        (big["row_count"].clone(), big["truncated_by"].clone()),
        (json!(0), json!("max_result_bytes")),
        "{big}"
    );
    // Bind counts parameters in 16 bits: 70,000 would wrap; refused before anything is sent.
    let e = err(
        "analyst",
        "query",
        json!({"sql": "SELECT $1::text", "params": vec!["a"; 70_000]}),
    );
    assert!(
        e["message"].as_str().unwrap().contains("at most 32767"),
        "{e}"
    );
    assert_eq!(e["origin"], "tollgate");
    // The connection pool is untouched: the next call runs.
    let next = ok("analyst", "query", json!({"sql": "SELECT 1 AS one"}));
    assert_eq!(next["rows"], json!([[1]]));
}

#[test]
fn explain_is_a_dry_run_naming_the_rule_and_the_rewrite() {
    let e = ok(
        "analyst",
        "explain",
        json!({"sql": "SELECT * FROM secrets"}),
    );
    assert_eq!(e["decision"], "blocked");
    assert_eq!(e["refusal"]["sqlstate"], "42501");
    assert_eq!(e["rule"], e["refusal"]["rule"], "{e}");
    assert!(e["statements"][0]["relations"][0]["name"]
        .as_str()
        .unwrap()
        .contains("secrets"));
    let m = ok(
        "analyst",
        "explain",
        json!({"sql": "SELECT email FROM customers"}),
    );
    // In the audit record's words: masked, naming the rule (it said "allowed").
    assert_eq!(m["decision"], "masked", "{m}");
    assert!(m["rule"].as_str().is_some_and(|r| !r.is_empty()), "{m}");
    assert_eq!(m["refusal"], Value::Null, "{m}");
    assert!(m["rewritten"].as_str().unwrap().contains("'***@'"), "{m}");
    // The rewrite expands `*` into names from the catalog (whoever adds a column names it):
    // inside the untrusted-data boundary, with the statement, not in tollgate's own words.
    let r = call(
        "analyst",
        "explain",
        json!({"sql": "SELECT * FROM customers LIMIT 1"}),
    );
    let t = text(&r);
    let open = t.find("<untrusted-data-").expect("a boundary");
    assert!(
        t[open..].contains("ssn") && t[open..].contains("rewritten"),
        "{t}"
    );
    assert!(!t[..open].contains("customers"), "{t}");
    let before = count_orders();
    ok("writer", "explain", json!({"sql": "DELETE FROM orders"}));
    assert_eq!(count_orders(), before, "explain executes nothing");
}

/// One statement per call: a text holding several is refused before it is charged to the rate,
/// and explain says so (each was charged, then the server refused the text: a re-review).
#[test]
fn the_query_tool_runs_one_statement_per_call() {
    let sql = "SELECT 1; SELECT 2";
    let e = err("writer", "query", json!({ "sql": sql }));
    let message = e["message"].as_str().unwrap_or_default();
    assert!(message.contains("one statement per call"), "{e}");
    assert!(message.contains("builtin: one-statement"), "{e}");
    let x = ok("writer", "explain", json!({ "sql": sql }));
    assert_eq!(x["decision"], "blocked", "{x}");
    assert_eq!(x["rule"], "builtin: one-statement", "{x}");
    // A trailing semicolon is one statement.
    let one = ok("writer", "query", json!({"sql": "SELECT 3 AS three;"}));
    assert_eq!(one["rows"], json!([[3]]));
}

#[test]
fn schema_tools_show_only_what_the_agent_may_touch() {
    let t = ok("analyst", "list_tables", json!({}));
    let names: Vec<&str> = t["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["customers", "orders"], "secrets is invisible");
    let d = ok("analyst", "describe_table", json!({"table": "customers"}));
    let email = d["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "email")
        .unwrap();
    assert_eq!(
        (email["masked"].clone(), email["mask"].clone()),
        (json!(true), json!("email"))
    );
    let hidden = err("analyst", "describe_table", json!({"table": "secrets"}));
    let missing = err(
        "analyst",
        "describe_table",
        json!({"table": "no_such_table"}),
    );
    assert_eq!(
        hidden["message"].as_str().unwrap().replace("secrets", "X"),
        missing["message"]
            .as_str()
            .unwrap()
            .replace("no_such_table", "X"),
        "a forbidden table reads like a missing one"
    );
    let all = ok("trusted", "list_tables", json!({}));
    assert!(all["tables"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "secrets"));
}

#[test]
fn the_redis_tool_masks_refuses_and_scans_within_the_policy() {
    let r = ok("analyst", "redis", json!({"command": "HGETALL session:1"}));
    let reply = r["reply"].as_array().unwrap();
    let email = reply.iter().position(|v| v == "email").unwrap();
    assert!(
        reply[email + 1].as_str().unwrap().starts_with("***@"),
        "{r}"
    );
    let e = err("analyst", "redis", json!({"command": "GET admin:config"}));
    assert!(e["message"].as_str().unwrap().contains("(rule: "));
    let a = err("trusted", "redis", json!({"command": "AUTH default guess"}));
    assert!(a["message"]
        .as_str()
        .unwrap()
        .contains("builtin: mcp one-command calls"));
    err("analyst", "redis", json!({"command": "SET cache:1 x"}));
    let w = ok(
        "writer",
        "redis",
        json!({"command": "SET cache:mcp \"from mcp\""}),
    );
    assert_eq!(w["reply"], "OK");
    assert_eq!(
        ok("writer", "redis", json!({"command": "GET cache:mcp"}))["reply"],
        "from mcp"
    );
    let k = ok(
        "analyst",
        "list_keys",
        json!({"pattern": "session:*", "limit": 10}),
    );
    let keys = k["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 10);
    assert!(keys
        .iter()
        .all(|k| k.as_str().unwrap().starts_with("session:")));
    let e = err("analyst", "list_keys", json!({"pattern": "admin:*"}));
    assert!(e["message"].as_str().unwrap().contains("read_keys"), "{e}");
    // Redis filters with the last MATCH and copies into the last DB: every one is checked.
    let e = err(
        "analyst",
        "redis",
        json!({"command": "SCAN 0 MATCH cache:* MATCH admin:* COUNT 1000"}),
    );
    assert!(e["message"].as_str().unwrap().contains("read_keys"), "{e}");
    let e = err(
        "writer",
        "redis",
        json!({"command": "COPY cache:mcp cache:mcp2 DB 0 DB 6"}),
    );
    assert!(e["message"].as_str().unwrap().contains("database 6"), "{e}");
    let lines = audit_lines();
    assert!(lines.iter().any(|l| l["protocol"] == "mcp"
        && l["upstream"] == "cache"
        && l["decision"] == "masked"
        && l["statement"] == "HGETALL session:1"));
    // The pattern list_keys scanned with is the reach the policy checked: it is in the record.
    assert!(
        lines.iter().any(|l| l["protocol"] == "mcp"
            && l["agent"] == "analyst"
            && l["statement"] == "SCAN ? MATCH session:* COUNT 500"),
        "no SCAN record naming its pattern"
    );
}

/// Asserts that `needle` appears in the tool result's text, and only inside its one
/// untrusted-data boundary (the nonce marker's open and close lines).
fn only_inside_the_boundary(r: &Value, needle: &str) {
    let t = text(r);
    let open = t
        .find("<untrusted-data-")
        .unwrap_or_else(|| panic!("no untrusted-data boundary in {t:?}"));
    let marker = &t[open + 1..open + 1 + "untrusted-data-".len() + 16];
    let close = t
        .rfind(&format!("</{marker}>"))
        .expect("the boundary is closed");
    assert!(
        t[open..close].contains(needle),
        "{needle:?} not inside: {t}"
    );
    assert!(
        !t[..open].contains(needle) && !t[close..].contains(needle),
        "{needle:?} outside the boundary: {t}"
    );
    assert!(t[..open].contains("not instructions"), "{t}");
    assert_eq!(r["structuredContent"]["content_trust"], "untrusted", "{r}");
}

#[test]
fn upstream_error_text_reaches_the_model_only_inside_the_untrusted_boundary() {
    // A cast error quotes the stored value it failed on: a customer's name.
    let name: String = harness().runtime.block_on(async {
        support::upstream()
            .await
            .query_one("SELECT name FROM customers WHERE id = 1", &[])
            .await
            .unwrap()
            .get(0)
    });
    let r = call(
        "analyst",
        "query",
        json!({"sql": "SELECT name::int FROM customers WHERE id = 1"}),
    );
    assert_eq!(r["isError"], true, "{r}");
    only_inside_the_boundary(&r, &name);
    let e = &r["structuredContent"]["error"];
    assert_eq!(
        (e["sqlstate"].as_str(), e["origin"].as_str()),
        (Some("22P02"), Some("upstream")),
        "{r}"
    );
    assert!(e["message"].as_str().unwrap().contains(&name));
    assert!(text(&r).starts_with("ERROR 22P02: "), "{r}");
    // MongoDB: the conversion error quotes the document's value.
    let r = call(
        "analyst",
        "aggregate",
        json!({"database": "shop", "collection": "customers",
               "pipeline": [{"$match": {"_id": 1}}, {"$project": {"x": {"$toInt": "$name"}}}]}),
    );
    assert_eq!(r["isError"], true, "{r}");
    let errmsg = r["structuredContent"]["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    let quoted = errmsg.split('\'').nth(1).expect("the value is quoted");
    only_inside_the_boundary(&r, quoted);
    assert_eq!(r["structuredContent"]["error"]["origin"], "upstream");
    // Redis: the server's error line.
    let r = call("analyst", "redis", json!({"command": "HGETALL cache:1"}));
    assert_eq!(r["isError"], true, "{r}");
    only_inside_the_boundary(&r, "WRONGTYPE");
    // tollgate's own refusals stay plain, and say whose they are.
    let r = call("analyst", "query", json!({"sql": "SELECT * FROM secrets"}));
    assert!(!text(&r).contains("untrusted-data-"), "{r}");
    assert_eq!(r["structuredContent"]["error"]["origin"], "tollgate");
    assert!(r["structuredContent"].get("content_trust").is_none());
}

#[test]
fn catalog_names_reach_the_model_only_inside_the_untrusted_boundary() {
    let d = call("analyst", "describe_table", json!({"table": "customers"}));
    assert_eq!(d["isError"], false, "{d}");
    only_inside_the_boundary(&d, "\"email\"");
    let l = call("analyst", "list_tables", json!({}));
    assert_eq!(l["isError"], false, "{l}");
    only_inside_the_boundary(&l, "\"customers\"");
}

#[test]
fn the_stdio_bridge_speaks_to_the_gateway_over_https() {
    let env = &harness().env;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("analyst.token");
    std::fs::write(&token_file, format!("{}\n", env.mcp_token("analyst"))).unwrap();
    let mut child = Command::new(tollgate_bin())
        .args([
            "mcp-stdio",
            "--url",
            &env.mcp_tls_url(),
            "--token-file",
            token_file.to_str().unwrap(),
            "--ca-file",
            env.ca_file.to_str().unwrap(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut roundtrip = |stdin: &mut std::process::ChildStdin, msg: Value| -> Value {
        writeln!(stdin, "{msg}").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    };
    let init = roundtrip(
        &mut stdin,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}),
    );
    assert_eq!(init["result"]["serverInfo"]["name"], "tollgate", "{init}");
    writeln!(
        stdin,
        "{}",
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
    )
    .unwrap();
    let q = roundtrip(
        &mut stdin,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "query", "arguments": {"sql": "SELECT email FROM customers LIMIT 1"}}}),
    );
    assert_eq!(q["id"], 2, "{q}");
    assert!(q["result"]["structuredContent"]["rows"][0][0]
        .as_str()
        .unwrap()
        .starts_with("***@"));
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success());
    let mut err_text = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err_text).unwrap();
    assert!(!err_text.contains(env.token("analyst")), "{err_text}");
    let lines = audit_lines();
    assert!(lines.iter().any(|l| l["protocol"] == "mcp"
        && l["agent"] == "analyst"
        && l["statement"] == "SELECT email FROM customers LIMIT 1"));
}

/// How many statements holding `marker` run on the upstream now.
async fn running_upstream(up: &tokio_postgres::Client, marker: &str) -> i64 {
    up.query_one(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1 AND pid <> pg_backend_pid()",
        &[&format!("%{marker}%")],
    )
    .await
    .unwrap()
    .get::<_, i64>(0)
}

/// The outcome record of the statement whose text holds `marker` says its outcome is unknown
/// (the call ended before its reply).
fn assert_outcome_unknown(marker: &str) {
    let records = audit_lines();
    let decision = records
        .iter()
        .find(|r| r["statement"].as_str().is_some_and(|s| s.contains(marker)))
        .expect("the decision record");
    let outcome = records
        .iter()
        .find(|r| r["kind"] == "outcome" && r["ref_seq"] == decision["seq"])
        .expect("the outcome record");
    assert!(
        outcome["reason"]
            .as_str()
            .is_some_and(|s| s.starts_with("outcome unknown")),
        "{outcome}"
    );
}

async fn post_as(agent: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(mcp_url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .header("authorization", bearer(agent))
        .json(&body)
        .send()
        .await
        .expect("the MCP endpoint answers")
}

/// `notifications/cancelled` stops the call it names, as MCP's cancellation says (over
/// Streamable HTTP a client keeps its connection and sends the notification): the statement is
/// cancelled upstream and its outcome recorded as unknown. Only the agent's own call with that
/// id: another agent's notification naming the same id stops nothing. Before, the call ran to
/// its end and was recorded as a normal completion.
#[test]
fn notifications_cancelled_stops_the_agents_own_call() {
    harness().runtime.block_on(async {
        let marker = "cancelled-mcp-call";
        let sql = format!("SELECT pg_sleep(20) /* {marker} */");
        let call = tokio::spawn(async move {
            let started = std::time::Instant::now();
            let r = post_as(
                "trusted",
                json!({"jsonrpc": "2.0", "id": 7001, "method": "tools/call",
                    "params": {"name": "query", "arguments": {"sql": sql}}}),
            )
            .await;
            let body: Value = r.json().await.unwrap_or(Value::Null);
            (started.elapsed(), body)
        });
        let up = support::upstream().await;
        let running = || running_upstream(&up, marker);
        let started = std::time::Instant::now();
        while running().await == 0 {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "never ran"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": 7001, "reason": "test"}});
        // Another agent naming the same id: nothing stops.
        assert_eq!(post_as("writer", cancel.clone()).await.status(), 202);
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        assert_eq!(
            running().await,
            1,
            "another agent's cancel stopped the call"
        );
        assert!(!call.is_finished());
        // The agent's own.
        assert_eq!(post_as("trusted", cancel).await.status(), 202);
        let (took, body) = tokio::time::timeout(std::time::Duration::from_secs(10), call)
            .await
            .expect("the cancelled call is answered")
            .unwrap();
        assert!(took < std::time::Duration::from_secs(10), "{took:?}");
        assert!(body["result"].is_null(), "answered as if it ran: {body}");
        let started = std::time::Instant::now();
        while running().await > 0 {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "the cancelled statement still runs"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_outcome_unknown(marker);
    });
}

/// A client that goes away in the middle of a call abandons it: its statement is cancelled
/// upstream and its outcome recorded as unknown, as on the wire (before, it ran to its end for
/// nobody and was recorded as a normal completion).
#[test]
fn a_call_abandoned_by_its_client_is_cancelled_upstream() {
    harness().runtime.block_on(async {
        let marker = "abandoned-mcp-call";
        let sql = format!("SELECT pg_sleep(30) /* {marker} */");
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "query", "arguments": {"sql": sql}}});
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(1))
            .build()
            .unwrap();
        let gone = client
            .post(mcp_url())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .header("authorization", bearer("writer"))
            .json(&body)
            .send()
            .await;
        assert!(gone.is_err(), "the client gave up after 1 s");
        drop(client);
        let up = support::upstream().await;
        let running = || running_upstream(&up, marker);
        let started = std::time::Instant::now();
        while running().await > 0 {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(15),
                "the abandoned statement still runs"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_outcome_unknown(marker);
    });
}
