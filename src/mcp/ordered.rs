//! Tool arguments in the order the client wrote them. rmcp hands a tool its arguments as a
//! `serde_json::Map`, which sorts keys; MongoDB reads key order (a sort on `{b: 1, a: -1}` is not
//! a sort on `{a: -1, b: 1}`, an embedded document matches only in its own order). So the
//! authentication middleware keeps the request body ([`RawBody`]) and the MongoDB tools read the
//! call's arguments from it again, in order, straight into BSON. Duplicate keys are refused
//! (which one would count?); Extended JSON wrappers (`{"$oid": …}`, `{"$date": …}`,
//! `{"$numberLong": …}`, …) are read by the bson crate. Nothing here judges anything: the
//! documents become a command that the policy engine judges as it would a wire command.

use std::fmt;

use bson::{Bson, Document};
use bytes::Bytes;
use rmcp::model::RequestId;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// The body of an authenticated POST, for the tools that need its key order.
#[derive(Clone)]
pub struct RawBody(pub Bytes);

/// A JSON value with its object members in the order written.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        serde_json::Number::from_f64(v)
            .map(Json::Number)
            .ok_or_else(|| E::custom("a number JSON cannot hold"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element()? {
            items.push(v);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members: Vec<(String, Json)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value()?;
            members.push((key, value));
        }
        // Checked once the object is read, through a set: comparing each key with those before
        // it cost a square of the count (an object of 100,000 keys: billions of comparisons).
        let mut seen = std::collections::HashSet::with_capacity(members.len());
        if let Some((key, _)) = members.iter().find(|(k, _)| !seen.insert(k.as_str())) {
            return Err(de::Error::custom(format!(
                "duplicate key \"{}\": ambiguous documents are refused",
                crate::session::shown_name(key.as_bytes())
            )));
        }
        Ok(Json::Object(members))
    }
}

/// Extended JSON wrappers (canonical and relaxed v2, and the legacy `$binary`/`$type`): an object
/// whose first key is one of these is one BSON value, read by the bson crate. `$regex` is left
/// out on purpose: in a filter it is the query operator.
const WRAPPERS: &[&str] = &[
    "$oid",
    "$symbol",
    "$numberInt",
    "$numberLong",
    "$numberDouble",
    "$numberDecimal",
    "$binary",
    "$uuid",
    "$code",
    "$timestamp",
    "$regularExpression",
    "$dbPointer",
    "$date",
    "$minKey",
    "$maxKey",
    "$undefined",
];

impl Json {
    /// As a `serde_json::Value` (for the bson crate's Extended JSON reader, and the request
    /// screen; order is lost, which inside a wrapper, and for the screen, does not matter).
    pub fn into_value(self) -> serde_json::Value {
        match self {
            Json::Null => serde_json::Value::Null,
            Json::Bool(b) => b.into(),
            Json::Number(n) => serde_json::Value::Number(n),
            Json::String(s) => s.into(),
            Json::Array(a) => a.into_iter().map(Json::into_value).collect(),
            Json::Object(m) => {
                serde_json::Value::Object(m.into_iter().map(|(k, v)| (k, v.into_value())).collect())
            }
        }
    }

    /// The value as BSON, documents in the order written.
    pub fn into_bson(self) -> Result<Bson, String> {
        match self {
            Json::Object(members) => {
                let wrapper = members
                    .first()
                    .map(|(k, _)| k.clone())
                    .filter(|k| WRAPPERS.contains(&k.as_str()));
                match wrapper {
                    Some(w) => {
                        let companion = members.get(1).map(|(k, _)| k.as_str());
                        let allowed = match (w.as_str(), companion) {
                            (_, None) => members.len() == 1,
                            ("$code", Some("$scope")) | ("$binary", Some("$type")) => {
                                members.len() == 2
                            }
                            _ => false,
                        };
                        if !allowed {
                            return Err(format!("an Extended JSON {w} value takes no other keys"));
                        }
                        Bson::try_from(Json::Object(members).into_value())
                            .map_err(|e| format!("invalid Extended JSON {w} value: {e}"))
                    }
                    None => {
                        let mut doc = Document::new();
                        for (k, v) in members {
                            doc.insert(k, v.into_bson()?);
                        }
                        Ok(Bson::Document(doc))
                    }
                }
            }
            Json::Array(items) => Ok(Bson::Array(
                items
                    .into_iter()
                    .map(Json::into_bson)
                    .collect::<Result<_, _>>()?,
            )),
            other => Bson::try_from(other.into_value()).map_err(|e| e.to_string()),
        }
    }
}

