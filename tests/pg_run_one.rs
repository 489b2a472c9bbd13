//! `pg::run_one` against the real upstream PostgreSQL, through a pool of its own: results and
//! types, parameters, the row cap (Execute stops the portal), the byte cap and the statement
//! timeout (tollgate's own CancelRequest, the connection reused afterwards), server errors, one
//! statement only, COPY, and what goes back to the pool: clean, reset, or closed.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::harness;
use tollgate::config::{PoolMode, PoolSettings};
use tollgate::pg::pool::{Pool, SettingsKey};
use tollgate::pg::run_one::{run, Caps, Cut, RunError, Statement};
use tollgate::pg::upstream::UpstreamTarget;
use tollgate::vault::Secret;

/// A pool of two connections to the demo's upstream as its superuser.
fn pool() -> Arc<Pool> {
    let url = &harness().env.upstream_pg_url;
    // postgresql://USER:PASSWORD@HOST:PORT/DB?...
    let rest = url.strip_prefix("postgresql://").unwrap();
    let (cred, rest) = rest.split_once('@').unwrap();
    let (user, password) = cred.split_once(':').unwrap();
    let (hostport, _) = rest.split_once('/').unwrap();
    let (host, port) = hostport.split_once(':').unwrap();
    let target = UpstreamTarget {
        name: "shop".into(),
        host: host.into(),
        port: port.parse().unwrap(),
        database: "shop".into(),
        user: Secret::new(user.into()),
        password: Secret::new(password.into()),
        search_path: "public".into(),
        tls: None,
        no_connection_check: Default::default(),
    };
    let settings = PoolSettings {
        isolation: true,
        mode: PoolMode::Transaction,
        size: 2,
        agent_share: 2,
        session_size: 2,
        min_idle: 0,
        max_lifetime: Duration::from_secs(3600),
        idle_timeout: Duration::from_secs(600),
        checkout_timeout: Duration::from_secs(5),
    };
    Arc::new(Pool::new(target, settings, Duration::from_secs(5)))
}

fn key() -> Arc<SettingsKey> {
    Arc::new(SettingsKey::new(
        &[("client_encoding".into(), "UTF8".into())],
        true,
    ))
}

fn caps() -> Caps {
    Caps {
        max_rows: None,
        max_bytes: 1 << 20,
        timeout: None,
    }
}

fn stmt<'a>(sql: &'a str, params: &'a [Option<String>]) -> Statement<'a> {
    Statement {
        sql,
        params,
        leaves_state: false,
    }
}

#[test]
fn rows_types_parameters_and_the_row_cap() {
    harness().runtime.block_on(async {
        let pool = pool();
        let params = [Some("3".to_string()), None];
        let c = run(
            &pool,
            &key(),
            None,
            &stmt(
                "SELECT id, email, $2::text AS nothing FROM customers WHERE id <= $1 ORDER BY id",
                &params,
            ),
            &caps(),
        )
        .await
        .unwrap();
        let names: Vec<&str> = c.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "email", "nothing"]);
        assert_eq!(c.columns[0].type_oid, 20);
        assert_eq!(c.rows.len(), 3);
        assert_eq!(c.rows[0][0].as_deref(), Some("1"));
        assert!(c.rows[0][1].as_deref().unwrap().contains('@'));
        assert_eq!(c.rows[0][2], None);
        assert_eq!(c.command_tag, "SELECT 3");
        assert_eq!(c.truncated, None);

        let capped = run(
            &pool,
            &key(),
            None,
            &stmt("SELECT id FROM orders", &[]),
            &Caps {
                max_rows: Some(10),
                ..caps()
            },
        )
        .await
        .unwrap();
        assert_eq!(capped.rows.len(), 10);
        assert_eq!(capped.truncated, Some(Cut::Rows));
        assert_eq!(capped.command_tag, "SELECT 10");
        let exact = run(
            &pool,
            &key(),
            None,
            &stmt("SELECT 1 UNION ALL SELECT 2", &[]),
            &Caps {
                max_rows: Some(2),
                ..caps()
            },
        )
        .await
        .unwrap();
        assert_eq!(
            (exact.rows.len(), exact.truncated),
            (2, None),
            "exactly the cap is whole"
        );
        assert_eq!(
            pool.counters
                .closed
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
    });
}

