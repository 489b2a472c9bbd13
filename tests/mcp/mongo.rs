//! The MongoDB tools over MCP (`list_collections`, `find`, `aggregate`) against the demo's
//! MongoDB-wire upstream: listed read-only, masked documents, refusals in the wire's very words
//! (the wire's adversarial table, where the tools can express it), key order kept, no writes,
//! row and byte caps, and audit records with protocol `mcp`.

use bson::{doc, Bson, Document};
use futures_util::TryStreamExt;
use serde_json::{json, Value};

use super::{audit_lines, err, ok, post_raw, rpc, run_bin, text};
use crate::support::harness;
use crate::support::mongo::{adversarial, RawMongo};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    harness().runtime.block_on(f)
}

/// The upstream MongoDB-wire server itself (no gateway), for comparisons.
async fn upstream() -> mongodb::Client {
    let mut opts = mongodb::options::ClientOptions::parse(&harness().env.upstream_mongo_url)
        .await
        .unwrap();
    opts.server_selection_timeout = Some(std::time::Duration::from_secs(15));
    mongodb::Client::with_options(opts).unwrap()
}

/// What the wire answers `agent` for `cmd`.
fn wire(agent: &str, cmd: Document) -> Document {
    let env = &harness().env;
    block_on(async {
        let mut s = RawMongo::login(env.mongo_port, agent, env.token(agent)).await;
        s.command(cmd).await
    })
}

fn ids(docs: &Value) -> Vec<i64> {
    docs.as_array()
        .unwrap()
        .iter()
        .map(|d| d["_id"].as_i64().unwrap())
        .collect()
}

