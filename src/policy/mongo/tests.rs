//! The adversarial policy suite: commands an agent might send (bypasses through sub-pipelines,
//! `$out`/`$merge`, JavaScript, oracles over masked fields, admin commands, BSON pitfalls),
//! each with the decision it must get. Pure: no server.

use std::path::Path;

use bson::{doc, Bson, Document};
use serde::Deserialize;

use super::compile::{merge, validate};
use super::decide::{decide, DecideLimits, ReplyPlan};
use super::file::MongoBlock;
use super::rules::MongoRules;
use super::Command;
use crate::auth::AgentStore;
use crate::policy::PolicyContext;
use crate::refusal::RefusalClass;

#[derive(Deserialize)]
struct Only {
    mongo: Vec<MongoBlock>,
}

pub(super) fn rules_from(stem: &str, text: &str) -> Result<MongoRules, String> {
    let parsed: Only = toml::from_str(text).map_err(|e| e.to_string())?;
    let agents = AgentStore::default();
    let ctx = PolicyContext::for_upstreams(
        &agents,
        [
            (
                "mongo".to_string(),
                crate::config::UpstreamKind::Mongodb,
                Vec::new(),
            ),
            (
                "shop".to_string(),
                crate::config::UpstreamKind::Postgres,
                Vec::new(),
            ),
        ],
    );
    validate(
        Path::new(&format!("{stem}.toml")),
        text,
        &parsed.mongo,
        &ctx,
    )
    .map_err(|e| e.to_string())?;
    let mut r = MongoRules::default();
    for b in &parsed.mongo {
        merge(&mut r, stem, b);
    }
    Ok(r)
}

pub(super) const ANALYST: &str = r#"
[[mongo]]
upstream = "mongo"
diagnostics = ["$collStats", "explain"]

[[mongo.collection]]
name = "shop.orders"
allow = ["read"]

[[mongo.collection]]
name = "shop.customers"
allow = ["read"]
mask = { email = "email", phone = "partial:4", ssn = "redact", "address.zip" = "redact" }

[[mongo.collection]]
name = "shop.eu_customers"
allow = ["read", "write"]
row_filter = '{"region": "EU"}'

[[mongo.collection]]
name = "shop.scratch*"
allow = ["*"]
"#;

const WRITER: &str = r#"
[[mongo]]
upstream = "mongo"

[[mongo.collection]]
name = "shop.orders"
allow = ["read", "write"]

[[mongo.collection]]
name = "shop.customers"
allow = ["read"]
mask = { email = "email" }
"#;

pub(super) const TRUSTED: &str = r#"
[[mongo]]
upstream = "mongo"
profile = "passthrough"

[[mongo.collection]]
name = "shop.customers"
mask = { ssn = "redact" }

[[mongo.collection]]
name = "shop.audit"
deny = ["*"]
"#;

pub(super) const SCRIPTING: &str = r#"
[[mongo]]
upstream = "mongo"
javascript = true

[[mongo.collection]]
name = "shop.*"
allow = ["*"]

[[mongo.collection]]
name = "shop.people"
mask = { ssn = "redact" }
"#;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Want {
    Allow,
    /// Refused; the rule contains this text.
    Deny(&'static str),
}
use Want::*;

pub(super) fn cmd(mut d: Document) -> Command {
    if !d.contains_key("$db") {
        d.insert("$db", "shop");
    }
    Command::new(d, Vec::new()).expect("well-formed")
}

pub(super) fn check(rules: &MongoRules, label: &str, d: Document, want: Want) {
    let got = decide(rules, &cmd(d.clone()), &DecideLimits::default());
    match (want, got) {
        (Allow, Ok(_)) => {}
        (Deny(rule), Err(r)) => {
            assert!(
                r.rule.contains(rule),
                "{label}: refused by \"{}\" ({}), expected rule containing \"{rule}\"\n{d}",
                r.rule,
                r.reason
            );
            assert!(r.message().starts_with("tollgate: "), "{label}");
        }
        (Allow, Err(r)) => panic!(
            "{label}: refused ({}: {}) but should run\n{d}",
            r.rule, r.reason
        ),
        (Deny(rule), Ok(j)) => {
            panic!("{label}: allowed ({j:?}) but should be refused by {rule}\n{d}")
        }
    }
}

