//! The MongoDB door end to end, against the demo (SecantusDB behind the gateway): the Rust
//! `mongodb` driver (CRUD, cursors with getMore, aggregation, transactions, wrong token, TLS),
//! the adversarial table through a live session (each refusal names its rule, is recorded as
//! blocked, and the session stays usable), wire-level attacks (duplicate keys, bad checksums,
//! oversized and compressed messages, other sessions' cursors), and the audit chain with
//! MongoDB records in it.

mod support;

use bson::{doc, Bson, Document};
use futures_util::TryStreamExt;
use mongodb::options::ClientOptions;
use mongodb::Client;
use support::harness;
use support::mongo::{adversarial, bson_str, op_msg_with_raw_body, raw_document, RawMongo};
use tokio::io::AsyncWriteExt;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let h = harness();
    h.runtime.block_on(f)
}

async fn client(url: &str) -> Client {
    let mut opts = ClientOptions::parse(url).await.unwrap();
    opts.server_selection_timeout = Some(std::time::Duration::from_secs(15));
    Client::with_options(opts).unwrap()
}

fn refused(r: &Document, rule: &str) {
    assert!(
        matches!(r.get("ok"), Some(Bson::Double(v)) if *v == 0.0),
        "not refused: {r:?}"
    );
    let msg = r.get_str("errmsg").unwrap_or_default();
    assert!(msg.starts_with("tollgate: "), "{msg}");
    assert!(
        msg.contains(&format!("(rule: {rule}")),
        "{msg} does not name {rule}"
    );
}

#[test]
fn rust_driver_crud_cursors_aggregation_transactions() {
    let env = &harness().env;
    block_on(async {
        let analyst = client(&env.mongo_url("analyst")).await;
        let shop = analyst.database("shop");
        let customers = shop.collection::<Document>("customers");
        let c = customers
            .find_one(doc! { "_id": 1i64 })
            .await
            .unwrap()
            .unwrap();
        let email = c.get_str("email").unwrap();
        assert!(email.starts_with("***@example."), "{email}");
        assert_eq!(c.get_str("ssn").unwrap(), "REDACTED");
        // A cursor read in batches of 70: getMore on the session's own cursor, capped at 1000.
        let orders = shop.collection::<Document>("orders");
        let all: Vec<Document> = orders
            .find(doc! {})
            .batch_size(70)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(all.len(), 1000, "the analyst's max_rows");
        let grouped: Vec<Document> = customers
            .aggregate([doc! { "$group": { "_id": "$region", "n": { "$sum": 1 } } }])
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert!(!grouped.is_empty());
        let err = shop
            .collection::<Document>("secrets")
            .find_one(doc! {})
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("tollgate: no rule allows find on shop.secrets (rule: default-deny)"),
            "{text}"
        );

        let writer = client(&env.mongo_url("writer")).await;
        let w = writer.database("shop").collection::<Document>("orders");
        w.delete_many(doc! { "_id": { "$gte": 960000i64, "$lt": 960100i64 } })
            .await
            .unwrap();
        let docs: Vec<Document> = (0..20i64)
            .map(|i| doc! { "_id": 960000 + i, "amount": i as f64 })
            .collect();
        w.insert_many(docs).await.unwrap();
        w.update_one(
            doc! { "_id": 960001i64 },
            doc! { "$set": { "amount": 99.0 } },
        )
        .await
        .unwrap();
        let one = w
            .find_one(doc! { "_id": 960001i64 })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(one.get_f64("amount").unwrap(), 99.0);
        let gone = w
            .delete_many(doc! { "_id": { "$gte": 960000i64, "$lt": 960100i64 } })
            .await
            .unwrap();
        assert_eq!(gone.deleted_count, 20);

        let trusted = client(&env.mongo_url("trusted")).await;
        let t = trusted.database("shop").collection::<Document>("orders");
        let mut s = trusted.start_session().await.unwrap();
        s.start_transaction().await.unwrap();
        t.insert_one(doc! { "_id": 970000i64 })
            .session(&mut s)
            .await
            .unwrap();
        s.commit_transaction().await.unwrap();
        s.start_transaction().await.unwrap();
        t.insert_one(doc! { "_id": 970001i64 })
            .session(&mut s)
            .await
            .unwrap();
        s.abort_transaction().await.unwrap();
        assert!(t
            .find_one(doc! { "_id": 970000i64 })
            .await
            .unwrap()
            .is_some());
        assert!(t
            .find_one(doc! { "_id": 970001i64 })
            .await
            .unwrap()
            .is_none());
        t.delete_one(doc! { "_id": 970000i64 }).await.unwrap();

        let bad = env
            .mongo_url("analyst")
            .replace(env.token("analyst"), "tg_wrong");
        let err = client(&bad)
            .await
            .database("shop")
            .run_command(doc! { "ping": 1 })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("Authentication failed"), "{err}");
    });
}

