//! Applying a verdict's reply plan to what the upstream answered: masked fields in cursor
//! batches (`firstBatch`, `nextBatch`, change events), findAndModify's `value` and distinct's
//! `values` (equal masked values once, sorted by what the agent sees); listings cut to what the
//! agent may see; for commands on documents with masked fields, error details that can quote
//! stored values withheld (`errmsg` from its first `{` or `[`, `keyValue`, `errInfo`: a
//! duplicate key names the raw value, `Cannot create field 'x' in element {...}` quotes the
//! element) and update's `nModified` reported for every matched document. The caller re-encodes
//! the document (`OpMsg::with_body`).

use std::cmp::Ordering;

use bson::{Bson, Document};

use crate::policy::mongo::mask::{mask_document, mask_value};
use crate::policy::mongo::{MongoRules, ReplyPlan};

/// What replaces an error message's tail from its first `{` or `[`.
pub const WITHHELD: &str =
    "{ ... } (values withheld by tollgate: the collection has masked fields)";

/// Applies `plan` to `reply` in place; returns whether anything may have changed.
pub fn mask_reply(
    reply: &mut Document,
    plan: &ReplyPlan,
    rules: &MongoRules,
    hash_key: &str,
) -> bool {
    let scrubs = matches!(
        plan,
        ReplyPlan::Documents(_) | ReplyPlan::Values(_) | ReplyPlan::Writes
    );
    if super::reply::is_error(reply) {
        return scrubs && scrub_error(reply);
    }
    if scrubs {
        for key in ["writeErrors", "writeConcernError"] {
            match reply.get_mut(key) {
                Some(Bson::Array(errors)) => {
                    for e in errors.iter_mut() {
                        if let Bson::Document(e) = e {
                            scrub_error(e);
                        }
                    }
                }
                Some(Bson::Document(e)) => {
                    scrub_error(e);
                }
                _ => {}
            }
        }
    }
    match plan {
        ReplyPlan::None => false,
        ReplyPlan::Documents(masks) => {
            for_each_batch_doc(reply, |d| {
                mask_document(d, masks, hash_key);
                true
            });
            if let Some(Bson::Document(v)) = reply.get_mut("value") {
                mask_document(v, masks, hash_key);
            }
            true
        }
        ReplyPlan::Values(m) => {
            if let Some(Bson::Array(values)) = reply.get_mut("values") {
                for v in values.iter_mut() {
                    *v = mask_value(v, &m.strategy, hash_key);
                }
                // One entry per raw value, in the raw values' order, would tell which documents
                // share a value and how the values sort: the masked values, once each, sorted.
                values.sort_by(bson_order);
                values.dedup();
            }
            true
        }
        ReplyPlan::Writes => {
            every_match_modified(reply);
            true
        }
        ReplyPlan::Collections { db } => {
            for_each_batch_doc(reply, |d| {
                d.get_str("name")
                    .is_ok_and(|name| rules.collection_visible(&format!("{db}.{name}")))
            });
            true
        }
        ReplyPlan::Databases => {
            if let Some(Bson::Array(dbs)) = reply.get_mut("databases") {
                dbs.retain(|d| {
                    d.as_document()
                        .and_then(|d| d.get_str("name").ok())
                        .is_some_and(|n| rules.database_visible(n))
                });
                let total: i64 = dbs
                    .iter()
                    .filter_map(|d| d.as_document())
                    .filter_map(|d| match d.get("sizeOnDisk") {
                        Some(Bson::Int64(v)) => Some(*v),
                        Some(Bson::Int32(v)) => Some((*v).into()),
                        Some(Bson::Double(v)) => Some(*v as i64),
                        _ => None,
                    })
                    .sum();
                if reply.contains_key("totalSize") {
                    reply.insert("totalSize", total);
                }
                if reply.contains_key("totalSizeMb") {
                    reply.insert("totalSizeMb", total / (1024 * 1024));
                }
            }
            true
        }
    }
}