fn table() -> Vec<(&'static str, &'static str, Document, Want)> {
    let a = "analyst";
    let w = "writer";
    let t = "trusted";
    let s = "scripting";
    let mask = "collection shop.customers";
    vec![
        // --- plain reads and writes, default deny ---------------------------------------------
        (
            a,
            "find orders",
            doc! { "find": "orders", "filter": { "amount": { "$gt": 10 } } },
            Allow,
        ),
        (
            a,
            "find customers (masked on the way out)",
            doc! { "find": "customers", "filter": { "region": "EU" } },
            Allow,
        ),
        (
            a,
            "find secrets",
            doc! { "find": "secrets" },
            Deny("default-deny"),
        ),
        (
            a,
            "count orders",
            doc! { "count": "orders", "query": {} },
            Allow,
        ),
        (
            a,
            "distinct region",
            doc! { "distinct": "customers", "key": "region" },
            Allow,
        ),
        (
            a,
            "distinct email (values masked)",
            doc! { "distinct": "customers", "key": "email" },
            Allow,
        ),
        (
            a,
            "insert orders",
            doc! { "insert": "orders", "documents": [ { "_id": 1 } ] },
            Deny("default-deny"),
        ),
        (
            a,
            "update orders",
            doc! { "update": "orders", "updates": [ { "q": {}, "u": { "$set": { "a": 1 } } } ] },
            Deny("default-deny"),
        ),
        (
            a,
            "delete orders",
            doc! { "delete": "orders", "deletes": [ { "q": {}, "limit": 0 } ] },
            Deny("default-deny"),
        ),
        (
            a,
            "findAndModify orders",
            doc! { "findAndModify": "orders", "query": {}, "remove": true },
            Deny("default-deny"),
        ),
        (
            a,
            "drop orders",
            doc! { "drop": "orders" },
            Deny("default-deny"),
        ),
        (
            a,
            "createIndexes orders",
            doc! { "createIndexes": "orders", "indexes": [] },
            Deny("default-deny"),
        ),
        (
            a,
            "scratch anything",
            doc! { "insert": "scratch1", "documents": [ { "a": 1 } ] },
            Allow,
        ),
        (
            a,
            "other database",
            doc! { "find": "orders", "$db": "billing" },
            Deny("default-deny"),
        ),
        (
            a,
            "listIndexes orders",
            doc! { "listIndexes": "orders" },
            Allow,
        ),
        (
            a,
            "listIndexes secrets",
            doc! { "listIndexes": "secrets" },
            Deny("default-deny"),
        ),
        (
            a,
            "listCollections",
            doc! { "listCollections": 1, "nameOnly": true },
            Allow,
        ),
        (
            a,
            "listDatabases",
            doc! { "listDatabases": 1, "$db": "admin" },
            Allow,
        ),
        (
            a,
            "unknown command",
            doc! { "frobnicate": "orders" },
            Deny("default-deny"),
        ),
        (
            w,
            "writer inserts orders",
            doc! { "insert": "orders", "documents": [ { "_id": 1 } ] },
            Allow,
        ),
        (
            w,
            "writer updates orders",
            doc! { "update": "orders", "updates": [ { "q": { "_id": 1 }, "u": { "$inc": { "amount": 1 } } } ] },
            Allow,
        ),
        (
            w,
            "writer deletes orders",
            doc! { "delete": "orders", "deletes": [ { "q": { "_id": 1 }, "limit": 1 } ] },
            Allow,
        ),
        (
            w,
            "writer findAndModify orders",
            doc! { "findAndModify": "orders", "query": { "_id": 1 }, "update": { "$set": { "x": 1 } } },
            Allow,
        ),
        (
            w,
            "writer inserts customers",
            doc! { "insert": "customers", "documents": [ { "_id": 1 } ] },
            Deny("default-deny"),
        ),
        (
            w,
            "writer drops orders",
            doc! { "drop": "orders" },
            Deny("default-deny"),
        ),
        // --- sub-pipelines need read access to what they name ---------------------------------
        (
            a,
            "lookup into secrets",
            doc! { "aggregate": "orders", "pipeline": [ { "$lookup": { "from": "secrets", "localField": "k", "foreignField": "_id", "as": "s" } } ], "cursor": {} },
            Deny("default-deny"),
        ),
        (
            a,
            "lookup pipeline into secrets",
            doc! { "aggregate": "orders", "pipeline": [ { "$lookup": { "from": "secrets", "pipeline": [], "as": "s" } } ], "cursor": {} },
            Deny("default-deny"),
        ),
        (
            a,
            "nested lookup into secrets",
            doc! { "aggregate": "orders", "pipeline": [ { "$lookup": { "from": "customers", "pipeline": [ { "$lookup": { "from": "secrets", "pipeline": [], "as": "x" } } ], "as": "c" } } ], "cursor": {} },
            Deny("default-deny"),
        ),
        (
            a,
            "unionWith secrets",
            doc! { "aggregate": "orders", "pipeline": [ { "$unionWith": "secrets" } ], "cursor": {} },
            Deny("default-deny"),
        ),
        (
            a,
            "unionWith doc secrets",
            doc! { "aggregate": "orders", "pipeline": [ { "$unionWith": { "coll": "secrets", "pipeline": [] } } ], "cursor": {} },
            Deny("default-deny"),
        ),
        (
            a,
            "graphLookup secrets",
            doc! { "aggregate": "orders", "pipeline": [ { "$graphLookup": { "from": "secrets", "startWith": "$k", "connectFromField": "a", "connectToField": "b", "as": "g" } } ], "cursor": {} },
            Deny("default-deny"),
        ),
        (
            a,
            "facet hiding a lookup",
            doc! { "aggregate": "orders", "pipeline": [ { "$facet": { "x": [ { "$lookup": { "from": "secrets", "pipeline": [], "as": "s" } } ] } } ], "cursor": {} },
            Deny("default-deny"),
        ),
        (
            a,
            "facet hiding unionWith",
            doc! { "aggregate": "orders", "pipeline": [ { "$facet": { "x": [ { "$unionWith": "secrets" } ] } } ], "cursor": {} },
            Deny("default-deny"),
        ),
        (
            a,
            "lookup other database",
            doc! { "aggregate": "orders", "pipeline": [ { "$lookup": { "from": { "db": "billing", "coll": "cards" }, "pipeline": [], "as": "c" } } ], "cursor": {} },
            Deny("default-deny"),
        ),
        (
            a,
            "lookup into local oplog",
            doc! { "aggregate": "orders", "pipeline": [ { "$lookup": { "from": { "db": "local", "coll": "oplog.rs" }, "pipeline": [], "as": "o" } } ], "cursor": {} },
            Deny("reserved-namespace"),
        ),
        (
            a,
            "lookup orders into customers allowed",
            doc! { "aggregate": "orders", "pipeline": [ { "$lookup": { "from": "customers", "localField": "customer_id", "foreignField": "_id", "as": "c" } } ], "cursor": {} },
            Allow,
        ),
        (
            a,
            "unionWith customers allowed",
            doc! { "aggregate": "orders", "pipeline": [ { "$unionWith": "customers" } ], "cursor": {} },
            Allow,
        ),
        (
            a,
            "deep sub-pipelines",
            doc! { "aggregate": "orders", "pipeline": [ deep_facet(20) ], "cursor": {} },
            Deny("not-understood"),
        ),
        // --- $out / $merge need write access ----------------------------------------------------
        (
            a,
            "$out to orders",
            doc! { "aggregate": "orders", "pipeline": [ { "$out": "orders" } ], "cursor": {} },
            Deny("default-deny"),
        ),
        (
            a,
            "$out to secrets",
            doc! { "aggregate": "orders", "pipeline": [ { "$out": "secrets" } ], "cursor": {} },
            Deny("default-deny"),
        ),
        (
            a,
            "$out to other db",
            doc! { "aggregate": "orders", "pipeline": [ { "$out": { "db": "admin", "coll": "system.users" } } ], "cursor": {} },
            Deny("reserved-namespace"),
        ),
        (
            a,
            "$merge into orders",
            doc! { "aggregate": "orders", "pipeline": [ { "$merge": { "into": "orders" } } ], "cursor": {} },
            Deny("default-deny"),
        ),
        (
            a,
            "$merge string",
            doc! { "aggregate": "orders", "pipeline": [ { "$merge": "orders" } ], "cursor": {} },
            Deny("default-deny"),
        ),
        (
            a,
            "$out to scratch from orders",
            doc! { "aggregate": "orders", "pipeline": [ { "$out": "scratch_copy" } ], "cursor": {} },
            Allow,
        ),
        (
            a,
            "$out of masked customers to scratch",
            doc! { "aggregate": "customers", "pipeline": [ { "$out": "scratch_copy" } ], "cursor": {} },
            Deny(mask),
        ),
        (
            a,
            "$merge of joined masked fields",
            doc! { "aggregate": "orders", "pipeline": [ { "$lookup": { "from": "customers", "localField": "customer_id", "foreignField": "_id", "as": "c" } }, { "$merge": { "into": "scratch_x" } } ], "cursor": {} },
            Deny(mask),
        ),
        (
            a,
            "$out after $project away masked still refused",
            doc! { "aggregate": "customers", "pipeline": [ { "$project": { "name": 1 } }, { "$out": "scratch_y" } ], "cursor": {} },
            Deny(mask),
        ),
        (
            a,
            "$out after $group (no masked refs) allowed",
            doc! { "aggregate": "customers", "pipeline": [ { "$group": { "_id": "$region", "n": { "$sum": 1 } } }, { "$out": "scratch_z" } ], "cursor": {} },
            Allow,
        ),
        (
            a,
            "$out not last",
            doc! { "aggregate": "orders", "pipeline": [ { "$facet": { "a": [ { "$out": "scratch_q" } ] } } ], "cursor": {} },
            Allow,
        ),
        // --- JavaScript -------------------------------------------------------------------------
        (
            a,
            "$where",
            doc! { "find": "orders", "filter": { "$where": "sleep(1000) || true" } },
            Deny("builtin: javascript"),
        ),
        (
            a,
            "$where in $or",
            doc! { "find": "orders", "filter": { "$or": [ { "a": 1 }, { "$where": "true" } ] } },
            Deny("builtin: javascript"),
        ),
        (
            a,
            "$where in $elemMatch",
            doc! { "find": "orders", "filter": { "items": { "$elemMatch": { "$where": "true" } } } },
            Deny("builtin: javascript"),
        ),
        (
            a,
            "$function",
            doc! { "aggregate": "orders", "pipeline": [ { "$project": { "x": { "$function": { "body": "function(){return 1}", "args": [], "lang": "js" } } } } ], "cursor": {} },
            Deny("builtin: javascript"),
        ),
        (
            a,
            "$function in $expr",
            doc! { "find": "orders", "filter": { "$expr": { "$function": { "body": "function(){return true}", "args": [], "lang": "js" } } } },
            Deny("builtin: javascript"),
        ),
        (
            a,
            "$accumulator",
            doc! { "aggregate": "orders", "pipeline": [ { "$group": { "_id": null, "x": { "$accumulator": { "init": "function(){}", "accumulate": "function(){}", "accumulateArgs": [], "merge": "function(){}", "lang": "js" } } } } ], "cursor": {} },
            Deny("builtin: javascript"),
        ),
        (
            a,
            "mapReduce",
            doc! { "mapReduce": "orders", "map": "function(){}", "reduce": "function(){}", "out": { "inline": 1 } },
            Deny("builtin: javascript"),
        ),
        (
            a,
            "JavaScript code value in filter",
            doc! { "find": "orders", "filter": { "$expr": { "$eq": [ Bson::JavaScriptCode("1".into()), 1 ] } } },
            Deny("builtin: javascript"),
        ),
        (
            s,
            "$where when javascript = true",
            doc! { "find": "orders", "filter": { "$where": "true" } },
            Allow,
        ),
        (
            s,
            "mapReduce when javascript = true",
            doc! { "mapReduce": "orders", "map": "function(){}", "reduce": "function(){}", "out": { "inline": 1 } },
            Allow,
        ),
        (
            s,
            "eval is never allowed",
            doc! { "eval": "db.dropDatabase()" },
            Deny("builtin: admin-command"),
        ),
        // --- masked-field oracles ---------------------------------------------------------------
        (
            a,
            "$regex on email",
            doc! { "find": "customers", "filter": { "email": { "$regex": "^a" } } },
            Deny(mask),
        ),
        (
            a,
            "equality on ssn",
            doc! { "find": "customers", "filter": { "ssn": "900-01-0001" } },
            Deny(mask),
        ),
        (
            a,
            "range on phone",
            doc! { "count": "customers", "query": { "phone": { "$gt": "+1-555-5" } } },
            Deny(mask),
        ),
        (
            a,
            "$in on ssn via $and",
            doc! { "find": "customers", "filter": { "$and": [ { "region": "EU" }, { "ssn": { "$in": ["1"] } } ] } },
            Deny(mask),
        ),
        (
            a,
            "parent of masked path",
            doc! { "find": "customers", "filter": { "address": { "zip": "12345" } } },
            Deny(mask),
        ),
        (
            a,
            "child of masked path",
            doc! { "find": "customers", "filter": { "address.zip.0": "1" } },
            Deny(mask),
        ),
        (
            a,
            "$exists on email (allowed? no: shapes result)",
            doc! { "find": "customers", "filter": { "email": { "$exists": true } } },
            Deny(mask),
        ),
        (
            a,
            "$sort by email",
            doc! { "find": "customers", "sort": { "email": 1 } },
            Deny(mask),
        ),
        (
            a,
            "$sort stage by ssn",
            doc! { "aggregate": "customers", "pipeline": [ { "$sort": { "ssn": 1 } } ], "cursor": {} },
            Deny(mask),
        ),
        (
            a,
            "$group by email",
            doc! { "aggregate": "customers", "pipeline": [ { "$group": { "_id": "$email", "n": { "$sum": 1 } } } ], "cursor": {} },
            Deny(mask),
        ),
        (
            a,
            "$group $first of ssn",
            doc! { "aggregate": "customers", "pipeline": [ { "$group": { "_id": null, "s": { "$first": "$ssn" } } } ], "cursor": {} },
            Deny(mask),
        ),
        (
            a,
            "$concat of email",
            doc! { "aggregate": "customers", "pipeline": [ { "$project": { "x": { "$concat": ["$email", ""] } } } ], "cursor": {} },
            Deny(mask),
        ),
        (
            a,
            "rename email via $project",
            doc! { "aggregate": "customers", "pipeline": [ { "$project": { "e": "$email" } } ], "cursor": {} },
            Deny(mask),
        ),
        (
            a,
            "rename email via find projection",
            doc! { "find": "customers", "projection": { "e": "$email" } },
            Deny(mask),
        ),
        (
            a,
            "$addFields copy",
            doc! { "aggregate": "customers", "pipeline": [ { "$addFields": { "copy": "$phone" } } ], "cursor": {} },
            Deny(mask),
        ),
        (
            a,
            "$getField short form",
            doc! { "aggregate": "customers", "pipeline": [ { "$project": { "x": { "$getField": "email" } } } ], "cursor": {} },
            Deny(mask),
        ),
        (
            a,
            "$getField on $$ROOT",
            doc! { "aggregate": "customers", "pipeline": [ { "$project": { "x": { "$getField": { "field": "ssn", "input": "$$ROOT" } } } } ], "cursor": {} },
            Deny(mask),
        ),
        (
            a,
            "$getField computed name",
            doc! { "aggregate": "customers", "pipeline": [ { "$project": { "x": { "$getField": { "field": { "$concat": ["em", "ail"] }, "input": "$$CURRENT" } } } } ], "cursor": {} },
            Deny(mask),
        ),
        (
            a,
            "$objectToArray $$ROOT",
            doc! { "aggregate": "customers", "pipeline": [ { "$project": { "x": { "$objectToArray": "$$ROOT" } } } ], "cursor": {} },
            Deny(mask),
        ),
        (
            a,
            "$replaceRoot to a built doc",
            doc! { "aggregate": "customers", "pipeline": [ { "$replaceRoot": { "newRoot": { "e": "$email" } } } ], "cursor": {} },
            Deny(mask),
        ),
        (
            a,
            "$replaceRoot on parent of masked",
            doc! { "aggregate": "customers", "pipeline": [ { "$replaceRoot": { "newRoot": "$address" } } ], "cursor": {} },
            Deny(mask),
        ),
        (
            a,
            "$replaceWith $$ROOT",
            doc! { "aggregate": "customers", "pipeline": [ { "$replaceWith": { "$mergeObjects": ["$$ROOT", {}] } } ], "cursor": {} },
            Deny(mask),
        ),
        (
            a,
            "$push $$ROOT",
            doc! { "aggregate": "customers", "pipeline": [ { "$group": { "_id": null, "all": { "$push": "$$ROOT" } } } ], "cursor": {} },
            Deny(mask),
        ),
        (
            a,
            "$expr comparing ssn",
            doc! { "find": "customers", "filter": { "$expr": { "$lt": ["$ssn", "901"] } } },
            Deny(mask),
        ),
        (
            a,
            "$$CURRENT.email in $expr",
            doc! { "find": "customers", "filter": { "$expr": { "$eq": ["$$CURRENT.email", "x"] } } },
            Deny(mask),
        ),
        (
            a,
            "$text on masked collection",
            doc! { "find": "customers", "filter": { "$text": { "$search": "example" } } },
            Deny(mask),
        ),
        (
            a,
            "$jsonSchema pattern oracle",
            doc! { "find": "customers", "filter": { "$jsonSchema": { "properties": { "ssn": { "pattern": "^9" } } } } },
            Deny(mask),
        ),
        (
            a,
            "index bounds on email",
            doc! { "find": "customers", "min": { "email": "a" }, "hint": { "email": 1 } },
            Deny(mask),
        ),
        (
            a,
            "distinct on parent of masked",
            doc! { "distinct": "customers", "key": "address" },
            Deny(mask),
        ),
        (
            a,
            "distinct with query on email",
            doc! { "distinct": "customers", "key": "region", "query": { "email": "x" } },
            Deny(mask),
        ),
        (
            a,
            "$unwind masked",
            doc! { "aggregate": "customers", "pipeline": [ { "$unwind": "$phone" } ], "cursor": {} },
            Deny(mask),
        ),
        (
            a,
            "$bucket by ssn",
            doc! { "aggregate": "customers", "pipeline": [ { "$bucket": { "groupBy": "$ssn", "boundaries": ["0", "5"] } } ], "cursor": {} },
            Deny(mask),
        ),
        (
            a,
            "$setWindowFields sort by email",
            doc! { "aggregate": "customers", "pipeline": [ { "$setWindowFields": { "sortBy": { "email": 1 }, "output": { "r": { "$rank": {} } } } } ], "cursor": {} },
            Deny(mask),
        ),
        (
            a,
            "$sortByCount email",
            doc! { "aggregate": "customers", "pipeline": [ { "$sortByCount": "$email" } ], "cursor": {} },
            Deny(mask),
        ),
        (
            a,
            "$match after lookup on joined masked field",
            doc! { "aggregate": "orders", "pipeline": [ { "$lookup": { "from": "customers", "localField": "customer_id", "foreignField": "_id", "as": "c" } }, { "$match": { "c.email": { "$regex": "^a" } } } ], "cursor": {} },
            Deny(mask),
        ),
        (
            a,
            "$unwind joined then group by masked",
            doc! { "aggregate": "orders", "pipeline": [ { "$lookup": { "from": "customers", "localField": "customer_id", "foreignField": "_id", "as": "c" } }, { "$unwind": "$c" }, { "$group": { "_id": "$c.ssn" } } ], "cursor": {} },
            Deny(mask),
        ),
        (
            a,
            "join on masked foreign field",
            doc! { "aggregate": "orders", "pipeline": [ { "$lookup": { "from": "customers", "localField": "email", "foreignField": "email", "as": "c" } } ], "cursor": {} },
            Deny(mask),
        ),
        (
            a,
            "graphLookup traversing masked field",
            doc! { "aggregate": "orders", "pipeline": [ { "$graphLookup": { "from": "customers", "startWith": "$x", "connectFromField": "ssn", "connectToField": "_id", "as": "g" } } ], "cursor": {} },
            Deny(mask),
        ),
        (
            a,
            "facet output keeps masks",
            doc! { "aggregate": "customers", "pipeline": [ { "$facet": { "f": [ { "$limit": 1 } ] } }, { "$project": { "x": "$f.email" } } ], "cursor": {} },
            Deny(mask),
        ),
        (
            a,
            "unionWith customers then sort by email",
            doc! { "aggregate": "orders", "pipeline": [ { "$unionWith": "customers" }, { "$sort": { "email": 1 } } ], "cursor": {} },
            Deny(mask),
        ),
        (
            a,
            "lookup pipeline matching masked",
            doc! { "aggregate": "orders", "pipeline": [ { "$lookup": { "from": "customers", "pipeline": [ { "$match": { "ssn": "1" } } ], "as": "c" } } ], "cursor": {} },
            Deny(mask),
        ),
        (
            a,
            "lookup let reading... none masked in orders",
            doc! { "aggregate": "orders", "pipeline": [ { "$lookup": { "from": "customers", "let": { "cid": "$customer_id" }, "pipeline": [ { "$match": { "$expr": { "$eq": ["$_id", "$$cid"] } } } ], "as": "c" } } ], "cursor": {} },
            Allow,
        ),
        (
            a,
            "projection inclusion of masked is fine",
            doc! { "find": "customers", "projection": { "email": 1, "name": 1 } },
            Allow,
        ),
        (
            a,
            "group by region is fine",
            doc! { "aggregate": "customers", "pipeline": [ { "$group": { "_id": "$region", "n": { "$sum": 1 } } } ], "cursor": {} },
            Allow,
        ),
        (
            a,
            "slice projection is not a rename",
            doc! { "find": "customers", "projection": { "tags": { "$slice": 2 } } },
            Allow,
        ),
        (
            a,
            "aggregation $slice of masked is a read",
            doc! { "aggregate": "customers", "pipeline": [ { "$project": { "x": { "$slice": ["$phone", 1] } } } ], "cursor": {} },
            Deny(mask),
        ),
        (
            a,
            "$literal is not a reference",
            doc! { "aggregate": "customers", "pipeline": [ { "$project": { "x": { "$literal": "$email" } } } ], "cursor": {} },
            Allow,
        ),
        (
            w,
            "writer: $rename masked field",
            doc! { "update": "customers", "updates": [ { "q": {}, "u": { "$rename": { "email": "e" } } } ] },
            Deny("default-deny"),
        ),
        (
            t,
            "trusted: predicate on masked ssn",
            doc! { "find": "customers", "filter": { "ssn": "1" } },
            Deny("collection shop.customers"),
        ),
        (
            t,
            "trusted: $rename masked",
            doc! { "update": "customers", "updates": [ { "q": {}, "u": { "$rename": { "ssn": "s" } } } ] },
            Deny("collection shop.customers"),
        ),
        (
            t,
            "trusted: update pipeline copying masked",
            doc! { "update": "customers", "updates": [ { "q": {}, "u": [ { "$set": { "s": "$ssn" } } ] } ] },
            Deny("collection shop.customers"),
        ),
        (
            t,
            "trusted: $out masked",
            doc! { "aggregate": "customers", "pipeline": [ { "$out": "copy" } ], "cursor": {} },
            Deny("collection shop.customers"),
        ),
        (
            t,
            "trusted: view over masked",
            doc! { "create": "v", "viewOn": "customers", "pipeline": [] },
            Deny("collection shop.customers"),
        ),
        (
            t,
            "trusted: rename masked collection",
            doc! { "renameCollection": "shop.customers", "to": "shop.c2", "$db": "admin" },
            Deny("collection shop.customers"),
        ),
        (
            t,
            "trusted: unknown command on masked",
            doc! { "validate": "customers" },
            Deny("collection shop.customers"),
        ),
        (
            t,
            "trusted: explicit deny wins",
            doc! { "find": "audit" },
            Deny("collection shop.audit"),
        ),
        (
            t,
            "trusted: anything else",
            doc! { "find": "secrets", "filter": { "api_key": { "$regex": "^sk" } } },
            Allow,
        ),
        (
            t,
            "trusted: unknown command elsewhere",
            doc! { "validate": "orders" },
            Allow,
        ),
        (
            t,
            "trusted: dropDatabase with protections",
            doc! { "dropDatabase": 1 },
            Deny("default-deny"),
        ),
        // --- diagnostics and other agents' activity --------------------------------------------
        (
            a,
            "$collStats allowed by diagnostics",
            doc! { "aggregate": "orders", "pipeline": [ { "$collStats": { "count": {} } } ], "cursor": {} },
            Allow,
        ),
        (
            a,
            "$collStats of secrets",
            doc! { "aggregate": "secrets", "pipeline": [ { "$collStats": { "count": {} } } ], "cursor": {} },
            Deny("default-deny"),
        ),
        (
            a,
            "$indexStats not in diagnostics",
            doc! { "aggregate": "orders", "pipeline": [ { "$indexStats": {} } ], "cursor": {} },
            Deny("default-deny"),
        ),
        (
            a,
            "$planCacheStats not in diagnostics",
            doc! { "aggregate": "orders", "pipeline": [ { "$planCacheStats": {} } ], "cursor": {} },
            Deny("default-deny"),
        ),
        (
            a,
            "$currentOp",
            doc! { "aggregate": 1, "pipeline": [ { "$currentOp": { "allUsers": true } } ], "cursor": {}, "$db": "admin" },
            Deny("builtin"),
        ),
        (
            t,
            "$currentOp even for passthrough",
            doc! { "aggregate": 1, "pipeline": [ { "$currentOp": {} } ], "cursor": {}, "$db": "admin" },
            Deny("builtin"),
        ),
        (
            a,
            "$listSessions",
            doc! { "aggregate": "system.sessions", "pipeline": [ { "$listSessions": {} } ], "cursor": {}, "$db": "config" },
            Deny("reserved-namespace"),
        ),
        (
            a,
            "$listLocalSessions",
            doc! { "aggregate": 1, "pipeline": [ { "$listLocalSessions": {} } ], "cursor": {} },
            Deny("builtin"),
        ),
        (
            a,
            "change stream not allowed",
            doc! { "aggregate": "orders", "pipeline": [ { "$changeStream": {} } ], "cursor": {} },
            Deny("default-deny"),
        ),
        (
            a,
            "db-level change stream",
            doc! { "aggregate": 1, "pipeline": [ { "$changeStream": {} } ], "cursor": {} },
            Deny("default-deny"),
        ),
        (
            a,
            "change stream on row-filtered collection",
            doc! { "aggregate": "eu_customers", "pipeline": [ { "$changeStream": {} } ], "cursor": {} },
            Deny("collection shop.eu_customers"),
        ),
        (
            a,
            "collStats command not in diagnostics",
            doc! { "collStats": "orders" },
            Deny("default-deny"),
        ),
        (
            a,
            "dbStats not in diagnostics",
            doc! { "dbStats": 1 },
            Deny("default-deny"),
        ),
        (
            a,
            "explain of an allowed find",
            doc! { "explain": { "find": "orders", "filter": {} }, "verbosity": "queryPlanner" },
            Allow,
        ),
        (
            a,
            "explain of a secrets find",
            doc! { "explain": { "find": "secrets" } },
            Deny("default-deny"),
        ),
        (
            w,
            "explain not in writer's diagnostics",
            doc! { "explain": { "find": "orders" } },
            Deny("default-deny"),
        ),
        (
            a,
            "unknown stage",
            doc! { "aggregate": "orders", "pipeline": [ { "$teleport": {} } ], "cursor": {} },
            Deny("not-understood"),
        ),
        (
            a,
            "unknown expression operator",
            doc! { "aggregate": "orders", "pipeline": [ { "$project": { "x": { "$magic": 1 } } } ], "cursor": {} },
            Deny("not-understood"),
        ),
        (
            a,
            "unknown query operator",
            doc! { "find": "orders", "filter": { "a": { "$near2": 1 } } },
            Deny("not-understood"),
        ),
        (
            a,
            "stage doc with two keys",
            doc! { "aggregate": "orders", "pipeline": [ { "$match": {}, "$out": "x" } ], "cursor": {} },
            Deny("malformed"),
        ),
        (
            a,
            "$documents on a collection",
            doc! { "aggregate": "orders", "pipeline": [ { "$documents": [ { "a": 1 } ] } ], "cursor": {} },
            Deny("malformed"),
        ),
        (
            a,
            "$documents db-level is fine",
            doc! { "aggregate": 1, "pipeline": [ { "$documents": [ { "a": 1 } ] } ], "cursor": {} },
            Allow,
        ),
        // --- admin commands and the vaulted user -----------------------------------------------
        (
            a,
            "createUser",
            doc! { "createUser": "evil", "pwd": "x", "roles": ["root"], "$db": "admin" },
            Deny("builtin: admin-command"),
        ),
        (
            t,
            "updateUser of the upstream user (passthrough)",
            doc! { "updateUser": "tollgate", "pwd": "x", "$db": "admin" },
            Deny("builtin: admin-command"),
        ),
        (
            t,
            "dropUser (passthrough)",
            doc! { "dropUser": "tollgate", "$db": "admin" },
            Deny("builtin: admin-command"),
        ),
        (
            t,
            "grantRolesToUser",
            doc! { "grantRolesToUser": "x", "roles": ["root"], "$db": "admin" },
            Deny("builtin: admin-command"),
        ),
        (
            t,
            "revokeRolesFromUser",
            doc! { "revokeRolesFromUser": "tollgate", "roles": ["root"], "$db": "admin" },
            Deny("builtin: admin-command"),
        ),
        (
            t,
            "usersInfo with credentials",
            doc! { "usersInfo": 1, "showCredentials": true, "$db": "admin" },
            Deny("builtin: admin-command"),
        ),
        (
            t,
            "applyOps",
            doc! { "applyOps": [], "$db": "admin" },
            Deny("builtin: admin-command"),
        ),
        (
            t,
            "shutdown",
            doc! { "shutdown": 1, "force": true, "$db": "admin" },
            Deny("builtin: admin-command"),
        ),
        (
            t,
            "setParameter",
            doc! { "setParameter": 1, "logLevel": 5, "$db": "admin" },
            Deny("builtin: admin-command"),
        ),
        (
            t,
            "getLog",
            doc! { "getLog": "global", "$db": "admin" },
            Deny("builtin: admin-command"),
        ),
        (
            t,
            "currentOp",
            doc! { "currentOp": 1, "$db": "admin" },
            Deny("builtin: admin-command"),
        ),
        (
            t,
            "killOp",
            doc! { "killOp": 1, "op": 12, "$db": "admin" },
            Deny("builtin: admin-command"),
        ),
        (
            t,
            "fsync lock",
            doc! { "fsync": 1, "lock": true, "$db": "admin" },
            Deny("builtin: admin-command"),
        ),
        (
            t,
            "killAllSessions",
            doc! { "killAllSessions": [], "$db": "admin" },
            Deny("builtin: admin-command"),
        ),
        (
            t,
            "saslStart after login",
            doc! { "saslStart": 1, "mechanism": "SCRAM-SHA-256", "$db": "admin" },
            Deny("builtin: admin-command"),
        ),
        (
            t,
            "logout",
            doc! { "logout": 1 },
            Deny("builtin: admin-command"),
        ),
        (
            t,
            "profiler",
            doc! { "profile": 2 },
            Deny("builtin: admin-command"),
        ),
        (
            t,
            "find admin.system.users",
            doc! { "find": "system.users", "$db": "admin" },
            Deny("reserved-namespace"),
        ),
        (
            t,
            "insert into admin.system.users",
            doc! { "insert": "system.users", "documents": [ {} ], "$db": "admin" },
            Deny("reserved-namespace"),
        ),
        (
            t,
            "read the oplog",
            doc! { "find": "oplog.rs", "$db": "local" },
            Deny("reserved-namespace"),
        ),
        (
            t,
            "config database",
            doc! { "find": "system.sessions", "$db": "config" },
            Deny("reserved-namespace"),
        ),
        (
            t,
            "renameCollection across databases",
            doc! { "renameCollection": "shop.orders", "to": "other.orders", "$db": "admin" },
            Deny("builtin: admin-command"),
        ),
        (
            a,
            "shop.* does not reach system collections",
            doc! { "find": "system.profile" },
            Deny("default-deny"),
        ),
        (a, "ping", doc! { "ping": 1, "$db": "admin" }, Allow),
        (
            a,
            "buildInfo",
            doc! { "buildInfo": 1, "$db": "admin" },
            Allow,
        ),
        (
            a,
            "endSessions",
            doc! { "endSessions": [], "$db": "admin" },
            Allow,
        ),
        (
            a,
            "commitTransaction",
            doc! { "commitTransaction": 1, "txnNumber": 1i64, "autocommit": false, "$db": "admin" },
            Allow,
        ),
        (
            a,
            "abortTransaction",
            doc! { "abortTransaction": 1, "txnNumber": 1i64, "autocommit": false, "$db": "admin" },
            Allow,
        ),
        (
            a,
            "getMore is the session's to check",
            doc! { "getMore": 12345i64, "collection": "orders" },
            Allow,
        ),
        (
            a,
            "getMore with an int32 id",
            doc! { "getMore": 12345, "collection": "orders" },
            Deny("malformed"),
        ),
        (
            a,
            "killCursors",
            doc! { "killCursors": "orders", "cursors": [ 1i64 ] },
            Allow,
        ),
        // --- BSON and naming pitfalls -------------------------------------------------------------
        (
            a,
            "FIND upper case",
            doc! { "FIND": "secrets" },
            Deny("builtin: admin-command"),
        ),
        (
            a,
            "Find mixed case",
            doc! { "Find": "orders" },
            Deny("builtin: admin-command"),
        ),
        (
            t,
            "dropuser lower case (passthrough)",
            doc! { "dropuser": "tollgate", "$db": "admin" },
            Deny("builtin: admin-command"),
        ),
        (
            t,
            "CreateUser (passthrough)",
            doc! { "CreateUser": "x", "pwd": "y", "roles": [], "$db": "admin" },
            Deny("builtin: admin-command"),
        ),
        (
            a,
            "findandmodify alias still judged",
            doc! { "findandmodify": "orders", "query": {}, "remove": true },
            Deny("default-deny"),
        ),
        (
            a,
            "collection name with $",
            doc! { "find": "orders$x" },
            Deny("malformed"),
        ),
        (
            a,
            "collection name as number",
            doc! { "find": 5 },
            Deny("malformed"),
        ),
        (
            a,
            "empty collection name",
            doc! { "find": "" },
            Deny("malformed"),
        ),
        (
            a,
            "filter not a document",
            doc! { "find": "orders", "filter": "x" },
            Deny("malformed"),
        ),
        (
            a,
            "pipeline not an array",
            doc! { "aggregate": "orders", "pipeline": {}, "cursor": {} },
            Deny("malformed"),
        ),
        (
            a,
            "$lookup from other-db by doc",
            doc! { "aggregate": "orders", "pipeline": [ { "$lookup": { "from": { "db": "a.b", "coll": "c" }, "pipeline": [], "as": "x" } } ], "cursor": {} },
            Deny("malformed"),
        ),
        (
            a,
            "bulkWrite",
            doc! { "bulkWrite": 1, "ops": [], "nsInfo": [], "$db": "admin" },
            Deny("builtin: admin-command"),
        ),
        (
            a,
            "operator mixed with fields",
            doc! { "find": "orders", "filter": { "a": { "$gt": 1, "b": 2 } } },
            Deny("malformed"),
        ),
        (
            s,
            "partial index over a masked field",
            doc! { "createIndexes": "people", "indexes": [ { "key": { "region": 1 }, "name": "p", "partialFilterExpression": { "ssn": { "$gt": "905" } } } ] },
            Deny("collection shop.people"),
        ),
        (
            s,
            "sparse index on a masked field",
            doc! { "createIndexes": "people", "indexes": [ { "key": { "ssn": 1 }, "name": "s", "sparse": true } ] },
            Deny("collection shop.people"),
        ),
        (
            s,
            "plain index on a masked field",
            doc! { "createIndexes": "people", "indexes": [ { "key": { "ssn": 1 }, "name": "s" } ] },
            Allow,
        ),
        (
            s,
            "hint on a masked key + returnKey (index keys are raw values)",
            doc! { "find": "people", "hint": { "ssn": 1 }, "returnKey": true },
            Deny("collection shop.people"),
        ),
    ]
}

