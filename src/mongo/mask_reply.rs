//! Applying a verdict's reply plan to what the upstream answered: masked fields in cursor
//! batches (`firstBatch`, `nextBatch`, change events), findAndModify's `value` and distinct's
//! `values`; listings cut to what the agent may see. Error replies pass unchanged. The caller
//! re-encodes the document (`OpMsg::with_body`).

use bson::{Bson, Document};

use crate::policy::mongo::mask::{mask_document, mask_value};
use crate::policy::mongo::{MongoRules, ReplyPlan};

/// Applies `plan` to `reply` in place; returns whether anything may have changed.
pub fn mask_reply(
    reply: &mut Document,
    plan: &ReplyPlan,
    rules: &MongoRules,
    hash_key: &str,
) -> bool {
    if super::reply::is_error(reply) {
        return false;
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
            }
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
            &vec![Bson::from("REDACTED"), Bson::from("REDACTED")]
        );
        let mut err = doc! { "ok": 0.0, "errmsg": "x", "value": { "email": "raw@x.y" } };
        assert!(!mask_reply(&mut err, &plan, &rules, "k"));
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
