//! The admin API's view of a MongoDB upstream: its databases and collections (the server's own
//! `admin`, `local` and `config` left out) and the field names seen in a sample of each
//! collection's documents, read over a side connection with the vaulted login.

use std::collections::BTreeSet;
use std::time::Duration;

use bson::{doc, Bson, Document};

use super::door::MongoUpstream;
use super::reply::is_error;
use super::upstream::MongoConnection;
use crate::doors::CollectionShape;

/// Documents sampled per collection, collections read at most, nesting followed.
const SAMPLE: i32 = 20;
const MAX_COLLECTIONS: usize = 200;
const MAX_DEPTH: usize = 3;

/// Dotted field paths of `d` (nested documents followed to `MAX_DEPTH`).
pub fn field_paths(d: &Document, prefix: &str, depth: usize, out: &mut BTreeSet<String>) {
    for (k, v) in d {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if let (Bson::Document(inner), true) = (v, depth + 1 < MAX_DEPTH) {
            field_paths(inner, &path, depth + 1, out);
        }
        out.insert(path);
    }
}

fn batch(reply: &Document) -> Vec<Document> {
    reply
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .map(|a| a.iter().filter_map(|b| b.as_document().cloned()).collect())
        .unwrap_or_default()
}

async fn read(conn: &mut MongoConnection) -> Result<Vec<CollectionShape>, String> {
    let failed = |what: &str| format!("the upstream refused {what}");
    let dbs = conn
        .command(&doc! { "listDatabases": 1, "nameOnly": true, "$db": "admin" })
        .await
        .map_err(|e| e.to_string())?;
    if is_error(&dbs) {
        return Err(failed("listDatabases"));
    }
    let mut out = Vec::new();
    let names: Vec<String> = dbs
        .get_array("databases")
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_document()?.get_str("name").ok().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for db in names
        .into_iter()
        .filter(|d| !matches!(d.as_str(), "admin" | "local" | "config"))
    {
        let colls = conn
            .command(&doc! { "listCollections": 1, "nameOnly": true, "$db": db.as_str() })
            .await
            .map_err(|e| e.to_string())?;
        if is_error(&colls) {
            return Err(failed("listCollections"));
        }
        let mut names: Vec<String> = batch(&colls)
            .iter()
            .filter_map(|c| c.get_str("name").ok().map(str::to_string))
            .filter(|n| !n.starts_with("system."))
            .collect();
        names.sort();
        for name in names {
            if out.len() >= MAX_COLLECTIONS {
                return Ok(out);
            }
            let sample = conn
                .command(&doc! {
                    "find": name.as_str(), "limit": SAMPLE, "batchSize": SAMPLE,
                    "singleBatch": true, "$db": db.as_str(),
                })
                .await
                .map_err(|e| e.to_string())?;
            let mut fields = BTreeSet::new();
            for d in batch(&sample) {
                field_paths(&d, "", 0, &mut fields);
            }
            out.push(CollectionShape {
                database: db.clone(),
                name,
                fields: fields.into_iter().collect(),
            });
        }
    }
    Ok(out)
}

/// Every collection of `up` with its sampled field names.
pub async fn collections(
    up: &MongoUpstream,
    timeout: Duration,
) -> Result<Vec<CollectionShape>, String> {
    let mut conn = up.connect(timeout).await.map_err(|e| e.to_string())?;
    tokio::time::timeout(timeout * 4, read(&mut conn))
        .await
        .map_err(|_| "the upstream did not answer in time".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_fields_are_dotted_and_bounded() {
        let mut out = BTreeSet::new();
        field_paths(
            &doc! { "a": 1, "b": { "c": 1, "d": { "e": { "f": 1 } } } },
            "",
            0,
            &mut out,
        );
        let v: Vec<&str> = out.iter().map(String::as_str).collect();
        assert_eq!(v, ["a", "b", "b.c", "b.d", "b.d.e"]);
    }
}
