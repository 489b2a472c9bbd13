//! Under load (`tollgate serve` as a child): a storm of policy and vault reloads, valid and
//! invalid files interleaved, must fail no statement and never apply half a policy; SIGTERM
//! must let statements in flight finish, forward nothing unaudited and exit within the drain
//! deadline.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::served::{demo_dir_with, with_limits, Served};
use support::{harness, AdminAs};

const RELOADS: usize = 120;

/// Writes a policy file as a careful operator does: a temporary file renamed over it, so the
/// gateway's file watcher never reads half a file. (A file read half-written is judged as it
/// reads: one emptied to nothing is refused and the last good policy kept, one that names no
/// agent any more refuses them everything, see `fuzz_policy.rs`.)
fn replace_file(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn a_reload_storm_under_load_fails_no_statement_and_never_half_applies_a_policy() {
    let served = Served::start(demo_dir_with(|t| t), "");
    let policies = served.dir().join("policies");
    let writer_policy = std::fs::read_to_string(policies.join("writer.toml")).unwrap();
    let h = harness();
    h.runtime.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let mut load = Vec::new();
        // PostgreSQL: allowed statements must run, refused ones must stay refused.
        for agent in ["writer", "analyst", "writer", "analyst"] {
            let c = support::connect_url(&served.pg_url(agent)).await.unwrap();
            let (stop, done) = (stop.clone(), done.clone());
            load.push(tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    c.simple_query("SELECT id, amount FROM orders ORDER BY id LIMIT 3")
                        .await
                        .map_err(|e| format!("{agent}: allowed statement failed: {e}"))?;
                    let e = c
                        .simple_query("SELECT * FROM secrets")
                        .await
                        .err()
                        .ok_or(format!("{agent}: secrets read during the storm"))?;
                    if support::sqlstate(&e) != "42501" {
                        return Err(format!("{agent}: {e}"));
                    }
                    n += 2;
                    done.fetch_add(2, Ordering::Relaxed);
                }
                Ok::<usize, String>(n)
            }));
        }
        // Redis: the writer's reads and writes on cache:*, refused on admin:*.
        for _ in 0..2 {
            let mut r = redis::Client::open(served.redis_url("writer"))
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let (stop, done) = (stop.clone(), done.clone());
            load.push(tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let _: () = redis::cmd("SET")
                        .arg("cache:rel:storm")
                        .arg(n)
                        .query_async(&mut r)
                        .await
                        .map_err(|e| format!("redis SET failed: {e}"))?;
                    let refused: redis::RedisResult<Option<String>> =
                        redis::cmd("GET").arg("admin:x").query_async(&mut r).await;
                    if refused.is_ok() {
                        return Err("admin:x read during the storm".into());
                    }
                    n += 2;
                    done.fetch_add(2, Ordering::Relaxed);
                }
                Ok(n)
            }));
        }
        // The storm: valid and invalid writer policies in turn, each reloaded through the API
        // (and SIGHUP, which reloads the vault too, every tenth time).
        let started = Instant::now();
        let (mut ok, mut failed) = (0, 0);
        for i in 0..RELOADS {
            let text = match i % 4 {
                0 => format!("{writer_policy}\n# version {i}\n"),
                1 => format!("{writer_policy}\n[[postgres.table]]\nname = \"public.orders\"\nallow = [\"teleport\"]\n"),
                2 => "agents = [\"writer\"\n[[postgres]".to_string(),
                _ => writer_policy.replace("public.orders", "public.orders\"\"\""),
            };
            replace_file(&policies.join("writer.toml"), &text);
            if i % 10 == 9 {
                served.signal("HUP");
            }
            let (status, body) =
                support::admin_request(&served.admin_url(), "POST", "/api/v1/reload", AdminAs::Admin)
                    .await;
            match (i % 4, status) {
                (0, 200) => ok += 1,
                (1..=3, 422) => failed += 1,
                (kind, s) => panic!("reload {i} (kind {kind}) answered {s}: {body}"),
            }
        }
        replace_file(&policies.join("writer.toml"), &writer_policy);
        let storm = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        let mut statements = 0;
        for t in load {
            statements += t.await.unwrap().unwrap_or_else(|e| {
                let audit = std::fs::read_to_string(served.dir().join("audit.log")).unwrap();
                let leaks: Vec<&str> = audit
                    .lines()
                    .filter(|l| l.contains("FROM secrets") && !l.contains("\"blocked\""))
                    .take(3)
                    .collect();
                panic!("{e}\n{}", leaks.join("\n"))
            });
        }
        println!(
            "{RELOADS} reloads ({ok} valid, {failed} refused) in {:.1} s under load: {statements} statements, none failed",
            storm.as_secs_f64()
        );
        assert_eq!(ok, RELOADS / 4);
        assert!(statements > 200, "the load ran during the storm: {statements}");
    });
    drop(served);
}

#[test]
fn sigterm_under_load_finishes_what_runs_and_forwards_nothing_unaudited() {
    let mut served = Served::start(
        demo_dir_with(|t| with_limits(t, "drain_timeout_ms = 3000")),
        "",
    );
    let tag = format!("2002-02-02 00:00:{:02}+00", std::process::id() % 60);
    let h = harness();
    let acked = h.runtime.block_on(async {
        let up = support::upstream().await;
        up.execute("DELETE FROM orders WHERE created_at = $1::text::timestamptz", &[&tag])
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for t in 0..6 {
            let c = support::connect_url(&served.pg_url("writer")).await.unwrap();
            let tag = tag.clone();
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0.. {
                    let amount = format!("{}.{:02}", 900_000 + t * 10_000 + i, t);
                    let sql = format!(
                        "INSERT INTO orders (customer_id, amount, created_at) VALUES (1, {amount}, '{tag}')"
                    );
                    match c.simple_query(&sql).await {
                        Ok(_) => acked.push(amount),
                        Err(_) => break,
                    }
                }
                acked
            }));
        }
        tokio::time::sleep(Duration::from_millis(800)).await;
        served.signal("TERM");
        let mut acked = Vec::new();
        for t in tasks {
            acked.extend(t.await.unwrap());
        }
        acked
    });
    let code = served
        .wait_exit(Duration::from_secs(10))
        .expect("serve exited within the drain deadline");
    assert_eq!(code, 0);
    let audit = std::fs::read_to_string(served.dir().join("audit.log")).unwrap();
    h.runtime.block_on(async {
        let up = support::upstream().await;
        let rows: Vec<String> = up
            .query(
                "SELECT amount::text FROM orders WHERE created_at = $1::text::timestamptz",
                &[&tag],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        println!(
            "SIGTERM under load: {} inserts acknowledged, {} rows",
            acked.len(),
            rows.len()
        );
        assert!(acked.len() > 50, "the load ran: {}", acked.len());
        // What the client was told succeeded is there; at most one unacknowledged statement
        // per session was in flight.
        for a in &acked {
            assert!(rows.contains(a), "acknowledged insert {a} is missing");
        }
        assert!(rows.len() <= acked.len() + 6);
        // Nothing reached the database without its decision record.
        for r in &rows {
            assert!(
                audit.contains(&format!("VALUES (1, {r}, ")),
                "row {r} is unaudited"
            );
        }
        up.execute(
            "DELETE FROM orders WHERE created_at = $1::text::timestamptz",
            &[&tag],
        )
        .await
        .unwrap();
    });
}
