//! The per-command lists of fields: every listed command refuses a field it does not take
//! (restricted agents, and passthrough agents on protected collections) and lets through what
//! drivers send; the adversarial corners (a field inside an explained command, `returnKey`,
//! hints and `{$meta: "indexKey"}` on masked collections, case variants, duplicates, document
//! sequences, `rawData`). Pure: no server.

use bson::spec::BinarySubtype;
use bson::{doc, Binary, Bson, Document, Timestamp};

use super::decide::{decide, DecideLimits};
use super::fields::{self, PASSTHROUGH_FIELD_RULE, UNKNOWN_FIELD_RULE};
use super::rules::MongoRules;
use super::tests::{check, cmd, rules_from, Want, ANALYST, SCRIPTING, TRUSTED};
use super::Command;
use crate::refusal::RefusalClass;
use Want::*;

/// A restricted agent that may run every command tollgate knows: `shop.*` all operations,
/// JavaScript and diagnostics on, `shop.people` masked.
const OPEN: &str = r#"
[[mongo]]
upstream = "mongo"
javascript = true
diagnostics = ["explain", "collStats", "dbStats"]

[[mongo.collection]]
name = "shop.*"
allow = ["*"]

[[mongo.collection]]
name = "shop.people"
mask = { ssn = "redact" }
"#;

/// The passthrough profile with JavaScript (for mapReduce), `shop.customers` masked.
const PASSTHROUGH: &str = r#"
[[mongo]]
upstream = "mongo"
profile = "passthrough"
javascript = true

[[mongo.collection]]
name = "shop.customers"
mask = { ssn = "redact" }
"#;

fn lsid() -> Document {
    doc! { "id": Binary { subtype: BinarySubtype::Uuid, bytes: vec![7; 16] } }
}

/// One command of every listed kind, as a restricted agent with `OPEN` may send it.
fn samples() -> Vec<Document> {
    let admin = |mut d: Document| {
        d.insert("$db", "admin");
        d
    };
    vec![
        doc! { "find": "orders", "filter": { "a": 1 } },
        doc! { "aggregate": "orders", "pipeline": [ { "$match": { "a": 1 } } ], "cursor": {} },
        doc! { "count": "orders", "query": {} },
        doc! { "distinct": "orders", "key": "a" },
        doc! { "insert": "orders", "documents": [ { "_id": 1 } ] },
        doc! { "update": "orders", "updates": [ { "q": {}, "u": { "$set": { "a": 1 } } } ] },
        doc! { "delete": "orders", "deletes": [ { "q": {}, "limit": 0 } ] },
        doc! { "findAndModify": "orders", "query": {}, "remove": true },
        doc! { "findandmodify": "orders", "query": {}, "remove": true },
        doc! { "getMore": 5i64, "collection": "orders" },
        doc! { "killCursors": "orders", "cursors": [5i64] },
        doc! { "listCollections": 1 },
        admin(doc! { "listDatabases": 1 }),
        doc! { "listIndexes": "orders" },
        doc! { "create": "scratch" },
        doc! { "collMod": "scratch", "validationLevel": "off" },
        doc! { "drop": "scratch" },
        doc! { "createIndexes": "orders", "indexes": [ { "key": { "a": 1 }, "name": "a_1" } ] },
        doc! { "dropIndexes": "orders", "index": "a_1" },
        doc! { "createSearchIndexes": "orders", "indexes": [ { "name": "s", "definition": {} } ] },
        doc! { "dropSearchIndex": "orders", "name": "s" },
        doc! { "updateSearchIndex": "orders", "name": "s", "definition": {} },
        admin(doc! { "renameCollection": "shop.scratch", "to": "shop.scratch2" }),
        doc! { "explain": { "find": "orders" }, "verbosity": "queryPlanner" },
        doc! { "collStats": "orders" },
        doc! { "dbStats": 1 },
        doc! { "mapReduce": "orders", "map": "function(){}", "reduce": "function(){}", "out": { "inline": 1 } },
        doc! { "hello": 1 },
        doc! { "isMaster": 1 },
        doc! { "ismaster": 1 },
        doc! { "ping": 1 },
        doc! { "buildInfo": 1 },
        doc! { "buildinfo": 1 },
        admin(doc! { "endSessions": [ lsid() ] }),
        admin(doc! { "refreshSessions": [ lsid() ] }),
        doc! { "startSession": 1 },
        admin(
            doc! { "commitTransaction": 1, "lsid": lsid(), "txnNumber": 1i64, "autocommit": false },
        ),
        admin(
            doc! { "abortTransaction": 1, "lsid": lsid(), "txnNumber": 1i64, "autocommit": false },
        ),
        doc! { "getLastError": 1 },
        doc! { "whatsmyuri": 1 },
        doc! { "getFreeMonitoringStatus": 1 },
    ]
}

