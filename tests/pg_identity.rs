//! Backend identity through the gateway (issue 17 item 1), against a real PostgreSQL: the
//! process id a client is shown (BackendKeyData), `pg_backend_pid()`, the sender of
//! NotificationResponse and what `pg_terminate_backend`/`pg_cancel_backend` act on agree as they
//! do direct; an agent signals only its own sessions' backends; CancelRequest (tollgate's key)
//! cancels the right statement. Session pooling: the demo's `trusted` agent. Transaction
//! pooling: the demo's `analyst`, and a gateway of the test's own where `trusted` is
//! transaction-pooled too. docs/pooling.md ("Backend identity") is the design.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::{connect, connect_url, copy_demo_dir, db_message, harness, sqlstate, upstream};

/// The largest process id Linux hands out (PID_MAX_LIMIT): no PostgreSQL backend has a larger one.
const PID_MAX_LIMIT: i32 = 4 * 1024 * 1024;

fn demo_addr() -> SocketAddr {
    ([127, 0, 0, 1], harness().env.pg_port).into()
}

/// A raw login as `agent`; returns the stream and the process id of its BackendKeyData.
async fn login(addr: SocketAddr, agent: &str) -> (TcpStream, i32) {
    let s = support::raw_login_at(addr, agent).await;
    let shown = support::LAST_BACKEND_PID.with(|p| p.get());
    assert_ne!(shown, 0, "no BackendKeyData");
    (s, shown)
}

/// One backend message, or `None` at EOF.
async fn read_or_eof(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    match s.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
        Err(e) => panic!("reading a backend message: {e}"),
    }
    let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).await.expect("message body");
    Some((head[0], body))
}

/// A NotificationResponse: (sender's process id, channel, payload).
fn notification(body: &[u8]) -> (i32, String, String) {
    let pid = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let mut parts = body[4..].split(|b| *b == 0);
    let channel = String::from_utf8_lossy(parts.next().unwrap()).into_owned();
    let payload = String::from_utf8_lossy(parts.next().unwrap()).into_owned();
    (pid, channel, payload)
}

/// Runs `sql` (simple query) and returns the notifications that arrived with its reply, and the
/// SQLSTATE of its error, if any.
async fn query_collecting(
    s: &mut TcpStream,
    sql: &str,
) -> (Vec<(i32, String, String)>, Option<String>) {
    s.write_all(&support::message(b'Q', format!("{sql}\0").as_bytes()))
        .await
        .unwrap();
    let mut notes = Vec::new();
    let mut code = None;
    loop {
        let (tag, body) = support::read_message(s).await;
        match tag {
            b'A' => notes.push(notification(&body)),
            b'E' => code = support::error_field(&body, b'C'),
            b'Z' => return (notes, code),
            _ => {}
        }
    }
}

/// Waits (at most 5 s) for a notification on an idle connection.
async fn next_notification(s: &mut TcpStream) -> (i32, String, String) {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let (tag, body) = support::read_message(s).await;
            if tag == b'A' {
                return notification(&body);
            }
        }
    })
    .await
    .expect("a notification within 5 s")
}

/// Sends `sql` and reads until the server closes: every ErrorResponse as (severity, SQLSTATE,
/// message), and whether a ReadyForQuery came first.
async fn query_until_closed(s: &mut TcpStream, sql: &str) -> (Vec<(String, String, String)>, bool) {
    s.write_all(&support::message(b'Q', format!("{sql}\0").as_bytes()))
        .await
        .unwrap();
    let mut errors = Vec::new();
    let mut ready = false;
    let deadline = tokio::time::sleep(Duration::from_secs(10));
    tokio::pin!(deadline);
    loop {
        let next = tokio::select! {
            m = read_or_eof(s) => m,
            _ = &mut deadline => panic!("the session did not end: {errors:?}"),
        };
        match next {
            None => return (errors, ready),
            Some((b'E', body)) => errors.push((
                support::error_field(&body, b'S').unwrap_or_default(),
                support::error_field(&body, b'C').unwrap_or_default(),
                support::error_field(&body, b'M').unwrap_or_default(),
            )),
            Some((b'Z', _)) => ready = true,
            Some(_) => {}
        }
    }
}

