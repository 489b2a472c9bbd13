//! MongoDB masking against aggregation corners a reviewer found open: commands by which the
//! `analyst` got raw masked values (`email`, `phone`, `ssn` of `shop.customers`) or an oracle on
//! them ($setField over $$ROOT, a join written inside a masked field, $top/$topN sortBy, $redact
//! at nested levels, aggregate with explain: true). Each must be refused or come back masked;
//! the test prints every one that leaked.

mod support;

use bson::{doc, Bson, Document};
use support::harness;
use support::mongo::RawMongo;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let h = harness();
    h.runtime.block_on(f)
}

fn refused(r: &Document) -> bool {
    matches!(r.get("ok"), Some(Bson::Double(v)) if *v == 0.0)
        && r.get_str("errmsg")
            .unwrap_or_default()
            .starts_with("tollgate: ")
}

/// An aggregate on shop.orders joining customers 1..=6 as `c`, then `$redact` keeping only
/// the joined customers whose raw ssn starts with `prefix`.
fn redact_oracle(prefix: &str) -> Document {
    doc! { "aggregate": "orders", "pipeline": [
        { "$limit": 1 },
        { "$lookup": { "from": "customers", "pipeline": [ { "$match": { "_id": { "$lte": 6i64 } } } ], "as": "c" } },
        { "$redact": { "$cond": { "if": { "$or": [
            { "$eq": [ { "$type": "$ssn" }, "missing" ] },
            { "$eq": [ { "$substrCP": [ "$ssn", 0, 2 ] }, prefix ] } ] },
            "then": "$$DESCEND", "else": "$$PRUNE" } } },
        { "$project": { "c._id": 1 } },
    ], "cursor": {}, "$db": "shop" }
}

