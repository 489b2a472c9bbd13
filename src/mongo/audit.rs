//! The text of a MongoDB command as the audit log records it: its shape, with every value
//! replaced by `?` (field names, operators and stage names kept; the collection named by the
//! command kept), so values never reach the log. Session and cluster metadata (`lsid`,
//! `$clusterTime`, `txnNumber`, ...) are left out; document sequences are counted, not shown.
//! And what the decision record of an allowed command says (`decision_record`).

use std::fmt::Write;

use bson::{Bson, Document};

use crate::audit::Decision;
use crate::policy::mongo::{Command, ReplyPlan};
use crate::policy::Outcome;
use crate::refusal::Refusal;
use crate::session::Judged;

const MAX_STATEMENT: usize = 4096;
const MAX_NAME: usize = 128;
/// Fields that say how, not what: left out of the record.
const METADATA: [&str; 10] = [
    "lsid",
    "$clusterTime",
    "signature",
    "txnNumber",
    "autocommit",
    "$readPreference",
    "readConcern",
    "writeConcern",
    "apiVersion",
    "$db",
];

fn push_name(out: &mut String, name: &str) {
    out.extend(
        name.chars()
            .take(MAX_NAME)
            .map(|c| if c.is_control() || c == '"' { '?' } else { c }),
    );
}

fn value(out: &mut String, v: &Bson) {
    if out.len() > MAX_STATEMENT {
        return;
    }
    match v {
        Bson::Document(d) => document(out, d),
        Bson::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                if out.len() > MAX_STATEMENT {
                    out.push_str("...");
                    break;
                }
                value(out, item);
            }
            out.push(']');
        }
        // Field paths and variables in expressions are names, not values.
        Bson::String(s) if s.starts_with('$') && !s.contains(char::is_whitespace) => {
            out.push('"');
            push_name(out, s);
            out.push('"');
        }
        _ => out.push('?'),
    }
}

fn document(out: &mut String, d: &Document) {
    out.push('{');
    for (i, (k, v)) in d.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        if out.len() > MAX_STATEMENT {
            out.push_str("...");
            break;
        }
        push_name(out, k);
        out.push_str(": ");
        value(out, v);
    }
    out.push('}');
}

/// The decision record of a command the policy lets run: `would_block` in shadow mode,
/// `masked` when its reply is masked, `rewritten` when what is forwarded is not the agent's
/// command, else `allowed`; the rule that decided (the shadow refusal's, if any). Shared by the
/// wire relay and the MCP tools, so both record a command the same way.
pub fn decision_record(
    shown: String,
    outcome: Outcome,
    shadow_denial: Option<&Refusal>,
    rule: Option<String>,
    plan: &ReplyPlan,
    rewritten: bool,
) -> Judged {
    let decision = match outcome {
        Outcome::WouldBlock => Decision::WouldBlock,
        _ if matches!(plan, ReplyPlan::Documents(_) | ReplyPlan::Values(_)) => Decision::Masked,
        _ if rewritten => Decision::Rewritten,
        _ => Decision::Allowed,
    };
    let (rule, reason) = match shadow_denial {
        Some(d) => (Some(d.rule.clone()), Some(d.reason.clone())),
        None => (rule, None),
    };
    Judged {
        statement: shown,
        decision,
        rule,
        reason,
    }
}

/// `find shop.orders {filter: {amount: {$gt: ?}}, limit: ?}`.
pub fn statement(cmd: &Command) -> String {
    let mut out = String::new();
    push_name(&mut out, &cmd.name);
    out.push(' ');
    match cmd.collection() {
        Some(c) => {
            push_name(&mut out, &cmd.db);
            out.push('.');
            push_name(&mut out, c);
        }
        None => push_name(&mut out, &cmd.db),
    }
    let rest: Document = cmd
        .body
        .iter()
        .skip(1)
        .filter(|(k, _)| !METADATA.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !rest.is_empty() {
        out.push(' ');
        document(&mut out, &rest);
    }
    for (id, docs) in &cmd.sequences {
        let _ = write!(out, " +{} {id}", docs.len());
    }
    if out.len() > MAX_STATEMENT {
        let mut cut = MAX_STATEMENT;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str(" ...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn values_never_reach_the_record() {
        let c = Command::new(
            doc! {
                "find": "customers",
                "filter": { "email": "ann@example.com", "age": { "$gt": 30 } },
                "projection": { "name": 1 },
                "lsid": { "id": "secret-session" },
                "$db": "shop",
            },
            vec![],
        )
        .unwrap();
        let s = statement(&c);
        assert_eq!(
            s,
            "find shop.customers {filter: {email: ?, age: {$gt: ?}}, projection: {name: ?}}"
        );
        let agg = Command::new(
            doc! { "aggregate": "orders", "pipeline": [ { "$group": { "_id": "$region", "t": { "$sum": "$amount" } } } ], "cursor": {}, "$db": "shop" },
            vec![],
        )
        .unwrap();
        assert_eq!(
            statement(&agg),
            "aggregate shop.orders {pipeline: [{$group: {_id: \"$region\", t: {$sum: \"$amount\"}}}], cursor: {}}"
        );
        let ins = Command::new(
            doc! { "insert": "orders", "$db": "shop" },
            vec![("documents".into(), vec![doc! { "card": "4111" }, doc! {}])],
        )
        .unwrap();
        assert_eq!(statement(&ins), "insert shop.orders +2 documents");
        let huge = Command::new(doc! { "find": "o", "filter": { "$or": (0..5000).map(|i| Bson::Document(doc! { "a": i })).collect::<Vec<_>>() }, "$db": "s" }, vec![]).unwrap();
        assert!(statement(&huge).len() < MAX_STATEMENT + 200);
    }
}
