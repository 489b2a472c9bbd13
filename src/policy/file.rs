//! The policy file format (`policies/*.toml`), as people write it. See docs/policy.md.

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Agents this file applies to, by name.
    #[serde(default)]
    pub agents: Vec<Spanned<String>>,
    /// Agent groups this file applies to.
    #[serde(default)]
    pub groups: Vec<Spanned<String>>,
    /// `false` = shadow mode: refusals are audited as `would_block` and the statement runs.
    #[serde(default = "yes")]
    pub enforce: bool,
    /// Rules per PostgreSQL upstream.
    #[serde(default)]
    pub postgres: Vec<PostgresRules>,
    /// Rules per Redis upstream.
    #[serde(default)]
    pub redis: Vec<super::redis::file::RedisBlock>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Default deny: only what the rules allow.
    #[default]
    Restricted,
    /// Everything the upstream role may do; audit, credentials and explicit denies still apply.
    Passthrough,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresRules {
    /// The upstream's logical name (a `[upstream.NAME]` of tollgate.toml).
    pub upstream: Spanned<String>,
    #[serde(default)]
    pub profile: Profile,
    /// Statement kinds allowed in addition to the defaults (see `StatementClass`).
    #[serde(default)]
    pub statements: Vec<Spanned<String>>,
    /// Functions allowed in addition to the safe built-ins (globs, `schema.name` or `name`).
    #[serde(default)]
    pub functions: Vec<Spanned<String>>,
    /// Functions refused even if allowed elsewhere (globs).
    #[serde(default)]
    pub deny_functions: Vec<Spanned<String>>,
    /// Catalog introspection (`pg_catalog`, `information_schema`) for psql `\d` and ORMs.
    #[serde(default = "yes")]
    pub catalog: bool,
    #[serde(default, rename = "table")]
    pub tables: Vec<TableRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableRule {
    /// `schema.table`, globs allowed (`public.*`, `*`); a bare name means schema `public`.
    pub name: Spanned<String>,
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
    #[serde(default)]
    pub deny: Vec<Spanned<String>>,
}