#[test]
fn aggregation_corners_leak_no_masked_value_and_no_oracle() {
    let env = &harness().env;
    block_on(async {
        let mut t = RawMongo::login(env.mongo_port, "trusted", env.token("trusted")).await;
        let truth = t
            .command(
                doc! { "find": "customers", "filter": { "_id": { "$lte": 4i64 } }, "$db": "shop" },
            )
            .await;
        let raw: Vec<String> = truth
            .get_document("cursor")
            .unwrap()
            .get_array("firstBatch")
            .unwrap()
            .iter()
            .flat_map(|d| {
                let d = d.as_document().unwrap();
                ["email", "phone", "ssn"].map(|f| d.get_str(f).unwrap().to_string())
            })
            .collect();
        let mut s = RawMongo::login(env.mongo_port, "analyst", env.token("analyst")).await;
        let leaks: Vec<(&str, Document)> = vec![
            (
                "$setField on $$ROOT under $replaceRoot",
                doc! { "aggregate": "customers", "pipeline": [
                    { "$match": { "_id": 1i64 } },
                    { "$replaceRoot": { "newRoot": { "$setField": { "field": "zz", "input": "$$ROOT", "value": 1 } } } },
                ], "cursor": {}, "$db": "shop" },
            ),
            (
                "$setField on $$ROOT in a find projection",
                doc! { "find": "customers", "filter": { "_id": 2i64 },
                "projection": { "copy": { "$setField": { "field": "zz", "input": "$$ROOT", "value": 1 } } }, "$db": "shop" },
            ),
            (
                "$graphLookup as ssn.x drops the ssn mask",
                doc! { "aggregate": "customers", "pipeline": [
                    { "$match": { "_id": 3i64 } },
                    { "$graphLookup": { "from": "orders", "startWith": "$_id", "connectFromField": "customer_id",
                        "connectToField": "customer_id", "maxDepth": 0, "as": "ssn.x" } },
                ], "cursor": {}, "$db": "shop" },
            ),
            (
                "$lookup as c.ssn (c: an array of customers, after $facet) drops the masks of c",
                doc! { "aggregate": "customers", "pipeline": [
                    { "$match": { "_id": { "$lte": 4i64 } } },
                    { "$facet": { "c": [ { "$limit": 4 } ] } },
                    { "$lookup": { "from": "orders", "pipeline": [ { "$limit": 1 } ], "as": "c.ssn" } },
                    { "$lookup": { "from": "orders", "pipeline": [ { "$limit": 1 } ], "as": "c.email" } },
                    { "$lookup": { "from": "orders", "pipeline": [ { "$limit": 1 } ], "as": "c.phone" } },
                ], "cursor": {}, "$db": "shop" },
            ),
            (
                "$graphLookup as c.ssn on joined customers drops the masks of c",
                doc! { "aggregate": "orders", "pipeline": [
                    { "$limit": 1 },
                    { "$lookup": { "from": "customers", "pipeline": [ { "$match": { "_id": { "$lte": 4i64 } } } ], "as": "c" } },
                    { "$graphLookup": { "from": "orders", "startWith": "$customer_id", "connectFromField": "customer_id",
                        "connectToField": "customer_id", "maxDepth": 0, "as": "c.ssn" } },
                ], "cursor": {}, "$db": "shop" },
            ),
            (
                "$lookup as email.0 drops the email mask",
                doc! { "aggregate": "customers", "pipeline": [
                    { "$match": { "_id": 4i64 } },
                    { "$lookup": { "from": "orders", "pipeline": [ { "$limit": 1 } ], "as": "email.0" } },
                ], "cursor": {}, "$db": "shop" },
            ),
        ];
        let oracles: Vec<(&str, Document)> = vec![
            (
                "$topN sortBy ssn in $group",
                doc! { "aggregate": "customers", "pipeline": [
                    { "$match": { "_id": { "$lte": 5i64 } } },
                    { "$group": { "_id": Bson::Null, "byssn": { "$topN": { "n": 5, "sortBy": { "ssn": 1 }, "output": "$_id" } } } },
                ], "cursor": {}, "$db": "shop" },
            ),
            (
                "$top sortBy ssn against a probe value",
                doc! { "aggregate": "customers", "pipeline": [
                    { "$match": { "_id": 1i64 } },
                    { "$unionWith": { "coll": "orders", "pipeline": [ { "$limit": 1 },
                        { "$project": { "_id": { "$literal": "probe" }, "ssn": { "$literal": "500" } } } ] } },
                    { "$group": { "_id": Bson::Null, "lowest": { "$top": { "sortBy": { "ssn": 1 }, "output": "$_id" } } } },
                ], "cursor": {}, "$db": "shop" },
            ),
            (
                "$topN sortBy ssn in $setWindowFields",
                doc! { "aggregate": "customers", "pipeline": [
                    { "$match": { "_id": { "$lte": 5i64 } } },
                    { "$setWindowFields": { "output": { "r": { "$topN": { "n": 5, "sortBy": { "ssn": 1 }, "output": "$_id" } } } } },
                    { "$project": { "r": 1 } }, { "$limit": 1 },
                ], "cursor": {}, "$db": "shop" },
            ),
            (
                "$redact over joined customers (ssn starts with 97)",
                redact_oracle("97"),
            ),
        ];
        let mut failures = Vec::new();
        for (label, cmd) in leaks {
            let r = s.command(cmd).await;
            let text = format!("{r}");
            if let Some(v) = raw.iter().find(|v| text.contains(v.as_str())) {
                failures.push(format!("LEAK {label}: raw {v:?} in {text}"));
            }
        }
        for (label, cmd) in oracles {
            let r = s.command(cmd).await;
            if !refused(&r) {
                failures.push(format!("ORACLE {label}: {r}"));
            }
        }
        let r = s
            .command(
                doc! { "aggregate": "customers", "pipeline": [], "explain": true, "$db": "shop" },
            )
            .await;
        if !refused(&r) {
            failures.push("GATE aggregate explain:true runs without the explain diagnostic".into());
        }
        for f in &failures {
            println!("{f}\n");
        }
        assert!(failures.is_empty(), "{} bypasses", failures.len());
    });
}

