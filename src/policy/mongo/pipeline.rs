//! The aggregation walker: every stage and every expression of a pipeline and its
//! sub-pipelines. It checks each collection a stage reads (`$lookup`, `$graphLookup`,
//! `$unionWith`) or writes (`$out`, `$merge`), follows masked fields through the pipeline (a
//! joined collection's masks move under the `as` field; `$facet` outputs under the facet name),
//! refuses any use of a masked field that would shape the result, puts each collection's row
//! filter first in the pipeline that reads it, and refuses stages it does not know.

use bson::{doc, Bson, Document};

use super::judge::{walk_error, Judge, RESERVED_RULE, UNKNOWN_RULE};
use super::query::WalkError;
use super::rules::{MaskedField, Op};
use crate::refusal::{Refusal, RefusalClass};

/// Sub-pipelines nested deeper than this are refused.
const MAX_PIPELINE_DEPTH: usize = 16;

/// Where a pipeline's documents come from.
pub enum Source {
    /// A collection (`db.coll`): its row filter goes first, its masks apply.
    Collection(String),
    /// Documents of an enclosing pipeline (`$facet`), with their masks.
    Stream(Vec<MaskedField>),
    /// A database-level aggregate (`aggregate: 1`): only source stages may start it.
    Database,
}

/// Stages that must come first (no `$match` may precede them).
const FIRST_STAGES: [&str; 10] = [
    "$changeStream",
    "$collStats",
    "$indexStats",
    "$planCacheStats",
    "$geoNear",
    "$search",
    "$searchMeta",
    "$vectorSearch",
    "$documents",
    "$currentOp",
];

/// Stages that show other sessions' activity (every agent shares the upstream user).
const OTHERS_ACTIVITY: [&str; 6] = [
    "$currentOp",
    "$listSessions",
    "$listLocalSessions",
    "$listSampledQueries",
    "$querySettings",
    "$listCachedAndActiveUsers",
];

fn malformed(m: impl Into<String>) -> Refusal {
    walk_error(WalkError::Malformed(m.into()))
}

fn stage_of(b: &Bson) -> Result<(&str, &Bson), Refusal> {
    match b {
        Bson::Document(d) if d.len() == 1 => {
            let (k, v) = d.iter().next().expect("one key");
            if k.starts_with('$') {
                return Ok((k.as_str(), v));
            }
            Err(malformed(format!("\"{k}\" is not a pipeline stage")))
        }
        _ => Err(malformed(
            "each pipeline stage is a document with one $stage key",
        )),
    }
}

/// `coll` or `{db, coll}` of a stage argument, as a namespace.
fn namespace_of(db: &str, b: Option<&Bson>, what: &str) -> Result<String, Refusal> {
    let (d, c) = match b {
        Some(Bson::String(c)) => (db.to_string(), c.clone()),
        Some(Bson::Document(x)) => (
            x.get_str("db").unwrap_or(db).to_string(),
            x.get_str("coll")
                .map_err(|_| malformed(format!("{what} needs a collection")))?
                .to_string(),
        ),
        _ => return Err(malformed(format!("{what} needs a collection"))),
    };
    if !super::command::valid_db_name(&d) || !super::command::valid_collection_name(&c) {
        return Err(malformed(format!("{what}: invalid namespace {d}.{c}")));
    }
    Ok(format!("{d}.{c}"))
}

fn prefixed(prefix: &str, masks: &[MaskedField]) -> Vec<MaskedField> {
    masks
        .iter()
        .map(|m| MaskedField {
            path: format!("{prefix}.{}", m.path),
            ..m.clone()
        })
        .collect()
}

fn stages(b: Option<&Bson>, what: &str) -> Result<Vec<Bson>, Refusal> {
    match b {
        None => Ok(Vec::new()),
        Some(Bson::Array(a)) => Ok(a.clone()),
        Some(_) => Err(malformed(format!("{what} must be an array of stages"))),
    }
}

