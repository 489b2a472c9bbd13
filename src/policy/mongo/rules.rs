//! Compiled MongoDB rules of one agent for one upstream: operation sets, collection matchers
//! with masks and row filters, and what the agent may see of databases and collections.

use bson::Document;

use crate::policy::glob::Glob;
use crate::policy::mask::MaskStrategy;

/// What may be done to a collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Find,
    Aggregate,
    Count,
    Distinct,
    Insert,
    Update,
    Delete,
    FindAndModify,
    /// createIndexes, dropIndexes.
    Index,
    /// create (collections and views), drop, collMod, renameCollection.
    Collection,
    /// Change streams.
    Watch,
}

impl Op {
    pub const ALL: [Op; 11] = [
        Op::Find,
        Op::Aggregate,
        Op::Count,
        Op::Distinct,
        Op::Insert,
        Op::Update,
        Op::Delete,
        Op::FindAndModify,
        Op::Index,
        Op::Collection,
        Op::Watch,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Find => "find",
            Op::Aggregate => "aggregate",
            Op::Count => "count",
            Op::Distinct => "distinct",
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::FindAndModify => "findAndModify",
            Op::Index => "index",
            Op::Collection => "collection",
            Op::Watch => "watch",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpSet(u16);

impl OpSet {
    pub fn contains(self, op: Op) -> bool {
        self.0 & op.bit() != 0
    }
    pub fn insert(&mut self, op: Op) {
        self.0 |= op.bit();
    }
    pub fn union(self, other: OpSet) -> OpSet {
        OpSet(self.0 | other.0)
    }

    pub const WORDS: &'static str =
        "find, aggregate, count, distinct, insert, update, delete, findAndModify, index, collection, watch, read, write, ddl, *";

    /// One word of an `allow`/`deny` list.
    pub fn parse_word(word: &str) -> Option<OpSet> {
        let mut set = OpSet::default();
        let many = |ops: &[Op]| {
            let mut s = OpSet::default();
            ops.iter().for_each(|o| s.insert(*o));
            s
        };
        match word {
            "*" | "all" => return Some(many(&Op::ALL)),
            "read" => return Some(many(&[Op::Find, Op::Aggregate, Op::Count, Op::Distinct])),
            "write" => {
                return Some(many(&[
                    Op::Insert,
                    Op::Update,
                    Op::Delete,
                    Op::FindAndModify,
                ]))
            }
            "ddl" => return Some(many(&[Op::Index, Op::Collection])),
            w => set.insert(*Op::ALL.iter().find(|o| o.name() == w)?),
        }
        Some(set)
    }
}

/// One `[[mongo.collection]]` after compilation; `rule` names it in refusals.
#[derive(Debug, Clone)]
pub struct CollectionMatcher {
    pub glob: Glob,
    pub allow: OpSet,
    pub deny: OpSet,
    pub rule: String,
    pub masks: Vec<(String, MaskStrategy)>,
    pub row_filter: Option<Document>,
}

/// A masked field of a collection, with the rule that masks it.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskedField {
    /// Dotted path.
    pub path: String,
    pub strategy: MaskStrategy,
    pub rule: String,
}

/// Masks and row filters of one namespace (from every rule that matches it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Protection {
    pub masks: Vec<MaskedField>,
    /// Filters that must all hold (one per matching rule).
    pub filters: Vec<(Document, String)>,
}

impl Protection {
    pub fn is_empty(&self) -> bool {
        self.masks.is_empty() && self.filters.is_empty()
    }

    /// The combined row filter, if any.
    pub fn filter(&self) -> Option<Document> {
        match self.filters.len() {
            0 => None,
            1 => Some(self.filters[0].0.clone()),
            _ => {
                let all: Vec<bson::Bson> = self
                    .filters
                    .iter()
                    .map(|(f, _)| bson::Bson::Document(f.clone()))
                    .collect();
                Some(bson::doc! { "$and": all })
            }
        }
    }
}

/// The merged rules of one agent for one MongoDB upstream.
#[derive(Debug, Clone, Default)]
pub struct MongoRules {
    pub passthrough: bool,
    /// The rule that allows server-side JavaScript, if one does.
    pub javascript: Option<String>,
    /// Diagnostic stages and commands allowed, with the rule that allows each.
    pub diagnostics: Vec<(String, String)>,
    pub collections: Vec<CollectionMatcher>,
    /// The policy files that contributed, for messages.
    pub sources: Vec<String>,
}