fn with(mut d: Document, key: &str, value: impl Into<Bson>) -> Document {
    d.insert(key, value);
    d
}

#[test]
fn every_listed_command_refuses_a_field_it_does_not_take() {
    let open = rules_from("open", OPEN).unwrap();
    let trusted = rules_from("trusted", PASSTHROUGH).unwrap();
    let samples = samples();
    let names: Vec<String> = samples
        .iter()
        .map(|d| d.keys().next().unwrap().clone())
        .collect();
    for listed in fields::commands() {
        assert!(names.iter().any(|n| n == listed), "no sample for {listed}");
    }
    for (name, d) in names.iter().zip(samples) {
        check(&open, &format!("{name} as sent"), d.clone(), Allow);
        check(&trusted, &format!("{name} (passthrough)"), d.clone(), Allow);
        let odd = with(d, "frobnicate", 1);
        let e = decide(&open, &cmd(odd.clone()), &DecideLimits::default())
            .expect_err(&format!("{name} + frobnicate"));
        assert_eq!(e.rule, UNKNOWN_FIELD_RULE, "{name}: {e:?}");
        assert_eq!(e.class, RefusalClass::Unsupported, "{name}");
        assert_eq!(
            e.reason,
            format!("{name}: field \"frobnicate\" is not understood by the policy and is refused")
        );
        assert!(e.instead.as_deref().unwrap().contains("takes"), "{e:?}");
        // Passthrough agents send what they like where no mask or row filter applies.
        check(
            &trusted,
            &format!("{name} + frobnicate (passthrough)"),
            odd,
            Allow,
        );
    }
}

/// A command with no list of fields runs for no restricted agent, whatever `decide` would make
/// of it: the lists are the complete set of what restricted agents may run.
#[test]
fn commands_without_a_list_are_refused_to_restricted_agents() {
    let open = rules_from("open", OPEN).unwrap();
    for name in super::builtin::KNOWN
        .iter()
        .chain(super::builtin::HOUSEKEEPING)
        .filter(|n| fields::of(n).is_none())
    {
        let e = decide(&open, &cmd(doc! { *name: 1 }), &DecideLimits::default()).expect_err(name);
        assert_eq!(e.rule, "default-deny", "{name}: {e:?}");
        assert_eq!(e.reason, format!("command \"{name}\" is not allowed"));
    }
}

