//! The MongoDB decision: a pure function of (rules, command, limits). No I/O. It refuses, or
//! allows with what the session must do: forward a rewritten command (row filters injected,
//! `maxTimeMS` capped), mask the reply, filter a listing, or track a cursor.

use std::time::Duration;

use bson::{doc, Bson, Document};

use super::builtin::{self, BUILTIN_RULE};
use super::command::{valid_collection_name, Command, MALFORMED_RULE};
use super::fields;
use super::judge::{Judge, RESERVED_RULE};
use super::options::{
    self, command_let, command_let_named, hint, read_options, update_spec, view_definition,
};
use super::path::{relation, Relation};
use super::pipeline::Source;
use super::rules::{MaskedField, MongoRules, Op};
use crate::policy::decide::DEFAULT_DENY;
use crate::refusal::Refusal;

/// What the session does with the reply.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ReplyPlan {
    /// Relay as is.
    #[default]
    None,
    /// Mask documents: cursor batches (`firstBatch`, `nextBatch`, change events) and
    /// findAndModify's `value`.
    Documents(Vec<MaskedField>),
    /// Mask each of distinct's `values` (the key is a masked field); equal masked values are
    /// returned once, in the order of their masked values.
    Values(MaskedField),
    /// A write to (or index change on) documents with masked fields: error details that can
    /// quote stored values (`errmsg` text from the first `{`, `keyValue`, `errInfo`) are
    /// withheld, in error replies and `writeErrors` alike, and update's `nModified` counts every
    /// matched document (whether a write changed a document tells whether its old value equalled
    /// the new one). `Documents` and `Values` replies get the same treatment of errors.
    Writes,
    /// Keep only the collections of `db` the agent may see (listCollections).
    Collections { db: String },
    /// Keep only the databases the agent may see (listDatabases).
    Databases,
}

/// The limits a decision applies, and what it must know of the upstream.
#[derive(Debug, Clone, Default)]
pub struct DecideLimits {
    /// Statement timeout: `maxTimeMS` is capped to it (with the rule that set it).
    pub statement_timeout: Option<(Duration, String)>,
    /// The database the vaulted upstream user is defined in (`authSource`): dropping it would
    /// drop the user.
    pub login_db: Option<String>,
}

/// Refusals that protect the vaulted upstream login (its database dropped with it).
pub const VAULT_LOGIN_RULE: &str = "builtin: vault-login";

/// An allowed command.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    /// What was done, for the audit record (`find`, `aggregate`, `getMore`, ...).
    pub operation: String,
    /// Every namespace the command reads or writes.
    pub namespaces: Vec<String>,
    /// The rule that allowed it (`None`: passthrough or housekeeping).
    pub rule: Option<String>,
    /// The command to forward instead of the agent's.
    pub rewritten: Option<Command>,
    pub reply: ReplyPlan,
    /// getMore/killCursors: the session must check that these cursors are its own.
    pub cursors: Vec<i64>,
}

pub(super) fn malformed(m: impl Into<String>) -> Refusal {
    Refusal::syntax(MALFORMED_RULE, m)
}

pub(super) fn need_doc<'a>(d: &'a Document, key: &str) -> Result<Option<&'a Document>, Refusal> {
    match d.get(key) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::Document(x)) => Ok(Some(x)),
        Some(_) => Err(malformed(format!("{key} must be a document"))),
    }
}

fn and(filter: Option<&Document>, row: Document) -> Document {
    match filter {
        Some(f) if !f.is_empty() => doc! { "$and": [f.clone(), row] },
        _ => row,
    }
}

/// Commands that accept `maxTimeMS` and can run long.
const TIMED: [&str; 9] = [
    "find",
    "aggregate",
    "count",
    "distinct",
    "findAndModify",
    "update",
    "delete",
    "insert",
    "mapReduce",
];

