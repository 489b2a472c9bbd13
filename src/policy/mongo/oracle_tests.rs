//! Oracles over masked fields a review proved, each with the decision it must get: paths
//! spelt with array indexes or positional operators (`contacts.0.phone` under the mask
//! `contacts.phone`), update operators that read a masked value or make the server quote it,
//! unique and TTL indexes over masked fields, command-level `let` reading fields, `$geoNear`
//! without `key`; and the built-in refusals of internal and server-wide commands and of the
//! server's own databases. Pure: no server.

use bson::{doc, Document};

use super::tests::{check, rules_from, Want};
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

const PEOPLE: &str = "collection shop.people";

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
    ]
}

#[test]
fn masked_fields_have_no_spelling_and_no_write_that_reveals_them() {
    let r = rules_from("review", REVIEW).unwrap();
    for (label, d, want) in rows() {
        check(&r, label, d, want);
    }
}
