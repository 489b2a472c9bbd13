//! Shared upstream connections (`shared_connections`, 2 in the demo): many sessions' plain
//! commands ride a few upstream connections, and a session moves to a connection of its own at
//! its first command that needs connection state. Each test tries to make state or replies
//! cross sessions; the tests of this file run one at a time, as some count the upstream's
//! connections.

mod support;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

use support::{harness, redis_cmd as cmd, redis_exchange, redis_login};

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

async fn direct() -> redis::aio::MultiplexedConnection {
    redis::Client::open(harness().env.upstream_redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The upstream's client connections, its own asking one left out.
async fn upstream_clients(up: &mut redis::aio::MultiplexedConnection) -> usize {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(up)
        .await
        .unwrap();
    list.lines().count() - 1
}

#[tokio::test]
async fn fifty_sessions_share_two_upstream_connections_until_one_needs_its_own() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut up = direct().await;
    let mut warm = redis_login("writer").await;
    assert_eq!(
        redis_exchange(&mut warm, &cmd(&["SET", "cache:shared:0", "0"]), "\r\n").await,
        "+OK\r\n"
    );
    let before = upstream_clients(&mut up).await;
    let mut sessions = Vec::new();
    for i in 0..50 {
        let mut s = redis_login("writer").await;
        let key = format!("cache:shared:{i}");
        let v = format!("v{i}");
        let got = redis_exchange(
            &mut s,
            &[cmd(&["SET", &key, &v]), cmd(&["GET", &key])].concat(),
            &format!("{v}\r\n"),
        )
        .await;
        assert_eq!(got, format!("+OK\r\n${}\r\n{v}\r\n", v.len()));
        sessions.push(s);
    }
    let during = upstream_clients(&mut up).await;
    assert!(
        during <= before + 1,
        "50 sessions opened {} upstream connections (the demo shares 2)",
        during - before
    );
    // Every session still reads its own values, concurrently.
    let mut tasks = Vec::new();
    for (i, mut s) in sessions.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let key = format!("cache:shared:{i}");
            let v = format!("v{i}");
            let mut line = Vec::new();
            for _ in 0..20 {
                line.extend(cmd(&["GET", &key]));
            }
            let want = format!("${}\r\n{v}\r\n", v.len()).repeat(20);
            let got = redis_exchange(&mut s, &line, &want).await;
            assert_eq!(got, want);
            s
        }));
    }
    let mut sessions = Vec::new();
    for t in tasks {
        sessions.push(t.await.unwrap());
    }
    // A transaction needs connection state: that session, and only it, moves to its own.
    let got = redis_exchange(
        &mut sessions[0],
        &[
            cmd(&["MULTI"]),
            cmd(&["GET", "cache:shared:0"]),
            cmd(&["EXEC"]),
        ]
        .concat(),
        "v0\r\n",
    )
    .await;
    assert_eq!(got, "+OK\r\n+QUEUED\r\n*1\r\n$2\r\nv0\r\n");
    let after = upstream_clients(&mut up).await;
    assert_eq!(
        after,
        during + 1,
        "the session in MULTI got its own connection"
    );
    // Operators see both: sessions started shared, and the ones that moved.
    let (_, metrics) = support::admin("get", "/metrics", support::AdminAs::Viewer).await;
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    let count = |name: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains("upstream=\"cache\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} missing: {metrics}")) as u64
    };
    assert!(count("tollgate_redis_shared_sessions_total") >= 51);
    assert!(count("tollgate_redis_session_moves_total") >= 1);
    drop(sessions);
    drop(warm);
}

