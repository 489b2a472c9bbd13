//! Upstream pooling against a real PostgreSQL: many agent sessions on few server connections,
//! session state never crossing agents on a transaction pool (each item also shown to leak when
//! isolation is disabled), prepared statements across connections, cancel, the checkout
//! timeout, a killed server connection replaced, and credentials rotated.

mod support;

use std::time::{Duration, Instant};

use support::{connect_url, copy_demo_dir, db_message, harness, sqlstate, upstream, vault_set};

/// A gateway of its own on a copy of the demo's files: every agent transaction-pooled on a
/// pool of `size` connections with `extra` upstream settings, logged in upstream as a role of
/// its own (a member of the demo's), so its server connections can be counted.
async fn gateway(size: u32, extra: &str) -> (tollgate::gateway::Running, Gw) {
    gateway_via(size, extra, None).await
}

/// The upstream PostgreSQL's port (from the demo's superuser URL).
fn upstream_port() -> u16 {
    let url = &harness().env.upstream_pg_url;
    let after_at = &url[url.rfind('@').unwrap() + 1..];
    let port = after_at
        .split(['/', '?'])
        .next()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap();
    port.parse().unwrap()
}

/// `gateway`, its pool reaching the upstream through port `via` (a relay) when given.
async fn gateway_via(size: u32, extra: &str, via: Option<u16>) -> (tollgate::gateway::Running, Gw) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let role = format!(
        "tg_pool_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let password = format!("pw-{role}-0123456789");
    upstream()
        .await
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN PASSWORD '{password}' IN ROLE tollgate_shop"
        ))
        .await
        .unwrap();
    let dir = copy_demo_dir();
    vault_set(dir.path(), "pool_user", &role);
    vault_set(dir.path(), "pool_password", &password);
    let config = dir.path().join("tollgate.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replacen(
            "user = \"vault:shop_user\"",
            "user = \"vault:pool_user\"",
            1,
        )
        .replacen(
            "password = \"vault:shop_password\"",
            "password = \"vault:pool_password\"",
            1,
        )
        .replacen("pool_size = 10", &format!("pool_size = {size}\n{extra}"), 1);
    let text = match via {
        Some(port) => text.replacen(
            &format!("port = {}\n", upstream_port()),
            &format!("port = {port}\n"),
            1,
        ),
        None => text,
    };
    std::fs::write(&config, text).unwrap();
    // The trusted agent too, so passthrough state (advisory locks, LISTEN, ...) is exercised.
    let trusted = dir.path().join("policies/trusted.toml");
    let text = std::fs::read_to_string(&trusted).unwrap();
    let text = text
        .lines()
        .filter(|l| !l.starts_with("pool_mode"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&trusted, text).unwrap();
    let config = tollgate::config::Config::load(&config).unwrap();
    let running = tollgate::gateway::start(config).await.unwrap();
    (running, Gw { _dir: dir, role })
}

/// The figures of the gateway's transaction pool (what /metrics and the admin API show).
fn transaction_pool(running: &tollgate::gateway::Running) -> tollgate::doors::PoolView {
    running
        .gateway
        .doors
        .iter()
        .flat_map(|d| d.pools())
        .find(|p| p.mode == "transaction")
        .expect("the transaction pool")
}

/// A test gateway's files and upstream role.
struct Gw {
    _dir: tempfile::TempDir,
    role: String,
}

fn url(running: &tollgate::gateway::Running, agent: &str) -> String {
    let token = harness().env.token(agent);
    let port = running.pg_addr.unwrap().port();
    format!("postgresql://{agent}:{token}@127.0.0.1:{port}/shop?sslmode=disable")
}

async fn client(running: &tollgate::gateway::Running, agent: &str) -> tokio_postgres::Client {
    connect_url(&url(running, agent))
        .await
        .unwrap_or_else(|e| panic!("connect as {agent}: {e}"))
}

async fn one(c: &tokio_postgres::Client, sql: &str) -> String {
    let rows = c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_string()),
            _ => None,
        })
        .unwrap_or_default()
}

/// Orders upstream whose amount is `marker` (a test's INSERT that did or did not run).
async fn orders_with_amount(marker: i64) -> i64 {
    upstream()
        .await
        .query_one(
            &format!("SELECT count(*) FROM orders WHERE amount = {marker}"),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// The process ids of the server connections a test gateway's role holds right now.
async fn server_pids(role: &str) -> Vec<i32> {
    let su = upstream().await;
    su.query(
        "SELECT pid FROM pg_stat_activity WHERE usename = $1 ORDER BY pid",
        &[&role],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Server connections a test gateway's role holds right now.
async fn server_connections(role: &str) -> i64 {
    backends(role, "").await
}

/// Backends of a test gateway's role; with a `running` text, only those running a statement
/// that holds it.
async fn backends(role: &str, running: &str) -> i64 {
    let active = if running.is_empty() {
        ""
    } else {
        " AND state = 'active' AND query LIKE $2"
    };
    let sql = format!("SELECT count(*) FROM pg_stat_activity WHERE usename = $1{active}");
    let like = format!("%{running}%");
    let su = upstream().await;
    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = if running.is_empty() {
        vec![&role]
    } else {
        vec![&role, &like]
    };
    su.query_one(&sql, &params).await.unwrap().get(0)
}

#[test]
fn many_agent_sessions_share_a_few_server_connections() {
    harness().runtime.block_on(async {
        let (running, gw) = gateway(5, "").await;
        let mut clients = Vec::new();
        for i in 0..150 {
            let agent = if i % 2 == 0 { "analyst" } else { "writer" };
            clients.push(client(&running, agent).await);
        }
        // Every session runs statements, some at the same time.
        let mut runs = Vec::new();
        for c in &clients {
            runs.push(c.query_one("SELECT count(*) FROM orders WHERE id < 10", &[]));
        }
        for r in futures_util::future::join_all(runs).await {
            assert_eq!(r.unwrap().get::<_, i64>(0), 9);
        }
        let held = server_connections(&gw.role).await;
        assert!(held <= 5, "{held} server connections for 150 sessions");
        assert!(held >= 1);
        // Operators see the same in the pool's figures.
        let pools: Vec<_> = running
            .gateway
            .doors
            .iter()
            .flat_map(|d| d.pools())
            .filter(|p| p.mode == "transaction")
            .collect();
        assert_eq!(pools.len(), 1);
        assert!(
            pools[0].open <= 5 && pools[0].checkouts >= 150,
            "{:?}",
            pools[0]
        );
        drop(clients);
        drop(running);
    });
}

/// Two agents take turns on one server connection: what one leaves must not reach the other.
async fn crossing(isolation: bool) -> Vec<(&'static str, bool)> {
    let extra = if isolation {
        ""
    } else {
        "test_disable_isolation = true"
    };
    let (running, gw) = gateway(2, extra).await;
    let mut leaked = Vec::new();
    let su = upstream().await;

    // A session-level SET.
    let a = client(&running, "trusted").await;
    a.batch_execute("SET work_mem = '1234kB'").await.unwrap();
    let b = client(&running, "writer").await;
    leaked.push(("SET", one(&b, "SHOW work_mem").await == "1234kB"));
    drop((a, b));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A temporary table.
    let a = client(&running, "trusted").await;
    a.batch_execute("CREATE TEMP TABLE scratch_pad (secret text); INSERT INTO scratch_pad VALUES ('from trusted')")
        .await
        .unwrap();
    let b = client(&running, "trusted").await;
    let seen = b
        .simple_query("SELECT secret FROM pg_temp.scratch_pad")
        .await
        .is_ok();
    leaked.push(("temporary table", seen));
    drop((a, b));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A cursor WITH HOLD outlives its transaction.
    let a = client(&running, "trusted").await;
    a.batch_execute("DECLARE held CURSOR WITH HOLD FOR SELECT 'from trusted'")
        .await
        .unwrap();
    let b = client(&running, "trusted").await;
    leaked.push((
        "WITH HOLD cursor",
        b.simple_query("FETCH held").await.is_ok(),
    ));
    drop((a, b));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // LISTEN registrations.
    let a = client(&running, "trusted").await;
    a.batch_execute("LISTEN agent_a_channel").await.unwrap();
    let b = client(&running, "trusted").await;
    let channels = one(
        &b,
        "SELECT string_agg(c, ',') FROM pg_listening_channels() c",
    )
    .await;
    leaked.push(("LISTEN", channels.contains("agent_a_channel")));
    drop((a, b));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // An advisory lock, once its session has ended (on this gateway's connections).
    let a = client(&running, "trusted").await;
    a.batch_execute("SELECT pg_advisory_lock(4242)")
        .await
        .unwrap();
    drop(a);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held: i64 = su
        .query_one(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.objid = 4242 AND a.usename = $1",
            &[&gw.role],
        )
        .await
        .unwrap()
        .get(0);
    leaked.push(("advisory lock", held > 0));

    // A SQL PREPAREd statement.
    let a = client(&running, "trusted").await;
    a.batch_execute("PREPARE only_mine AS SELECT 'from trusted'")
        .await
        .unwrap();
    let b = client(&running, "trusted").await;
    leaked.push(("PREPARE", b.simple_query("EXECUTE only_mine").await.is_ok()));
    drop((a, b));
    drop(running);
    leaked
}

#[test]
fn session_state_never_crosses_agents_on_a_transaction_pool() {
    harness().runtime.block_on(async {
        for (what, leaked) in crossing(true).await {
            assert!(!leaked, "{what} crossed from one session to another");
        }
    });
}

#[test]
fn without_isolation_each_kind_of_session_state_would_leak() {
    harness().runtime.block_on(async {
        for (what, leaked) in crossing(false).await {
            // PREPARE/EXECUTE is also checked by the policy (EXECUTE of a statement this session
            // did not prepare is refused whatever the pool does).
            if what == "PREPARE" {
                assert!(
                    !leaked,
                    "the policy refuses EXECUTE of another session's statement"
                );
                continue;
            }
            assert!(leaked, "{what}: the test cannot tell isolation from luck");
        }
    });
}

#[test]
fn role_and_search_path_cannot_be_changed_and_sequence_state_is_not_readable() {
    harness().runtime.block_on(async {
        let (running, _gw) = gateway(2, "").await;
        let w = client(&running, "writer").await;
        for sql in [
            "SET ROLE postgres",
            "SET SESSION AUTHORIZATION postgres",
            "SET search_path = pg_temp, public",
        ] {
            let e = w.batch_execute(sql).await.expect_err(sql);
            assert_eq!(sqlstate(&e), "42501", "{sql}");
        }
        let t = client(&running, "trusted").await;
        let e = t
            .simple_query("SELECT lastval()")
            .await
            .expect_err("lastval under transaction pooling");
        assert_eq!(sqlstate(&e), "0A000");
        assert!(db_message(&e).contains("rule: builtin: transaction-pooling"));
        // Inside one transaction RETURNING is the way.
        let id: i64 = w
            .query_one(
                "INSERT INTO orders (customer_id, amount, created_at) VALUES (1, 1, now()) RETURNING id",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(id > 0);
        w.execute("DELETE FROM orders WHERE id = $1", &[&id])
            .await
            .unwrap();
    });
}

#[test]
fn prepared_statements_follow_the_client_across_server_connections() {
    harness().runtime.block_on(async {
        let (running, _gw) = gateway(3, "").await;
        let writer_url = url(&running, "writer");
        let writers: Vec<_> =
            futures_util::future::join_all((0..6).map(|_| connect_url(&writer_url)))
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect();
        // Every session prepares the same statement and a session-specific one, then runs them
        // many times, concurrently: transactions land on whichever connection is free.
        let mut work = Vec::new();
        for (i, w) in writers.iter().enumerate() {
            work.push(async move {
                let common = w
                    .prepare("SELECT amount FROM orders WHERE id = $1")
                    .await
                    .unwrap();
                let own = w.prepare(&format!("SELECT $1::int + {i}")).await.unwrap();
                for n in 0..40 {
                    let id: i64 = 1 + i64::from(n);
                    w.query_one(&common, &[&id]).await.unwrap();
                    let v: i32 = w.query_one(&own, &[&n]).await.unwrap().get(0);
                    assert_eq!(v, n + i as i32);
                }
            });
        }
        futures_util::future::join_all(work).await;
        // The client's names are its own: closing one leaves the others working.
        let s = writers[0].prepare("SELECT 1").await.unwrap();
        drop(s);
        writers[1]
            .query_one("SELECT amount FROM orders WHERE id = 1", &[])
            .await
            .unwrap();
        // Binding a statement the session never prepared is refused as PostgreSQL would; one
        // named in tollgate's own namespace is refused naming the rule.
        let mut raw = support::raw_login_at(running.pg_addr.unwrap(), "writer").await;
        use tokio::io::AsyncWriteExt;
        for (name, code) in [("never_prepared", "26000"), ("tg_0000", "42501")] {
            let mut bind = format!("p\0{name}\0").into_bytes();
            bind.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            raw.write_all(&support::message(b'B', &bind)).await.unwrap();
            raw.write_all(&support::message(b'S', b"")).await.unwrap();
            let (_, error, _) = support::read_until_ready(&mut raw).await;
            assert_eq!(error.as_deref(), Some(code), "{name}");
        }
        drop(running);
    });
}

#[test]
fn pgbench_prepared_mode_runs_on_a_small_pool() {
    let h = harness();
    let (port, token, _guard) = h.runtime.block_on(async {
        let (running, dir) = gateway(2, "").await;
        let port = running.pg_addr.unwrap().port();
        (port, h.env.token("writer").to_string(), (running, dir))
    });
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        script.path(),
        "\\set id random(1, 1000)\nBEGIN;\nSELECT amount FROM orders WHERE id = :id;\nUPDATE orders SET amount = amount WHERE id = :id;\nEND;\nSELECT customer_id FROM orders WHERE id = :id;\n",
    )
    .unwrap();
    let out = std::process::Command::new("pgbench")
        // One client per thread: pgbench prepares a client's statements with a blocking call,
        // which on a shared thread would wait for a connection other clients of that thread
        // hold in open transactions (a deadlock with any transaction pooler).
        .args([
            "-n", "-M", "prepared", "-c", "4", "-j", "4", "-T", "3", "-f",
        ])
        .arg(script.path())
        .arg(format!(
            "postgresql://writer:{token}@127.0.0.1:{port}/shop?sslmode=disable"
        ))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("number of failed transactions: 0"),
        "{stdout}{stderr}"
    );
}

#[test]
fn a_pooled_statement_can_be_cancelled() {
    harness().runtime.block_on(async {
        let (running, _gw) = gateway(2, "").await;
        let t = client(&running, "trusted").await;
        let token = t.cancel_token();
        let started = Instant::now();
        let sleeper = tokio::spawn(async move { t.simple_query("SELECT pg_sleep(10)").await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
        let e = sleeper.await.unwrap().expect_err("cancelled");
        assert_eq!(sqlstate(&e), "57014");
        assert!(started.elapsed() < Duration::from_secs(5));
    });
}

/// A statement prepared while a `SET LOCAL` is in force reads its literals under it, and
/// prepared statements are shared by the sessions of a server connection (under tollgate's
/// names): the transaction's connection is reset before another session gets it, so another
/// agent preparing the same text gets it read under its own settings. Before, a review made
/// the writer's date literal read day-first by the analyst's `SET LOCAL DateStyle`.
#[test]
fn a_set_local_never_reaches_another_agents_prepared_statements() {
    harness().runtime.block_on(async {
        let (running, _gw) = gateway(1, "").await;
        let sql = "SELECT '01/02/2024'::date::text AS d, '2024-01-01 12:00'::timestamptz::text AS t";
        let analyst = client(&running, "analyst").await;
        analyst
            .batch_execute("BEGIN; SET LOCAL DateStyle = 'SQL, DMY'; SET LOCAL TimeZone = 'Pacific/Kiritimati'")
            .await
            .unwrap();
        let under_local = analyst.prepare(sql).await.unwrap();
        let row = analyst.query_one(&under_local, &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), "01/02/2024", "the analyst's own reading");
        analyst.batch_execute("COMMIT").await.unwrap();
        drop(analyst);
        let writer = client(&running, "writer").await;
        let stmt = writer.prepare(sql).await.unwrap();
        let row = writer.query_one(&stmt, &[]).await.unwrap();
        let plain = writer.query_one(&format!("{sql} "), &[]).await.unwrap();
        assert_eq!(
            (row.get::<_, String>(0), row.get::<_, String>(1)),
            (plain.get::<_, String>(0), plain.get::<_, String>(1)),
            "the writer's prepared statement reads as its plain query does"
        );
        assert_eq!(row.get::<_, String>(0), "2024-01-02");
        // The SET LOCAL prepared in one transaction (as drivers prepare once) and run in a
        // later one, on a connection it is prepared on again: the same.
        let sql = "SELECT '03/04/2024'::date::text AS d";
        let analyst = client(&running, "analyst").await;
        let set = analyst
            .prepare("SET LOCAL DateStyle = 'SQL, DMY'")
            .await
            .unwrap();
        analyst.batch_execute("BEGIN").await.unwrap();
        analyst.execute(&set, &[]).await.unwrap();
        let under_local = analyst.prepare(sql).await.unwrap();
        let row = analyst.query_one(&under_local, &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), "03/04/2024", "the analyst's own reading");
        analyst.batch_execute("COMMIT").await.unwrap();
        let stmt = writer.prepare(sql).await.unwrap();
        let row = writer.query_one(&stmt, &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), "2024-03-04");
    });
}

/// The other direction: a session whose settings read a literal otherwise (a session `SET
/// DateStyle`, pinned; or a `SET LOCAL` in its transaction) prepares its own statement, never
/// getting the one another agent prepared on the same connection under the defaults (a review
/// saw the wrong date read, and written).
#[test]
fn a_session_with_its_own_settings_never_gets_a_statement_prepared_under_others() {
    harness().runtime.block_on(async {
        let (running, _gw) = gateway(1, "").await;
        let sql = "SELECT '01/02/2026'::date::text AS d";
        let analyst = client(&running, "analyst").await;
        let stmt = analyst.prepare(sql).await.unwrap();
        let row = analyst.query_one(&stmt, &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), "2026-01-02");
        for setup in [
            "SET DateStyle = 'ISO, DMY'",
            "BEGIN; SET LOCAL DateStyle = 'ISO, DMY'",
        ] {
            let writer = client(&running, "writer").await;
            writer.batch_execute(setup).await.unwrap();
            let stmt = writer.prepare(sql).await.unwrap();
            let prepared = writer.query_one(&stmt, &[]).await.unwrap();
            let plain = writer.query_one(&format!("{sql} "), &[]).await.unwrap();
            assert_eq!(
                (prepared.get::<_, String>(0), plain.get::<_, String>(0)),
                ("2026-02-01".to_string(), "2026-02-01".to_string()),
                "{setup}"
            );
            drop(writer);
        }
        // The analyst's statement still reads as the analyst's session does.
        let row = analyst.query_one(&stmt, &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), "2026-01-02");
    });
}