/// Judges one command.
pub fn decide(rules: &MongoRules, cmd: &Command, limits: &DecideLimits) -> Result<Judged, Refusal> {
    let name = cmd.name.as_str();
    if let Some(why) = builtin::never(name) {
        return Err(Refusal::permission(
            BUILTIN_RULE,
            format!("{name} is refused: {why}"),
        ));
    }
    if let Some(known) = builtin::unusual_case(name) {
        return Err(Refusal::permission(
            BUILTIN_RULE,
            format!(
                "command \"{name}\" differs from \"{known}\" only in case: refused as ambiguous"
            ),
        ));
    }
    // Fields the decision does not read are refused (restricted agents; passthrough agents on
    // collections with masks or row filters), and so is a command with no list of fields.
    fields::check(rules, cmd)?;
    if !rules.passthrough && fields::of(name).is_none() {
        return Err(Refusal::permission(
            DEFAULT_DENY,
            format!("command \"{name}\" is not allowed"),
        ));
    }
    let mut j = Judge::new(rules);
    let mut judged = Judged {
        operation: name.to_string(),
        namespaces: Vec::new(),
        rule: None,
        rewritten: None,
        reply: ReplyPlan::None,
        cursors: Vec::new(),
    };
    // The rewritten command, cloned only when something changes (inserts can be large).
    let mut edited: Option<Command> = None;
    match name {
        n if builtin::HOUSEKEEPING.contains(&n) => {}
        "find" => {
            let ns = coll_ns(cmd)?;
            j.access(&ns, Op::Find)?;
            let p = rules.protection_of(&ns);
            read_options(&j, &cmd.body, &p.masks)?;
            if let Some(f) = p.filter() {
                edit(&mut edited, cmd)
                    .body
                    .insert("filter", and(need_doc(&cmd.body, "filter")?, f));
            }
            judged.reply = documents(&p.masks);
        }
        "aggregate" => {
            // `explain: true` turns the aggregation into an explain: the same gate as `explain`.
            let explains = !matches!(
                cmd.body.get("explain"),
                None | Some(Bson::Boolean(false)) | Some(Bson::Null)
            );
            if explains && rules.diagnostic("explain").is_none() && !rules.passthrough {
                return Err(Refusal::permission(
                    DEFAULT_DENY,
                    "explain is not allowed (add it to `diagnostics` in the policy)",
                ));
            }
            let source = match cmd.target() {
                Some(Bson::String(_)) => {
                    let ns = coll_ns(cmd)?;
                    j.access(&ns, Op::Aggregate)?;
                    Source::Collection(ns)
                }
                Some(Bson::Int32(1)) | Some(Bson::Int64(1)) | Some(Bson::Double(1.0)) => {
                    Source::Database
                }
                _ => return Err(malformed("aggregate needs a collection name or 1")),
            };
            let Some(Bson::Array(stages)) = cmd.body.get("pipeline") else {
                return Err(malformed("aggregate needs a pipeline array"));
            };
            command_let(&j, &cmd.body)?;
            let source_masks = match &source {
                Source::Collection(ns) => rules.protection_of(ns).masks,
                _ => Vec::new(),
            };
            hint(&j, cmd.body.get("hint"), &source_masks)?;
            let (pipeline, masks) = j.pipeline(&cmd.db, source, stages, 0)?;
            if &pipeline != stages {
                edit(&mut edited, cmd)
                    .body
                    .insert("pipeline", Bson::Array(pipeline));
            }
            judged.reply = documents(&masks);
            if judged.reply == ReplyPlan::None && j.writes_masked {
                judged.reply = ReplyPlan::Writes;
            }
        }
        "count" => {
            let ns = coll_ns(cmd)?;
            j.access(&ns, Op::Count)?;
            let p = rules.protection_of(&ns);
            if let Some(q) = need_doc(&cmd.body, "query")? {
                j.query(q, &p.masks, "a count query")?;
            }
            hint(&j, cmd.body.get("hint"), &p.masks)?;
            if let Some(f) = p.filter() {
                edit(&mut edited, cmd)
                    .body
                    .insert("query", and(need_doc(&cmd.body, "query")?, f));
            }
        }
        "distinct" => {
            let ns = coll_ns(cmd)?;
            j.access(&ns, Op::Distinct)?;
            let p = rules.protection_of(&ns);
            if let Some(q) = need_doc(&cmd.body, "query")? {
                j.query(q, &p.masks, "a distinct query")?;
            }
            hint(&j, cmd.body.get("hint"), &p.masks)?;
            let key = cmd
                .body
                .get_str("key")
                .map_err(|_| malformed("distinct needs a key"))?;
            for m in &p.masks {
                let rel = relation(key, &m.path);
                if matches!(rel, Relation::Same | Relation::Inside) {
                    // A collation decides which raw values count as one (case, accents):
                    // the number of masked values returned would tell.
                    if cmd.body.contains_key("collation") {
                        return Err(Refusal::permission(
                            m.rule.clone(),
                            format!(
                                "distinct on masked field {} cannot take a collation",
                                m.path
                            ),
                        ));
                    }
                    judged.reply = ReplyPlan::Values(m.clone());
                } else if rel == Relation::Holds {
                    return Err(Refusal::permission(
                        m.rule.clone(),
                        format!(
                            "distinct on {key} would return masked field {} unmasked",
                            m.path
                        ),
                    ));
                }
            }
            if let Some(f) = p.filter() {
                edit(&mut edited, cmd)
                    .body
                    .insert("query", and(need_doc(&cmd.body, "query")?, f));
            }
        }
        "insert" => {
            let ns = coll_ns(cmd)?;
            j.access(&ns, Op::Insert)?;
            cmd.documents("documents")?;
            judged.reply = writes(&rules.protection_of(&ns).masks);
        }
        "update" => {
            let ns = coll_ns(cmd)?;
            j.access(&ns, Op::Update)?;
            let p = rules.protection_of(&ns);
            command_let(&j, &cmd.body)?;
            let mut out = Vec::new();
            for u in cmd.documents("updates")? {
                let mut u = u.clone();
                let q = need_doc(&u, "q")?.cloned().unwrap_or_default();
                j.query(&q, &p.masks, "an update filter")?;
                hint(&j, u.get("hint"), &p.masks)?;
                // `c`: constants for a pipeline update, evaluated as `let` is.
                command_let_named(&j, &u, "c")?;
                update_spec(&mut j, &cmd.db, u.get("u"), &p.masks)?;
                if let Some(s) = need_doc(&u, "sort")? {
                    j.keys(s, &p.masks, "an update sort")?;
                }
                if !p.masks.is_empty() && u.contains_key("arrayFilters") {
                    return Err(Refusal::permission(
                        p.masks[0].rule.clone(),
                        "arrayFilters cannot be used on documents with masked fields",
                    ));
                }
                if let Some(f) = p.filter() {
                    u.insert("q", and(Some(&q), f));
                }
                out.push(u);
            }
            if p.filter().is_some() {
                edit(&mut edited, cmd).set_documents("updates", out);
            }
            judged.reply = writes(&p.masks);
        }
        "delete" => {
            let ns = coll_ns(cmd)?;
            j.access(&ns, Op::Delete)?;
            let p = rules.protection_of(&ns);
            command_let(&j, &cmd.body)?;
            let mut out = Vec::new();
            for d in cmd.documents("deletes")? {
                let mut d = d.clone();
                let q = need_doc(&d, "q")?.cloned().unwrap_or_default();
                j.query(&q, &p.masks, "a delete filter")?;
                hint(&j, d.get("hint"), &p.masks)?;
                if let Some(f) = p.filter() {
                    d.insert("q", and(Some(&q), f));
                }
                out.push(d);
            }
            if p.filter().is_some() {
                edit(&mut edited, cmd).set_documents("deletes", out);
            }
            judged.reply = writes(&p.masks);
        }
        "findAndModify" | "findandmodify" => {
            let ns = coll_ns(cmd)?;
            j.access(&ns, Op::FindAndModify)?;
            let p = rules.protection_of(&ns);
            command_let(&j, &cmd.body)?;
            if let Some(q) = need_doc(&cmd.body, "query")? {
                j.query(q, &p.masks, "a findAndModify query")?;
            }
            if let Some(s) = need_doc(&cmd.body, "sort")? {
                j.keys(s, &p.masks, "a findAndModify sort")?;
            }
            if let Some(f) = need_doc(&cmd.body, "fields")? {
                j.projection(f, &p.masks, "a findAndModify projection")?;
            }
            hint(&j, cmd.body.get("hint"), &p.masks)?;
            update_spec(&mut j, &cmd.db, cmd.body.get("update"), &p.masks)?;
            if !p.masks.is_empty() && cmd.body.contains_key("arrayFilters") {
                return Err(Refusal::permission(
                    p.masks[0].rule.clone(),
                    "arrayFilters cannot be used on documents with masked fields",
                ));
            }
            if let Some(f) = p.filter() {
                edit(&mut edited, cmd)
                    .body
                    .insert("query", and(need_doc(&cmd.body, "query")?, f));
            }
            judged.reply = documents(&p.masks);
        }
        "getMore" => {
            let id = match cmd.target() {
                Some(Bson::Int64(id)) => *id,
                _ => return Err(malformed("getMore needs a cursor id (int64)")),
            };
            let coll = cmd
                .body
                .get_str("collection")
                .map_err(|_| malformed("getMore needs a collection"))?;
            if !valid_collection_name(coll) {
                return Err(malformed("getMore: invalid collection name"));
            }
            judged.namespaces.push(format!("{}.{coll}", cmd.db));
            judged.cursors.push(id);
        }
        "killCursors" => {
            let ns = coll_ns(cmd)?;
            let Some(Bson::Array(ids)) = cmd.body.get("cursors") else {
                return Err(malformed("killCursors needs cursors"));
            };
            for id in ids {
                match id {
                    Bson::Int64(i) => judged.cursors.push(*i),
                    _ => return Err(malformed("cursor ids are int64")),
                }
            }
            judged.namespaces.push(ns);
        }
        "listCollections" => {
            // The filter reads the collections' descriptions (names, options): no documents,
            // so no masks, but no JavaScript or unknown operator either.
            if let Some(f) = need_doc(&cmd.body, "filter")? {
                j.query(f, &[], "a listCollections filter")?;
            }
            judged.reply = ReplyPlan::Collections { db: cmd.db.clone() };
        }
        "listDatabases" => {
            if cmd.db != "admin" {
                return Err(malformed("listDatabases runs on admin"));
            }
            if let Some(f) = need_doc(&cmd.body, "filter")? {
                j.query(f, &[], "a listDatabases filter")?;
            }
            judged.reply = ReplyPlan::Databases;
        }
        "listIndexes" => {
            let ns = coll_ns(cmd)?;
            j.access(&ns, Op::Find)?;
        }
        "create" | "collMod" => {
            let ns = coll_ns(cmd)?;
            j.access(&ns, Op::Collection)?;
            view_definition(&mut j, cmd, &cmd.body)?;
            let masks = rules.protection_of(&ns).masks;
            // A validator decides which writes fail: over a masked field, an oracle.
            if let Some(v) = need_doc(&cmd.body, "validator")? {
                j.query(v, &masks, "a validator")?;
            }
            // collMod's `index`: an existing index made unique or TTL is judged as createIndexes
            // judges a new one; an index named rather than given by key pattern cannot be.
            if let (Some(ix), Some(m)) = (need_doc(&cmd.body, "index")?, masks.first()) {
                if let Some(what) = revealing_index(ix) {
                    match need_doc(ix, "keyPattern")? {
                        Some(k) => j.keys(k, &masks, what)?,
                        None => {
                            return Err(Refusal::permission(
                                m.rule.clone(),
                                format!("{what}: an index named rather than given by keyPattern cannot be checked against masked fields"),
                            )
                            .with_instead("name the index by keyPattern"))
                        }
                    }
                }
            }
            judged.reply = writes(&masks);
        }
        "drop" => {
            let ns = coll_ns(cmd)?;
            j.access(&ns, Op::Collection)?;
        }
        "createIndexes" => {
            let ns = coll_ns(cmd)?;
            j.access(&ns, Op::Index)?;
            let p = rules.protection_of(&ns);
            let Some(Bson::Array(specs)) = cmd.body.get("indexes") else {
                return Err(malformed("createIndexes needs indexes"));
            };
            for spec in specs {
                let spec = spec
                    .as_document()
                    .ok_or_else(|| malformed("index specs are documents"))?;
                // A partial or sparse index over a masked field, used with `hint`, would filter
                // documents by the raw value.
                if let Some(f) = need_doc(spec, "partialFilterExpression")? {
                    j.query(f, &p.masks, "a partial index filter")?;
                }
                if let Some(what) = revealing_index(spec) {
                    if let Some(k) = need_doc(spec, "key")? {
                        j.keys(k, &p.masks, what)?;
                    }
                }
            }
            judged.reply = writes(&p.masks);
        }
        "dropIndexes" | "createSearchIndexes" | "dropSearchIndex" | "updateSearchIndex" => {
            let ns = coll_ns(cmd)?;
            j.access(&ns, Op::Index)?;
        }
        "renameCollection" => {
            if cmd.db != "admin" {
                return Err(malformed("renameCollection runs on admin"));
            }
            let from = cmd
                .collection()
                .ok_or_else(|| malformed("renameCollection needs a namespace"))?;
            let to = cmd
                .body
                .get_str("to")
                .map_err(|_| malformed("renameCollection needs `to`"))?;
            let db_of = |ns: &str| ns.split_once('.').map(|(d, _)| d.to_string());
            if db_of(from).is_none() || db_of(from) != db_of(to) {
                return Err(Refusal::permission(
                    BUILTIN_RULE,
                    format!("renameCollection across databases ({from} to {to}) is refused"),
                ));
            }
            j.access(from, Op::Collection)?;
            j.access(to, Op::Collection)?;
            let p = rules.protection_of(from);
            if let Some(r) = p
                .masks
                .first()
                .map(|m| m.rule.clone())
                .or(p.filters.first().map(|f| f.1.clone()))
            {
                return Err(Refusal::permission(
                    r,
                    format!("renaming {from} would move it away from its masks and row filters"),
                ));
            }
        }
        "dropDatabase" => {
            if let Some(why) = super::judge::reserved_db(&cmd.db) {
                return Err(Refusal::permission(
                    RESERVED_RULE,
                    format!("dropDatabase of {} is refused: {why}", cmd.db),
                ));
            }
            if limits.login_db.as_deref() == Some(cmd.db.as_str()) {
                return Err(Refusal::permission(
                    VAULT_LOGIN_RULE,
                    format!(
                        "dropDatabase of {} is refused: it holds tollgate's upstream login",
                        cmd.db
                    ),
                ));
            }
            if !rules.passthrough || rules.has_protections() {
                return Err(Refusal::permission(
                    DEFAULT_DENY,
                    format!("dropDatabase of {} is not allowed", cmd.db),
                ));
            }
        }
        "explain" => {
            let Some(Bson::Document(inner)) = cmd.target() else {
                return Err(malformed("explain needs a command document"));
            };
            if rules.diagnostic("explain").is_none() && !rules.passthrough {
                return Err(Refusal::permission(
                    DEFAULT_DENY,
                    "explain is not allowed (add it to `diagnostics` in the policy)",
                ));
            }
            let mut inner = inner.clone();
            // The explained command runs on the explain's database; one naming another is
            // judged on neither.
            if inner
                .get("$db")
                .is_some_and(|d| d.as_str() != Some(cmd.db.as_str()))
            {
                return Err(malformed("the explained command names another $db"));
            }
            inner.insert("$db", cmd.db.clone());
            let inner_cmd = Command::new(inner, Vec::new())?;
            if !matches!(
                inner_cmd.name.as_str(),
                "find" | "aggregate" | "count" | "distinct" | "update" | "delete" | "findAndModify"
            ) {
                return Err(malformed("explain supports find, aggregate, count, distinct, update, delete, findAndModify"));
            }
            // An explained update reports `nWouldModify`: whether the update would change the
            // documents, i.e. whether a masked field already holds the value it sets, without
            // writing anything.
            if matches!(inner_cmd.name.as_str(), "update" | "findAndModify") {
                let ns = coll_ns(&inner_cmd)?;
                if let Some(m) = rules.protection_of(&ns).masks.first() {
                    return Err(Refusal::permission(
                        m.rule.clone(),
                        format!(
                            "explain of {} on {ns}, which has masked fields, would tell (nWouldModify) whether it changes them",
                            inner_cmd.name
                        ),
                    ));
                }
            }
            let inner_judged = decide(rules, &inner_cmd, &DecideLimits::default())?;
            if let Some(rw) = inner_judged.rewritten {
                let mut e = rw.body;
                e.remove("$db");
                edit(&mut edited, cmd).body.insert("explain", e);
            }
            judged.namespaces = inner_judged.namespaces;
            judged.rule = inner_judged.rule;
        }
        "collStats" | "dbStats" => {
            if rules.diagnostic(name).is_none() && !rules.passthrough {
                return Err(Refusal::permission(
                    DEFAULT_DENY,
                    format!("{name} is not allowed (add it to `diagnostics` in the policy)"),
                ));
            }
            if name == "collStats" {
                let ns = coll_ns(cmd)?;
                j.access(&ns, Op::Find)?;
                // Its counts and sizes are of every document, the filtered-out ones too (a
                // review read the unfiltered count), as the `$collStats` stage's would be.
                if let Some((_, rule)) = rules.protection_of(&ns).filters.first() {
                    return Err(Refusal::permission(
                        rule.clone(),
                        format!(
                            "collStats cannot be used on {ns}: its row filter cannot be applied"
                        ),
                    ));
                }
            } else {
                // dbStats names a database: one the agent may see, never local or config.
                if let Some(why) = super::judge::reserved(&cmd.db) {
                    return Err(Refusal::permission(
                        RESERVED_RULE,
                        format!("dbStats of {} is refused: {why}", cmd.db),
                    ));
                }
                if !rules.database_visible(&cmd.db) {
                    return Err(Refusal::permission(
                        DEFAULT_DENY,
                        format!("no rule allows database {}", cmd.db),
                    ));
                }
            }
        }
        "mapReduce" => {
            let ns = coll_ns(cmd)?;
            if rules.javascript.is_none() {
                return Err(Refusal::permission(
                    super::judge::JAVASCRIPT_RULE,
                    "mapReduce runs server-side JavaScript, which is not allowed",
                )
                .with_instead("use an aggregation pipeline instead"));
            }
            j.access(&ns, Op::Find)?;
            let p = rules.protection_of(&ns);
            if let Some(m) = p.masks.first() {
                return Err(Refusal::permission(
                    m.rule.clone(),
                    format!(
                        "mapReduce's JavaScript would see the raw value of masked field {}",
                        m.path
                    ),
                ));
            }
            match cmd.body.get("out") {
                // Exactly `{inline: 1}`: a document that also names a target would be read by
                // the server as an output collection.
                Some(Bson::Document(o)) if o.len() == 1 && o.contains_key("inline") => {}
                Some(Bson::String(c)) => {
                    j.access(&format!("{}.{c}", cmd.db), Op::Insert)?;
                }
                _ => {
                    return Err(malformed(
                        "mapReduce: only `out: {inline: 1}` or a collection name",
                    ))
                }
            }
            if let Some(f) = p.filter() {
                edit(&mut edited, cmd)
                    .body
                    .insert("query", and(need_doc(&cmd.body, "query")?, f));
            }
        }
        other => {
            if !rules.passthrough {
                return Err(Refusal::permission(
                    DEFAULT_DENY,
                    format!("command \"{other}\" is not allowed"),
                ));
            }
            // Passthrough: allowed, but never on a protected or reserved collection, nor on the
            // local or config database as a whole (server-wide commands run on admin).
            if cmd.namespace().is_none() {
                if let Some(why) = super::judge::reserved(&cmd.db) {
                    return Err(Refusal::permission(
                        RESERVED_RULE,
                        format!("{other} on database {}: {why}", cmd.db),
                    ));
                }
            }
            if let Some(ns) = cmd.namespace() {
                if let Some(why) = super::judge::reserved(&ns) {
                    return Err(Refusal::permission(
                        RESERVED_RULE,
                        format!("{other} on {ns}: {why}"),
                    ));
                }
                let p = rules.protection_of(&ns);
                if let Some(r) = p
                    .masks
                    .first()
                    .map(|m| m.rule.clone())
                    .or(p.filters.first().map(|f| f.1.clone()))
                {
                    return Err(Refusal::permission(
                        r,
                        format!("command \"{other}\" on {ns} cannot be checked against its masks and row filters"),
                    ));
                }
                judged.namespaces.push(ns);
            }
        }
    }
    if let Some((cap, rule)) = &limits.statement_timeout {
        if TIMED.contains(&name) {
            let cap_ms = cap.as_millis().min(i64::MAX as u128) as i64;
            match cmd.max_time_ms() {
                Some(m) if m > 0 && m <= cap_ms => {}
                _ => {
                    edit(&mut edited, cmd).body.insert("maxTimeMS", cap_ms);
                    if judged.rule.is_none() && j.rule.is_none() {
                        j.rule = Some(rule.clone());
                    }
                }
            }
        }
    }
    for ns in j.namespaces.drain(..) {
        if !judged.namespaces.contains(&ns) {
            judged.namespaces.push(ns);
        }
    }
    if judged.rule.is_none() {
        judged.rule = j.rule.take();
    }
    judged.rewritten = edited;
    Ok(judged)
}