/// The error text of a refused raw query, for assertions on the rule.
async fn refused(s: &mut TcpStream, sql: &str) -> (String, String) {
    s.write_all(&support::message(b'Q', format!("{sql}\0").as_bytes()))
        .await
        .unwrap();
    let mut out = None;
    loop {
        let (tag, body) = support::read_message(s).await;
        if tag == b'E' {
            out = Some((
                support::error_field(&body, b'C').unwrap_or_default(),
                support::error_field(&body, b'M').unwrap_or_default(),
            ));
        }
        if tag == b'Z' {
            return out.unwrap_or_else(|| panic!("{sql}: not refused"));
        }
    }
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

/// The upstream's view of a process: its role, or `None` if no such backend exists.
async fn backend_role(pid: i32) -> Option<String> {
    upstream()
        .await
        .query_opt(
            "SELECT usename::text FROM pg_stat_activity WHERE pid = $1",
            &[&pid],
        )
        .await
        .unwrap()
        .map(|r| r.get(0))
}

/// A gateway of the test's own on a copy of the demo's files where `trusted` is
/// transaction-pooled too, on a pool of `size` connections.
async fn transaction_gateway(size: u32) -> (tollgate::gateway::Running, tempfile::TempDir) {
    let dir = copy_demo_dir();
    let config = dir.path().join("tollgate.toml");
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "pool_size = 10",
        &format!("pool_size = {size}"),
        1,
    );
    std::fs::write(&config, text).unwrap();
    let trusted = dir.path().join("policies/trusted.toml");
    let text = std::fs::read_to_string(&trusted).unwrap();
    let text: Vec<_> = text
        .lines()
        .filter(|l| !l.starts_with("pool_mode"))
        .collect();
    std::fs::write(&trusted, text.join("\n")).unwrap();
    let config = tollgate::config::Config::load(&config).unwrap();
    let running = tollgate::gateway::start(config).await.unwrap();
    (running, dir)
}

fn url_at(running: &tollgate::gateway::Running, agent: &str) -> String {
    let token = harness().env.token(agent);
    let port = running.pg_addr.unwrap().port();
    format!("postgresql://{agent}:{token}@127.0.0.1:{port}/shop?sslmode=disable")
}

// --- session pooling (the demo's trusted agent) ----------------------------------------------

#[test]
fn a_session_pooled_client_is_shown_its_servers_process() {
    harness().runtime.block_on(async {
        let (mut s, shown) = login(demo_addr(), "trusted").await;
        let (pid, _, code) = support::raw_query(&mut s, "SELECT pg_backend_pid()").await;
        assert_eq!((pid, code), (vec![shown.to_string()], None));
        // A real backend of the vaulted role, not a number of tollgate's.
        assert_eq!(backend_role(shown).await.as_deref(), Some("tollgate_shop"));
    });
}

#[test]
fn a_notification_names_the_notifying_client_as_that_client_was_shown() {
    harness().runtime.block_on(async {
        let (mut listener, listener_pid) = login(demo_addr(), "trusted").await;
        let (mut notifier, notifier_pid) = login(demo_addr(), "trusted").await;
        assert_ne!(listener_pid, notifier_pid);
        let (_, code) = query_collecting(&mut listener, "LISTEN identity_a").await;
        assert_eq!(code, None);
        // Its own notification names the listener itself.
        let (notes, code) = query_collecting(&mut listener, "NOTIFY identity_a, 'self'").await;
        assert_eq!(code, None);
        assert_eq!(
            notes,
            vec![(listener_pid, "identity_a".into(), "self".into())]
        );
        // Another client's names that client, as it was shown its own process id.
        let (_, code) = query_collecting(&mut notifier, "NOTIFY identity_a, 'other'").await;
        assert_eq!(code, None);
        assert_eq!(
            next_notification(&mut listener).await,
            (notifier_pid, "identity_a".into(), "other".into())
        );
    });
}

