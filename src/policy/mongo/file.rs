//! The `[[mongo]]` blocks of a policy file, as people write them. See docs/policy.md.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::policy::file::Profile;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoBlock {
    /// The upstream's logical name (a `[upstream.NAME]` of kind `mongodb` in tollgate.toml).
    pub upstream: Spanned<String>,
    #[serde(default)]
    pub profile: Profile,
    /// Server-side JavaScript (`$where`, `$function`, `$accumulator`, `mapReduce`): refused
    /// unless this is `true`.
    #[serde(default)]
    pub javascript: bool,
    /// Diagnostic stages and commands allowed on the collections the agent may read:
    /// `$collStats`, `$indexStats`, `$planCacheStats`, `collStats`, `dbStats`, `explain`.
    #[serde(default)]
    pub diagnostics: Vec<Spanned<String>>,
    #[serde(default, rename = "collection")]
    pub collections: Vec<CollectionRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionRule {
    /// `database.collection`, globs allowed (`shop.*`, `*.orders`, `*`).
    pub name: Spanned<String>,
    /// Operations: `find`, `aggregate`, `count`, `distinct`, `insert`, `update`, `delete`,
    /// `findAndModify`, `index`, `collection` (DDL), `watch` (change streams); or `read`,
    /// `write`, `ddl`, `*`.
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
    #[serde(default)]
    pub deny: Vec<Spanned<String>>,
    /// Field (dotted path) → mask (`redact`, `redact:TEXT`, `null`, `hash`, `partial:N`,
    /// `email`, `default`).
    #[serde(default)]
    pub mask: BTreeMap<String, Spanned<String>>,
    /// A query document as JSON (`'{"region": "EU"}'`): the agent sees and changes only the
    /// documents it matches.
    #[serde(default)]
    pub row_filter: Option<Spanned<String>>,
}