#[test]
fn the_mongo_tools_are_listed_read_only_for_every_agent_with_mongo_rules() {
    for agent in ["analyst", "writer", "trusted"] {
        let tools = rpc(agent, "tools/list", json!({}))["result"]["tools"].clone();
        let names: Vec<&str> = tools
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert!(
            names.ends_with(&["list_collections", "find", "aggregate"]),
            "{agent}: {names:?}"
        );
        for t in tools.as_array().unwrap() {
            if ["list_collections", "find", "aggregate"].contains(&t["name"].as_str().unwrap()) {
                assert_eq!(
                    (
                        t["annotations"]["readOnlyHint"].clone(),
                        t["annotations"]["destructiveHint"].clone()
                    ),
                    (json!(true), json!(false)),
                    "{agent}: {t}"
                );
            }
        }
    }
    let ups = ok("analyst", "list_upstreams", json!({}));
    let mongo = ups["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["kind"] == "mongodb")
        .unwrap()
        .clone();
    assert_eq!(
        mongo["tools"],
        json!(["list_collections", "find", "aggregate"])
    );
}

#[test]
fn list_collections_shows_only_what_the_agent_may_read_with_masks_marked() {
    let l = ok("analyst", "list_collections", json!({"database": "shop"}));
    let names: Vec<&str> = l["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["customers", "orders"], "secrets is invisible: {l}");
    assert_eq!(l["content_trust"], "untrusted", "field names are data");
    let email = l["collections"][0]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "email")
        .unwrap()
        .clone();
    assert_eq!(
        (email["masked"].clone(), email["mask"].clone()),
        (json!(true), json!("email"))
    );
    assert!(l["collections"][0]["rules"]
        .as_array()
        .unwrap()
        .contains(&json!("analyst: collection shop.customers")));
    let all = ok("trusted", "list_collections", json!({}));
    assert!(all["collections"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "secrets"));
}

#[test]
fn the_analyst_finds_masked_customers_in_the_order_it_asked_for() {
    let r = ok(
        "analyst",
        "find",
        json!({"database": "shop", "collection": "customers", "filter": {"_id": {"$lte": 3}}, "sort": {"_id": 1}}),
    );
    assert_eq!(r["decision"], "masked");
    assert_eq!(r["count"], 3);
    assert_eq!(r["truncated"], false);
    assert_eq!(r["content_trust"], "untrusted");
    assert_eq!(ids(&r["documents"]), [1, 2, 3]);
    for d in r["documents"].as_array().unwrap() {
        assert!(d["email"].as_str().unwrap().starts_with("***@"), "{d}");
        assert_eq!(d["ssn"], "REDACTED", "{d}");
        assert!(d["name"].as_str().is_some_and(|n| !n.is_empty()), "{d}");
    }
    let full = super::call(
        "analyst",
        "find",
        json!({"database": "shop", "collection": "customers", "limit": 1}),
    );
    let t = text(&full);
    let marker = t.find("<untrusted-data-").expect("data inside a boundary");
    assert!(t[marker..].contains("</untrusted-data-"), "{t}");

    // A two-key sort, sent as JSON text: the keys must reach the server in the order written
    // (sorted by name, `_id` would come first and the order would differ).
    let body = r#"{"jsonrpc":"2.0","id":41,"method":"tools/call","params":{"name":"find","arguments":{
        "database":"shop","collection":"customers","projection":{"region":1},
        "sort":{"region":1,"_id":-1},"limit":40}}}"#;
    let (status, reply) = post_raw("analyst", body);
    assert_eq!(status, 200, "{reply}");
    let got = ids(&reply["result"]["structuredContent"]["documents"]);
    let upstream_ids = |sort: Document| -> Vec<i64> {
        block_on(async {
            let docs: Vec<Document> = upstream()
                .await
                .database("shop")
                .collection::<Document>("customers")
                .find(doc! {})
                .sort(sort)
                .limit(40)
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            docs.iter().map(|d| d.get_i64("_id").unwrap()).collect()
        })
    };
    assert_eq!(got, upstream_ids(doc! { "region": 1, "_id": -1 }));
    assert_ne!(got, upstream_ids(doc! { "_id": -1, "region": 1 }));

    // Extended JSON both ways: a $date in the filter, dates and longs back as relaxed wrappers.
    let o = ok(
        "analyst",
        "find",
        json!({"database": "shop", "collection": "orders",
               "filter": {"_id": {"$numberLong": "5"}, "created_at": {"$gte": {"$date": "1970-01-01T00:00:00Z"}}}}),
    );
    assert_eq!(o["count"], 1, "{o}");
    assert!(o["documents"][0]["created_at"]["$date"].is_string(), "{o}");
    let dup = post_raw(
        "analyst",
        r#"{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"find","arguments":{
            "database":"shop","collection":"customers","filter":{"_id":1,"_id":2}}}}"#,
    )
    .1;
    // Refused with the request (any object of it naming a key twice), before the tool.
    assert_eq!(dup["error"]["code"], -32600, "{dup}");
    assert!(
        dup["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("names a key twice")),
        "{dup}"
    );
}

#[test]
fn secrets_are_a_tool_error_in_the_wires_words() {
    let on_wire = wire("analyst", doc! { "find": "secrets", "$db": "shop" });
    let e = err(
        "analyst",
        "find",
        json!({"database": "shop", "collection": "secrets"}),
    );
    assert_eq!(e["message"], on_wire.get_str("errmsg").unwrap(), "{e}");
    assert_eq!(e["code"], on_wire.get_i32("code").unwrap());
    assert_eq!(e["codeName"], "Unauthorized");
    assert_eq!(e["rule"], "default-deny");
    assert_eq!(e["hint"], on_wire.get_str("tollgateHint").unwrap());
    assert!(e["hint"].as_str().unwrap().contains("shop.orders (find"));
}

/// A command of the wire's adversarial table as a tool call, if the tools can express it.
fn as_tool_call(cmd: &Document) -> Option<(&'static str, Value)> {
    let db = cmd.get_str("$db").ok()?;
    let name = cmd.keys().next()?.as_str();
    let coll = cmd.get_str(name).ok()?;
    let mut args = json!({"database": db, "collection": coll});
    let (tool, fields): (&str, &[&str]) = match name {
        "find" => ("find", &["filter", "sort", "projection"]),
        "aggregate" => ("aggregate", &["pipeline", "cursor"]),
        _ => return None,
    };
    for (k, v) in cmd {
        match k.as_str() {
            "$db" => {}
            "cursor" => {}
            _ if k == name => {}
            _ if fields.contains(&k.as_str()) => {
                args[k.as_str()] = v.clone().into_relaxed_extjson();
            }
            _ => return None,
        }
    }
    Some((tool, args))
}

