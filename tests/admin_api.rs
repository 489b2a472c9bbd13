//! The admin HTTP API against the harness's demo: every endpoint with no token, a bad token, a
//! viewer and an admin token; connectors and their test probe (live and dead upstreams); the
//! schema an agent may see; agents, audit, stats, reload, health, readiness, OpenAPI.

mod support;

use serde_json::{json, Value};
use support::{admin, admin_request, harness, AdminAs};
use tollgate::admin::ROUTES;

/// A concrete path for a route template.
fn concrete(path: &str) -> String {
    if path.starts_with("/api/v1/agents/") {
        path.replace("{id}", "analyst")
    } else {
        path.replace("{id}", "shop")
    }
}

fn open_route(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/api/v1/openapi.json")
}

#[test]
fn every_endpoint_with_no_bad_viewer_and_admin_tokens() {
    harness().runtime.block_on(async {
        for (method, path) in ROUTES {
            let p = concrete(path);
            for who in [
                AdminAs::Nobody,
                AdminAs::BadToken,
                AdminAs::Viewer,
                AdminAs::Admin,
            ] {
                let (status, body) = admin(method, &p, who).await;
                let expected = match (open_route(path), who, *method) {
                    (true, _, _) => 200,
                    (false, AdminAs::Nobody | AdminAs::BadToken, _) => 401,
                    (false, AdminAs::Viewer, "post") => 403,
                    _ => 200,
                };
                assert_eq!(status, expected, "{method} {p} as {who:?}: {body}");
                if status >= 400 {
                    assert!(
                        body["error"]["code"].is_string(),
                        "JSON error for {method} {p}: {body}"
                    );
                    assert!(body["error"]["message"].is_string(), "{body}");
                }
            }
        }
    });
}

#[test]
fn openapi_document_describes_every_routed_endpoint() {
    harness().runtime.block_on(async {
        let (status, doc) = admin("get", "/api/v1/openapi.json", AdminAs::Nobody).await;
        assert_eq!(status, 200);
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
        for (method, path) in ROUTES {
            assert!(
                doc["paths"][path][method].is_object(),
                "{method} {path} missing from the document"
            );
        }
        // And nothing routed is missing from ROUTES: a path outside it is a JSON 404.
        let (status, body) = admin("get", "/api/v1/nope", AdminAs::Admin).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["error"]["code"], "not_found");
        let (status, body) = admin("post", "/api/v1/agents", AdminAs::Admin).await;
        assert_eq!(status, 405, "{body}");
        assert_eq!(body["error"]["code"], "method_not_allowed");
    });
}

#[test]
fn connectors_are_listed_filtered_and_shown_without_secrets() {
    harness().runtime.block_on(async {
        let (_, types) = admin("get", "/api/v1/connectors/types", AdminAs::Viewer).await;
        let names: Vec<&str> = types
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["type"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["postgres", "redis", "mongodb"]);
        let (_, all) = admin("get", "/api/v1/connectors", AdminAs::Viewer).await;
        let ids: Vec<&str> = all
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["cache", "mongo", "shop"]);
        let (_, m) = admin(
            "get",
            "/api/v1/connectors?connector_type=mongodb",
            AdminAs::Viewer,
        )
        .await;
        assert_eq!(m.as_array().unwrap().len(), 1);
        assert_eq!(m[0]["password"], "vault:mongo_password");
        let (_, pg) = admin(
            "get",
            "/api/v1/connectors?connector_type=postgres",
            AdminAs::Viewer,
        )
        .await;
        assert_eq!(pg.as_array().unwrap().len(), 1);
        assert_eq!(pg[0]["id"], "shop");
        assert_eq!(pg[0]["password"], "vault:shop_password");
        let (status, _) = admin(
            "get",
            "/api/v1/connectors?connector_type=mongo",
            AdminAs::Viewer,
        )
        .await;
        assert_eq!(status, 400);
        let (status, one) = admin("get", "/api/v1/connectors/cache", AdminAs::Viewer).await;
        assert_eq!(status, 200);
        assert_eq!(one["type"], "redis");
        let (status, body) = admin("get", "/api/v1/connectors/nope", AdminAs::Viewer).await;
        assert_eq!((status, &body["error"]["code"]), (404, &json!("not_found")));
    });
}

