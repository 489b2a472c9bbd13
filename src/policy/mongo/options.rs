//! The parts of a command the decision reads besides its target: find's filter, sort,
//! projection, index bounds, hint and `returnKey`; `let` variables; an update's `u` (operators
//! or a pipeline); a view definition. Each is checked against the masked fields of the
//! documents it reads.

use bson::{Bson, Document};

use super::command::Command;
use super::decide::{malformed, need_doc};
use super::judge::{walk_error, Judge};
use super::path::{relation, Relation};
use super::pipeline::Source;
use super::query::{expr_refs, Refs};
use super::rules::{MaskedField, Op};
use crate::refusal::Refusal;

/// find's filter, sort, projection, min/max, hint, returnKey, let.
pub(super) fn read_options(
    j: &Judge,
    body: &Document,
    masks: &[MaskedField],
) -> Result<(), Refusal> {
    if let Some(f) = need_doc(body, "filter")? {
        j.query(f, masks, "a filter")?;
    }
    if let Some(s) = need_doc(body, "sort")? {
        j.keys(s, masks, "a sort")?;
    }
    if let Some(p) = need_doc(body, "projection")? {
        j.projection(p, masks, "a projection")?;
    }
    for bound in ["min", "max"] {
        if let Some(b) = need_doc(body, bound)? {
            j.keys(b, masks, "index bounds (min/max)")?;
        }
    }
    hint(j, body.get("hint"), masks)?;
    // returnKey answers with the index keys instead of the documents: the raw values of the
    // indexed fields under their dotted names (`address.zip`), text index terms, hashes.
    if let (true, Some(m)) = (truthy(body.get("returnKey")), masks.first()) {
        return Err(Refusal::permission(
            m.rule.clone(),
            "returnKey cannot be used on documents with masked fields (index keys hold their raw values)",
        )
        .with_instead("use a projection; masked fields come back masked"));
    }
    command_let(j, body)
}

/// A flag that is set: anything but absent, `false`, `null` or 0 (the server refuses other
/// types; here they count as set, which refuses rather than lets through).
pub(super) fn truthy(b: Option<&Bson>) -> bool {
    !matches!(
        b,
        None | Some(Bson::Null)
            | Some(Bson::Boolean(false))
            | Some(Bson::Int32(0))
            | Some(Bson::Int64(0))
    )
}

/// An index hint. A key pattern is judged as a sort is: the index orders the documents by
/// those fields (the first document an update or findAndModify takes, the order of a find),
/// and a sparse or partial index keeps only some. An index named by a string cannot be
/// checked, so it is refused where masks apply.
pub(super) fn hint(j: &Judge, h: Option<&Bson>, masks: &[MaskedField]) -> Result<(), Refusal> {
    match h {
        None | Some(Bson::Null) => Ok(()),
        Some(Bson::Document(k)) => j.keys(k, masks, "index hint"),
        Some(Bson::String(name)) => match masks.first() {
            None => Ok(()),
            Some(m) => {
                let paths: Vec<&str> = masks.iter().map(|m| m.path.as_str()).collect();
                Err(Refusal::permission(
                    m.rule.clone(),
                    format!(
                        "a hint by index name ({name}) cannot be checked against masked fields ({})",
                        paths.join(", ")
                    ),
                )
                .with_instead("hint by key pattern, e.g. {\"region\": 1}"))
            }
        },
        Some(_) => Err(malformed("hint must be a key pattern or an index name")),
    }
}

/// Command-level `let` variables: constants and expressions without a document.
pub(super) fn command_let(j: &Judge, body: &Document) -> Result<(), Refusal> {
    command_let_named(j, body, "let")
}

/// Variables given in `field` (`let`, an update statement's `c`): evaluated once, without a
/// document, so no masks apply, but no JavaScript or unknown operator either, and no field path
/// or `$$ROOT`/`$$CURRENT`: there is no document to read them from, and were a server to read
/// one, it would be read around the masks.
pub(super) fn command_let_named(j: &Judge, body: &Document, field: &str) -> Result<(), Refusal> {
    if let Some(l) = need_doc(body, field)? {
        for (name, v) in l {
            let mut r = Refs::default();
            expr_refs(v, &mut r).map_err(walk_error)?;
            j.check_refs(&r, &[], field)?;
            if let Some(p) = r.paths.first() {
                return Err(malformed(format!(
                    "{field} variable {name} reads field {p}: {field} is evaluated without a document"
                )));
            }
            if r.whole_document {
                return Err(malformed(format!(
                    "{field} variable {name} uses $$ROOT: {field} is evaluated without a document"
                )));
            }
        }
    }
    Ok(())
}

