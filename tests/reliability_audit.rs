//! Fault injection: the audit log's disk fills up under a running gateway (`tollgate serve` as
//! a child, its audit log on a 1 MiB tmpfs filled to the last byte). PostgreSQL statements,
//! simple and extended, must be refused with FATAL 58030 and never reach the database; Redis
//! commands get the audit refusal and never reach Redis, and the Redis session goes on. Once
//! space is freed, service resumes by itself (no restart, no rotation), the chain verifies, and
//! every row the database holds has its decision record: nothing ran unaudited.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::served::{demo_dir_with, Served};
use support::{harness, sqlstate, tollgate_bin};

/// A tmpfs mounted for the test; unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test needs to mount a tmpfs (root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem holding `dir` with a file of its own; returns the file.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
    // Byte by byte into the last partial page.
    while f.write_all(&[0]).is_ok() {}
    let _ = f.sync_all();
    path
}

const MARK: &str = "424242";

fn marker_amount(i: usize) -> String {
    format!("{MARK}.{:02}", i % 100)
}

async fn marked_rows(up: &tokio_postgres::Client, tag: &str) -> Vec<String> {
    let rows = up
        .query(
            "SELECT amount::text FROM orders WHERE amount::text LIKE $1 AND created_at = $2::text::timestamptz",
            &[&format!("{MARK}.%"), &tag_time(tag)],
        )
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

/// Each run marks its rows with a timestamp of its own (the table is shared by the suite).
fn tag_time(tag: &str) -> String {
    format!("2001-01-01 00:00:{tag}+00")
}

#[test]
fn a_full_audit_disk_refuses_everything_then_service_resumes_when_space_returns() {
    let work = tempfile::tempdir().unwrap();
    let mnt = work.path().join("auditfs");
    let _fs = Tmpfs::mount(&mnt, "1m");
    let log = mnt.join("audit.log");
    let dir = demo_dir_with(|t| {
        t.replace(
            "file = \"audit.log\"",
            &format!("file = \"{}\"", log.display()),
        )
    });
    let served = Served::start(dir, "");
    let h = harness();
    let tag = format!("{:02}", std::process::id() % 60);
    h.runtime.block_on(async {
        let up = support::upstream().await;
        let up_redis = redis::Client::open(h.env.upstream_redis_url.as_str()).unwrap();
        let mut up_redis = up_redis.get_multiplexed_async_connection().await.unwrap();
        up.execute(
            "DELETE FROM orders WHERE created_at = $1::text::timestamptz",
            &[&tag_time(&tag)],
        )
        .await
        .unwrap();

        // Working: one statement of each kind goes through.
        let insert = |i: usize| {
            format!(
                "INSERT INTO orders (customer_id, amount, created_at) VALUES (1, {}, '{}')",
                marker_amount(i),
                tag_time(&tag)
            )
        };
        let pg = support::connect_url(&served.pg_url("writer")).await.unwrap();
        pg.simple_query(&insert(0)).await.unwrap();
        let mut rc = redis::Client::open(served.redis_url("writer"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg("cache:rel:audit:0")
            .arg("x")
            .query_async(&mut rc)
            .await
            .unwrap();

        // The disk fills up.
        let filler = fill(&mnt);
        let mut refused_pg = 0;
        let mut i = 1;
        drop(pg);
        // A few records may still fit in the file's last page: go on until refusals start,
        // then make sure each kind of statement is refused several times. A connection of its
        // own per statement: a session whose outcome records fail to be written ends too
        // (FATAL 58030 while idle), which would hide which statement was refused.
        while refused_pg < 6 && i < 400 {
            let c = support::connect_url(&served.pg_url("writer")).await.unwrap();
            let r = if i % 2 == 0 {
                c.simple_query(&insert(i)).await.map(|_| ())
            } else {
                // Extended protocol, with a parameter (the amount stays in the text, so the
                // row can be matched with its record).
                c.execute(
                    &format!(
                        "INSERT INTO orders (customer_id, amount, created_at) VALUES (1, {}, $1::text::timestamptz)",
                        marker_amount(i)
                    ),
                    &[&tag_time(&tag)],
                )
                .await
                .map(|_| ())
            };
            if let Err(e) = r {
                assert_eq!(sqlstate(&e), "58030", "statement {i}: {e}");
                assert!(
                    support::db_message(&e).contains("the audit log cannot be written"),
                    "{e}"
                );
                assert!(c.simple_query("SELECT 1").await.is_err(), "the session ended");
                refused_pg += 1;
            }
            i += 1;
        }
        assert_eq!(refused_pg, 6, "PostgreSQL statements were refused on a full disk");
        let mut refused_redis = 0;
        for k in 1..=20 {
            let r: redis::RedisResult<()> = redis::cmd("SET")
                .arg(format!("cache:rel:audit:{k}"))
                .arg("x")
                .query_async(&mut rc)
                .await;
            if let Err(e) = r {
                assert!(
                    support::redis_error(&e).contains("the audit log cannot be written"),
                    "{e}"
                );
                refused_redis += 1;
                let v: Option<String> = redis::cmd("GET")
                    .arg(format!("cache:rel:audit:{k}"))
                    .query_async(&mut up_redis)
                    .await
                    .unwrap();
                assert_eq!(v, None, "a refused SET reached Redis");
            }
        }
        assert!(refused_redis >= 15, "Redis commands were refused: {refused_redis}");
        // The MCP `query` tool: refused, and its INSERT never reaches the database (it ran,
        // and its record was lost with the failed write; a live review).
        let mcp = format!("http://127.0.0.1:{}/mcp", served.mcp_port());
        for k in 0..3 {
            let amount = format!("{MARK}.{}", 90 + k);
            let sql = format!(
                "INSERT INTO orders (customer_id, amount, created_at) VALUES (1, {amount}, '{}')",
                tag_time(&tag)
            );
            let reply = support::mcp_tool_call(&mcp, "writer", "query", serde_json::json!({"sql": sql}))
                .await
                .to_string();
            assert!(reply.contains("the audit log cannot be written"), "{reply}");
            assert!(
                !marked_rows(&up, &tag).await.contains(&amount),
                "an MCP INSERT refused for the audit log reached the database"
            );
        }

        // Space returns: service resumes by itself, the Redis session included.
        std::fs::remove_file(&filler).unwrap();
        let pg = support::connect_url(&served.pg_url("writer")).await.unwrap();
        pg.simple_query(&insert(99)).await.unwrap();
        let _: () = redis::cmd("SET")
            .arg("cache:rel:audit:after")
            .arg("x")
            .query_async(&mut rc)
            .await
            .unwrap();

        // Nothing ran unaudited: every marked row has its decision record in the log.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let audit = std::fs::read_to_string(&log).unwrap();
        let rows = marked_rows(&up, &tag).await;
        assert!(rows.len() >= 2, "{rows:?}");
        assert!(rows.len() < i, "refused statements reached the database: {rows:?}");
        for amount in &rows {
            assert!(
                audit.contains(amount.as_str()),
                "row {amount} is in the database but not in the audit log"
            );
        }
        for k in 1..=20 {
            let v: Option<String> = redis::cmd("GET")
                .arg(format!("cache:rel:audit:{k}"))
                .query_async(&mut up_redis)
                .await
                .unwrap();
            if v.is_some() {
                assert!(audit.contains(&format!("cache:rel:audit:{k}")), "SET {k} unaudited");
            }
        }
        up.execute(
            "DELETE FROM orders WHERE created_at = $1::text::timestamptz",
            &[&tag_time(&tag)],
        )
        .await
        .unwrap();
    });
    // The chain verifies, and says records were lost to the failed writes.
    let out = Command::new(tollgate_bin())
        .args(["audit", "verify"])
        .arg(&log)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("lost"), "{text}");
    drop(served);
}