#[test]
fn test_endpoint_against_live_upstreams_records_the_result() {
    harness().runtime.block_on(async {
        for id in ["shop", "cache", "mongo"] {
            let (status, r) = admin(
                "post",
                &format!("/api/v1/connectors/{id}/test"),
                AdminAs::Admin,
            )
            .await;
            assert_eq!(status, 200, "{r}");
            assert_eq!(r["success"], true, "{id}: {r}");
            assert!(r["latency_ms"].is_u64(), "{r}");
            let version = r["server_version"].as_str().unwrap();
            assert!(
                version.chars().next().unwrap().is_ascii_digit(),
                "{version}"
            );
            let (_, c) = admin("get", &format!("/api/v1/connectors/{id}"), AdminAs::Viewer).await;
            assert_eq!(c["status"], "ok", "{c}");
            assert_eq!(c["last_test"]["success"], true, "{c}");
        }
        let (status, _) = admin("post", "/api/v1/connectors/nope/test", AdminAs::Admin).await;
        assert_eq!(status, 404);
    });
}

/// A second gateway in this process from a copy of the demo's files, with `shop` pointing at a
/// port nobody listens on.
async fn gateway_with_dead_upstream() -> (tollgate::gateway::Running, tempfile::TempDir) {
    second_gateway(true).await
}

async fn second_gateway(dead_shop: bool) -> (tollgate::gateway::Running, tempfile::TempDir) {
    let src = &harness().env.dir;
    let dst = support::copy_demo_dir();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = std::fs::read_to_string(src.join("tollgate.toml")).unwrap();
    let shop_port = text
        .split("[upstream.shop]")
        .nth(1)
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("port = ")))
        .unwrap()
        .to_string();
    let text = if dead_shop {
        text.replacen(&format!("port = {shop_port}"), &format!("port = {dead}"), 1)
    } else {
        text
    };
    std::fs::write(dst.path().join("tollgate.toml"), text).unwrap();
    let config = tollgate::config::Config::load(&dst.path().join("tollgate.toml")).unwrap();
    let running = tollgate::gateway::start(config).await.unwrap();
    (running, dst)
}

#[test]
fn test_endpoint_and_readiness_against_a_dead_upstream() {
    harness().runtime.block_on(async {
        let (running, _dir) = gateway_with_dead_upstream().await;
        let base = format!("http://{}", running.admin_addr.unwrap());
        let (status, r) = admin_request(
            &base,
            "post",
            "/api/v1/connectors/shop/test",
            AdminAs::Admin,
        )
        .await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["success"], false, "{r}");
        assert!(r["server_version"].is_null(), "{r}");
        let message = r["message"].as_str().unwrap();
        assert!(message.contains("cannot reach"), "{message}");
        for secret in secrets() {
            assert!(!r.to_string().contains(&secret), "a secret leaked into {r}");
        }
        let (_, c) = admin_request(&base, "get", "/api/v1/connectors/shop", AdminAs::Viewer).await;
        assert_eq!(c["status"], "failing", "{c}");
        let (status, ready) = admin_request(&base, "get", "/readyz", AdminAs::Nobody).await;
        assert_eq!(status, 503, "{ready}");
        assert_eq!(ready["connectors"]["shop"]["ready"], false, "{ready}");
        assert_eq!(ready["connectors"]["cache"]["ready"], true, "{ready}");
        let (status, health) = admin_request(&base, "get", "/healthz", AdminAs::Nobody).await;
        assert_eq!((status, &health["status"]), (200, &json!("ok")));
    });
}

#[test]
fn reload_picks_up_new_vaulted_credentials() {
    harness().runtime.block_on(async {
        let (running, dir) = second_gateway(false).await;
        let base = format!("http://{}", running.admin_addr.unwrap());
        let test = || {
            admin_request(
                &base,
                "post",
                "/api/v1/connectors/shop/test",
                AdminAs::Admin,
            )
        };
        assert_eq!(test().await.1["success"], true);
        let vault_path = dir.path().join("vault.json");
        let key =
            || tollgate::vault::MasterKey::load(Some(&dir.path().join("master.key"))).unwrap();
        let good = tollgate::vault::Vault::open(&vault_path, key())
            .unwrap()
            .get("shop_password")
            .unwrap()
            .expose()
            .to_string();
        let set = |value: &str| {
            let mut v = tollgate::vault::Vault::open(&vault_path, key()).unwrap();
            v.set("shop_password", value).unwrap();
        };
        set("not-the-password");
        let (status, r) = admin_request(&base, "post", "/api/v1/reload", AdminAs::Admin).await;
        assert_eq!(status, 200, "{r}");
        let (_, r) = test().await;
        assert_eq!(r["success"], false, "{r}");
        assert!(
            r["message"].as_str().unwrap().contains("credentials"),
            "{r}"
        );
        assert!(!r.to_string().contains("not-the-password"));
        set(&good);
        admin_request(&base, "post", "/api/v1/reload", AdminAs::Admin).await;
        assert_eq!(test().await.1["success"], true);
    });
}