/// Withholds what an error (a reply, a write error) can quote of stored values; whether
/// anything changed. The code, code name and key pattern stay (they name fields, not values).
fn scrub_error(e: &mut Document) -> bool {
    let mut changed = e.remove("keyValue").is_some();
    changed |= e.remove("errInfo").is_some();
    if let Some(Bson::String(msg)) = e.get_mut("errmsg") {
        if let Some(at) = msg.find(['{', '[']) {
            msg.truncate(at);
            msg.push_str(WITHHELD);
            changed = true;
        }
    }
    changed
}

/// update's `nModified` as if every matched document changed: `n` less the upserted ones.
fn every_match_modified(reply: &mut Document) {
    let n = match reply.get("n") {
        Some(Bson::Int32(v)) => i64::from(*v),
        Some(Bson::Int64(v)) => *v,
        _ => return,
    };
    let upserted = match reply.get("upserted") {
        Some(Bson::Array(a)) => a.len() as i64,
        _ => 0,
    };
    let modified = (n - upserted).max(0);
    match reply.get_mut("nModified") {
        Some(v @ Bson::Int32(_)) => *v = Bson::Int32(modified.try_into().unwrap_or(i32::MAX)),
        Some(v @ Bson::Int64(_)) => *v = Bson::Int64(modified),
        _ => {}
    }
}

/// A total order of (masked) values: by BSON type as the server orders them, then by value.
fn bson_order(a: &Bson, b: &Bson) -> Ordering {
    fn rank(v: &Bson) -> u8 {
        match v {
            Bson::MinKey => 0,
            Bson::Null | Bson::Undefined => 1,
            Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => 2,
            Bson::String(_) | Bson::Symbol(_) => 3,
            Bson::Document(_) => 4,
            Bson::Array(_) => 5,
            Bson::Binary(_) => 6,
            Bson::ObjectId(_) => 7,
            Bson::Boolean(_) => 8,
            Bson::DateTime(_) => 9,
            Bson::Timestamp(_) => 10,
            Bson::RegularExpression(_) => 11,
            Bson::MaxKey => 13,
            _ => 12,
        }
    }
    rank(a).cmp(&rank(b)).then_with(|| match (a, b) {
        (Bson::String(x), Bson::String(y)) => x.cmp(y),
        (Bson::DateTime(x), Bson::DateTime(y)) => x.cmp(y),
        _ => a.to_string().cmp(&b.to_string()),
    })
}