/// The members of a tool call's `arguments` object.
pub type Arguments = Vec<(String, Json)>;

#[derive(Deserialize)]
struct Call {
    id: serde_json::Value,
    params: Params,
}

#[derive(Deserialize)]
struct Params {
    name: String,
    arguments: Option<Json>,
}

/// The arguments of tool call `id` of tool `name`, read from the request body in order.
pub fn arguments(raw: &RawBody, id: &RequestId, name: &str) -> Result<Arguments, String> {
    let call: Call = serde_json::from_slice(&raw.0).map_err(|e| e.to_string())?;
    let id = serde_json::to_value(id).map_err(|e| e.to_string())?;
    if call.id != id || call.params.name != name {
        return Err("the request body is not this tool call".into());
    }
    match call.params.arguments {
        None | Some(Json::Null) => Ok(Vec::new()),
        Some(Json::Object(m)) => Ok(m),
        Some(_) => Err("arguments must be an object".into()),
    }
}

/// Argument `key` as a BSON document (absent or null: `None`).
pub fn document(args: &Arguments, key: &str) -> Result<Option<Document>, String> {
    match args.iter().find(|(k, _)| k == key).map(|(_, v)| v) {
        None | Some(Json::Null) => Ok(None),
        Some(v @ Json::Object(_)) => match v.clone().into_bson()? {
            Bson::Document(d) => Ok(Some(d)),
            _ => Err(format!(
                "{key} must be a document, not an Extended JSON value"
            )),
        },
        Some(_) => Err(format!("{key} must be an object")),
    }
}

/// Argument `key` as an array of BSON documents (absent: `None`).
pub fn documents(args: &Arguments, key: &str) -> Result<Option<Vec<Bson>>, String> {
    match args.iter().find(|(k, _)| k == key).map(|(_, v)| v) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Array(items)) => items
            .iter()
            .map(|i| match i.clone().into_bson()? {
                d @ Bson::Document(_) => Ok(d),
                _ => Err(format!("each element of {key} must be an object")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(format!("{key} must be an array of objects")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn args(body: &str) -> Result<Arguments, String> {
        arguments(
            &RawBody(Bytes::from(body.to_string())),
            &RequestId::Number(7),
            "find",
        )
    }

    #[test]
    fn documents_keep_the_order_written_and_read_extended_json() {
        let a = args(
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"find","arguments":{
                "sort":{"region":1,"amount":-1},
                "filter":{"_id":{"$numberLong":"9007199254740993"},"at":{"$date":"2024-01-02T03:04:05Z"},
                          "email":{"$regex":"^a"},"who":{"z":1,"a":2}}}}}"#,
        )
        .unwrap();
        let sort = document(&a, "sort").unwrap().unwrap();
        assert_eq!(sort, doc! { "region": 1, "amount": -1 });
        assert_eq!(
            sort.keys().collect::<Vec<_>>(),
            ["region", "amount"],
            "not sorted by name"
        );
        let f = document(&a, "filter").unwrap().unwrap();
        assert_eq!(f.get("_id"), Some(&Bson::Int64(9007199254740993)));
        assert!(matches!(f.get("at"), Some(Bson::DateTime(_))));
        assert_eq!(
            f.get_document("email").unwrap(),
            &doc! { "$regex": "^a" },
            "$regex stays the query operator"
        );
        assert_eq!(
            f.get_document("who").unwrap().keys().collect::<Vec<_>>(),
            ["z", "a"]
        );
        assert_eq!(document(&a, "projection").unwrap(), None);
    }

    #[test]
    fn ambiguous_or_foreign_bodies_are_refused() {
        let dup = args(r#"{"id":7,"params":{"name":"find","arguments":{"filter":{"a":1,"a":2}}}}"#);
        assert!(dup.unwrap_err().contains("duplicate key"));
        assert!(args(r#"{"id":8,"params":{"name":"find","arguments":{}}}"#).is_err());
        assert!(args(r#"{"id":7,"params":{"name":"aggregate","arguments":{}}}"#).is_err());
        let a = args(
            r#"{"id":7,"params":{"name":"find","arguments":{"filter":{"x":{"$oid":"0123456789abcdef01234567","y":1}},
               "pipeline":[{"$match":{}}, 3]}}}"#,
        )
        .unwrap();
        assert!(document(&a, "filter")
            .unwrap_err()
            .contains("no other keys"));
        assert!(documents(&a, "pipeline").is_err());
        assert_eq!(
            args(r#"{"id":7,"params":{"name":"find"}}"#).unwrap(),
            Vec::new()
        );
    }
}
