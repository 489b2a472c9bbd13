//! The `tollgate` binary against the harness: check, explain, audit verify, `serve` as a separate
//! process (with a hunt for leaked secrets in everything it printed and wrote), psql and pgbench.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use support::served::{demo_dir_with, with_limits, Served};
use support::{harness, tollgate_bin};

fn demo_config() -> PathBuf {
    harness().env.dir.join("tollgate.toml")
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(tollgate_bin())
        .args(args)
        .env_remove("TOLLGATE_MASTER_KEY")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn check_accepts_the_demo_and_reports_broken_policies_with_location() {
    let (code, out, err) = run(&["check", "--config", demo_config().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("3 agent(s)"), "{out}");

    let dir = support::copy_demo_dir();
    std::fs::write(dir.path().join("policies/broken.toml"), "agents = [\"analyst\"]\n[[postgres]]\nupstream = \"shop\"\n[[postgres.table]]\nname = \"orders\"\nallow = [\"selekt\"]\n").unwrap();
    let (code, _, err) = run(&[
        "check",
        "--config",
        dir.path().join("tollgate.toml").to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("broken.toml:6:10"), "{err}");
    assert!(err.contains("unknown operation \"selekt\""), "{err}");
}

/// `check` resolves the upstreams' credentials and reads the admin tokens as `serve` does: a
/// secret the vault lacks, a bad admin token role, or a master key file that is not there, is
/// an error (each passed `check`, then `serve` failed).
#[test]
fn check_resolves_vaulted_credentials_like_serve() {
    let dir = support::copy_demo_dir();
    let cfg = dir.path().join("tollgate.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replacen("vault:shop_password", "vault:no_such_secret", 1),
    )
    .unwrap();
    let (code, _, err) = run(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no_such_secret"), "{err}");
    // At the key that names it (a live review: the error had no place).
    let line = text
        .lines()
        .position(|l| l.contains("vault:shop_password"))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!(
            "tollgate.toml:{line}:1: vault: no secret named \"no_such_secret\""
        )),
        "{err}"
    );

    // The admin tokens file, as serve loads it: a bad role passed check, then serve failed.
    std::fs::write(&cfg, &text).unwrap();
    let tokens = dir.path().join("admin_tokens.toml");
    let good_tokens = std::fs::read_to_string(&tokens).unwrap();
    std::fs::write(
        &tokens,
        good_tokens.replacen("role = \"viewer\"", "role = \"superadmin\"", 1),
    )
    .unwrap();
    let (code, _, err) = run(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("admin_tokens.toml:") && err.contains("superadmin"),
        "{err}"
    );
    std::fs::write(&tokens, good_tokens).unwrap();

    // A master key file others may read is said (whoever reads it reads every secret).
    use std::os::unix::fs::PermissionsExt;
    let key = dir.path().join("master.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = run(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("may be read by other users (mode 644)"),
        "{err}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (_, _, err) = run(&["check", "--config", cfg.to_str().unwrap()]);
    assert!(!err.contains("other users"), "{err}");

    std::fs::remove_file(dir.path().join("master.key")).unwrap();
    let (code, _, err) = run(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("master.key"), "{err}");
}

/// A held budget too small to hold an over-long statement's kept head (or anything much over
/// the 256 KiB every session may hold) is a configuration error, not a gateway that ends
/// sessions where it should only refuse a statement.
#[test]
fn check_refuses_a_held_budget_that_could_receive_nothing() {
    let dir = support::copy_demo_dir();
    let cfg = dir.path().join("tollgate.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        format!("{text}\n[limits]\nmax_held_client_bytes_per_agent = 0\n"),
    )
    .unwrap();
    let (code, _, err) = run(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("limits.max_held_client_bytes_per_agent must be at least 1572864 bytes"),
        "{err}"
    );
}

#[test]
fn explain_names_the_rule() {
    let cfg = demo_config();
    let explain = |sql: &str| {
        run(&[
            "explain",
            "--agent",
            "analyst",
            "--config",
            cfg.to_str().unwrap(),
            sql,
        ])
    };
    let (code, out, _) = explain("SELECT * FROM secrets");
    assert_eq!(code, 0);
    assert!(out.contains("decision:  blocked"), "{out}");
    assert!(
        out.contains("public.secrets") || out.contains("secrets"),
        "{out}"
    );
    let (_, out, _) = explain("SELECT o.id FROM orders o JOIN customers c ON c.id = o.customer_id");
    // As the audit record says it: customers is read masked.
    assert!(out.contains("decision:  masked"), "{out}");
    let (_, out, _) = explain("SELECT o.id FROM orders o");
    assert!(out.contains("decision:  allowed"), "{out}");
    // Piped into a reader that leaves early, it ends quietly (it panicked, exit 101).
    // (`true` reads nothing and exits at once: every write finds the pipe closed.)
    let piped = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{} explain --agent analyst --config {} 'SELECT 1' | true; echo \"${{PIPESTATUS[0]}}\"",
            tollgate_bin(),
            cfg.display()
        ))
        .env_remove("TOLLGATE_MASTER_KEY")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&piped.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        String::from_utf8_lossy(&piped.stdout).trim(),
        "141",
        "{err}"
    );
}

