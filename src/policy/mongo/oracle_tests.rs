//! Oracles over masked fields a review proved, each with the decision it must get: paths
//! spelt with array indexes or positional operators (`contacts.0.phone` under the mask
//! `contacts.phone`), update operators that read a masked value or make the server quote it,
//! unique and TTL indexes over masked fields, command-level `let` reading fields, `$geoNear`
//! without `key`; and the built-in refusals of internal and server-wide commands and of the
//! server's own databases. Pure: no server.

use bson::{doc, Document};

use super::decide::{decide, DecideLimits, ReplyPlan};
use super::rules::MongoRules;
use super::tests::{check, cmd, rules_from, Want, TRUSTED};
use Want::*;

/// A reader of nested masked fields and a writer (with index and collection rights) on a
/// collection with masks.
const REVIEW: &str = r#"
[[mongo]]
upstream = "mongo"
diagnostics = ["explain"]

[[mongo.collection]]
name = "shop.people"
allow = ["read"]
mask = { "contacts.phone" = "redact", email = "email" }

[[mongo.collection]]
name = "shop.custcopy"
allow = ["read", "write", "index", "collection"]
mask = { email = "email", phone = "partial:4", ssn = "redact", "address.zip" = "redact" }

[[mongo.collection]]
name = "shop.plain"
allow = ["*"]
"#;

/// Passthrough with nothing masked anywhere.
const OPEN: &str = r#"
[[mongo]]
upstream = "mongo"
profile = "passthrough"
"#;

const PEOPLE: &str = "collection shop.people";
const COPY: &str = "collection shop.custcopy";

fn upd(u: Document) -> Document {
    doc! { "update": "custcopy", "updates": [ { "q": { "_id": 1 }, "u": u } ] }
}

fn index(spec: Document) -> Document {
    doc! { "createIndexes": "custcopy", "indexes": [ spec ] }
}

