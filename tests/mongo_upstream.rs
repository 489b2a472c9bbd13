//! Against a real MongoDB-wire server (SecantusDB, started by `demo::mongo_server`): tollgate's
//! SCRAM client logs in with the upstream user, commands round-trip through tollgate's framing
//! (OP_MSG with and without checksums, document sequences, the legacy OP_QUERY handshake), and
//! the demo seed lands; and `mongo::run_one` (the MCP tools' runner) against it.

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

/// `serverStatus` counters: connections created so far, cursors open now.
async fn server_counts(conn: &mut tollgate::mongo::upstream::MongoConnection) -> (i64, i64) {
    let s = conn
        .command(&doc! { "serverStatus": 1, "$db": "admin" })
        .await
        .unwrap();
    let num = |b: Option<&Bson>| match b {
        Some(Bson::Int32(v)) => i64::from(*v),
        Some(Bson::Int64(v)) => *v,
        Some(Bson::Double(v)) => *v as i64,
        other => panic!("not a number: {other:?} in {s}"),
    };
    let created = num(s.get_document("connections").unwrap().get("totalCreated"));
    let open = num(s
        .get_document("metrics")
        .and_then(|m| m.get_document("cursor"))
        .and_then(|c| c.get_document("open"))
        .unwrap()
        .get("total"));
    (created, open)
}