/// Fields the policy does not read are refused before anything reaches the server (rule
/// `builtin: unknown-field`), and so are index keys of a masked collection (`returnKey`,
/// `{$meta: "indexKey"}`, a hint by name); duplicated fields and document sequences the
/// command does not take are refused too; the session goes on, and the passthrough agent's
/// unknown fields still reach the server where nothing is protected.
#[test]
fn fields_the_policy_does_not_read_never_reach_the_server() {
    let env = &harness().env;
    block_on(async {
        let mut s = RawMongo::login(env.mongo_port, "analyst", env.token("analyst")).await;
        let r = s
            .command(
                doc! { "find": "customers", "query": { "ssn": { "$regex": "^9" } }, "$db": "shop" },
            )
            .await;
        assert_eq!(
            r.get_str("errmsg").ok(),
            Some("tollgate: find: field \"query\" is not understood by the policy and is refused (rule: builtin: unknown-field)"),
            "{r:?}"
        );
        assert_eq!(r.get_i32("code").ok(), Some(238), "{r:?}");
        let masked = "(rule: analyst: collection shop.customers)";
        for (label, cmd, rule) in [
            (
                "case variant",
                doc! { "find": "customers", "Filter": { "ssn": "1" }, "$db": "shop" },
                "(rule: builtin: unknown-field)",
            ),
            (
                "rawData",
                doc! { "aggregate": "customers", "pipeline": [], "cursor": {}, "rawData": true, "$db": "shop" },
                "(rule: builtin: unknown-field)",
            ),
            (
                "returnKey",
                doc! { "find": "customers", "filter": { "_id": 1i64 }, "returnKey": true, "$db": "shop" },
                masked,
            ),
            (
                "indexKey",
                doc! { "find": "customers", "filter": { "_id": 1i64 }, "projection": { "k": { "$meta": "indexKey" } }, "$db": "shop" },
                masked,
            ),
            (
                "hint by name",
                doc! { "find": "customers", "hint": "_id_", "$db": "shop" },
                masked,
            ),
            (
                "noCursorTimeout",
                doc! { "find": "orders", "noCursorTimeout": true, "$db": "shop" },
                "(rule: builtin: passthrough-field)",
            ),
        ] {
            let r = s.command(cmd).await;
            let msg = r.get_str("errmsg").unwrap_or_default();
            assert!(
                msg.starts_with("tollgate: ") && msg.ends_with(rule),
                "{label}: {r:?}"
            );
        }
        // A duplicated field: the policy would read one filter, the server might obey the other.
        let element = |d: Document| {
            let b = d.to_vec().unwrap();
            b[4..b.len() - 1].to_vec()
        };
        let mut body = Vec::new();
        for d in [
            doc! { "find": "customers" },
            doc! { "filter": {} },
            doc! { "filter": { "ssn": { "$regex": "^9" } } },
            doc! { "$db": "shop" },
        ] {
            body.extend(element(d));
        }
        let mut doc_bytes = ((body.len() + 5) as i32).to_le_bytes().to_vec();
        doc_bytes.extend(body);
        doc_bytes.push(0);
        let id = s.next_id();
        let r = s
            .raw(&support::mongo::op_msg_with_raw_body(id, 0, &doc_bytes))
            .await;
        let msg = r.get_str("errmsg").unwrap_or_default();
        assert!(
            msg.contains("duplicate key \"filter\"")
                && msg.ends_with("(rule: builtin: wire-protocol)"),
            "{r:?}"
        );
        // A field sent as an OP_MSG document sequence.
        let id = s.next_id();
        let m = tollgate::mongo::OpMsg {
            request_id: id,
            response_to: 0,
            flags: 0,
            body: tollgate::mongo::op_msg::encode_document(
                &doc! { "find": "customers", "$db": "shop" },
            )
            .into(),
            sequences: vec![tollgate::mongo::op_msg::Sequence {
                identifier: "filter".into(),
                documents: vec![
                    tollgate::mongo::op_msg::encode_document(&doc! { "ssn": "1" }).into(),
                ],
            }],
        };
        let r = s.raw(&m.encode(false)).await;
        let msg = r.get_str("errmsg").unwrap_or_default();
        assert!(msg.contains("document sequence \"filter\""), "{r:?}");
        let ping = s.command(doc! { "ping": 1, "$db": "shop" }).await;
        assert_eq!(
            ping.get_f64("ok").ok(),
            Some(1.0),
            "session goes on: {ping:?}"
        );
        // What drivers send beside the command still runs.
        let r = s
            .command(doc! { "find": "customers", "filter": { "_id": 1i64 }, "projection": { "email": 1 },
                "hint": { "_id": 1 }, "showRecordId": true, "comment": "c", "maxTimeMS": 5000,
                "readConcern": { "level": "local" }, "singleBatch": true, "limit": 1, "$db": "shop" })
            .await;
        assert_eq!(r.get_f64("ok").ok(), Some(1.0), "{r:?}");
        let first = r
            .get_document("cursor")
            .unwrap()
            .get_array("firstBatch")
            .unwrap()[0]
            .as_document()
            .unwrap()
            .clone();
        assert!(
            first.get_str("email").unwrap().starts_with("***@"),
            "{first:?}"
        );
        // The passthrough agent's fields reach the server where nothing is protected: whatever
        // the server answers, tollgate did not refuse it.
        let mut t = RawMongo::login(env.mongo_port, "trusted", env.token("trusted")).await;
        let r = t
            .command(doc! { "find": "orders", "filter": { "_id": 1i64 }, "frobnicate": 1, "$db": "shop" })
            .await;
        assert!(
            !r.get_str("errmsg")
                .unwrap_or_default()
                .starts_with("tollgate: "),
            "{r:?}"
        );
    });
}

