//! Protocol corners with hand-made messages: negotiation, refused startups, the extended-protocol
//! error path, FunctionCall, and malformed input that must not hurt the gateway.

mod support;

use std::time::Duration;

use support::{harness, message, raw_login, read_message, read_until_ready};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn open() -> TcpStream {
    TcpStream::connect(("127.0.0.1", harness().env.pg_port))
        .await
        .unwrap()
}

fn startup(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut body = vec![0, 3, 0, 0];
    for (k, v) in pairs {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut v = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    v.extend(body);
    v
}

#[tokio::test]
async fn gss_is_answered_n_and_ssl_s_when_a_certificate_is_configured() {
    for (code, expected) in [(80877104i32, b"N"), (80877103, b"S")] {
        let mut s = open().await;
        let mut pkt = 8i32.to_be_bytes().to_vec();
        pkt.extend_from_slice(&code.to_be_bytes());
        s.write_all(&pkt).await.unwrap();
        let mut answer = [0u8; 1];
        s.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, expected);
    }
}

#[tokio::test]
async fn replication_and_unsafe_startup_parameters_are_refused() {
    for params in [
        vec![
            ("user", "analyst"),
            ("database", "shop"),
            ("replication", "database"),
        ],
        vec![
            ("user", "analyst"),
            ("database", "shop"),
            ("options", "-c role=postgres"),
        ],
        vec![
            ("user", "analyst"),
            ("database", "shop"),
            ("session_authorization", "postgres"),
        ],
        vec![
            ("user", "analyst"),
            ("database", "shop"),
            ("client_encoding", "SJIS"),
        ],
        // The server would echo every statement as tollgate rewrote it (a hash mask's key).
        vec![
            ("user", "analyst"),
            ("database", "shop"),
            ("options", "-c client_min_messages=debug2"),
        ],
        vec![
            ("user", "analyst"),
            ("database", "shop"),
            ("client_min_messages", "log"),
        ],
    ] {
        let mut s = open().await;
        s.write_all(&startup(&params)).await.unwrap();
        let (tag, body) = read_message(&mut s).await;
        assert_eq!(tag, b'E', "{params:?}");
        assert_eq!(
            support::error_field(&body, b'C').as_deref(),
            Some("42501"),
            "{params:?}"
        );
        let message = support::error_field(&body, b'M').unwrap();
        assert!(
            message.starts_with("tollgate: ") && message.contains("(rule: builtin: "),
            "{message}"
        );
        // Recorded like any refused connection, under the name given.
        let log = std::fs::read_to_string(&support::harness().env.audit_log).unwrap();
        assert!(
            log.lines().any(|l| {
                let r: serde_json::Value = serde_json::from_str(l).unwrap();
                r["kind"] == "session"
                    && r["agent"] == "analyst"
                    && r["decision"] == "blocked"
                    && r["reason"].as_str()
                        == message
                            .strip_prefix("tollgate: ")
                            .map(|m| m.split(" (rule: ").next().unwrap())
            }),
            "{params:?}: no session record for {message}"
        );
    }
}

/// A client asking for protocol 3.2 (libpq 18 with max_protocol_version=latest) or for `_pq_.`
/// options is told the newest version is 3.0, as a whole number as PostgreSQL writes it (it was
/// 0, which libpq 18 reads as a downgrade to before 3.0 and gives up), and goes on to log in.
#[tokio::test]
async fn a_newer_minor_version_is_negotiated_down_to_3_0() {
    let mut s = open().await;
    let mut pkt = startup(&[("user", "analyst"), ("database", "shop"), ("_pq_.x", "1")]);
    pkt[4..8].copy_from_slice(&[0, 3, 0, 2]);
    s.write_all(&pkt).await.unwrap();
    let (tag, body) = read_message(&mut s).await;
    assert_eq!(tag, b'v');
    assert_eq!(&body[..4], &[0, 3, 0, 0], "{body:?}");
    assert_eq!(&body[4..8], &1i32.to_be_bytes());
    assert_eq!(&body[8..], b"_pq_.x\0");
    // Then the login goes on: the SCRAM request.
    let (tag, body) = read_message(&mut s).await;
    assert_eq!((tag, &body[..4]), (b'R', &10i32.to_be_bytes()[..]));
}

#[tokio::test]
async fn protocol_2_is_refused() {
    let mut s = open().await;
    let mut pkt = 16i32.to_be_bytes().to_vec();
    pkt.extend_from_slice(&[0, 2, 0, 0]);
    pkt.extend_from_slice(b"user\0a\0\0\0");
    pkt.truncate(16);
    s.write_all(&pkt).await.unwrap();
    let (tag, body) = read_message(&mut s).await;
    assert_eq!(tag, b'E');
    assert_eq!(support::error_field(&body, b'C').as_deref(), Some("0A000"));
}

