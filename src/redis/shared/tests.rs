//! Shared connections: which commands may share one (from Redis 7.0's real command table), the
//! inbox's order, limits and wake-ups, and a connection to a scripted upstream that pairs
//! replies with sessions, streams a large reply in pieces and closes on a reply nobody is owed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::inbox::{Inbox, Piece, Taken, QUEUED_BYTES_HARD_LIMIT, QUEUED_BYTES_LIMIT};
use super::route::{sharable, MAX_SHARED_ARG};
use super::SharedConn;
use crate::redis::upstream::{RedisCredentials, Upstream};
use crate::session::testing::TestCore;
use crate::tls::NetStream;
use crate::vault::Secret;

fn args(line: &str) -> Vec<Bytes> {
    line.split(' ')
        .map(|w| Bytes::copy_from_slice(w.as_bytes()))
        .collect()
}

#[test]
fn keyed_data_commands_share_and_connection_state_does_not() {
    let table = TestCore::redis_command_table();
    for line in [
        "GET k",
        "set k v",
        "MGET a b",
        "HGETALL h",
        "INCR n",
        "LPUSH l x",
        "ZADD z 1 m",
        "XADD s * f v",
        "OBJECT ENCODING k",
        "MEMORY USAGE k",
        "EXPIRE k 10",
        "PFADD h a",
        "PING",
        "echo hi",
    ] {
        assert!(sharable(&table, &args(line)), "{line} should be sharable");
    }
    for line in [
        // transactions and scripts
        "MULTI",
        "EXEC",
        "DISCARD",
        "WATCH k",
        "UNWATCH",
        "EVAL return 1 0",
        "EVALSHA abc 1 k",
        "EVAL_RO return 1 1 k",
        "FCALL f 1 k",
        // blocking
        "BLPOP l 0",
        "BRPOPLPUSH a b 0",
        "BZPOPMIN z 0",
        "XREAD BLOCK 0 STREAMS s 0",
        "XREADGROUP GROUP g c STREAMS s >",
        "WAIT 1 0",
        // pub/sub
        "SUBSCRIBE c",
        "PSUBSCRIBE c*",
        "SSUBSCRIBE c",
        "SPUBLISH c m",
        "PUBLISH c m",
        // connection state
        "SELECT 1",
        "CLIENT SETNAME x",
        "CLIENT REPLY OFF",
        "CLIENT TRACKING ON",
        "HELLO 3",
        "AUTH pw",
        "RESET",
        "READONLY",
        "MONITOR",
        // server administration and keyless commands
        "CONFIG GET x",
        "DEBUG SLEEP 0",
        "SLOWLOG GET",
        "INFO",
        "KEYS *",
        "SCAN 0",
        "FLUSHALL",
        "MIGRATE h 1 k 0 0",
        // unknown
        "NOSUCHCOMMAND k",
        "",
    ] {
        assert!(
            !sharable(&table, &args(line)),
            "{line} must not be sharable"
        );
    }
}

#[test]
fn a_command_with_a_huge_argument_does_not_share() {
    let table = TestCore::redis_command_table();
    let set = |n: usize| {
        vec![
            Bytes::from_static(b"SET"),
            Bytes::from_static(b"k"),
            Bytes::from(vec![b'v'; n]),
        ]
    };
    assert!(sharable(&table, &set(MAX_SHARED_ARG)));
    assert!(!sharable(&table, &set(MAX_SHARED_ARG + 1)));
    let mut echo = set(MAX_SHARED_ARG + 1);
    echo.remove(0);
    echo[0] = Bytes::from_static(b"ECHO");
    assert!(!sharable(&table, &echo), "keyless commands too");
}