/// A reader of nested masked fields and a writer with write and index rights on a collection
/// with masks (the shapes a review proved open), on a second gateway of the test's own.
const NESTED_ANALYST: &str = r#"agents = ["analyst"]
[[mongo]]
upstream = "mongo"
[[mongo.collection]]
name = "shop.rv_people"
allow = ["read"]
mask = { "contacts.phone" = "redact", email = "email" }
"#;
const MASKED_WRITER: &str = r#"agents = ["writer"]
[[mongo]]
upstream = "mongo"
[[mongo.collection]]
name = "shop.rv_custcopy"
allow = ["read", "write", "index"]
mask = { email = "email", phone = "partial:4", ssn = "redact", "address.zip" = "redact" }
"#;

/// Paths through array indexes, update operators, unique indexes and the server's error
/// messages: none of them may give the raw value of a masked field, or tell it from a guess.
#[test]
fn nested_paths_writes_and_indexes_reveal_no_masked_value() {
    let env = &harness().env;
    let dir = support::copy_demo_dir();
    std::fs::write(dir.path().join("policies/analyst.toml"), NESTED_ANALYST).unwrap();
    std::fs::write(dir.path().join("policies/writer.toml"), MASKED_WRITER).unwrap();
    let served = support::served::Served::start(dir, "");
    let port = served.mongo_port();
    block_on(async {
        let mut t = RawMongo::login(env.mongo_port, "trusted", env.token("trusted")).await;
        for c in ["rv_people", "rv_custcopy"] {
            t.command(doc! { "drop": c, "$db": "shop" }).await;
        }
        let setup = [
            doc! { "insert": "rv_people", "documents": [
                { "_id": 1, "name": "Ann", "contacts": [
                    { "kind": "home", "phone": "+1-555-201-1234" }, { "kind": "work", "phone": "+1-555-777-0000" } ] },
                { "_id": 2, "name": "Bob", "contacts": [ { "kind": "home", "phone": "+1-555-909-4321" } ] },
            ], "$db": "shop" },
            doc! { "insert": "rv_custcopy", "documents": [
                { "_id": 1, "ssn": "908-77-5656", "phone": "+1-555-447-2875", "email": "ann@example.com",
                  "region": "US", "address": [ { "zip": "12345", "city": "Oslo" } ] },
                { "_id": 2, "ssn": "111-22-3333", "phone": "+1-555-000-1111", "email": "bob@example.net",
                  "region": "US" },
            ], "$db": "shop" },
            // Someone else's unique index over a masked field.
            doc! { "createIndexes": "rv_custcopy", "indexes": [
            { "key": { "phone": 1 }, "name": "uq_phone", "unique": true } ], "$db": "shop" },
        ];
        for cmd in setup {
            let r = t.command(cmd).await;
            assert_eq!(r.get_f64("ok").ok(), Some(1.0), "setup: {r:?}");
        }
        let raw = [
            "201-1234",
            "777-0000",
            "909-4321",
            "908-77-5656",
            "111-22-3333",
            "447-2875",
            "000-1111",
            "ann@",
            "bob@",
            "12345",
        ];
        let mut failures = Vec::new();
        let leak = |label: &str, r: &Document| {
            let text = format!("{r}");
            raw.iter()
                .find(|v| text.contains(*v))
                .map(|v| format!("LEAK {label}: raw {v:?} in {text}"))
        };
        let mut a = RawMongo::login(port, "analyst", env.token("analyst")).await;
        let mut w = RawMongo::login(port, "writer", env.token("writer")).await;
        let db = |mut d: Document| {
            d.insert("$db", "shop");
            d
        };
        let refusals: Vec<(&str, bool, Document)> = vec![
            (
                "regex through an array index",
                true,
                db(
                    doc! { "count": "rv_people", "query": { "_id": 1, "contacts.0.phone": { "$regex": "^\\+1-555-201" } } },
                ),
            ),
            (
                "sort through an array index",
                true,
                db(doc! { "find": "rv_people", "sort": { "contacts.0.phone": -1 } }),
            ),
            (
                "$set inside a masked field",
                false,
                db(
                    doc! { "update": "rv_custcopy", "updates": [ { "q": { "_id": 1 }, "u": { "$set": { "ssn.x": 1 } } } ] },
                ),
            ),
            (
                "$max against a masked field",
                false,
                db(
                    doc! { "update": "rv_custcopy", "updates": [ { "q": { "_id": 1 }, "u": { "$max": { "ssn": "5" } } } ] },
                ),
            ),
            (
                "$pull by regex on a masked field",
                false,
                db(
                    doc! { "update": "rv_custcopy", "updates": [ { "q": { "_id": 1 }, "u": { "$pull": { "email": { "$regex": "^a" } } } } ] },
                ),
            ),
            (
                "findAndModify $min against a masked field",
                false,
                db(
                    doc! { "findAndModify": "rv_custcopy", "query": { "_id": 2 }, "update": { "$min": { "ssn": "0" } } },
                ),
            ),
            (
                "unique index on a masked field",
                false,
                db(
                    doc! { "createIndexes": "rv_custcopy", "indexes": [ { "key": { "email": 1 }, "name": "uq_email", "unique": true } ] },
                ),
            ),
        ];
        for (label, analyst, cmd) in refusals {
            let s = if analyst { &mut a } else { &mut w };
            let r = s.command(cmd).await;
            failures.extend(leak(label, &r));
            if !refused(&r) {
                failures.push(format!("ORACLE {label}: {r}"));
            }
        }
        // distinct through an array index: masked like the field, once.
        let r = a
            .command(db(
                doc! { "distinct": "rv_people", "key": "contacts.0.phone" },
            ))
            .await;
        failures.extend(leak("distinct through an index", &r));
        // Setting a masked field to the value it holds: the server says nModified 0, which
        // would confirm a guess; every matched document is reported modified.
        let r = w
            .command(db(
                doc! { "update": "rv_custcopy", "updates": [ { "q": { "_id": 1 }, "u": { "$set": { "ssn": "908-77-5656" } } } ] },
            ))
            .await;
        if r.get_i32("nModified").ok() != Some(1) {
            failures.push(format!(
                "ORACLE $set of a masked field to its own value: {r}"
            ));
        }
        // Errors that would quote stored values: a field created inside an array holding a
        // masked field; a duplicate key in someone else's unique index over a masked field; an
        // index build over duplicates.
        for (label, cmd) in [
            (
                "Cannot create field in an array of masked values",
                db(
                    doc! { "update": "rv_custcopy", "updates": [ { "q": { "_id": 1 }, "u": { "$set": { "address.x": 1 } } } ] },
                ),
            ),
            (
                "duplicate key on a masked field",
                db(
                    doc! { "insert": "rv_custcopy", "documents": [ { "_id": 10, "phone": "+1-555-447-2875" } ] },
                ),
            ),
            (
                "index build over duplicates",
                db(
                    doc! { "createIndexes": "rv_custcopy", "indexes": [ { "key": { "region": 1 }, "name": "uq_region", "unique": true } ] },
                ),
            ),
        ] {
            let r = w.command(cmd).await;
            failures.extend(leak(label, &r));
            let text = format!("{r}");
            if !text.contains("values withheld by tollgate") || text.contains("keyValue") {
                failures.push(format!("ERROR DETAILS {label}: {text}"));
            }
        }
        for f in &failures {
            println!("{f}\n");
        }
        for c in ["rv_people", "rv_custcopy"] {
            t.command(doc! { "drop": c, "$db": "shop" }).await;
        }
        assert!(failures.is_empty(), "{} bypasses", failures.len());
    });
    drop(served);
}