/// What pymongo 4, the Node driver (and mongosh on it) and the Rust driver send, field for
/// field: session, retryable-write and transaction fields, cluster time, read preference,
/// concerns, the Stable API, cursor options, listing flags.
#[test]
fn what_drivers_send_runs() {
    let analyst = rules_from("analyst", ANALYST).unwrap();
    let cluster_time = doc! {
        "clusterTime": Timestamp { time: 1, increment: 1 },
        "signature": { "hash": Binary { subtype: BinarySubtype::Generic, bytes: vec![0; 20] }, "keyId": 0i64 },
    };
    let session = |mut d: Document| {
        d.insert("lsid", lsid());
        d.insert("$clusterTime", cluster_time.clone());
        d.insert("$readPreference", doc! { "mode": "primaryPreferred" });
        d
    };
    let rows = [
        doc! { "find": "customers", "filter": { "_id": 1 }, "limit": 1, "singleBatch": true, "batchSize": 1 },
        doc! { "find": "orders", "filter": {}, "sort": { "_id": 1 }, "projection": { "amount": 1 }, "skip": 5, "batchSize": 100, "comment": "x", "maxTimeMS": 100, "readConcern": { "level": "majority" }, "allowDiskUse": true, "collation": { "locale": "en" }, "showRecordId": true },
        doc! { "getMore": 9i64, "collection": "orders", "batchSize": 100, "maxTimeMS": 50 },
        doc! { "killCursors": "orders", "cursors": [9i64] },
        doc! { "aggregate": "orders", "pipeline": [ { "$match": {} }, { "$group": { "_id": 1, "n": { "$sum": 1 } } } ], "cursor": {} },
        doc! { "aggregate": "customers", "pipeline": [], "cursor": { "batchSize": 7 }, "allowDiskUse": false, "hint": { "_id": 1 }, "let": { "x": 1 } },
        doc! { "count": "orders", "query": { "a": 1 }, "limit": 5, "skip": 1, "hint": { "_id": 1 } },
        doc! { "distinct": "customers", "key": "region", "query": {} },
        doc! { "listCollections": 1, "cursor": {}, "nameOnly": true, "authorizedCollections": true, "filter": { "name": { "$regex": "^o" } } },
        doc! { "listDatabases": 1, "nameOnly": true, "authorizedDatabases": true, "filter": {}, "$db": "admin" },
        doc! { "listIndexes": "orders", "cursor": {} },
        doc! { "insert": "scratch1", "ordered": true, "documents": [ { "a": 1 } ], "txnNumber": 3i64, "writeConcern": { "w": "majority", "j": true, "wtimeout": 100 } },
        doc! { "update": "scratch1", "ordered": true, "updates": [ { "q": { "a": 1 }, "u": { "$set": { "b": 2 } }, "multi": false, "upsert": false, "collation": { "locale": "en" }, "hint": { "a": 1 }, "sort": { "a": 1 } } ], "txnNumber": 4i64 },
        doc! { "delete": "scratch1", "ordered": false, "deletes": [ { "q": {}, "limit": 1, "hint": "a_1" } ] },
        doc! { "findAndModify": "scratch1", "query": { "a": 1 }, "update": { "$inc": { "b": 1 } }, "new": true, "upsert": false, "fields": { "b": 1 }, "txnNumber": 5i64 },
        doc! { "explain": { "find": "orders", "filter": {} }, "verbosity": "executionStats" },
        doc! { "endSessions": [ lsid() ], "$db": "admin" },
        doc! { "commitTransaction": 1, "txnNumber": 6i64, "autocommit": false, "writeConcern": { "w": 1 }, "$db": "admin" },
        doc! { "abortTransaction": 1, "txnNumber": 6i64, "autocommit": false, "$db": "admin" },
        doc! { "find": "orders", "filter": {}, "txnNumber": 7i64, "autocommit": false, "startTransaction": true, "readConcern": { "level": "snapshot" } },
        doc! { "ping": 1, "apiVersion": "1", "apiStrict": false, "apiDeprecationErrors": false },
        doc! { "buildInfo": 1 },
    ];
    for d in rows {
        let label = d.keys().next().unwrap().clone();
        check(&analyst, &label, session(d), Allow);
    }
    // pymongo's bulk writes: the documents as OP_MSG document sequences.
    for (body, id, docs) in [
        (
            doc! { "insert": "scratch1", "ordered": true },
            "documents",
            vec![doc! { "_id": 1 }],
        ),
        (
            doc! { "update": "scratch1", "ordered": true },
            "updates",
            vec![doc! { "q": {}, "u": { "$set": { "a": 1 } }, "multi": true }],
        ),
        (
            doc! { "delete": "scratch1", "ordered": true },
            "deletes",
            vec![doc! { "q": {}, "limit": 0 }],
        ),
    ] {
        let c = Command::new(session(with(body, "$db", "shop")), vec![(id.into(), docs)]).unwrap();
        decide(&analyst, &c, &DecideLimits::default()).unwrap();
    }
}

