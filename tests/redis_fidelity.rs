//! Redis commands that reach connection state or other clients, through the gateway as a client
//! sees them direct: RESET (logged back in with the vaulted login), CLIENT KILL / LIST on the
//! agent's own connections only, MONITOR and SLOWLOG without other agents' commands, and CLIENT
//! REPLY ON / OFF / SKIP.

mod support;

use std::time::Duration;

use support::{redis_cmd as cmd, redis_connect, redis_exchange, redis_login};
use tokio::io::AsyncWriteExt;

/// The upstream's id and address of a raw session's connection (`CLIENT INFO`).
async fn client_info(s: &mut tokio::net::TcpStream) -> (String, String) {
    let info = redis_exchange(s, &cmd(&["CLIENT", "INFO"]), "\n\r\n").await;
    let field = |name: &str| {
        info.split([' ', '\n'])
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} in {info}"))
            .to_string()
    };
    (field("id"), field("addr"))
}

/// RESET clears the connection's state and, as Redis does with a password, logs the client out:
/// until it logs in again every command gets NOAUTH (it kept the agent logged in; a live review).
/// Upstream, tollgate logs the connection back in with the vaulted login at once.
#[tokio::test]
async fn reset_clears_the_connection_and_logs_the_client_out() {
    let mut s = redis_login("trusted").await;
    let token = support::harness().env.token("trusted");
    let auth = cmd(&["AUTH", "trusted", token]);
    let got = redis_exchange(
        &mut s,
        &[
            cmd(&["SET", "fid:reset", "db0"]),
            cmd(&["SELECT", "3"]),
            cmd(&["CLIENT", "SETNAME", "before-reset"]),
            cmd(&["MULTI"]),
            cmd(&["RESET"]),
            cmd(&["CLIENT", "GETNAME"]),
            cmd(&["PING"]),
            cmd(&["HELLO", "3"]),
            auth.clone(),
            cmd(&["CLIENT", "GETNAME"]),
            cmd(&["GET", "fid:reset"]),
        ]
        .concat(),
        "$3\r\ndb0\r\n",
    )
    .await;
    // +OK SET, +OK SELECT, +OK SETNAME, +OK MULTI, +RESET; logged out: NOAUTH (HELLO without
    // AUTH has its own); logged in again: no name, database 0 again, and the upstream
    // connection logged in (GET answers).
    assert_eq!(
        got,
        format!(
            "+OK\r\n+OK\r\n+OK\r\n+OK\r\n+RESET\r\n{noauth}{noauth}{hello}+OK\r\n$-1\r\n$3\r\ndb0\r\n",
            noauth = "-NOAUTH Authentication required.\r\n",
            hello = String::from_utf8_lossy(tollgate::redis::reply::NOAUTH_HELLO),
        )
    );
    // From RESP3 back to RESP2; HELLO with AUTH logs in again too.
    let got = redis_exchange(&mut s, &cmd(&["HELLO", "3"]), "\r\n").await;
    assert!(got.starts_with('%'), "{got}");
    let got = redis_exchange(
        &mut s,
        &[cmd(&["RESET"]), cmd(&["HGETALL", "fid:none"])].concat(),
        "required.\r\n",
    )
    .await;
    assert_eq!(got, "+RESET\r\n-NOAUTH Authentication required.\r\n");
    let got = redis_exchange(
        &mut s,
        &cmd(&["HELLO", "2", "AUTH", "trusted", token]),
        "*0\r\n",
    )
    .await;
    assert!(got.starts_with('*'), "{got}");
    let got = redis_exchange(&mut s, &cmd(&["HGETALL", "fid:none"]), "*0\r\n").await;
    assert!(got.ends_with("*0\r\n"), "{got}");
}

#[tokio::test]
async fn client_kill_and_list_reach_own_connections_only() {
    let mut a = redis_login("trusted").await;
    let mut b = redis_login("trusted").await;
    let mut foreign = redis_login("analyst").await;
    let (a_id, _) = client_info(&mut a).await;
    let (b_id, b_addr) = client_info(&mut b).await;
    let (f_id, f_addr) = client_info(&mut foreign).await;
    // CLIENT LIST shows this agent's connections, never another agent's.
    let list = redis_exchange(&mut a, &cmd(&["CLIENT", "LIST"]), "\n\r\n").await;
    assert!(list.contains(&format!("id={a_id} ")), "{list}");
    assert!(list.contains(&format!("id={b_id} ")), "{list}");
    assert!(!list.contains(&format!("id={f_id} ")), "{list}");
    // Another agent's connection cannot be killed, by id or by address.
    let got = redis_exchange(&mut a, &cmd(&["CLIENT", "KILL", "ID", &f_id]), "\r\n").await;
    assert_eq!(got, ":0\r\n");
    let got = redis_exchange(&mut a, &cmd(&["CLIENT", "KILL", "ADDR", &f_addr]), "\r\n").await;
    assert_eq!(got, ":0\r\n");
    let got = redis_exchange(&mut a, &cmd(&["CLIENT", "KILL", &f_addr]), "\r\n").await;
    assert_eq!(got, "-ERR No such client\r\n");
    let got = redis_exchange(&mut foreign, &cmd(&["PING"]), "\r\n").await;
    assert_eq!(got, "+PONG\r\n", "the analyst's connection lives");
    // Its own other connection can (the old form by address).
    let got = redis_exchange(&mut a, &cmd(&["CLIENT", "KILL", &b_addr]), "\r\n").await;
    assert_eq!(got, "+OK\r\n");
    let got = redis_exchange(&mut b, &cmd(&["PING"]), "\r\n").await;
    assert!(got.contains("connection to upstream"), "{got}");
    let mut c = redis_login("trusted").await;
    let (c_id, _) = client_info(&mut c).await;
    let got = redis_exchange(&mut a, &cmd(&["CLIENT", "KILL", "ID", &c_id]), "\r\n").await;
    assert_eq!(got, ":1\r\n");
}