#[test]
fn terminating_ones_own_backend_ends_that_session_only_with_the_servers_error() {
    harness().runtime.block_on(async {
        for sql in [
            "SELECT pg_terminate_backend(pg_backend_pid())".to_string(),
            "SELECT pg_terminate_backend({own})".to_string(),
        ] {
            let bystander = connect("trusted").await;
            let analyst = connect("analyst").await;
            let (mut s, shown) = login(demo_addr(), "trusted").await;
            let sql = sql.replace("{own}", &shown.to_string());
            let (errors, ready) = query_until_closed(&mut s, &sql).await;
            // As direct: one FATAL 57P01 and the connection closes, nothing after it.
            assert_eq!(errors.len(), 1, "{sql}: {errors:?}");
            let (severity, code, message) = &errors[0];
            assert_eq!(
                (severity.as_str(), code.as_str()),
                ("FATAL", "57P01"),
                "{sql}: {message}"
            );
            assert!(message.contains("administrator command"), "{message}");
            assert!(!ready, "{sql}: a ReadyForQuery after the FATAL");
            // The backend is gone; nobody else noticed; the pool serves new sessions.
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(backend_role(shown).await, None);
            assert_eq!(one(&bystander, "SELECT 1").await, "1");
            assert_eq!(
                one(&analyst, "SELECT count(*) FROM orders WHERE id = 1").await,
                "1"
            );
            let again = connect("trusted").await;
            assert_eq!(one(&again, "SELECT 1").await, "1");
        }
    });
}

#[test]
fn cancelling_ones_own_backend_behaves_as_direct() {
    harness().runtime.block_on(async {
        let sql = "SELECT pg_cancel_backend(pg_backend_pid())";
        let outcome =
            |r: Result<Vec<tokio_postgres::SimpleQueryMessage>, tokio_postgres::Error>| match r {
                Ok(_) => "ok".to_string(),
                Err(e) => sqlstate(&e),
            };
        let direct = outcome(upstream().await.simple_query(sql).await);
        let c = connect("trusted").await;
        let through = outcome(c.simple_query(sql).await);
        assert_eq!(through, direct);
        // With the literal process id the client was shown, the same.
        let (mut s, shown) = login(demo_addr(), "trusted").await;
        let (_, code) =
            query_collecting(&mut s, &format!("SELECT pg_cancel_backend({shown})")).await;
        assert_eq!(code.unwrap_or_else(|| "ok".into()), direct);
        // The session goes on.
        assert_eq!(one(&c, "SELECT 1").await, "1");
        let (v, _, code) = support::raw_query(&mut s, "SELECT 2").await;
        assert_eq!((v, code), (vec!["2".to_string()], None));
    });
}