/// explain says what the gateway does (a live review compared them on 236 statements): the
/// decision and rule the audit record gets for a masked read, the refusals of transaction
/// pooling and of a text over the rate's burst, a note for EXECUTE, and a mistyped agent or
/// upstream is an error (it read as a policy refusal, exit 0). `-` reads the statement on stdin.
#[test]
fn explain_says_what_the_gateway_does() {
    let cfg = demo_config();
    let explain = |agent: &str, statement: &str| {
        let cfg = cfg.to_str().unwrap();
        run(&[
            "explain",
            "--agent",
            agent,
            "--upstream",
            "shop",
            "--config",
            cfg,
            statement,
        ])
    };
    let (code, out, _) = explain("analyst", "SELECT id FROM customers WHERE ssn LIKE '1%'");
    assert_eq!(code, 0);
    assert!(
        out.contains("decision:  masked\n")
            && out.contains("rule:      analyst: table public.customers\n"),
        "{out}"
    );
    // Through MCP every call is judged as on a transaction pool, one statement per call: the
    // trusted agent's session-mode answer is not MCP's (a re-review).
    let mcp = |statement: &str| {
        let cfg = cfg.to_str().unwrap();
        run(&[
            "explain", "--agent", "trusted", "--door", "mcp", "--config", cfg, statement,
        ])
    };
    let (_, out, _) = explain("trusted", "SELECT currval('orders_id_seq')");
    assert!(out.contains("decision:  allowed"), "{out}");
    let (_, out, _) = mcp("SELECT currval('orders_id_seq')");
    assert!(
        out.contains("door:      mcp")
            && out.contains("decision:  blocked")
            && out.contains("builtin: transaction-pooling"),
        "{out}"
    );
    let (_, out, _) = mcp("SELECT 1; SELECT 2");
    assert!(
        out.contains("decision:  blocked") && out.contains("builtin: one-statement"),
        "{out}"
    );
    // The demo's analyst is on a transaction pool.
    let (_, out, _) = explain("analyst", "SELECT pg_backend_pid()");
    assert!(
        out.contains("decision:  blocked") && out.contains("builtin: transaction-pooling"),
        "{out}"
    );
    // With the demo's rate (this harness lifts it), a burst of 60: 62 statements in one text
    // never run.
    let dir = support::copy_demo_dir();
    let file = dir.path().join("policies/analyst.toml");
    let text: String = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("burst"))
        .map(|l| match l.starts_with("statements_per_minute") {
            true => "statements_per_minute = 600\n".to_string(),
            false => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&file, text).unwrap();
    let copied = dir.path().join("tollgate.toml");
    let rated = |statement: &str| {
        let cfg = copied.to_str().unwrap();
        run(&[
            "explain",
            "--agent",
            "analyst",
            "--upstream",
            "shop",
            "--config",
            cfg,
            statement,
        ])
    };
    let (_, out, _) = rated(&"SELECT 1;".repeat(62));
    assert!(
        out.contains("decision:  blocked")
            && out.contains("rule:      analyst: limits")
            && out.contains("62 statements"),
        "{out}"
    );
    let (_, out, _) = rated(&"SELECT 1;".repeat(61));
    assert!(out.contains("decision:  allowed"), "{out}");
    let (_, out, _) = explain("analyst", "EXECUTE p3");
    assert!(out.contains("explain the PREPARE's query instead"), "{out}");
    let (code, _, err) = explain("nobody", "SELECT 1");
    assert_eq!(code, 1);
    assert!(err.contains("no agent named \"nobody\""), "{err}");
    let cfg_s = cfg.to_str().unwrap();
    let (code, _, err) = run(&[
        "explain",
        "--agent",
        "analyst",
        "--upstream",
        "nope",
        "--config",
        cfg_s,
        "SELECT 1",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no upstream named \"nope\""), "{err}");
    let out = support::tollgate_with_stdin(
        [
            "explain",
            "--agent",
            "analyst",
            "--upstream",
            "shop",
            "--config",
            cfg_s,
            "-",
        ],
        b"-- a comment first\nSELECT * FROM secrets",
    );
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.contains("decision:  blocked") && out.contains("secrets"),
        "{out}"
    );
}

