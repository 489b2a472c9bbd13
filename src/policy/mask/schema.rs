//! What tollgate knows of an upstream's tables: columns in order, with types. Loaded from the
//! upstream's catalog (see `pg::schema_loader`) and used to build masking subqueries.

use std::collections::HashMap;

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnShape {
    pub name: String,
    pub attnum: i16,
    /// `format_type(atttypid, atttypmod)`: a type name PostgreSQL reads back exactly.
    pub type_sql: String,
    /// `pg_type.typcategory` (`S` string, `N` numeric, `D` date/time, ...).
    pub category: char,
}

/// One table (or view) with its visible columns in `attnum` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableShape {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub columns: Vec<ColumnShape>,
}

/// The tables of one upstream, by `schema.name`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaSnapshot {
    pub tables: HashMap<String, TableShape>,
}

impl SchemaSnapshot {
    pub fn table(&self, qualified: &str) -> Option<&TableShape> {
        self.tables.get(qualified)
    }

    pub fn insert(&mut self, table: TableShape) {
        self.tables
            .insert(format!("{}.{}", table.schema, table.name), table);
    }
}