#[tokio::test]
async fn select_moves_the_session_and_leaves_the_others_on_database_0() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut a = redis_login("trusted").await;
    let mut b = redis_login("trusted").await;
    // Both on a shared connection first.
    for s in [&mut a, &mut b] {
        assert_eq!(
            redis_exchange(s, &cmd(&["GET", "cache:sel"]), "\r\n").await,
            "$-1\r\n"
        );
    }
    let got = redis_exchange(
        &mut a,
        &[cmd(&["SELECT", "1"]), cmd(&["SET", "cache:sel", "db1"])].concat(),
        "+OK\r\n+OK\r\n",
    )
    .await;
    assert_eq!(got, "+OK\r\n+OK\r\n");
    // b (still shared) is on database 0; a stays on 1.
    assert_eq!(
        redis_exchange(&mut b, &cmd(&["GET", "cache:sel"]), "\r\n").await,
        "$-1\r\n"
    );
    assert_eq!(
        redis_exchange(&mut a, &cmd(&["GET", "cache:sel"]), "db1\r\n").await,
        "$3\r\ndb1\r\n"
    );
    // A new session lands on database 0 too.
    let mut c = redis_login("trusted").await;
    assert_eq!(
        redis_exchange(&mut c, &cmd(&["GET", "cache:sel"]), "\r\n").await,
        "$-1\r\n"
    );
    redis_exchange(&mut a, &cmd(&["DEL", "cache:sel"]), "\r\n").await;
}

#[tokio::test]
async fn commands_before_and_after_the_move_run_in_the_order_sent() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut s = redis_login("trusted").await;
    // One write: shared commands, then a transaction (the move) in the middle of the batch.
    let got = redis_exchange(
        &mut s,
        &[
            cmd(&["SET", "cache:ord", "1"]),
            cmd(&["INCR", "cache:ord"]),
            cmd(&["MULTI"]),
            cmd(&["INCR", "cache:ord"]),
            cmd(&["EXEC"]),
            cmd(&["GET", "cache:ord"]),
            cmd(&["DEL", "cache:ord"]),
        ]
        .concat(),
        ":1\r\n",
    )
    .await;
    assert_eq!(
        got,
        "+OK\r\n:2\r\n+OK\r\n+QUEUED\r\n*1\r\n:3\r\n$1\r\n3\r\n:1\r\n"
    );
    // WATCH sees writes made before it on the shared connection, and others' after it.
    let mut other = redis_login("trusted").await;
    let got = redis_exchange(
        &mut s,
        &[cmd(&["SET", "cache:w", "1"]), cmd(&["WATCH", "cache:w"])].concat(),
        "+OK\r\n+OK\r\n",
    )
    .await;
    assert_eq!(got, "+OK\r\n+OK\r\n");
    redis_exchange(&mut other, &cmd(&["SET", "cache:w", "2"]), "\r\n").await;
    let got = redis_exchange(
        &mut s,
        &[cmd(&["MULTI"]), cmd(&["GET", "cache:w"]), cmd(&["EXEC"])].concat(),
        "*-1\r\n",
    )
    .await;
    assert_eq!(got, "+OK\r\n+QUEUED\r\n*-1\r\n");
}

