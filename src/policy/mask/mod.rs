//! Masking and row filters: the policy's column masks and row filters, the upstream's table
//! shapes they are built from, and the rewrite that puts a masking subquery in place of every
//! read of a protected table.
//!
//! The property: for a masked column the agent can observe only the masked value. The rewrite
//! gets there by construction: every FROM item naming a protected table becomes
//! `(SELECT id, name, <mask>(email) AS email, ... FROM ONLY? schema.table [WHERE filter OFFSET 0]) AS table`,
//! so whatever the statement does with the table (select list, `*`, whole-row references,
//! predicates, ordering, grouping, joins, aggregates, casts) it does with masked values only.
//! A protected table named anywhere the rewrite cannot place a subquery is refused.

pub mod key;
mod rewrite;
mod schema;
mod strategy;
mod subquery;

pub use rewrite::{
    plan_rewrite, verify_rewrite, PositionMap, ProtectionSource, RewriteError, RewritePlan,
};
pub use schema::{ColumnShape, SchemaSnapshot, TableShape};
pub use strategy::{MaskStrategy, ParseMaskError};
pub use subquery::{masking_subquery, Protection};

/// `"name"` with embedded quotes doubled: an identifier PostgreSQL reads back exactly.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` with embedded quotes doubled (standard_conforming_strings is pinned on).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