fn rows() -> Vec<(&'static str, Document, Want)> {
    vec![
        // --- array indexes and positional operators name elements, not fields -----------------
        (
            "filter through an array index",
            doc! { "find": "people", "filter": { "_id": 1, "contacts.0.phone": { "$regex": "^\\+1" } } },
            Deny(PEOPLE),
        ),
        (
            "sort through an array index",
            doc! { "find": "people", "sort": { "contacts.0.phone": -1 } },
            Deny(PEOPLE),
        ),
        (
            "a sibling of the masked field through an index",
            doc! { "find": "people", "filter": { "contacts.0.kind": "home" }, "sort": { "contacts.1.kind": 1 } },
            Allow,
        ),
        (
            "an element holding the masked field",
            doc! { "find": "people", "filter": { "contacts.0": { "kind": "home", "phone": "x" } } },
            Deny(PEOPLE),
        ),
        (
            "hint through an array index",
            doc! { "find": "people", "hint": { "contacts.0.phone": 1 } },
            Deny(PEOPLE),
        ),
        (
            "count through an array index",
            doc! { "count": "people", "query": { "contacts.3.phone": { "$gt": "+1-5" } } },
            Deny(PEOPLE),
        ),
        (
            "group by an indexed path",
            doc! { "aggregate": "people", "pipeline": [ { "$group": { "_id": "$contacts.0.phone" } } ], "cursor": {} },
            Deny(PEOPLE),
        ),
        (
            "distinct of an element holding the masked field",
            doc! { "distinct": "people", "key": "contacts.0" },
            Deny(PEOPLE),
        ),
        (
            "unwind the masked field through an index",
            doc! { "aggregate": "people", "pipeline": [ { "$unwind": "$contacts.0.phone" } ], "cursor": {} },
            Deny(PEOPLE),
        ),
        (
            "unwind the array holding the masked field",
            doc! { "aggregate": "people", "pipeline": [ { "$unwind": "$contacts" } ], "cursor": {} },
            Allow,
        ),
        (
            "join output into an element holding masked fields",
            doc! { "aggregate": "people", "pipeline": [ { "$lookup": { "from": "plain", "pipeline": [], "as": "contacts.0" } } ], "cursor": {} },
            Deny(PEOPLE),
        ),
        (
            "join output replacing the array whole",
            doc! { "aggregate": "people", "pipeline": [ { "$lookup": { "from": "plain", "pipeline": [], "as": "contacts" } } ], "cursor": {} },
            Allow,
        ),
        // --- update operators ------------------------------------------------------------------
        (
            "$set inside a masked field (the server quotes it)",
            upd(doc! { "$set": { "ssn.x": 1 } }),
            Deny(COPY),
        ),
        (
            "$set of an element of a masked field",
            upd(doc! { "$set": { "email.0": "x" } }),
            Deny(COPY),
        ),
        (
            "$set of the whole masked field",
            upd(doc! { "$set": { "ssn": "000-00-0000" } }),
            Allow,
        ),
        (
            "$unset of the whole masked field",
            upd(doc! { "$unset": { "ssn": "" } }),
            Allow,
        ),
        (
            "$setOnInsert of the whole masked field",
            doc! { "update": "custcopy", "updates": [ { "q": { "_id": 99 }, "u": { "$setOnInsert": { "ssn": "1" } }, "upsert": true } ] },
            Allow,
        ),
        (
            "$set of a field holding a masked field",
            upd(doc! { "$set": { "address": { "zip": "1", "city": "x" } } }),
            Allow,
        ),
        (
            "$set of a masked field in every element",
            upd(doc! { "$set": { "address.$[].zip": "1" } }),
            Allow,
        ),
        (
            "$set of a masked field's subfield in every element",
            upd(doc! { "$set": { "address.$[].zip.x": "1" } }),
            Deny(COPY),
        ),
        (
            "$inc of a masked field",
            upd(doc! { "$inc": { "ssn": 1 } }),
            Deny(COPY),
        ),
        (
            "$mul of a masked field",
            upd(doc! { "$mul": { "ssn": 2 } }),
            Deny(COPY),
        ),
        (
            "$max against a masked field",
            upd(doc! { "$max": { "ssn": "5" } }),
            Deny(COPY),
        ),
        (
            "$min against a masked field",
            upd(doc! { "$min": { "ssn": "0" } }),
            Deny(COPY),
        ),
        (
            "$push to a masked field",
            upd(doc! { "$push": { "ssn": 1 } }),
            Deny(COPY),
        ),
        (
            "$pull matching a masked field",
            upd(doc! { "$pull": { "email": { "$regex": "^a" } } }),
            Deny(COPY),
        ),
        (
            "$pull matching elements by a masked subfield",
            upd(doc! { "$pull": { "address": { "zip": "12345" } } }),
            Deny(COPY),
        ),
        (
            "$pullAll of a masked field",
            upd(doc! { "$pullAll": { "email": ["a@b.c"] } }),
            Deny(COPY),
        ),
        (
            "$addToSet to a masked field",
            upd(doc! { "$addToSet": { "email": "a@b.c" } }),
            Deny(COPY),
        ),
        (
            "$pop of a masked field",
            upd(doc! { "$pop": { "email": 1 } }),
            Deny(COPY),
        ),
        (
            "$currentDate of a masked field",
            upd(doc! { "$currentDate": { "ssn": true } }),
            Deny(COPY),
        ),
        (
            "$bit of a masked field",
            upd(doc! { "$bit": { "ssn": { "and": 1 } } }),
            Deny(COPY),
        ),
        (
            "$rename of a masked field",
            upd(doc! { "$rename": { "ssn": "s" } }),
            Deny(COPY),
        ),
        (
            "$rename onto a masked field",
            upd(doc! { "$rename": { "region": "ssn" } }),
            Deny(COPY),
        ),
        (
            "$push sorting by a masked subfield",
            upd(
                doc! { "$push": { "address": { "$each": [ { "zip": "1" } ], "$sort": { "zip": 1 } } } },
            ),
            Deny(COPY),
        ),
        (
            "$push to an array holding masked fields",
            upd(doc! { "$push": { "address": { "zip": "1", "city": "x" } } }),
            Allow,
        ),
        (
            "$pop of an array holding masked fields",
            upd(doc! { "$pop": { "address": -1 } }),
            Allow,
        ),
        (
            "operators on other fields",
            upd(
                doc! { "$inc": { "visits": 1 }, "$set": { "region": "EU" }, "$push": { "tags": "x" } },
            ),
            Allow,
        ),
        (
            "a replacement document",
            upd(doc! { "name": "x", "ssn": "1" }),
            Allow,
        ),
        (
            "findAndModify $max against a masked field",
            doc! { "findAndModify": "custcopy", "query": { "_id": 3 }, "update": { "$max": { "ssn": "5" } } },
            Deny(COPY),
        ),
        (
            "findAndModify $set inside a masked field",
            doc! { "findAndModify": "custcopy", "query": { "_id": 3 }, "update": { "$set": { "phone.x": 1 } } },
            Deny(COPY),
        ),
        (
            "findAndModify $set of a masked field",
            doc! { "findAndModify": "custcopy", "query": { "_id": 3 }, "update": { "$set": { "phone": "1" } } },
            Allow,
        ),
        (
            "explain of an update setting a masked field (nWouldModify)",
            doc! { "explain": { "update": "custcopy", "updates": [ { "q": { "_id": 1 }, "u": { "$set": { "ssn": "1" } } } ] }, "verbosity": "executionStats" },
            Deny(COPY),
        ),
        (
            "explain of a findAndModify on documents with masks",
            doc! { "explain": { "findAndModify": "custcopy", "query": { "_id": 1 }, "update": { "$set": { "ssn": "1" } } } },
            Deny(COPY),
        ),
        (
            "explain of an update where nothing is masked",
            doc! { "explain": { "update": "plain", "updates": [ { "q": { "_id": 1 }, "u": { "$set": { "a": 1 } } } ] } },
            Allow,
        ),
        // --- indexes whose keys reveal raw values ----------------------------------------------
        (
            "unique index on a masked field",
            index(doc! { "key": { "phone": 1 }, "name": "uq_phone", "unique": true }),
            Deny(COPY),
        ),
        (
            "unique compound index with a masked field",
            index(doc! { "key": { "region": 1, "address.0.zip": 1 }, "name": "u", "unique": true }),
            Deny(COPY),
        ),
        (
            "prepareUnique index on a masked field",
            index(doc! { "key": { "ssn": 1 }, "name": "p", "prepareUnique": true }),
            Deny(COPY),
        ),
        (
            "TTL index on a masked field",
            index(doc! { "key": { "ssn": 1 }, "name": "t", "expireAfterSeconds": 60 }),
            Deny(COPY),
        ),
        (
            "unique index on other fields",
            index(doc! { "key": { "region": 1, "name": 1 }, "name": "u", "unique": true }),
            Allow,
        ),
        (
            "plain index on a masked field",
            index(doc! { "key": { "phone": 1 }, "name": "i", "unique": false }),
            Allow,
        ),
        (
            "collMod making an index on a masked field unique",
            doc! { "collMod": "custcopy", "index": { "keyPattern": { "phone": 1 }, "unique": true } },
            Deny(COPY),
        ),
        (
            "collMod making a named index unique",
            doc! { "collMod": "custcopy", "index": { "name": "i", "prepareUnique": true } },
            Deny(COPY),
        ),
        (
            "collMod hiding a named index",
            doc! { "collMod": "custcopy", "index": { "name": "i", "hidden": true } },
            Allow,
        ),
        (
            "collMod of a named index where nothing is masked",
            doc! { "collMod": "plain", "index": { "name": "i", "unique": true } },
            Allow,
        ),
        // --- command-level let and $geoNear ------------------------------------------------------
        (
            "let reading a masked field",
            doc! { "find": "custcopy", "filter": { "$expr": { "$eq": ["$$v", "x"] } }, "let": { "v": "$ssn" } },
            Deny("malformed"),
        ),
        (
            "let reading $$ROOT",
            doc! { "aggregate": "custcopy", "pipeline": [], "cursor": {}, "let": { "v": "$$ROOT" } },
            Deny("malformed"),
        ),
        (
            "let reading a plain field",
            doc! { "find": "plain", "let": { "v": "$region" } },
            Deny("malformed"),
        ),
        (
            "update constants reading a field",
            doc! { "update": "custcopy", "updates": [ { "q": {}, "u": [ { "$set": { "a": "$$c" } } ], "c": { "c": "$email" } } ] },
            Deny("malformed"),
        ),
        (
            "let of constants",
            doc! { "find": "custcopy", "let": { "v": { "$add": [1, 2] }, "w": "text" } },
            Allow,
        ),
        (
            "$geoNear without key on documents with masks",
            doc! { "aggregate": "custcopy", "pipeline": [ { "$geoNear": { "near": [0, 0], "distanceField": "d" } } ], "cursor": {} },
            Deny(COPY),
        ),
        (
            "$geoNear on a masked key",
            doc! { "aggregate": "custcopy", "pipeline": [ { "$geoNear": { "near": [0, 0], "distanceField": "d", "key": "address.zip" } } ], "cursor": {} },
            Deny(COPY),
        ),
        (
            "$geoNear on a plain key",
            doc! { "aggregate": "custcopy", "pipeline": [ { "$geoNear": { "near": [0, 0], "distanceField": "d", "key": "location" } } ], "cursor": {} },
            Allow,
        ),
        (
            "$geoNear without key where nothing is masked",
            doc! { "aggregate": "plain", "pipeline": [ { "$geoNear": { "near": [0, 0], "distanceField": "d" } } ], "cursor": {} },
            Allow,
        ),
    ]
}

