//! Handlers for the SQL/JSON nodes of the raw parse tree (JSON_VALUE/JSON_QUERY/JSON_EXISTS, JSON_TABLE, JSON_OBJECT/JSON_ARRAY constructors and aggregates, IS JSON). Each destructures its node completely.

use pg_query::protobuf::{
    JsonAggConstructor, JsonArgument, JsonArrayAgg, JsonArrayConstructor,
    JsonArrayQueryConstructor, JsonBehavior, JsonFormat, JsonFuncExpr, JsonIsPredicate,
    JsonKeyValue, JsonObjectAgg, JsonObjectConstructor, JsonOutput, JsonParseExpr, JsonReturning,
    JsonScalarExpr, JsonSerializeExpr, JsonTable, JsonTableColumn, JsonTablePathSpec,
    JsonValueExpr,
};
use pg_query::NodeRef;

use super::walker::{Ctx, Walker};
use super::AnalyzeError;

type R = Result<(), AnalyzeError>;

fn output<'a>(w: &mut Walker<'a>, o: &'a Option<JsonOutput>, c: &Ctx) {
    if let Some(o) = o {
        w.push(NodeRef::JsonOutput(o), c);
    }
}

fn format<'a>(w: &mut Walker<'a>, f: &'a Option<JsonFormat>, c: &Ctx) {
    if let Some(f) = f {
        w.push(NodeRef::JsonFormat(f), c);
    }
}

fn value<'a>(w: &mut Walker<'a>, v: &'a Option<Box<JsonValueExpr>>, c: &Ctx) {
    if let Some(v) = v {
        w.push(NodeRef::JsonValueExpr(v), c);
    }
}

fn behavior<'a>(w: &mut Walker<'a>, b: &'a Option<Box<JsonBehavior>>, c: &Ctx) {
    if let Some(b) = b {
        w.push(NodeRef::JsonBehavior(b), c);
    }
}

fn path_spec<'a>(w: &mut Walker<'a>, p: &'a Option<Box<JsonTablePathSpec>>, c: &Ctx) {
    if let Some(p) = p {
        w.push(NodeRef::JsonTablePathSpec(p), c);
    }
}

pub(super) fn format_node(n: &JsonFormat) -> R {
    let JsonFormat {
        format_type: _,
        encoding: _,
        location: _,
    } = n;
    Ok(())
}

pub(super) fn returning<'a>(w: &mut Walker<'a>, n: &'a JsonReturning, c: &Ctx) -> R {
    let JsonReturning {
        format: f,
        typid: _,
        typmod: _,
    } = n;
    format(w, f, c);
    Ok(())
}

pub(super) fn output_node<'a>(w: &mut Walker<'a>, n: &'a JsonOutput, c: &Ctx) -> R {
    let JsonOutput {
        type_name,
        returning,
    } = n;
    if let Some(t) = type_name {
        w.push(NodeRef::TypeName(t), c);
    }
    if let Some(r) = returning {
        w.push(NodeRef::JsonReturning(r), c);
    }
    Ok(())
}

pub(super) fn value_expr<'a>(w: &mut Walker<'a>, n: &'a JsonValueExpr, c: &Ctx) -> R {
    let JsonValueExpr {
        raw_expr,
        formatted_expr,
        format: f,
    } = n;
    w.opt(raw_expr, c);
    w.opt(formatted_expr, c);
    format(w, f, c);
    Ok(())
}

pub(super) fn is_predicate<'a>(w: &mut Walker<'a>, n: &'a JsonIsPredicate, c: &Ctx) -> R {
    let JsonIsPredicate {
        expr,
        format: f,
        item_type: _,
        unique_keys: _,
        location: _,
    } = n;
    w.opt(expr, c);
    format(w, f, c);
    Ok(())
}

pub(super) fn behavior_node<'a>(w: &mut Walker<'a>, n: &'a JsonBehavior, c: &Ctx) -> R {
    let JsonBehavior {
        btype: _,
        expr,
        coerce: _,
        location: _,
    } = n;
    w.opt(expr, c);
    Ok(())
}

pub(super) fn func_expr<'a>(w: &mut Walker<'a>, n: &'a JsonFuncExpr, c: &Ctx) -> R {
    let JsonFuncExpr {
        op: _,
        column_name: _,
        context_item,
        pathspec,
        passing,
        output: o,
        on_empty,
        on_error,
        wrapper: _,
        quotes: _,
        location: _,
    } = n;
    value(w, context_item, c);
    w.opt(pathspec, c);
    w.list(passing, c);
    output(w, o, c);
    behavior(w, on_empty, c);
    behavior(w, on_error, c);
    Ok(())
}

pub(super) fn table_path_spec<'a>(w: &mut Walker<'a>, n: &'a JsonTablePathSpec, c: &Ctx) -> R {
    let JsonTablePathSpec {
        string,
        name: _,
        name_location: _,
        location: _,
    } = n;
    w.opt(string, c);
    Ok(())
}

