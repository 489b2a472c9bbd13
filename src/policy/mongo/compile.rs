//! Validating `[[mongo]]` blocks (errors with file:line:col) and merging them into an agent's
//! `MongoRules`: union of allows, every deny kept, JavaScript allowed if any file allows it.

use std::collections::BTreeSet;
use std::path::Path;

use bson::{Bson, Document};
use toml::Spanned;

use super::file::MongoBlock;
use super::query::check_row_filter;
use super::rules::{CollectionMatcher, MongoRules, OpSet};
use crate::config::SourceError;
use crate::policy::file::Profile;
use crate::policy::glob::Glob;
use crate::policy::mask::MaskStrategy;
use crate::policy::PolicyContext;

/// Diagnostic stages and commands a policy may allow by name.
pub const DIAGNOSTICS: [&str; 6] = [
    "$collStats",
    "$indexStats",
    "$planCacheStats",
    "collStats",
    "dbStats",
    "explain",
];

fn at<T>(path: &Path, text: &str, s: &Spanned<T>, message: String) -> SourceError {
    SourceError::at(path, text, s.span().start, message)
}

/// Plain JSON to BSON (integers that fit stay integers).
pub fn json_to_bson(v: &serde_json::Value) -> Bson {
    use serde_json::Value;
    match v {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) if i32::try_from(i).is_ok() => Bson::Int32(i as i32),
            (Some(i), _) => Bson::Int64(i),
            (None, Some(f)) => Bson::Double(f),
            _ => Bson::Null,
        },
        Value::String(s) => Bson::String(s.clone()),
        Value::Array(a) => Bson::Array(a.iter().map(json_to_bson).collect()),
        Value::Object(o) => Bson::Document(
            o.iter()
                .map(|(k, v)| (k.clone(), json_to_bson(v)))
                .collect::<Document>(),
        ),
    }
}

/// A row filter: a JSON object that is a query document tollgate understands, with no
/// JavaScript.
pub fn parse_row_filter(text: &str) -> Result<Document, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("row_filter is not JSON: {e}"))?;
    let Bson::Document(doc) = json_to_bson(&value) else {
        return Err("row_filter must be a JSON object (a query document)".into());
    };
    check_row_filter(&doc).map_err(|e| format!("row_filter: {e}"))?;
    Ok(doc)
}

fn valid_namespace_pattern(name: &str) -> bool {
    name == "*"
        || name.split_once('.').is_some_and(|(db, coll)| {
            !db.is_empty() && !coll.is_empty() && !db.contains(['/', '\\', ' ', '"', '$'])
        })
}

fn valid_field_path(path: &str) -> bool {
    !path.is_empty()
        && path
            .split('.')
            .all(|part| !part.is_empty() && !part.starts_with('$'))
}

pub fn validate(
    path: &Path,
    text: &str,
    blocks: &[MongoBlock],
    ctx: &PolicyContext,
) -> Result<(), SourceError> {
    let mut seen = BTreeSet::new();
    for block in blocks {
        let up = block.upstream.get_ref();
        ctx.check_upstream(up, crate::config::UpstreamKind::Mongodb, "mongo")
            .map_err(|e| at(path, text, &block.upstream, e))?;
        if !seen.insert(up.clone()) {
            return Err(at(
                path,
                text,
                &block.upstream,
                format!("upstream \"{up}\" has two [[mongo]] blocks in this file"),
            ));
        }
        for d in &block.diagnostics {
            if !DIAGNOSTICS.contains(&d.get_ref().as_str()) {
                return Err(at(
                    path,
                    text,
                    d,
                    format!(
                        "unknown diagnostic \"{}\" (known: {})",
                        d.get_ref(),
                        DIAGNOSTICS.join(", ")
                    ),
                ));
            }
        }
        let mut names = BTreeSet::new();
        for c in &block.collections {
            let name = c.name.get_ref();
            if !valid_namespace_pattern(name) {
                return Err(at(
                    path,
                    text,
                    &c.name,
                    format!("collection \"{name}\" must be `database.collection` (globs allowed) or `*`"),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(at(
                    path,
                    text,
                    &c.name,
                    format!("collection \"{name}\" is named twice for upstream \"{up}\""),
                ));
            }
            for w in c.allow.iter().chain(&c.deny) {
                if OpSet::parse_word(w.get_ref()).is_none() {
                    return Err(at(
                        path,
                        text,
                        w,
                        format!(
                            "unknown operation \"{}\" (known: {})",
                            w.get_ref(),
                            OpSet::WORDS
                        ),
                    ));
                }
            }
            for (field, strategy) in &c.mask {
                if !valid_field_path(field) {
                    return Err(at(
                        path,
                        text,
                        strategy,
                        format!("masked field \"{field}\" of \"{name}\" is not a field path"),
                    ));
                }
                if let Err(e) = MaskStrategy::parse(strategy.get_ref()) {
                    return Err(at(
                        path,
                        text,
                        strategy,
                        format!("field \"{field}\" of \"{name}\": {e}"),
                    ));
                }
            }
            if let Some(f) = &c.row_filter {
                parse_row_filter(f.get_ref()).map_err(|e| at(path, text, f, e))?;
            }
        }
    }
    Ok(())
}

fn ops(words: &[Spanned<String>]) -> OpSet {
    words
        .iter()
        .filter_map(|w| OpSet::parse_word(w.get_ref()))
        .fold(OpSet::default(), OpSet::union)
}

pub fn merge(rules: &mut MongoRules, stem: &str, block: &MongoBlock) {
    rules.sources.push(stem.to_string());
    rules.passthrough |= block.profile == Profile::Passthrough;
    if block.javascript && rules.javascript.is_none() {
        rules.javascript = Some(format!("{stem}: javascript"));
    }
    for d in &block.diagnostics {
        rules.diagnostics.push((
            d.get_ref().clone(),
            format!("{stem}: diagnostics {}", d.get_ref()),
        ));
    }
    for c in &block.collections {
        let name = c.name.get_ref();
        rules.collections.push(CollectionMatcher {
            glob: Glob::new(name),
            allow: ops(&c.allow),
            deny: ops(&c.deny),
            rule: format!("{stem}: collection {name}"),
            masks: c
                .mask
                .iter()
                .filter_map(|(f, s)| Some((f.clone(), MaskStrategy::parse(s.get_ref()).ok()?)))
                .collect(),
            row_filter: c
                .row_filter
                .as_ref()
                .and_then(|f| parse_row_filter(f.get_ref()).ok()),
        });
    }
}