#[tokio::test]
async fn the_inbox_keeps_order_counts_replies_and_closes() {
    let inbox = Arc::new(Inbox::default());
    inbox.expect(2);
    assert_eq!(
        inbox.deliver([Piece::Head(Bytes::from_static(b"$3\r\n"))]),
        0
    );
    // A head pays no reply: still one... two owed.
    let waiting = {
        let inbox = inbox.clone();
        tokio::spawn(async move { inbox.settled().await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiting.is_finished(), "settled before the replies came");
    assert_eq!(
        inbox.deliver([
            Piece::Tail(Bytes::from_static(b"abc\r\n")),
            Piece::Whole(Bytes::from_static(b"+OK\r\n"))
        ]),
        0
    );
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("settled once every reply came")
        .unwrap();
    match inbox.take() {
        Taken::Frames(q) => {
            let kinds: Vec<String> = q.iter().map(|p| format!("{p:?}")).collect();
            assert_eq!(kinds.len(), 3);
            assert!(kinds[0].starts_with("Head") && kinds[1].starts_with("Tail"));
            assert!(kinds[2].starts_with("Whole"));
        }
        _ => panic!("frames expected"),
    }
    assert!(matches!(inbox.take(), Taken::Nothing));
    inbox.close();
    assert!(matches!(inbox.take(), Taken::Closed));
}

#[tokio::test]
async fn an_inbox_holds_back_commands_over_the_soft_limit_and_cuts_off_over_the_hard_one() {
    let inbox = Arc::new(Inbox::default());
    inbox.expect(1);
    let big = Bytes::from(vec![b'x'; QUEUED_BYTES_LIMIT + 1]);
    assert_eq!(inbox.deliver([Piece::Whole(big)]), 0);
    let room = {
        let inbox = inbox.clone();
        tokio::spawn(async move { inbox.has_room(usize::MAX).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!room.is_finished(), "room while over the soft limit");
    assert!(matches!(inbox.take(), Taken::Frames(_)));
    tokio::time::timeout(Duration::from_secs(5), room)
        .await
        .expect("room once the replies were taken")
        .unwrap();

    inbox.expect(3);
    let cut = {
        let inbox = inbox.clone();
        tokio::spawn(async move { inbox.cut_off().await })
    };
    let half = Bytes::from(vec![b'y'; QUEUED_BYTES_HARD_LIMIT / 2 + 1]);
    assert_eq!(inbox.deliver([Piece::Whole(half.clone())]), 0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!cut.is_finished(), "cut off under the hard limit");
    assert_eq!(
        inbox.deliver([Piece::Whole(half)]),
        1,
        "over the hard limit"
    );
    assert!(inbox.is_closed() && inbox.was_cut_off());
    tokio::time::timeout(Duration::from_secs(5), cut)
        .await
        .expect("the cut-off wakes its watcher")
        .unwrap();
    // What was queued is dropped at once (a client that does not read would never take it);
    // what still comes is dropped too, and the owed count still settles.
    assert!(matches!(inbox.take(), Taken::Closed));
    assert_eq!(
        inbox.deliver([Piece::Whole(Bytes::from_static(b"+OK\r\n"))]),
        0
    );
    inbox.settled().await;
    assert!(matches!(inbox.take(), Taken::Closed));
    // A watcher that comes after the cut-off returns at once.
    tokio::time::timeout(Duration::from_secs(1), inbox.cut_off())
        .await
        .expect("already cut off");
}

/// A shared connection to a test server at `addr` (no login: the server is tollgate's own).
async fn shared_conn_to(addr: std::net::SocketAddr) -> SharedConn {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let up = Upstream {
        stream: NetStream::Plain(tcp),
        client_id: None,
        local_addr: String::new(),
    };
    let creds = Arc::new(RedisCredentials {
        user: Secret::new("default".into()),
        password: Secret::new("pw".into()),
    });
    SharedConn::start(
        up,
        "cache",
        creds,
        Arc::new(super::inbox::Budget::new(
            super::inbox::QUEUED_BYTES_TOTAL_LIMIT,
        )),
    )
}

/// A scripted upstream: answers every command with `+N` (N counting from 0), except `BIG`
/// (a 1 MiB bulk string, written in 64 KiB parts) and `ROGUE` (two replies).
async fn scripted_upstream() -> (SharedConn, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut n = 0;
        let mut chunk = [0u8; 4096];
        loop {
            let k = match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(k) => k,
            };
            buf.extend_from_slice(&chunk[..k]);
            // One command per line (inline commands are enough for the script).
            while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line).trim().to_string();
                match line.as_str() {
                    "BIG" => {
                        let body = vec![b'v'; 1 << 20];
                        s.write_all(format!("${}\r\n", body.len()).as_bytes())
                            .await
                            .unwrap();
                        for part in body.chunks(64 * 1024) {
                            s.write_all(part).await.unwrap();
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        s.write_all(b"\r\n").await.unwrap();
                    }
                    "ROGUE" => s.write_all(b"+ONE\r\n+TWO\r\n").await.unwrap(),
                    _ => {
                        s.write_all(format!("+{n}\r\n").as_bytes()).await.unwrap();
                        n += 1;
                    }
                }
            }
        }
    });
    (shared_conn_to(addr).await, server)
}