#[test]
fn signalling_a_backend_that_serves_no_session_of_the_agent_is_refused() {
    harness().runtime.block_on(async {
        let su = upstream().await;
        let foreign: i32 = su.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
        // A server connection serving the analyst (transaction pool) right now.
        let url = format!("{}&application_name=identity_victim", harness().env.pg_url("analyst"));
        let analyst = connect_url(&url).await.unwrap();
        analyst.batch_execute("BEGIN").await.unwrap();
        one(&analyst, "SELECT count(*) FROM orders WHERE id = 1").await;
        let analysts: i32 = su
            .query_one(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'identity_victim' AND state = 'idle in transaction'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        let (mut s, _) = login(demo_addr(), "trusted").await;
        for sql in [
            format!("SELECT pg_terminate_backend({foreign})"),
            format!("SELECT pg_cancel_backend({foreign})"),
            format!("SELECT pg_terminate_backend({analysts})"),
            format!("select * from pg_catalog.PG_TERMINATE_BACKEND({analysts}, 10)"),
            format!("SELECT pg_cancel_backend(pid => {analysts})"),
            format!("SELECT U&\"pg_terminate\\005fbackend\"({analysts})"),
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
                .into(),
            "SELECT pg_cancel_backend(pg_backend_pid() + 1)".into(),
            "DO $$ BEGIN PERFORM pg_terminate_backend(1); END $$".into(),
            "CREATE VIEW kill_whoever AS SELECT pg_terminate_backend(pg_backend_pid())".into(),
        ] {
            let (code, message) = refused(&mut s, &sql).await;
            assert_eq!(code, "42501", "{sql}: {message}");
            assert!(message.contains("rule: builtin: own-backend"), "{sql}: {message}");
        }
        // Extended protocol: the process id as a bound parameter is judged at Bind.
        let t = connect("trusted").await;
        let e = t
            .query("SELECT pg_terminate_backend($1)", &[&analysts])
            .await
            .expect_err("a foreign process id as a parameter");
        assert_eq!(sqlstate(&e), "42501", "{}", db_message(&e));
        assert!(db_message(&e).contains("builtin: own-backend"), "{}", db_message(&e));
        assert_eq!(one(&t, "SELECT 1").await, "1");
        // Nothing was signalled.
        assert_eq!(one(&analyst, "SELECT count(*) FROM orders WHERE id = 2").await, "1");
        analyst.batch_execute("COMMIT").await.unwrap();
        assert_eq!(su.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0), 1);
        let (v, _, code) = support::raw_query(&mut s, "SELECT 3").await;
        assert_eq!((v, code), (vec!["3".to_string()], None));
    });
}

/// psycopg2's own suite terminates one of its connections from another (`test_cursor`'s
/// external close): an agent may signal the backends of its own sessions.
#[test]
fn an_agent_may_signal_the_backends_of_its_own_other_sessions() {
    harness().runtime.block_on(async {
        let (mut victim, victim_pid) = login(demo_addr(), "trusted").await;
        let control = connect("trusted").await;
        assert_eq!(
            one(
                &control,
                &format!("SELECT pg_terminate_backend({victim_pid})")
            )
            .await,
            "t"
        );
        let (errors, _) = query_until_closed(&mut victim, "SELECT 1").await;
        assert!(
            errors.iter().any(|(s, c, _)| s == "FATAL" && c == "57P01"),
            "{errors:?}"
        );
        // The same through a bound parameter.
        let (mut victim, victim_pid) = login(demo_addr(), "trusted").await;
        let row = control
            .query_one("SELECT pg_terminate_backend($1)", &[&victim_pid])
            .await
            .unwrap();
        assert!(row.get::<_, bool>(0));
        let (errors, _) = query_until_closed(&mut victim, "SELECT 1").await;
        assert!(!errors.is_empty());
        assert_eq!(one(&control, "SELECT 1").await, "1");
    });
}

#[test]
fn a_cancel_request_cancels_the_right_statement_in_both_pool_modes() {
    harness().runtime.block_on(async {
        for agent in ["trusted", "analyst"] {
            let target = connect(agent).await;
            let other = connect(agent).await;
            let token = target.cancel_token();
            let started = Instant::now();
            let cancelled =
                tokio::spawn(async move { target.simple_query("SELECT pg_sleep(5)").await });
            let kept = tokio::spawn(async move {
                let r = other.simple_query("SELECT pg_sleep(2)").await;
                (r, other)
            });
            tokio::time::sleep(Duration::from_millis(400)).await;
            token.cancel_query(tokio_postgres::NoTls).await.unwrap();
            let e = cancelled.await.unwrap().expect_err("cancelled");
            assert_eq!(sqlstate(&e), "57014", "{agent}");
            assert!(
                started.elapsed() < Duration::from_secs(4),
                "{agent}: {:?}",
                started.elapsed()
            );
            let (r, other) = kept.await.unwrap();
            r.unwrap_or_else(|e| panic!("{agent}: the other statement was hit: {e}"));
            assert_eq!(one(&other, "SELECT 1").await, "1");
        }
    });
}

