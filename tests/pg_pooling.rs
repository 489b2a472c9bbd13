//! Upstream pooling against a real PostgreSQL: many agent sessions on few server connections,
//! session state never crossing agents on a transaction pool (each item also shown to leak when
//! isolation is disabled), prepared statements across connections, cancel, the checkout
//! timeout, a killed server connection replaced, and credentials rotated.

mod support;

use std::time::{Duration, Instant};

use support::{connect_url, copy_demo_dir, db_message, harness, sqlstate, upstream};

/// A gateway of its own on a copy of the demo's files: every agent transaction-pooled on a
/// pool of `size` connections with `extra` upstream settings, logged in upstream as a role of
/// its own (a member of the demo's), so its server connections can be counted.
async fn gateway(size: u32, extra: &str) -> (tollgate::gateway::Running, Gw) {
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
    let su = upstream().await;
    su.query_one(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = $1",
        &[&role],
    )
    .await
    .unwrap()
    .get(0)
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
        // Binding a statement the session never prepared is refused as PostgreSQL would.
        let mut raw = support::raw_login_at(running.pg_addr.unwrap(), "writer").await;
        use tokio::io::AsyncWriteExt;
        let mut bind = b"p\0tg_0000\0".to_vec();
        bind.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        raw.write_all(&support::message(b'B', &bind)).await.unwrap();
        raw.write_all(&support::message(b'S', b"")).await.unwrap();
        let (_, error, _) = support::read_until_ready(&mut raw).await;
        assert_eq!(error.as_deref(), Some("26000"));
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

#[test]
fn a_full_pool_refuses_after_the_checkout_timeout_naming_the_pool() {
    harness().runtime.block_on(async {
        let (running, _gw) = gateway(1, "checkout_timeout_ms = 400").await;
        let holder = client(&running, "writer").await;
        holder.batch_execute("BEGIN").await.unwrap();
        one(&holder, "SELECT count(*) FROM orders WHERE id = 1").await;
        let waiter = client(&running, "analyst").await;
        let started = Instant::now();
        let e = waiter
            .simple_query("SELECT 1")
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
        // The holder finishes; the pool serves again.
        holder.batch_execute("COMMIT").await.unwrap();
        let again = client(&running, "analyst").await;
        assert_eq!(one(&again, "SELECT 1").await, "1");
    });
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

/// `tollgate vault set NAME` in the gateway's directory, the value on stdin.
fn vault_set(dir: &std::path::Path, name: &str, value: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new(support::tollgate_bin())
        .args(["vault", "--config"])
        .arg(dir.join("tollgate.toml"))
        .args(["set", name])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(value.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