#[test]
fn rust_driver_over_tls() {
    let env = &harness().env;
    block_on(async {
        let c = client(&env.mongo_tls_url("analyst")).await;
        let o = c
            .database("shop")
            .collection::<Document>("orders")
            .find_one(doc! { "_id": 3i64 })
            .await
            .unwrap();
        assert!(o.is_some());
    });
}

#[test]
fn the_adversarial_table_through_a_live_session() {
    let env = &harness().env;
    let table = adversarial();
    block_on(async {
        let mut s = RawMongo::login(env.mongo_port, "analyst", env.token("analyst")).await;
        for (name, cmd, rule) in &table {
            let r = s.command(cmd.clone()).await;
            refused(&r, rule);
            let ping = s.command(doc! { "ping": 1, "$db": "shop" }).await;
            assert_eq!(
                ping.get_f64("ok").ok(),
                Some(1.0),
                "{name}: session unusable: {ping:?}"
            );
        }
        // A policy refusal says what the agent may read instead, masks included.
        let r = s.command(doc! { "find": "secrets", "$db": "shop" }).await;
        refused(&r, "default-deny");
        let hint = r.get_str("tollgateHint").unwrap_or_default();
        assert!(
            hint.contains("shop.orders (find") && hint.contains("masked: "),
            "{r:?}"
        );
        assert!(!hint.contains("secrets"), "{r:?}");
        // A cursor of another session: opened by the writer, refused to the analyst's session.
        let mut w = RawMongo::login(env.mongo_port, "writer", env.token("writer")).await;
        let r = w
            .command(doc! { "find": "orders", "batchSize": 2, "$db": "shop" })
            .await;
        let id = r.get_document("cursor").unwrap().get_i64("id").unwrap();
        assert_ne!(id, 0);
        let stolen = s
            .command(doc! { "getMore": id, "collection": "orders", "$db": "shop" })
            .await;
        refused(&stolen, "builtin: foreign-cursor");
        // Answered as a cursor the server does not have: not told apart from a wrong id.
        assert_eq!(stolen.get_i32("code").ok(), Some(43), "{stolen:?}");
        let own = w
            .command(doc! { "getMore": id, "collection": "orders", "batchSize": 2, "$db": "shop" })
            .await;
        assert_eq!(own.get_f64("ok").ok(), Some(1.0), "{own:?}");
        // The writer's other connection continues it, as a driver's pool does (pymongo sends a
        // getMore on whichever pooled connection is free).
        let mut w2 = RawMongo::login(env.mongo_port, "writer", env.token("writer")).await;
        let pooled = w2
            .command(doc! { "getMore": id, "collection": "orders", "batchSize": 2, "$db": "shop" })
            .await;
        assert_eq!(pooled.get_f64("ok").ok(), Some(1.0), "{pooled:?}");
        let stolen = s
            .command(doc! { "getMore": id, "collection": "orders", "$db": "shop" })
            .await;
        refused(&stolen, "builtin: foreign-cursor");
        // Killing it: answered as the server answers cursors it does not have, and it lives on.
        let kill = s
            .command(doc! { "killCursors": "orders", "cursors": [id, 4242i64], "$db": "shop" })
            .await;
        assert_eq!(kill.get_f64("ok").ok(), Some(1.0), "{kill:?}");
        assert_eq!(
            kill.get_array("cursorsNotFound").unwrap(),
            &vec![Bson::Int64(id), Bson::Int64(4242)],
            "{kill:?}"
        );
        assert!(kill.get_array("cursorsKilled").unwrap().is_empty());
        let own = w
            .command(doc! { "getMore": id, "collection": "orders", "batchSize": 2, "$db": "shop" })
            .await;
        assert_eq!(own.get_f64("ok").ok(), Some(1.0), "{own:?}");
        // The owner kills it together with an id that is not its own: its own is killed (a
        // refusal of the whole command left it open).
        let kill = w
            .command(doc! { "killCursors": "orders", "cursors": [id, 4242i64], "$db": "shop" })
            .await;
        assert_eq!(kill.get_f64("ok").ok(), Some(1.0), "{kill:?}");
        assert_eq!(
            kill.get_array("cursorsKilled").unwrap(),
            &vec![Bson::Int64(id)],
            "{kill:?}"
        );
        let gone = w
            .command(doc! { "getMore": id, "collection": "orders", "$db": "shop" })
            .await;
        assert_eq!(gone.get_i32("code").ok(), Some(43), "{gone:?}");
    });
    // Every refusal above is in the audit log as blocked, under its rule.
    let log = std::fs::read_to_string(&env.audit_log).unwrap();
    let blocked: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["protocol"] == "mongodb" && v["decision"] == "blocked")
        .collect();
    for (name, _, rule) in &table {
        assert!(
            blocked.iter().any(|v| v["rule"] == *rule),
            "{name}: no blocked record under {rule}"
        );
    }
    assert!(blocked.len() >= table.len(), "{}", blocked.len());
}

