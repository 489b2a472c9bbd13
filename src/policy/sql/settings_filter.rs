//! pg_dump's way of setting a setting that may not exist on an older server:
//! `SELECT set_config(name, 'view, foreign-table', false) FROM pg_settings WHERE name =
//! 'restrict_nonsystem_relation_kind'` (every pg_dump since 15.8 / 16.4 sends it). The setting's
//! name is a column, not a literal, so `set_config` looked computed and was refused to every
//! agent (the memory settings are judged for passthrough agents too). Accepted in exactly
//! pg_dump's statement: that setting, and one of the two values pg_dump sets it to. The WHERE
//! clause alone does not pin the name: an unqualified `pg_settings` may be a temporary table
//! whose `name` is `char(n)` (trailing spaces ignored) or of a type with its own `=` (the
//! re-review set work_mem and standard_conforming_strings that way); with pg_dump's values, any
//! other setting the row could name refuses the value.

use pg_query::protobuf::{AExpr, AExprKind, ColumnRef, Node, SelectStmt};
use pg_query::NodeEnum;

use super::expr::string_literal;
use super::names::strings;

/// The setting named in `SELECT set_config(name, ...) FROM [pg_catalog.]pg_settings WHERE name =
/// 'literal'`, in exactly that shape (one target, one FROM item, one condition, no WITH, no set
/// operation), where the `name` passed to `set_config` can only be that literal; with the value
/// when it is a literal too (as `set_config_calls` records a call).
pub(super) fn single_named_setting(stmt: &NodeEnum) -> Option<(String, Option<String>)> {
    let NodeEnum::SelectStmt(s) = stmt else {
        return None;
    };
    let SelectStmt {
        target_list,
        from_clause,
        where_clause,
        with_clause,
        op,
        larg,
        rarg,
        ..
    } = s.as_ref();
    if *op != pg_query::protobuf::SetOperation::SetopNone as i32
        || larg.is_some()
        || rarg.is_some()
        || with_clause.is_some()
    {
        return None;
    }
    let [target] = target_list.as_slice() else {
        return None;
    };
    let Some(NodeEnum::ResTarget(t)) = target.node.as_ref() else {
        return None;
    };
    let Some(NodeEnum::FuncCall(call)) = t.val.as_deref().and_then(|v| v.node.as_ref()) else {
        return None;
    };
    let set_config = matches!(
        strings(&call.funcname).as_deref(),
        Some(["set_config"] | ["pg_catalog", "set_config"])
    );
    if !set_config || !call.args.first().is_some_and(is_name_column) {
        return None;
    }
    let [from] = from_clause.as_slice() else {
        return None;
    };
    let Some(NodeEnum::RangeVar(rv)) = from.node.as_ref() else {
        return None;
    };
    let catalog = rv.schemaname.is_empty() || rv.schemaname == "pg_catalog";
    if !(catalog && rv.catalogname.is_empty() && rv.relname == "pg_settings" && rv.inh) {
        return None;
    }
    let Some(NodeEnum::AExpr(e)) = where_clause.as_deref().and_then(|w| w.node.as_ref()) else {
        return None;
    };
    let AExpr {
        kind,
        name,
        lexpr,
        rexpr,
        ..
    } = e.as_ref();
    let is_equals = *kind == AExprKind::AexprOp as i32
        && matches!(name.as_slice(), [n] if matches!(&n.node, Some(NodeEnum::String(s)) if s.sval == "="));
    if !is_equals {
        return None;
    }
    let (l, r) = (lexpr.as_deref()?, rexpr.as_deref()?);
    let name = match (is_name_column(l), is_name_column(r)) {
        (true, false) => string_literal(Some(r))?,
        (false, true) => string_literal(Some(l))?,
        _ => return None,
    };
    let value = string_literal(call.args.get(1))?;
    let pg_dumps = name == PG_DUMP_SETTING && PG_DUMP_VALUES.contains(&value.as_str());
    pg_dumps.then_some((name, Some(value)))
}

/// The setting pg_dump sets this way, and its values (`view` while it dumps foreign data).
const PG_DUMP_SETTING: &str = "restrict_nonsystem_relation_kind";
const PG_DUMP_VALUES: [&str; 2] = ["view, foreign-table", "view"];

/// A bare `name` or `pg_settings.name` column reference.
fn is_name_column(n: &Node) -> bool {
    let Some(NodeEnum::ColumnRef(ColumnRef { fields, .. })) = n.node.as_ref() else {
        return false;
    };
    matches!(
        strings(fields).as_deref(),
        Some(["name"] | ["pg_settings", "name"])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(sql: &str) -> Option<String> {
        let parsed = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT).unwrap();
        let stmt = parsed.protobuf.stmts[0].stmt.as_ref().unwrap();
        single_named_setting(stmt.node.as_ref().unwrap()).map(|(name, _)| name)
    }

    #[test]
    fn only_the_single_name_filter_on_pg_settings_names_the_setting() {
        let pg_dump = "SELECT set_config(name, 'view, foreign-table', false) FROM pg_settings WHERE name = 'restrict_nonsystem_relation_kind'";
        assert_eq!(
            named(pg_dump).as_deref(),
            Some("restrict_nonsystem_relation_kind")
        );
        assert_eq!(
            named("SELECT pg_catalog.set_config(name, 'view', false) FROM pg_catalog.pg_settings WHERE 'restrict_nonsystem_relation_kind' = pg_settings.name").as_deref(),
            Some("restrict_nonsystem_relation_kind")
        );
        for other in [
            // Another setting or value: the WHERE clause does not pin what the row names (a
            // temporary pg_settings with a char(n) name ignores the trailing spaces).
            "SELECT set_config(name, '1GB', false) FROM pg_settings WHERE name = 'work_mem   '",
            "SELECT set_config(name, '1GB', false) FROM pg_settings WHERE name = 'work_mem'",
            "SELECT set_config(name, 'off', false) FROM pg_settings WHERE name = 'restrict_nonsystem_relation_kind'",
            "SELECT set_config(name, 'view, foreign-table', false) FROM pg_settings WHERE name = 'restrict_nonsystem_relation_kind '",
            "SELECT set_config(name, '1', false) FROM pg_settings WHERE name = 'a' OR name = 'work_mem'",
            "SELECT set_config(name, '1', false) FROM pg_settings WHERE name LIKE 'work%'",
            "SELECT set_config(name, '1', false) FROM pg_settings",
            "SELECT set_config(name, '1', false) FROM pg_settings, x WHERE name = 'a'",
            "SELECT set_config(name, '1', false) FROM public.pg_settings WHERE name = 'a'",
            "SELECT set_config(name, '1', false) FROM pg_settings WHERE name = 'a' UNION SELECT set_config(name, '1', false) FROM pg_settings",
            "SELECT set_config(name, '1', false) FROM (SELECT 'work_mem' AS name) pg_settings WHERE name = 'a'",
            "WITH pg_settings AS (SELECT 'work_mem' AS name) SELECT set_config(name, '1', false) FROM pg_settings WHERE name = 'a'",
            "SELECT set_config(name, '1', false), set_config('work_mem', '2GB', false) FROM pg_settings WHERE name = 'a'",
            "SELECT (SELECT set_config(name, '1', false) FROM t) FROM pg_settings WHERE name = 'a'",
            "SELECT set_config(setting, '1', false) FROM pg_settings WHERE name = 'a'",
        ] {
            assert_eq!(named(other), None, "{other}");
        }
    }
}