/// Whether an index spec (createIndexes) or index change (collMod) makes an index whose keys
/// reveal raw values, and how to call it: a unique index (an insert of a guess fails with a
/// duplicate key exactly when some document holds it; building it over duplicates names one),
/// a sparse one (keeps only the documents that have the field), a TTL one (deletes documents
/// by the field's date).
fn revealing_index(spec: &Document) -> Option<&'static str> {
    let set = |k: &str| options::truthy(spec.get(k));
    if set("unique") || set("prepareUnique") {
        Some("index keys of a unique index")
    } else if set("sparse") {
        Some("index keys of a sparse index")
    } else if spec.contains_key("expireAfterSeconds") {
        Some("index keys of a TTL index")
    } else {
        None
    }
}

fn edit<'a>(slot: &'a mut Option<Command>, cmd: &Command) -> &'a mut Command {
    slot.get_or_insert_with(|| cmd.clone())
}

fn writes(masks: &[MaskedField]) -> ReplyPlan {
    if masks.is_empty() {
        ReplyPlan::None
    } else {
        ReplyPlan::Writes
    }
}

fn documents(masks: &[MaskedField]) -> ReplyPlan {
    if masks.is_empty() {
        ReplyPlan::None
    } else {
        ReplyPlan::Documents(masks.to_vec())
    }
}

/// `db.collection` of a command whose first value is a collection name.
fn coll_ns(cmd: &Command) -> Result<String, Refusal> {
    let c = cmd
        .collection()
        .ok_or_else(|| malformed(format!("{} needs a collection name", cmd.name)))?;
    if !valid_collection_name(c) {
        return Err(malformed(format!("invalid collection name {c:?}")));
    }
    Ok(format!("{}.{c}", cmd.db))
}