/// `mongo::run_one`, as the MCP tools use it: documents masked with the plan, the policy's row
/// limit in both modes with the wire's words, the call's own row cap, the byte cap, server
/// errors, cursors killed when cut, and the idle connections it borrows and gives back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_one_masks_cuts_kills_cursors_and_reuses_connections() {
    use std::sync::Arc;
    use tollgate::mongo::run_one::{run, Caps, Cut, Masking, RunError};
    use tollgate::mongo::MongoUpstream;
    use tollgate::policy::limits::{Limits, RowLimitMode};
    use tollgate::policy::mask::MaskStrategy;
    use tollgate::policy::mongo::{Command, MaskedField, ReplyPlan};

    let server = MongoServer::start()
        .await
        .expect("MongoDB-wire test server");
    let mut admin = server.connect().await.unwrap();
    let opts = SeedOptions {
        customers: 300,
        orders: 50,
        ..SeedOptions::default()
    };
    seed_shop(&mut admin, &opts).await.expect("seed");
    let up = Arc::new(MongoUpstream::new(server.target(), server.credentials()));
    let find = |filter: bson::Document, batch: i64| {
        Command::new(
            doc! { "find": "customers", "filter": filter, "sort": { "_id": 1 }, "batchSize": batch, "$db": "shop" },
            Vec::new(),
        )
        .unwrap()
    };
    let plan = ReplyPlan::Documents(vec![MaskedField {
        path: "email".into(),
        strategy: MaskStrategy::parse("email").unwrap(),
        rule: "r".into(),
    }]);
    let masking = Masking {
        plan: &plan,
        rules: None,
        hash_key: "k",
    };
    let none = Limits::default();
    fn caps(limits: &Limits, asked_rows: Option<u64>, max_bytes: u64) -> Caps<'_> {
        Caps {
            limits,
            asked_rows,
            max_bytes,
            timeout: Duration::from_secs(20),
        }
    }
    let connect = Duration::from_secs(10);

    // Everything, in batches of 7: masked, followed to the end.
    let c = run(
        &up,
        connect,
        &find(doc! {}, 7),
        &masking,
        &caps(&none, None, 1 << 20),
    )
    .await
    .unwrap();
    assert_eq!((c.documents.len(), c.truncated.clone()), (300, None));
    assert!(c
        .documents
        .iter()
        .all(|d| d.get_str("email").unwrap().starts_with("***@")));
    assert_eq!(up.idle_connections(), 1, "given back clean");
    let (created, open) = server_counts(&mut admin).await;
    assert_eq!(open, 0);

    // The policy's row limit, truncate mode: the wire's notice; the cursor is killed.
    let mut limits = Limits {
        max_rows: Some((25, "p: limits".into())),
        ..Limits::default()
    };
    let c = run(
        &up,
        connect,
        &find(doc! {}, 7),
        &masking,
        &caps(&limits, None, 1 << 20),
    )
    .await
    .unwrap();
    assert_eq!(c.documents.len(), 25);
    assert_eq!(
        c.truncated,
        Some(Cut::PolicyRows(
            "tollgate: result truncated at 25 documents (rule: p: limits)".into()
        ))
    );
    // The call's own, smaller cap; exactly as many documents as there are is no cut.
    let c = run(
        &up,
        connect,
        &find(doc! {}, 7),
        &masking,
        &caps(&limits, Some(3), 1 << 20),
    )
    .await
    .unwrap();
    assert_eq!((c.documents.len(), c.truncated), (3, Some(Cut::AskedRows)));
    let c = run(
        &up,
        connect,
        &find(doc! { "_id": { "$lte": 25 } }, 26),
        &masking,
        &caps(&limits, None, 1 << 20),
    )
    .await
    .unwrap();
    assert_eq!((c.documents.len(), c.truncated), (25, None));
    // Refuse mode: the wire's refusal.
    limits.on_max_rows = RowLimitMode::Refuse;
    match run(
        &up,
        connect,
        &find(doc! {}, 7),
        &masking,
        &caps(&limits, None, 1 << 20),
    )
    .await
    {
        Err(RunError::Refused(r)) => assert_eq!(
            r.message(),
            "tollgate: the result has more than 25 documents (rule: p: limits)"
        ),
        other => panic!("not refused: {other:?}"),
    }
    // The byte cap: documents kept while they fit.
    let c = run(
        &up,
        connect,
        &find(doc! {}, 50),
        &masking,
        &caps(&none, None, 1000),
    )
    .await
    .unwrap();
    assert_eq!(c.truncated, Some(Cut::Bytes));
    assert!(c.bytes <= 1000 && !c.documents.is_empty(), "{}", c.bytes);
    // A server error: its code and name; the connection stays usable.
    match run(
        &up,
        connect,
        &find(doc! { "a": { "$frobnicate": 1 } }, 5),
        &masking,
        &caps(&none, None, 1 << 20),
    )
    .await
    {
        Err(RunError::Server { code, .. }) => assert_ne!(code, 0),
        other => panic!("not a server error: {other:?}"),
    }
    // Every cut killed its cursor, and every call above reused the one connection.
    let (created_after, open) = server_counts(&mut admin).await;
    assert_eq!(open, 0, "cursors left open upstream");
    assert_eq!(created_after, created, "no call logged in again");
    assert_eq!(up.idle_connections(), 1);

    // New credentials (a vault reload): the old connection is not reused.
    up.credentials.store(Arc::new(server.credentials()));
    run(
        &up,
        connect,
        &find(doc! { "_id": 1 }, 5),
        &masking,
        &caps(&none, None, 1 << 20),
    )
    .await
    .unwrap();
    let (created_last, _) = server_counts(&mut admin).await;
    assert_eq!(created_last, created_after + 1, "one new login");
    assert_eq!(up.idle_connections(), 1);

    // A call dropped with its cursor open (its MCP client went away; a timeout drops it the
    // same way) has the cursor killed from another connection; before, it stayed open upstream
    // until the server's cursor timeout.
    let docs: Vec<bson::Document> = (0..5000).map(|i| doc! { "_id": i, "k": i }).collect();
    let r = admin
        .command(&doc! { "insert": "many", "documents": docs, "$db": "shop" })
        .await
        .unwrap();
    assert_eq!(r.get_i32("n").ok(), Some(5000), "{r}");
    let watch = async { while server_counts(&mut admin).await.1 == 0 {} };
    let slow = Command::new(
        doc! { "find": "many", "filter": {}, "batchSize": 1, "$db": "shop" },
        Vec::new(),
    )
    .unwrap();
    let all = caps(&none, None, 1 << 20);

    tokio::select! {
        r = run(&up, connect, &slow, &masking, &all) => {
            panic!("the call ended before it was dropped: {:?}", r.map(|c| c.documents.len()))
        }
        () = watch => {}
    }
    no_cursor_left(&mut admin, "the call dropped mid-cursor").await;

    // A call dropped before its first reply: the server makes the cursor all the same, and
    // the reply is read to kill it (before, it stayed open). The aggregation is slow enough
    // (a join on an unindexed field) to drop the call after it was sent; a full run first
    // tells how slow.
    let joined = |n: i32| {
        Command::new(
            doc! { "aggregate": "many", "pipeline": [
                { "$limit": n },
                { "$lookup": { "from": "many", "localField": "k", "foreignField": "k", "as": "same" } },
                // Blocking: nothing is answered before the whole join is done.
                { "$sort": { "k": -1 } },
            ], "cursor": { "batchSize": 1 }, "$db": "shop" },
            Vec::new(),
        )
        .unwrap()
    };
    let mut n = 20;
    let took = loop {
        let started = std::time::Instant::now();
        let c = run(&up, connect, &joined(n), &masking, &all).await.unwrap();
        assert_eq!(c.documents.len(), n as usize);
        let took = started.elapsed();
        if took >= Duration::from_millis(300) || n >= 5000 {
            break took;
        }
        n = (n * 4).min(5000);
    };
    let slow = joined(n);
    let dropped = tokio::time::timeout(took / 4, run(&up, connect, &slow, &masking, &all)).await;
    assert!(dropped.is_err(), "the call ended before it was dropped");
    // Its reply comes after it was dropped; then its cursor is killed.
    tokio::time::sleep(took * 2).await;
    no_cursor_left(&mut admin, "the call dropped before its first reply").await;
}

/// Waits (at most 5 s) until the server has no cursor open.
async fn no_cursor_left(admin: &mut tollgate::mongo::upstream::MongoConnection, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, open) = server_counts(admin).await;
        if open == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: its cursor is still open upstream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