/// Corners where a field would read around the masks (each one ran before the lists existed),
/// and the fields a passthrough agent may still send.
fn corners() -> Vec<(&'static str, &'static str, Document, Want)> {
    let (a, s, t, o) = ("analyst", "scripting", "trusted", "open");
    let unknown = UNKNOWN_FIELD_RULE;
    let masked = "collection shop.people";
    vec![
        // A server that honours `query` on find (old wire versions did) would filter by it.
        (
            a,
            "find with query",
            doc! { "find": "customers", "query": { "ssn": { "$regex": "^9" } } },
            Deny(unknown),
        ),
        (
            a,
            "explain of a find with query",
            doc! { "explain": { "find": "customers", "query": { "ssn": { "$regex": "^9" } } }, "verbosity": "executionStats" },
            Deny(unknown),
        ),
        (
            a,
            "explain of a count with a filter it does not take",
            doc! { "explain": { "count": "customers", "filter": { "ssn": "1" } } },
            Deny(unknown),
        ),
        (
            a,
            "explain with a field of its own",
            doc! { "explain": { "find": "orders" }, "filter": { "email": "x" } },
            Deny(unknown),
        ),
        (
            a,
            "explain naming another database inside",
            doc! { "explain": { "find": "orders", "$db": "billing" } },
            Deny("malformed"),
        ),
        (
            a,
            "case variant Filter",
            doc! { "find": "customers", "Filter": { "ssn": "1" } },
            Deny(unknown),
        ),
        (
            a,
            "case variant PIPELINE",
            doc! { "aggregate": "customers", "pipeline": [], "PIPELINE": [ { "$match": { "ssn": "1" } } ], "cursor": {} },
            Deny(unknown),
        ),
        (
            a,
            "rawData (time-series buckets, unmasked)",
            doc! { "find": "customers", "rawData": true },
            Deny(unknown),
        ),
        (
            a,
            "an internal field ($tenant)",
            doc! { "find": "orders", "$tenant": "x" },
            Deny(unknown),
        ),
        (
            a,
            "a cursor option that is not batchSize",
            doc! { "aggregate": "orders", "pipeline": [], "cursor": { "batchSize": 1, "exhaust": true } },
            Deny(unknown),
        ),
        (
            o,
            "an update statement field no server documents",
            doc! { "update": "orders", "updates": [ { "q": {}, "u": { "$set": { "a": 1 } }, "upsertSupplied": true } ] },
            Deny(unknown),
        ),
        (
            o,
            "a delete statement with a filter field",
            doc! { "delete": "people", "deletes": [ { "q": {}, "limit": 1, "filter": { "ssn": "1" } } ] },
            Deny(unknown),
        ),
        (
            o,
            "raw storage engine options of an index",
            doc! { "createIndexes": "orders", "indexes": [ { "key": { "a": 1 }, "name": "a", "storageEngine": { "wiredTiger": { "configString": "x" } } } ] },
            Deny(PASSTHROUGH_FIELD_RULE),
        ),
        (
            o,
            "bypassDocumentValidation",
            doc! { "insert": "orders", "documents": [ { "a": 1 } ], "bypassDocumentValidation": true },
            Deny(PASSTHROUGH_FIELD_RULE),
        ),
        (
            o,
            "noCursorTimeout",
            doc! { "find": "orders", "noCursorTimeout": true },
            Deny(PASSTHROUGH_FIELD_RULE),
        ),
        (
            o,
            "storageEngine of a collection",
            doc! { "create": "scratch", "storageEngine": { "wiredTiger": {} } },
            Deny(PASSTHROUGH_FIELD_RULE),
        ),
        // Index keys are raw values: returnKey, {$meta: "indexKey"}, and hints that order or
        // thin out documents by a masked field.
        (
            s,
            "returnKey on a masked collection",
            doc! { "find": "people", "filter": { "region": "EU" }, "returnKey": true },
            Deny(masked),
        ),
        (
            s,
            "returnKey on a collection without masks",
            doc! { "find": "orders", "returnKey": true },
            Allow,
        ),
        (
            s,
            "showRecordId on a masked collection",
            doc! { "find": "people", "showRecordId": true },
            Allow,
        ),
        (
            s,
            "indexKey in a find projection",
            doc! { "find": "people", "hint": { "region": 1 }, "projection": { "k": { "$meta": "indexKey" } } },
            Deny(masked),
        ),
        (
            s,
            "indexKey in an aggregation",
            doc! { "aggregate": "people", "pipeline": [ { "$project": { "k": { "$meta": "indexKey" } } } ], "cursor": {} },
            Deny(masked),
        ),
        (
            s,
            "indexKey where nothing is masked",
            doc! { "find": "orders", "projection": { "k": { "$meta": "indexKey" } } },
            Allow,
        ),
        (
            s,
            "hint on a masked key",
            doc! { "find": "people", "hint": { "ssn": 1 } },
            Deny(masked),
        ),
        (
            s,
            "hint by name on a masked collection",
            doc! { "find": "people", "hint": "ssn_1" },
            Deny(masked),
        ),
        (
            s,
            "hint on an unmasked key of a masked collection",
            doc! { "find": "people", "hint": { "region": 1 } },
            Allow,
        ),
        (
            s,
            "hint by name without masks",
            doc! { "find": "orders", "hint": "a_1" },
            Allow,
        ),
        (
            s,
            "count hinting a sparse index on ssn",
            doc! { "count": "people", "hint": { "ssn": 1 } },
            Deny(masked),
        ),
        (
            s,
            "distinct hinting ssn",
            doc! { "distinct": "people", "key": "region", "hint": "ssn_1" },
            Deny(masked),
        ),
        (
            s,
            "aggregate hinting ssn",
            doc! { "aggregate": "people", "pipeline": [], "hint": { "ssn": -1 }, "cursor": {} },
            Deny(masked),
        ),
        (
            s,
            "updateOne taking the lowest ssn first",
            doc! { "update": "people", "updates": [ { "q": {}, "u": { "$set": { "flag": 1 } }, "hint": { "ssn": 1 } } ] },
            Deny(masked),
        ),
        (
            s,
            "deleteOne taking the lowest ssn first",
            doc! { "delete": "people", "deletes": [ { "q": {}, "limit": 1, "hint": "ssn_1" } ] },
            Deny(masked),
        ),
        (
            s,
            "findAndModify taking the lowest ssn first",
            doc! { "findAndModify": "people", "query": {}, "update": { "$set": { "f": 1 } }, "hint": { "ssn": 1 } },
            Deny(masked),
        ),
        (
            s,
            "distinct of a masked key under a collation",
            doc! { "distinct": "people", "key": "ssn", "collation": { "locale": "en", "strength": 1 } },
            Deny(masked),
        ),
        (
            s,
            "distinct of an unmasked key under a collation",
            doc! { "distinct": "people", "key": "region", "collation": { "locale": "en", "strength": 1 } },
            Allow,
        ),
        (
            s,
            "a validator over a masked field (writes fail or not by its value)",
            doc! { "collMod": "people", "validator": { "ssn": { "$regex": "^9" } }, "validationAction": "error" },
            Deny(masked),
        ),
        (
            s,
            "a validator over unmasked fields",
            doc! { "collMod": "people", "validator": { "region": { "$exists": true } } },
            Allow,
        ),
        (
            a,
            "JavaScript in a listCollections filter",
            doc! { "listCollections": 1, "filter": { "$where": "true" } },
            Deny("javascript"),
        ),
        (
            a,
            "JavaScript in an update statement's constants",
            doc! { "update": "scratch1", "updates": [ { "q": {}, "u": [ { "$set": { "a": "$$x" } } ], "c": { "x": { "$function": { "body": "f", "args": [], "lang": "js" } } } } ] },
            Deny("javascript"),
        ),
        (
            s,
            "mapReduce out naming inline and a collection",
            doc! { "mapReduce": "orders", "map": "f", "reduce": "f", "out": { "inline": 1, "replace": "people" } },
            Deny("malformed"),
        ),
        // Passthrough: free where nothing is protected, held to the lists where it is.
        (
            t,
            "passthrough: an unknown field where nothing is protected",
            doc! { "find": "orders", "rawData": true },
            Allow,
        ),
        (
            t,
            "passthrough: bypassDocumentValidation",
            doc! { "update": "customers", "updates": [ { "q": {}, "u": { "$set": { "a": 1 } } } ], "bypassDocumentValidation": true },
            Allow,
        ),
        (
            t,
            "passthrough: an unknown field on a masked collection",
            doc! { "find": "customers", "query": { "ssn": "1" } },
            Deny(unknown),
        ),
        (
            t,
            "passthrough: rawData on a masked collection",
            doc! { "aggregate": "customers", "pipeline": [], "cursor": {}, "rawData": true },
            Deny(unknown),
        ),
        (
            t,
            "passthrough: returnKey on a masked collection",
            doc! { "find": "customers", "returnKey": true },
            Deny("trusted: collection shop.customers"),
        ),
    ]
}