/// Takes pieces until `n` replies have ended (or panics after 5 s).
async fn replies(inbox: &Inbox, n: usize) -> Vec<Piece> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while got.iter().filter(|p: &&Piece| p.ends()).count() < n {
        match inbox.take() {
            Taken::Frames(q) => got.extend(q),
            Taken::Closed => panic!("closed after {got:?}"),
            Taken::Nothing => {
                tokio::time::timeout_at(deadline, inbox.arrived())
                    .await
                    .expect("replies in time");
            }
        }
    }
    got
}

fn text(p: &Piece) -> String {
    match p {
        Piece::Whole(b) | Piece::Head(b) | Piece::Tail(b) => String::from_utf8_lossy(b).into(),
    }
}

#[tokio::test]
async fn replies_reach_the_sessions_that_sent_the_commands_in_order() {
    let (conn, _server) = scripted_upstream().await;
    let a = Arc::new(Inbox::default());
    let b = Arc::new(Inbox::default());
    conn.send(&a, b"X\r\nX\r\n", 2).unwrap();
    conn.send(&b, b"X\r\n", 1).unwrap();
    conn.send(&a, b"X\r\n", 1).unwrap();
    let got_a: Vec<String> = replies(&a, 3).await.iter().map(text).collect();
    let got_b: Vec<String> = replies(&b, 1).await.iter().map(text).collect();
    assert_eq!(got_a, ["+0\r\n", "+1\r\n", "+3\r\n"]);
    assert_eq!(got_b, ["+2\r\n"]);
    a.settled().await;
    b.settled().await;
}

#[tokio::test]
async fn a_large_reply_comes_in_pieces_and_the_next_reply_whole() {
    let (conn, _server) = scripted_upstream().await;
    let a = Arc::new(Inbox::default());
    let b = Arc::new(Inbox::default());
    conn.send(&a, b"BIG\r\n", 1).unwrap();
    conn.send(&b, b"X\r\n", 1).unwrap();
    let got = replies(&a, 1).await;
    assert!(got.len() > 1, "a 1 MiB reply in one piece");
    assert!(matches!(got.first(), Some(Piece::Head(_))));
    assert!(matches!(got.last(), Some(Piece::Tail(_))));
    let total: usize = got.iter().map(|p| text(p).len()).sum();
    assert_eq!(total, format!("${}\r\n", 1 << 20).len() + (1 << 20) + 2);
    let got_b: Vec<String> = replies(&b, 1).await.iter().map(text).collect();
    assert_eq!(got_b, ["+0\r\n"]);
}

#[tokio::test]
async fn a_reply_nobody_is_owed_closes_the_connection_and_its_sessions() {
    let (conn, _server) = scripted_upstream().await;
    let a = Arc::new(Inbox::default());
    conn.send(&a, b"ROGUE\r\n", 1).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !conn.is_closed() {
        assert!(tokio::time::Instant::now() < deadline, "still open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The reply owed before the rogue one came in the same read: its route was gone before
    // the close, so only the reply itself ends the wait (it once waited forever). What the
    // reply half does: take, else wait for frames or the close.
    let got = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match a.take() {
                Taken::Frames(q) => return q.iter().map(text).collect::<Vec<_>>(),
                Taken::Closed => return vec!["closed".to_string()],
                Taken::Nothing => a.arrived().await,
            }
        }
    })
    .await
    .expect("the session owed a reply got neither it nor the close");
    assert_eq!(got, ["+ONE\r\n"]);
    assert!(!a.owes());
    // The session learns at its next command (an idle session holds no state there).
    assert!(conn.send(&a, b"X\r\n", 1).is_err());
    assert!(a.is_closed());
    let late = Arc::new(Inbox::default());
    assert!(conn.send(&late, b"X\r\n", 1).is_err());
    assert!(
        late.is_closed(),
        "a session sending after the close is told"
    );
}

#[tokio::test]
async fn dropping_the_last_handle_closes_the_connection() {
    let (conn, server) = scripted_upstream().await;
    let a = Arc::new(Inbox::default());
    conn.send(&a, b"X\r\n", 1).unwrap();
    replies(&a, 1).await;
    drop(conn);
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the upstream saw the connection close")
        .unwrap();
}

