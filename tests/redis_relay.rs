//! The Redis front end end to end: the demo's redis-server behind the gateway, the `redis`
//! crate and redis-cli in front.

mod support;

use std::collections::HashMap;

use support::{harness, redis_connect, redis_error, redis_exchange, redis_login};

#[tokio::test]
async fn analyst_reads_cache_and_masked_sessions_in_resp2_and_resp3() {
    for resp3 in [false, true] {
        let mut c = redis_connect("analyst", resp3).await;
        let v: String = redis::cmd("GET")
            .arg("cache:1")
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(v, "cached value 1");
        let h: HashMap<String, String> = redis::cmd("HGETALL")
            .arg("session:1")
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(h["email"], "***@example.com", "resp3={resp3}");
        assert_eq!(h["user"], "user1");
        let f: String = redis::cmd("HGET")
            .arg("session:2")
            .arg("email")
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(f, "***@example.com");
        let m: Vec<Option<String>> = redis::cmd("HMGET")
            .arg("session:3")
            .arg("user")
            .arg("email")
            .arg("nope")
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(
            m,
            vec![Some("user3".into()), Some("***@example.com".into()), None]
        );
        let vals: Vec<String> = redis::cmd("HVALS")
            .arg("session:4")
            .query_async(&mut c)
            .await
            .unwrap();
        assert!(vals.iter().all(|v| !v.contains("user4@")), "{vals:?}");
        let scan: (String, Vec<String>) = redis::cmd("HSCAN")
            .arg("session:5")
            .arg("0")
            .query_async(&mut c)
            .await
            .unwrap();
        assert!(scan.1.contains(&"***@example.com".to_string()), "{scan:?}");
        assert!(!scan.1.iter().any(|v| v.contains("user5@")));
        let e = redis::cmd("GET")
            .arg("admin:config")
            .query_async::<String>(&mut c)
            .await
            .unwrap_err();
        assert!(redis_error(&e).contains("NOPERM"), "{e}");
        assert!(redis_error(&e).contains("rule: default-deny"), "{e}");
        // The session stays usable after a refusal.
        let pong: String = redis::cmd("PING").query_async(&mut c).await.unwrap();
        assert_eq!(pong, "PONG");
    }
}

#[tokio::test]
async fn analyst_is_refused_writes_and_dangerous_commands() {
    let mut c = redis_connect("analyst", false).await;
    for cmd in [
        vec!["SET", "cache:1", "x"],
        vec!["DEL", "cache:1"],
        vec!["FLUSHALL"],
        vec!["FLUSHDB"],
        vec!["CONFIG", "GET", "requirepass"],
        vec!["EVAL", "return redis.call('get','admin:config')", "0"],
        vec!["EVALSHA", "0000000000000000000000000000000000000000", "0"],
        vec!["FCALL", "f", "0"],
        vec!["SCRIPT", "LOAD", "return 1"],
        vec!["FUNCTION", "LIST"],
        vec!["DEBUG", "SLEEP", "0"],
        vec!["MONITOR"],
        vec!["CLIENT", "LIST"],
        vec!["CLIENT", "KILL", "ID", "1"],
        vec!["SHUTDOWN"],
        vec!["REPLICAOF", "NO", "ONE"],
        vec!["SLAVEOF", "NO", "ONE"],
        vec![
            "MIGRATE",
            "127.0.0.1",
            "1",
            "",
            "0",
            "100",
            "KEYS",
            "cache:1",
        ],
        vec!["MODULE", "LIST"],
        vec!["ACL", "LIST"],
        vec!["SWAPDB", "0", "1"],
        vec!["KEYS", "*"],
        vec!["SORT", "cache:1", "BY", "admin:*"],
        vec!["RENAME", "cache:1", "cache:2"],
        vec!["COPY", "session:1", "cache:9"],
        vec!["DUMP", "session:1"],
        vec!["OBJECT", "ENCODING", "session:1"],
        vec!["HSTRLEN", "session:1", "email"],
        vec!["SELECT", "1"],
    ] {
        let mut q = redis::cmd(cmd[0]);
        for a in &cmd[1..] {
            q.arg(*a);
        }
        let e = q.query_async::<redis::Value>(&mut c).await.unwrap_err();
        assert!(redis_error(&e).contains("tollgate"), "{cmd:?}: {e}");
    }
    let ok: String = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("x")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(ok, "OK");
    // Nothing was changed upstream.
    let v: String = redis::cmd("GET")
        .arg("cache:1")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(v, "cached value 1");
}