#[test]
fn masked_fields_have_no_spelling_and_no_write_that_reveals_them() {
    let r = rules_from("review", REVIEW).unwrap();
    for (label, d, want) in rows() {
        check(&r, label, d, want);
    }
}

fn plan(rules: &MongoRules, d: Document) -> ReplyPlan {
    decide(rules, &cmd(d), &DecideLimits::default())
        .expect("allowed")
        .reply
}

#[test]
fn reply_plans_withhold_what_writes_and_distinct_could_tell() {
    let r = rules_from("review", REVIEW).unwrap();
    // distinct through an array index is masked like the field.
    assert!(
        matches!(plan(&r, doc! { "distinct": "people", "key": "contacts.0.phone" }), ReplyPlan::Values(m) if m.path == "contacts.phone")
    );
    // Writes and index changes on documents with masks: errors scrubbed, nModified counted.
    for d in [
        upd(doc! { "$set": { "ssn": "1" } }),
        doc! { "insert": "custcopy", "documents": [ { "phone": "1" } ] },
        doc! { "delete": "custcopy", "deletes": [ { "q": { "_id": 1 }, "limit": 1 } ] },
        index(doc! { "key": { "region": 1 }, "name": "r", "unique": true }),
        doc! { "collMod": "custcopy", "validationLevel": "off" },
        doc! { "aggregate": "plain", "pipeline": [ { "$merge": { "into": "custcopy" } } ], "cursor": {} },
    ] {
        assert_eq!(plan(&r, d.clone()), ReplyPlan::Writes, "{d}");
    }
    assert!(matches!(
        plan(
            &r,
            doc! { "findAndModify": "custcopy", "query": { "_id": 1 }, "update": { "$set": { "ssn": "1" } } }
        ),
        ReplyPlan::Documents(_)
    ));
    assert_eq!(
        plan(&r, doc! { "insert": "plain", "documents": [ { "a": 1 } ] }),
        ReplyPlan::None
    );
}