/// An upstream that answers tollgate's login (AUTH and CLIENT ID) on every connection and
/// nothing else; returns its port and a count of the connections it accepted.
async fn login_only_upstream() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let id = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let mut seen = Vec::new();
                // Both login commands end with CLIENT ID's last line.
                while !seen.ends_with(b"$2\r\nID\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                s.write_all(format!("+OK\r\n:{id}\r\n").as_bytes())
                    .await
                    .unwrap();
                while !matches!(s.read(&mut buf).await, Ok(0) | Err(_)) {}
            });
        }
    });
    (port, accepted)
}

#[tokio::test]
async fn sessions_take_the_slots_in_turn_and_a_rotated_login_gets_new_connections() {
    use arc_swap::ArcSwap;
    let (port, accepted) = login_only_upstream().await;
    let creds = |pw: &str| RedisCredentials {
        user: Secret::new("default".into()),
        password: Secret::new(pw.into()),
    };
    let target = crate::redis::upstream::RedisTarget {
        name: "cache".into(),
        host: "127.0.0.1".into(),
        port,
        tls: None,
        credentials: ArcSwap::from_pointee(creds("one")),
        table: Default::default(),
        clients: Default::default(),
        shared: super::SharedUpstream::new(2),
    };
    let t = Duration::from_secs(5);
    let a = target.shared.pick(&target, t).await.unwrap();
    let b = target.shared.pick(&target, t).await.unwrap();
    let c = target.shared.pick(&target, t).await.unwrap();
    assert!(!Arc::ptr_eq(&a, &b), "two slots, two connections");
    assert!(
        Arc::ptr_eq(&a, &c),
        "the third session shares the first slot"
    );
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    // The vault rotated the login: new sessions get connections logged in with it; the old
    // one still serves its sessions until they end.
    target.credentials.store(Arc::new(creds("two")));
    let d = target.shared.pick(&target, t).await.unwrap();
    assert!(!Arc::ptr_eq(&a, &d));
    assert!(Arc::ptr_eq(&d.credentials, &target.credentials.load_full()));
    assert!(!a.is_closed());
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    // Sharing off: no slot to pick.
    assert!(!super::SharedUpstream::new(0).enabled());
}

#[tokio::test]
async fn a_session_owed_too_many_replies_waits_for_them() {
    let inbox = Arc::new(Inbox::default());
    inbox.expect(5);
    let room = {
        let inbox = inbox.clone();
        tokio::spawn(async move { inbox.has_room(4).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        !room.is_finished(),
        "room with 5 replies owed and 4 allowed"
    );
    inbox.deliver([Piece::Whole(Bytes::from_static(b"+OK\r\n"))]);
    tokio::time::timeout(Duration::from_secs(5), room)
        .await
        .expect("room once a reply came")
        .unwrap();
}

#[tokio::test]
async fn sessions_wait_while_an_upstream_that_does_not_read_holds_back_their_commands() {
    // An upstream that accepts and never reads: the socket fills, then the write buffer.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _server = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(s);
    });
    let conn = Arc::new(shared_conn_to(addr).await);
    let inbox = Arc::new(Inbox::default());
    let chunk = vec![b'x'; 1 << 20];
    let mut queued = 0;
    while queued < 128 {
        if tokio::time::timeout(Duration::from_millis(200), conn.writable())
            .await
            .is_err()
        {
            break;
        }
        conn.send(&inbox, &chunk, 1).unwrap();
        queued += 1;
    }
    // What the kernel took, the buffer being written and `OUT_LIMIT` more: not 128 MiB.
    assert!(
        queued < 64,
        "{queued} MiB queued for an upstream that reads nothing"
    );
    // Closing releases the waiters.
    let waiting = {
        let conn = conn.clone();
        tokio::spawn(async move { conn.writable().await })
    };
    conn.inner_close_for_tests();
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("a close releases the waiters")
        .unwrap();
}

#[tokio::test]
async fn a_session_cut_off_for_unread_replies_sends_nothing_more() {
    let (conn, _server) = scripted_upstream().await;
    let greedy = Arc::new(Inbox::default());
    greedy.expect(1);
    let huge = Bytes::from(vec![b'y'; QUEUED_BYTES_HARD_LIMIT + 1]);
    assert_eq!(greedy.deliver([Piece::Whole(huge)]), 1, "cut off");
    assert!(
        conn.send(&greedy, b"X\r\n", 1).is_err(),
        "a cut-off session still sends"
    );
    // The connection itself serves the others.
    let polite = Arc::new(Inbox::default());
    conn.send(&polite, b"X\r\n", 1).unwrap();
    let got: Vec<String> = replies(&polite, 1).await.iter().map(text).collect();
    assert_eq!(got, ["+0\r\n"]);
}