#[tokio::test]
async fn extended_refusal_skips_to_sync_and_keeps_earlier_replies_in_order() {
    let mut s = raw_login("analyst").await;
    let mut batch = Vec::new();
    // An allowed statement first, then a refused one, then more messages PostgreSQL must skip.
    batch.extend(message(
        b'P',
        b"\0SELECT 1 AS one FROM orders LIMIT 1\0\0\0",
    ));
    batch.extend(message(b'B', b"\0\0\0\0\0\0\0\0"));
    batch.extend(message(b'E', b"\0\0\0\0\0"));
    batch.extend(message(b'P', b"s2\0SELECT api_key FROM secrets\0\0\0"));
    batch.extend(message(b'B', b"\0s2\0\0\0\0\0\0\0"));
    batch.extend(message(b'E', b"\0\0\0\0\0"));
    batch.extend(message(b'S', b""));
    s.write_all(&batch).await.unwrap();
    let (tags, code, status) = read_until_ready(&mut s).await;
    assert_eq!(
        tags,
        vec![b'1', b'2', b'D', b'C', b'E', b'Z'],
        "{:?}",
        String::from_utf8_lossy(&tags)
    );
    assert_eq!(code.as_deref(), Some("42501"));
    assert_eq!(status, b'I');
    // The session is usable.
    s.write_all(&message(b'Q', b"SELECT 1\0")).await.unwrap();
    let (_, code, _) = read_until_ready(&mut s).await;
    assert_eq!(code, None);
}

#[tokio::test]
async fn function_call_is_refused_and_session_survives() {
    let mut s = raw_login("analyst").await;
    // FunctionCall for oid 1 (any), no args, text result.
    s.write_all(&message(b'F', &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]))
        .await
        .unwrap();
    let (tags, code, _) = read_until_ready(&mut s).await;
    assert_eq!(tags, vec![b'E', b'Z']);
    assert_eq!(code.as_deref(), Some("42501"));
    s.write_all(&message(b'Q', b"SELECT 1\0")).await.unwrap();
    assert_eq!(read_until_ready(&mut s).await.1, None);
}

/// FunctionCall of `oid` with one int4 argument, binary formats.
fn function_call(oid: u32, arg: i32) -> Vec<u8> {
    let mut body = oid.to_be_bytes().to_vec();
    body.extend_from_slice(&[0, 1, 0, 1]); // one argument format: binary
    body.extend_from_slice(&[0, 1]); // one argument
    body.extend_from_slice(&4i32.to_be_bytes());
    body.extend_from_slice(&arg.to_be_bytes());
    body.extend_from_slice(&[0, 1]); // binary result
    message(b'F', &body)
}

#[tokio::test]
async fn large_object_calls_pass_for_passthrough_only() {
    // The fixed OIDs tollgate knows are the server's large-object functions.
    let up = support::upstream().await;
    for (oid, name) in tollgate::policy::sql::fastpath::LARGE_OBJECT_FUNCTIONS {
        let row = up
            .query_one("SELECT proname::text FROM pg_proc WHERE oid = $1", &[&oid])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), name, "OID {oid}");
    }
    // lo_creat(INV_READ | INV_WRITE) as trusted: FunctionCallResponse, then ReadyForQuery.
    let mut s = raw_login("trusted").await;
    s.write_all(&function_call(957, 0x60000)).await.unwrap();
    let (tags, code, _) = read_until_ready(&mut s).await;
    assert_eq!((tags, code), (vec![b'V', b'Z'], None));
    // Anything else through the fast path is refused, for passthrough too.
    s.write_all(&function_call(2096, 1)).await.unwrap(); // pg_terminate_backend
    let (tags, code, _) = read_until_ready(&mut s).await;
    assert_eq!((tags, code.as_deref()), (vec![b'E', b'Z'], Some("42501")));
    // And large objects are not the analyst's.
    let mut a = raw_login("analyst").await;
    a.write_all(&function_call(957, 0x60000)).await.unwrap();
    let (tags, code, _) = read_until_ready(&mut a).await;
    assert_eq!((tags, code.as_deref()), (vec![b'E', b'Z'], Some("42501")));
}

#[tokio::test]
async fn invalid_utf8_query_is_refused_not_mangled() {
    let mut s = raw_login("analyst").await;
    s.write_all(&message(b'Q', b"SELECT '\xff' FROM orders\0"))
        .await
        .unwrap();
    let (_, code, _) = read_until_ready(&mut s).await;
    assert_eq!(code.as_deref(), Some("22021"));
}