#[test]
fn the_adversarial_table_is_refused_through_the_tools_exactly_as_on_the_wire() {
    let env = &harness().env;
    let cases: Vec<_> = adversarial()
        .into_iter()
        .filter_map(|(name, cmd, rule)| as_tool_call(&cmd).map(|t| (name, cmd, rule, t)))
        .collect();
    let expressed: Vec<&str> = cases.iter().map(|c| c.0).collect();
    for must in [
        "secrets",
        "lookup secrets",
        "unionWith",
        "out",
        "merge",
        "where",
        "function",
        "regex on masked",
        "getField",
        "objectToArray ROOT",
    ] {
        assert!(expressed.contains(&must), "{must} is not in {expressed:?}");
    }
    let on_wire: Vec<Document> = block_on(async {
        let mut s = RawMongo::login(env.mongo_port, "analyst", env.token("analyst")).await;
        let mut out = Vec::new();
        for (_, cmd, _, _) in &cases {
            out.push(s.command(cmd.clone()).await);
        }
        out
    });
    for ((name, _, rule, (tool, args)), w) in cases.iter().zip(on_wire) {
        let e = err("analyst", tool, args.clone());
        assert_eq!(
            e["message"].as_str().unwrap(),
            w.get_str("errmsg").unwrap(),
            "{name}"
        );
        assert_eq!(e["code"], w.get_i32("code").unwrap(), "{name}");
        assert_eq!(e["rule"], *rule, "{name}");
    }
}

#[test]
fn nothing_writes_through_find_or_aggregate() {
    let count = || {
        block_on(async {
            upstream()
                .await
                .database("shop")
                .collection::<Document>("orders")
                .count_documents(doc! {})
                .await
                .unwrap()
        })
    };
    let before = count();
    // The writer may write orders on the wire; the tools still only read.
    let e = err(
        "writer",
        "aggregate",
        json!({"database": "shop", "collection": "orders",
               "pipeline": [{"$match": {"_id": {"$lt": 0}}}, {"$merge": {"into": "orders"}}]}),
    );
    assert_eq!(e["rule"], "builtin: mcp read-only tools", "{e}");
    let e = err(
        "trusted",
        "aggregate",
        json!({"database": "shop", "collection": "orders",
               "pipeline": [{"$match": {"_id": {"$lt": 3}}}, {"$out": "mcp_out_copy"}]}),
    );
    assert_eq!(e["rule"], "builtin: mcp read-only tools", "{e}");
    assert_eq!(count(), before);
    let names: Vec<String> = block_on(async {
        upstream()
            .await
            .database("shop")
            .list_collection_names()
            .await
            .unwrap()
    });
    assert!(!names.contains(&"mcp_out_copy".to_string()), "{names:?}");
    // The writer reads orders, and its tools have no way to send anything else.
    let r = ok(
        "writer",
        "find",
        json!({"database": "shop", "collection": "orders", "filter": {"_id": 7}}),
    );
    assert_eq!(ids(&r["documents"]), [7]);
    let e = err(
        "writer",
        "find",
        json!({"database": "shop", "collection": "orders", "documents": [{"_id": -1}]}),
    );
    assert!(
        e["message"].as_str().unwrap().contains("unknown field"),
        "{e}"
    );
}

