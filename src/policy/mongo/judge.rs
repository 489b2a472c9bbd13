//! The shared part of judging a command: namespace access (reserved namespaces first, then the
//! rules), and reads of masked fields. A masked field may be returned (and is then masked), but
//! never used where its raw value would shape the result: predicates, sorts, groupings,
//! joins, computed values, renames. The whole document (`$$ROOT`) counts as every field.

use bson::{Bson, Document};

use super::query::{expr_refs, overlaps, query_refs, Refs, WalkError};
use super::rules::{MaskedField, MongoRules, Op};
use crate::refusal::{Refusal, RefusalClass};

pub const RESERVED_RULE: &str = "builtin: reserved-namespace";
pub const JAVASCRIPT_RULE: &str = "builtin: javascript";
pub const UNKNOWN_RULE: &str = "builtin: not-understood";

/// State while one command is judged: the namespaces it touches (for the audit record) and
/// the rule that allowed its main access.
pub struct Judge<'a> {
    pub rules: &'a MongoRules,
    pub namespaces: Vec<String>,
    pub rule: Option<String>,
    /// A stage writes into a collection with masked fields (`$out`, `$merge`): the server's
    /// errors may quote that collection's stored values.
    pub writes_masked: bool,
}

pub fn walk_error(e: WalkError) -> Refusal {
    match e {
        WalkError::Unknown(op) => Refusal::new(
            RefusalClass::Unsupported,
            UNKNOWN_RULE,
            format!("operator \"{op}\" is not understood by tollgate, so it is refused"),
        ),
        WalkError::Malformed(m) => Refusal::syntax(super::command::MALFORMED_RULE, m),
    }
}

/// Namespaces no agent reaches, passthrough included: the server's users and roles, the
/// oplog and everything in `local` (raw copies of every write), cluster metadata in `config`.
pub fn reserved(ns: &str) -> Option<&'static str> {
    let (db, coll) = ns.split_once('.').unwrap_or((ns, ""));
    match db {
        "local" => Some("the local database holds the oplog: raw copies of every write"),
        "config" => Some("the config database holds cluster and session metadata"),
        "admin" if coll.starts_with("system.") => {
            Some("admin system collections hold the server's users, roles and auth state")
        }
        _ => None,
    }
}

/// A whole database no agent may drop or reach with a database-level command: `admin` (the
/// server's users, roles and auth state), `config`, `local`.
pub fn reserved_db(db: &str) -> Option<&'static str> {
    match db {
        "admin" => Some("the admin database holds the server's users, roles and auth state"),
        _ => reserved(db),
    }
}