/// The session answers a query with its rows.
async fn still_usable(s: &mut TcpStream, agent: &str) {
    s.write_all(&message(b'Q', b"SELECT 1 FROM orders LIMIT 1\0"))
        .await
        .unwrap();
    let (tags, code, _) = read_until_ready(s).await;
    assert_eq!(
        (tags.first(), code),
        (Some(&b'T'), None),
        "{agent}: {tags:?}"
    );
}

/// PostgreSQL answers a Query without its NUL with an ERROR (08P01) and reads on: the frame's
/// length says where it ends. The session goes on, as it would direct.
#[tokio::test]
async fn a_query_or_parse_without_its_terminator_is_an_error_not_the_end() {
    for agent in ["analyst", "trusted"] {
        let mut s = raw_login(agent).await;
        s.write_all(&message(b'Q', b"SELECT 1")).await.unwrap();
        let (tags, code, _) = read_until_ready(&mut s).await;
        assert_eq!((tags, code.as_deref()), (vec![b'E', b'Z'], Some("08P01")));
        still_usable(&mut s, agent).await;
        // A Parse the same (and one cut short before its parameter count): ERROR, then the
        // messages up to Sync skipped, as the server does (it was FATAL; the re-review).
        for body in [&b"s1\0SELECT 1"[..], b"s2\0SELECT 1\0"] {
            let mut batch = message(b'P', body);
            batch.extend_from_slice(&message(b'S', b""));
            s.write_all(&batch).await.unwrap();
            let (tags, code, _) = read_until_ready(&mut s).await;
            assert_eq!((tags, code.as_deref()), (vec![b'E', b'Z'], Some("08P01")));
        }
        still_usable(&mut s, agent).await;
    }
}

#[tokio::test]
async fn malformed_messages_close_only_their_own_connection() {
    // Unknown message type.
    let mut s = raw_login("analyst").await;
    s.write_all(&message(b'@', b"x")).await.unwrap();
    let (tag, body) = read_message(&mut s).await;
    assert_eq!(tag, b'E');
    assert_eq!(support::error_field(&body, b'C').as_deref(), Some("08P01"));
    // A declared length far over the limit: refused without buffering it.
    let mut s = raw_login("analyst").await;
    let mut huge = vec![b'Q'];
    huge.extend_from_slice(&(i32::MAX).to_be_bytes());
    s.write_all(&huge).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("closed promptly");
    // Garbage instead of a startup packet.
    let mut s = open().await;
    s.write_all(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4])
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("closed promptly");
    // Others are unaffected.
    support::connect("analyst")
        .await
        .simple_query("SELECT 1")
        .await
        .unwrap();
}

/// Review finding: a Query sent after a failed Parse in the same batch is discarded by the
/// server; the reply queue must not count it, or every later reply is misattributed.
#[tokio::test]
async fn query_discarded_inside_a_failed_batch_keeps_replies_in_step() {
    let mut s = raw_login("analyst").await;
    let mut batch = Vec::new();
    batch.extend(message(b'P', b"\0SELECT api_key FROM secrets\0\0\0"));
    batch.extend(message(b'Q', b"SELECT 42\0"));
    batch.extend(message(b'S', b""));
    s.write_all(&batch).await.unwrap();
    let (tags, code, _) = read_until_ready(&mut s).await;
    assert_eq!((tags, code.as_deref()), (vec![b'E', b'Z'], Some("42501")));
    // A genuine error next must come back as itself, and a refusal as a refusal.
    s.write_all(&message(b'Q', b"SELECT 1/0 FROM orders LIMIT 1\0"))
        .await
        .unwrap();
    assert_eq!(read_until_ready(&mut s).await.1.as_deref(), Some("22012"));
    s.write_all(&message(b'Q', b"SELECT * FROM secrets\0"))
        .await
        .unwrap();
    assert_eq!(read_until_ready(&mut s).await.1.as_deref(), Some("42501"));
    s.write_all(&message(b'Q', b"SELECT 1\0")).await.unwrap();
    assert_eq!(read_until_ready(&mut s).await.1, None);
}

/// Review finding: redefining a named statement must not change what tollgate records for it.
#[tokio::test]
async fn redefining_a_named_statement_is_refused_like_postgres() {
    let mut s = raw_login("analyst").await;
    let mut batch = Vec::new();
    batch.extend(message(b'P', b"s1\0SELECT id FROM orders LIMIT 1\0\0\0"));
    batch.extend(message(b'S', b""));
    s.write_all(&batch).await.unwrap();
    assert_eq!(read_until_ready(&mut s).await.1, None);
    let mut batch = Vec::new();
    batch.extend(message(b'P', b"s1\0SELECT 2\0\0\0"));
    batch.extend(message(b'S', b""));
    s.write_all(&batch).await.unwrap();
    assert_eq!(read_until_ready(&mut s).await.1.as_deref(), Some("42P05"));
}