impl Judge<'_> {
    /// Walks `pipeline` reading from `source` in database `db`. Returns the pipeline to forward
    /// (row filters in place) and the masked fields of the documents it outputs.
    pub fn pipeline(
        &mut self,
        db: &str,
        source: Source,
        pipeline: &[Bson],
        depth: usize,
    ) -> Result<(Vec<Bson>, Vec<MaskedField>), Refusal> {
        if depth > MAX_PIPELINE_DEPTH {
            return Err(Refusal::new(
                RefusalClass::Unsupported,
                UNKNOWN_RULE,
                format!("sub-pipelines nested more than {MAX_PIPELINE_DEPTH} deep"),
            ));
        }
        let mut out = Vec::with_capacity(pipeline.len() + 1);
        let (mut masks, filter, source_ns) = match &source {
            Source::Collection(ns) => {
                let p = self.rules.protection_of(ns);
                (p.masks.clone(), p.filter(), Some(ns.clone()))
            }
            Source::Stream(m) => (m.clone(), None, None),
            Source::Database => (Vec::new(), None, None),
        };
        let mut filter = filter;
        for (i, stage) in pipeline.iter().enumerate() {
            let (name, arg) = stage_of(stage)?;
            if FIRST_STAGES.contains(&name) && i != 0 {
                return Err(malformed(format!("{name} must be the first stage")));
            }
            if i == 0 {
                if let Some(f) = filter.take() {
                    if name == "$geoNear" {
                        let mut g = arg
                            .as_document()
                            .cloned()
                            .ok_or_else(|| malformed("$geoNear needs a document"))?;
                        let q = match g.get_document("query") {
                            Ok(q) if !q.is_empty() => doc! { "$and": [q.clone(), f] },
                            _ => f,
                        };
                        g.insert("query", q);
                        let masks_now = masks.clone();
                        self.geo_near(&g, &masks_now)?;
                        out.push(Bson::Document(doc! { "$geoNear": g }));
                        continue;
                    }
                    if FIRST_STAGES.contains(&name) {
                        return Err(Refusal::permission(
                            self.rules
                                .protection_of(source_ns.as_deref().unwrap_or(""))
                                .filters
                                .first()
                                .map(|(_, r)| r.clone())
                                .unwrap_or_default(),
                            format!(
                                "{name} cannot be used on {}: its row filter cannot be applied",
                                source_ns.as_deref().unwrap_or("")
                            ),
                        ));
                    }
                    out.push(Bson::Document(doc! { "$match": f }));
                }
            }
            let (stage, next) = self.stage(db, &source, &source_ns, name, arg, &masks, depth)?;
            out.push(stage);
            masks = next;
        }
        if let Some(f) = filter {
            // An empty pipeline still reads the collection.
            out.push(Bson::Document(doc! { "$match": f }));
        }
        Ok((out, masks))
    }

    fn geo_near(&self, g: &Document, masks: &[MaskedField]) -> Result<(), Refusal> {
        if let Ok(q) = g.get_document("query") {
            self.query(q, masks, "a $geoNear query")?;
        }
        match g.get_str("key") {
            Ok(k) => self.check_refs(
                &super::query::Refs {
                    paths: vec![k.to_string()],
                    ..Default::default()
                },
                masks,
                "a $geoNear key",
            )?,
            // Without `key` the server picks the geospatial index, which may be over a masked
            // field: the distances and the order would be computed from its raw values.
            Err(_) => {
                if let Some(m) = masks.first() {
                    return Err(Refusal::permission(
                        m.rule.clone(),
                        "$geoNear on documents with masked fields needs `key` (the indexed field), so that it can be checked",
                    )
                    .with_instead("name the location field: {\"key\": \"location\", ...}"));
                }
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn stage(
        &mut self,
        db: &str,
        source: &Source,
        source_ns: &Option<String>,
        name: &str,
        arg: &Bson,
        masks: &[MaskedField],
        depth: usize,
    ) -> Result<(Bson, Vec<MaskedField>), Refusal> {
        let same = |a: &Bson| Ok((Bson::Document(doc! { name: a.clone() }), masks.to_vec()));
        let doc_arg = || {
            arg.as_document()
                .ok_or_else(|| malformed(format!("{name} needs a document")))
        };
        match name {
            "$match" => {
                self.query(doc_arg()?, masks, "a $match")?;
                same(arg)
            }
            "$limit" | "$skip" | "$sample" | "$unset" => same(arg),
            "$count" => Ok((Bson::Document(doc! { name: arg.clone() }), Vec::new())),
            "$sort" => {
                self.keys(doc_arg()?, masks, "a $sort")?;
                same(arg)
            }
            "$project" => {
                self.projection(doc_arg()?, masks, "a $project")?;
                same(arg)
            }
            "$addFields" | "$set" => {
                for (_, v) in doc_arg()? {
                    self.expr(v, masks, name)?;
                }
                same(arg)
            }
            "$redact" => {
                // $redact evaluates its expression at every level of every document, where
                // `$ssn` names any embedded `ssn`: masks, which name paths from the top, cannot
                // follow it.
                if let Some(m) = masks.first() {
                    return Err(Refusal::permission(
                        m.rule.clone(),
                        format!(
                            "$redact is refused on documents with masked fields (field {} is masked)",
                            m.path
                        ),
                    ));
                }
                self.expr(arg, masks, "$redact")?;
                same(arg)
            }
            "$group" => {
                for (_, v) in doc_arg()? {
                    self.expr(v, masks, "a $group")?;
                }
                Ok((Bson::Document(doc! { name: arg.clone() }), Vec::new()))
            }
            "$sortByCount" => {
                self.expr(arg, masks, "$sortByCount")?;
                Ok((Bson::Document(doc! { name: arg.clone() }), Vec::new()))
            }
            "$bucket" | "$bucketAuto" => {
                let d = doc_arg()?;
                for (k, v) in d {
                    match k.as_str() {
                        "groupBy" | "output" => self.expr(v, masks, name)?,
                        _ => {}
                    }
                }
                Ok((Bson::Document(doc! { name: arg.clone() }), Vec::new()))
            }
            "$replaceRoot" => {
                self.expr(doc_arg()?.get("newRoot").unwrap_or(&Bson::Null), masks, "$replaceRoot")?;
                Ok((Bson::Document(doc! { name: arg.clone() }), Vec::new()))
            }
            "$replaceWith" => {
                self.expr(arg, masks, "$replaceWith")?;
                Ok((Bson::Document(doc! { name: arg.clone() }), Vec::new()))
            }
            "$unwind" => {
                let path = match arg {
                    Bson::String(s) => s.clone(),
                    Bson::Document(d) => d.get_str("path").map_err(|_| malformed("$unwind needs a path"))?.to_string(),
                    _ => return Err(malformed("$unwind needs a path")),
                };
                // Unwinding a parent of masked fields keeps their paths (`c.email` stays
                // `c.email`), so their masks still apply; unwinding a masked field itself is
                // refused.
                let path = path.trim_start_matches('$');
                if let Some(m) = masks.iter().find(|m| super::path::within(path, &m.path)) {
                    return Err(Refusal::permission(
                        m.rule.clone(),
                        format!("field {} is masked: it cannot be unwound", m.path),
                    ));
                }
                same(arg)
            }
            "$densify" | "$fill" | "$setWindowFields" => {
                let mut r = super::query::Refs::default();
                for (k, v) in doc_arg()? {
                    match (k.as_str(), v) {
                        ("field", Bson::String(f)) => r.paths.push(f.clone()),
                        ("partitionByFields", Bson::Array(a)) => {
                            r.paths.extend(a.iter().filter_map(|x| x.as_str().map(String::from)))
                        }
                        ("sortBy", Bson::Document(s)) => r.paths.extend(s.keys().cloned()),
                        ("partitionBy", e) | ("output", e) => {
                            super::query::expr_refs(e, &mut r).map_err(walk_error)?
                        }
                        _ => {}
                    }
                }
                self.check_refs(&r, masks, name)?;
                same(arg)
            }
            "$geoNear" => {
                self.geo_near(doc_arg()?, masks)?;
                same(arg)
            }
            "$documents" => {
                if !matches!(source, Source::Database) {
                    return Err(malformed("$documents starts a database-level aggregate"));
                }
                self.expr(arg, masks, "$documents")?;
                Ok((Bson::Document(doc! { name: arg.clone() }), Vec::new()))
            }
            "$lookup" => self.lookup(db, arg, masks, depth),
            "$graphLookup" => self.graph_lookup(db, arg, masks),
            "$unionWith" => {
                let (ns, sub) = match arg {
                    Bson::String(_) => (namespace_of(db, Some(arg), "$unionWith")?, Vec::new()),
                    Bson::Document(d) => (
                        namespace_of(db, d.get("coll"), "$unionWith")?,
                        stages(d.get("pipeline"), "$unionWith pipeline")?,
                    ),
                    _ => return Err(malformed("$unionWith needs a collection")),
                };
                self.access(&ns, Op::Aggregate)?;
                let (sub_db, _) = ns.split_once('.').unwrap_or((db, ""));
                let sub_db = sub_db.to_string();
                let (pipeline, sub_masks) = self.pipeline(&sub_db, Source::Collection(ns.clone()), &sub, depth + 1)?;
                let coll = ns.split_once('.').map(|(_, c)| c).unwrap_or("");
                let mut all = masks.to_vec();
                all.extend(sub_masks);
                let arg = if sub_db == db {
                    doc! { "coll": coll, "pipeline": pipeline }
                } else {
                    doc! { "coll": { "db": sub_db, "coll": coll }, "pipeline": pipeline }
                };
                Ok((Bson::Document(doc! { "$unionWith": arg }), all))
            }
            "$facet" => {
                let mut facets = Document::new();
                let mut out_masks = Vec::new();
                for (k, v) in doc_arg()? {
                    let sub = stages(Some(v), "$facet")?;
                    let (p, m) = self.pipeline(db, Source::Stream(masks.to_vec()), &sub, depth + 1)?;
                    out_masks.extend(prefixed(k, &m));
                    facets.insert(k.clone(), Bson::Array(p));
                }
                Ok((Bson::Document(doc! { "$facet": facets }), out_masks))
            }
            "$out" | "$merge" => self.write_stage(db, name, arg, masks, depth),
            "$changeStream" => {
                let Some(ns) = source_ns else {
                    return Err(Refusal::permission(
                        crate::policy::decide::DEFAULT_DENY,
                        "change streams on a whole database or cluster are not allowed; watch a collection",
                    ));
                };
                if doc_arg()?.get_bool("allChangesForCluster").unwrap_or(false) {
                    return Err(Refusal::permission(
                        crate::policy::decide::DEFAULT_DENY,
                        "allChangesForCluster is not allowed",
                    ));
                }
                self.access(ns, Op::Watch)?;
                let mut events = prefixed("fullDocument", masks);
                events.extend(prefixed("fullDocumentBeforeChange", masks));
                events.extend(prefixed("updateDescription.updatedFields", masks));
                Ok((Bson::Document(doc! { name: arg.clone() }), events))
            }
            "$collStats" | "$indexStats" | "$planCacheStats" => {
                let Some(ns) = source_ns else {
                    return Err(malformed(format!("{name} needs a collection")));
                };
                let Some(rule) = self.rules.diagnostic(name).map(String::from).or_else(|| {
                    self.rules.passthrough.then(String::new)
                }) else {
                    return Err(Refusal::permission(
                        crate::policy::decide::DEFAULT_DENY,
                        format!("{name} is not allowed (add it to `diagnostics` in the policy)"),
                    ));
                };
                self.access(ns, Op::Find)?;
                if self.rule.is_none() && !rule.is_empty() {
                    self.rule = Some(rule);
                }
                Ok((Bson::Document(doc! { name: arg.clone() }), Vec::new()))
            }
            n if OTHERS_ACTIVITY.contains(&n) => Err(Refusal::permission(
                RESERVED_RULE,
                format!("{n} shows other agents' sessions and commands (they share tollgate's upstream login)"),
            )),
            "$search" | "$searchMeta" | "$vectorSearch" | "$listSearchIndexes" => {
                if let Some(m) = masks.first() {
                    return Err(Refusal::permission(
                        m.rule.clone(),
                        format!("{name} cannot be used on documents with masked fields"),
                    ));
                }
                same(arg)
            }
            n => Err(Refusal::new(
                RefusalClass::Unsupported,
                UNKNOWN_RULE,
                format!("pipeline stage \"{n}\" is not understood by tollgate, so it is refused"),
            )),
        }
    }

    fn lookup(
        &mut self,
        db: &str,
        arg: &Bson,
        masks: &[MaskedField],
        depth: usize,
    ) -> Result<(Bson, Vec<MaskedField>), Refusal> {
        let d = arg
            .as_document()
            .ok_or_else(|| malformed("$lookup needs a document"))?;
        let ns = namespace_of(db, d.get("from"), "$lookup")?;
        let as_field = d
            .get_str("as")
            .map_err(|_| malformed("$lookup needs `as`"))?
            .to_string();
        self.access(&ns, Op::Aggregate)?;
        let foreign = self.rules.protection_of(&ns);
        if let Ok(local) = d.get_str("localField") {
            self.expr(
                &Bson::String(format!("${local}")),
                masks,
                "a $lookup localField",
            )?;
        }
        if let Ok(f) = d.get_str("foreignField") {
            self.expr(
                &Bson::String(format!("${f}")),
                &foreign.masks,
                "a $lookup foreignField",
            )?;
        }
        if let Ok(l) = d.get_document("let") {
            for (_, v) in l {
                self.expr(v, masks, "$lookup let")?;
            }
        }
        let sub = stages(d.get("pipeline"), "$lookup pipeline")?;
        let (sub_db, _) = ns.split_once('.').unwrap_or((db, ""));
        let sub_db = sub_db.to_string();
        let has_pipeline = d.contains_key("pipeline") || foreign.filter().is_some();
        let (pipeline, sub_masks) =
            self.pipeline(&sub_db, Source::Collection(ns.clone()), &sub, depth + 1)?;
        let mut out = d.clone();
        if has_pipeline {
            out.insert("pipeline", Bson::Array(pipeline));
        }
        refuse_output_inside_masked(masks, &as_field)?;
        let mut next = masks_after_output(masks, &as_field);
        next.extend(prefixed(&as_field, &sub_masks));
        Ok((Bson::Document(doc! { "$lookup": out }), next))
    }

    fn graph_lookup(
        &mut self,
        db: &str,
        arg: &Bson,
        masks: &[MaskedField],
    ) -> Result<(Bson, Vec<MaskedField>), Refusal> {
        let d = arg
            .as_document()
            .ok_or_else(|| malformed("$graphLookup needs a document"))?;
        let ns = namespace_of(db, d.get("from"), "$graphLookup")?;
        let as_field = d
            .get_str("as")
            .map_err(|_| malformed("$graphLookup needs `as`"))?
            .to_string();
        self.access(&ns, Op::Aggregate)?;
        let foreign = self.rules.protection_of(&ns);
        self.expr(
            d.get("startWith").unwrap_or(&Bson::Null),
            masks,
            "$graphLookup startWith",
        )?;
        for key in ["connectFromField", "connectToField"] {
            let f = d
                .get_str(key)
                .map_err(|_| malformed(format!("$graphLookup needs {key}")))?;
            self.expr(
                &Bson::String(format!("${f}")),
                &foreign.masks,
                "$graphLookup traversal",
            )?;
        }
        let out = d.clone();
        if let Ok(r) = d.get_document("restrictSearchWithMatch") {
            self.query(r, &foreign.masks, "$graphLookup restrictSearchWithMatch")?;
        }
        // A row filter could go only into `restrictSearchWithMatch`, which not every server
        // honours (the demo's MongoDB-wire server ignores it: a review read every filtered-out
        // document through it), and the traversal's results cannot be filtered after it: the
        // stage is refused into such a collection, as `$collStats` is.
        if let Some((_, rule)) = foreign.filters.first() {
            return Err(Refusal::permission(
                rule.clone(),
                format!("$graphLookup cannot be used into {ns}: its row filter cannot be applied"),
            ));
        }
        if !self.namespaces.contains(&ns) {
            self.namespaces.push(ns.clone());
        }
        refuse_output_inside_masked(masks, &as_field)?;
        let mut next = masks_after_output(masks, &as_field);
        next.extend(prefixed(&as_field, &foreign.masks));
        Ok((Bson::Document(doc! { "$graphLookup": out }), next))
    }

    fn write_stage(
        &mut self,
        db: &str,
        name: &str,
        arg: &Bson,
        masks: &[MaskedField],
        depth: usize,
    ) -> Result<(Bson, Vec<MaskedField>), Refusal> {
        let target = match (name, arg) {
            ("$out", Bson::String(_)) => namespace_of(db, Some(arg), "$out")?,
            ("$out", Bson::Document(d)) => {
                namespace_of(db, Some(&Bson::Document(d.clone())), "$out")?
            }
            ("$merge", Bson::String(_)) => namespace_of(db, Some(arg), "$merge")?,
            ("$merge", Bson::Document(d)) => match d.get("into") {
                Some(Bson::String(_)) => namespace_of(db, d.get("into"), "$merge")?,
                Some(Bson::Document(into)) => {
                    namespace_of(db, Some(&Bson::Document(into.clone())), "$merge")?
                }
                _ => return Err(malformed("$merge needs `into`")),
            },
            _ => return Err(malformed(format!("{name} needs a collection"))),
        };
        let ops: &[Op] = if name == "$out" {
            &[Op::Insert, Op::Delete]
        } else {
            &[Op::Insert, Op::Update]
        };
        for op in ops {
            self.access(&target, *op)?;
        }
        if !self.rules.protection_of(&target).masks.is_empty() {
            self.writes_masked = true;
        }
        if let Some(m) = masks.first() {
            return Err(Refusal::permission(
                m.rule.clone(),
                format!(
                    "{name} would store the raw values of masked field {} in {target}",
                    m.path
                ),
            ));
        }
        if let Bson::Document(d) = arg {
            if let Some(Bson::Array(when)) = d.get("whenMatched") {
                let target_masks = self.rules.protection_of(&target).masks;
                self.pipeline(db, Source::Stream(target_masks), when, depth + 1)?;
            }
            if let Ok(l) = d.get_document("let") {
                for (_, v) in l {
                    self.expr(v, masks, "$merge let")?;
                }
            }
        }
        Ok((Bson::Document(doc! { name: arg.clone() }), Vec::new()))
    }
}

/// The masks that still hold after a `$lookup`/`$graphLookup` writes its output at `as_field`.
/// A top-level output replaces the field whole, so the masks under it go. A dotted one
/// (`c.ssn`) may not replace what is there: where `c` is an array, mongod sets a document in
/// its place, but a MongoDB-wire server left the array and its raw values untouched (a live
/// review read every customer's ssn that way). So its masks stay: at worst the join's output
/// is masked too, which is the safe way to be wrong.
fn masks_after_output(masks: &[MaskedField], as_field: &str) -> Vec<MaskedField> {
    masks
        .iter()
        .filter(|m| as_field.contains('.') || !super::query::overlaps(&m.path, as_field))
        .cloned()
        .collect()
}

/// A `$lookup`/`$graphLookup` output (`as`) inside a masked field would leave that field's value
/// in place around it while its mask is dropped: refused. An output that replaces a masked
/// field, or holds one, replaces it whole and is fine; but only when spelt as plain field names:
/// with an array index or `$` in it (`email.0`, `contacts.0`) the stage writes a field of that
/// name into the value, which keeps the rest, masked fields included.
fn refuse_output_inside_masked(masks: &[MaskedField], as_field: &str) -> Result<(), Refusal> {
    let replaces = |m: &MaskedField| {
        !super::path::has_element(as_field)
            && (m.path == as_field || m.path.starts_with(&format!("{as_field}.")))
    };
    match masks
        .iter()
        .find(|m| super::path::overlaps(as_field, &m.path) && !replaces(m))
    {
        Some(m) => Err(Refusal::permission(
            m.rule.clone(),
            format!(
                "field {} is masked: a join cannot write inside it ({as_field})",
                m.path
            ),
        )),
        None => Ok(()),
    }
}
