//! The `[[redis]]` blocks of a policy file, as people write them. See docs/policy.md.

use serde::Deserialize;
use toml::Spanned;

use crate::policy::file::Profile;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisBlock {
    /// The upstream's logical name (a `[upstream.NAME]` of kind `redis` in tollgate.toml).
    pub upstream: Spanned<String>,
    #[serde(default)]
    pub profile: Profile,
    /// Commands allowed: names (`GET`, `CLIENT|SETNAME`) or ACL categories (`@read`).
    #[serde(default)]
    pub commands: Vec<Spanned<String>>,
    /// Commands refused even if allowed elsewhere: names or categories. Explicit denies win.
    #[serde(default)]
    pub deny_commands: Vec<Spanned<String>>,
    /// Key patterns (globs) the agent may read.
    #[serde(default)]
    pub read_keys: Vec<Spanned<String>>,
    /// Key patterns the agent may write (create, change, delete).
    #[serde(default)]
    pub write_keys: Vec<Spanned<String>>,
    /// Key patterns refused for any access, whatever else allows them.
    #[serde(default)]
    pub deny_keys: Vec<Spanned<String>>,
    /// Pub/sub channel patterns the agent may subscribe and publish to.
    #[serde(default)]
    pub channels: Vec<Spanned<String>>,
    /// Logical databases the agent may `SELECT` (default: 0 only).
    #[serde(default)]
    pub databases: Option<Vec<Spanned<u32>>>,
    /// Values masked per key pattern.
    #[serde(default)]
    pub mask: Vec<MaskRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskRule {
    /// Key pattern (glob) whose values are masked.
    pub keys: Spanned<String>,
    /// Hash fields to mask; empty = the whole value (strings) and every field (hashes).
    #[serde(default)]
    pub fields: Vec<Spanned<String>>,
    /// `redact` (default), `email` or `hash`.
    #[serde(default)]
    pub strategy: Option<Spanned<String>>,
}