/// Calls `f` on each document of `cursor.firstBatch`/`cursor.nextBatch`; documents for which it
/// returns `false` are dropped (non-documents are dropped too: a batch holds documents).
fn for_each_batch_doc(reply: &mut Document, mut f: impl FnMut(&mut Document) -> bool) {
    let Some(Bson::Document(cursor)) = reply.get_mut("cursor") else {
        return;
    };
    for key in ["firstBatch", "nextBatch"] {
        if let Some(Bson::Array(batch)) = cursor.get_mut(key) {
            batch.retain_mut(|b| match b {
                Bson::Document(d) => f(d),
                _ => false,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::mask::MaskStrategy;
    use crate::policy::mongo::MaskedField;
    use bson::doc;

    fn m(path: &str, s: &str) -> MaskedField {
        MaskedField {
            path: path.into(),
            strategy: MaskStrategy::parse(s).unwrap(),
            rule: "r".into(),
        }
    }

    #[test]
    fn batches_values_and_find_and_modify() {
        let plan = ReplyPlan::Documents(vec![m("email", "email"), m("c.ssn", "redact")]);
        let rules = MongoRules::default();
        let mut first = doc! { "cursor": { "id": 5i64, "ns": "shop.customers", "firstBatch": [
            { "_id": 1, "email": "ann@example.com", "c": [ { "ssn": "900-11-2222" } ] },
        ] }, "ok": 1.0 };
        assert!(mask_reply(&mut first, &plan, &rules, "k"));
        assert_eq!(
            first
                .get_document("cursor")
                .unwrap()
                .get_array("firstBatch")
                .unwrap()[0],
            Bson::Document(
                doc! { "_id": 1, "email": "***@example.com", "c": [ { "ssn": "REDACTED" } ] }
            )
        );
        let mut next =
            doc! { "cursor": { "id": 0i64, "nextBatch": [ { "email": "b@x.org" } ] }, "ok": 1 };
        mask_reply(&mut next, &plan, &rules, "k");
        assert_eq!(
            next.get_document("cursor")
                .unwrap()
                .get_array("nextBatch")
                .unwrap()[0],
            Bson::Document(doc! { "email": "***@x.org" })
        );
        let mut fam =
            doc! { "lastErrorObject": { "n": 1 }, "value": { "email": "c@y.net" }, "ok": 1.0 };
        mask_reply(&mut fam, &plan, &rules, "k");
        assert_eq!(
            fam.get_document("value").unwrap().get_str("email").ok(),
            Some("***@y.net")
        );
        let mut distinct = doc! { "values": ["a@b.c", "d@e.f"], "ok": 1.0 };
        mask_reply(
            &mut distinct,
            &ReplyPlan::Values(m("email", "redact")),
            &rules,
            "k",
        );
        assert_eq!(
            distinct.get_array("values").unwrap(),
            &vec![Bson::from("REDACTED")]
        );
        let mut err = doc! { "ok": 0.0, "errmsg": "x", "value": { "email": "raw@x.y" } };
        assert!(!mask_reply(&mut err, &plan, &rules, "k"));
    }

    #[test]
    fn distinct_values_are_collapsed_and_sorted_by_what_the_agent_sees() {
        let rules = MongoRules::default();
        let values = |raw: Vec<Bson>, s: &str| {
            let mut d = doc! { "values": raw, "ok": 1.0 };
            mask_reply(&mut d, &ReplyPlan::Values(m("phone", s)), &rules, "k");
            d.get_array("values").unwrap().clone()
        };
        // The server sorts by raw value: 555-0002 < 555-0101 < 999-0001. Masked to their last
        // two digits the order is 01, 01, 02: one "***01", then "***02".
        assert_eq!(
            values(
                vec!["555-0002".into(), "555-0101".into(), "999-0001".into()],
                "partial:2"
            ),
            vec![Bson::from("***01"), Bson::from("***02")]
        );
        // Two different raw values, one masked value: one entry, whatever the raw values.
        assert_eq!(
            values(vec!["111".into(), "222".into(), Bson::Null], "redact"),
            vec![Bson::Null, Bson::from("REDACTED")]
        );
    }

    #[test]
    fn errors_on_masked_documents_withhold_values() {
        let rules = MongoRules::default();
        let dup = "E11000 duplicate key error collection: shop.custcopy index: uq_phone dup key: { phone: \"+1-555-447-2875\" }";
        let mut insert = doc! { "n": 0, "writeErrors": [ {
            "index": 0, "code": 11000, "errmsg": dup,
            "keyPattern": { "phone": 1 }, "keyValue": { "phone": "+1-555-447-2875" },
        } ], "ok": 1.0 };
        assert!(mask_reply(&mut insert, &ReplyPlan::Writes, &rules, "k"));
        let e = insert.get_array("writeErrors").unwrap()[0]
            .as_document()
            .unwrap()
            .clone();
        assert_eq!(
            e,
            doc! { "index": 0, "code": 11000,
            "errmsg": format!("E11000 duplicate key error collection: shop.custcopy index: uq_phone dup key: {WITHHELD}"),
            "keyPattern": { "phone": 1 } }
        );
        // An error reply (findAndModify, createIndexes over duplicates): the same.
        let mut build = doc! { "ok": 0.0, "code": 11000, "codeName": "DuplicateKey",
        "errmsg": format!("Index build failed: x :: caused by :: {dup}"),
        "keyValue": { "phone": "+1-555-447-2875" } };
        let plan = ReplyPlan::Documents(vec![m("phone", "redact")]);
        assert!(mask_reply(&mut build, &plan, &rules, "k"));
        assert!(!build.to_string().contains("447-2875"), "{build}");
        assert_eq!(build.get_i32("code").ok(), Some(11000));
        // A value quoted by an update error; a document-validation failure's details.
        let mut upd = doc! { "n": 0, "nModified": 0, "writeErrors": [
            { "index": 0, "code": 28, "errmsg": "Plan executor error during update :: caused by :: Cannot create field 'x' in element {ssn: \"908-77-5656\"}" },
            { "index": 1, "code": 121, "errmsg": "Document failed validation", "errInfo": { "details": { "consideredValue": "908-77-5656" } } },
        ], "ok": 1.0 };
        mask_reply(&mut upd, &ReplyPlan::Writes, &rules, "k");
        assert!(!upd.to_string().contains("908-77"), "{upd}");
        // Without masks (plan None) errors pass as the server wrote them.
        let mut plain = doc! { "ok": 0.0, "errmsg": dup, "keyValue": { "phone": "x" } };
        assert!(!mask_reply(&mut plain, &ReplyPlan::None, &rules, "k"));
        assert!(plain.contains_key("keyValue"));
    }

    #[test]
    fn updates_on_masked_documents_count_every_match_as_modified() {
        let rules = MongoRules::default();
        // A $set of a masked field to the value it already held: the server says nModified 0.
        let mut r = doc! { "n": 3, "nModified": 1, "ok": 1.0 };
        mask_reply(&mut r, &ReplyPlan::Writes, &rules, "k");
        assert_eq!(r.get_i32("nModified").ok(), Some(3));
        let mut r = doc! { "n": 2i64, "nModified": 0i64, "upserted": [ { "index": 1, "_id": 9 } ], "ok": 1.0 };
        mask_reply(&mut r, &ReplyPlan::Writes, &rules, "k");
        assert_eq!(r.get_i64("nModified").ok(), Some(1));
        let mut r = doc! { "n": 3, "nModified": 1, "ok": 1.0 };
        mask_reply(&mut r, &ReplyPlan::None, &rules, "k");
        assert_eq!(r.get_i32("nModified").ok(), Some(1));
    }

    #[test]
    fn listings_are_cut() {
        use crate::policy::glob::Glob;
        use crate::policy::mongo::rules::{CollectionMatcher, OpSet};
        let rules = MongoRules {
            collections: vec![CollectionMatcher {
                glob: Glob::new("shop.orders"),
                allow: OpSet::parse_word("read").unwrap(),
                deny: OpSet::default(),
                rule: "r".into(),
                masks: vec![],
                row_filter: None,
            }],
            ..MongoRules::default()
        };
        let mut colls = doc! { "cursor": { "id": 0i64, "firstBatch": [ { "name": "orders" }, { "name": "secrets" } ] }, "ok": 1.0 };
        mask_reply(
            &mut colls,
            &ReplyPlan::Collections { db: "shop".into() },
            &rules,
            "k",
        );
        assert_eq!(
            colls
                .get_document("cursor")
                .unwrap()
                .get_array("firstBatch")
                .unwrap()
                .len(),
            1
        );
        let mut dbs = doc! { "databases": [ { "name": "shop", "sizeOnDisk": 10i64 }, { "name": "hr", "sizeOnDisk": 99i64 } ], "totalSize": 109i64, "ok": 1.0 };
        mask_reply(&mut dbs, &ReplyPlan::Databases, &rules, "k");
        assert_eq!(dbs.get_array("databases").unwrap().len(), 1);
        assert_eq!(dbs.get_i64("totalSize").ok(), Some(10));
    }
}