/// The passthrough agent cannot replace the server's users (mongorestore's internal merge) or
/// drop the server's own databases; distinct on a masked field says nothing of how many raw
/// values there are.
#[test]
fn passthrough_keeps_off_the_servers_users_and_databases_and_distinct_tells_nothing() {
    let env = &harness().env;
    block_on(async {
        let mut t = RawMongo::login(env.mongo_port, "trusted", env.token("trusted")).await;
        for (cmd, rule) in [
            (
                doc! { "_mergeAuthzCollections": 1, "tempUsersCollection": "admin.tempusers",
                "tempRolesCollection": "", "db": "", "drop": true, "$db": "admin" },
                "(rule: builtin: admin-command)",
            ),
            (
                doc! { "authSchemaUpgrade": 1, "$db": "admin" },
                "(rule: builtin: admin-command)",
            ),
            (
                doc! { "dropDatabase": 1, "$db": "config" },
                "(rule: builtin: reserved-namespace)",
            ),
            (
                doc! { "dropDatabase": 1, "$db": "local" },
                "(rule: builtin: reserved-namespace)",
            ),
            (
                doc! { "dropDatabase": 1, "$db": "admin" },
                "(rule: builtin: reserved-namespace)",
            ),
        ] {
            let r = t.command(cmd.clone()).await;
            let msg = r.get_str("errmsg").unwrap_or_default();
            assert!(
                msg.starts_with("tollgate: ") && msg.ends_with(rule),
                "{cmd}: {r:?}"
            );
        }
        let mut a = RawMongo::login(env.mongo_port, "analyst", env.token("analyst")).await;
        let r = a
            .command(doc! { "distinct": "customers", "key": "ssn",
            "query": { "_id": { "$in": [1i64, 2i64] } }, "$db": "shop" })
            .await;
        assert_eq!(
            r.get_array("values").ok(),
            Some(&vec![Bson::from("REDACTED")]),
            "{r:?}"
        );
    });
}