fn deep_facet(n: usize) -> Document {
    let mut d = doc! { "$limit": 1 };
    for _ in 0..n {
        d = doc! { "$facet": { "x": [ d ] } };
    }
    d
}

#[test]
fn the_adversarial_table() {
    let analyst = rules_from("analyst", ANALYST).unwrap();
    let writer = rules_from("writer", WRITER).unwrap();
    let trusted = rules_from("trusted", TRUSTED).unwrap();
    let scripting = rules_from("scripting", SCRIPTING).unwrap();
    let rows = table();
    assert!(rows.len() >= 100, "{} rows", rows.len());
    for (agent, label, d, want) in rows {
        let rules = match agent {
            "analyst" => &analyst,
            "writer" => &writer,
            "trusted" => &trusted,
            _ => &scripting,
        };
        check(rules, label, d, want);
    }
}

fn judged(rules: &MongoRules, d: Document) -> super::decide::Judged {
    decide(rules, &cmd(d), &DecideLimits::default()).expect("allowed")
}

#[test]
fn row_filters_go_first_everywhere() {
    let r = rules_from("analyst", ANALYST).unwrap();
    let f = doc! { "region": "EU" };
    let j = judged(&r, doc! { "find": "eu_customers", "filter": { "a": 1 } });
    assert_eq!(
        j.rewritten.unwrap().body.get_document("filter").unwrap(),
        &doc! { "$and": [ { "a": 1 }, f.clone() ] }
    );
    let j = judged(&r, doc! { "find": "eu_customers" });
    assert_eq!(
        j.rewritten.unwrap().body.get_document("filter").unwrap(),
        &f
    );
    let j = judged(&r, doc! { "count": "eu_customers" });
    assert_eq!(j.rewritten.unwrap().body.get_document("query").unwrap(), &f);
    let j = judged(&r, doc! { "distinct": "eu_customers", "key": "name" });
    assert_eq!(j.rewritten.unwrap().body.get_document("query").unwrap(), &f);
    let j = judged(
        &r,
        doc! { "aggregate": "eu_customers", "pipeline": [ { "$limit": 5 } ], "cursor": {} },
    );
    assert_eq!(
        j.rewritten.unwrap().body.get_array("pipeline").unwrap(),
        &vec![
            Bson::Document(doc! { "$match": f.clone() }),
            Bson::Document(doc! { "$limit": 5 })
        ]
    );
    let j = judged(
        &r,
        doc! { "aggregate": "eu_customers", "pipeline": [], "cursor": {} },
    );
    assert_eq!(
        j.rewritten
            .unwrap()
            .body
            .get_array("pipeline")
            .unwrap()
            .len(),
        1
    );
    // Sub-pipelines reading a filtered collection get the filter too.
    let j = judged(
        &r,
        doc! { "aggregate": "orders", "pipeline": [ { "$lookup": { "from": "eu_customers", "localField": "customer_id", "foreignField": "_id", "as": "c" } } ], "cursor": {} },
    );
    let p = j
        .rewritten
        .unwrap()
        .body
        .get_array("pipeline")
        .unwrap()
        .clone();
    let lookup = p[0].as_document().unwrap().get_document("$lookup").unwrap();
    assert_eq!(
        lookup.get_array("pipeline").unwrap(),
        &vec![Bson::Document(doc! { "$match": f.clone() })]
    );
    let j = judged(
        &r,
        doc! { "aggregate": "orders", "pipeline": [ { "$unionWith": "eu_customers" } ], "cursor": {} },
    );
    let p = j
        .rewritten
        .unwrap()
        .body
        .get_array("pipeline")
        .unwrap()
        .clone();
    let u = p[0]
        .as_document()
        .unwrap()
        .get_document("$unionWith")
        .unwrap();
    assert_eq!(
        u.get_array("pipeline").unwrap(),
        &vec![Bson::Document(doc! { "$match": f.clone() })]
    );
    // $graphLookup could carry the filter only in `restrictSearchWithMatch`, which not every
    // server honours (the demo's ignores it: a review read filtered-out documents), and
    // collStats counts every document: both refused on a filtered collection.
    for d in [
        doc! { "aggregate": "orders", "pipeline": [ { "$graphLookup": { "from": "eu_customers", "startWith": "$customer_id", "connectFromField": "ref", "connectToField": "_id", "as": "g" } } ], "cursor": {} },
        doc! { "aggregate": "orders", "pipeline": [ { "$graphLookup": { "from": "eu_customers", "startWith": "$customer_id", "connectFromField": "ref", "connectToField": "_id", "as": "g", "restrictSearchWithMatch": { "region": "US" } } } ], "cursor": {} },
    ] {
        let e = decide(&r, &cmd(d), &DecideLimits::default()).expect_err("refused");
        assert!(
            e.reason.contains("row filter cannot be applied"),
            "{}",
            e.reason
        );
        assert!(!e.rule.is_empty());
    }
    let collstats = rules_from(
        "analyst",
        &ANALYST.replace(
            r#"["$collStats", "explain"]"#,
            r#"["$collStats", "explain", "collStats"]"#,
        ),
    )
    .unwrap();
    let e = decide(
        &collstats,
        &cmd(doc! { "collStats": "eu_customers" }),
        &DecideLimits::default(),
    )
    .expect_err("refused");
    assert!(
        e.reason.contains("row filter cannot be applied"),
        "{}",
        e.reason
    );
    assert!(decide(
        &collstats,
        &cmd(doc! { "collStats": "orders" }),
        &DecideLimits::default()
    )
    .is_ok());
    // Writes: update and delete filters, in the body or in a document sequence.
    let j = judged(
        &r,
        doc! { "update": "eu_customers", "updates": [ { "q": { "_id": 3 }, "u": { "$set": { "x": 1 } } } ] },
    );
    let u = j.rewritten.unwrap().body.get_array("updates").unwrap()[0]
        .as_document()
        .unwrap()
        .clone();
    assert_eq!(
        u.get_document("q").unwrap(),
        &doc! { "$and": [ { "_id": 3 }, f.clone() ] }
    );
    let seq = Command::new(
        doc! { "delete": "eu_customers", "$db": "shop" },
        vec![("deletes".into(), vec![doc! { "q": {}, "limit": 0 }])],
    )
    .unwrap();
    let j = decide(&r, &seq, &DecideLimits::default()).unwrap();
    let rw = j.rewritten.unwrap();
    assert_eq!(rw.sequences[0].1[0].get_document("q").unwrap(), &f);
    let j = judged(
        &r,
        doc! { "findAndModify": "eu_customers", "query": { "_id": 1 }, "remove": true },
    );
    assert_eq!(
        j.rewritten.unwrap().body.get_document("query").unwrap(),
        &doc! { "$and": [ { "_id": 1 }, f.clone() ] }
    );
    // explain carries the rewritten inner command.
    let j = judged(&r, doc! { "explain": { "find": "eu_customers" } });
    assert_eq!(
        j.rewritten
            .unwrap()
            .body
            .get_document("explain")
            .unwrap()
            .get_document("filter")
            .unwrap(),
        &f
    );
}

