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
    /// The agents of this file must connect over TLS (PostgreSQL and Redis); a plain
    /// connection is refused after authentication (audited as `would_block` in shadow mode).
    #[serde(default)]
    pub require_tls: bool,
    /// Rules per PostgreSQL upstream.
    #[serde(default)]
    pub postgres: Vec<PostgresRules>,
    /// Volume controls for the agents of this file (the strictest value across files wins).
    #[serde(default)]
    pub limits: Option<Spanned<LimitsFile>>,
    /// Rules per Redis upstream.
    #[serde(default)]
    pub redis: Vec<super::redis::file::RedisBlock>,
    /// Rules per MongoDB upstream.
    #[serde(default)]
    pub mongo: Vec<super::mongo::file::MongoBlock>,
}

/// `[limits]` of a policy file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Statements (PostgreSQL) and commands (Redis) per minute, per agent, across sessions.
    pub statements_per_minute: Option<u32>,
    /// Extra statements allowed in a burst above the steady rate (default: a tenth of a minute).
    pub burst: Option<u32>,
    /// Rows one statement may return.
    pub max_rows: Option<u64>,
    /// `truncate` (default: stop at max_rows, with a notice) or `refuse` (error).
    pub on_max_rows: Option<Spanned<String>>,
    /// Statement timeout enforced by tollgate (cancels the statement upstream).
    pub statement_timeout_ms: Option<u64>,
    /// A session idle inside a transaction longer than this is closed.
    pub idle_in_transaction_timeout_ms: Option<u64>,
    /// Concurrent sessions of one agent.
    pub max_connections: Option<u32>,
    /// Bytes of result data one statement may return. Enforced by the MCP tools (the result is
    /// cut, `truncated: true`); the wire front ends do not enforce it yet (see docs/mcp.md).
    pub max_result_bytes: Option<u64>,
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
    /// `session` or `transaction`: how these agents' sessions get server connections on this
    /// upstream, overriding the upstream's `pool_mode` (any file saying `session` wins).
    #[serde(default)]
    pub pool_mode: Option<crate::config::PoolMode>,
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
    /// Column → mask (`redact`, `redact:TEXT`, `null`, `hash`, `partial:N`, `email`, `default`).
    #[serde(default)]
    pub mask: std::collections::BTreeMap<String, Spanned<String>>,
    /// A SQL condition over the table's columns: the agent sees only the rows it accepts.
    #[serde(default)]
    pub row_filter: Option<Spanned<String>>,
}
