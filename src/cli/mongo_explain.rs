//! `tollgate explain` for a MongoDB upstream: the command given as JSON (with its `$db`), the
//! decision, the rule, the namespaces it touches, what the reply is masked or cut with, and the
//! command tollgate would forward (row filters injected, `maxTimeMS` capped). No connection to
//! the upstream is needed: MongoDB policy depends on the command alone.

use bson::Bson;

use crate::policy::mongo::{Command, MongoPolicy, ReplyPlan};
use crate::policy::{Engine, Outcome};

/// JSON read into BSON with the keys in the order written (the first key of a command is its
/// name; a sort's keys are its order).
struct Ordered(Bson);

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Ordered, D::Error> {
        d.deserialize_any(OrderedVisitor).map(Ordered)
    }
}

struct OrderedVisitor;

impl<'de> serde::de::Visitor<'de> for OrderedVisitor {
    type Value = Bson;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Bson, E> {
        Ok(Bson::Boolean(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Bson, E> {
        Ok(i32::try_from(v).map(Bson::Int32).unwrap_or(Bson::Int64(v)))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Bson, E> {
        i64::try_from(v)
            .map(|v| self.visit_i64::<E>(v).expect("infallible"))
            .map_err(|_| E::custom("integer out of range"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Bson, E> {
        Ok(Bson::Double(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Bson, E> {
        Ok(Bson::String(v.to_string()))
    }
    fn visit_unit<E>(self) -> Result<Bson, E> {
        Ok(Bson::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Bson, A::Error> {
        let mut v = Vec::new();
        while let Some(Ordered(b)) = a.next_element()? {
            v.push(b);
        }
        Ok(Bson::Array(v))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Bson, A::Error> {
        let mut d = bson::Document::new();
        while let Some((k, Ordered(v))) = a.next_entry::<String, Ordered>()? {
            if d.contains_key(&k) {
                return Err(serde::de::Error::custom(format!("duplicate key \"{k}\"")));
            }
            d.insert(k, v);
        }
        Ok(Bson::Document(d))
    }
}

/// The command text as a document: a JSON object (operators and `$db` as keys).
pub fn parse_command(text: &str) -> Result<Command, String> {
    let Ordered(value) =
        serde_json::from_str(text).map_err(|e| format!("the command is not JSON: {e}"))?;
    let Bson::Document(body) = value else {
        return Err(
            "the command must be a JSON object, e.g. '{\"find\": \"orders\", \"$db\": \"shop\"}'"
                .into(),
        );
    };
    if !body.contains_key("$db") {
        return Err(
            "add the database as \"$db\", e.g. '{\"find\": \"orders\", \"$db\": \"shop\"}'".into(),
        );
    }
    Command::new(body, Vec::new()).map_err(|r| r.message())
}

pub fn explain(
    engine: &Engine,
    agent: &str,
    upstream: &str,
    login_db: &str,
    statement: &str,
) -> Result<i32, String> {
    let cmd = parse_command(statement)?;
    let mut policy = MongoPolicy::new(agent.into(), upstream.into()).with_login_db(login_db);
    let verdict = policy.check(engine, &cmd);
    let masked = verdict
        .judged
        .as_ref()
        .is_some_and(|j| matches!(j.reply, ReplyPlan::Documents(_) | ReplyPlan::Values(_)));
    let rewritten = verdict.judged.as_ref().and_then(|j| j.rewritten.as_ref());
    let decision = match verdict.outcome {
        Outcome::Block => "blocked",
        Outcome::WouldBlock => "would_block (shadow policy: the command runs)",
        Outcome::Allow if masked => "masked",
        Outcome::Allow if rewritten.is_some() => "rewritten",
        Outcome::Allow => "allowed",
    };
    say!("command:   {}", crate::mongo::audit::statement(&cmd));
    if let Some(j) = &verdict.judged {
        say!("operation: {}", j.operation);
        for ns in &j.namespaces {
            say!("namespace: {ns}");
        }
    }
    say!("decision:  {decision}");
    match (
        &verdict.denial,
        verdict.judged.as_ref().and_then(|j| j.rule.as_ref()),
    ) {
        (Some(d), _) => {
            say!("rule:      {}", d.rule);
            say!("reason:    {}", d.reason);
            if let Some(h) = d.hint() {
                say!("hint:      {h}");
            }
        }
        (None, Some(rule)) => say!("rule:      {rule}"),
        (None, None) => {}
    }
    if let Some(j) = &verdict.judged {
        match &j.reply {
            ReplyPlan::None => {}
            ReplyPlan::Documents(m) => {
                for f in m {
                    say!("mask:      {} = {} ({})", f.path, f.strategy, f.rule);
                }
            }
            ReplyPlan::Values(f) => {
                say!(
                    "mask:      distinct values of {} = {} ({})",
                    f.path, f.strategy, f.rule
                )
            }
            ReplyPlan::Collections { db } => {
                say!("reply:     collections of {db} cut to those the agent may see")
            }
            ReplyPlan::Databases => say!("reply:     databases cut to those the agent may see"),
            ReplyPlan::Writes => say!(
                "reply:     error details that could quote masked values withheld; nModified counts every matched document"
            ),
        }
    }
    if let Some(rw) = rewritten {
        let mut body = rw.body.clone();
        for (id, docs) in &rw.sequences {
            body.insert(
                id.clone(),
                docs.iter().cloned().map(Bson::Document).collect::<Vec<_>>(),
            );
        }
        say!("forwarded: {body}");
    }
    // max_rows caps the documents of a cursor across its batches on this door.
    super::admin_cmds::say_limits(engine, agent);
    let limits = policy.limits();
    if let Some((n, rule)) = &limits.max_rows {
        say!(
            "limit:     at most {n} documents per cursor ({}; {rule})",
            limits.on_max_rows.name()
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_json_objects_with_a_database() {
        let c =
            parse_command(r#"{"find": "orders", "filter": {"_id": {"$gt": 5}}, "$db": "shop"}"#)
                .unwrap();
        assert_eq!(c.namespace().as_deref(), Some("shop.orders"));
        assert!(parse_command(r#"{"find": "orders"}"#)
            .unwrap_err()
            .contains("$db"));
        assert!(parse_command("[1]").unwrap_err().contains("JSON object"));
        assert!(parse_command("{find").unwrap_err().contains("not JSON"));
        let e = parse_command(r#"{"find": "a", "find": "b", "$db": "shop"}"#).unwrap_err();
        assert!(e.contains("duplicate key"), "{e}");
    }
}