#[test]
fn fields_that_would_read_around_the_masks_are_refused() {
    let rules = |agent: &str| match agent {
        "analyst" => rules_from("analyst", ANALYST).unwrap(),
        "scripting" => rules_from("scripting", SCRIPTING).unwrap(),
        "trusted" => rules_from("trusted", TRUSTED).unwrap(),
        _ => rules_from("open", OPEN).unwrap(),
    };
    for (agent, label, d, want) in corners() {
        check(&rules(agent), label, d, want);
    }
}

#[test]
fn a_case_variant_is_named_with_the_field_meant() {
    let r = rules_from("analyst", ANALYST).unwrap();
    let e = decide(
        &r,
        &cmd(doc! { "find": "orders", "Filter": {} }),
        &DecideLimits::default(),
    )
    .unwrap_err();
    assert_eq!(e.instead.as_deref(), Some("did you mean \"filter\"?"));
    let e = decide(
        &r,
        &cmd(doc! { "find": "orders", "LSID": {} }),
        &DecideLimits::default(),
    )
    .unwrap_err();
    assert_eq!(e.instead.as_deref(), Some("did you mean \"lsid\"?"));
}

/// The refusal docs/policy.md shows, word for word.
#[test]
fn the_refusal_in_the_docs() {
    let r = rules_from("analyst", ANALYST).unwrap();
    let e = decide(
        &r,
        &cmd(doc! { "find": "customers", "query": { "ssn": "123-45-6789" } }),
        &DecideLimits::default(),
    )
    .unwrap_err();
    assert_eq!(
        e.message(),
        "tollgate: find: field \"query\" is not understood by the policy and is refused (rule: builtin: unknown-field)"
    );
    assert_eq!(e.class.mongo_code(), (238, "NotImplemented"));
    assert!(e
        .instead
        .as_deref()
        .unwrap()
        .starts_with("find takes: filter, sort, projection, hint,"));
}