// --- transaction pooling -------------------------------------------------------------------

#[test]
fn a_transaction_pooled_client_is_shown_tollgates_own_stable_id() {
    harness().runtime.block_on(async {
        let (running, _dir) = transaction_gateway(2).await;
        let addr = running.pg_addr.unwrap();
        let (mut s, shown) = login(addr, "trusted").await;
        // Never a server's process id: it names the session, whatever connection runs it.
        assert!(shown > PID_MAX_LIMIT, "{shown}");
        // pg_backend_pid() would name the connection of the moment: refused, naming the rule.
        let (code, message) = refused(&mut s, "SELECT pg_backend_pid()").await;
        assert_eq!(code, "0A000", "{message}");
        assert!(
            message.contains("rule: builtin: transaction-pooling"),
            "{message}"
        );
        // So is the id the client was shown (it is no server process's).
        let (code, message) =
            refused(&mut s, &format!("SELECT pg_terminate_backend({shown})")).await;
        assert_eq!(code, "0A000", "{message}");
        assert!(
            message.contains("rule: builtin: transaction-pooling"),
            "{message}"
        );
        // Its own notifications name it by the id it was shown.
        let (_, code) = query_collecting(&mut s, "LISTEN identity_t").await;
        assert_eq!(code, None);
        let (notes, code) = query_collecting(&mut s, "NOTIFY identity_t, 'self'").await;
        assert_eq!(code, None);
        assert_eq!(notes, vec![(shown, "identity_t".into(), "self".into())]);
        // The analyst (restricted) gets the same answer for pg_backend_pid().
        let (mut a, _) = login(addr, "analyst").await;
        let (code, message) = refused(&mut a, "SELECT pg_backend_pid()").await;
        assert_eq!(code, "0A000", "{message}");
        let (v, _, code) = support::raw_query(&mut a, "SELECT 1").await;
        assert_eq!((v, code), (vec!["1".to_string()], None));
    });
}

#[test]
fn a_transaction_pooled_client_signals_the_connection_running_its_statement() {
    harness().runtime.block_on(async {
        let (running, _dir) = transaction_gateway(1).await;
        let addr = running.pg_addr.unwrap();
        // Cancel: as direct.
        let direct = match upstream()
            .await
            .simple_query("SELECT pg_cancel_backend(pg_backend_pid())")
            .await
        {
            Ok(_) => "ok".to_string(),
            Err(e) => sqlstate(&e),
        };
        let t = connect_url(&url_at(&running, "trusted")).await.unwrap();
        let through = match t
            .simple_query("SELECT pg_cancel_backend(pg_backend_pid())")
            .await
        {
            Ok(_) => "ok".to_string(),
            Err(e) => sqlstate(&e),
        };
        assert_eq!(through, direct);
        assert_eq!(one(&t, "SELECT 1").await, "1");
        // Terminate: ends this session only; the one-connection pool serves the others again.
        let analyst = connect_url(&url_at(&running, "analyst")).await.unwrap();
        let (mut s, _) = login(addr, "trusted").await;
        let (errors, ready) =
            query_until_closed(&mut s, "SELECT pg_terminate_backend(pg_backend_pid())").await;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            (errors[0].0.as_str(), errors[0].1.as_str()),
            ("FATAL", "57P01")
        );
        assert!(!ready);
        assert_eq!(
            one(&analyst, "SELECT count(*) FROM orders WHERE id = 1").await,
            "1"
        );
        assert_eq!(one(&t, "SELECT 1").await, "1");
    });
}