#[test]
fn wire_level_attacks_are_refused_and_the_session_goes_on() {
    let env = &harness().env;
    block_on(async {
        let mut s = RawMongo::login(env.mongo_port, "analyst", env.token("analyst")).await;
        let ping = |s: &mut RawMongo| {
            let id = s.next_id();
            let m = tollgate::mongo::OpMsg::reply(0, id, &doc! { "ping": 1, "$db": "shop" })
                .encode(false);
            async move { (m, id) }
        };
        // Duplicate keys: the policy would read the first `find`, the server obey the last.
        let body = raw_document(&[
            (2, "find", bson_str(b"orders")),
            (2, "find", bson_str(b"secrets")),
            (2, "$db", bson_str(b"shop")),
        ]);
        let r = s.raw(&op_msg_with_raw_body(50, 0, &body)).await;
        refused(&r, "builtin: wire-protocol");
        assert!(r.get_str("errmsg").unwrap().contains("duplicate"), "{r:?}");
        // Invalid UTF-8 in a string.
        let body = raw_document(&[
            (2, "find", bson_str(b"ord\xffers")),
            (2, "$db", bson_str(b"shop")),
        ]);
        refused(
            &s.raw(&op_msg_with_raw_body(51, 0, &body)).await,
            "builtin: wire-protocol",
        );
        // A checksum that does not match.
        let mut m = tollgate::mongo::OpMsg::reply(0, 52, &doc! { "find": "orders", "$db": "shop" })
            .encode(true);
        let n = m.len();
        m[n - 1] ^= 0xff;
        refused(&s.raw(&m).await, "builtin: wire-protocol");
        // Unknown required flag bits.
        let body = tollgate::mongo::op_msg::encode_document(&doc! { "ping": 1, "$db": "shop" });
        refused(
            &s.raw(&op_msg_with_raw_body(53, 1 << 5, &body)).await,
            "builtin: wire-protocol",
        );
        // OP_COMPRESSED (never advertised): skipped and refused.
        let mut c = Vec::new();
        c.extend_from_slice(&40i32.to_le_bytes());
        c.extend_from_slice(&54i32.to_le_bytes());
        c.extend_from_slice(&0i32.to_le_bytes());
        c.extend_from_slice(&2012i32.to_le_bytes());
        c.resize(40, 0);
        refused(&s.raw(&c).await, "builtin: wire-protocol");
        // A length over maxMessageSizeBytes is no message's: refused at once from the header
        // and the connection closed, as mongod closes it (tollgate read the claimed length
        // through first: a header claiming 2 GiB held the connection silent; a review).
        for claimed in [48_000_000 + 1, i32::MAX as usize] {
            let mut s = RawMongo::login(env.mongo_port, "analyst", env.token("analyst")).await;
            let mut m = Vec::new();
            m.extend_from_slice(&(claimed as i32).to_le_bytes());
            m.extend_from_slice(&55i32.to_le_bytes());
            m.extend_from_slice(&0i32.to_le_bytes());
            m.extend_from_slice(&2013i32.to_le_bytes());
            let r = tokio::time::timeout(std::time::Duration::from_secs(5), s.raw(&m))
                .await
                .expect("answered at once");
            refused(&r, "builtin: wire-protocol");
            let (m, _) = ping(&mut s).await;
            s.stream.write_all(&m).await.ok();
            let mut rest = Vec::new();
            let read = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                tokio::io::AsyncReadExt::read_to_end(&mut s.stream, &mut rest),
            )
            .await
            .expect("closed");
            assert!(
                read.is_err() || rest.is_empty(),
                "no answer after it: {rest:?}"
            );
        }
    });
}

