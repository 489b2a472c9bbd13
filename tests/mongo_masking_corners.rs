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