/// JSON_TABLE(...) as a FROM item.
pub(super) fn table<'a>(w: &mut Walker<'a>, n: &'a JsonTable, c: &Ctx) -> R {
    let JsonTable {
        context_item,
        pathspec,
        passing,
        columns,
        on_error,
        alias,
        lateral: _,
        location: _,
    } = n;
    value(w, context_item, c);
    path_spec(w, pathspec, c);
    w.list(passing, c);
    w.list(columns, c);
    behavior(w, on_error, c);
    if let Some(a) = alias {
        w.push(NodeRef::Alias(a), c);
    }
    Ok(())
}

pub(super) fn table_column<'a>(w: &mut Walker<'a>, n: &'a JsonTableColumn, c: &Ctx) -> R {
    let JsonTableColumn {
        coltype: _,
        name: _,
        type_name,
        pathspec,
        format: f,
        wrapper: _,
        quotes: _,
        columns,
        on_empty,
        on_error,
        location: _,
    } = n;
    if let Some(t) = type_name {
        w.push(NodeRef::TypeName(t), c);
    }
    path_spec(w, pathspec, c);
    format(w, f, c);
    w.list(columns, c);
    behavior(w, on_empty, c);
    behavior(w, on_error, c);
    Ok(())
}

pub(super) fn argument<'a>(w: &mut Walker<'a>, n: &'a JsonArgument, c: &Ctx) -> R {
    let JsonArgument { val, name: _ } = n;
    value(w, val, c);
    Ok(())
}

pub(super) fn key_value<'a>(w: &mut Walker<'a>, n: &'a JsonKeyValue, c: &Ctx) -> R {
    let JsonKeyValue { key, value: v } = n;
    w.opt(key, c);
    value(w, v, c);
    Ok(())
}

pub(super) fn parse_expr<'a>(w: &mut Walker<'a>, n: &'a JsonParseExpr, c: &Ctx) -> R {
    let JsonParseExpr {
        expr,
        output: o,
        unique_keys: _,
        location: _,
    } = n;
    value(w, expr, c);
    output(w, o, c);
    Ok(())
}

pub(super) fn scalar_expr<'a>(w: &mut Walker<'a>, n: &'a JsonScalarExpr, c: &Ctx) -> R {
    let JsonScalarExpr {
        expr,
        output: o,
        location: _,
    } = n;
    w.opt(expr, c);
    output(w, o, c);
    Ok(())
}

pub(super) fn serialize_expr<'a>(w: &mut Walker<'a>, n: &'a JsonSerializeExpr, c: &Ctx) -> R {
    let JsonSerializeExpr {
        expr,
        output: o,
        location: _,
    } = n;
    value(w, expr, c);
    output(w, o, c);
    Ok(())
}

pub(super) fn object_constructor<'a>(
    w: &mut Walker<'a>,
    n: &'a JsonObjectConstructor,
    c: &Ctx,
) -> R {
    let JsonObjectConstructor {
        exprs,
        output: o,
        absent_on_null: _,
        unique: _,
        location: _,
    } = n;
    w.list(exprs, c);
    output(w, o, c);
    Ok(())
}

pub(super) fn array_constructor<'a>(w: &mut Walker<'a>, n: &'a JsonArrayConstructor, c: &Ctx) -> R {
    let JsonArrayConstructor {
        exprs,
        output: o,
        absent_on_null: _,
        location: _,
    } = n;
    w.list(exprs, c);
    output(w, o, c);
    Ok(())
}

/// JSON_ARRAY(SELECT ...): a subquery.
pub(super) fn array_query_constructor<'a>(
    w: &mut Walker<'a>,
    n: &'a JsonArrayQueryConstructor,
    c: &Ctx,
) -> R {
    let JsonArrayQueryConstructor {
        query,
        output: o,
        format: f,
        absent_on_null: _,
        location: _,
    } = n;
    w.opt(query, &c.select());
    output(w, o, c);
    format(w, f, c);
    Ok(())
}

pub(super) fn agg_constructor<'a>(w: &mut Walker<'a>, n: &'a JsonAggConstructor, c: &Ctx) -> R {
    let JsonAggConstructor {
        output: o,
        agg_filter,
        agg_order,
        over,
        location: _,
    } = n;
    output(w, o, c);
    w.opt(agg_filter, c);
    w.list(agg_order, c);
    if let Some(over) = over {
        w.push(NodeRef::WindowDef(over), c);
    }
    Ok(())
}

pub(super) fn object_agg<'a>(w: &mut Walker<'a>, n: &'a JsonObjectAgg, c: &Ctx) -> R {
    let JsonObjectAgg {
        constructor,
        arg,
        absent_on_null: _,
        unique: _,
    } = n;
    if let Some(k) = constructor {
        w.push(NodeRef::JsonAggConstructor(k), c);
    }
    if let Some(a) = arg {
        w.push(NodeRef::JsonKeyValue(a), c);
    }
    Ok(())
}

pub(super) fn array_agg<'a>(w: &mut Walker<'a>, n: &'a JsonArrayAgg, c: &Ctx) -> R {
    let JsonArrayAgg {
        constructor,
        arg,
        absent_on_null: _,
    } = n;
    if let Some(k) = constructor {
        w.push(NodeRef::JsonAggConstructor(k), c);
    }
    value(w, arg, c);
    Ok(())
}