#[test]
fn internal_and_server_wide_commands_are_refused_to_passthrough() {
    let open = rules_from("open", OPEN).unwrap();
    let admin = |mut d: Document| {
        d.insert("$db", "admin");
        d
    };
    for (label, d) in [
        (
            "mongorestore's user merge",
            admin(
                doc! { "_mergeAuthzCollections": 1, "tempUsersCollection": "admin.tempusers", "tempRolesCollection": "", "db": "", "drop": true },
            ),
        ),
        (
            "auth schema upgrade",
            admin(doc! { "authSchemaUpgrade": 1 }),
        ),
        (
            "an internal command",
            admin(doc! { "_configsvrAddShard": "x" }),
        ),
        ("another internal command", doc! { "_killOperations": 1 }),
        (
            "write block",
            admin(doc! { "setUserWriteBlockMode": 1, "global": true }),
        ),
        (
            "query settings",
            admin(
                doc! { "setQuerySettings": { "find": "orders", "$db": "shop" }, "settings": { "reject": true } },
            ),
        ),
        ("clear the log", admin(doc! { "clearLog": "global" })),
        ("replica set step up", admin(doc! { "replSetStepUp": 1 })),
        (
            "replica set sync source",
            admin(doc! { "replSetSyncFrom": "h:1" }),
        ),
        (
            "traffic recording",
            admin(doc! { "startRecordingTraffic": 1, "filename": "x" }),
        ),
        (
            "copydb",
            admin(doc! { "copydb": 1, "fromdb": "admin", "todb": "x" }),
        ),
    ] {
        check(&open, label, d, Deny("builtin: admin-command"));
    }
    check(
        &open,
        "replica set status",
        admin(doc! { "replSetGetStatus": 1 }),
        Allow,
    );
}

#[test]
fn the_servers_own_databases_and_the_login_database_are_never_dropped() {
    let open = rules_from("open", OPEN).unwrap();
    for db in ["admin", "config", "local"] {
        check(
            &open,
            db,
            doc! { "dropDatabase": 1, "$db": db },
            Deny("builtin: reserved-namespace"),
        );
    }
    check(
        &open,
        "another database",
        doc! { "dropDatabase": 1, "$db": "scratch" },
        Allow,
    );
    check(
        &open,
        "a database-level command on config",
        doc! { "someNewCommand": 1, "$db": "config" },
        Deny("builtin: reserved-namespace"),
    );
    let trusted = rules_from("trusted", TRUSTED).unwrap();
    check(
        &trusted,
        "dbStats of local",
        doc! { "dbStats": 1, "$db": "local" },
        Deny("builtin: reserved-namespace"),
    );
    // The database the vaulted user is defined in (authSource) holds that user.
    let limits = DecideLimits {
        login_db: Some("users".into()),
        ..DecideLimits::default()
    };
    let r = decide(
        &open,
        &cmd(doc! { "dropDatabase": 1, "$db": "users" }),
        &limits,
    )
    .unwrap_err();
    assert_eq!(r.rule, "builtin: vault-login");
    assert!(r
        .message()
        .starts_with("tollgate: dropDatabase of users is refused"));
    assert!(decide(
        &open,
        &cmd(doc! { "dropDatabase": 1, "$db": "scratch" }),
        &limits
    )
    .is_ok());
}