#[test]
fn readiness_when_every_upstream_answers() {
    harness().runtime.block_on(async {
        let (status, ready) = admin("get", "/readyz", AdminAs::Nobody).await;
        assert_eq!(status, 200, "{ready}");
        assert_eq!(ready["ready"], true);
    });
}

/// Schema refreshes sent at once share catalog reads: each read logs in to the upstream, and 220
/// concurrent viewer refreshes once took `shop` from 5 server connections to 112.
#[test]
fn concurrent_schema_refreshes_share_their_catalog_reads() {
    harness().runtime.block_on(async {
        let up = support::upstream().await;
        let sessions = || async {
            up.query_one(
                "SELECT sessions FROM pg_stat_database WHERE datname = 'shop'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        };
        let before = sessions().await;
        let asks = (0..30).map(|_| {
            admin(
                "get",
                "/api/v1/connectors/shop/schema?refresh=true",
                AdminAs::Viewer,
            )
        });
        for (status, body) in futures_util::future::join_all(asks).await {
            assert_eq!(status, 200, "{body}");
            assert!(body["tables"].as_array().is_some_and(|t| !t.is_empty()));
        }
        let opened = sessions().await - before;
        // A handful of reads (plus what other tests of this binary open meanwhile), not 30.
        assert!(opened <= 10, "{opened} upstream sessions for 30 refreshes");

        // MongoDB samples likewise: requests that waited share the sample taken meanwhile
        // (twenty once took one each in turn, holding every schema read up for 13 s).
        let asks =
            (0..12).map(|_| admin("get", "/api/v1/connectors/mongo/schema", AdminAs::Viewer));
        let mut reads = std::collections::HashSet::new();
        for (status, body) in futures_util::future::join_all(asks).await {
            assert_eq!(status, 200, "{body}");
            reads.insert(body["loaded_at"].as_str().unwrap().to_string());
        }
        assert!(reads.len() <= 3, "{} samples for 12 requests", reads.len());
    });
}

#[test]
fn schema_for_the_analyst_shows_only_its_tables_with_pii_masked() {
    harness().runtime.block_on(async {
        let (status, s) = admin(
            "get",
            "/api/v1/connectors/shop/schema?agent=analyst&refresh=true",
            AdminAs::Viewer,
        )
        .await;
        assert_eq!(status, 200, "{s}");
        let tables: Vec<&str> = s["tables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(tables, ["customers", "orders"], "{s}");
        let customers = &s["tables"][0];
        assert_eq!(customers["operations"], json!(["select"]));
        let masked: Vec<&str> = customers["columns"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["masked"] == true)
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(masked, ["email", "phone", "ssn"], "{customers}");
        let orders_masked = s["tables"][1]["columns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["masked"] == true);
        assert!(!orders_masked);
        assert!(!s.to_string().contains("secrets"), "{s}");

        // Without an agent: every table of the catalog.
        let (_, all) = admin("get", "/api/v1/connectors/shop/schema", AdminAs::Viewer).await;
        let names: Vec<&str> = all["tables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"secrets"), "{names:?}");
        // The writer may also write orders.
        let (_, w) = admin(
            "get",
            "/api/v1/connectors/shop/schema?agent=writer",
            AdminAs::Viewer,
        )
        .await;
        let orders = w["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "orders")
            .unwrap();
        assert_eq!(
            orders["operations"],
            json!(["select", "insert", "update", "delete"])
        );

        let (status, _) = admin(
            "get",
            "/api/v1/connectors/shop/schema?agent=ghost",
            AdminAs::Viewer,
        )
        .await;
        assert_eq!(status, 404);
        let (status, _) = admin("get", "/api/v1/connectors/cache/schema", AdminAs::Viewer).await;
        assert_eq!(status, 400);
    });
}

#[test]
fn mongodb_schema_shows_collections_and_sampled_fields_with_masks_marked() {
    harness().runtime.block_on(async {
        let (status, body) = admin(
            "get",
            "/api/v1/connectors/mongo/schema?agent=analyst",
            AdminAs::Viewer,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let colls = body["collections"].as_array().unwrap();
        let names: Vec<&str> = colls.iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            ["customers", "orders"],
            "secrets is invisible to the analyst"
        );
        let customers = &colls[0];
        assert_eq!(
            customers["operations"],
            json!(["find", "aggregate", "count", "distinct"])
        );
        let field = |name: &str| {
            customers["fields"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["name"] == name)
                .cloned()
                .unwrap_or_else(|| panic!("field {name} in {customers}"))
        };
        assert_eq!(field("email")["masked"], true);
        assert_eq!(field("email")["mask"], "email");
        assert_eq!(field("ssn")["mask"], "redact");
        assert_eq!(field("region")["masked"], false);
        let (_, all) = admin("get", "/api/v1/connectors/mongo/schema", AdminAs::Viewer).await;
        let names: Vec<&str> = all["collections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"secrets"), "{names:?}");
    });
}

#[test]
fn agents_and_their_effective_permissions_never_show_tokens() {
    harness().runtime.block_on(async {
        let (_, agents) = admin("get", "/api/v1/agents", AdminAs::Viewer).await;
        let names: Vec<&str> = agents
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["analyst", "trusted", "writer"]);
        let (status, a) = admin("get", "/api/v1/agents/analyst/connectors", AdminAs::Viewer).await;
        assert_eq!(status, 200, "{a}");
        assert_eq!(a["limits"]["max_rows"], 1000, "{a}");
        let shop = a["connectors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["connector"] == "shop")
            .unwrap();
        assert_eq!(shop["profile"], "restricted");
        let customers = shop["postgres"]["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["pattern"] == "public.customers")
            .unwrap();
        assert_eq!(customers["allow"], json!(["select"]));
        assert_eq!(customers["masks"]["email"], "email");
        let (_, t) = admin("get", "/api/v1/agents/trusted/connectors", AdminAs::Viewer).await;
        assert!(
            t["connectors"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["profile"] == "passthrough"),
            "{t}"
        );
        let (status, _) = admin("get", "/api/v1/agents/ghost/connectors", AdminAs::Viewer).await;
        assert_eq!(status, 404);
        let text = format!("{agents}{a}{t}");
        assert!(!text.contains("SCRAM-SHA-256"), "a verifier leaked");
        for secret in secrets() {
            assert!(!text.contains(&secret), "a secret leaked");
        }
    });
}

#[test]
fn audit_records_are_filtered_and_paged() {
    harness().runtime.block_on(async {
        let c = support::connect("analyst").await;
        for _ in 0..3 {
            let _ = c.simple_query("SELECT * FROM secrets").await;
        }
        let since = "2000-01-01T00:00:00Z";
        let (status, page) = admin(
            "get",
            &format!("/api/v1/audit?agent=analyst&decision=blocked&since={since}&limit=2"),
            AdminAs::Viewer,
        )
        .await;
        assert_eq!(status, 200, "{page}");
        let records = page["records"].as_array().unwrap();
        assert_eq!(records.len(), 2, "{page}");
        assert!(records
            .iter()
            .all(|r| r["agent"] == "analyst" && r["decision"] == "blocked"));
        assert!(
            records[0]["seq"].as_u64() > records[1]["seq"].as_u64(),
            "newest first"
        );
        let before = page["next_before"].as_u64().expect("more pages");
        let (_, next) = admin(
            "get",
            &format!("/api/v1/audit?agent=analyst&decision=blocked&before={before}&limit=2"),
            AdminAs::Viewer,
        )
        .await;
        let first_next = next["records"][0]["seq"].as_u64().unwrap();
        assert!(first_next < before, "{next}");
        let (_, none) = admin(
            "get",
            "/api/v1/audit?since=2999-01-01T00:00:00Z",
            AdminAs::Viewer,
        )
        .await;
        assert_eq!(none["records"], json!([]));
        for bad in ["decision=maybe", "since=yesterday", "limit=0", "limit=abc"] {
            let (status, body) =
                admin("get", &format!("/api/v1/audit?{bad}"), AdminAs::Viewer).await;
            assert_eq!(status, 400, "{bad}: {body}");
        }
    });
}

#[test]
fn stats_move_after_traffic() {
    harness().runtime.block_on(async {
        let count = |s: &Value| {
            s["agents"]["writer"]["statements"]["allowed"]
                .as_u64()
                .unwrap_or(0)
        };
        let (_, before) = admin("get", "/api/v1/stats", AdminAs::Viewer).await;
        let w = support::connect("writer").await;
        w.simple_query("SELECT 1 FROM orders LIMIT 1")
            .await
            .unwrap();
        let (_, after) = admin("get", "/api/v1/stats", AdminAs::Viewer).await;
        assert!(count(&after) > count(&before), "{before} -> {after}");
        assert!(
            after["connectors"]["shop"]["connections_total"]
                .as_u64()
                .unwrap()
                >= 1
        );
        assert!(after["decision_cache"]["hit_ratio"].is_number());
    });
}

/// Prometheus text: `name{labels} value` lines as (series, value).
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            (
                series.to_string(),
                value
                    .parse::<f64>()
                    .unwrap_or_else(|_| panic!("bad value in {l:?}")),
            )
        })
        .collect()
}

fn series_value(samples: &[(String, f64)], name: &str, labels: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(s, _)| s.starts_with(&format!("{name}{{")) || s == name)
        .filter(|(s, _)| labels.iter().all(|l| s.contains(l)))
        .map(|(_, v)| v)
        .sum()
}

/// Each door counts apart under its own `protocol` label: keyed by (agent, upstream) alone, the
/// first door to count a pair took every later door's statements under its label (a review:
/// psql statements counted as `mcp`).
#[test]
fn each_door_counts_under_its_own_protocol_label() {
    harness().runtime.block_on(async {
        let dir = support::tls::copy_demo(|c| c);
        let gw = support::tls::start_gateway(dir.path()).await;
        // The MCP door first, then the wire, for the same agent and upstream.
        let mcp = format!("http://{}{}", gw.mcp_addr.unwrap(), tollgate::mcp::PATH);
        let answer = reqwest::Client::new()
            .post(&mcp)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .header(
                "authorization",
                format!("Bearer {}", harness().env.mcp_token("writer")),
            )
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "query", "arguments": {"sql": "SELECT count(*) FROM orders"}}}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 200);
        let c = support::tls::plain_client(&gw, "writer").await;
        for _ in 0..3 {
            c.simple_query("SELECT count(*) FROM orders").await.unwrap();
        }
        let base = format!("http://{}", gw.admin_addr.unwrap());
        let (status, body) = admin_request(&base, "get", "/metrics", AdminAs::Viewer).await;
        assert_eq!(status, 200);
        let samples = parse_prometheus(body.as_str().unwrap());
        let writer: Vec<_> = samples
            .iter()
            .filter(|(s, _)| s.contains("writer"))
            .collect();
        let allowed = |protocol: &str| {
            series_value(
                &samples,
                "tollgate_statements_total",
                &[
                    "agent=\"writer\"",
                    &format!("protocol=\"{protocol}\""),
                    "decision=\"allowed\"",
                ],
            )
        };
        assert_eq!(allowed("mcp"), 1.0, "{writer:?}");
        assert_eq!(allowed("postgres"), 3.0, "{writer:?}");
        let sessions = |protocol: &str| {
            series_value(
                &samples,
                "tollgate_agent_connections_total",
                &["agent=\"writer\"", &format!("protocol=\"{protocol}\"")],
            )
        };
        assert_eq!(sessions("postgres"), 1.0, "{writer:?}");
        gw.shutdown();
    });
}

/// Alerts use `increase()`, which cannot see the first event of a series that did not exist
/// before it: these are exported from the start.
#[test]
fn alerting_counters_are_exported_before_their_first_event() {
    harness().runtime.block_on(async {
        let (status, body) = admin("get", "/metrics", AdminAs::Viewer).await;
        assert_eq!(status, 200);
        let samples = parse_prometheus(body.as_str().expect("metrics are text"));
        for (name, label) in [
            ("tollgate_audit_records_lost_total", None),
            ("tollgate_audit_write_failures_total", None),
            ("tollgate_unanalysable_statements_total", None),
            ("tollgate_redis_desync_total", None),
            ("tollgate_policy_reloads_total", Some("result=\"error\"")),
            ("tollgate_vault_reloads_total", Some("result=\"error\"")),
            ("tollgate_audit_rotations_total", Some("result=\"error\"")),
        ] {
            assert!(
                samples
                    .iter()
                    .any(|(s, _)| (s == name || s.starts_with(&format!("{name}{{")))
                        && label.is_none_or(|l| s.contains(l))),
                "{name} {label:?} is not exported"
            );
        }
    });
}

#[test]
fn metrics_are_prometheus_text_and_move_after_traffic() {
    harness().runtime.block_on(async {
        let scrape = || async {
            let (status, body) = admin("get", "/metrics", AdminAs::Viewer).await;
            assert_eq!(status, 200);
            parse_prometheus(body.as_str().expect("metrics are text"))
        };
        let before = scrape().await;
        let c = support::connect("analyst").await;
        c.simple_query("SELECT count(*) FROM orders").await.unwrap();
        c.simple_query("SELECT count(*) FROM orders").await.unwrap();
        let _ = c.simple_query("SELECT * FROM secrets").await;
        let mut r = support::redis_connect("analyst", false).await;
        let _: Option<String> = redis::cmd("GET")
            .arg("cache:1")
            .query_async(&mut r)
            .await
            .unwrap();
        let after = scrape().await;
        let allowed = [
            "agent=\"analyst\"",
            "protocol=\"postgres\"",
            "decision=\"allowed\"",
        ];
        assert!(
            series_value(&after, "tollgate_statements_total", &allowed)
                >= series_value(&before, "tollgate_statements_total", &allowed) + 2.0
        );
        let refused = ["protocol=\"postgres\"", "rule=\"default-deny\""];
        assert!(
            series_value(&after, "tollgate_refusals_total", &refused)
                > series_value(&before, "tollgate_refusals_total", &refused)
        );
        let redis_allowed = [
            "agent=\"analyst\"",
            "protocol=\"redis\"",
            "decision=\"allowed\"",
        ];
        assert!(series_value(&after, "tollgate_statements_total", &redis_allowed) >= 1.0);
        assert!(
            series_value(
                &after,
                "tollgate_agent_connections_total",
                &["agent=\"analyst\"", "protocol=\"postgres\""]
            ) >= 1.0
        );
        assert!(
            series_value(
                &after,
                "tollgate_agent_connections",
                &["agent=\"analyst\"", "protocol=\"postgres\""]
            ) >= 1.0
        );
        assert!(
            series_value(
                &after,
                "tollgate_upstream_connections",
                &["upstream=\"shop\""]
            ) >= 1.0
        );
        for h in [
            "tollgate_gateway_overhead_seconds_count",
            "tollgate_upstream_duration_seconds_count",
        ] {
            assert!(
                series_value(&after, h, &["protocol=\"postgres\""])
                    > series_value(&before, h, &["protocol=\"postgres\""]),
                "{h} did not move"
            );
            assert!(
                series_value(&after, h, &["protocol=\"redis\""]) >= 1.0,
                "{h} (redis)"
            );
        }
        assert!(after
            .iter()
            .any(|(s, _)| s.starts_with("tollgate_gateway_overhead_seconds_bucket{")));
        let hits = series_value(&after, "tollgate_decision_cache_total", &["result=\"hit\""]);
        assert!(hits >= 1.0, "the repeated statement hit the cache");
        assert!(after
            .iter()
            .any(|(s, _)| s == "tollgate_decision_cache_hit_ratio"));
        // No statement text in any label.
        assert!(after
            .iter()
            .all(|(s, _)| !s.contains("SELECT") && !s.contains("secrets")));
    });
}

#[test]
fn reload_through_the_api_keeps_the_last_good_policy_on_error() {
    harness().runtime.block_on(async {
        let (status, r) = admin("post", "/api/v1/reload", AdminAs::Admin).await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["success"], true);
        let v1 = r["policy_version"].as_u64().unwrap();
        let broken = harness().env.dir.join("policies").join("zz_broken.toml");
        std::fs::write(
            &broken,
            "agents = [\"analyst\"]\n[[postgres]]\nupstream = \"nowhere\"\n",
        )
        .unwrap();
        let (status, r) = admin("post", "/api/v1/reload", AdminAs::Admin).await;
        std::fs::remove_file(&broken).unwrap();
        assert_eq!(status, 422, "{r}");
        assert_eq!(r["success"], false);
        let errors = r["errors"].to_string();
        assert!(errors.contains("zz_broken.toml"), "{errors}");
        // The running policy still serves.
        let c = support::connect("analyst").await;
        c.simple_query("SELECT count(*) FROM orders").await.unwrap();
        let (status, r) = admin("post", "/api/v1/reload", AdminAs::Admin).await;
        assert_eq!(status, 200, "{r}");
        assert!(r["policy_version"].as_u64().unwrap() > v1);
    });
}