#[test]
fn unauthenticated_connections_get_only_the_handshake() {
    let env = &harness().env;
    block_on(async {
        let mut c = RawMongo::connect(env.mongo_port).await;
        let h = c.command(doc! { "hello": 1, "$db": "admin" }).await;
        assert!(
            h.get("setName").is_none() && h.get("hosts").is_none(),
            "{h:?}"
        );
        let r = c.command(doc! { "find": "orders", "$db": "shop" }).await;
        assert_eq!(r.get_i32("code").ok(), Some(13), "{r:?}");
        let r = c.try_login("analyst", "tg_wrong").await;
        assert_eq!(r.get_i32("code").ok(), Some(18), "{r:?}");
        // A message larger than the pre-authentication limit closes the connection.
        let mut big = Vec::new();
        big.extend_from_slice(&(1_000_000i32).to_le_bytes());
        big.extend_from_slice(&[0; 12]);
        c.stream.write_all(&big).await.unwrap();
        let r = c.read().await;
        assert!(
            matches!(r, Some(ref d) if d.get_i32("code").is_ok()),
            "{r:?}"
        );
        assert!(c.read().await.is_none(), "closed");
    });
}

#[test]
fn the_audit_chain_verifies_with_mongodb_records() {
    let env = &harness().env;
    block_on(async {
        let c = client(&env.mongo_url("analyst")).await;
        c.database("shop")
            .collection::<Document>("orders")
            .find_one(doc! { "_id": 9i64 })
            .await
            .unwrap();
    });
    // The flusher writes outcome records within 100 ms.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let report = tollgate::audit::verify(
        &tollgate::audit::files::order_given(std::slice::from_ref(&env.audit_log)),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(report.problem, None);
    let log = std::fs::read_to_string(&env.audit_log).unwrap();
    let find = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| {
            v["protocol"] == "mongodb"
                && v["kind"] == "decision"
                && v["statement"].as_str().is_some_and(|s| {
                    s.starts_with("find shop.orders") && s.contains("filter: {_id: ?}")
                })
        })
        .expect("a find record with its value redacted");
    assert_eq!(find["agent"], "analyst");
    assert_eq!(find["upstream"], "mongo");
}

/// A client that sends its commands and then half-closes its socket gets every reply before
/// the session ends, as a MongoDB server answers what it read before the end.
#[test]
fn commands_sent_before_a_half_close_are_answered() {
    let env = &harness().env;
    block_on(async {
        use tokio::io::AsyncWriteExt;
        let mut s = RawMongo::login(env.mongo_port, "analyst", env.token("analyst")).await;
        let mut batch = Vec::new();
        for cmd in [
            doc! { "ping": 1, "$db": "shop" },
            doc! { "find": "orders", "limit": 1, "$db": "shop" },
        ] {
            let id = s.next_id();
            batch.extend(tollgate::mongo::OpMsg::reply(0, id, &cmd).encode(false));
        }
        s.stream.write_all(&batch).await.unwrap();
        s.stream.shutdown().await.unwrap();
        let mut oks = Vec::new();
        while let Some(r) = s.read().await {
            oks.push(r.get_f64("ok").ok());
        }
        assert_eq!(oks, vec![Some(1.0), Some(1.0)]);
    });
}

/// getMores sent before the reply that cut a cursor at `max_rows` came back: their batches are
/// withheld (the cursor reported closed), not counted from 0 once tollgate had let go of it. A
/// live review pipelined 20 getMores after a `find` and read 18,100 rows past the analyst's
/// 1,000.
#[test]
fn getmores_in_flight_when_a_limit_cuts_the_cursor_deliver_nothing_more() {
    use tokio::io::AsyncWriteExt;
    let env = &harness().env;
    block_on(async {
        let mut m =
            support::mongo::RawMongo::login(env.mongo_port, "analyst", env.token("analyst")).await;
        let first = m
            .command(doc! { "find": "orders", "batchSize": 900, "$db": "shop" })
            .await;
        let cursor = first.get_document("cursor").unwrap();
        let id = cursor.get_i64("id").unwrap();
        let mut delivered = cursor.get_array("firstBatch").unwrap().len();
        assert_eq!(delivered, 900);
        let mut burst = Vec::new();
        for _ in 0..6 {
            let rid = m.next_id();
            let get_more =
                doc! { "getMore": id, "collection": "orders", "batchSize": 900, "$db": "shop" };
            burst.extend(tollgate::mongo::OpMsg::reply(0, rid, &get_more).encode(false));
        }
        m.stream.write_all(&burst).await.unwrap();
        for _ in 0..6 {
            let reply = m.read().await.expect("a reply");
            if let Ok(c) = reply.get_document("cursor") {
                delivered += c.get_array("nextBatch").map_or(0, |b| b.len());
            }
        }
        assert!(
            delivered <= 1000,
            "{delivered} documents under a max_rows of 1000"
        );
    });
}