#[test]
fn the_byte_cap_and_the_timeout_cancel_and_the_connection_serves_again() {
    harness().runtime.block_on(async {
        let pool = pool();
        let big = run(
            &pool,
            &key(),
            None,
            &stmt(
                "SELECT repeat('x', 1000) FROM generate_series(1, 100000)",
                &[],
            ),
            &Caps {
                max_bytes: 10_000,
                ..caps()
            },
        )
        .await
        .unwrap();
        assert_eq!(big.truncated, Some(Cut::Bytes));
        assert!(
            big.rows.len() < 10 && big.bytes <= 10_000,
            "{}",
            big.rows.len()
        );

        let started = Instant::now();
        let slow = run(
            &pool,
            &key(),
            None,
            &stmt("SELECT pg_sleep(10)", &[]),
            &Caps {
                timeout: Some(Duration::from_millis(300)),
                ..caps()
            },
        )
        .await;
        assert!(
            matches!(slow, Err(RunError::TimedOut(d)) if d == Duration::from_millis(300)),
            "{slow:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "cancelled, not waited out"
        );
        // Both connections went back usable: the next statements run at once, and no cancel of
        // ours hits them.
        for _ in 0..4 {
            let c = run(
                &pool,
                &key(),
                None,
                &stmt("SELECT pg_sleep(0.05), 1", &[]),
                &caps(),
            )
            .await
            .unwrap();
            assert_eq!(c.rows.len(), 1);
        }
        assert_eq!(
            pool.counters
                .closed
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
    });
}

#[test]
fn errors_one_statement_only_and_copy() {
    harness().runtime.block_on(async {
        let pool = pool();
        match run(&pool, &key(), None, &stmt("SELECT 1/0", &[]), &caps()).await {
            Err(RunError::Server(e)) => {
                assert_eq!(e.code, "22012");
                assert_eq!(e.message, "division by zero");
            }
            other => panic!("{other:?}"),
        }
        match run(
            &pool,
            &key(),
            None,
            &stmt("SELECT 1; SELECT 2", &[]),
            &caps(),
        )
        .await
        {
            Err(RunError::Server(e)) => assert_eq!(e.code, "42601"),
            other => panic!("{other:?}"),
        }
        let copy = run(
            &pool,
            &key(),
            None,
            &stmt(
                "COPY (SELECT id FROM orders ORDER BY id LIMIT 3) TO STDOUT",
                &[],
            ),
            &caps(),
        )
        .await
        .unwrap();
        assert_eq!(copy.columns[0].name, "copy");
        assert_eq!(copy.rows.len(), 3);
        assert_eq!(copy.rows[0][0].as_deref(), Some("1"));
        match run(
            &pool,
            &key(),
            None,
            &stmt("COPY orders (customer_id, amount) FROM STDIN", &[]),
            &caps(),
        )
        .await
        {
            Err(RunError::Server(e)) => {
                assert_eq!(e.code, "57014", "{e:?}");
                assert!(
                    e.message.contains("not available through this tool"),
                    "{e:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        let c = run(&pool, &key(), None, &stmt("SELECT 2", &[]), &caps())
            .await
            .unwrap();
        assert_eq!(
            c.rows[0][0].as_deref(),
            Some("2"),
            "the connection survived"
        );
    });
}

#[test]
fn state_left_behind_is_reset_and_an_open_transaction_closes_the_connection() {
    use std::sync::atomic::Ordering::Relaxed;
    harness().runtime.block_on(async {
        let pool = pool();
        let set = Statement {
            sql: "SET application_name = 'left behind'",
            params: &[],
            leaves_state: true,
        };
        run(&pool, &key(), None, &set, &caps()).await.unwrap();
        // The reset runs in the background; wait for it.
        for _ in 0..50 {
            if pool.counters.resets.load(Relaxed) == 1 && pool.sizes().1 == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(pool.counters.resets.load(Relaxed), 1);
        let shown = run(
            &pool,
            &key(),
            None,
            &stmt("SHOW application_name", &[]),
            &caps(),
        )
        .await
        .unwrap();
        assert_ne!(shown.rows[0][0].as_deref(), Some("left behind"));

        let begin = run(&pool, &key(), None, &stmt("BEGIN", &[]), &caps())
            .await
            .unwrap();
        assert_eq!(begin.command_tag, "BEGIN");
        // Retired, not reused: counted closed once the server has let it go.
        for _ in 0..100 {
            if pool.counters.closed.load(Relaxed) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            pool.counters.closed.load(Relaxed),
            1,
            "in a transaction: closed"
        );
        let c = run(&pool, &key(), None, &stmt("SELECT 3", &[]), &caps())
            .await
            .unwrap();
        assert_eq!(c.rows[0][0].as_deref(), Some("3"));
    });
}

/// This process's peak resident memory since the last reset, and the reset (Linux:
/// `/proc/self/clear_refs` with 5 sets VmHWM to the current VmRSS), in KiB.
fn peak_kib(reset: bool) -> u64 {
    if reset {
        std::fs::write("/proc/self/clear_refs", "5").unwrap();
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_row_larger_than_the_byte_cap_is_dropped_as_it_arrives_never_held() {
    use std::sync::atomic::Ordering::Relaxed;
    const MIB: u64 = 1024;
    harness().runtime.block_on(async {
        let pool = pool();
        let capped = Caps {
            max_bytes: 256 * 1024,
            ..caps()
        };
        let before = peak_kib(true);
        // One 96 MiB value between two small ones: the first is kept, the big one cuts the
        // result without being read whole, the rest is dropped.
        let c = run(
            &pool,
            &key(),
            None,
            &stmt(
                "SELECT v FROM (VALUES (1, 'a'), (2, repeat('x', 96 << 20)), (3, 'b')) t(n, v) ORDER BY n",
                &[],
            ),
            &capped,
        )
        .await
        .unwrap();
        assert_eq!(c.truncated, Some(Cut::Bytes));
        assert_eq!(c.rows, vec![vec![Some("a".to_string())]]);
        assert_eq!(c.command_tag, "SELECT 1");
        let grown = peak_kib(false).saturating_sub(before);
        assert!(
            grown < 24 * MIB,
            "the peak grew by {grown} KiB for a 96 MiB row over a 256 KiB cap"
        );
        // An error quoting a huge value keeps each field's head only; a huge notice is dropped.
        let before = peak_kib(true);
        match run(
            &pool,
            &key(),
            None,
            &stmt("SELECT repeat('y', 32 << 20)::int", &[]),
            &capped,
        )
        .await
        {
            Err(RunError::Server(e)) => {
                assert_eq!(e.code, "22P02", "{}", &e.message[..100]);
                assert!(e.message.len() < 70_000, "{}", e.message.len());
                assert!(
                    e.message.ends_with(" bytes in all]")
                        && e.message[65536..].starts_with(" ... [")
                        && e.message[65536 + 6..e.message.len() - 14].parse::<usize>().unwrap() > 32 << 20,
                    "{}",
                    &e.message[e.message.len() - 100..]
                );
            }
            other => panic!("{other:?}"),
        }
        let done = run(
            &pool,
            &key(),
            None,
            &stmt(
                "DO $$ BEGIN RAISE NOTICE '%', repeat('n', 32 << 20); END $$",
                &[],
            ),
            &capped,
        )
        .await
        .unwrap();
        assert_eq!(done.command_tag, "DO");
        let grown = peak_kib(false).saturating_sub(before);
        assert!(grown < 24 * MIB, "the peak grew by {grown} KiB");
        // The connections went back usable.
        let c = run(&pool, &key(), None, &stmt("SELECT 2", &[]), &caps())
            .await
            .unwrap();
        assert_eq!(c.rows[0][0].as_deref(), Some("2"));
        assert_eq!(pool.counters.closed.load(Relaxed), 0);
    });
}

#[test]
fn more_parameters_than_bind_can_count_are_refused_before_sending() {
    harness().runtime.block_on(async {
        let pool = pool();
        let many = vec![Some("a".to_string()); 70_000];
        match run(
            &pool,
            &key(),
            None,
            &stmt("SELECT $1::text", &many),
            &caps(),
        )
        .await
        {
            Err(RunError::Invalid(m)) => assert!(m.contains("at most 32767"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            pool.counters
                .opened
                .load(std::sync::atomic::Ordering::Relaxed),
            0,
            "nothing was sent: no connection was even taken"
        );
    });
}

/// A call counts against its agent's share of the pool while it runs (review: ten MCP calls
/// of pg_sleep held the demo's whole transaction pool, and the writer got 53300).
#[test]
fn a_call_counts_against_its_agents_share_of_the_pool() {
    harness().runtime.block_on(async {
        let pool = pool();
        // Share 2 of a pool of 2: the agent's first call holds one of its two.
        let share = pool.share_of(&Arc::from("analyst"));
        let running = {
            let (pool, share) = (pool.clone(), share.clone());
            tokio::spawn(async move {
                run(
                    &pool,
                    &key(),
                    Some(&share),
                    &stmt("SELECT pg_sleep(0.5)", &[]),
                    &caps(),
                )
                .await
                .map(|_| ())
            })
        };
        let mut held = 0;
        for _ in 0..40 {
            held = held.max(share.held());
            if held > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(held, 1, "the running call holds one of the agent's share");
        running.await.unwrap().unwrap();
        assert_eq!(share.held(), 0, "given back with the connection");
    });
}