#[tokio::test]
async fn a_client_that_does_not_read_a_large_reply_is_cut_off_not_the_others() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut up = direct().await;
    let big = vec![b'b'; 1 << 20];
    let _: () = redis::cmd("SET")
        .arg("cache:big-unread")
        .arg(big)
        .query_async(&mut up)
        .await
        .unwrap();
    let mut greedy = redis_login("trusted").await;
    let mut polite = redis_login("trusted").await;
    // 200 MiB of replies asked for in one write, none read.
    let mut ask = Vec::new();
    for _ in 0..200 {
        ask.extend(cmd(&["GET", "cache:big-unread"]));
    }
    greedy.write_all(&ask).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Sessions sharing the connection go on.
    for i in 0..20 {
        let got = tokio::time::timeout(
            Duration::from_secs(5),
            redis_exchange(&mut polite, &cmd(&["PING"]), "\r\n"),
        )
        .await
        .unwrap_or_else(|_| panic!("PING {i} stalled behind the unread replies"));
        assert_eq!(got, "+PONG\r\n");
    }
    // The greedy session ends (what was queued is still written, then the connection closes).
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0usize;
    // The last bytes before the close: the error saying why.
    let mut tail = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, greedy.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                total += n;
                tail.extend_from_slice(&buf[..n]);
                let keep = tail.len().saturating_sub(256);
                tail.drain(..keep);
            }
            Err(_) => panic!("the greedy session is still open after {total} bytes"),
        }
    }
    // Cut between replies, the error line says why; cut inside one (they come in pieces), the
    // connection closes mid-reply, which no client mistakes for a whole reply.
    let tail = String::from_utf8_lossy(&tail);
    let reply_len = format!("${}\r\n", 1 << 20).len() + (1 << 20) + 2;
    assert!(
        tail.ends_with(
            "-ERR tollgate: more than 64 MiB of replies waited unread; session closed\r\n"
        ) || total % reply_len != 0,
        "closed after {total} bytes, a whole number of replies, without saying why: {tail}"
    );
    assert!(
        total < 200 << 20,
        "all 200 replies were relayed ({total} bytes): nothing was cut"
    );
    let (_, metrics) = support::admin("get", "/metrics", support::AdminAs::Viewer).await;
    let cut = metrics
        .as_str()
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("tollgate_redis_shared_cutoffs_total{upstream=\"cache\"}"));
    assert!(cut, "the cut-off is counted");
    let _: () = redis::cmd("DEL")
        .arg("cache:big-unread")
        .query_async(&mut up)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_killed_shared_connection_is_replaced_under_idle_sessions() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut up = direct().await;
    let mut s = redis_login("writer").await;
    assert_eq!(
        redis_exchange(&mut s, &cmd(&["GET", "cache:k"]), "\r\n").await,
        "$-1\r\n"
    );
    let mut own = redis_login("trusted").await;
    assert_eq!(
        redis_exchange(&mut own, &cmd(&["SELECT", "0"]), "\r\n").await,
        "+OK\r\n",
        "moved to a connection of its own"
    );
    // Every connection but the asking one: the shared ones included.
    let _: redis::Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query_async(&mut up)
        .await
        .unwrap();
    // Idle when the connection died (the gateway has seen the close by now).
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The idle session held nothing on the shared connection: it goes on on a new one.
    assert_eq!(
        redis_exchange(&mut s, &cmd(&["GET", "cache:k"]), "\r\n").await,
        "$-1\r\n"
    );
    // A session on its own connection had state there (database, name...): it is told.
    let got = redis_exchange(&mut own, &cmd(&["GET", "cache:k"]), "\r\n").await;
    assert!(
        got.contains("connection to upstream \"cache\" lost"),
        "{got}"
    );
    let mut next = redis_login("writer").await;
    assert_eq!(
        redis_exchange(&mut next, &cmd(&["GET", "cache:k"]), "\r\n").await,
        "$-1\r\n"
    );
}

#[tokio::test]
async fn lengths_the_server_would_refuse_are_refused_before_reaching_the_shared_connection() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut other = redis_login("writer").await;
    assert_eq!(
        redis_exchange(&mut other, &cmd(&["GET", "cache:k"]), "\r\n").await,
        "$-1\r\n"
    );
    // Redis answers these with a protocol error and drops the connection: were they forwarded
    // on a shared connection, every session on it would go with it.
    for bad in [
        &b"*1\r\n$04\r\nPING\r\n"[..],
        b"*+1\r\n$4\r\nPING\r\n",
        b"*01\r\n$4\r\nPING\r\n",
        b"*2\r\n$3\r\nGET\r\n$+1\r\nk\r\n",
    ] {
        let mut s = redis_login("writer").await;
        let got = redis_exchange(&mut s, bad, "\r\n").await;
        assert!(got.starts_with("-ERR Protocol error"), "{bad:?}: {got}");
        assert_eq!(
            redis_exchange(&mut other, &cmd(&["GET", "cache:k"]), "\r\n").await,
            "$-1\r\n",
            "the shared connection went with {bad:?}"
        );
    }
}