/// Does `glob` cover namespace `ns`? `system.*` collections are matched only by patterns that
/// name them (`shop.*` does not reach `shop.system.profile`).
fn covers(glob: &Glob, ns: &str) -> bool {
    if !glob.matches(ns) {
        return false;
    }
    let coll = ns.split_once('.').map(|(_, c)| c).unwrap_or("");
    !coll.starts_with("system.") || glob.as_str().contains(".system.")
}

impl MongoRules {
    /// The rule allowing `op` on `ns` (passthrough: `None` for "no explicit rule"), or why not.
    pub fn check(&self, ns: &str, op: Op) -> Result<Option<String>, crate::refusal::Refusal> {
        let matching = || self.collections.iter().filter(|c| covers(&c.glob, ns));
        if let Some(d) = matching().find(|c| c.deny.contains(op)) {
            return Err(crate::refusal::Refusal::permission(
                d.rule.clone(),
                format!("{} on {ns} is denied", op.name()),
            ));
        }
        if let Some(a) = matching().find(|c| c.allow.contains(op)) {
            return Ok(Some(a.rule.clone()));
        }
        if self.passthrough {
            return Ok(None);
        }
        Err(crate::refusal::Refusal::permission(
            crate::policy::decide::DEFAULT_DENY,
            format!("no rule allows {} on {ns}", op.name()),
        ))
    }

    /// Masks and row filters of `ns`.
    pub fn protection_of(&self, ns: &str) -> Protection {
        let mut p = Protection::default();
        for c in self.collections.iter().filter(|c| covers(&c.glob, ns)) {
            for (path, strategy) in &c.masks {
                match p.masks.iter_mut().find(|m| &m.path == path) {
                    // Two rules mask one field: the strategy that reveals least wins.
                    Some(m) if strategy.strictness() > m.strategy.strictness() => {
                        m.strategy = strategy.clone();
                        m.rule = c.rule.clone();
                    }
                    Some(_) => {}
                    None => p.masks.push(MaskedField {
                        path: path.clone(),
                        strategy: strategy.clone(),
                        rule: c.rule.clone(),
                    }),
                }
            }
            if let Some(f) = &c.row_filter {
                p.filters.push((f.clone(), c.rule.clone()));
            }
        }
        p
    }

    /// May the agent see that `ns` exists (some operation allowed on it)?
    pub fn collection_visible(&self, ns: &str) -> bool {
        if self.passthrough {
            return !self
                .collections
                .iter()
                .any(|c| covers(&c.glob, ns) && c.deny == all_ops());
        }
        Op::ALL
            .iter()
            .any(|op| matches!(self.check(ns, *op), Ok(Some(_))))
    }

    /// May the agent see that database `db` exists (some rule could match a collection of it)?
    pub fn database_visible(&self, db: &str) -> bool {
        if self.passthrough {
            return true;
        }
        self.collections.iter().any(|c| {
            c.allow != OpSet::default() && {
                let pattern = c.glob.as_str();
                let db_part = pattern.split_once('.').map(|(d, _)| d).unwrap_or(pattern);
                Glob::new(db_part).matches(db) || pattern == "*"
            }
        })
    }

    /// The rule that allows a diagnostic stage or command.
    pub fn diagnostic(&self, name: &str) -> Option<&str> {
        self.diagnostics
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r.as_str())
    }

    /// Some collection has masks or a row filter.
    pub fn has_protections(&self) -> bool {
        self.collections
            .iter()
            .any(|c| !c.masks.is_empty() || c.row_filter.is_some())
    }
}

fn all_ops() -> OpSet {
    let mut s = OpSet::default();
    Op::ALL.iter().for_each(|o| s.insert(*o));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_collections_need_a_pattern_that_names_them() {
        let g = Glob::new("shop.*");
        assert!(covers(&g, "shop.orders"));
        assert!(!covers(&g, "shop.system.profile"));
        assert!(covers(&Glob::new("shop.system.*"), "shop.system.profile"));
        assert!(!covers(&Glob::new("*"), "admin.system.users"));
    }

    #[test]
    fn words() {
        assert!(OpSet::parse_word("read").unwrap().contains(Op::Distinct));
        assert!(!OpSet::parse_word("read").unwrap().contains(Op::Insert));
        assert!(OpSet::parse_word("findAndModify")
            .unwrap()
            .contains(Op::FindAndModify));
        assert!(OpSet::parse_word("select").is_none());
    }
}