#[tokio::test]
async fn writer_sets_cache_only() {
    let mut c = redis_connect("writer", false).await;
    let _: () = redis::cmd("SET")
        .arg("cache:w1")
        .arg("hello")
        .query_async(&mut c)
        .await
        .unwrap();
    let v: String = redis::cmd("GET")
        .arg("cache:w1")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(v, "hello");
    let e = redis::cmd("SET")
        .arg("admin:x")
        .arg("1")
        .query_async::<()>(&mut c)
        .await
        .unwrap_err();
    assert!(redis_error(&e).contains("NOPERM"));
    let e = redis::cmd("HGETALL")
        .arg("session:1")
        .query_async::<redis::Value>(&mut c)
        .await
        .unwrap_err();
    assert!(redis_error(&e).contains("NOPERM"));
}

#[tokio::test]
async fn pipeline_of_a_thousand_commands_replies_in_order() {
    for resp3 in [false, true] {
        let mut c = redis_connect("writer", resp3).await;
        let mut p = redis::pipe();
        for i in 0..1000 {
            if i % 2 == 0 {
                p.cmd("SET").arg(format!("cache:p{i}")).arg(i).ignore();
            } else if i % 7 == 0 {
                // A refusal in the middle keeps its place.
                p.cmd("GET").arg(format!("admin:{i}"));
            } else {
                p.cmd("GET").arg(format!("cache:p{}", i - 1));
            }
        }
        let out: Vec<redis::Value> = match p.query_async(&mut c).await {
            Ok(v) => v,
            Err(e) => {
                // The crate reports the first error of a pipeline; run it without the refusals.
                assert!(redis_error(&e).contains("NOPERM"), "{e}");
                continue;
            }
        };
        assert_eq!(out.len(), 500);
    }
    // Without refusals: every reply matches its command.
    let mut c = redis_connect("writer", false).await;
    let mut p = redis::pipe();
    for i in 0..1000 {
        p.cmd("SET").arg(format!("cache:q{i}")).arg(i).ignore();
        p.cmd("GET").arg(format!("cache:q{i}"));
    }
    let out: Vec<i64> = p.query_async(&mut c).await.unwrap();
    assert_eq!(out, (0..1000).collect::<Vec<i64>>());
}