/// Fields in OP_MSG document sequences: only the documents of insert, update and delete, each
/// held to its statement's list; passthrough agents too on protected collections.
#[test]
fn fields_in_document_sequences() {
    let analyst = rules_from("analyst", ANALYST).unwrap();
    let trusted = rules_from("trusted", TRUSTED).unwrap();
    let seq = |body: Document, id: &str, docs: Vec<Document>| {
        Command::new(with(body, "$db", "shop"), vec![(id.into(), docs)]).unwrap()
    };
    let find_query = seq(
        doc! { "find": "customers" },
        "query",
        vec![doc! { "ssn": "1" }],
    );
    for rules in [&analyst, &trusted] {
        let e = decide(rules, &find_query, &DecideLimits::default()).unwrap_err();
        assert!(e.reason.contains("document sequence \"query\""), "{e:?}");
    }
    let odd_statement = seq(
        doc! { "update": "scratch1" },
        "updates",
        vec![doc! { "q": {}, "u": { "$set": { "a": 1 } }, "query": { "x": 1 } }],
    );
    let e = decide(&analyst, &odd_statement, &DecideLimits::default()).unwrap_err();
    assert_eq!(e.rule, UNKNOWN_FIELD_RULE);
    assert_eq!(
        e.reason,
        "update: field \"query\" of an update statement is not understood by the policy and is refused"
    );
    // Passthrough on an unprotected collection: its sequences are its own business.
    let free = seq(doc! { "find": "orders" }, "filter", vec![doc! {}]);
    assert!(decide(&trusted, &free, &DecideLimits::default()).is_ok());
}