#[tokio::test]
async fn monitor_and_slowlog_show_own_connections_only() {
    let mut m = redis_login("trusted").await;
    let got = redis_exchange(&mut m, &cmd(&["MONITOR"]), "\r\n").await;
    assert_eq!(got, "+OK\r\n");
    let mut mine = redis_connect("trusted", false).await;
    let mut theirs = redis_connect("analyst", false).await;
    let _: () = redis::cmd("SET")
        .arg("fid:monitor:mine")
        .arg("1")
        .query_async(&mut mine)
        .await
        .unwrap();
    let _: Option<String> = redis::cmd("GET")
        .arg("cache:fid-monitor-theirs")
        .query_async(&mut theirs)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("fid:monitor:end")
        .arg("1")
        .query_async(&mut mine)
        .await
        .unwrap();
    let lines = redis_exchange(&mut m, b"", "\"fid:monitor:end\" \"1\"\r\n").await;
    assert!(lines.contains("\"fid:monitor:mine\""), "{lines}");
    assert!(!lines.contains("fid-monitor-theirs"), "{lines}");
    drop(m);

    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg("0")
        .query_async(&mut mine)
        .await
        .unwrap();
    let _: Option<String> = redis::cmd("GET")
        .arg("fid:slow:mine")
        .query_async(&mut mine)
        .await
        .unwrap();
    let _: Option<String> = redis::cmd("GET")
        .arg("cache:fid-slow-theirs")
        .query_async(&mut theirs)
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg("10000")
        .query_async(&mut mine)
        .await
        .unwrap();
    let log: redis::Value = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg("-1")
        .query_async(&mut mine)
        .await
        .unwrap();
    let text = format!("{log:?}");
    assert!(text.contains("fid:slow:mine"), "{text}");
    assert!(!text.contains("fid-slow-theirs"), "{text}");
    let n: i64 = redis::cmd("SLOWLOG")
        .arg("LEN")
        .query_async(&mut mine)
        .await
        .unwrap();
    let own = match log {
        redis::Value::Array(items) => items.len() as i64,
        other => panic!("{other:?}"),
    };
    assert_eq!(n, own);
}

#[tokio::test]
async fn client_reply_off_skip_and_on() {
    let mut s = redis_login("trusted").await;
    s.write_all(
        &[
            cmd(&["CLIENT", "REPLY", "OFF"]),
            cmd(&["SET", "fid:reply", "1"]),
            cmd(&["GET", "admin:never-answered"]),
            cmd(&["CLIENT", "REPLY", "ON"]),
            cmd(&["GET", "fid:reply"]),
            cmd(&["CLIENT", "REPLY", "SKIP"]),
            cmd(&["SET", "fid:reply", "2"]),
            cmd(&["GET", "fid:reply"]),
        ]
        .concat(),
    )
    .await
    .unwrap();
    let got = redis_exchange(&mut s, b"", "$1\r\n2\r\n").await;
    assert_eq!(got, "+OK\r\n$1\r\n1\r\n$1\r\n2\r\n");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got = redis_exchange(&mut s, &cmd(&["PING"]), "\r\n").await;
    assert_eq!(got, "+PONG\r\n");
}

/// A client that sends its commands and then half-closes its socket gets every reply before
/// the session ends, as Redis answers what it read before a client's EOF: on a shared upstream
/// connection (AUTH) and on a session's own (after SELECT moved it).
#[tokio::test]
async fn commands_sent_before_a_half_close_are_answered() {
    use tokio::io::AsyncReadExt;
    for own in [false, true] {
        let mut s = redis_login("writer").await;
        let mut batch = Vec::new();
        if own {
            batch.extend(cmd(&["SELECT", "0"]));
        }
        batch.extend(cmd(&["SET", "cache:halfclose", "v1"]));
        batch.extend(cmd(&["GET", "cache:halfclose"]));
        batch.extend(cmd(&["PING"]));
        s.write_all(&batch).await.unwrap();
        s.shutdown().await.unwrap();
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
        assert!(
            read.is_ok(),
            "own connection: {own}: the session did not end; got {:?}",
            String::from_utf8_lossy(&got)
        );
        let expected = if own {
            "+OK\r\n+OK\r\n$2\r\nv1\r\n+PONG\r\n"
        } else {
            "+OK\r\n$2\r\nv1\r\n+PONG\r\n"
        };
        assert_eq!(
            String::from_utf8_lossy(&got),
            expected,
            "own connection: {own}"
        );
    }
}

/// `CLIENT REPLY SKIP` before a command tollgate answers itself (a refusal): Redis skipped the
/// reply of the next command it was sent instead, and every reply after it was paired with the
/// wrong command (a live review read masked values raw that way). The skip is used up upstream,
/// and the replies that follow are the client's.
#[tokio::test]
async fn a_skipped_reply_to_a_refused_command_leaves_the_next_replies_in_step() {
    let mut s = redis_login("trusted").await;
    let got = redis_exchange(
        &mut s,
        &[
            cmd(&["SET", "fid:skip", "value-after-skip"]),
            cmd(&["CLIENT", "REPLY", "SKIP"]),
            cmd(&["SLOWLOG", "RESET"]), // refused by tollgate: its reply is skipped
            cmd(&["GET", "fid:skip"]),
            cmd(&["ECHO", "last"]),
        ]
        .concat(),
        "$4\r\nlast\r\n",
    )
    .await;
    assert_eq!(got, "+OK\r\n$16\r\nvalue-after-skip\r\n$4\r\nlast\r\n");
}
