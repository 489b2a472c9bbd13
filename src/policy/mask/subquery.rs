//! The masking subquery that replaces a protected table: every visible column in order, masked
//! columns through their mask expression, row filters applied before anything else sees a row.

use super::quote_ident;
use super::schema::TableShape;
use super::strategy::MaskStrategy;

/// Everything the policy says about reading one table: masked columns and row filters, each
/// with the rule that asked for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Protection {
    /// Column → (strategy, rule). Column names as PostgreSQL stores them.
    pub masks: Vec<(String, MaskStrategy, String)>,
    /// Exact-name rules must name existing columns; glob rules mask the columns that exist.
    pub required_columns: Vec<(String, String)>,
    /// SQL boolean expressions over the table's columns, ANDed; with their rules.
    pub filters: Vec<(String, String)>,
}

impl Protection {
    pub fn is_empty(&self) -> bool {
        self.masks.is_empty() && self.filters.is_empty()
    }

    /// Adds a mask; when two rules mask one column, the stricter strategy stays.
    pub fn add_mask(&mut self, column: &str, strategy: &MaskStrategy, rule: &str) {
        match self.masks.iter_mut().find(|(c, _, _)| c == column) {
            Some(existing) if existing.1.strictness() >= strategy.strictness() => {}
            Some(existing) => *existing = (column.to_owned(), strategy.clone(), rule.to_owned()),
            None => self
                .masks
                .push((column.to_owned(), strategy.clone(), rule.to_owned())),
        }
    }

    pub fn mask_of(&self, column: &str) -> Option<&MaskStrategy> {
        self.masks
            .iter()
            .find(|(c, _, _)| c == column)
            .map(|(_, s, _)| s)
    }

    /// The rules involved, for the audit record and refusals.
    pub fn rules(&self) -> Vec<String> {
        let mut r: Vec<String> = self
            .masks
            .iter()
            .map(|(_, _, r)| r.clone())
            .chain(self.filters.iter().map(|(_, r)| r.clone()))
            .collect();
        r.sort();
        r.dedup();
        r
    }
}

/// `(SELECT ... FROM [ONLY] schema.table [WHERE ... OFFSET 0])`, or why it cannot be built and,
/// when a rule of its own is why, that rule.
///
/// A row filter gets `OFFSET 0`: PostgreSQL never pushes the outer query's conditions into a
/// subquery with OFFSET, so a condition of the agent's (which may raise an error or a notice
/// revealing a value) only ever sees rows the filter let through. Masks alone need no fence: the
/// raw value is not reachable from outside the subquery whatever the planner does.
pub fn masking_subquery(
    shape: &TableShape,
    protection: &Protection,
    only: bool,
    hash_key: &str,
) -> Result<String, (String, Option<String>)> {
    for (column, rule) in &protection.required_columns {
        if !shape.columns.iter().any(|c| &c.name == column) {
            return Err((
                format!(
                    "the policy masks column \"{column}\" of {}.{}, which has no such column",
                    shape.schema, shape.name
                ),
                Some(rule.clone()),
            ));
        }
    }
    if shape.columns.is_empty() {
        return Err((
            format!(
                "tollgate knows no columns of {}.{}",
                shape.schema, shape.name
            ),
            None,
        ));
    }
    let mut sql = String::from("(SELECT ");
    for (i, col) in shape.columns.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        let ident = quote_ident(&col.name);
        match protection.mask_of(&col.name) {
            Some(strategy) => {
                sql.push_str(&strategy.expression(&ident, &col.type_sql, col.category, hash_key));
                sql.push_str(" AS ");
                sql.push_str(&ident);
            }
            None => sql.push_str(&ident),
        }
    }
    sql.push_str(" FROM ");
    if only {
        sql.push_str("ONLY ");
    }
    sql.push_str(&quote_ident(&shape.schema));
    sql.push('.');
    sql.push_str(&quote_ident(&shape.name));
    if !protection.filters.is_empty() {
        sql.push_str(" WHERE ");
        for (i, (f, _)) in protection.filters.iter().enumerate() {
            if i > 0 {
                sql.push_str(" AND ");
            }
            sql.push('(');
            sql.push_str(f);
            sql.push(')');
        }
        sql.push_str(" OFFSET 0");
    }
    sql.push(')');
    Ok(sql)
}

#[cfg(test)]
mod tests {
    use super::super::schema::ColumnShape;
    use super::*;

    fn customers() -> TableShape {
        let col = |name: &str, attnum, ty: &str, category| ColumnShape {
            name: name.into(),
            attnum,
            type_sql: ty.into(),
            category,
        };
        TableShape {
            oid: 1,
            schema: "public".into(),
            name: "customers".into(),
            columns: vec![
                col("id", 1, "integer", 'N'),
                col("email", 2, "text", 'S'),
                col("region", 3, "text", 'S'),
            ],
        }
    }

    #[test]
    fn builds_every_column_in_order_with_masks_and_filters() {
        let mut p = Protection::default();
        p.add_mask("email", &MaskStrategy::Email, "r1");
        p.filters.push(("region = 'EU'".into(), "r2".into()));
        let sql = masking_subquery(&customers(), &p, true, "k").unwrap();
        assert!(
            sql.starts_with("(SELECT \"id\", (CASE WHEN \"email\""),
            "{sql}"
        );
        assert!(sql.contains(" AS \"email\", \"region\" FROM ONLY \"public\".\"customers\" WHERE (region = 'EU') OFFSET 0)"), "{sql}");
    }

    #[test]
    fn stricter_mask_wins_and_missing_required_column_is_an_error() {
        let mut p = Protection::default();
        p.add_mask("email", &MaskStrategy::Partial(4), "a");
        p.add_mask("email", &MaskStrategy::Null, "b");
        p.add_mask("email", &MaskStrategy::Email, "c");
        assert_eq!(p.mask_of("email"), Some(&MaskStrategy::Null));
        p.required_columns.push(("emial".into(), "a".into()));
        let (err, rule) = masking_subquery(&customers(), &p, false, "k").unwrap_err();
        assert!(err.contains("emial") && !err.contains("rule"), "{err}");
        assert_eq!(rule.as_deref(), Some("a"));
    }
}