/// Duplicate fields never reach the decision: the wire layer refuses a command document with
/// a key given twice (the policy would read one `filter`, the server might obey the other).
#[test]
fn a_duplicated_field_is_refused_before_the_decision() {
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
    let mut raw = ((body.len() + 5) as i32).to_le_bytes().to_vec();
    raw.extend(body);
    raw.push(0);
    let err = crate::mongo::bson_check::validate(&raw).unwrap_err();
    assert!(
        err.to_string().contains("duplicate key \"filter\""),
        "{err}"
    );
}

/// A refusal only ever comes from the lists where they apply: with no list for a command, a
/// passthrough agent's unknown command is judged as before.
#[test]
fn passthrough_unknown_commands_are_judged_as_before() {
    let trusted: MongoRules = rules_from("trusted", TRUSTED).unwrap();
    check(
        &trusted,
        "passthrough validate on orders",
        doc! { "validate": "orders", "full": true },
        Allow,
    );
    check(
        &trusted,
        "passthrough validate on a masked collection",
        doc! { "validate": "customers" },
        Deny("trusted: collection shop.customers"),
    );
}

/// docs/policy.md lists the same fields as the code: every command of the lists with exactly
/// its fields, the nested lists, the fields of every command, the passthrough-only ones.
#[test]
fn the_docs_list_the_fields_the_code_takes() {
    let text = include_str!("../../../docs/policy.md");
    let ticked = |cell: &str| -> Vec<String> {
        // Parenthetical remarks are prose, not fields.
        let mut plain = String::new();
        let mut depth = 0;
        for ch in cell.chars() {
            match ch {
                '(' => depth += 1,
                ')' => depth -= 1,
                c if depth == 0 => plain.push(c),
                _ => {}
            }
        }
        plain
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let owned = |l: &[&str]| sorted(l.iter().map(|s| s.to_string()).collect());
    let table = |header: &str| -> Vec<(String, Vec<String>)> {
        let start = text.find(header).expect(header);
        text[start..]
            .lines()
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').collect();
                (cells[1].to_string(), ticked(cells[2]))
            })
            .collect()
    };
    let mut documented = Vec::new();
    for (names, fields) in table("| command | fields |") {
        for name in ticked(&names) {
            let code = fields::of(&name).unwrap_or_else(|| panic!("{name} has no list"));
            assert_eq!(sorted(fields.clone()), owned(code), "{name}");
            documented.push(name);
        }
    }
    for name in fields::commands() {
        assert!(
            documented.iter().any(|d| d == name),
            "{name} not in the docs"
        );
    }
    let nested = table("| inside | fields |");
    for (key, list) in [
        ("update statement", fields::UPDATE_STATEMENT),
        ("delete statement", fields::DELETE_STATEMENT),
        ("index of `createIndexes`", fields::INDEX_SPEC),
        ("index of `createSearchIndexes`", fields::SEARCH_INDEX_SPEC),
        ("`cursor`", fields::CURSOR),
    ] {
        let row = nested.iter().find(|(k, _)| k.contains(key)).expect(key);
        assert_eq!(sorted(row.1.clone()), owned(list), "{key}");
    }
    let between = |a: &str, b: &str| {
        let i = text.find(a).expect(a) + a.len();
        let j = i + text[i..].find(b).expect(b);
        ticked(&text[i..j])
    };
    assert_eq!(
        sorted(between(
            "Every command may carry what drivers add to any\ncommand:",
            "Besides those"
        )),
        owned(fields::GENERIC)
    );
    let only: Vec<&str> = fields::PASSTHROUGH_ONLY.iter().map(|(f, _)| *f).collect();
    assert_eq!(
        sorted(between("`deletes`). ", "are for passthrough agents only")),
        owned(&only)
    );
}