#[test]
fn a_join_written_at_a_dotted_path_keeps_the_masks_there() {
    // After $facet, `c` is an array of customers; `as: "c.ssn"` may leave it as it is (a
    // MongoDB-wire server did), so c.ssn and the rest stay masked (a live review read raw ssn).
    let r = rules_from("analyst", ANALYST).unwrap();
    let facet = doc! { "$facet": { "c": [ { "$limit": 5 } ] } };
    for stage in [
        doc! { "$lookup": { "from": "orders", "pipeline": [ { "$limit": 1 } ], "as": "c.ssn" } },
        doc! { "$graphLookup": { "from": "orders", "startWith": "$x", "connectFromField": "customer_id", "connectToField": "_id", "as": "c.ssn" } },
    ] {
        let j = judged(
            &r,
            doc! { "aggregate": "customers", "pipeline": [ facet.clone(), stage.clone() ], "cursor": {} },
        );
        let ReplyPlan::Documents(m) = j.reply else {
            panic!("{stage}: {:?}", j.reply)
        };
        let paths: Vec<&str> = m.iter().map(|m| m.path.as_str()).collect();
        for want in ["c.ssn", "c.email", "c.phone"] {
            assert!(paths.contains(&want), "{stage}: {paths:?}");
        }
    }
    // A top-level output replaces the field whole: its masks go.
    let j = judged(
        &r,
        doc! { "aggregate": "customers", "pipeline": [ facet, { "$lookup": { "from": "orders", "pipeline": [], "as": "c" } } ], "cursor": {} },
    );
    assert!(
        !matches!(&j.reply, ReplyPlan::Documents(m) if m.iter().any(|m| m.path.starts_with("c."))),
        "{:?}",
        j.reply
    );
}