/// Two Authorization headers are refused (401), whichever comes first: tollgate read the
/// first, a proxy in front may read the last (a live review).
#[test]
fn two_authorization_headers_are_refused() {
    harness().runtime.block_on(async {
        let env = &harness().env;
        let url = format!("{}/api/v1/stats", env.admin_url());
        for (first, second) in [
            (&env.admin_token, &env.admin_viewer_token),
            (&env.admin_viewer_token, &env.admin_token),
        ] {
            let status = reqwest::Client::new()
                .get(&url)
                .header("authorization", format!("Bearer {first}"))
                .header("authorization", format!("Bearer {second}"))
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status.as_u16(), 401);
        }
        let (status, _) = admin("get", "/api/v1/stats", AdminAs::Viewer).await;
        assert_eq!(status, 200);
    });
}

/// A reload never applies `tollgate.toml` (listeners and pools are built once): the answer
/// names the keys that changed since start, or says the file would not start a gateway.
#[test]
fn reload_names_config_changes_that_wait_for_a_restart() {
    harness().runtime.block_on(async {
        let path = harness().env.dir.join("tollgate.toml");
        let original = std::fs::read_to_string(&path).unwrap();
        let reload = || async {
            let (status, r) = admin("post", "/api/v1/reload", AdminAs::Admin).await;
            assert_eq!(status, 200, "{r}");
            r["restart_needed"].clone()
        };
        std::fs::write(&path, format!("{original}\n# a comment only\n")).unwrap();
        let untouched = reload().await;
        std::fs::write(&path, original.replace("pool_size = 10", "pool_size = 12")).unwrap();
        let resized = reload().await;
        std::fs::write(&path, original.replace("[listen]", "[listen\n")).unwrap();
        let broken = reload().await;
        std::fs::write(&path, &original).unwrap();
        let restored = reload().await;
        assert!(untouched.is_null(), "{untouched}");
        let resized = resized.as_str().unwrap_or_default();
        assert!(
            resized.contains("(upstream.shop.pool_size)") && resized.contains("restart"),
            "{resized}"
        );
        let broken = broken.as_str().unwrap_or_default();
        assert!(
            broken.contains("would not start") && broken.contains("tollgate.toml"),
            "{broken}"
        );
        assert!(restored.is_null(), "{restored}");
    });
}

