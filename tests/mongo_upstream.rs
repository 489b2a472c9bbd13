//! Against a real MongoDB-wire server (SecantusDB, started by `demo::mongo_server`): tollgate's
//! SCRAM client logs in with the upstream user, commands round-trip through tollgate's framing
//! (OP_MSG with and without checksums, document sequences, the legacy OP_QUERY handshake), and
//! the demo seed lands.

use std::time::Duration;

use bson::{doc, Bson};
use bytes::Bytes;
use tollgate::demo::mongo_seed::seed_shop;
use tollgate::demo::mongo_server::MongoServer;
use tollgate::demo::seed::SeedOptions;
use tollgate::mongo::op_msg::{encode_document, OpMsg, Sequence};
use tollgate::mongo::op_query;
use tollgate::mongo::reply::is_error;
use tollgate::mongo::upstream::{MongoCredentials, UpstreamError};
use tollgate::mongo::wire::{MessageReader, MAX_MESSAGE_BYTES};
use tollgate::vault::Secret;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_framing_and_seed_against_a_real_server() {
    let server = MongoServer::start()
        .await
        .expect("MongoDB-wire test server");
    let mut conn = server
        .connect()
        .await
        .expect("SCRAM login as the upstream user");
    assert!(conn.facts.max_wire_version >= 6 && conn.facts.max_wire_version <= 25);
    assert!(conn.facts.logical_session_timeout_minutes.is_some());
    let who = conn
        .command(&doc! { "connectionStatus": 1, "$db": "admin" })
        .await
        .unwrap();
    let users = who
        .get_document("authInfo")
        .unwrap()
        .get_array("authenticatedUsers")
        .unwrap();
    assert_eq!(users.len(), 1, "{who}");

    // A wrong password is refused with the server's code name only.
    let wrong = MongoCredentials {
        user: Secret::new("tollgate".into()),
        password: Secret::new("not-the-password".into()),
    };
    match server
        .target()
        .connect(Some(&wrong), Duration::from_secs(10))
        .await
    {
        Err(UpstreamError::LoginRefused(code)) => assert_eq!(code, "AuthenticationFailed"),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("a wrong password logged in"),
    }
    // Without login, commands are refused by the server.
    let mut anon = server
        .target()
        .connect(None, Duration::from_secs(10))
        .await
        .unwrap();
    let r = anon
        .command(&doc! { "find": "orders", "$db": "shop" })
        .await
        .unwrap();
    assert_eq!(r.get_i32("code").ok(), Some(13), "{r}");

    // The demo seed (small sizes) through the same connection.
    let opts = SeedOptions {
        customers: 200,
        orders: 1000,
        ..SeedOptions::default()
    };
    let summary = seed_shop(&mut conn, &opts).await.expect("seed");
    assert_eq!(
        (summary.customers, summary.orders, summary.secrets),
        (200, 1000, 20)
    );
    let first = conn
        .command(&doc! { "find": "customers", "filter": { "_id": 1 }, "$db": "shop" })
        .await
        .unwrap();
    let batch = first
        .get_document("cursor")
        .unwrap()
        .get_array("firstBatch")
        .unwrap();
    let c = batch[0].as_document().unwrap();
    assert!(
        c.get_str("email").unwrap().ends_with(".com")
            || c.get_str("email").unwrap().contains("@example.")
    );

    // An insert with a kind-1 document sequence and a checksum, framed by tollgate.
    let msg = OpMsg {
        request_id: 77,
        response_to: 0,
        flags: 0,
        body: Bytes::from(encode_document(
            &doc! { "insert": "scratch", "$db": "shop" },
        )),
        sequences: vec![Sequence {
            identifier: "documents".into(),
            documents: (1..=3)
                .map(|i| Bytes::from(encode_document(&doc! { "_id": i, "v": "x" })))
                .collect(),
        }],
    };
    conn.send_raw(&msg.encode(true)).await.unwrap();
    let reply = conn.read_msg().await.unwrap();
    assert_eq!(reply.response_to, 77);
    let body = reply.body_document().unwrap();
    assert!(!is_error(&body), "{body}");
    assert_eq!(body.get_i32("n").ok(), Some(3), "{body}");
    let count = conn
        .command(&doc! { "count": "scratch", "$db": "shop" })
        .await
        .unwrap();
    assert_eq!(count.get("n"), Some(&Bson::Int32(3)), "{count}");

    // The legacy OP_QUERY handshake drivers open with: the server answers with OP_REPLY.
    let (mut stream, _) = server
        .target()
        .connect(None, Duration::from_secs(10))
        .await
        .unwrap()
        .into_parts();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(&op_query::encode_query(
            5,
            "admin.$cmd",
            &doc! { "isMaster": 1 },
        ))
        .await
        .unwrap();
    let mut buf = bytes::BytesMut::new();
    let m = loop {
        if let Some(m) = MessageReader::<&[u8]>::split_message(&mut buf, MAX_MESSAGE_BYTES).unwrap()
        {
            break m;
        }
        assert!(stream.read_buf(&mut buf).await.unwrap() > 0);
    };
    let hello = op_query::parse_reply(&m).unwrap();
    assert_eq!(m.header.response_to, 5);
    assert!(
        hello.get_bool("ismaster").unwrap_or(false)
            || hello.get_bool("isWritablePrimary").unwrap_or(false),
        "{hello}"
    );
    assert!(!hello.contains_key("setName"), "standalone: {hello}");
}

/// TLS to the upstream: verify-full against the server's CA logs in; plain TCP and a foreign CA
/// never get as far as sending the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_over_tls_verify_full() {
    use tollgate::demo::mongo_server::ServerTlsFiles;
    use tollgate::tls::dev::DevCerts;
    let dir = tempfile::tempdir().unwrap();
    DevCerts::generate()
        .unwrap()
        .write(dir.path(), false)
        .unwrap();
    let files = ServerTlsFiles {
        cert: dir.path().join("server.crt"),
        key: dir.path().join("server.key"),
        ca: dir.path().join("ca.crt"),
    };
    let server = MongoServer::start_with(Some(files))
        .await
        .expect("TLS test server");
    let mut conn = server.connect().await.expect("login over TLS");
    let r = conn
        .command(&doc! { "ping": 1, "$db": "admin" })
        .await
        .unwrap();
    assert!(!is_error(&r), "{r}");

    let mut plain = server.target();
    plain.tls = None;
    assert!(plain
        .connect(Some(&server.credentials()), Duration::from_secs(5))
        .await
        .is_err());

    let other = tempfile::tempdir().unwrap();
    DevCerts::generate()
        .unwrap()
        .write(other.path(), false)
        .unwrap();
    let mut foreign = server.target();
    foreign.tls = tollgate::tls::UpstreamTls::build(
        tollgate::tls::UpstreamTlsMode::VerifyFull,
        "127.0.0.1",
        Some(&other.path().join("ca.crt")),
        None,
    )
    .unwrap();
    match foreign
        .connect(Some(&server.credentials()), Duration::from_secs(5))
        .await
    {
        Err(UpstreamError::Tls(_)) => {}
        Err(e) => panic!("expected a TLS failure, got {e}"),
        Ok(_) => panic!("a foreign CA was trusted"),
    }
}