#[test]
fn audit_verify_passes_on_the_live_log_and_catches_an_edit() {
    // Some traffic first so the log is not empty.
    harness().runtime.block_on(async {
        let c = support::connect("analyst").await;
        let _ = c.simple_query("SELECT count(*) FROM orders").await;
        let _ = c.simple_query("SELECT * FROM secrets").await;
    });
    let log = &harness().env.audit_log;
    let (code, out, _) = run(&["audit", "verify", log.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    // `audit tail` into a reader that has left ends quietly as 141, like the other commands
    // (it said "stdout: Broken pipe" and exited 1).
    let piped = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{} audit tail -n 5 {} | true; echo \"${{PIPESTATUS[0]}}\"",
            tollgate_bin(),
            log.display()
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&piped.stderr);
    assert!(err.is_empty(), "{err}");
    assert_eq!(String::from_utf8_lossy(&piped.stdout).trim(), "141");
    let copy = tempfile::NamedTempFile::new().unwrap();
    let text = std::fs::read_to_string(log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut edited: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    edited[1] = edited[1].replacen("\"session\":", "\"session\":1", 1);
    std::fs::write(copy.path(), edited.join("\n") + "\n").unwrap();
    let (code, out, _) = run(&["audit", "verify", copy.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains("line 2"), "{out}");
}

/// `tollgate serve` on `dir` (a copy of the demo's files), logging at debug level.
fn serve(dir: tempfile::TempDir) -> Served {
    Served::start_logging(dir, "", "debug")
}

#[test]
fn no_secret_reaches_logs_audit_or_errors() {
    let dir = support::copy_demo_dir();
    let served = serve(dir);
    let env = &harness().env;
    let url = |agent: &str| {
        env.pg_url(agent).replace(
            &format!(":{}/", env.pg_port),
            &format!(":{}/", served.pg_port),
        )
    };
    let mut errors = String::new();
    harness().runtime.block_on(async {
        let c = support::connect_url(&url("analyst")).await.unwrap();
        c.simple_query("SELECT count(*) FROM orders").await.unwrap();
        for sql in [
            "SELECT * FROM secrets",
            "SELECT pg_read_file('/etc/passwd')",
            "SET ROLE postgres",
            "SELEC 1",
        ] {
            errors.push_str(&format!("{:?}\n", c.simple_query(sql).await.unwrap_err()));
        }
        errors.push_str(&format!(
            "{:?}\n",
            c.query("SELECT * FROM secrets WHERE id = $1", &[&1i32])
                .await
                .unwrap_err()
        ));
        let w = support::connect_url(&url("writer")).await.unwrap();
        w.simple_query("SELECT 1 FROM orders LIMIT 1")
            .await
            .unwrap();
        let wrong = url("analyst").replace(env.token("analyst"), "tg_not_the_token");
        errors.push_str(&format!(
            "{:?}\n",
            support::connect_url(&wrong).await.err().unwrap()
        ));
        let ghost = url("analyst").replace("analyst:", "ghost:");
        errors.push_str(&format!(
            "{:?}\n",
            support::connect_url(&ghost).await.err().unwrap()
        ));
    });
    // MCP: a query, a refusal, a wrong token and an unknown agent, with the real bearer format.
    let mcp = format!("http://127.0.0.1:{}/mcp", served.mcp_port());
    harness().runtime.block_on(async {
        let client = reqwest::Client::new();
        let call = |bearer: String, sql: &str| {
            client
                .post(&mcp)
                .header("accept", "application/json, text/event-stream")
                .header("authorization", bearer)
                .json(
                    &serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                    "params": {"name": "query", "arguments": {"sql": sql}}}),
                )
                .send()
        };
        for (bearer, sql) in [
            (
                format!("Bearer {}", env.mcp_token("analyst")),
                "SELECT count(*) FROM orders",
            ),
            (
                format!("Bearer {}", env.mcp_token("analyst")),
                "SELECT * FROM secrets",
            ),
            (
                format!("Bearer analyst:{}", env.token("writer")),
                "SELECT 1",
            ),
            (format!("Bearer ghost:{}", env.token("trusted")), "SELECT 1"),
            (format!("Bearer {}", env.token("trusted")), "SELECT 1"),
        ] {
            let resp = call(bearer, sql).await.unwrap();
            errors.push_str(&format!(
                "{} {}\n",
                resp.status(),
                resp.text().await.unwrap()
            ));
        }
    });
    assert!(errors.contains("401 "), "{errors}");
    assert!(errors.contains("rule: default-deny"), "{errors}");
    // Every admin API answer and the metrics, as an admin sees them.
    let admin_base = format!("http://127.0.0.1:{}", served.admin_port);
    let mut api = String::new();
    harness().runtime.block_on(async {
        for (method, path) in tollgate::admin::ROUTES {
            let p = if path.starts_with("/api/v1/agents/") {
                path.replace("{id}", "analyst")
            } else {
                path.replace("{id}", "shop")
            };
            for p in [p.clone(), format!("{p}?agent=analyst")] {
                let (status, body) =
                    support::admin_request(&admin_base, method, &p, support::AdminAs::Admin).await;
                api.push_str(&format!("{method} {p} {status} {body}\n"));
            }
        }
        let (_, body) = support::admin_request(
            &admin_base,
            "post",
            "/api/v1/connectors/cache/test",
            support::AdminAs::Admin,
        )
        .await;
        api.push_str(&body.to_string());
    });
    assert!(
        api.contains("tollgate_statements_total"),
        "the metrics were read:\n{api}"
    );
    std::thread::sleep(Duration::from_millis(300));
    // Every file of the log: the routes above include POST /api/v1/audit/rotate.
    let audit: String = tollgate::audit::files::list_dir(served.dir())
        .unwrap()
        .iter()
        .map(|f| String::from_utf8(f.read_all().unwrap()).unwrap())
        .collect();
    let logs = served.log_text();
    assert!(
        audit.contains("\"decision\":\"blocked\""),
        "the test must have produced refusals"
    );
    assert!(
        logs.contains("session started"),
        "debug logs were captured:\n{logs}"
    );

    let cfg = served.dir().join("tollgate.toml");
    let (_, password, _) = run(&[
        "vault",
        "--config",
        cfg.to_str().unwrap(),
        "get",
        "shop_password",
    ]);
    let password = password.trim().to_string();
    let master_key = std::fs::read_to_string(served.dir().join("master.key"))
        .unwrap()
        .trim()
        .to_string();
    assert!(password.len() > 10 && master_key.len() == 64);
    let (_, redis_password, _) = run(&[
        "vault",
        "--config",
        cfg.to_str().unwrap(),
        "get",
        "cache_password",
    ]);
    let mut secrets = vec![
        ("upstream password", password),
        ("master key", master_key),
        ("redis password", redis_password.trim().to_string()),
        ("admin token", env.admin_token.clone()),
        ("viewer token", env.admin_viewer_token.clone()),
    ];
    for (agent, token) in &env.tokens {
        secrets.push((agent.as_str(), token.clone()));
    }
    for (what, secret) in &secrets {
        for (place, text) in [
            ("logs", &logs),
            ("audit log", &audit),
            ("client errors", &errors),
            ("admin API and metrics", &api),
        ] {
            assert!(
                !text.contains(secret.as_str()),
                "the {what} leaked into the {place}"
            );
        }
    }
    // The upstream role name stays out of client-visible errors and the admin API too.
    assert!(!errors.contains("tollgate_shop"), "{errors}");
    assert!(!api.contains("tollgate_shop"), "{api}");
    assert!(
        !api.contains("SCRAM-SHA-256$"),
        "a verifier leaked into the admin API"
    );
}

#[test]
fn upstream_down_gives_a_clear_error_and_others_keep_working() {
    let dir = support::copy_demo_dir();
    let cfg = dir.path().join("tollgate.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = text.replace(
        &format!("port = {}", harness_upstream_port()),
        &format!("port = {dead}"),
    );
    std::fs::write(&cfg, text).unwrap();
    let served = serve(dir);
    let env = &harness().env;
    let url = env.pg_url("analyst").replace(
        &format!(":{}/", env.pg_port),
        &format!(":{}/", served.pg_port),
    );
    harness().runtime.block_on(async {
        let e = support::connect_url(&url)
            .await
            .expect_err("the upstream is down");
        assert_eq!(support::sqlstate(&e), "08006");
        assert!(support::db_message(&e).contains("unavailable"), "{e}");
        support::connect("analyst")
            .await
            .simple_query("SELECT 1")
            .await
            .unwrap();
    });
}

fn harness_upstream_port() -> u16 {
    let url = &harness().env.upstream_pg_url;
    let after = url.split('@').nth(1).unwrap();
    after.split(['/', ':']).nth(1).unwrap().parse().unwrap()
}

#[test]
fn psql_works_through_the_gateway_with_default_sslmode() {
    if !have("psql") {
        panic!("psql is required for this test (apt-get install postgresql-client)");
    }
    let env = &harness().env;
    // No sslmode: psql's default `prefer` negotiates TLS (the demo has a certificate).
    let url = env.pg_url("analyst").replace("?sslmode=disable", "");
    let out = Command::new("psql")
        .args([
            &url,
            "-X",
            "-A",
            "-t",
            "-c",
            "SELECT count(*) FROM customers",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2000");
    let out = Command::new("psql")
        .args([&url, "-X", "-c", "\\dt"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("orders"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("psql")
        .args([&url, "-X", "-c", "\\d customers"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // \df+ and \l+ read definitions and comments (pg_get_function_sqlbody, shobj_description),
    // as \d+ does: they were refused by default (a live review).
    for meta in ["\\df+ lower", "\\l+", "\\dt+"] {
        let out = Command::new("psql")
            .args([&url, "-X", "-c", meta])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{meta}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = Command::new("psql")
        .args([&url, "-X", "-c", "SELECT * FROM secrets"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tollgate"));
}

/// pg_dump (15.8 and later) always sends `SELECT set_config(name, 'view, foreign-table', false)
/// FROM pg_settings WHERE name = 'restrict_nonsystem_relation_kind'`: refused as a computed
/// setting name, it stopped pg_dump for every agent, passthrough included (a live review).
#[test]
fn pg_dump_runs_as_the_passthrough_agent() {
    if !have("pg_dump") {
        panic!("pg_dump is required for this test (apt-get install postgresql-client)");
    }
    let url = harness().env.pg_url("trusted");
    let out = Command::new("pg_dump")
        .args(["--schema-only", &url])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CREATE TABLE public.orders"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pgbench(url: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("pgbench")
        .arg("-n")
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn pgbench_select_only_in_every_mode_without_failures() {
    if !have("pgbench") {
        panic!("pgbench is required for this test (apt-get install postgresql-contrib or postgresql-15)");
    }
    let env = &harness().env;
    // pgbench tables, created directly upstream and granted to the gateway's upstream role.
    let up = &env.upstream_pg_url;
    let init = Command::new("pgbench")
        .args(["-i", "-s", "1", "-q", up])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    harness().runtime.block_on(async {
        support::upstream().await.batch_execute("GRANT SELECT, INSERT, UPDATE ON pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history TO tollgate_shop").await.unwrap();
    });
    let started = Instant::now();
    for mode in ["simple", "extended", "prepared"] {
        let (ok, text) = pgbench(
            &env.pg_url("trusted"),
            &["-S", "-c", "4", "-j", "2", "-t", "300", "-M", mode],
        );
        assert!(ok, "{mode}: {text}");
        assert!(
            text.contains("number of failed transactions: 0"),
            "{mode}: {text}"
        );
        assert!(
            text.contains("number of transactions actually processed: 1200/1200"),
            "{mode}: {text}"
        );
    }
    // The analyst, under the demo policy, with a script of its own against orders.
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        script.path(),
        "\\set id random(1, 20000)\nSELECT amount, created_at FROM orders WHERE id = :id;\n",
    )
    .unwrap();
    let (ok, text) = pgbench(
        &env.pg_url("analyst"),
        &[
            "-f",
            script.path().to_str().unwrap(),
            "-c",
            "4",
            "-j",
            "2",
            "-t",
            "300",
            "-M",
            "extended",
        ],
    );
    assert!(
        ok && text.contains("number of failed transactions: 0"),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(120));
}

/// A copy of the demo's files whose config drains for at most `drain_ms` on SIGTERM.
fn drain_demo_dir(drain_ms: u64) -> tempfile::TempDir {
    demo_dir_with(|t| with_limits(t, &format!("drain_timeout_ms = {drain_ms}")))
}

#[test]
fn sigterm_drains_a_statement_in_flight_and_refuses_new_connections() {
    let dir = drain_demo_dir(10_000);
    let mut served = serve(dir);
    let env = &harness().env;
    let url = |agent: &str| {
        env.pg_url(agent).replace(
            &format!(":{}/", env.pg_port),
            &format!(":{}/", served.pg_port),
        )
    };
    let started = Instant::now();
    harness().runtime.block_on(async {
        let busy = support::connect_url(&url("trusted")).await.unwrap();
        let idle = support::connect_url(&url("analyst")).await.unwrap();
        let mut redis = redis::Client::open(env.redis_url("analyst").replace(
            &format!(":{}", env.redis_port),
            &format!(":{}", served.redis_port),
        ))
        .unwrap()
        // Bounded waits: a reply the gateway never sends fails this test instead of hanging it.
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new().set_response_timeout(Duration::from_secs(30)),
        )
        .await
        .unwrap();
        let _: Option<String> = redis::cmd("GET")
            .arg("cache:1")
            .query_async(&mut redis)
            .await
            .unwrap();
        idle.simple_query("SELECT 1 FROM orders LIMIT 1")
            .await
            .unwrap();
        let in_flight = tokio::spawn(async move {
            let rows = busy
                .simple_query("SELECT pg_sleep(1.5), 42 AS answer")
                .await;
            (rows, busy)
        });
        // An MCP call in progress finishes too (it was once cancelled when the drain began).
        let mcp_call = tokio::spawn(trusted_mcp_query(
            served.mcp_port(),
            "SELECT pg_sleep(1.5), 43 AS answer",
        ));
        tokio::time::sleep(Duration::from_millis(400)).await;
        served.signal("TERM");
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Draining: the listener is closed.
        let refused = tokio::net::TcpStream::connect(("127.0.0.1", served.pg_port)).await;
        assert!(
            refused.is_err(),
            "a new connection was accepted during the drain"
        );
        // The idle session was closed at once, like a server shutting down (57P01).
        let e = within(idle.simple_query("SELECT 1"), "the idle session's answer")
            .await
            .unwrap_err();
        assert!(
            idle.is_closed() || support::sqlstate(&e) == "57P01",
            "idle session: {e:?}"
        );
        // The idle Redis session was closed too.
        let r: Result<Option<String>, _> = redis::cmd("GET")
            .arg("cache:1")
            .query_async(&mut redis)
            .await;
        assert!(r.is_err(), "the Redis session survived the drain");
        // The running statement finished and its result reached the client.
        let (rows, busy) = within(in_flight, "the statement in flight").await.unwrap();
        let rows = rows.expect("the statement in flight completed");
        let answer = rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get("answer").map(str::to_owned),
            _ => None,
        });
        assert_eq!(answer.as_deref(), Some("42"));
        let reply = mcp_call.await.unwrap().unwrap();
        assert!(
            reply.contains("43") && !reply.contains("\"error\""),
            "the MCP call in progress: {reply}"
        );
        // Then that session is closed too.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            within(busy.simple_query("SELECT 1"), "the busy session's close")
                .await
                .is_err()
        );
    });
    exited_cleanly_before_the_deadline(&mut served, started);
    let audit = std::fs::read_to_string(served.dir().join("audit.log")).unwrap();
    let sleep_seq = audit
        .lines()
        .find(|l| l.contains("pg_sleep(1.5)"))
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|v| v["seq"].as_u64())
        .expect("the statement's decision record");
    let outcome = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["ref_seq"].as_u64() == Some(sleep_seq))
        .expect("the statement's outcome record was written before exit");
    assert_eq!(outcome["decision"], "allowed", "{outcome}");
    assert_eq!(outcome["rows"], 1, "{outcome}");
    assert_start_and_stop(&audit, 0);
}

/// The run's records open with a `start` record (this process's pid) and end with a `stop`
/// record counting the sessions closed at the drain's deadline: session numbers start again at
/// 1 in each run, and these records tell the runs apart.
fn assert_start_and_stop(audit: &str, forced: u64) {
    let records: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let first = records.first().expect("records");
    assert_eq!(first["kind"], "start", "{first}");
    assert!(first["pid"].as_u64().is_some_and(|p| p > 0), "{first}");
    assert_eq!(first["version"], env!("CARGO_PKG_VERSION"), "{first}");
    let last = records.last().unwrap();
    assert_eq!(last["kind"], "stop", "{last}");
    assert_eq!(last["forced"], forced, "{last}");
    assert_eq!(
        records.iter().filter(|r| r["kind"] == "start").count(),
        1,
        "one run"
    );
}

/// An MCP call still running when the drain's time is up gets a JSON-RPC error naming the
/// shutdown (rmcp's own cancellation answered HTTP 500 with a line of text).
#[test]
fn an_mcp_call_still_running_at_the_drain_deadline_gets_a_json_rpc_error() {
    let mut served = serve(drain_demo_dir(1_000));
    let reply = harness().runtime.block_on(async {
        let call = tokio::spawn(trusted_mcp_query(
            served.mcp_port(),
            "SELECT pg_sleep(30), 45 AS answer",
        ));
        tokio::time::sleep(Duration::from_millis(400)).await;
        served.signal("TERM");
        call.await.unwrap()
    });
    let reply = reply.expect("a reply");
    let message: serde_json::Value = serde_json::from_str(&reply)
        .unwrap_or_else(|e| panic!("not a JSON-RPC message ({e}): {reply}"));
    let error = message["error"]["message"].as_str().unwrap_or_default();
    assert!(error.contains("shutting down"), "{reply}");
    let code = served
        .wait_exit(Duration::from_secs(10))
        .expect("serve exited after the drain");
    assert_eq!(code, 0);
}

/// Connections that have not logged in have nothing running: a drain closes them at once
/// instead of waiting for its deadline (a MongoDB driver's monitoring connection never logs
/// in, so one connected driver held every shutdown for the whole drain).
#[test]
fn sigterm_closes_connections_that_have_not_logged_in_at_once() {
    let mut served = serve(drain_demo_dir(10_000));
    let ports = [
        served.pg_port,
        served.redis_port,
        served.mongo_port(),
        served.mcp_port(),
    ];
    let mut waiting = Vec::new();
    for port in ports {
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        waiting.push((port, s));
    }
    // A PostgreSQL login half done: the startup message sent, the password never.
    let mut half = std::net::TcpStream::connect(("127.0.0.1", served.pg_port)).unwrap();
    let mut startup = bytes::BytesMut::new();
    postgres_protocol::message::frontend::startup_message(
        [("user", "analyst"), ("database", "shop")],
        &mut startup,
    )
    .unwrap();
    std::io::Write::write_all(&mut half, &startup).unwrap();
    half.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    served.signal("TERM");
    let code = served
        .wait_exit(Duration::from_secs(9))
        .expect("serve exited before the drain deadline");
    assert_eq!(code, 0);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "exited after {:?}",
        started.elapsed()
    );
    for (port, mut s) in waiting {
        let mut buf = [0u8; 64];
        let n = std::io::Read::read(&mut s, &mut buf);
        assert!(matches!(n, Ok(0) | Err(_)), "port {port}: {n:?}");
    }
}

/// A SIGTERM while the doors still start (a stalled Redis upstream holds its door's start for
/// the connect timeout, while the PostgreSQL listener already serves) is a drain once they
/// have: exit 0. The handlers were installed after the start, and the signal killed it.
#[test]
fn a_sigterm_while_the_doors_start_is_a_drain_not_a_kill() {
    use support::served::{Proxy, ProxyMode};
    let env = &harness().env;
    let upstream_redis: u16 = env
        .upstream_redis_url
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .expect("the upstream Redis port");
    let stalled = Proxy::start(upstream_redis, ProxyMode::Stall);
    let dir = demo_dir_with(|t| {
        t.replace(
            &format!("port = {upstream_redis}"),
            &format!("port = {}", stalled.port),
        )
    });
    let mut child = Command::new(tollgate_bin())
        .args(["serve", "--config"])
        .arg(dir.path().join("tollgate.toml"))
        .env_remove("TOLLGATE_MASTER_KEY")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("PostgreSQL listener ready") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the PostgreSQL listener started");
    let pid = child.id().to_string();
    let kill = |sig: &str| Command::new("kill").args([sig, &pid]).status().unwrap();
    assert!(kill("-TERM").success());
    let until = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > until {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if status.is_none() {
        kill("-KILL");
        let _ = child.wait();
    }
    let status = status.expect("serve exited");
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// `f`'s output, or a panic naming `what` after 30 s: a wait on a reply that never comes
/// fails the test with the step it hung at.
async fn within<F: std::future::Future>(f: F, what: &str) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .unwrap_or_else(|_| panic!("no {what} within 30 s"))
}

/// `served` exited with 0 within 10 s, and less than 8 s after `started`: before the drain's
/// 10 s deadline (whatever still ran ended by itself).
fn exited_cleanly_before_the_deadline(served: &mut Served, started: Instant) {
    let code = served
        .wait_exit(Duration::from_secs(10))
        .expect("serve exited after the drain");
    assert_eq!(code, 0);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the drain did not wait for the deadline"
    );
}

/// The MCP `query` tool's reply to `sql`, as the demo's `trusted` agent (bounded wait).
async fn trusted_mcp_query(port: u16, sql: &'static str) -> reqwest::Result<String> {
    let bearer = format!("Bearer trusted:{}", harness().env.token("trusted"));
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "query", "arguments": {"sql": sql}}});
    reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/mcp"))
        .timeout(Duration::from_secs(30))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .header("authorization", bearer)
        .json(&body)
        .send()
        .await?
        .text()
        .await
}

/// An MCP call in progress alone holds the drain: the process exits once its reply is sent
/// (its HTTP connection counts as a live session), not as soon as no wire session is left.
#[test]
fn sigterm_waits_for_an_mcp_call_in_progress_alone() {
    let served = serve(drain_demo_dir(10_000));
    let started = Instant::now();
    let reply = harness().runtime.block_on(async {
        let call = tokio::spawn(trusted_mcp_query(
            served.mcp_port(),
            "WITH s AS MATERIALIZED (SELECT pg_sleep(1.5)) \
             SELECT 44 AS answer, repeat('x', 2000) AS pad FROM s, generate_series(1, 400)",
        ));
        tokio::time::sleep(Duration::from_millis(400)).await;
        served.signal("TERM");
        call.await.unwrap()
    });
    let mut served = served;
    let reply = reply.expect("the MCP call in progress got its reply");
    assert!(
        reply.contains("44") && !reply.contains("\"error\""),
        "the MCP call in progress: {reply}"
    );
    exited_cleanly_before_the_deadline(&mut served, started);
}

#[test]
fn sigterm_closes_what_still_runs_at_the_drain_deadline() {
    let dir = drain_demo_dir(500);
    let mut served = serve(dir);
    let env = &harness().env;
    let url = env.pg_url("trusted").replace(
        &format!(":{}/", env.pg_port),
        &format!(":{}/", served.pg_port),
    );
    let started = Instant::now();
    harness().runtime.block_on(async {
        let busy = support::connect_url(&url).await.unwrap();
        let in_flight = tokio::spawn(async move { busy.simple_query("SELECT pg_sleep(30)").await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        served.signal("TERM");
        let e = in_flight
            .await
            .unwrap()
            .expect_err("closed at the deadline");
        assert!(e.is_closed() || support::sqlstate(&e) == "57P01", "{e:?}");
    });
    let code = served
        .wait_exit(Duration::from_secs(10))
        .expect("serve exited");
    assert_eq!(code, 0);
    assert!(started.elapsed() < Duration::from_secs(8));
    let audit = std::fs::read_to_string(served.dir().join("audit.log")).unwrap();
    assert_start_and_stop(&audit, 1);
}

/// A second SIGTERM during the drain closes what still runs at once, as PgBouncer takes one
/// ("shut down now"): it was ignored, and the drain ran to its deadline (30 s by default).
#[test]
fn a_second_sigterm_ends_the_drain_at_once() {
    let dir = drain_demo_dir(30_000);
    let mut served = serve(dir);
    let env = &harness().env;
    let url = env.pg_url("trusted").replace(
        &format!(":{}/", env.pg_port),
        &format!(":{}/", served.pg_port),
    );
    let started = Instant::now();
    harness().runtime.block_on(async {
        let busy = support::connect_url(&url).await.unwrap();
        let in_flight = tokio::spawn(async move { busy.simple_query("SELECT pg_sleep(30)").await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        served.signal("TERM");
        tokio::time::sleep(Duration::from_millis(500)).await;
        served.signal("TERM");
        let e = in_flight.await.unwrap().expect_err("closed at once");
        assert!(e.is_closed() || support::sqlstate(&e) == "57P01", "{e:?}");
    });
    let code = served
        .wait_exit(Duration::from_secs(10))
        .expect("serve exited");
    assert_eq!(code, 0);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

/// `tollgate demo` reloads on SIGHUP (it was killed by it: a closed terminal sends one) and
/// drains on SIGTERM as `serve` does, before its servers stop: a statement in flight finishes
/// (it got PostgreSQL's 57P01 when the upstream stopped under it).
#[test]
fn the_demo_reloads_on_sighup_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("demo.env");
    let mut child = Command::new(tollgate_bin())
        .args(["demo", "--env-file", env_file.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_to_string(&env_file).map_or(true, |t| t.is_empty()) {
        assert!(Instant::now() < deadline, "the demo did not start");
        assert!(child.try_wait().unwrap().is_none(), "the demo exited");
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = std::fs::read_to_string(&env_file).unwrap();
    let url = text
        .lines()
        .find_map(|l| l.strip_prefix("TOLLGATE_PG_TRUSTED_URL="))
        .expect("the trusted URL")
        .trim_matches(['\'', '"'])
        .to_string();
    let pid = child.id().to_string();
    let kill = |sig: &str| {
        Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .unwrap();
    };
    kill("HUP");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP killed the demo"
    );
    let answer = harness().runtime.block_on(async {
        let c = support::connect_url(&url).await.unwrap();
        let in_flight =
            tokio::spawn(async move { c.simple_query("SELECT pg_sleep(1.5), 42 AS answer").await });
        tokio::time::sleep(Duration::from_millis(400)).await;
        kill("TERM");
        let rows = in_flight
            .await
            .unwrap()
            .expect("the statement in flight completed");
        rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get("answer").map(str::to_owned),
            _ => None,
        })
    });
    assert_eq!(answer.as_deref(), Some("42"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the demo did not exit");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn certs_dev_writes_private_keys_once_and_check_loads_them() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let (code, stdout, stderr) = run(&["certs", "dev", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("sslmode=verify-full"), "{stdout}");
    for f in ["ca.crt", "server.crt", "client.crt"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    for f in ["ca.key", "server.key", "client.key"] {
        let mode = std::fs::metadata(out.join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
        // Keys are written, never printed.
        let key = std::fs::read_to_string(out.join(f)).unwrap();
        assert!(!stdout.contains(key.lines().nth(1).unwrap()));
    }
    let (code, _, stderr) = run(&["certs", "dev", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("--force"), "{stderr}");
    let (code, _, stderr) = run(&["certs", "dev", "--out", out.to_str().unwrap(), "--force"]);
    assert_eq!(code, 0, "{stderr}");

    // `tollgate check` loads the certificate: a broken one is reported.
    let demo = support::copy_demo_dir();
    let cfg = demo.path().join("tollgate.toml");
    let (code, _, stderr) = run(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    std::fs::write(
        demo.path().join("tls/server.key"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let (code, _, stderr) = run(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("server.key"), "{stderr}");
}

#[test]
fn serve_reloads_the_certificate_on_sighup() {
    let dir = support::copy_demo_dir();
    let served = serve(dir);
    let tls = served.dir().join("tls");
    let old_ca = served.dir().join("old-ca.crt");
    std::fs::copy(tls.join("ca.crt"), &old_ca).unwrap();
    let url = support::tls::pg_url_at("analyst", served.pg_port);
    let cb = tokio_postgres::config::ChannelBinding::Require;
    harness().runtime.block_on(async {
        let open = support::tls::pg_connect_tls(&url, &old_ca, cb)
            .await
            .unwrap();
        let (code, _, stderr) = run(&["certs", "dev", "--out", tls.to_str().unwrap(), "--force"]);
        assert_eq!(code, 0, "{stderr}");
        let hup = Command::new("kill")
            .args(["-HUP", &served.child.id().to_string()])
            .status()
            .unwrap();
        assert!(hup.success());
        let new_ca = tls.join("ca.crt");
        let deadline = Instant::now() + Duration::from_secs(10);
        while support::tls::pg_connect_tls(&url, &new_ca, cb)
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "certificate not reloaded");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        open.simple_query("SELECT 1")
            .await
            .expect("the session opened before the reload continues");
    });
    assert!(served
        .log
        .lock()
        .unwrap()
        .contains("TLS certificate reloaded"));
}

/// Commands that read a file, change it and write it back take turns: run at once, none loses
/// another's change (20 concurrent `vault set` kept 8 secrets and 15 `agent add` kept one, each
/// saying it succeeded), and a `rotate-key` racing `vault set`s leaves the vault under the key it
/// said it wrote (it once ended up under the old key).
#[test]
fn concurrent_cli_changes_to_one_file_all_land() {
    use std::io::Write;
    let dir = support::copy_demo_dir();
    let cfg = dir.path().join("tollgate.toml");
    let cfg = cfg.to_str().unwrap().to_string();
    let spawn = |args: Vec<String>, stdin: Option<&str>| {
        let mut child = Command::new(tollgate_bin())
            .args(&args)
            .env_remove("TOLLGATE_MASTER_KEY")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        let _ = input.write_all(stdin.unwrap_or("").as_bytes()); // read or not, by the command
        drop(input);
        child
    };
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let mut children = Vec::new();
    for i in 0..12 {
        let name = format!("racer{i}");
        children.push(spawn(
            s(&["vault", "--config", &cfg, "set", &format!("s{i}")]),
            Some("value\n"),
        ));
        children.push(spawn(s(&["agent", "add", &name, "--config", &cfg]), None));
        children.push(spawn(
            s(&[
                "admin-token",
                "add",
                &name,
                "--role",
                "viewer",
                "--config",
                &cfg,
            ]),
            None,
        ));
    }
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (_, secrets, err) = run(&["vault", "--config", &cfg, "list"]);
    let (_, agents, _) = run(&["agent", "list", "--config", &cfg]);
    let (_, tokens, _) = run(&["admin-token", "list", "--config", &cfg]);
    for i in 0..12 {
        assert!(
            secrets.lines().any(|l| l == format!("s{i}")),
            "s{i}: {secrets}{err}"
        );
        assert!(
            agents
                .lines()
                .any(|l| l.starts_with(&format!("racer{i}\t"))),
            "{agents}"
        );
        assert!(
            tokens
                .lines()
                .any(|l| l.starts_with(&format!("racer{i}\t"))),
            "{tokens}"
        );
    }

    // rotate-key among vault sets: those before it land, those after it fail (the config's key
    // is the old one), and the vault opens with the new key.
    let new_key = dir.path().join("new.key");
    let mut children = Vec::new();
    for i in 0..4 {
        children.push(spawn(
            s(&["vault", "--config", &cfg, "set", &format!("late{i}")]),
            Some("value\n"),
        ));
        if i == 1 {
            children.push(spawn(
                s(&[
                    "vault",
                    "--config",
                    &cfg,
                    "rotate-key",
                    "--new-key-file",
                    new_key.to_str().unwrap(),
                ]),
                None,
            ));
        }
    }
    let mut said = String::new();
    for c in children {
        said += &String::from_utf8_lossy(&c.wait_with_output().unwrap().stderr);
    }
    assert!(said.contains("vault re-encrypted"), "{said}");
    std::fs::rename(&new_key, dir.path().join("master.key")).unwrap();
    let (code, secrets, err) = run(&["vault", "--config", &cfg, "list"]);
    assert_eq!(code, 0, "the vault opens with the new key: {err}");
    assert!(secrets.lines().any(|l| l == "s11"), "{secrets}");

    // Reading takes no lock (a read-only config directory still reads); writing says why not.
    let lock_path = dir.path().join(".vault.json.lock");
    std::fs::remove_file(&lock_path).unwrap();
    std::fs::create_dir(&lock_path).unwrap();
    let (code, _, err) = run(&["vault", "--config", &cfg, "get", "s3"]);
    assert_eq!(code, 0, "{err}");
    // `--config` after the subcommand too, as `agent list --config C` takes it (it was an
    // unexpected argument: a review).
    let (code, after, err) = run(&["vault", "list", "--config", &cfg]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(after, run(&["vault", "--config", &cfg, "list"]).1);
    let out = spawn(s(&["vault", "--config", &cfg, "set", "x"]), Some("v\n"))
        .wait_with_output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("cannot lock"),
        "{err}"
    );
}