/// Review finding: a client that pipelines thousands of messages without reading must neither
/// grow the gateway's memory without bound nor deadlock once it reads.
#[tokio::test]
async fn thousands_of_pipelined_syncs_without_reading() {
    let mut s = raw_login("analyst").await;
    const N: usize = 20_000;
    let batch: Vec<u8> = (0..N).flat_map(|_| message(b'S', b"")).collect();
    s.write_all(&batch).await.unwrap();
    for _ in 0..N {
        let (tag, _) = tokio::time::timeout(Duration::from_secs(20), read_message(&mut s))
            .await
            .expect("replies keep coming");
        assert_eq!(tag, b'Z');
    }
}

/// Review finding: before authentication, messages are capped like PostgreSQL's (64 KiB).
#[tokio::test]
async fn oversized_messages_before_authentication_are_refused() {
    let mut s = open().await;
    s.write_all(&startup(&[("user", "analyst"), ("database", "shop")]))
        .await
        .unwrap();
    let (tag, _) = read_message(&mut s).await;
    assert_eq!(tag, b'R');
    let mut huge = vec![b'p'];
    huge.extend_from_slice(&(10_000_000i32).to_be_bytes());
    s.write_all(&huge).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("closed promptly");
}

/// Review finding: impossible agent names are answered like a wrong token, without an exchange.
#[tokio::test]
async fn impossible_agent_names_get_28p01() {
    let mut s = open().await;
    let name = "x".repeat(5000);
    s.write_all(&startup(&[("user", &name), ("database", "shop")]))
        .await
        .unwrap();
    let (tag, body) = read_message(&mut s).await;
    assert_eq!(tag, b'E');
    assert_eq!(support::error_field(&body, b'C').as_deref(), Some("28P01"));
}

/// The SCRAM exchange offers RFC 7677's 4096 iterations to clients that may insist on them
/// (pgjdbc sends `DateStyle`, `TimeZone`, `extra_float_digits`; it refuses fewer), and the
/// login verifier's 64 to clients that send only what libpq sends (a 192-bit token gains
/// nothing from iterations, and a client connecting per transaction pays them every time).
/// Agents and unknown names alike, so the count tells nothing about a name.
#[tokio::test]
async fn scram_logins_offer_4096_iterations_unless_the_client_is_libpq_like() {
    use bytes::BytesMut;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
    use postgres_protocol::message::frontend;
    let jdbc = [("DateStyle", "ISO"), ("extra_float_digits", "2")];
    let libpq = [("application_name", "psql"), ("client_encoding", "UTF8")];
    for (user, extra, iterations) in [
        ("writer", &jdbc, ",i=4096"),
        ("no_such_agent", &jdbc, ",i=4096"),
        ("writer", &libpq, ",i=64"),
        ("no_such_agent", &libpq, ",i=64"),
    ] {
        let mut s = open().await;
        let mut params = vec![("user", user), ("database", "shop")];
        params.extend_from_slice(extra);
        s.write_all(&startup(&params)).await.unwrap();
        let (tag, _) = read_message(&mut s).await;
        assert_eq!(tag, b'R');
        let scram = ScramSha256::new(b"whatever", ChannelBinding::unsupported());
        let mut buf = BytesMut::new();
        frontend::sasl_initial_response("SCRAM-SHA-256", scram.message(), &mut buf).unwrap();
        s.write_all(&buf).await.unwrap();
        let (tag, body) = read_message(&mut s).await;
        assert_eq!(tag, b'R');
        let first = String::from_utf8_lossy(&body[4..]).into_owned();
        assert!(first.ends_with(iterations), "{user} {extra:?}: {first}");
    }
}