impl<'a> Judge<'a> {
    pub fn new(rules: &'a MongoRules) -> Judge<'a> {
        Judge {
            rules,
            namespaces: Vec::new(),
            rule: None,
            writes_masked: false,
        }
    }

    /// May the agent do `op` on `ns`?
    pub fn access(&mut self, ns: &str, op: Op) -> Result<(), Refusal> {
        if let Some(why) = reserved(ns) {
            return Err(Refusal::permission(
                RESERVED_RULE,
                format!("{} on {ns} is refused: {why}", op.name()),
            ));
        }
        let allowed = self.rules.check(ns, op)?;
        if self.rule.is_none() {
            self.rule = allowed;
        }
        if !self.namespaces.iter().any(|n| n == ns) {
            self.namespaces.push(ns.to_string());
        }
        Ok(())
    }

    /// Checks what a walk found against the masked fields of the documents it reads.
    pub fn check_refs(&self, r: &Refs, masks: &[MaskedField], what: &str) -> Result<(), Refusal> {
        if let Some(js) = r.javascript {
            if self.rules.javascript.is_none() {
                return Err(Refusal::permission(
                    JAVASCRIPT_RULE,
                    format!("server-side JavaScript ({js}) is not allowed"),
                )
                .with_instead("use aggregation operators instead of JavaScript"));
            }
            if let Some(m) = masks.first() {
                return Err(Refusal::permission(
                    m.rule.clone(),
                    format!(
                        "JavaScript ({js}) would see the raw value of masked field {}",
                        m.path
                    ),
                ));
            }
        }
        let Some(first) = masks.first() else {
            return Ok(());
        };
        if r.whole_document {
            return Err(Refusal::permission(
                first.rule.clone(),
                format!(
                    "{what} uses the whole document, which has masked fields ({})",
                    masks
                        .iter()
                        .map(|m| m.path.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        if let Some(o) = r.opaque {
            return Err(Refusal::permission(
                first.rule.clone(),
                format!("{o} cannot be used on documents with masked fields"),
            ));
        }
        for p in &r.paths {
            if let Some(m) = masks.iter().find(|m| overlaps(p, &m.path)) {
                return Err(Refusal::permission(
                    m.rule.clone(),
                    format!(
                        "field {} is masked: it cannot be used in {what} (the result would reveal it)",
                        m.path
                    ),
                )
                .with_instead(format!("return {} as is (it comes back masked)", m.path)));
            }
        }
        Ok(())
    }

    pub fn query(&self, q: &Document, masks: &[MaskedField], what: &str) -> Result<(), Refusal> {
        let mut r = Refs::default();
        query_refs(q, "", &mut r).map_err(walk_error)?;
        self.check_refs(&r, masks, what)
    }

    pub fn expr(&self, e: &Bson, masks: &[MaskedField], what: &str) -> Result<(), Refusal> {
        let mut r = Refs::default();
        expr_refs(e, &mut r).map_err(walk_error)?;
        self.check_refs(&r, masks, what)
    }

    /// Sort (or index-bound) keys: field names.
    pub fn keys(&self, d: &Document, masks: &[MaskedField], what: &str) -> Result<(), Refusal> {
        let r = Refs {
            paths: d
                .keys()
                .map(|k| k.trim_start_matches('$').to_string())
                .collect(),
            ..Refs::default()
        };
        self.check_refs(&r, masks, what)?;
        // `{$meta: "textScore"}` and numbers only: anything else is not a sort.
        for (k, v) in d {
            match v {
                Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => {}
                Bson::Document(m) if m.len() == 1 && m.contains_key("$meta") => {}
                Bson::String(_) | Bson::Boolean(_) | Bson::Document(_) | Bson::Null
                    if what.starts_with("index") => {}
                _ => {
                    return Err(Refusal::syntax(
                        super::command::MALFORMED_RULE,
                        format!("{what}: bad value for {k}"),
                    ))
                }
            }
        }
        Ok(())
    }

    /// A projection (find, findAndModify `fields`, `$project`): inclusions and exclusions keep
    /// masked fields where they are (masked on the way out); computed fields must not read one.
    pub fn projection(
        &self,
        p: &Document,
        masks: &[MaskedField],
        what: &str,
    ) -> Result<(), Refusal> {
        for (k, v) in p {
            if k.starts_with('$') {
                return Err(walk_error(WalkError::Malformed(format!(
                    "{what}: field names cannot start with $ ({k})"
                ))));
            }
            match v {
                Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Boolean(_) => {}
                Bson::Document(d) if find_slice(d) => {}
                Bson::Document(d) if d.len() == 1 && d.contains_key("$elemMatch") => {
                    // Find-only projection operator on an array field: a predicate on it.
                    let Some(Bson::Document(q)) = d.get("$elemMatch") else {
                        return Err(walk_error(WalkError::Malformed(
                            "$elemMatch needs a document".into(),
                        )));
                    };
                    let mut r = Refs::default();
                    query_refs(q, k, &mut r).map_err(walk_error)?;
                    self.check_refs(&r, masks, what)?;
                }
                Bson::Document(d) if d.keys().next().is_some_and(|o| !o.starts_with('$')) => {
                    // A nested projection: `{address: {zip: 1}}`.
                    let inner = d
                        .iter()
                        .map(|(ik, iv)| (format!("{k}.{ik}"), iv.clone()))
                        .collect::<Document>();
                    self.projection(&inner, masks, what)?;
                }
                e => self.expr(e, masks, what)?,
            }
        }
        Ok(())
    }
}

/// `{$slice: N}` or `{$slice: [skip, limit]}` of a find projection (numbers only; the
/// aggregation `$slice` takes an expression and is walked as one).
fn find_slice(d: &Document) -> bool {
    let number = |b: &Bson| matches!(b, Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_));
    d.len() == 1
        && match d.get("$slice") {
            Some(Bson::Array(a)) => a.len() == 2 && a.iter().all(number),
            Some(b) => number(b),
            None => false,
        }
}