/// Every secret of the demo: agent tokens, the upstream password, the master key.
fn secrets() -> Vec<String> {
    let env = &harness().env;
    let mut s: Vec<String> = env.tokens.iter().map(|(_, t)| t.clone()).collect();
    s.push(
        std::fs::read_to_string(env.dir.join("master.key"))
            .unwrap()
            .trim()
            .to_string(),
    );
    s.push(env.admin_token.clone());
    s.push(env.admin_viewer_token.clone());
    s
}

/// Every record of the audit log in `dir` (active file and closed ones, not compressed).
fn audit_records(dir: &std::path::Path) -> Vec<Value> {
    let mut out = Vec::new();
    // No file at all reads as no records (the assertions then say what is missing).
    for f in tollgate::audit::files::list_dir(dir).unwrap_or_default() {
        // Closed files may be compressed (the demo's rotation gzips them).
        let text = String::from_utf8(f.read_all().unwrap()).unwrap();
        out.extend(
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap()),
        );
    }
    out
}

#[test]
fn admin_actions_are_in_the_audit_chain_under_the_token_name() {
    harness().runtime.block_on(async {
        let (running, dir) = second_gateway(false).await;
        let base = format!("http://{}", running.admin_addr.unwrap());
        let post = |path: &'static str| admin_request(&base, "post", path, AdminAs::Admin);
        assert_eq!(post("/api/v1/reload").await.0, 200);
        let broken = dir.path().join("policies").join("zz_broken.toml");
        std::fs::write(
            &broken,
            "agents = [\"analyst\"]\n[[postgres]]\nupstream = \"nowhere\"\n",
        )
        .unwrap();
        assert_eq!(post("/api/v1/reload").await.0, 422);
        std::fs::remove_file(&broken).unwrap();
        assert_eq!(post("/api/v1/audit/rotate").await.0, 200);
        assert_eq!(
            post("/api/v1/connectors/shop/test").await.1["success"],
            true
        );
        // A viewer is refused, and the refusal recorded under the viewer token's name.
        let (status, _) = admin_request(&base, "post", "/api/v1/reload", AdminAs::Viewer).await;
        assert_eq!(status, 403);

        let records = audit_records(dir.path());
        let refused: Vec<&Value> = records
            .iter()
            .filter(|r| r["kind"] == "admin" && r["outcome"] == "refused")
            .collect();
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0]["action"], "authorize");
        assert_eq!(refused[0]["target"], "/api/v1/reload");
        assert_eq!(
            refused[0]["error"],
            "the token's role is viewer; this needs admin"
        );
        assert_ne!(refused[0]["admin"], "demo-admin");
        let admin: Vec<&Value> = records
            .iter()
            .filter(|r| r["kind"] == "admin" && r["outcome"] != "refused")
            .collect();
        let seen: Vec<(String, String, Option<String>)> = admin
            .iter()
            .map(|r| {
                (
                    r["action"].as_str().unwrap().to_string(),
                    r["outcome"].as_str().unwrap().to_string(),
                    r["error"].as_str().map(str::to_string),
                )
            })
            .collect();
        let failed = Some("kept the running version of: policies".to_string());
        assert_eq!(
            seen,
            [
                ("reload".into(), "started".into(), None),
                ("reload".into(), "ok".into(), None),
                ("reload".into(), "started".into(), None),
                ("reload".into(), "failed".into(), failed),
                ("audit_rotate".into(), "started".into(), None),
                ("audit_rotate".into(), "ok".into(), None),
                ("connector_test".into(), "started".into(), None),
                ("connector_test".into(), "ok".into(), None),
            ]
        );
        for pair in admin.chunks(2) {
            assert_eq!(pair[1]["ref_seq"], pair[0]["seq"], "{pair:?}");
        }
        for r in &admin {
            assert_eq!(r["admin"], "demo-admin", "{r}");
            assert!(
                r["client_addr"].as_str().unwrap().starts_with("127.0.0.1:"),
                "{r}"
            );
        }
        assert_eq!(admin[6]["target"], "shop");
        let text = records.iter().map(Value::to_string).collect::<String>();
        for secret in secrets() {
            assert!(!text.contains(&secret), "a secret in the audit log");
        }
        // `tollgate audit verify` accepts the chain, across the rotation.
        let out = std::process::Command::new(support::tollgate_bin())
            .args(["audit", "verify"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

#[test]
fn wrong_admin_tokens_are_counted_and_a_repeated_one_is_checked_once() {
    harness().runtime.block_on(async {
        let (running, dir) = second_gateway(false).await;
        let base = format!("http://{}", running.admin_addr.unwrap());
        let failures = || async {
            let (status, body) = admin_request(&base, "get", "/metrics", AdminAs::Viewer).await;
            assert_eq!(status, 200);
            let samples = parse_prometheus(body.as_str().unwrap());
            series_value(
                &samples,
                "tollgate_auth_failures_total",
                &["protocol=\"admin\""],
            )
        };
        let before = failures().await;
        let tokens = running.gateway.admin_tokens.load_full();
        let checks = tokens.checks();
        let client = reqwest::Client::new();
        for _ in 0..10 {
            let r = client
                .get(format!("{base}/api/v1/agents"))
                .bearer_auth("tga_wrong_but_persistent")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401);
        }
        assert_eq!(
            tokens.checks() - checks,
            1,
            "ten tries of one wrong token cost one PBKDF2 check"
        );
        let (status, _) = admin_request(&base, "get", "/api/v1/agents", AdminAs::Nobody).await;
        assert_eq!(status, 401);
        // Counted here (other tests of this process may add their own failures).
        assert!(failures().await - before >= 11.0);
        // And in the audit chain, at most one record a second, the rest counted into the next.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let (status, _) = admin_request(&base, "get", "/api/v1/agents", AdminAs::Nobody).await;
        assert_eq!(status, 401);
        let refused: Vec<Value> = audit_records(dir.path())
            .into_iter()
            .filter(|r| r["kind"] == "admin" && r["outcome"] == "refused")
            .collect();
        assert!((2..=3).contains(&refused.len()), "{refused:?}");
        let last = &refused[refused.len() - 1];
        assert_eq!(
            (&last["admin"], &last["action"], &last["target"]),
            (
                &Value::from("(no valid token)"),
                &Value::from("authenticate"),
                &Value::from("/api/v1/agents")
            )
        );
        let error = last["error"].as_str().unwrap();
        assert!(
            error.starts_with("no valid admin token; ")
                && error
                    .ends_with("more refused since the previous record, not recorded one by one"),
            "{error}"
        );
        let text = refused.iter().map(Value::to_string).collect::<String>();
        assert!(
            !text.contains("tga_wrong_but_persistent"),
            "no token in the log"
        );
        // The valid tokens still pass, at the cost of a hash.
        let checks = tokens.checks();
        for _ in 0..3 {
            assert_eq!(
                admin_request(&base, "get", "/api/v1/agents", AdminAs::Viewer)
                    .await
                    .0,
                200
            );
        }
        assert_eq!(tokens.checks(), checks);
    });
}