#[test]
fn reply_plans_follow_the_data() {
    let r = rules_from("analyst", ANALYST).unwrap();
    let j = judged(&r, doc! { "find": "customers" });
    let ReplyPlan::Documents(m) = j.reply else {
        panic!("{:?}", j.reply)
    };
    assert_eq!(
        m.iter().map(|m| m.path.as_str()).collect::<Vec<_>>(),
        ["address.zip", "email", "phone", "ssn"]
    );
    let j = judged(
        &r,
        doc! { "aggregate": "orders", "pipeline": [ { "$lookup": { "from": "customers", "localField": "customer_id", "foreignField": "_id", "as": "c" } } ], "cursor": {} },
    );
    let ReplyPlan::Documents(m) = j.reply else {
        panic!()
    };
    assert!(m.iter().any(|m| m.path == "c.email"));
    let j = judged(
        &r,
        doc! { "aggregate": "customers", "pipeline": [ { "$facet": { "a": [ { "$limit": 1 } ], "b": [ { "$count": "n" } ] } } ], "cursor": {} },
    );
    let ReplyPlan::Documents(m) = j.reply else {
        panic!()
    };
    assert!(m.iter().any(|m| m.path == "a.email") && !m.iter().any(|m| m.path.starts_with("b.")));
    let j = judged(
        &r,
        doc! { "aggregate": "customers", "pipeline": [ { "$group": { "_id": "$region" } } ], "cursor": {} },
    );
    assert_eq!(j.reply, ReplyPlan::None);
    let j = judged(&r, doc! { "distinct": "customers", "key": "email" });
    assert!(matches!(j.reply, ReplyPlan::Values(ref m) if m.path == "email"));
    let j = judged(&r, doc! { "listCollections": 1 });
    assert_eq!(j.reply, ReplyPlan::Collections { db: "shop".into() });
    let j = judged(&r, doc! { "find": "orders" });
    assert_eq!(j.reply, ReplyPlan::None);
    assert_eq!(j.rule.as_deref(), Some("analyst: collection shop.orders"));
    assert_eq!(j.namespaces, ["shop.orders"]);
}