/// An update's `u`: operators, each path judged against the masked fields, or a pipeline
/// (walked like any other, against the collection's masks). A replacement document is a plain
/// write.
pub(super) fn update_spec(
    j: &mut Judge,
    db: &str,
    u: Option<&Bson>,
    masks: &[MaskedField],
) -> Result<(), Refusal> {
    match u {
        None | Some(Bson::Null) => Ok(()),
        Some(Bson::Document(d)) => {
            for (op, arg) in d {
                if !op.starts_with('$') {
                    // A replacement document: a plain write.
                    continue;
                }
                if !UPDATE_OPERATORS.contains(&op.as_str()) {
                    return Err(walk_error(super::query::WalkError::Unknown(op.clone())));
                }
                let Bson::Document(fields) = arg else {
                    return Err(malformed(format!("{op} needs a document")));
                };
                for (path, value) in fields {
                    update_path(op, path, value, masks)?;
                    if op == "$rename" {
                        let Bson::String(to) = value else {
                            return Err(malformed("$rename needs field names"));
                        };
                        update_path(op, to, value, masks)?;
                    }
                }
            }
            Ok(())
        }
        Some(Bson::Array(stages)) => {
            for s in stages {
                let ok = s
                    .as_document()
                    .and_then(|d| d.keys().next())
                    .is_some_and(|k| {
                        matches!(
                            k.as_str(),
                            "$addFields"
                                | "$set"
                                | "$project"
                                | "$unset"
                                | "$replaceRoot"
                                | "$replaceWith"
                        )
                    });
                if !ok {
                    return Err(malformed("an update pipeline may use $addFields, $set, $project, $unset, $replaceRoot, $replaceWith"));
                }
            }
            j.pipeline(db, Source::Stream(masks.to_vec()), stages, 1)
                .map(|_| ())
        }
        Some(_) => Err(malformed("an update must be a document or a pipeline")),
    }
}

/// One path of an update operator against the masked fields. Every operator but a plain
/// overwrite reads the old value (`$inc`, `$min`/`$max` compare, `$pull`/`$addToSet` match,
/// `$rename` moves it), and a path inside a masked field makes the server quote the field's
/// value in its error (`Cannot create field 'x' in element {ssn: ...}`). So on a masked field
/// only `$set`, `$unset` and `$setOnInsert` of the whole field (or of a field holding it) are
/// allowed; on a field holding masked fields also `$push` without `$sort` and `$pop`, which
/// add or remove elements without comparing them. Whether such a write changed the document
/// (`nModified`) is not shown for collections with masks (the reply plan reports every matched
/// document as modified).
fn update_path(op: &str, path: &str, value: &Bson, masks: &[MaskedField]) -> Result<(), Refusal> {
    for m in masks {
        let plain = match relation(path, &m.path) {
            Relation::Apart => continue,
            Relation::Inside => false,
            Relation::Same => OVERWRITES.contains(&op),
            Relation::Holds => {
                OVERWRITES.contains(&op)
                    || op == "$pop"
                    || (op == "$push"
                        && !matches!(value, Bson::Document(d) if d.contains_key("$sort")))
            }
        };
        if !plain {
            return Err(Refusal::permission(
                m.rule.clone(),
                format!(
                    "field {} is masked: {op} of {path} would read or reveal its value",
                    m.path
                ),
            )
            .with_instead(format!(
                "overwrite {} whole with $set, or remove it with $unset",
                m.path
            )));
        }
    }
    Ok(())
}

/// Update operators that overwrite or remove a value without reading it.
const OVERWRITES: [&str; 3] = ["$set", "$unset", "$setOnInsert"];

const UPDATE_OPERATORS: [&str; 15] = [
    "$set",
    "$unset",
    "$inc",
    "$mul",
    "$min",
    "$max",
    "$currentDate",
    "$setOnInsert",
    "$push",
    "$pull",
    "$pullAll",
    "$addToSet",
    "$pop",
    "$rename",
    "$bit",
];

/// `create`/`collMod` of a view: the view reads `viewOn` through its pipeline; a view over a
/// protected collection would be a way around its masks and row filters.
pub(super) fn view_definition(
    j: &mut Judge,
    cmd: &Command,
    body: &Document,
) -> Result<(), Refusal> {
    let Some(on) = body.get("viewOn") else {
        if body.contains_key("pipeline") {
            return Err(malformed("a view pipeline needs viewOn"));
        }
        return Ok(());
    };
    let Bson::String(on) = on else {
        return Err(malformed("viewOn must be a collection name"));
    };
    let ns = format!("{}.{on}", cmd.db);
    j.access(&ns, Op::Aggregate)?;
    let p = j.rules.protection_of(&ns);
    if let Some(r) = p
        .masks
        .first()
        .map(|m| m.rule.clone())
        .or(p.filters.first().map(|f| f.1.clone()))
    {
        return Err(Refusal::permission(
            r,
            format!("a view on {ns} would bypass its masks and row filters"),
        ));
    }
    let stages = match body.get("pipeline") {
        None => Vec::new(),
        Some(Bson::Array(a)) => a.clone(),
        Some(_) => return Err(malformed("pipeline must be an array")),
    };
    j.pipeline(&cmd.db, Source::Collection(ns), &stages, 1)?;
    Ok(())
}