#[tokio::test]
async fn raw_pipeline_with_refusals_keeps_order() {
    let mut s = redis_login("analyst").await;
    let mut bytes = Vec::new();
    let mut expected = String::new();
    for i in 0..1000 {
        if i % 10 == 3 {
            bytes.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$8\r\nadmin:ab\r\n");
            expected.push('N');
        } else {
            bytes.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$7\r\ncache:1\r\n");
            expected.push('V');
        }
    }
    bytes.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
    let got = redis_exchange(&mut s, &bytes, "+PONG\r\n").await;
    let mut seen = String::new();
    for line in got.split("\r\n") {
        if line.starts_with("-NOPERM") {
            seen.push('N');
        } else if line == "cached value 1" {
            seen.push('V');
        }
    }
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn multi_exec_with_a_refused_command_aborts() {
    let mut s = redis_login("writer").await;
    let got = redis_exchange(
        &mut s,
        b"MULTI\r\nSET cache:tx 1\r\nSET admin:tx 1\r\nEXEC\r\nGET cache:tx\r\n",
        "$-1\r\n",
    )
    .await;
    assert!(got.starts_with("+OK\r\n+QUEUED\r\n-NOPERM"), "{got}");
    assert!(
        got.contains("-EXECABORT Transaction discarded because of previous errors."),
        "{got}"
    );
    assert!(
        got.ends_with("$-1\r\n"),
        "the aborted SET must not have run: {got}"
    );
    // A clean transaction runs; masks apply inside EXEC's reply.
    let mut a = redis_login("analyst").await;
    let got = redis_exchange(
        &mut a,
        b"MULTI\r\nGET cache:1\r\nHGET session:1 email\r\nEXEC\r\n",
        "***@example.com\r\n",
    )
    .await;
    assert!(
        got.contains("*2\r\n$14\r\ncached value 1\r\n$15\r\n***@example.com\r\n"),
        "{got}"
    );
}

#[tokio::test]
async fn pubsub_allowed_and_refused_channels() {
    let mut s = redis_login("analyst").await;
    let got = redis_exchange(&mut s, b"SUBSCRIBE news.sport\r\n", ":1\r\n").await;
    assert_eq!(got, "*3\r\n$9\r\nsubscribe\r\n$10\r\nnews.sport\r\n:1\r\n");
    let got = redis_exchange(&mut s, b"SUBSCRIBE admin.alerts\r\n", "\r\n").await;
    assert!(got.starts_with("-NOPERM"), "{got}");
    let got = redis_exchange(&mut s, b"PSUBSCRIBE *\r\n", "\r\n").await;
    assert!(got.starts_with("-NOPERM"), "{got}");
    let got = redis_exchange(&mut s, b"PSUBSCRIBE news.*\r\n", ":2\r\n").await;
    assert!(got.starts_with("*3\r\n$10\r\npsubscribe"), "{got}");
    // The analyst only listens: PUBLISH is denied even on its channels (a review: a read-only
    // agent could send to applications listening on news.*).
    let mut c = redis_connect("analyst", false).await;
    for channel in ["news.sport", "admin.alerts"] {
        let e = redis::cmd("PUBLISH")
            .arg(channel)
            .arg("x")
            .query_async::<i64>(&mut c)
            .await
            .unwrap_err();
        assert!(redis_error(&e).contains("NOPERM"), "{channel}: {e:?}");
    }
    let mut publisher = redis_connect("trusted", false).await;
    let n: i64 = redis::cmd("PUBLISH")
        .arg("news.sport")
        .arg("goal")
        .query_async(&mut publisher)
        .await
        .unwrap();
    assert_eq!(n, 2);
    let got = redis_exchange(&mut s, b"UNSUBSCRIBE\r\n", ":1\r\n").await;
    assert!(
        got.contains("*3\r\n$7\r\nmessage\r\n$10\r\nnews.sport\r\n$4\r\ngoal\r\n"),
        "{got}"
    );
    assert!(got.contains("$11\r\nunsubscribe"), "{got}");
    let got = redis_exchange(&mut s, b"PUNSUBSCRIBE\r\nPING\r\n", "\r\n").await;
    assert!(got.contains("punsubscribe"), "{got}");
}

#[tokio::test]
async fn pubsub_in_resp3_delivers_push_frames() {
    let mut s = redis_raw_hello3("analyst").await;
    let got = redis_exchange(&mut s, b"SUBSCRIBE news.a\r\n", ":1\r\n").await;
    assert!(got.starts_with(">3\r\n"), "{got}");
    let mut c = redis_connect("trusted", false).await;
    let _: i64 = redis::cmd("PUBLISH")
        .arg("news.a")
        .arg("hi")
        .query_async(&mut c)
        .await
        .unwrap();
    let got = redis_exchange(&mut s, b"PING\r\n", "+PONG\r\n").await;
    assert!(
        got.contains(">3\r\n$7\r\nmessage\r\n$6\r\nnews.a\r\n$2\r\nhi\r\n"),
        "{got}"
    );
}

async fn redis_raw_hello3(agent: &str) -> tokio::net::TcpStream {
    let mut s = support::redis_raw().await;
    let token = harness().env.token(agent).to_string();
    let got = redis_exchange(
        &mut s,
        format!("HELLO 3 AUTH {agent} {token} SETNAME t\r\n").as_bytes(),
        "modules\r\n*0\r\n",
    )
    .await;
    assert!(got.starts_with('%'), "{got}");
    s
}

#[tokio::test]
async fn wrong_token_and_unknown_agent_read_the_same() {
    let port = harness().env.redis_port;
    let wrong = redis::Client::open(format!("redis://analyst:tg_wrong@127.0.0.1:{port}")).unwrap();
    let e1 = wrong
        .get_multiplexed_async_connection()
        .await
        .err()
        .unwrap();
    let unknown = redis::Client::open(format!("redis://nobody:tg_wrong@127.0.0.1:{port}")).unwrap();
    let e2 = unknown
        .get_multiplexed_async_connection()
        .await
        .err()
        .unwrap();
    assert_eq!(e1.kind(), redis::ErrorKind::AuthenticationFailed, "{e1}");
    assert_eq!(e1.to_string(), e2.to_string());
    let mut s = support::redis_raw().await;
    let a = redis_exchange(&mut s, b"AUTH analyst tg_wrong\r\n", "\r\n").await;
    let b = redis_exchange(&mut s, b"AUTH nobody tg_wrong\r\n", "\r\n").await;
    assert_eq!(
        a,
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(a, b);
    // Before AUTH only AUTH, HELLO and QUIT; PING too gets NOAUTH, as from redis-server
    // with a password (a PONG made `redis-cli -u URL ping` with a wrong token look fine).
    let mut s = support::redis_raw().await;
    let got = redis_exchange(
        &mut s,
        b"PING\r\nGET cache:1\r\nHELLO 3\r\nQUIT\r\n",
        "+OK\r\n",
    )
    .await;
    assert!(
        got.starts_with(
            "-NOAUTH Authentication required.\r\n-NOAUTH Authentication required.\r\n-NOAUTH HELLO"
        ),
        "{got}"
    );
}

#[tokio::test]
async fn values_up_to_the_limit_pass_and_larger_ones_are_refused() {
    let mut c = redis_connect("writer", false).await;
    let big = vec![b'x'; 64 << 20];
    let _: () = redis::cmd("SET")
        .arg("cache:big")
        .arg(&big[..])
        .query_async(&mut c)
        .await
        .unwrap();
    let len: i64 = redis::cmd("STRLEN")
        .arg("cache:big")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(len, 64 << 20);
    let back: Vec<u8> = redis::cmd("GET")
        .arg("cache:big")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(back.len(), 64 << 20);
    let _: () = redis::cmd("DEL")
        .arg("cache:big")
        .query_async(&mut c)
        .await
        .unwrap();
    drop(back);
    // One byte over: a protocol error, and only this connection closes.
    let mut s = redis_login("writer").await;
    let head = format!(
        "*3\r\n$3\r\nSET\r\n$9\r\ncache:big\r\n${}\r\n",
        (64 << 20) + 1
    );
    let got = redis_exchange(&mut s, head.as_bytes(), "\r\n").await;
    assert!(got.starts_with("-ERR Protocol error"), "{got}");
    let v: String = redis::cmd("GET")
        .arg("cache:1")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(v, "cached value 1");
}

#[tokio::test]
async fn every_command_is_audited_without_values() {
    let mut c = redis_connect("writer", false).await;
    let _: () = redis::cmd("SET")
        .arg("cache:audited")
        .arg("s3cr3t-value-xyz")
        .query_async(&mut c)
        .await
        .unwrap();
    let _ = redis::cmd("GET")
        .arg("admin:audited")
        .query_async::<redis::Value>(&mut c)
        .await;
    let _: String = redis::cmd("PING").query_async(&mut c).await.unwrap();
    // The upstream refuses this one: its outcome is recorded with the error.
    let incr = redis::cmd("INCR")
        .arg("cache:audited")
        .query_async::<i64>(&mut c)
        .await;
    assert!(incr.is_err());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let log = std::fs::read_to_string(&harness().env.audit_log).unwrap();
    assert!(
        log.contains(r#""statement":"SET cache:audited ?","decision":"allowed""#),
        "SET record"
    );
    assert!(
        log.contains(r#""statement":"GET admin:audited","decision":"blocked""#),
        "refusal record"
    );
    assert!(!log.contains("s3cr3t-value-xyz"), "values are never logged");
    // `[audit] redis_outcomes = "errors"` (the default): one record per successful command, an
    // outcome record only for errors.
    let records: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seq_of = |stmt: &str| {
        records
            .iter()
            .rev()
            .find(|r| r["statement"] == stmt && r["kind"] == "decision")
            .unwrap_or_else(|| panic!("decision record of {stmt}"))["seq"]
            .as_u64()
            .unwrap()
    };
    let outcome_of = |seq: u64| records.iter().find(|r| r["ref_seq"] == seq);
    assert!(outcome_of(seq_of("SET cache:audited ?")).is_none());
    let failed = outcome_of(seq_of("INCR cache:audited")).expect("outcome of the failed INCR");
    assert_eq!(failed["decision"], "error");
    assert!(
        failed["error"].as_str().unwrap().contains("not an integer"),
        "{failed}"
    );
    // A masked read names the mask rule, as the other doors' records do (it was null).
    let mut a = redis_connect("analyst", false).await;
    let _: Option<String> = redis::cmd("HGET")
        .arg("session:1")
        .arg("email")
        .query_async(&mut a)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let log = std::fs::read_to_string(&harness().env.audit_log).unwrap();
    let masked: serde_json::Value = log
        .lines()
        .rev()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| {
            r["statement"]
                .as_str()
                .is_some_and(|s| s.starts_with("HGET session:1 "))
                && r["kind"] == "decision"
        })
        .expect("the masked read's record");
    assert_eq!(masked["decision"], "masked", "{masked}");
    assert!(
        masked["rule"]
            .as_str()
            .is_some_and(|r| r.contains("session:*")),
        "{masked}"
    );
}

#[tokio::test]
async fn redis_cli_through_the_gateway() {
    let env = &harness().env;
    let run = |agent: &str, args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .arg("--no-auth-warning")
            .arg("-u")
            .arg(env.redis_url(agent))
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(run("analyst", &["GET", "cache:2"]).trim(), "cached value 2");
    assert!(run("analyst", &["HGETALL", "session:2"]).contains("***@example.com"));
    assert!(run("analyst", &["-3", "HGETALL", "session:2"]).contains("***@example.com"));
    assert!(run("analyst", &["FLUSHALL"]).contains("NOPERM"));
    assert!(run("trusted", &["GET", "admin:config"]).contains("feature_flags"));
    // The direct upstream URL the demo prints works with `redis-cli -u` too.
    let direct = std::process::Command::new("redis-cli")
        .args(["--no-auth-warning", "-u", &env.upstream_redis_url, "PING"])
        .output()
        .expect("redis-cli");
    assert_eq!(String::from_utf8_lossy(&direct.stdout).trim(), "PONG");
}

#[tokio::test]
async fn no_secret_reaches_replies_or_the_audit_log() {
    let env = &harness().env;
    let password = env
        .upstream_redis_url
        .trim_start_matches("redis://default:")
        .split('@')
        .next()
        .unwrap()
        .to_string();
    let mut replies = String::new();
    let mut c = redis_connect("trusted", false).await;
    for cmd in [
        vec!["CONFIG", "GET", "requirepass"],
        vec!["ACL", "LIST"],
        vec!["CLIENT", "INFO"],
        vec!["HELLO"],
    ] {
        let mut q = redis::cmd(cmd[0]);
        for a in &cmd[1..] {
            q.arg(*a);
        }
        replies.push_str(&format!(
            "{:?}",
            q.query_async::<redis::Value>(&mut c).await
        ));
    }
    let mut a = redis_connect("analyst", false).await;
    replies.push_str(&format!(
        "{:?}",
        redis::cmd("CONFIG")
            .arg("GET")
            .arg("*")
            .query_async::<redis::Value>(&mut a)
            .await
    ));
    // Failed logins with a real token of another agent must not echo it either.
    let port = env.redis_port;
    let bad = redis::Client::open(format!(
        "redis://analyst:{}@127.0.0.1:{port}",
        env.token("writer")
    ))
    .unwrap();
    replies.push_str(&format!(
        "{:?}",
        bad.get_multiplexed_async_connection().await.err()
    ));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let log = std::fs::read_to_string(&env.audit_log).unwrap();
    for (what, secret) in [
        ("upstream password", password.as_str()),
        ("analyst token", env.token("analyst")),
        ("writer token", env.token("writer")),
        ("trusted token", env.token("trusted")),
    ] {
        assert!(!log.contains(secret), "{what} in the audit log");
        assert!(!replies.contains(secret), "{what} in a reply");
    }
}

#[tokio::test]
async fn watch_aborts_exec_when_a_watched_key_changes() {
    let mut a = redis_login("writer").await;
    let mut other = redis_connect("writer", false).await;
    let got = redis_exchange(
        &mut a,
        b"SET cache:watched 1\r\nWATCH cache:watched\r\n",
        "+OK\r\n+OK\r\n",
    )
    .await;
    assert_eq!(got, "+OK\r\n+OK\r\n");
    let _: () = redis::cmd("SET")
        .arg("cache:watched")
        .arg("2")
        .query_async(&mut other)
        .await
        .unwrap();
    let got = redis_exchange(
        &mut a,
        b"MULTI\r\nSET cache:watched 3\r\nEXEC\r\nGET cache:watched\r\n",
        "$1\r\n2\r\n",
    )
    .await;
    assert_eq!(got, "+OK\r\n+QUEUED\r\n*-1\r\n$1\r\n2\r\n", "EXEC aborted");
    // Untouched, the transaction runs.
    let got = redis_exchange(
        &mut a,
        b"WATCH cache:watched\r\nMULTI\r\nINCR cache:watched\r\nEXEC\r\n",
        ":3\r\n",
    )
    .await;
    assert_eq!(got, "+OK\r\n+OK\r\n+QUEUED\r\n*1\r\n:3\r\n");

    // WATCH needs read access to its keys: it tells whether a key changed.
    let mut analyst = redis_login("analyst").await;
    let got = redis_exchange(&mut analyst, b"WATCH admin:config\r\n", "\r\n").await;
    assert!(got.starts_with("-NOPERM"), "{got}");
    // An aborted transaction with masked commands queued stays a nil reply (RESP2 and RESP3).
    let mut trusted = redis_connect("trusted", false).await;
    let email: String = redis::cmd("HGET")
        .arg("session:2")
        .arg("email")
        .query_async(&mut trusted)
        .await
        .unwrap();
    for (hello, nil) in [("HELLO 2", "*-1\r\n"), ("HELLO 3", "_\r\n")] {
        redis_exchange(&mut analyst, format!("{hello}\r\n").as_bytes(), "\r\n").await;
        // Drain whatever is left of the HELLO reply.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        redis_exchange(&mut analyst, b"PING\r\n", "PONG\r\n").await;
        let got = redis_exchange(
            &mut analyst,
            b"WATCH session:2\r\nMULTI\r\nHGET session:2 email\r\n",
            "+QUEUED\r\n",
        )
        .await;
        assert_eq!(got, "+OK\r\n+OK\r\n+QUEUED\r\n", "{hello}");
        // Rewriting the same value still touches the key.
        let _: () = redis::cmd("HSET")
            .arg("session:2")
            .arg("email")
            .arg(&email)
            .query_async(&mut trusted)
            .await
            .unwrap();
        let got = redis_exchange(&mut analyst, b"EXEC\r\n", nil).await;
        assert_eq!(got, nil, "{hello}");
    }
}

/// The record of a script holds the script (the code that ran); CONFIG SET's parameter names
/// are recorded, not their values; a key's control bytes are escaped and a long key's cut is
/// marked, so the record tells what was run.
#[tokio::test]
async fn scripts_config_names_and_odd_keys_are_recorded_distinctly() {
    let mut t = redis_connect("trusted", false).await;
    let script = "return redis.call('get', KEYS[1]) -- audit-script-marker";
    let v: redis::Value = redis::cmd("EVAL")
        .arg(script)
        .arg(1)
        .arg("cache:1")
        .arg("argv-secret-xyz")
        .query_async(&mut t)
        .await
        .unwrap();
    assert_eq!(v, redis::Value::BulkString(b"cached value 1".to_vec()));
    let _: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return 'audit-load-marker'")
        .query_async(&mut t)
        .await
        .unwrap();
    let mut a = redis_connect("analyst", false).await;
    let e = redis::cmd("CONFIG")
        .arg("SET")
        .arg("dir")
        .arg("/tmp/config-secret-xyz")
        .query_async::<redis::Value>(&mut a)
        .await
        .unwrap_err();
    assert!(redis_error(&e).contains("tollgate"), "{e}");
    let long = |tail: &str| format!("cache:{}:{tail}", "A".repeat(140));
    for key in [
        "cache:\x1b[2Kesc-marker".to_string(),
        long("one"),
        long("other"),
    ] {
        let _: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut t)
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let log = std::fs::read_to_string(&harness().env.audit_log).unwrap();
    let statements: Vec<String> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["kind"] == "decision" && r["protocol"] == "redis")
        .filter_map(|r| r["statement"].as_str().map(str::to_string))
        .collect();
    let has = |want: &str| statements.iter().any(|s| s == want);
    assert!(
        has(&format!("EVAL \"{script}\" ? cache:1 ?")),
        "EVAL record"
    );
    assert!(
        has(r#"SCRIPT LOAD "return 'audit-load-marker'""#),
        "SCRIPT LOAD"
    );
    assert!(has("CONFIG SET dir ?"), "CONFIG SET record");
    assert!(has(r#"GET "cache:\x1b[2Kesc-marker""#), "escaped key");
    let cut = format!("GET \"cache:{}\"", "A".repeat(122));
    assert!(has(&format!("{cut}…[+22 bytes]")), "cut key, one");
    assert!(has(&format!("{cut}…[+24 bytes]")), "cut key, other");
    assert!(!log.contains("argv-secret-xyz") && !log.contains("config-secret-xyz"));
}