#[test]
fn max_time_ms_is_capped_to_the_statement_timeout() {
    let r = rules_from("analyst", ANALYST).unwrap();
    let limits = DecideLimits {
        statement_timeout: Some((
            std::time::Duration::from_millis(2000),
            "analyst: limits".into(),
        )),
        ..DecideLimits::default()
    };
    let j = decide(
        &r,
        &cmd(doc! { "find": "orders", "maxTimeMS": 60000 }),
        &limits,
    )
    .unwrap();
    assert_eq!(
        j.rewritten.unwrap().body.get_i64("maxTimeMS").ok(),
        Some(2000)
    );
    let j = decide(&r, &cmd(doc! { "find": "orders" }), &limits).unwrap();
    assert_eq!(
        j.rewritten.unwrap().body.get_i64("maxTimeMS").ok(),
        Some(2000)
    );
    let j = decide(
        &r,
        &cmd(doc! { "find": "orders", "maxTimeMS": 500 }),
        &limits,
    )
    .unwrap();
    assert!(j.rewritten.is_none());
    let j = decide(
        &r,
        &cmd(doc! { "aggregate": "orders", "pipeline": [], "cursor": {}, "maxTimeMS": 0 }),
        &limits,
    )
    .unwrap();
    assert_eq!(
        j.rewritten.unwrap().body.get_i64("maxTimeMS").ok(),
        Some(2000)
    );
    let j = decide(&r, &cmd(doc! { "ping": 1 }), &limits).unwrap();
    assert!(j.rewritten.is_none());
}