/// A client that sends its statements and then stops (a half-closed socket, or Terminate) is
/// answered first, as PostgreSQL answers every message read before the end: on both pool modes.
#[tokio::test]
async fn statements_sent_before_the_client_stops_are_answered() {
    for agent in ["analyst", "trusted"] {
        for terminate in [false, true] {
            let mut s = raw_login(agent).await;
            let mut batch = message(b'Q', b"SELECT 1\0");
            batch.extend(message(b'Q', b"SELECT 2\0"));
            if terminate {
                batch.extend(message(b'X', b""));
            }
            s.write_all(&batch).await.unwrap();
            s.shutdown().await.unwrap();
            let mut tags = Vec::new();
            let read_all = async {
                loop {
                    let mut head = [0u8; 5];
                    if s.read_exact(&mut head).await.is_err() {
                        return;
                    }
                    let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
                    let mut body = vec![0u8; len - 4];
                    if s.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    tags.push(head[0]);
                }
            };
            tokio::time::timeout(Duration::from_secs(10), read_all)
                .await
                .expect("the session ends once it answered");
            assert_eq!(
                String::from_utf8_lossy(&tags),
                "TDCZTDCZ",
                "{agent}, terminate: {terminate}"
            );
        }
    }
}

/// Reads until the session ends; the tags read.
async fn tags_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut tags = Vec::new();
    loop {
        let mut head = [0u8; 5];
        if s.read_exact(&mut head).await.is_err() {
            return tags;
        }
        let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        if s.read_exact(&mut body).await.is_err() {
            return tags;
        }
        tags.push(head[0]);
    }
}

fn parse_bind_execute() -> Vec<u8> {
    let mut batch = message(b'P', b"\0SELECT 1\0\0\0");
    batch.extend(message(b'B', b"\0\0\0\0\0\0\0\0"));
    batch.extend(message(b'E', b"\0\0\0\0\0"));
    batch
}

/// Parse/Bind/Execute with neither Sync nor Flush, then the client stops: PostgreSQL holds those
/// replies for a Sync that will not come, so the session ends at once, as it would direct.
#[tokio::test]
async fn a_batch_without_sync_then_a_half_close_ends_the_session_at_once() {
    for agent in ["analyst", "trusted"] {
        let mut s = raw_login(agent).await;
        s.write_all(&parse_bind_execute()).await.unwrap();
        s.shutdown().await.unwrap();
        let tags = tokio::time::timeout(Duration::from_secs(3), tags_until_closed(&mut s))
            .await
            .unwrap_or_else(|_| panic!("{agent}: the session did not end"));
        assert!(tags.is_empty(), "{agent}: {tags:?}");
    }
}

/// A COPY FROM STDIN waiting for data when the client stops: the session ends within the grace
/// (the server would wait for data forever).
#[tokio::test]
async fn a_copy_in_then_a_half_close_ends_the_session() {
    let mut s = raw_login("writer").await;
    s.write_all(&message(
        b'Q',
        b"COPY orders (customer_id, amount) FROM STDIN\0",
    ))
    .await
    .unwrap();
    let (tag, _) = read_message(&mut s).await;
    assert_eq!(tag, b'G', "CopyInResponse");
    s.shutdown().await.unwrap();
    tokio::time::timeout(
        tollgate::session::REPLY_GRACE + Duration::from_secs(3),
        tags_until_closed(&mut s),
    )
    .await
    .expect("the session ended");
}

/// Clients that leave in the middle of a batch do not keep the transaction pool: as many as the
/// pool's connections do so, and another agent is still served at once.
#[tokio::test]
async fn clients_that_leave_mid_batch_do_not_keep_the_pool() {
    for _ in 0..10 {
        let mut s = raw_login("analyst").await;
        s.write_all(&parse_bind_execute()).await.unwrap();
        drop(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut s = raw_login("writer").await;
    s.write_all(&message(b'Q', b"SELECT 1\0")).await.unwrap();
    let (tag, body) = tokio::time::timeout(Duration::from_secs(3), read_message(&mut s))
        .await
        .expect("an answer within 3 s");
    assert_eq!(
        tag,
        b'T',
        "writer refused: {:?}",
        support::error_field(&body, b'C')
    );
}

/// A client refused while it is still sending a large message reads the FATAL that says why:
/// the gateway drains what keeps coming before it closes (a close with unread bytes is a reset,
/// which failed the client's write and lost the FATAL).
#[tokio::test]
async fn a_client_refused_mid_message_reads_the_fatal() {
    let mut s = raw_login("analyst").await;
    // A Bind over `limits.max_message_bytes` (64 MiB): refused once its length is read. The
    // client goes on sending 8 MiB of it before it reads.
    let mut huge = vec![b'B'];
    huge.extend_from_slice(&(100_000_000i32).to_be_bytes());
    s.write_all(&huge).await.unwrap();
    let junk = vec![b'x'; 64 * 1024];
    for _ in 0..128 {
        s.write_all(&junk)
            .await
            .expect("the gateway drains, no reset");
    }
    let (tag, body) = read_message(&mut s).await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(tag, b'E', "{body}");
    assert!(body.contains("FATAL") && body.contains("08P01"), "{body}");
}
