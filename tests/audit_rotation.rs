//! The demo configured to rotate its audit log every N records, under concurrent pgbench and
//! redis-benchmark load: every statement sent has exactly one decision record, the chain
//! verifies across all the files, and removing or editing one file is caught. Rotation on
//! demand (SIGUSR1, the admin API) and the admin query across rotated files are checked on the
//! same log.

use std::path::Path;
use std::process::Command;

use tollgate::demo::seed::SeedOptions;
use tollgate::demo::{Demo, DemoOptions};

const ROTATE_EVERY: u64 = 1000;
const PG_CLIENTS: u32 = 4;
const PG_PER_CLIENT: u32 = 1000;
const REDIS_COMMANDS: u32 = 20_000;

fn tollgate(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Every record of the log, oldest first.
fn records(dir: &Path) -> Vec<serde_json::Value> {
    let files = tollgate::audit::files::list_dir(dir).unwrap();
    let mut out = Vec::new();
    for f in files {
        for line in String::from_utf8(f.read_all().unwrap()).unwrap().lines() {
            out.push(serde_json::from_str(line).unwrap());
        }
    }
    out
}

fn pgbench(url: &str, script: &Path) -> std::process::Output {
    Command::new("pgbench")
        .args([
            "-n",
            "-c",
            &PG_CLIENTS.to_string(),
            "-j",
            "2",
            "-t",
            &PG_PER_CLIENT.to_string(),
            "-f",
        ])
        .arg(script)
        .arg(url)
        .output()
        .unwrap()
}

fn redis_benchmark(port: u16, token: &str) -> std::process::Output {
    Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "--user",
            "writer",
            "-a",
            token,
        ])
        .args([
            "-c",
            "8",
            "-n",
            &REDIS_COMMANDS.to_string(),
            "-r",
            "100000",
            "-q",
        ])
        .args(["SET", "cache:rot:__rand_int__", "x"])
        .output()
        .unwrap()
}

#[test]
fn rotation_under_load_keeps_every_record_and_one_chain() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let demo = rt
        .block_on(Demo::start(DemoOptions {
            seed: SeedOptions {
                customers: 200,
                orders: 2_000,
                ..SeedOptions::default()
            },
            unlimited_rate: true,
            audit_rotate_records: Some(ROTATE_EVERY),
            ..DemoOptions::default()
        }))
        .expect("demo starts");
    let env = demo.env.clone();
    let dir = env.audit_log.parent().unwrap().to_path_buf();
    let script = dir.join("bench.sql");
    std::fs::write(
        &script,
        "\\set id random(1, 2000)\nSELECT amount FROM orders WHERE id = :id;\n",
    )
    .unwrap();

    // Both loads at once, from outside the process, as real clients.
    let pg_url = env.pg_url("writer");
    let redis_token = env.token("writer").to_string();
    let redis_port = env.redis_port;
    let pg = std::thread::spawn(move || pgbench(&pg_url, &script));
    let redis = std::thread::spawn(move || redis_benchmark(redis_port, &redis_token));
    let (pg, redis) = (pg.join().unwrap(), redis.join().unwrap());
    let pg_out = String::from_utf8_lossy(&pg.stdout);
    assert!(
        pg.status.success(),
        "pgbench: {pg_out}{}",
        String::from_utf8_lossy(&pg.stderr)
    );
    let sent = PG_CLIENTS * PG_PER_CLIENT;
    assert!(
        pg_out.contains(&format!(
            "number of transactions actually processed: {sent}/{sent}"
        )),
        "{pg_out}"
    );
    assert!(
        redis.status.success(),
        "redis-benchmark: {}",
        String::from_utf8_lossy(&redis.stderr)
    );
    demo.running.gateway.core.audit.flush().unwrap();

    let all = records(&dir);
    let count = |protocol: &str, prefix: &str| {
        all.iter()
            .filter(|r| {
                r["kind"] == "decision"
                    && r["protocol"] == protocol
                    && r["agent"] == "writer"
                    && r["statement"]
                        .as_str()
                        .is_some_and(|s| s.starts_with(prefix))
            })
            .count() as u32
    };
    assert_eq!(
        count("postgres", "SELECT amount FROM orders WHERE id = "),
        sent
    );
    assert_eq!(count("redis", "SET cache:rot:"), REDIS_COMMANDS);
    let closed = tollgate::audit::files::list_dir(&dir).unwrap().len() - 1;
    assert!(
        closed as u64 >= all.len() as u64 / ROTATE_EVERY - 1,
        "{closed} closed files for {} records",
        all.len()
    );
    let (code, out) = tollgate(&["audit", "verify", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    eprintln!(
        "{} records in {} closed files and the active one; {out}",
        all.len(),
        closed
    );

    // On demand: SIGUSR1 and the admin API each close the active file.
    let before = closed;
    demo.running
        .gateway
        .core
        .audit
        .append(&session_event())
        .unwrap();
    let kill = Command::new("kill")
        .args(["-USR1", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while tollgate::audit::files::list_dir(&dir).unwrap().len() - 1 == before {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGUSR1 did not rotate the log"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    demo.running
        .gateway
        .core
        .audit
        .append(&session_event())
        .unwrap();
    let (status, body) = rt.block_on(admin_post(
        &env.admin_url(),
        "/api/v1/audit/rotate",
        &env.admin_token,
    ));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rotated"], true, "{body}");
    let closed_name = body["closed_file"].as_str().unwrap().to_string();
    assert!(dir.join(&closed_name).exists(), "{body}");
    let (status, body) = rt.block_on(admin_post(
        &env.admin_url(),
        "/api/v1/audit/rotate",
        &env.admin_viewer_token,
    ));
    assert_eq!(status, 403, "{body}");

    // The admin query reads back into closed files.
    let oldest_sets = rt.block_on(admin_get(
        &env.admin_url(),
        "/api/v1/audit?agent=writer&limit=1000",
        &env.admin_viewer_token,
    ));
    assert_eq!(oldest_sets["records"].as_array().unwrap().len(), 1000);
    let (code, out) = tollgate(&["audit", "verify", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");

    // Any single file removed or edited breaks verification (checked on a copy).
    let files = tollgate::audit::files::list_dir(&dir).unwrap();
    let middle = &files[files.len() / 2];
    let copy = tempfile::tempdir().unwrap();
    for f in &files {
        std::fs::copy(&f.path, copy.path().join(&f.name)).unwrap();
    }
    std::fs::remove_file(copy.path().join(&middle.name)).unwrap();
    let (code, out) = tollgate(&["audit", "verify", copy.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "continues from \"{}\", which is missing",
            middle.name
        )),
        "{out}"
    );
    std::fs::copy(&middle.path, copy.path().join(&middle.name)).unwrap();
    let text = std::fs::read_to_string(&middle.path).unwrap();
    std::fs::write(
        copy.path().join(&middle.name),
        text.replacen("\"writer\"", "\"wrıter\"", 1),
    )
    .unwrap();
    let (code, out) = tollgate(&["audit", "verify", copy.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("BROKEN: {} line ", middle.name)) && out.contains("hash mismatch"),
        "{out}"
    );
    rt.block_on(async move { drop(demo) });
}

fn session_event() -> tollgate::audit::AuditEvent {
    tollgate::audit::AuditEvent {
        kind: tollgate::audit::EventKind::Session,
        agent: "test".into(),
        reason: Some("a record so the active file is not empty".into()),
        ..Default::default()
    }
}

async fn admin_post(base: &str, path: &str, token: &str) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

async fn admin_get(base: &str, path: &str, token: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