#[test]
fn results_are_cut_at_max_rows_and_max_result_bytes_and_say_so() {
    let r = ok(
        "analyst",
        "find",
        json!({"database": "shop", "collection": "orders", "projection": {"_id": 1}}),
    );
    assert_eq!(r["count"], 1000);
    assert_eq!(r["truncated"], true);
    assert_eq!(r["truncated_by"], "max_rows");
    assert_eq!(
        r["notice"],
        "tollgate: result truncated at 1000 documents (rule: analyst: limits)"
    );
    let few = ok(
        "analyst",
        "aggregate",
        json!({"database": "shop", "collection": "orders", "pipeline": [{"$sort": {"_id": 1}}], "max_rows": 7}),
    );
    assert_eq!(ids(&few["documents"]), [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(
        (few["truncated"].clone(), few["notice"].clone()),
        (
            json!(true),
            json!("result truncated to 7 documents (max_rows of this call)")
        )
    );
    let exact = ok(
        "analyst",
        "find",
        json!({"database": "shop", "collection": "orders", "limit": 7, "max_rows": 7}),
    );
    assert_eq!(
        (exact["count"].clone(), exact["truncated"].clone()),
        (json!(7), json!(false))
    );
    // ~2 KB a document: past the analyst's 256 KiB well before 1000 documents.
    let pad = "x".repeat(2000);
    let big = ok(
        "analyst",
        "aggregate",
        json!({"database": "shop", "collection": "orders",
               "pipeline": [{"$project": {"_id": 1, "pad": {"$literal": pad}}}]}),
    );
    assert_eq!(big["truncated_by"], "max_result_bytes", "{}", big["notice"]);
    let n = big["count"].as_u64().unwrap();
    assert!(n > 100 && n < 140, "{n} documents of ~2 KB fit in 256 KiB");
    assert!(
        big["notice"]
            .as_str()
            .unwrap()
            .contains("(rule: analyst: limits)"),
        "{big}"
    );
    // Without a policy limit the built-in 1 MiB applies (writer: no max_rows either).
    let w = ok(
        "writer",
        "find",
        json!({"database": "shop", "collection": "orders"}),
    );
    assert_eq!(w["truncated_by"], "max_result_bytes");
    assert!(w["notice"]
        .as_str()
        .unwrap()
        .contains("builtin: mcp max_result_bytes"));
    // Every cut above killed its upstream cursor. Other tests' cursors come and go; one left
    // behind would stay open for the server's 10-minute idle timeout.
    let open = || {
        block_on(async {
            let s = upstream()
                .await
                .database("admin")
                .run_command(doc! { "serverStatus": 1 })
                .await
                .unwrap();
            s.get_document("metrics")
                .and_then(|m| m.get_document("cursor"))
                .and_then(|c| c.get_document("open"))
                .map(|o| o.get("total").cloned())
                .unwrap_or_else(|e| panic!("serverStatus without metrics.cursor.open: {e} {s:?}"))
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let n = open();
        if matches!(n, Some(Bson::Int32(0)) | Some(Bson::Int64(0))) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "upstream cursors left open: {n:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn mongo_tool_calls_are_audited_with_protocol_mcp_and_verify() {
    ok(
        "analyst",
        "find",
        json!({"database": "shop", "collection": "customers", "filter": {"_id": {"$lte": 2}}}),
    );
    err(
        "analyst",
        "aggregate",
        json!({"database": "shop", "collection": "secrets", "pipeline": []}),
    );
    let lines = audit_lines();
    let decision = lines
        .iter()
        .find(|l| {
            l["protocol"] == "mcp"
                && l["upstream"] == "mongo"
                && l["kind"] == "decision"
                && l["decision"] == "masked"
                && l["statement"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("find shop.customers {filter: {_id: {$lte: ?}}"))
        })
        .expect("the find's decision record, values redacted");
    assert_eq!(decision["agent"], "analyst");
    let outcome = lines
        .iter()
        .find(|l| l["kind"] == "outcome" && l["ref_seq"] == decision["seq"])
        .unwrap_or_else(|| panic!("an outcome for {decision}"));
    assert_eq!(outcome["rows"], 2, "{outcome}");
    assert!(lines.iter().any(|l| l["protocol"] == "mcp"
        && l["decision"] == "blocked"
        && l["rule"] == "default-deny"
        && l["statement"]
            .as_str()
            .is_some_and(|s| s.starts_with("aggregate shop.secrets"))));
    let (code, out, _) = run_bin(&["audit", "verify", harness().env.audit_log.to_str().unwrap()]);
    assert_eq!(
        code, 0,
        "the chain with MCP MongoDB records verifies: {out}"
    );
}
