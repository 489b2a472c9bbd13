//! A MongoDB command as the policy reads it: the name (the first key of the body, exactly as
//! sent), `$db`, the collection it targets, the session and transaction fields, and the
//! document sequences of OP_MSG merged back in by name. Built from documents that already
//! passed strict BSON validation (no duplicate keys), so every lookup here is unambiguous.

use bson::{Bson, Document};

use crate::refusal::Refusal;

/// Refusals for commands that are not well-formed enough to judge.
pub const MALFORMED_RULE: &str = "builtin: malformed-command";

#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// The first key of the body.
    pub name: String,
    /// `$db`.
    pub db: String,
    pub body: Document,
    /// Kind-1 sections: identifier and documents (`documents`, `updates`, `deletes`).
    pub sequences: Vec<(String, Vec<Document>)>,
}

/// Database names MongoDB accepts (and nothing that could be read two ways).
pub fn valid_db_name(db: &str) -> bool {
    !db.is_empty()
        && db.len() <= 64
        && !db
            .chars()
            .any(|c| matches!(c, '/' | '\\' | '.' | ' ' | '"' | '$' | '\0') || c.is_control())
}

/// Collection names MongoDB accepts for agents (no `$`, no NUL, not empty).
pub fn valid_collection_name(c: &str) -> bool {
    !c.is_empty() && c.len() <= 255 && !c.contains(['$', '\0']) && !c.starts_with('.')
}

impl Command {
    pub fn new(
        body: Document,
        sequences: Vec<(String, Vec<Document>)>,
    ) -> Result<Command, Refusal> {
        let name = body
            .keys()
            .next()
            .cloned()
            .ok_or_else(|| Refusal::syntax(MALFORMED_RULE, "empty command document"))?;
        let db = match body.get("$db") {
            Some(Bson::String(s)) => s.clone(),
            Some(_) => return Err(Refusal::syntax(MALFORMED_RULE, "$db must be a string")),
            None => return Err(Refusal::syntax(MALFORMED_RULE, "the command has no $db")),
        };
        if !valid_db_name(&db) {
            return Err(Refusal::syntax(
                MALFORMED_RULE,
                format!("invalid database name {db:?}"),
            ));
        }
        Ok(Command {
            name,
            db,
            body,
            sequences,
        })
    }

    /// The value of the first key.
    pub fn target(&self) -> Option<&Bson> {
        self.body.get(&self.name)
    }

    /// The collection named by the first key, if it is a string.
    pub fn collection(&self) -> Option<&str> {
        match self.target()? {
            Bson::String(s) => Some(s),
            _ => None,
        }
    }

    /// `db.collection` of a collection-level command.
    pub fn namespace(&self) -> Option<String> {
        self.collection().map(|c| format!("{}.{c}", self.db))
    }

    pub fn lsid(&self) -> Option<&Document> {
        self.body.get_document("lsid").ok()
    }

    pub fn txn_number(&self) -> Option<i64> {
        self.body.get_i64("txnNumber").ok()
    }

    pub fn max_time_ms(&self) -> Option<i64> {
        match self.body.get("maxTimeMS")? {
            Bson::Int32(v) => Some((*v).into()),
            Bson::Int64(v) => Some(*v),
            Bson::Double(v) => Some(*v as i64),
            _ => None,
        }
    }

    pub fn comment(&self) -> Option<&Bson> {
        self.body.get("comment")
    }

    pub fn cursor_options(&self) -> Option<&Document> {
        self.body.get_document("cursor").ok()
    }

    /// The documents of an array field, whether sent in the body or as a document sequence.
    pub fn documents(&self, field: &str) -> Result<Vec<&Document>, Refusal> {
        if let Some((_, docs)) = self.sequences.iter().find(|(id, _)| id == field) {
            return Ok(docs.iter().collect());
        }
        match self.body.get(field) {
            None => Ok(Vec::new()),
            Some(Bson::Array(items)) => items
                .iter()
                .map(|b| match b {
                    Bson::Document(d) => Ok(d),
                    _ => Err(Refusal::syntax(
                        MALFORMED_RULE,
                        format!("{field} must hold documents"),
                    )),
                })
                .collect(),
            Some(_) => Err(Refusal::syntax(
                MALFORMED_RULE,
                format!("{field} must be an array"),
            )),
        }
    }

    /// Replaces the documents of an array field where they came from (body or sequence).
    pub fn set_documents(&mut self, field: &str, docs: Vec<Document>) {
        if let Some((_, seq)) = self.sequences.iter_mut().find(|(id, _)| id == field) {
            *seq = docs;
        } else {
            self.body.insert(
                field,
                Bson::Array(docs.into_iter().map(Bson::Document).collect()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn model() {
        let c = Command::new(
            doc! { "find": "orders", "filter": {}, "$db": "shop", "lsid": { "id": 1 }, "maxTimeMS": 5 },
            vec![],
        )
        .unwrap();
        assert_eq!(c.name, "find");
        assert_eq!(c.namespace().as_deref(), Some("shop.orders"));
        assert_eq!(c.max_time_ms(), Some(5));
        assert!(c.lsid().is_some());
        assert!(Command::new(doc! { "find": "x" }, vec![]).is_err());
        assert!(Command::new(doc! { "find": "x", "$db": "a.b" }, vec![]).is_err());
        assert!(Command::new(doc! { "find": "x", "$db": 1 }, vec![]).is_err());
        let mut ins = Command::new(
            doc! { "insert": "o", "$db": "shop" },
            vec![("documents".into(), vec![doc! { "_id": 1 }])],
        )
        .unwrap();
        assert_eq!(ins.documents("documents").unwrap().len(), 1);
        ins.set_documents("documents", vec![]);
        assert!(ins.documents("documents").unwrap().is_empty());
    }
}
