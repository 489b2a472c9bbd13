//! Compiled rules: operation and statement-class sets, table and function matchers per upstream.

use super::glob::Glob;
use super::mask::{MaskStrategy, Protection};
use super::mongo::MongoRules;
use super::redis::RedisRules;

/// What may be done to a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Select,
    Insert,
    Update,
    Delete,
    Truncate,
    Ddl,
    Dcl,
    Lock,
    Maintenance,
}

impl Op {
    pub const ALL: [Op; 9] = [
        Op::Select,
        Op::Insert,
        Op::Update,
        Op::Delete,
        Op::Truncate,
        Op::Ddl,
        Op::Dcl,
        Op::Lock,
        Op::Maintenance,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Select => "select",
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Truncate => "truncate",
            Op::Ddl => "ddl",
            Op::Dcl => "dcl",
            Op::Lock => "lock",
            Op::Maintenance => "maintenance",
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
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Parses one word of an `allow`/`deny` list into the ops it stands for.
    pub fn parse_word(word: &str) -> Option<OpSet> {
        let mut set = OpSet::default();
        match word {
            "*" | "all" => Op::ALL.iter().for_each(|o| set.insert(*o)),
            "read" => set.insert(Op::Select),
            "write" => [Op::Insert, Op::Update, Op::Delete]
                .iter()
                .for_each(|o| set.insert(*o)),
            w => set.insert(*Op::ALL.iter().find(|o| o.name() == w)?),
        }
        Some(set)
    }
}

/// Kinds of statements beyond reading and writing tables, allowed per upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementClass {
    Transaction,
    Session,
    Explain,
    Prepare,
    Cursor,
    Copy,
    Listen,
    Ddl,
    Dcl,
    Do,
    Call,
    Lock,
    Maintenance,
}