/// Backends of a test gateway's role still running `marker`'s statement.
async fn running(role: &str, marker: &str) -> i64 {
    backends(role, marker).await
}

/// A session that disconnects in the middle of a statement leaves no backend running it: the
/// connection is cancelled and closed, and keeps its room in the pool (and its agent's share)
/// until the server has closed it. Before, only a Terminate was sent, which PostgreSQL reads
/// once the statement is over: the backend ran on outside the pool's count while the pool opened
/// another in its room (a review piled up 22 backends on a pool of 10).
#[test]
fn sessions_that_leave_mid_statement_leave_no_backend_running_past_the_pool() {
    harness().runtime.block_on(async {
        let (running_gw, gw) = gateway(2, "checkout_timeout_ms = 20000").await;
        let addr = running_gw.pg_addr.unwrap();
        let pool = || transaction_pool(&running_gw);
        // Two waves of two writer sessions, each gone in the middle of a 60 s statement (the
        // second wave waits for the first's room).
        let mut most = 0;
        for wave in 0..2 {
            for i in 0..2 {
                let mut s = raw_login_with(addr, "writer", &[]).await;
                send(
                    &mut s,
                    &[simple(&format!(
                        "SELECT pg_sleep(60) /* orphan {wave}{i} */"
                    ))],
                )
                .await;
                let deadline = Instant::now() + Duration::from_secs(15);
                while running(&gw.role, &format!("orphan {wave}{i}")).await == 0 {
                    assert!(
                        Instant::now() < deadline,
                        "wave {wave}: statement {i} never ran"
                    );
                    most = most.max(server_connections(&gw.role).await);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                drop(s);
            }
        }
        // Every orphan is cancelled, and its backend gone, within the reply grace and a cancel.
        let deadline = Instant::now() + Duration::from_secs(10);
        while running(&gw.role, "orphan").await > 0 || server_connections(&gw.role).await > 0 {
            assert!(
                Instant::now() < deadline,
                "still running: {} of the orphans, {} backends",
                running(&gw.role, "orphan").await,
                server_connections(&gw.role).await
            );
            most = most.max(server_connections(&gw.role).await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(most <= 2, "{most} backends on a pool of 2");
        // The server drops its activity entry before it closes the socket: the pool's count
        // follows a moment later.
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool().open > 0 {
            assert!(Instant::now() < deadline, "{:?}", pool());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let p = pool();
        assert_eq!((p.open, p.opened - p.closed), (0, 0), "{p:?}");
        // The pool and the writer's share are whole again.
        let writer = client(&running_gw, "writer").await;
        assert_eq!(one(&writer, "SELECT 1").await, "1");
    });
}

/// A pipelined batch left behind is cancelled statement after statement (each cancel stops
/// only the statement running), so the backend is gone well within the retirement's 10 s
/// (once, one cancel a second stopped ten of thirty and gave the room up with the backend
/// still working through the rest).
#[test]
fn a_pipelined_batch_left_mid_statement_is_cancelled_to_its_end() {
    harness().runtime.block_on(async {
        let (running_gw, gw) = gateway(2, "").await;
        let addr = running_gw.pg_addr.unwrap();
        let mut s = raw_login_with(addr, "writer", &[]).await;
        let batch: Vec<Vec<u8>> = (0..30)
            .map(|i| simple(&format!("SELECT pg_sleep(60) /* batch {i} */")))
            .collect();
        send(&mut s, &batch).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while running(&gw.role, "batch 0 ").await == 0 {
            assert!(Instant::now() < deadline, "the batch never ran");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(s);
        // Within the reply grace (5 s) and well within the retirement's 10 s: not given up
        // and terminated (which would take 15 s and more).
        let deadline = Instant::now() + Duration::from_secs(13);
        while server_connections(&gw.role).await > 0 {
            assert!(
                Instant::now() < deadline,
                "still running: {} statements of the batch",
                running(&gw.role, "batch").await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// A statement that ignores cancels (a function catching them) outlasts the retirement: its
/// backend is then terminated from a connection of tollgate's own, so it never runs on outside
/// the pool (before, its room was given back with the backend still running).
#[test]
fn a_statement_that_ignores_cancels_is_terminated_when_its_session_leaves() {
    // Without the connection check (a client may turn it off): the retirement's cancels, then
    // the terminate from tollgate's own connection.
    let took = stubborn_backend_lifetime("SET client_connection_check_interval = 0; ");
    assert!(
        took > Duration::from_secs(12),
        "ended by the terminate: {took:?}"
    );
}

/// Server connections ask for `client_connection_check_interval`: a backend whose statement
/// catches cancels ends as soon as tollgate has closed its connection, without the terminate.
#[test]
fn a_statement_that_ignores_cancels_ends_with_its_closed_connection() {
    let took = stubborn_backend_lifetime("");
    // The reply grace (5 s), then about a second of the server's check; the cancels alone
    // would have run 10 s.
    assert!(
        took < Duration::from_secs(10),
        "ended by the connection check: {took:?}"
    );
}

/// How long a backend running a statement that catches every cancel outlives its client, whose
/// session first ran `setup`.
fn stubborn_backend_lifetime(setup: &str) -> Duration {
    harness().runtime.block_on(async {
        upstream()
            .await
            .batch_execute(
                "CREATE OR REPLACE FUNCTION public.tg_test_stubborn() RETURNS void LANGUAGE plpgsql AS $$
                 BEGIN LOOP BEGIN PERFORM pg_sleep(0.2); EXCEPTION WHEN query_canceled THEN NULL; END; END LOOP; END $$;
                 GRANT EXECUTE ON FUNCTION public.tg_test_stubborn() TO PUBLIC",
            )
            .await
            .unwrap();
        let (running_gw, gw) = gateway(2, "").await;
        let addr = running_gw.pg_addr.unwrap();
        let mut s = raw_login_with(addr, "trusted", &[]).await;
        let sql = format!("{setup}SELECT public.tg_test_stubborn() /* stubborn */");
        send(&mut s, &[simple(&sql)]).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while running(&gw.role, "stubborn").await == 0 {
            assert!(Instant::now() < deadline, "the statement never ran");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(s);
        let left = Instant::now();
        // The reply grace (5 s), the retirement's cancels (10 s), then the terminate.
        let deadline = left + Duration::from_secs(25);
        while server_connections(&gw.role).await > 0 {
            assert!(Instant::now() < deadline, "the stubborn backend still runs");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        left.elapsed()
    })
}

#[test]
fn a_full_pool_refuses_after_the_checkout_timeout_naming_the_pool() {
    harness().runtime.block_on(async {
        let (running, gw) = gateway(1, "checkout_timeout_ms = 400").await;
        let holder = client(&running, "writer").await;
        holder.batch_execute("BEGIN").await.unwrap();
        one(&holder, "SELECT count(*) FROM orders WHERE id = 1").await;
        let waiter = client(&running, "analyst").await;
        let started = Instant::now();
        let e = waiter
            .simple_query("SELECT 424242")
            .await
            .expect_err("no connection free");
        assert_eq!(sqlstate(&e), "53300");
        assert!(
            db_message(&e).contains("pool \"shop\"")
                && db_message(&e).contains("rule: tollgate.toml: upstream.shop.pool_size"),
            "{}",
            db_message(&e)
        );
        assert!(started.elapsed() >= Duration::from_millis(350));
        // The statement is in the log, as not run, with what the client was told (before, a
        // statement refused at checkout left no record at all).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let log = std::fs::read_to_string(gw._dir.path().join("audit.log")).unwrap();
        let record = log
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|r| r["statement"] == "SELECT 424242")
            .unwrap_or_else(|| panic!("no record of the statement: {log}"));
        assert_eq!(record["decision"], "error", "{record}");
        assert_eq!(record["sqlstate"], "53300", "{record}");
        let reason = record["reason"].as_str().unwrap();
        assert!(
            reason.starts_with("not run: tollgate: ") && reason.contains("pool \"shop\""),
            "{record}"
        );
        // The holder finishes; the pool serves again.
        holder.batch_execute("COMMIT").await.unwrap();
        let again = client(&running, "analyst").await;
        assert_eq!(one(&again, "SELECT 1").await, "1");
    });
}

/// A client that hangs up while its statement waits for a connection of a full pool is gone
/// before anything was decided: its statement never runs once the connection frees up (before,
/// the INSERT ran for nobody). A client still there is served as usual.
#[test]
fn a_statement_whose_client_left_while_waiting_for_the_pool_never_runs() {
    harness().runtime.block_on(async {
        let (running, gw) = gateway(1, "checkout_timeout_ms = 5000").await;
        let addr = running.pg_addr.unwrap();
        let holder = client(&running, "writer").await;
        holder.batch_execute("BEGIN").await.unwrap();
        one(&holder, "SELECT count(*) FROM orders WHERE id = 1").await;
        let marker = 800_000 + i64::from(std::process::id() % 99_999);
        let insert =
            format!("INSERT INTO orders (customer_id, amount) VALUES (1, {marker}) RETURNING id");
        // One client sends the INSERT and hangs up at once (a Terminate behind it, then EOF);
        // another sends it and stays.
        // The settings tokio-postgres sends: logged in on what the holder's login learnt.
        let settings = [("client_encoding", "UTF8")];
        let mut gone = raw_login_with(addr, "writer", &settings).await;
        send(
            &mut gone,
            &[
                simple(&insert),
                simple(&format!("{insert} /* second */")),
                support::message(b'X', b""),
            ],
        )
        .await;
        drop(gone);
        let mut stays = raw_login_with(addr, "writer", &settings).await;
        // A Sync or Flush with nothing held needs no connection: answered at once (an empty
        // pipeline once waited for one, and hid a cancel from what followed).
        send(&mut stays, &[support::message(b'H', b""), sync()]).await;
        assert_eq!(
            tags(&mut stays, 1).await,
            b"Z",
            "a bare Sync is answered at once"
        );
        send(&mut stays, &[simple(&format!("{insert} /* stays */"))]).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        holder.batch_execute("COMMIT").await.unwrap();
        assert_eq!(
            tags(&mut stays, 4).await,
            b"TDCZ",
            "the client still there is served"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let inserted = orders_with_amount(marker).await;
        assert_eq!(inserted, 1, "only the INSERT of the client still there ran");
        // Both statements of the client that left are recorded as not run.
        let log = std::fs::read_to_string(gw._dir.path().join("audit.log")).unwrap();
        let left = log
            .lines()
            .filter(|l| {
                l.contains("the client left while it waited") && l.contains("INSERT INTO orders")
            })
            .count();
        assert_eq!(left, 2);
    });
}

/// A cancel while the statement waits for a pool connection cancels it as a server would
/// (57014), at once, and nothing of it runs; the session goes on. Both protocols: a simple
/// Query, and an extended batch skipped to its Sync. Before, the cancel was a no-op and the
/// INSERT ran once the holder let go (PgBouncer ignores such cancels too: pgbouncer#1222).
#[test]
fn a_cancel_while_waiting_for_the_pool_cancels_the_statement() {
    harness().runtime.block_on(async {
        let (running, gw) = gateway(1, "checkout_timeout_ms = 10000").await;
        let holder = client(&running, "writer").await;
        holder.batch_execute("BEGIN").await.unwrap();
        one(&holder, "SELECT count(*) FROM orders WHERE id = 1").await;
        let waiter = std::sync::Arc::new(client(&running, "analyst").await);
        let writer = std::sync::Arc::new(client(&running, "writer").await);
        let marker = 810_000 + i64::from(std::process::id() % 99_999);
        for extended in [false, true] {
            let w = writer.clone();
            let sql = format!(
                "INSERT INTO orders (customer_id, amount) VALUES (1, {}) RETURNING id",
                marker + i64::from(extended)
            );
            let waiting = tokio::spawn(async move {
                if extended {
                    w.query(&sql, &[]).await.map(|_| ())
                } else {
                    w.simple_query(&sql).await.map(|_| ())
                }
            });
            // Long enough for the statement to be waiting on a loaded machine.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let started = Instant::now();
            writer
                .cancel_token()
                .cancel_query(tokio_postgres::NoTls)
                .await
                .unwrap();
            let e = waiting.await.unwrap().expect_err("cancelled");
            assert_eq!(sqlstate(&e), "57014", "extended {extended}: {e}");
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "answered at the cancel, not when the holder let go"
            );
        }
        // A cancel with nothing waiting is a no-op; the sessions go on once there is room.
        waiter
            .cancel_token()
            .cancel_query(tokio_postgres::NoTls)
            .await
            .unwrap();
        holder.batch_execute("COMMIT").await.unwrap();
        assert_eq!(one(&writer, "SELECT 1").await, "1");
        assert_eq!(one(&waiter, "SELECT 1").await, "1");
        assert_eq!(
            orders_with_amount(marker).await,
            0,
            "the simple INSERT never ran"
        );
        assert_eq!(
            orders_with_amount(marker + 1).await,
            0,
            "the extended one neither"
        );
        // Both are in the audit log, as statements that did not run.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let log = std::fs::read_to_string(gw._dir.path().join("audit.log")).unwrap();
        let cancelled: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("cancelled by the client while it waited"))
            .collect();
        assert_eq!(cancelled.len(), 2, "{cancelled:?}");
        assert!(
            cancelled.iter().all(|l| l.contains(r#""decision":"error""#)
                && l.contains(r#""sqlstate":"57014""#)
                && l.contains("INSERT INTO orders")),
            "{cancelled:?}"
        );
    });
}

/// A waiter that gave up (its checkout timed out) is not waited for: the connection that comes
/// back goes idle, instead of being closed to make room for a waiter no longer there (before,
/// the next session paid a new server login).
#[test]
fn a_waiter_that_gave_up_costs_no_connection() {
    harness().runtime.block_on(async {
        let (running, gw) = gateway(1, "checkout_timeout_ms = 300").await;
        let holder = client(&running, "writer").await;
        holder.batch_execute("BEGIN").await.unwrap();
        one(&holder, "SELECT count(*) FROM orders WHERE id = 1").await;
        let before = server_pids(&gw.role).await;
        assert_eq!(before.len(), 1);
        // Another agent (within its share) with other settings than the holder's connection:
        // it waits in the pool's queue for room, and gives up.
        let other = connect_url(&format!(
            "{}&application_name=other",
            url(&running, "analyst")
        ))
        .await
        .map(|_| ())
        .expect_err("no room for other settings");
        assert_eq!(sqlstate(&other), "53300", "{other}");
        holder.batch_execute("COMMIT").await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(server_pids(&gw.role).await, before, "the connection stays");
    });
}

/// One agent cannot take a whole transaction pool: sessions pinned by a harmless SET (which keep
/// their connection while idle) or holding open transactions count against the agent's share
/// (`max_agent_share`, by default the pool less a quarter), and another agent is served at once.
#[test]
fn one_agent_cannot_hold_the_whole_pool() {
    harness().runtime.block_on(async {
        let (running, _gw) = gateway(4, "checkout_timeout_ms = 400").await;
        // Default share of a pool of 4: 3. Two pinned sessions and one open transaction.
        let mut held = Vec::new();
        for i in 0..2 {
            let c = client(&running, "analyst").await;
            c.batch_execute(&format!("SET application_name = 'pin{i}'"))
                .await
                .unwrap();
            held.push(c);
        }
        let in_tx = client(&running, "analyst").await;
        in_tx.batch_execute("BEGIN").await.unwrap();
        one(&in_tx, "SELECT count(*) FROM orders WHERE id = 1").await;
        // A fourth analyst session waits for one of the analyst's own, then is refused.
        let fourth = client(&running, "analyst").await;
        let started = Instant::now();
        let e = fourth
            .simple_query("SELECT 1")
            .await
            .expect_err("over the analyst's share");
        assert_eq!(sqlstate(&e), "53300");
        assert!(
            db_message(&e)
                .contains("agent \"analyst\" already holds 3 server connections of pool \"shop\"")
                && db_message(&e).contains("rule: tollgate.toml: upstream.shop.max_agent_share"),
            "{}",
            db_message(&e)
        );
        assert!(started.elapsed() >= Duration::from_millis(350));
        // The writer is served at once from the connection the analyst may not take.
        let writer = client(&running, "writer").await;
        let started = Instant::now();
        assert_eq!(one(&writer, "SELECT 1").await, "1");
        assert!(started.elapsed() < Duration::from_millis(350));
        // The transaction ends: the analyst's share has room again.
        in_tx.batch_execute("COMMIT").await.unwrap();
        let fifth = client(&running, "analyst").await;
        assert_eq!(one(&fifth, "SELECT 1").await, "1");
        drop(held);
    });
}

/// Statements that only take a session back to the connection's defaults do not pin it: asyncpg's
/// pool sends `... UNLISTEN *; RESET ALL` at every release and psycopg `DEALLOCATE ALL` after a
/// failed pipeline, and a review saw idle sessions pinned by them hold the agent's whole share
/// (the next session refused with 53300).
#[test]
fn statements_that_only_clear_state_leave_the_connection_to_the_pool() {
    harness().runtime.block_on(async {
        let (running, _gw) = gateway(4, "checkout_timeout_ms = 400").await;
        // Default share of a pool of 4: 3 (before, these three sessions took it all).
        let mut idle = Vec::new();
        for reset in [
            &["SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;"][..],
            &[
                "DEALLOCATE ALL",
                "RESET statement_timeout",
                "SET lock_timeout TO DEFAULT",
            ],
            &["DISCARD ALL", "DISCARD PLANS"],
        ] {
            let c = client(&running, "writer").await;
            assert_eq!(one(&c, "SELECT 1").await, "1");
            for sql in reset {
                c.batch_execute(sql).await.unwrap();
            }
            idle.push(c);
        }
        let fourth = client(&running, "writer").await;
        let started = Instant::now();
        assert_eq!(one(&fourth, "SELECT 1").await, "1");
        assert!(started.elapsed() < Duration::from_millis(350));
        // Every connection comes back (a reply reaches the client just before its connection is
        // checked in).
        let settled = |held: usize| {
            let running = &running;
            async move {
                for _ in 0..100 {
                    let pool = transaction_pool(running);
                    if pool.idle + held == pool.open as usize {
                        return pool;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                panic!("{:?}", transaction_pool(running));
            }
        };
        settled(0).await;
        // A session pinned by a SET stays pinned through a RESET.
        let pinned = client(&running, "writer").await;
        pinned
            .batch_execute("SET application_name = 'kept'; RESET ALL")
            .await
            .unwrap();
        settled(1).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        settled(1).await;
        drop((idle, pinned));
    });
}

/// A DISCARD ALL or DEALLOCATE ALL the server refuses (inside a transaction block, after an
/// error) leaves tollgate's statements on the connection though tollgate forgot them when it
/// forwarded it: the connection is reset before another session gets it. A review had every
/// agent's prepared statements answered `42P05 ... already exists` after one refused DISCARD ALL.
#[test]
fn a_refused_discard_all_leaves_no_other_session_a_broken_connection() {
    harness().runtime.block_on(async {
        let (running, _gw) = gateway(1, "").await;
        let sql = "SELECT $1::int + 1";
        for refused in [
            "SELECT 1; DISCARD ALL",
            "SELECT 1/0; DEALLOCATE ALL",
            "BEGIN; SELECT 1; DISCARD ALL",
        ] {
            let analyst = client(&running, "analyst").await;
            let stmt = analyst.prepare(sql).await.unwrap();
            let row = analyst.query_one(&stmt, &[&1i32]).await.unwrap();
            assert_eq!(row.get::<_, i32>(0), 2);
            drop(analyst);
            let writer = client(&running, "writer").await;
            writer
                .batch_execute(refused)
                .await
                .expect_err("the server refuses it");
            drop(writer);
            for agent in ["analyst", "writer"] {
                let c = client(&running, agent).await;
                let stmt = c
                    .prepare(sql)
                    .await
                    .unwrap_or_else(|e| panic!("{refused}: {agent}: {}", db_message(&e)));
                let row = c.query_one(&stmt, &[&41i32]).await.unwrap();
                assert_eq!(row.get::<_, i32>(0), 42, "{refused}");
            }
        }
    });
}

/// `DEALLOCATE name` of a protocol-level statement (psycopg on libpq 16 and older sends it at
/// cache eviction, through the extended protocol) deallocates it as on the server; it answered
/// 26000 "does not exist" because the server has it under tollgate's name.
#[test]
fn a_deallocate_of_a_protocol_level_statement_works_as_on_the_server() {
    harness().runtime.block_on(async {
        let (running, gw) = gateway(1, "").await;
        let addr = running.pg_addr.unwrap();
        let mut s = raw_login_with(addr, "writer", &[]).await;
        // Prepared and run as `p1`, then DEALLOCATEd through the extended protocol (as psycopg
        // does), then bound again: 26000, as on the server.
        send(&mut s, &[parse("p1", "SELECT 41 + 1"), sync()]).await;
        assert_eq!(tags(&mut s, 2).await, b"1Z");
        deallocate_extended_then_gone(&mut s, "p1").await;
        // The same through a simple Query (psql, a driver's own DEALLOCATE): on the connection
        // that has the statement, then on a fresh one (the server ended the first), where
        // tollgate prepares it before the DEALLOCATE.
        for (name, sql, fresh) in [("p2", "SELECT 43", false), ("p3", "SELECT 44", true)] {
            send(&mut s, &[parse(name, sql), sync()]).await;
            assert_eq!(tags(&mut s, 2).await, b"1Z");
            let ended = server_pids(&gw.role).await;
            if fresh {
                let su = upstream().await;
                for pid in &ended {
                    su.execute("SELECT pg_terminate_backend($1)", &[&pid])
                        .await
                        .unwrap();
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let query = support::message(b'Q', format!("DEALLOCATE {name}\0").as_bytes());
            send(&mut s, &[query]).await;
            let (tag, body) = support::read_message(&mut s).await;
            assert_eq!(
                (tag, body.as_slice()),
                (b'C', &b"DEALLOCATE\0"[..]),
                "DEALLOCATE {name}: {:?}",
                support::error_field(&body, b'M')
            );
            assert_eq!(tags(&mut s, 1).await, b"Z");
            if fresh {
                assert_ne!(
                    server_pids(&gw.role).await,
                    ended,
                    "a fresh connection ran it"
                );
            }
            let bind = support::message(b'B', format!("\0{name}\0\0\0\0\0\0\0").as_bytes());
            send(&mut s, &[bind, sync()]).await;
            let (tag, body) = support::read_message(&mut s).await;
            assert_eq!(tag, b'E', "{name} was deallocated");
            assert_eq!(support::error_field(&body, b'C').as_deref(), Some("26000"));
            assert_eq!(tags(&mut s, 1).await, b"Z");
        }
        // In a failed transaction block it is refused as the server refuses it (25P02); the
        // statement stays, and goes once the transaction is over.
        send(&mut s, &[parse("p4", "SELECT 45"), sync()]).await;
        assert_eq!(tags(&mut s, 2).await, b"1Z");
        let codes = [
            ("BEGIN", None),
            ("SELECT 1/0", Some("22012")),
            ("DEALLOCATE p4", Some("25P02")),
            ("ROLLBACK", None),
            ("DEALLOCATE p4", None),
        ];
        for (sql, code) in codes {
            assert_error_code(&mut s, sql, code).await;
        }
        // Sent behind a failing statement without waiting for its reply: whether the block
        // failed is not known yet, so it goes as sent and the server answers as it would
        // direct; the statement stays (and a Parse of its text in the same batch is fine).
        send(&mut s, &[parse("p5", "SELECT 46"), sync()]).await;
        assert_eq!(tags(&mut s, 2).await, b"1Z");
        let queries: Vec<Vec<u8>> = ["BEGIN", "SELECT 1/0", "DEALLOCATE p5"]
            .iter()
            .map(|q| support::message(b'Q', format!("{q}\0").as_bytes()))
            .collect();
        send(&mut s, &queries).await;
        send(&mut s, &[parse("p6", "SELECT 46"), sync()]).await;
        let mut errors = Vec::new();
        let mut ready = 0;
        while ready < 4 {
            let (tag, body) = support::read_message(&mut s).await;
            match tag {
                b'E' => errors.push(support::error_field(&body, b'C').unwrap_or_default()),
                b'Z' => ready += 1,
                _ => {}
            }
        }
        // The DEALLOCATE refused as direct; the Parse of the statement's text is not answered
        // 42P05 (the connection still has it: tollgate answers its ParseComplete).
        assert_eq!(errors[..2], ["22012", "25P02"]);
        assert!(!errors.iter().any(|c| c == "42P05"), "{errors:?}");
        for (sql, code) in [("ROLLBACK", None), ("DEALLOCATE p5", None)] {
            assert_error_code(&mut s, sql, code).await;
        }
        // A named Parse of it acts only when run: the statement is still there after the Parse.
        send(&mut s, &[parse("p7", "SELECT 47"), sync()]).await;
        assert_eq!(tags(&mut s, 2).await, b"1Z");
        send(&mut s, &[parse("d7", "DEALLOCATE p7"), sync()]).await;
        assert_eq!(tags(&mut s, 2).await, b"1Z");
        let bind = support::message(b'B', b"\0p7\0\0\0\0\0\0\0");
        send(&mut s, &[bind, sync()]).await;
        assert_eq!(tags(&mut s, 2).await, b"2Z", "p7 is still prepared");
        // The same text, prepared again by another agent's session, runs.
        let analyst = client(&running, "analyst").await;
        let again = analyst.prepare("SELECT 41 + 1").await.unwrap();
        assert_eq!(
            analyst
                .query_one(&again, &[])
                .await
                .unwrap()
                .get::<_, i32>(0),
            42
        );
    });
}

/// An extended-protocol `DEALLOCATE` of a statement whose text no longer runs (its table
/// dropped since), on a server connection that lacks the statement: it succeeds, as on the
/// client's own server. tollgate prepared the statement's own text there first, and the client
/// got that Parse's error (42P01) for its DEALLOCATE (a re-review).
#[test]
fn a_deallocate_needs_no_valid_text_on_a_connection_that_lacks_the_statement() {
    harness().runtime.block_on(async {
        let (running, gw) = gateway(1, "").await;
        let table = format!("dealloc_probe_{}", std::process::id());
        let su = upstream().await;
        su.batch_execute(&format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (a int); \
             GRANT SELECT ON {table} TO tollgate_shop"
        ))
        .await
        .unwrap();
        let policy = gw._dir.path().join("policies/writer.toml");
        let mut text = std::fs::read_to_string(&policy).unwrap();
        text.push_str(&format!(
            "\n[[postgres.table]]\nname = \"public.{table}\"\nallow = [\"select\"]\n"
        ));
        std::fs::write(&policy, text).unwrap();
        running.gateway.reload().unwrap();
        let mut s = raw_login_with(running.pg_addr.unwrap(), "writer", &[]).await;
        send(
            &mut s,
            &[parse("p1", &format!("SELECT a FROM {table}")), sync()],
        )
        .await;
        assert_eq!(tags(&mut s, 2).await, b"1Z");
        // The table goes, and so does the server connection that has the statement.
        su.batch_execute(&format!("DROP TABLE {table}"))
            .await
            .unwrap();
        for pid in server_pids(&gw.role).await {
            su.execute("SELECT pg_terminate_backend($1)", &[&pid])
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        deallocate_extended_then_gone(&mut s, "p1").await;
        // The connection is usable afterwards: the placeholder went with the DEALLOCATE.
        assert_error_code(&mut s, "SELECT 1", None).await;
    });
}

/// A named Parse the server refuses leaves no statement behind, as on the server: the name can
/// be prepared again (node-postgres and pgx reuse a query's name after a failed prepare), and a
/// Bind of it is 26000. tollgate kept the name, so every later Parse of it was answered 42P05
/// for the rest of the session. Both pool modes.
#[test]
fn a_named_parse_the_server_refuses_leaves_the_name_free() {
    harness().runtime.block_on(async {
        let (pooled, _gw) = gateway(1, "").await;
        let dir = copy_demo_dir();
        let writer = dir.path().join("policies/writer.toml");
        let text = std::fs::read_to_string(&writer).unwrap();
        let session = "upstream = \"shop\"\npool_mode = \"session\"\n";
        std::fs::write(&writer, text.replacen("upstream = \"shop\"\n", session, 1)).unwrap();
        let config = tollgate::config::Config::load(&dir.path().join("tollgate.toml")).unwrap();
        let in_session = tollgate::gateway::start(config).await.unwrap();
        for running in [&pooled, &in_session] {
            let mut s = raw_login_with(running.pg_addr.unwrap(), "writer", &[]).await;
            let bind_n1 = support::message(b'B', b"n1\0n1\0\0\0\0\0\0\0");
            let execute_n1 = support::message(b'E', b"n1\0\0\0\0\0");
            // Refused by the server at Parse (the literal is no integer): 22P02.
            send(&mut s, &[parse("n1", "SELECT 'x'::int"), sync()]).await;
            let (tag, body) = support::read_message(&mut s).await;
            assert_eq!(tag, b'E');
            assert_eq!(support::error_field(&body, b'C').as_deref(), Some("22P02"));
            assert_eq!(tags(&mut s, 1).await, b"Z");
            // The name was never created: a Bind of it is 26000.
            send(&mut s, &[bind_n1.clone(), sync()]).await;
            let (tag, body) = support::read_message(&mut s).await;
            assert_eq!(tag, b'E');
            assert_eq!(support::error_field(&body, b'C').as_deref(), Some("26000"));
            assert_eq!(tags(&mut s, 1).await, b"Z");
            // In a failed transaction block (25P02), then after the ROLLBACK.
            for (sql, code) in [("BEGIN", None), ("SELECT 1/0", Some("22012"))] {
                assert_error_code(&mut s, sql, code).await;
            }
            send(&mut s, &[parse("n1", "SELECT 7"), sync()]).await;
            let (tag, body) = support::read_message(&mut s).await;
            assert_eq!(support::error_field(&body, b'C').as_deref(), Some("25P02"));
            assert_eq!((tag, tags(&mut s, 1).await), (b'E', b"Z".to_vec()));
            assert_error_code(&mut s, "ROLLBACK", None).await;
            // The same where the server connection holds the statement's text already
            // (transaction pooling: tollgate would answer the ParseComplete itself), prepared
            // as pgx does (Parse, Describe, Sync); a ROLLBACK prepared there still runs.
            for (name, sql) in [("h1", "SELECT 8"), ("r1", "ROLLBACK")] {
                send(&mut s, &[parse(name, sql), sync()]).await;
                assert_eq!(tags(&mut s, 2).await, b"1Z", "{name}");
            }
            for (sql, code) in [("BEGIN", None), ("SELECT 1/0", Some("22012"))] {
                assert_error_code(&mut s, sql, code).await;
            }
            let describe_n2 = support::message(b'D', b"Sn2\0");
            send(&mut s, &[parse("n2", "SELECT 8"), describe_n2, sync()]).await;
            let (tag, body) = support::read_message(&mut s).await;
            assert_eq!(support::error_field(&body, b'C').as_deref(), Some("25P02"));
            assert_eq!((tag, tags(&mut s, 1).await), (b'E', b"Z".to_vec()));
            let bind_r2 = support::message(b'B', b"\0r2\0\0\0\0\0\0\0");
            send(
                &mut s,
                &[parse("r2", "ROLLBACK"), bind_r2, execute_unnamed(0), sync()],
            )
            .await;
            assert_eq!(tags(&mut s, 4).await, b"12CZ", "a held ROLLBACK runs");
            send(&mut s, &[parse("n2", "SELECT 8"), sync()]).await;
            assert_eq!(tags(&mut s, 2).await, b"1Z", "n2 is free again");
            // Pipelined behind an error in its batch, a Parse of that held text is skipped as
            // the server skips it: the name is not created (tollgate answered the ParseComplete
            // itself, kept the name, and a later Bind of it ran; a re-review).
            send(
                &mut s,
                &[
                    parse("", "SELECT 1/0"),
                    bind_unnamed(),
                    execute_unnamed(0),
                    parse("p9", "SELECT 8"),
                    sync(),
                ],
            )
            .await;
            // (1/0 fails at Bind, where the unnamed statement is planned.)
            assert_eq!(tags(&mut s, 3).await, b"1EZ");
            let bind_p9 = support::message(b'B', b"\0p9\0\0\0\0\0\0\0");
            send(&mut s, &[bind_p9, sync()]).await;
            let (tag, body) = support::read_message(&mut s).await;
            assert_eq!(support::error_field(&body, b'C').as_deref(), Some("26000"));
            assert_eq!((tag, tags(&mut s, 1).await), (b'E', b"Z".to_vec()));
            send(&mut s, &[parse("p9", "SELECT 8"), sync()]).await;
            assert_eq!(tags(&mut s, 2).await, b"1Z", "p9 can be prepared");
            // A new text, skipped the same way, and bound before its failure came back: the
            // 26000 names the client's statement, as the server's does (it named tollgate's
            // `tg_...`; a re-review).
            let bind_q9 = support::message(b'B', b"\0q9\0\0\0\0\0\0\0");
            send(
                &mut s,
                &[
                    parse("", "SELECT 1/0"),
                    bind_unnamed(),
                    execute_unnamed(0),
                    parse("q9", "SELECT 99"),
                    sync(),
                    bind_q9,
                    sync(),
                ],
            )
            .await;
            assert_eq!(tags(&mut s, 3).await, b"1EZ");
            let (tag, body) = support::read_message(&mut s).await;
            assert_eq!(support::error_field(&body, b'C').as_deref(), Some("26000"));
            assert_eq!(
                support::error_field(&body, b'M').as_deref(),
                Some("prepared statement \"q9\" does not exist")
            );
            assert_eq!((tag, tags(&mut s, 1).await), (b'E', b"Z".to_vec()));
            // One name prepared in three pipelined batches: the first prepares it, the others
            // are 42P05, as from the server. (A change that waited for the first batch's answers
            // before judging the second hung here on the transaction pool, holding its server
            // connections, and let a refused text be bound later; a live re-review.)
            send(
                &mut s,
                &[
                    parse("r3", "SELECT 1"),
                    sync(),
                    parse("r3", "SELECT 2"),
                    sync(),
                    parse("r3", "SELECT 3"),
                    sync(),
                ],
            )
            .await;
            assert_eq!(tags(&mut s, 2).await, b"1Z");
            for _ in 0..2 {
                let (tag, body) =
                    tokio::time::timeout(Duration::from_secs(5), support::read_message(&mut s))
                        .await
                        .expect("each batch is answered");
                assert_eq!(support::error_field(&body, b'C').as_deref(), Some("42P05"));
                assert_eq!((tag, tags(&mut s, 1).await), (b'E', b"Z".to_vec()));
            }
            let bind_r3 = support::message(b'B', b"\0r3\0\0\0\0\0\0\0");
            send(&mut s, &[bind_r3, execute_unnamed(0), sync()]).await;
            let got = tags(&mut s, 4).await;
            assert_eq!(got, b"2DCZ", "r3 runs its first text");
            // The name can be prepared now, and runs.
            send(
                &mut s,
                &[parse("n1", "SELECT 7"), bind_n1, execute_n1, sync()],
            )
            .await;
            let mut got = Vec::new();
            loop {
                let (tag, body) = support::read_message(&mut s).await;
                assert_ne!(tag, b'E', "{:?}", support::error_field(&body, b'M'));
                got.push(tag);
                if tag == b'Z' {
                    break;
                }
            }
            assert_eq!(got, b"12DCZ");
        }
    });
}

/// Session pooling: a protocol-level statement DEALLOCATEd (simple Query, or an unnamed Parse
/// of it) can be prepared again under its name, as on the server (tollgate answered 42P05).
/// (The writer here, in session mode: the demo's session-mode agent is passthrough, whose
/// statements tollgate does not analyse.)
#[test]
fn a_deallocated_protocol_statement_can_be_prepared_again_in_session_mode() {
    harness().runtime.block_on(async {
        let dir = copy_demo_dir();
        let writer = dir.path().join("policies/writer.toml");
        let text = std::fs::read_to_string(&writer).unwrap();
        let session = "upstream = \"shop\"\npool_mode = \"session\"\n";
        assert!(text.contains("upstream = \"shop\"\n"), "{text}");
        std::fs::write(&writer, text.replacen("upstream = \"shop\"\n", session, 1)).unwrap();
        let config = tollgate::config::Config::load(&dir.path().join("tollgate.toml")).unwrap();
        let running = tollgate::gateway::start(config).await.unwrap();
        let mut s = raw_login_with(running.pg_addr.unwrap(), "writer", &[]).await;
        send(&mut s, &[parse("q1", "SELECT 51"), sync()]).await;
        assert_eq!(tags(&mut s, 2).await, b"1Z");
        let replies = simple_query(&mut s, "DEALLOCATE q1").await;
        assert_eq!(replies.first().map(|r| r.0), Some(b'C'), "{replies:?}");
        send(&mut s, &[parse("q1", "SELECT 52"), sync()]).await;
        assert_eq!(tags(&mut s, 2).await, b"1Z", "q1 prepared again");
        send(
            &mut s,
            &[
                parse("", "DEALLOCATE q1"),
                bind_unnamed(),
                execute_unnamed(0),
                sync(),
            ],
        )
        .await;
        assert_eq!(tags(&mut s, 4).await, b"12CZ");
        send(&mut s, &[parse("q1", "SELECT 53"), sync()]).await;
        assert_eq!(tags(&mut s, 2).await, b"1Z", "q1 prepared a third time");
    });
}

#[test]
fn the_agent_share_must_fit_the_pool() {
    let dir = copy_demo_dir();
    let config = dir.path().join("tollgate.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    for (share, ok) in [("0", false), ("11", false), ("10", true), ("1", true)] {
        let edited = text.replacen(
            "pool_size = 10",
            &format!("pool_size = 10\nmax_agent_share = {share}"),
            1,
        );
        std::fs::write(&config, &edited).unwrap();
        let loaded = tollgate::config::Config::load(&config);
        assert_eq!(
            loaded.is_ok(),
            ok,
            "max_agent_share = {share}: {:?}",
            loaded.err()
        );
        if let Err(e) = loaded {
            assert!(
                e.to_string()
                    .contains("max_agent_share must be between 1 and pool_size (10)"),
                "{e}"
            );
        }
    }
}

#[test]
fn a_killed_server_connection_is_replaced_without_the_client_noticing() {
    harness().runtime.block_on(async {
        let (running, gw) = gateway(1, "").await;
        let a = client(&running, "analyst").await;
        assert_eq!(one(&a, "SELECT 1").await, "1");
        // (pg_backend_pid() is refused under transaction pooling: the pool's one connection is
        // found from the server's side.)
        let pids = server_pids(&gw.role).await;
        assert_eq!(pids.len(), 1, "{pids:?}");
        let su = upstream().await;
        su.execute("SELECT pg_terminate_backend($1)", &[&pids[0]])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The idle connection died between transactions: the next one gets a fresh connection.
        assert_eq!(one(&a, "SELECT 1").await, "1");
        let next = server_pids(&gw.role).await;
        assert_eq!(next.len(), 1, "{next:?}");
        assert_ne!(next, pids);
    });
}

/// Idle connections whose server went away are noticed by the pool's upkeep, not only at the
/// next checkout: with no traffic at all, the pool's figures stay true.
#[test]
fn idle_connections_the_server_ended_leave_the_pool_figures_without_traffic() {
    harness().runtime.block_on(async {
        let (running, gw) = gateway(3, "").await;
        let (a, b) = (
            client(&running, "analyst").await,
            client(&running, "writer").await,
        );
        // Two transactions at once: two server connections, both idle afterwards.
        a.batch_execute("BEGIN").await.unwrap();
        b.batch_execute("BEGIN").await.unwrap();
        assert_eq!(one(&a, "SELECT 1").await, "1");
        assert_eq!(one(&b, "SELECT 1").await, "1");
        a.batch_execute("COMMIT").await.unwrap();
        b.batch_execute("COMMIT").await.unwrap();
        let pool = || transaction_pool(&running);
        let old = server_pids(&gw.role).await;
        assert_eq!((pool().open, old.len()), (2, 2), "{:?}", pool());
        upstream()
            .await
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                &[&gw.role],
            )
            .await
            .unwrap();
        // No statement is sent: only the upkeep (every second) can notice.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (open, idle) = (pool().open, pool().idle);
            let live = server_pids(&gw.role).await;
            let stale = live.iter().any(|p| old.contains(p));
            if !stale && open as usize == live.len() && idle == open as usize {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the pool still counts {open} open ({idle} idle) for {} live connections",
                live.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(one(&a, "SELECT 2").await, "2");
    });
}

/// A login the server refuses for another reason than the credentials (here its role's
/// connection limit, 53300) is not reported as a credentials problem: an operator reading it
/// must not go and rotate a good password.
#[test]
fn a_login_refused_for_too_many_connections_is_not_called_a_credentials_problem() {
    harness().runtime.block_on(async {
        let (running, gw) = gateway(2, "").await;
        // Logged in while the server still takes the role: the transaction pool then needs a
        // server connection only at the first statement.
        let a = client(&running, "analyst").await;
        upstream()
            .await
            .batch_execute(&format!(
                "ALTER ROLE {role} CONNECTION LIMIT 0; \
                 SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'",
                role = gw.role
            ))
            .await
            .unwrap();
        let detail = |e: tokio_postgres::Error| {
            let db = e.as_db_error().expect("a server error").clone();
            assert_eq!(db.code().code(), "08006", "{db:?}");
            db.detail().unwrap_or_default().to_string()
        };
        // A login with settings no server connection has had yet: it needs a connection itself.
        let fresh = format!("{}&application_name=fresh", url(&running, "trusted"));
        let e = tokio_postgres::connect(&fresh, tokio_postgres::NoTls)
            .await
            .err()
            .expect("no server connection can be opened");
        let trusted = detail(e);
        // A session already logged in: its next statement needs one.
        let analyst = detail(a.simple_query("SELECT 1").await.unwrap_err());
        // The MCP `query` tool says the same.
        let mcp = format!("http://{}/mcp", running.mcp_addr.expect("an MCP listener"));
        let answer = support::mcp_tool_call(
            &mcp,
            "analyst",
            "query",
            serde_json::json!({"sql": "SELECT 1"}),
        )
        .await;
        let error = &answer["result"]["structuredContent"]["error"];
        assert_eq!(error["sqlstate"], "08006", "{answer}");
        let mcp_detail = error["detail"].as_str().unwrap_or_default().to_string();
        for d in [&trusted, &analyst, &mcp_detail] {
            assert!(
                d.contains("too many connections") && d.contains("53300"),
                "{d}"
            );
            assert!(!d.contains("credentials"), "{d}");
        }
    });
}

/// A relay to the upstream PostgreSQL that holds new connections while `held` is set: an
/// upstream slow to take logins.
async fn stalling_relay(held: std::sync::Arc<std::sync::atomic::AtomicBool>) -> u16 {
    use std::sync::atomic::Ordering;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let to = upstream_port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let held = held.clone();
            tokio::spawn(async move {
                while held.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                if let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    port
}

/// While the upstream is slow to take a new login, a statement that started opening a
/// connection takes one another session gives back meanwhile, instead of waiting for its own
/// login; the connection being opened still joins the pool once the upstream takes it.
#[test]
fn a_connection_given_back_serves_a_session_whose_own_login_is_slow() {
    use std::sync::atomic::{AtomicBool, Ordering};
    harness().runtime.block_on(async {
        let held = std::sync::Arc::new(AtomicBool::new(false));
        let relay = stalling_relay(held.clone()).await;
        let (running, gw) = gateway_via(2, "", Some(relay)).await;
        let (a, b) = (
            client(&running, "analyst").await,
            client(&running, "writer").await,
        );
        a.batch_execute("BEGIN").await.unwrap();
        assert_eq!(one(&a, "SELECT 1").await, "1");
        held.store(true, Ordering::SeqCst);
        // b's statement needs a second connection, whose login the upstream holds.
        let started = Instant::now();
        let b_statement = tokio::spawn(async move {
            let v = one(&b, "SELECT 2").await;
            (v, started.elapsed(), b)
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.batch_execute("COMMIT").await.unwrap();
        let (v, took, _b) = tokio::time::timeout(Duration::from_secs(10), b_statement)
            .await
            .expect("b's statement finishes")
            .unwrap();
        assert_eq!(v, "2");
        assert!(
            took < Duration::from_millis(1500),
            "b waited {took:?} for its own login though a's connection came back at 300 ms"
        );
        // The login the upstream held completes once it is let go, into the pool.
        held.store(false, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(5);
        while server_connections(&gw.role).await < 2 {
            assert!(
                Instant::now() < deadline,
                "the held login never joined the pool"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let pool = transaction_pool(&running);
        assert_eq!((pool.open, pool.idle, pool.waiting), (2, 2, 0), "{pool:?}");
    });
}

/// A server with no connection free for the pool's login (53300) is like a full pool while the
/// pool has connections of its own: the statement waits for one to come back (within the
/// checkout timeout) instead of ending its session, as PgBouncer queues its clients.
#[test]
fn a_server_at_its_connection_limit_makes_statements_wait_for_the_pools_connections() {
    harness().runtime.block_on(async {
        let (running, gw) = gateway(3, "").await;
        let (a, b) = (
            client(&running, "analyst").await,
            client(&running, "writer").await,
        );
        a.batch_execute("BEGIN").await.unwrap();
        assert_eq!(one(&a, "SELECT 1").await, "1");
        // The role may have the one connection it has, no second.
        upstream()
            .await
            .batch_execute(&format!("ALTER ROLE {} CONNECTION LIMIT 1", gw.role))
            .await
            .unwrap();
        let started = Instant::now();
        let waiting = tokio::spawn(async move {
            let v = one(&b, "SELECT 2").await;
            (v, started.elapsed())
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!waiting.is_finished(), "the statement did not wait");
        a.batch_execute("COMMIT").await.unwrap();
        let (v, took) = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("answered")
            .unwrap();
        assert_eq!(v, "2");
        assert!(took < Duration::from_secs(3), "{took:?}");
        upstream()
            .await
            .batch_execute(&format!("ALTER ROLE {} CONNECTION LIMIT -1", gw.role))
            .await
            .unwrap();
    });
}

#[test]
fn new_vaulted_credentials_drain_the_old_connections() {
    harness().runtime.block_on(async {
        let (running, gw) = gateway(2, "").await;
        let a = client(&running, "analyst").await;
        assert_eq!(one(&a, "SELECT 1").await, "1");
        let old = server_pids(&gw.role).await;
        assert!(!old.is_empty());
        let su = upstream().await;
        su.batch_execute(&format!(
            "ALTER ROLE {} PASSWORD 'second-pw-0123456789'",
            gw.role
        ))
        .await
        .unwrap();
        vault_set(gw._dir.path(), "pool_password", "second-pw-0123456789");
        assert!(running.gateway.reload_vault().is_ok());
        // The connections logged in with the old password are not handed out again (idle ones
        // are closed at once); the new one logs in with the new password.
        assert_eq!(
            one(&a, "SELECT count(*) FROM orders WHERE id = 1").await,
            "1"
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        let new = loop {
            let now = server_pids(&gw.role).await;
            if !now.iter().any(|p| old.contains(p)) || Instant::now() > deadline {
                break now;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            !new.is_empty() && new.iter().all(|p| !old.contains(p)),
            "{old:?} {new:?}"
        );
        assert!(server_connections(&gw.role).await <= 2);
    });
}

/// A row-limit cancel of one session must land before its connection runs another session's
/// statement (pool of one: they take turns on the same server connection).
#[test]
fn a_cancel_of_tollgates_own_never_hits_the_next_session_on_the_connection() {
    harness().runtime.block_on(async {
        let (running, _gw) = gateway(1, "").await;
        let analyst = client(&running, "analyst").await;
        let writer = client(&running, "writer").await;
        for round in 0..25 {
            // More rows than the analyst's max_rows: tollgate cancels the rest upstream.
            let big = analyst.simple_query("SELECT id FROM orders");
            let small = writer.simple_query("SELECT pg_sleep(0.02)");
            let (big, small) = tokio::join!(big, small);
            big.unwrap_or_else(|e| panic!("round {round}: analyst: {e:?}"));
            small
                .unwrap_or_else(|e| panic!("round {round}: the writer's statement was hit: {e:?}"));
        }
    });
}

/// A transaction moving to a server connection whose parameters differ from what the client was
/// shown gets ParameterStatus for the difference first; moving between connections that report
/// the same gets none.
#[test]
fn parameters_that_differ_between_server_connections_are_replayed() {
    harness().runtime.block_on(async {
        let (running, gw) = gateway(2, "").await;
        let addr = running.pg_addr.unwrap();
        let mut a = support::raw_login_at(addr, "analyst").await; // shown the old DateStyle
        let su = upstream().await;
        su.batch_execute(&format!(
            "ALTER ROLE {} SET DateStyle = 'SQL, DMY'",
            gw.role
        ))
        .await
        .unwrap();
        // Every server connection so far goes: the next ones log in with the new DateStyle.
        su.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            &[&gw.role],
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (values, tags, code) = support::raw_query(&mut a, "SHOW DateStyle").await;
        assert_eq!((values, code), (vec!["SQL, DMY".to_string()], None));
        assert_eq!(
            tags.first(),
            Some(&b'S'),
            "the new DateStyle first: {tags:?}"
        );
        assert_eq!(tags.iter().filter(|t| **t == b'S').count(), 1, "{tags:?}");
        // While another session holds that connection, the next transaction runs on a new one
        // reporting the same: nothing to replay.
        let hold = client(&running, "analyst").await;
        hold.batch_execute("BEGIN; SELECT 1").await.unwrap();
        let (values, tags, _) = support::raw_query(&mut a, "SHOW DateStyle").await;
        assert_eq!(values, vec!["SQL, DMY".to_string()]);
        assert!(!tags.contains(&b'S'), "{tags:?}");
        assert_eq!(server_connections(&gw.role).await, 2);
        hold.batch_execute("COMMIT").await.unwrap();
    });
}

// Isolation between agents on one server connection (transaction pooling), message by message.

/// Sends raw messages on a raw connection.
async fn send(s: &mut tokio::net::TcpStream, msgs: &[Vec<u8>]) {
    use tokio::io::AsyncWriteExt;
    s.write_all(&msgs.concat()).await.unwrap();
}

/// An extended-protocol `DEALLOCATE name` (unnamed Parse, Bind, Execute, Sync, as psycopg sends
/// it) answered as the server answers it, after which a Bind of `name` is 26000.
async fn deallocate_extended_then_gone(s: &mut tokio::net::TcpStream, name: &str) {
    let sql = format!("DEALLOCATE {name}");
    send(
        s,
        &[parse("", &sql), bind_unnamed(), execute_unnamed(0), sync()],
    )
    .await;
    let mut got = Vec::new();
    loop {
        let (tag, body) = support::read_message(s).await;
        assert_ne!(tag, b'E', "{sql}: {:?}", support::error_field(&body, b'M'));
        got.push(tag);
        if tag == b'C' {
            assert_eq!(&body[..], b"DEALLOCATE\0");
        }
        if tag == b'Z' {
            break;
        }
    }
    assert_eq!(got, b"12CZ", "{sql}");
    let bind = support::message(b'B', format!("\0{name}\0\0\0\0\0\0\0").as_bytes());
    send(s, &[bind, sync()]).await;
    let (tag, body) = support::read_message(s).await;
    assert_eq!(tag, b'E', "{name} was deallocated");
    assert_eq!(support::error_field(&body, b'C').as_deref(), Some("26000"));
    assert_eq!(tags(s, 1).await, b"Z");
}

/// Runs `sql` as a simple Query: its error's SQLSTATE is `code` (`None`: no error).
async fn assert_error_code(s: &mut tokio::net::TcpStream, sql: &str, code: Option<&str>) {
    let replies = simple_query(s, sql).await;
    let error = replies
        .iter()
        .find(|(tag, _)| *tag == b'E')
        .and_then(|(_, body)| support::error_field(body, b'C'));
    assert_eq!(error.as_deref(), code, "{sql}: {replies:?}");
}

/// A simple Query's replies, up to ReadyForQuery.
async fn simple_query(s: &mut tokio::net::TcpStream, sql: &str) -> Vec<(u8, Vec<u8>)> {
    send(s, &[support::message(b'Q', format!("{sql}\0").as_bytes())]).await;
    let mut replies = Vec::new();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), support::read_message(s))
            .await
            .unwrap_or_else(|_| panic!("{sql}: no ReadyForQuery after {replies:?}"));
        let done = m.0 == b'Z';
        replies.push(m);
        if done {
            return replies;
        }
    }
}

/// Reads `n` messages, returning their tags.
async fn tags(s: &mut tokio::net::TcpStream, n: usize) -> Vec<u8> {
    let mut t = Vec::new();
    for _ in 0..n {
        let m = tokio::time::timeout(Duration::from_secs(5), support::read_message(s))
            .await
            .unwrap_or_else(|_| panic!("no reply after {t:?}"));
        t.push(m.0);
    }
    t
}

/// A raw login as `agent` with extra startup parameters (to share a settings key).
async fn raw_login_with(
    addr: std::net::SocketAddr,
    agent: &str,
    extra: &[(&str, &str)],
) -> tokio::net::TcpStream {
    use bytes::BytesMut;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
    use postgres_protocol::message::frontend;
    use tokio::io::AsyncWriteExt;
    let env = &harness().env;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = BytesMut::new();
    let mut params = vec![("user", agent), ("database", "shop")];
    params.extend_from_slice(extra);
    frontend::startup_message(params, &mut buf).unwrap();
    s.write_all(&buf).await.unwrap();
    let (tag, _) = support::read_message(&mut s).await;
    assert_eq!(tag, b'R');
    let mut scram = ScramSha256::new(env.token(agent).as_bytes(), ChannelBinding::unsupported());
    buf.clear();
    frontend::sasl_initial_response("SCRAM-SHA-256", scram.message(), &mut buf).unwrap();
    s.write_all(&buf).await.unwrap();
    let (_, body) = support::read_message(&mut s).await;
    scram.update(&body[4..]).unwrap();
    buf.clear();
    frontend::sasl_response(scram.message(), &mut buf).unwrap();
    s.write_all(&buf).await.unwrap();
    loop {
        let (tag, _) = support::read_message(&mut s).await;
        assert_ne!(tag, b'E', "login failed");
        if tag == b'Z' {
            return s;
        }
    }
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    support::message(b'P', format!("{name}\0{sql}\0\0\0").as_bytes())
}
fn bind_unnamed() -> Vec<u8> {
    support::message(b'B', b"\0\0\0\0\0\0\0\0")
}
fn execute_unnamed(max: i32) -> Vec<u8> {
    let mut b = vec![0u8];
    b.extend_from_slice(&max.to_be_bytes());
    support::message(b'E', &b)
}
fn flush() -> Vec<u8> {
    support::message(b'H', b"")
}
fn sync() -> Vec<u8> {
    support::message(b'S', b"")
}

/// Logs `agent` in and sends Parse/Bind/Execute (at most `max_rows`) of `sql`, ended by Flush,
/// not Sync, as pg-cursor and psycopg's pipeline do.
async fn batch_without_sync(
    addr: std::net::SocketAddr,
    agent: &str,
    sql: &str,
    max_rows: i32,
) -> tokio::net::TcpStream {
    let mut s = support::raw_login_at(addr, agent).await;
    send(
        &mut s,
        &[
            parse("", sql),
            bind_unnamed(),
            execute_unnamed(max_rows),
            flush(),
        ],
    )
    .await;
    s
}

/// The values of the DataRows (first column) and the SQLSTATEs of the errors up to
/// ReadyForQuery.
async fn values_until_ready(s: &mut tokio::net::TcpStream) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let (tag, body) = support::read_message(s).await;
        if tag == b'D' {
            let len = i32::from_be_bytes([body[2], body[3], body[4], body[5]]) as usize;
            seen.push(String::from_utf8_lossy(&body[6..6 + len]).into_owned());
        }
        if tag == b'E' {
            seen.push(format!("error {:?}", support::error_field(&body, b'C')));
        }
        if tag == b'Z' {
            return seen;
        }
    }
}

/// Runs a simple query on a session that must wait for the pool's one connection, in the
/// background; the answer (tags, SQLSTATE, transaction status).
fn query_in_background(
    mut s: tokio::net::TcpStream,
    sql: &str,
) -> tokio::task::JoinHandle<(Vec<u8>, Option<String>, u8)> {
    let q = support::message(b'Q', format!("{sql}\0").as_bytes());
    tokio::spawn(async move {
        send(&mut s, &[q]).await;
        support::read_until_ready(&mut s).await
    })
}

/// An extended batch ended by Flush instead of Sync (pg-cursor, psycopg's pipeline) keeps the
/// connection: the server is inside the batch's transaction whatever the last ReadyForQuery
/// said. Another agent waits for it, and then runs outside that transaction.
#[test]
fn a_batch_without_sync_keeps_its_connection_until_the_transaction_ends() {
    harness().runtime.block_on(async {
        let (running, _gw) = gateway(1, "").await;
        let addr = running.pg_addr.unwrap();
        let mut a = batch_without_sync(addr, "trusted", "BEGIN", 0).await;
        assert_eq!(tags(&mut a, 3).await, b"12C");
        let b = support::raw_login_at(addr, "writer").await;
        let waiting = query_in_background(b, "SELECT 1");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !waiting.is_finished(),
            "the writer ran inside the trusted agent's batch"
        );
        send(&mut a, &[sync()]).await;
        let (_, code, status) = support::read_until_ready(&mut a).await;
        assert_eq!((code, status), (None, b'T'));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !waiting.is_finished(),
            "the writer ran inside the trusted agent's transaction"
        );
        send(&mut a, &[support::message(b'Q', b"COMMIT\0")]).await;
        let (_, code, status) = support::read_until_ready(&mut a).await;
        assert_eq!((code, status), (None, b'I'));
        let (t, code, status) = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the writer runs once the transaction ended")
            .unwrap();
        assert_eq!((t, code, status), (b"TDCZ".to_vec(), None, b'I'));
    });
}

/// A portal suspended under Flush is never reachable by another agent: the connection stays
/// with its session until the Sync, which ends the portal's transaction.
#[test]
fn a_suspended_portal_is_never_read_by_another_agent() {
    harness().runtime.block_on(async {
        let (running, _gw) = gateway(1, "").await;
        let addr = running.pg_addr.unwrap();
        let mut a =
            batch_without_sync(addr, "trusted", "SELECT ssn FROM customers ORDER BY id", 1).await;
        assert_eq!(tags(&mut a, 4).await, b"12Ds");
        let mut b = support::raw_login_at(addr, "analyst").await;
        send(&mut b, &[execute_unnamed(3), sync()]).await;
        let reader = tokio::spawn(async move { values_until_ready(&mut b).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !reader.is_finished(),
            "the analyst got the trusted agent's connection mid-batch"
        );
        send(&mut a, &[sync()]).await;
        let (_, code, status) = support::read_until_ready(&mut a).await;
        assert_eq!((code, status), (None, b'I'));
        let seen = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("the analyst is answered once the batch ended")
            .unwrap();
        assert_eq!(
            seen,
            vec!["error Some(\"34000\")".to_string()],
            "as direct: no such portal"
        );
    });
}

/// An error in a batch without Sync leaves the server skipping to the Sync: the connection is
/// not given to another agent (whose query the server would discard) before that Sync.
#[test]
fn an_error_before_sync_keeps_the_connection_until_the_sync() {
    harness().runtime.block_on(async {
        let (running, _gw) = gateway(1, "").await;
        let addr = running.pg_addr.unwrap();
        let mut a = batch_without_sync(addr, "trusted", "SELECT 1/0", 0).await;
        assert_eq!(tags(&mut a, 2).await, b"1E");
        let b = support::raw_login_at(addr, "writer").await;
        let waiting = query_in_background(b, "SELECT 1");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished());
        send(&mut a, &[sync()]).await;
        let (t, _, status) = support::read_until_ready(&mut a).await;
        assert_eq!((t, status), (b"Z".to_vec(), b'I'));
        let (t, code, status) = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the writer is answered once the batch ended")
            .unwrap();
        assert_eq!((t, code, status), (b"TDCZ".to_vec(), None, b'I'));
    });
}

/// A protocol-level Close of a statement name the session did not prepare (tollgate's own
/// `tg_` names, another session's unnamed statement) is answered by tollgate and never reaches
/// the shared connection.
#[test]
fn a_close_of_another_sessions_statement_name_closes_nothing_on_the_server() {
    use sha2::Digest;
    harness().runtime.block_on(async {
        let (running, _gw) = gateway(1, "").await;
        let addr = running.pg_addr.unwrap();
        let w = client(&running, "writer").await;
        let sql = "SELECT amount FROM orders WHERE id = $1";
        let st = w.prepare(sql).await.unwrap();
        w.query_one(&st, &[&1i64]).await.unwrap();
        let mut rest = sql.as_bytes().to_vec();
        rest.extend_from_slice(&[0, 0, 0]);
        let name = format!("tg_{}", hex::encode(&sha2::Sha256::digest(&rest)[..16]));
        let t = client(&running, "trusted").await;
        let names = one(
            &t,
            "SELECT string_agg(name || ': ' || statement, ' | ') FROM pg_prepared_statements",
        )
        .await;
        eprintln!("computed {name}; on the connection: {names}");
        // The settings tokio-postgres sends, so the analyst gets the writer's connection.
        let mut b = raw_login_with(addr, "analyst", &[("client_encoding", "UTF8")]).await;
        send(
            &mut b,
            &[
                support::message(b'C', format!("S{name}\0").as_bytes()),
                sync(),
            ],
        )
        .await;
        let (t, code, _) = support::read_until_ready(&mut b).await;
        eprintln!(
            "analyst's Close of {name}: {:?} {code:?}",
            String::from_utf8_lossy(&t)
        );
        let r = w.query_one(&st, &[&1i64]).await;
        assert!(
            r.is_ok(),
            "writer's prepared statement broken by the analyst: {:?}",
            r.err().map(|e| db_message(&e))
        );
    });
}

/// The server drops the unnamed statement at any simple Query: after another session's Query
/// on the connection, tollgate puts the first session's unnamed statement back before its Bind.
#[test]
fn another_sessions_query_does_not_lose_the_unnamed_statement() {
    harness().runtime.block_on(async {
        let (running, _gw) = gateway(1, "").await;
        let addr = running.pg_addr.unwrap();
        let mut b = support::raw_login_at(addr, "writer").await;
        send(&mut b, &[parse("", "SELECT 42"), sync()]).await;
        let (t, code, _) = support::read_until_ready(&mut b).await;
        assert_eq!((t, code), (b"1Z".to_vec(), None));
        let mut c = support::raw_login_at(addr, "analyst").await;
        let (_, _, code) = support::raw_query(&mut c, "SELECT 1").await;
        assert_eq!(code, None);
        send(&mut b, &[bind_unnamed(), execute_unnamed(0), sync()]).await;
        let (t, code, _) = support::read_until_ready(&mut b).await;
        eprintln!(
            "writer's Bind of its own unnamed statement: {:?} {code:?}",
            String::from_utf8_lossy(&t)
        );
        assert_eq!(code, None, "as direct, the statement is still there");
    });
}

/// An MCP `query` call parses the unnamed statement on a pooled connection: a wire session
/// whose settings equal the MCP door's (anyone may send them) and whose unnamed statement was
/// on that connection gets its own statement put back, never the MCP call's.
#[test]
fn an_mcp_call_does_not_replace_a_wire_sessions_unnamed_statement() {
    harness().runtime.block_on(async {
        let (running, _gw) = gateway(1, "").await;
        let addr = running.pg_addr.unwrap();
        let mcp = format!("http://{}/mcp", running.mcp_addr.unwrap());
        let key = [
            ("application_name", "tollgate-mcp"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
        ];
        let mut b = raw_login_with(addr, "analyst", &key).await;
        send(&mut b, &[parse("", "SELECT 'analyst-own'"), sync()]).await;
        let (t, code, _) = support::read_until_ready(&mut b).await;
        assert_eq!((t, code), (b"1Z".to_vec(), None));
        let args = serde_json::json!({"sql": "SELECT ssn FROM customers ORDER BY id LIMIT 1"});
        let resp = support::mcp_tool_call(&mcp, "trusted", "query", args).await;
        eprintln!(
            "trusted's MCP call: {}",
            resp["result"]["structuredContent"]["rows"]
        );
        send(&mut b, &[bind_unnamed(), execute_unnamed(0), sync()]).await;
        let seen = values_until_ready(&mut b).await;
        eprintln!("analyst's Bind of its own unnamed statement returned: {seen:?}");
        assert_eq!(seen, vec!["analyst-own".to_string()]);
    });
}

/// Sends `msgs` and reads to ReadyForQuery: the first error's (SQLSTATE, message), if any.
async fn first_error(s: &mut tokio::net::TcpStream, msgs: &[Vec<u8>]) -> Option<(String, String)> {
    send(s, msgs).await;
    let mut first = None;
    loop {
        let (tag, body) = support::read_message(s).await;
        if tag == b'E' && first.is_none() {
            first = Some((
                support::error_field(&body, b'C').unwrap_or_default(),
                support::error_field(&body, b'M').unwrap_or_default(),
            ));
        }
        if tag == b'Z' {
            return first;
        }
    }
}

fn simple(sql: &str) -> Vec<u8> {
    support::message(b'Q', format!("{sql}\0").as_bytes())
}

/// tollgate prepares protocol-level statements on shared connections as `tg_` and a hash of
/// their text, which anyone can compute: an agent naming one (SQL PREPARE or EXECUTE, a protocol
/// Parse of such a PREPARE) is refused, so the writer's INSERT prepared on the pool's one
/// connection never runs as the analyst.
#[test]
fn another_agents_pooled_statement_cannot_be_run_under_tollgates_name_for_it() {
    use sha2::Digest;
    harness().runtime.block_on(async {
        let (running, _gw) = gateway(1, "").await;
        let addr = running.pg_addr.unwrap();
        let marker = 700_000 + i64::from(std::process::id() % 99_999);
        let sql = format!(
            "INSERT INTO orders (customer_id, amount) VALUES (1, {marker}) RETURNING id"
        );
        let w = client(&running, "writer").await;
        w.prepare(&sql).await.unwrap(); // prepared on the one connection, never executed
        let mut rest = sql.as_bytes().to_vec();
        rest.extend_from_slice(&[0, 0, 0]);
        let name = format!("tg_{}", hex::encode(&sha2::Sha256::digest(&rest)[..16]));
        // The settings tokio-postgres sends, so the analyst gets the writer's connection.
        let mut a = raw_login_with(addr, "analyst", &[("client_encoding", "UTF8")]).await;
        let reserved = |e: Option<(String, String)>| {
            matches!(&e, Some((c, m)) if c == "42501" && m.ends_with("(rule: builtin: reserved-name)"))
        };
        for attempt in [
            vec![simple(&format!("PREPARE {name} AS SELECT 1"))],
            vec![simple(&format!("EXECUTE {name}"))],
            vec![simple(&format!("PREPARE \"{}\" AS SELECT 1", name.to_uppercase()))],
            vec![parse("", &format!("prepare {name} as select 1")), sync()],
            vec![simple(&format!("EXECUTE {name}"))],
            vec![parse("", &format!("EXECUTE {name}")), sync()],
        ] {
            let e = first_error(&mut a, &attempt).await;
            assert!(reserved(e.clone()), "{e:?}");
        }
        let inserted = orders_with_amount(marker).await;
        assert_eq!(inserted, 0, "the writer's INSERT never ran");
    });
}

/// A SQL PREPARE makes its name the session's only when the server confirms it: one the server
/// refused leaves nothing to EXECUTE (tollgate refuses it before anything is sent; PostgreSQL
/// would say 26000, or run whatever else holds the name on a shared connection). A second
/// PREPARE of a name the session has is refused as the server would.
#[test]
fn a_prepare_the_server_refused_leaves_no_name_to_execute() {
    harness().runtime.block_on(async {
        let (running, _gw) = gateway(1, "").await;
        let mut a = support::raw_login_at(running.pg_addr.unwrap(), "analyst").await;
        let e = first_error(
            &mut a,
            &[simple("PREPARE p AS SELECT no_such_column FROM orders")],
        )
        .await;
        assert_eq!(e.map(|e| e.0).as_deref(), Some("42703"));
        let e = first_error(&mut a, &[simple("EXECUTE p")]).await;
        assert!(
            matches!(&e, Some((c, m)) if c == "42501" && m.contains("builtin: unchecked-execute")),
            "{e:?}"
        );
        // Confirmed, it runs; a second PREPARE of the name is refused as the server would.
        let e = first_error(&mut a, &[simple("PREPARE p AS SELECT 41 + 1")]).await;
        assert_eq!(e, None);
        let (values, _, code) = support::raw_query(&mut a, "EXECUTE p").await;
        assert_eq!((values, code), (vec!["42".to_string()], None));
        let e = first_error(&mut a, &[simple("PREPARE p AS SELECT 1")]).await;
        assert_eq!(e.map(|e| e.0).as_deref(), Some("42P05"));
        // Pipelined right behind its PREPARE, an EXECUTE waits for the server's answer.
        send(
            &mut a,
            &[simple("PREPARE q AS SELECT 7"), simple("EXECUTE q")],
        )
        .await;
        assert_eq!(values_until_ready(&mut a).await, Vec::<String>::new());
        assert_eq!(values_until_ready(&mut a).await, vec!["7".to_string()]);
    });
}

/// A session-pooled login that finds the session pool full names the setting that sized it,
/// `max_session_connections` (it said `pool_size`, the transaction pool's, which had room).
#[test]
fn a_full_session_pool_names_max_session_connections() {
    use support::served::{demo_dir_with, Served};
    let dir = demo_dir_with(|t| {
        t.replacen(
            "pool_size = 10",
            "pool_size = 10\nmax_session_connections = 1\ncheckout_timeout_ms = 300",
            1,
        )
    });
    let served = Served::start(dir, "");
    harness().runtime.block_on(async {
        let holder = support::connect_url(&served.pg_url("trusted"))
            .await
            .unwrap();
        assert_eq!(one(&holder, "SELECT 1").await, "1");
        let e = support::connect_url(&served.pg_url("trusted"))
            .await
            .expect_err("the one session connection is held");
        assert_eq!(sqlstate(&e), "53300", "{e}");
        assert!(
            db_message(&e).contains("rule: tollgate.toml: upstream.shop.max_session_connections"),
            "{}",
            db_message(&e)
        );
        drop(holder);
    });
    drop(served);
}

/// A client that vanishes in the middle of COPY FROM STDIN inside a transaction: the server
/// waits for data that will not come, holding the transaction's locks. The session no longer
/// waits its reply grace (5 s) for a reply that cannot come: the server connection is closed at
/// once, which aborts the transaction (a live review saw the row lock held 5 s; direct, the
/// server sees the client's EOF itself).
#[test]
fn a_client_gone_mid_copy_in_frees_its_locks_at_once() {
    use tokio::io::AsyncWriteExt;
    harness().runtime.block_on(async {
        let mut s = support::raw_login("writer").await;
        assert_eq!(support::raw_query(&mut s, "BEGIN").await.2, None);
        let (_, _, code) =
            support::raw_query(&mut s, "UPDATE orders SET amount = amount WHERE id = 3").await;
        assert_eq!(code, None);
        s.write_all(&support::message(b'Q', b"COPY orders FROM STDIN\0"))
            .await
            .unwrap();
        loop {
            let (tag, _) = support::read_message(&mut s).await;
            assert_ne!(tag, b'E', "COPY refused");
            if tag == b'G' {
                break;
            }
        }
        s.write_all(&support::message(b'd', b"999999\tpartial"))
            .await
            .unwrap();
        drop(s);
        let c = support::connect("writer").await;
        c.batch_execute("BEGIN; SET LOCAL lock_timeout = '2s'")
            .await
            .unwrap();
        c.batch_execute("UPDATE orders SET amount = amount WHERE id = 3")
            .await
            .expect("the abandoned COPY's row lock is gone within 2 s");
        c.batch_execute("ROLLBACK").await.unwrap();
    });
}

/// The same, for a client that sends its COPY and data and leaves before the server's
/// CopyInResponse can reach it: the response then comes during the session's reply grace (the
/// re-review saw the lock held 5 s in about half of such runs).
#[test]
fn a_client_gone_before_its_copy_in_began_frees_its_locks_at_once() {
    use tokio::io::AsyncWriteExt;
    harness().runtime.block_on(async {
        for round in 0..4 {
            let mut s = support::raw_login("writer").await;
            assert_eq!(support::raw_query(&mut s, "BEGIN").await.2, None);
            let (_, _, code) =
                support::raw_query(&mut s, "UPDATE orders SET amount = amount WHERE id = 4").await;
            assert_eq!(code, None);
            let mut burst = support::message(b'Q', b"COPY orders FROM STDIN\0");
            burst.extend(support::message(b'd', b"999998\tpartial"));
            s.write_all(&burst).await.unwrap();
            drop(s);
            let c = support::connect("writer").await;
            c.batch_execute("BEGIN; SET LOCAL lock_timeout = '2s'")
                .await
                .unwrap();
            c.batch_execute("UPDATE orders SET amount = amount WHERE id = 4")
                .await
                .unwrap_or_else(|e| panic!("round {round}: the lock is still held: {e:?}"));
            c.batch_execute("ROLLBACK").await.unwrap();
        }
    });
}

/// After a schema change, a statement a session prepared before runs on a server connection
/// that never had it: tollgate prepares it there anew, where it has the new columns and the
/// server has nothing to refuse. It must still fail as the session's own statement would
/// direct (0A000), not run and hand the client rows of another shape than it was described (a
/// live review: asyncpg decoded int8 rows as float8, silently).
#[test]
fn a_statement_prepared_before_a_schema_change_fails_on_a_connection_that_lacked_it() {
    harness().runtime.block_on(async {
        let (running, _gw) = gateway(2, "").await;
        let table = small_table("stale_shape").await;
        let sql = format!("SELECT * FROM {table} WHERE id = $1");
        let change = format!("ALTER TABLE {table} ALTER COLUMN a TYPE float8");
        let (a, st, c) = on_a_connection_without_it(&running, &sql, &change).await;
        let e = a
            .query_one(&st, &[&1i32])
            .await
            .expect_err("prepared before the change: refused, not run with the new columns");
        assert_eq!(sqlstate(&e), "0A000", "{e:?}");
        let routine = e.as_db_error().and_then(|d| d.routine());
        assert_eq!(routine, Some("RevalidateCachedQuery"), "{e:?}");
        // Prepared again, it runs there, with its new columns.
        let st = a.prepare(&sql).await.unwrap();
        assert_eq!(
            a.query_one(&st, &[&1i32]).await.unwrap().get::<_, f64>(1),
            10.0
        );
        c.batch_execute("COMMIT").await.unwrap();
        drop_table(&table).await;
        drop(running);
    });
}

/// Drops a table of the test's own ([`small_table`]) at the end.
async fn drop_table(table: &str) {
    upstream()
        .await
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

/// A table of the test's own, `PREFIX_PID (id int PRIMARY KEY, a int)` holding (1, 10), which
/// the pool's role may read; dropped first if a run before left it.
async fn small_table(prefix: &str) -> String {
    let table = format!("{prefix}_{}", std::process::id());
    upstream()
        .await
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {table}; DROP TABLE IF EXISTS {table}_x;
             CREATE TABLE {table} (id int PRIMARY KEY, a int);
             INSERT INTO {table} VALUES (1, 10); GRANT SELECT ON {table} TO tollgate_shop"
        ))
        .await
        .unwrap();
    table
}

/// Three sessions on a pool of two: `a` prepares `sql` (described) on one connection while `b`
/// holds the other; `change` runs; `c` takes the first connection and `b` gives the second
/// back, so that `a`'s next run is on a connection that never had the statement.
async fn on_a_connection_without_it(
    running: &tollgate::gateway::Running,
    sql: &str,
    change: &str,
) -> (
    tokio_postgres::Client,
    tokio_postgres::Statement,
    tokio_postgres::Client,
) {
    let (a, b, c) = (
        client(running, "trusted").await,
        client(running, "trusted").await,
        client(running, "trusted").await,
    );
    b.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let st = a.prepare(sql).await.unwrap();
    assert_eq!(a.query(&st, &[&1i32]).await.unwrap().len(), 1);
    upstream().await.batch_execute(change).await.unwrap();
    c.batch_execute("BEGIN; SELECT 1").await.unwrap();
    b.batch_execute("COMMIT").await.unwrap();
    (a, st, c)
}

/// The same with the parameter's type changed: a copy prepared anew infers another type and
/// reads the client's bytes otherwise (int4 bytes as a float8 matched no row, silently; a
/// re-review). The parameter types are compared too.
#[test]
fn a_statement_whose_parameter_type_changed_fails_on_a_connection_that_lacked_it() {
    harness().runtime.block_on(async {
        let (running, _gw) = gateway(2, "").await;
        let table = small_table("stale_param").await;
        let sql = format!("SELECT a FROM {table} WHERE id = $1");
        let change = format!("ALTER TABLE {table} ALTER COLUMN id TYPE float8");
        let (a, st, c) = on_a_connection_without_it(&running, &sql, &change).await;
        let e = a
            .query(&st, &[&1i32])
            .await
            .expect_err("its parameter was described int4: refused, not run as a float8");
        assert_eq!(sqlstate(&e), "0A000", "{e:?}");
        let st = a.prepare(&sql).await.unwrap();
        assert_eq!(
            a.query_one(&st, &[&1f64]).await.unwrap().get::<_, i32>(0),
            10
        );
        c.batch_execute("COMMIT").await.unwrap();
        drop_table(&table).await;
        drop(running);
    });
}

/// The copy prepared before the Bind fails (the table renamed away meanwhile): the client gets
/// the server's error once, and the connection does not count the statement as held. It did: a
/// Parse of tollgate's own sent after the failure was skipped by the server, and every later
/// session's use of the text on that connection failed with 26000 (a re-review).
#[test]
fn a_copy_that_fails_to_prepare_before_a_bind_leaves_the_connection_usable() {
    harness().runtime.block_on(async {
        let (running, _gw) = gateway(2, "").await;
        let table = small_table("gone_copy").await;
        let su = upstream().await;
        let sql = format!("SELECT a FROM {table} WHERE id = $1");
        let change = format!("ALTER TABLE {table} RENAME TO {table}_x");
        let (a, st, c) = on_a_connection_without_it(&running, &sql, &change).await;
        let e = a.query(&st, &[&1i32]).await.expect_err("the table is gone");
        assert_eq!(sqlstate(&e), "42P01", "{e:?}");
        assert_eq!(one(&a, "SELECT 7").await, "7", "the session goes on");
        su.batch_execute(&format!("ALTER TABLE {table}_x RENAME TO {table}"))
            .await
            .unwrap();
        // `c` still holds the other connection: every session below runs on this one.
        for i in 0..3 {
            let d = client(&running, "trusted").await;
            let st = d
                .prepare(&sql)
                .await
                .unwrap_or_else(|e| panic!("session {i}: {e:?}"));
            let row = d.query_one(&st, &[&1i32]).await;
            let row = row.unwrap_or_else(|e| panic!("session {i}: {e:?}"));
            assert_eq!(row.get::<_, i32>(0), 10);
        }
        let row = a
            .query_one(&st, &[&1i32])
            .await
            .expect("a's statement again");
        assert_eq!(row.get::<_, i32>(0), 10);
        c.batch_execute("COMMIT").await.unwrap();
        su.batch_execute(&format!("DROP TABLE {table}"))
            .await
            .unwrap();
        drop(running);
    });
}

/// The copy prepared before a Bind waits on a lock another session holds: the agent's statement
/// timeout cancels it as it would the statement (it waited as long as the lock was held: left
/// open last session), and the connection and session stay usable.
#[test]
fn a_copy_prepared_before_a_bind_is_under_the_statement_timeout() {
    harness().runtime.block_on(async {
        let (running, gw) = gateway(2, "").await;
        let policy = gw._dir.path().join("policies/trusted.toml");
        let text = std::fs::read_to_string(&policy).unwrap().replacen(
            "[limits]\n",
            "[limits]\nstatement_timeout_ms = 700\n",
            1,
        );
        std::fs::write(&policy, text).unwrap();
        running.gateway.reload().unwrap();
        let table = small_table("locked_copy").await;
        let sql = format!("SELECT a FROM {table} WHERE id = $1");
        let (a, st, c) = on_a_connection_without_it(&running, &sql, "SELECT 1").await;
        // Another session holds the table: a Parse there waits for its lock.
        let mut holder = upstream().await;
        let lock = holder.transaction().await.unwrap();
        lock.batch_execute(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let ran = tokio::time::timeout(Duration::from_secs(10), a.query(&st, &[&1i32]))
            .await
            .expect("the statement timeout ends the wait");
        let e = ran.expect_err("cancelled at the statement timeout");
        assert_eq!(sqlstate(&e), "57014", "{e:?}");
        assert!(
            db_message(&e).contains("statement timeout of 700 ms"),
            "{e:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // The client's own Parse (a prepare: Parse, Describe, Sync) waits on the lock too, and
        // is cancelled at the timeout as the server's statement_timeout would (a re-review).
        let d = client(&running, "trusted").await;
        let started = std::time::Instant::now();
        let prepared = tokio::time::timeout(
            Duration::from_secs(10),
            d.prepare(&format!("SELECT a FROM {table} WHERE id = $1 AND a > 0")),
        )
        .await
        .expect("the statement timeout ends the Parse's wait");
        let e = prepared.expect_err("cancelled at the statement timeout");
        assert_eq!(sqlstate(&e), "57014", "{e:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        lock.rollback().await.unwrap();
        assert_eq!(one(&d, "SELECT 8").await, "8", "that session goes on too");
        assert_eq!(one(&a, "SELECT 7").await, "7", "the session goes on");
        let row = a
            .query_one(&st, &[&1i32])
            .await
            .expect("and its statement runs");
        assert_eq!(row.get::<_, i32>(0), 10);
        c.batch_execute("COMMIT").await.unwrap();
        drop_table(&table).await;
        drop(running);
    });
}

/// A schema change makes a prepared statement's plan stale (`0A000 cached plan must not change
/// result type`); drivers then prepare the text again (asyncpg does at once). tollgate shares
/// one server statement per text between sessions and answered that new Parse itself, so the
/// stale statement failed for every session (new ones included) until its connection closed,
/// where direct the driver's retry works (a live review with asyncpg). And a session that
/// prepared it before must keep getting the error until it prepares again, as it would direct:
/// bound to the statement prepared anew, it read rows of a shape it was not described (asyncpg
/// decoded a float8 as an int8; the re-review).
#[test]
fn a_plan_gone_stale_after_a_schema_change_is_prepared_again() {
    harness().runtime.block_on(async {
        let (running, _gw) = gateway(2, "").await;
        let table = small_table("stale_plan").await;
        let su = upstream().await;
        let sql = format!("SELECT * FROM {table} WHERE id = $1");
        // Both server connections get the statement: two sessions in transactions at once.
        let (a, b) = (
            client(&running, "trusted").await,
            client(&running, "trusted").await,
        );
        let mut before = Vec::new();
        for c in [&a, &b] {
            c.batch_execute("BEGIN").await.unwrap();
            let st = c.prepare(&sql).await.unwrap();
            assert_eq!(c.query_one(&st, &[&1i32]).await.unwrap().len(), 2);
            before.push(st);
        }
        for c in [&a, &b] {
            c.batch_execute("COMMIT").await.unwrap();
        }
        su.batch_execute(&format!("ALTER TABLE {table} ALTER COLUMN a TYPE float8"))
            .await
            .unwrap();
        // The statements prepared before fail, every time, as the server's own would: never
        // rows of the new shape under the old description.
        for round in 0..3 {
            for (c, st) in [(&a, &before[0]), (&b, &before[1])] {
                let e = c
                    .query_one(st, &[&1i32])
                    .await
                    .expect_err("a statement prepared before the change");
                assert_eq!(sqlstate(&e), "0A000", "round {round}: {e:?}");
                // The field drivers know it by (asyncpg prepares again on it).
                let routine = e.as_db_error().and_then(|d| d.routine());
                assert_eq!(routine, Some("RevalidateCachedQuery"), "{e:?}");
            }
        }
        // Prepared again (and in new sessions), on either connection, the text runs.
        for round in 0..3 {
            let c = client(&running, "trusted").await;
            let d = client(&running, "trusted").await;
            for pair in [[&c, &d], [&a, &b]] {
                for c in pair {
                    c.batch_execute("BEGIN").await.unwrap();
                }
                for (i, c) in pair.into_iter().enumerate() {
                    let st = c.prepare(&sql).await.unwrap();
                    let row = c.query_one(&st, &[&1i32]).await;
                    let row = row.unwrap_or_else(|e| panic!("round {round}, session {i}: {e:?}"));
                    assert_eq!(row.get::<_, f64>(1), 10.0, "round {round}, session {i}");
                }
                for c in pair {
                    c.batch_execute("COMMIT").await.unwrap();
                }
            }
        }
        su.batch_execute(&format!("DROP TABLE {table}"))
            .await
            .unwrap();
        drop(running);
    });
}