#[test]
fn listings_show_only_what_the_agent_may_see() {
    let r = rules_from("analyst", ANALYST).unwrap();
    assert!(r.collection_visible("shop.orders"));
    assert!(r.collection_visible("shop.scratch_x"));
    assert!(!r.collection_visible("shop.secrets"));
    assert!(r.database_visible("shop"));
    assert!(!r.database_visible("admin"));
    let t = rules_from("trusted", TRUSTED).unwrap();
    assert!(t.collection_visible("shop.secrets"));
    assert!(!t.collection_visible("shop.audit"));
}

#[test]
fn shadow_mode_records_without_blocking() {
    use super::check::judge_shadowed;
    use crate::policy::Outcome;
    let strict = rules_from("analyst", ANALYST).unwrap();
    let open = rules_from("trusted", TRUSTED).unwrap();
    let c = cmd(doc! { "find": "secrets" });
    let v = judge_shadowed(
        Some(Some(&open)),
        Some(Some(&strict)),
        "mongo",
        &c,
        &DecideLimits::default(),
    );
    assert_eq!(v.outcome, Outcome::WouldBlock);
    assert!(v.judged.is_some());
    let v = judge_shadowed(
        Some(Some(&strict)),
        None,
        "mongo",
        &c,
        &DecideLimits::default(),
    );
    assert_eq!(v.outcome, Outcome::Block);
    let v = judge_shadowed(
        None,
        Some(Some(&strict)),
        "mongo",
        &c,
        &DecideLimits::default(),
    );
    assert_eq!(v.outcome, Outcome::WouldBlock);
    let v = judge_shadowed(Some(None), None, "mongo", &c, &DecideLimits::default());
    assert_eq!(v.outcome, Outcome::Block);
    let v = judge_shadowed(
        None,
        None,
        "mongo",
        &cmd(doc! { "ping": 1 }),
        &DecideLimits::default(),
    );
    assert_eq!(v.outcome, Outcome::Block);
    let ok = judge_shadowed(
        Some(Some(&strict)),
        Some(Some(&open)),
        "mongo",
        &cmd(doc! { "find": "orders" }),
        &DecideLimits::default(),
    );
    assert_eq!(ok.outcome, Outcome::Allow);
    // Only shadow files, which allow it: it runs unchanged, its masks not applied (as under
    // PostgreSQL and Redis); enforced, the same rules mask.
    let customers = cmd(doc! { "find": "customers" });
    let enforced = judge_shadowed(
        Some(Some(&strict)),
        None,
        "mongo",
        &customers,
        &DecideLimits::default(),
    );
    assert!(!matches!(
        enforced.judged.unwrap().reply,
        super::decide::ReplyPlan::None
    ));
    let shadow = judge_shadowed(
        None,
        Some(Some(&strict)),
        "mongo",
        &customers,
        &DecideLimits::default(),
    );
    assert_eq!(shadow.outcome, Outcome::Allow);
    let judged = shadow.judged.unwrap();
    assert!(
        matches!(judged.reply, super::decide::ReplyPlan::None),
        "{judged:?}"
    );
    assert!(judged.rewritten.is_none() && judged.rule.is_none());
}