impl StatementClass {
    pub const ALL: [StatementClass; 13] = [
        StatementClass::Transaction,
        StatementClass::Session,
        StatementClass::Explain,
        StatementClass::Prepare,
        StatementClass::Cursor,
        StatementClass::Copy,
        StatementClass::Listen,
        StatementClass::Ddl,
        StatementClass::Dcl,
        StatementClass::Do,
        StatementClass::Call,
        StatementClass::Lock,
        StatementClass::Maintenance,
    ];
    /// Allowed unless a policy says otherwise: what every client library does on its own.
    pub const DEFAULTS: [StatementClass; 5] = [
        StatementClass::Transaction,
        StatementClass::Session,
        StatementClass::Explain,
        StatementClass::Prepare,
        StatementClass::Cursor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StatementClass::Transaction => "transaction",
            StatementClass::Session => "session",
            StatementClass::Explain => "explain",
            StatementClass::Prepare => "prepare",
            StatementClass::Cursor => "cursor",
            StatementClass::Copy => "copy",
            StatementClass::Listen => "listen",
            StatementClass::Ddl => "ddl",
            StatementClass::Dcl => "dcl",
            StatementClass::Do => "do",
            StatementClass::Call => "call",
            StatementClass::Lock => "lock",
            StatementClass::Maintenance => "maintenance",
        }
    }

    pub fn parse(word: &str) -> Option<StatementClass> {
        StatementClass::ALL
            .iter()
            .copied()
            .find(|c| c.name() == word)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClassSet(u16);

impl ClassSet {
    pub fn defaults() -> ClassSet {
        let mut s = ClassSet::default();
        StatementClass::DEFAULTS.iter().for_each(|c| s.insert(*c));
        s
    }
    pub fn contains(self, c: StatementClass) -> bool {
        self.0 & (1 << c as u16) != 0
    }
    pub fn insert(&mut self, c: StatementClass) {
        self.0 |= 1 << c as u16;
    }
    pub fn union(self, other: ClassSet) -> ClassSet {
        ClassSet(self.0 | other.0)
    }
}

/// One table rule after compilation; `rule` names it in refusals (`analyst.toml: table public.orders`).
#[derive(Debug, Clone)]
pub struct TableMatcher {
    pub glob: Glob,
    pub allow: OpSet,
    pub deny: OpSet,
    pub rule: String,
    /// Masked columns. With an exact (glob-free) table name, every column must exist.
    pub masks: Vec<(String, MaskStrategy)>,
    pub exact: bool,
    pub row_filter: Option<String>,
}

#[derive(Debug, Clone)]
pub struct FunctionMatcher {
    pub glob: Glob,
    pub rule: String,
}

/// The merged rules of one agent for one upstream, of the upstream's kind: union of allows,
/// every deny kept. Each kind's rules are a peer module (`policy::sql`-driven `SqlRules` here,
/// `policy::redis::RedisRules`, `policy::mongo::MongoRules`).
#[derive(Debug, Clone)]
pub enum UpstreamRules {
    Sql(SqlRules),
    Redis(RedisRules),
    Mongo(MongoRules),
}

impl UpstreamRules {
    pub fn sql(&self) -> Option<&SqlRules> {
        match self {
            UpstreamRules::Sql(r) => Some(r),
            _ => None,
        }
    }

    pub fn redis(&self) -> Option<&RedisRules> {
        match self {
            UpstreamRules::Redis(r) => Some(r),
            _ => None,
        }
    }

    pub fn mongo(&self) -> Option<&MongoRules> {
        match self {
            UpstreamRules::Mongo(r) => Some(r),
            _ => None,
        }
    }

    /// The policy files that contributed, for messages.
    pub fn sources(&self) -> &[String] {
        match self {
            UpstreamRules::Sql(r) => &r.sources,
            UpstreamRules::Redis(r) => &r.sources,
            UpstreamRules::Mongo(r) => &r.sources,
        }
    }

    /// Some table has masks or a row filter (SQL): its statements must be analysed even in
    /// passthrough, and the upstream's table shapes are needed.
    pub fn has_protections(&self) -> bool {
        self.sql().is_some_and(SqlRules::has_protections)
    }
}

/// The merged rules of one agent for one SQL upstream.
#[derive(Debug, Clone, Default)]
pub struct SqlRules {
    pub passthrough: bool,
    pub classes: ClassSet,
    pub catalog: bool,
    pub tables: Vec<TableMatcher>,
    pub allow_functions: Vec<FunctionMatcher>,
    pub deny_functions: Vec<FunctionMatcher>,
    /// Schemas unqualified names resolve against (after pg_catalog), from the upstream config.
    pub search_path: Vec<String>,
    /// The policy files that contributed, for messages.
    pub sources: Vec<String>,
    /// The pool mode these rules ask for (`None`: the upstream's).
    pub pool_mode: Option<crate::config::PoolMode>,
}

impl SqlRules {
    pub fn has_denies(&self) -> bool {
        !self.deny_functions.is_empty() || self.tables.iter().any(|t| !t.deny.is_empty())
    }

    /// A deny, a mask or a row filter applies: what a passthrough agent may do is bounded
    /// (statements analysed, SQL tollgate cannot read refused, statistics views too).
    pub fn guards(&self) -> bool {
        self.has_denies() || self.has_protections()
    }

    /// Some table has masks or a row filter: statements must be analysed even in passthrough.
    pub fn has_protections(&self) -> bool {
        self.tables
            .iter()
            .any(|t| !t.masks.is_empty() || t.row_filter.is_some())
    }

    /// Whether any column is masked, whatever the strategy.
    pub fn has_mask(&self) -> bool {
        self.tables.iter().any(|t| !t.masks.is_empty())
    }

    /// Some table has a column masked with `hash`, whose key masking subqueries carry.
    pub fn has_hash_mask(&self) -> bool {
        self.tables.iter().any(|t| {
            t.masks
                .iter()
                .any(|(_, s)| *s == super::mask::MaskStrategy::Hash)
        })
    }

    /// Masks and row filters of every rule matching `qualified`.
    pub fn protection_of(&self, qualified: &str) -> Protection {
        let mut p = Protection::default();
        for t in self.tables.iter().filter(|t| t.glob.matches(qualified)) {
            for (column, strategy) in &t.masks {
                p.add_mask(column, strategy, &t.rule);
                if t.exact {
                    p.required_columns.push((column.clone(), t.rule.clone()));
                }
            }
            if let Some(f) = &t.row_filter {
                p.filters.push((f.clone(), t.rule.clone()));
            }
        }
        p
    }
}