/// A row filter on the live MongoDB-wire server: finds, counts and `$lookup` see only the
/// filtered documents; `$graphLookup` into the collection and `collStats` of it are refused,
/// since the filter cannot be applied there (the demo's server ignores
/// `restrictSearchWithMatch`: a review read every filtered-out document through it, and
/// collStats counted them).
#[test]
fn a_row_filter_holds_on_the_live_server() {
    block_on(async {
        let dir = support::tls::copy_demo(|c| c);
        let policy = dir.path().join("policies/analyst.toml");
        let text = std::fs::read_to_string(&policy).unwrap();
        let (head, tail) = text.split_at(text.find("[[mongo]]").unwrap());
        let tail = tail
            .replacen(
                "name = \"shop.orders\"\nallow = [\"read\"]\n",
                "name = \"shop.orders\"\nallow = [\"read\"]\nrow_filter = '{\"customer_id\": {\"$lt\": 100}}'\n",
                1,
            )
            .replacen(
                "upstream = \"mongo\"\n",
                "upstream = \"mongo\"\ndiagnostics = [\"collStats\"]\n",
                1,
            );
        assert!(tail.contains("row_filter"), "{tail}");
        std::fs::write(&policy, format!("{head}{tail}")).unwrap();
        let gw = support::tls::start_gateway(dir.path()).await;
        let env = &harness().env;
        let port = gw.mongo_addr.unwrap().port();
        let mut s = RawMongo::login(port, "analyst", env.token("analyst")).await;
        let hidden = s
            .command(doc! { "find": "orders", "filter": { "customer_id": { "$gte": 100 } }, "limit": 5, "$db": "shop" })
            .await;
        assert_eq!(hidden.get_f64("ok").ok(), Some(1.0), "{hidden:?}");
        let batch = hidden
            .get_document("cursor")
            .unwrap()
            .get_array("firstBatch")
            .unwrap();
        assert!(batch.is_empty(), "filtered-out orders came back: {batch:?}");
        let n = s
            .command(doc! { "count": "orders", "query": { "customer_id": { "$gte": 100 } }, "$db": "shop" })
            .await;
        assert_eq!(
            n.get_i32("n").map(i64::from).or(n.get_i64("n")).ok(),
            Some(0),
            "{n:?}"
        );
        let joined = s
            .command(doc! { "aggregate": "customers", "pipeline": [
                { "$match": { "_id": 500 } },
                { "$lookup": { "from": "orders", "localField": "_id", "foreignField": "customer_id", "as": "o" } },
                { "$project": { "o": 1 } } ], "cursor": {}, "$db": "shop" })
            .await;
        let first = joined
            .get_document("cursor")
            .unwrap()
            .get_array("firstBatch")
            .unwrap();
        let o = first[0].as_document().unwrap().get_array("o").unwrap();
        assert!(o.is_empty(), "$lookup joined filtered-out orders: {o:?}");
        for cmd in [
            doc! { "aggregate": "customers", "pipeline": [
            { "$match": { "_id": 500 } },
            { "$graphLookup": { "from": "orders", "startWith": "$_id", "connectFromField": "zz",
                "connectToField": "customer_id", "as": "o" } } ], "cursor": {}, "$db": "shop" },
            doc! { "collStats": "orders", "$db": "shop" },
        ] {
            let r = s.command(cmd.clone()).await;
            assert_eq!(r.get_f64("ok").ok(), Some(0.0), "{cmd:?}: {r:?}");
            assert!(
                r.get_str("errmsg")
                    .unwrap_or_default()
                    .contains("row filter cannot be applied"),
                "{r:?}"
            );
        }
        gw.shutdown();
    });
}