#[test]
fn policy_files_are_validated_with_positions() {
    for (text, want) in [
        ("[[mongo]]\nupstream = \"nope\"\n", "unknown upstream"),
        ("[[mongo]]\nupstream = \"mongo\"\n[[mongo.collection]]\nname = \"orders\"\nallow = [\"read\"]\n", "database.collection"),
        ("[[mongo]]\nupstream = \"mongo\"\n[[mongo.collection]]\nname = \"shop.o\"\nallow = [\"select\"]\n", "unknown operation"),
        ("[[mongo]]\nupstream = \"mongo\"\n[[mongo.collection]]\nname = \"shop.o\"\nmask = { email = \"rot13\" }\n", "unknown mask"),
        ("[[mongo]]\nupstream = \"mongo\"\n[[mongo.collection]]\nname = \"shop.o\"\nmask = { \"$email\" = \"redact\" }\n", "not a field path"),
        ("[[mongo]]\nupstream = \"mongo\"\n[[mongo.collection]]\nname = \"shop.o\"\nrow_filter = '{\"$where\": \"true\"}'\n", "JavaScript"),
        ("[[mongo]]\nupstream = \"mongo\"\n[[mongo.collection]]\nname = \"shop.o\"\nrow_filter = '[1]'\n", "JSON object"),
        ("[[mongo]]\nupstream = \"mongo\"\n[[mongo.collection]]\nname = \"shop.o\"\nrow_filter = '{\"a\": {\"$bogus\": 1}}'\n", "unknown operator"),
        ("[[mongo]]\nupstream = \"mongo\"\ndiagnostics = [\"$currentOp\"]\n", "unknown diagnostic"),
        ("[[mongo]]\nupstream = \"mongo\"\n[[mongo]]\nupstream = \"mongo\"\n", "two [[mongo]] blocks"),
        ("[[mongo]]\nupstream = \"mongo\"\n[[mongo.collection]]\nname = \"shop.o\"\n[[mongo.collection]]\nname = \"shop.o\"\n", "named twice"),
    ] {
        let err = rules_from("p", text).unwrap_err();
        assert!(err.contains(want), "{text}\n=> {err}");
        assert!(err.contains("p.toml:"), "{err}");
    }
    let err = rules_from("p", "[[mongo]]\nupstream = \"mongo\"\nbogus = 1\n").unwrap_err();
    assert!(err.contains("bogus"), "{err}");
}

#[test]
fn refusal_classes() {
    let r = rules_from("analyst", ANALYST).unwrap();
    let e = decide(
        &r,
        &cmd(doc! { "aggregate": "orders", "pipeline": [ { "$teleport": {} } ], "cursor": {} }),
        &DecideLimits::default(),
    )
    .unwrap_err();
    assert_eq!(e.class, RefusalClass::Unsupported);
    let e = decide(
        &r,
        &cmd(doc! { "find": "secrets" }),
        &DecideLimits::default(),
    )
    .unwrap_err();
    assert_eq!(e.class, RefusalClass::Permission);
    let e = decide(&r, &cmd(doc! { "find": 1 }), &DecideLimits::default()).unwrap_err();
    assert_eq!(e.class, RefusalClass::Syntax);
}

/// OP_MSG document sequences are taken only where the command takes them (insert's
/// `documents`, update's `updates`, delete's `deletes`): any other would reach the server
/// unjudged (it may merge a sequence into the command's body).
#[test]
fn document_sequences_only_where_the_command_takes_them() {
    let r = rules_from("analyst", ANALYST).unwrap();
    for (body, id) in [
        (doc! { "find": "eu_customers", "$db": "shop" }, "filter"),
        (
            doc! { "aggregate": "eu_customers", "pipeline": [], "cursor": {}, "$db": "shop" },
            "let",
        ),
        (
            doc! { "delete": "eu_customers", "$db": "shop" },
            "documents",
        ),
        (doc! { "insert": "eu_customers", "$db": "shop" }, "updates"),
    ] {
        let c = Command::new(body.clone(), vec![(id.into(), vec![doc! { "a": 1 }])]).unwrap();
        let e = decide(&r, &c, &DecideLimits::default()).expect_err(&format!("{body} + {id}"));
        assert!(e.reason.contains("document sequence"), "{}", e.reason);
    }
    let ok = Command::new(
        doc! { "delete": "eu_customers", "$db": "shop" },
        vec![("deletes".into(), vec![doc! { "q": {}, "limit": 0 }])],
    )
    .unwrap();
    assert!(decide(&r, &ok, &DecideLimits::default()).is_ok());
}
