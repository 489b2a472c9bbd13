//! Handlers for expression nodes of the raw parse tree (operators, function calls, casts, subquery links, CASE, JSON and XML constructs, window definitions). Each destructures its node completely, so a field added by a new pg_query fails the build.

use pg_query::protobuf::{
    a_const, node::Node as NodeEnum, AArrayExpr, AConst, AExpr, AIndices, AIndirection, BoolExpr,
    BooleanTest, CaseExpr, CaseWhen, CoalesceExpr, CollateClause, ColumnRef, CurrentOfExpr,
    FuncCall, GroupingFunc, GroupingSet, MergeSupportFunc, MinMaxExpr, MultiAssignRef,
    NamedArgExpr, Node, NullTest, ResTarget, RowExpr, SetToDefault, SortBy, SqlValueFunction,
    SubLink, TypeCast, TypeName, WindowDef, XmlExpr, XmlSerialize,
};
use pg_query::NodeRef;

use super::names::strings;
use super::walker::{Ctx, Walker};
use super::AnalyzeError;

type R = Result<(), AnalyzeError>;

/// Types whose input function looks an object up by name: a cast of text to one of them names
/// an object by a string literal.
const OBJECT_NAME_TYPES: &[&str] = &[
    "regclass",
    "regcollation",
    "regconfig",
    "regdictionary",
    "regnamespace",
    "regoper",
    "regoperator",
    "regproc",
    "regprocedure",
    "regrole",
    "regtype",
];

pub(super) fn a_expr<'a>(w: &mut Walker<'a>, n: &'a AExpr, c: &Ctx) -> R {
    let AExpr {
        kind: _,
        name,
        lexpr,
        rexpr,
        rexpr_list_start: _,
        rexpr_list_end: _,
        location: _,
    } = n;
    operator(w, name)?;
    w.opt(lexpr, c);
    w.opt(rexpr, c);
    Ok(())
}

/// An operator name. `OPERATOR(schema.op)` with a schema other than pg_catalog calls a
/// user-defined function: reported as a call of `schema."OPERATOR(op)"`, which is never a
/// safe built-in.
fn operator(w: &mut Walker<'_>, names: &[Node]) -> R {
    let parts = strings(names).ok_or_else(|| {
        AnalyzeError::Unsupported("operator name of an unexpected shape".to_owned())
    })?;
    match parts.as_slice() {
        [] | [_] | ["pg_catalog", _] | [_, "pg_catalog", _] => {}
        [schema, op] | [_, schema, op] => {
            w.function(Some((*schema).to_owned()), format!("OPERATOR({op})"));
        }
        _ => {
            return Err(AnalyzeError::Unsupported(
                "operator name of an unexpected shape".to_owned(),
            ))
        }
    }
    Ok(())
}

pub(super) fn bool_expr<'a>(w: &mut Walker<'a>, n: &'a BoolExpr, c: &Ctx) -> R {
    let BoolExpr {
        xpr,
        boolop: _,
        args,
        location: _,
    } = n;
    w.opt(xpr, c);
    w.list(args, c);
    Ok(())
}

pub(super) fn sub_link<'a>(w: &mut Walker<'a>, n: &'a SubLink, c: &Ctx) -> R {
    let SubLink {
        xpr,
        sub_link_type: _,
        sub_link_id: _,
        testexpr,
        oper_name,
        subselect,
        location: _,
    } = n;
    operator(w, oper_name)?;
    w.opt(xpr, c);
    w.opt(testexpr, c);
    w.opt(subselect, &c.select());
    Ok(())
}

pub(super) fn null_test<'a>(w: &mut Walker<'a>, n: &'a NullTest, c: &Ctx) -> R {
    let NullTest {
        xpr,
        arg,
        nulltesttype: _,
        argisrow: _,
        location: _,
    } = n;
    w.opt(xpr, c);
    w.opt(arg, c);
    Ok(())
}

pub(super) fn boolean_test<'a>(w: &mut Walker<'a>, n: &'a BooleanTest, c: &Ctx) -> R {
    let BooleanTest {
        xpr,
        arg,
        booltesttype: _,
        location: _,
    } = n;
    w.opt(xpr, c);
    w.opt(arg, c);
    Ok(())
}

pub(super) fn case_expr<'a>(w: &mut Walker<'a>, n: &'a CaseExpr, c: &Ctx) -> R {
    let CaseExpr {
        xpr,
        casetype: _,
        casecollid: _,
        arg,
        args,
        defresult,
        location: _,
    } = n;
    w.opt(xpr, c);
    w.opt(arg, c);
    w.list(args, c);
    w.opt(defresult, c);
    Ok(())
}

pub(super) fn case_when<'a>(w: &mut Walker<'a>, n: &'a CaseWhen, c: &Ctx) -> R {
    let CaseWhen {
        xpr,
        expr,
        result,
        location: _,
    } = n;
    w.opt(xpr, c);
    w.opt(expr, c);
    w.opt(result, c);
    Ok(())
}

pub(super) fn coalesce_expr<'a>(w: &mut Walker<'a>, n: &'a CoalesceExpr, c: &Ctx) -> R {
    let CoalesceExpr {
        xpr,
        coalescetype: _,
        coalescecollid: _,
        args,
        location: _,
    } = n;
    w.opt(xpr, c);
    w.list(args, c);
    Ok(())
}

pub(super) fn min_max_expr<'a>(w: &mut Walker<'a>, n: &'a MinMaxExpr, c: &Ctx) -> R {
    let MinMaxExpr {
        xpr,
        minmaxtype: _,
        minmaxcollid: _,
        inputcollid: _,
        op: _,
        args,
        location: _,
    } = n;
    w.opt(xpr, c);
    w.list(args, c);
    Ok(())
}

pub(super) fn row_expr<'a>(w: &mut Walker<'a>, n: &'a RowExpr, c: &Ctx) -> R {
    let RowExpr {
        xpr,
        args,
        row_typeid: _,
        row_format: _,
        colnames,
        location: _,
    } = n;
    w.opt(xpr, c);
    w.list(args, c);
    w.list(colnames, c);
    Ok(())
}

pub(super) fn a_array_expr<'a>(w: &mut Walker<'a>, n: &'a AArrayExpr, c: &Ctx) -> R {
    let AArrayExpr {
        elements,
        list_start: _,
        list_end: _,
        location: _,
    } = n;
    w.list(elements, c);
    Ok(())
}

pub(super) fn a_indirection<'a>(w: &mut Walker<'a>, n: &'a AIndirection, c: &Ctx) -> R {
    let AIndirection { arg, indirection } = n;
    w.opt(arg, c);
    w.list(indirection, c);
    Ok(())
}

pub(super) fn a_indices<'a>(w: &mut Walker<'a>, n: &'a AIndices, c: &Ctx) -> R {
    let AIndices {
        is_slice: _,
        lidx,
        uidx,
    } = n;
    w.opt(lidx, c);
    w.opt(uidx, c);
    Ok(())
}

pub(super) fn collate_clause<'a>(w: &mut Walker<'a>, n: &'a CollateClause, c: &Ctx) -> R {
    let CollateClause {
        arg,
        collname: _, // a collation's name
        location: _,
    } = n;
    w.opt(arg, c);
    Ok(())
}

/// A column reference: only names and `*`. (A later `columns` field would be filled here,
/// including whole-row references `t.*` and `t`.)
pub(super) fn column_ref(w: &mut Walker<'_>, n: &ColumnRef) -> R {
    let ColumnRef {
        fields,
        location: _,
    } = n;
    if let [only] = fields.as_slice() {
        if let Some(NodeEnum::String(s)) = &only.node {
            w.bare_column_name(&s.sval);
        }
    }
    for f in fields {
        match &f.node {
            Some(NodeEnum::String(s)) => w.column_name(&s.sval),
            Some(NodeEnum::AStar(_)) => w.column_star = true,
            _ => {
                return Err(AnalyzeError::Unsupported(
                    "column reference of an unexpected shape".to_owned(),
                ))
            }
        }
    }
    Ok(())
}

pub(super) fn type_cast<'a>(w: &mut Walker<'a>, n: &'a TypeCast, c: &Ctx) -> R {
    let TypeCast {
        arg,
        type_name,
        location: _,
    } = n;
    w.opt(arg, c);
    if let Some(t) = type_name {
        w.push(NodeRef::TypeName(t), c);
    }
    Ok(())
}

/// A type name. Casting to an object-name type (`'secrets'::regclass`) looks an object up by
/// a string: reported as a call of `pg_catalog.<type>` and marked literal-sensitive.
pub(super) fn type_name<'a>(w: &mut Walker<'a>, n: &'a TypeName, c: &Ctx) -> R {
    let TypeName {
        names,
        type_oid: _,
        setof: _,
        pct_type: _,
        typmods,
        typemod: _,
        array_bounds,
        location: _,
    } = n;
    let parts = strings(names)
        .ok_or_else(|| AnalyzeError::Unsupported("type name of an unexpected shape".to_owned()))?;
    let base = match parts.as_slice() {
        [name] | ["pg_catalog", name] => Some(*name),
        _ => None,
    };
    if let Some(name) = base.filter(|b| OBJECT_NAME_TYPES.contains(b)) {
        w.function(Some("pg_catalog".to_owned()), name.to_owned());
        w.literal_sensitive = true;
    }
    w.list(typmods, c);
    w.list(array_bounds, c);
    Ok(())
}

/// A function call by name, with its arguments, ORDER BY, FILTER and OVER.
pub(super) fn func_call<'a>(w: &mut Walker<'a>, n: &'a FuncCall, c: &Ctx) -> R {
    let FuncCall {
        funcname,
        args,
        agg_order,
        agg_filter,
        over,
        agg_within_group: _,
        agg_star: _,
        agg_distinct: _,
        func_variadic: _,
        funcformat: _,
        location: _,
    } = n;
    w.function_names(funcname, "function call")?;
    let (schema, name) = super::names::function_name(funcname, "function call")?;
    if matches!(schema.as_deref(), None | Some("pg_catalog")) {
        match name.as_str() {
            "set_config" => w.set_config_calls.push(set_config_call(args)),
            "current_setting" => {
                w.setting_reads.push(setting_read(args.first()));
                // The name is a literal: two calls differing only in it are not one decision.
                w.literal_sensitive = true;
            }
            _ => {}
        }
    }
    // Which process a signal call names; a pg_backend_pid() that names it is not a read.
    if super::backend_signals::is_signal_function(schema.as_deref(), &name) {
        let (target, pid_arg) = super::backend_signals::target(args);
        w.signals.push(target);
        w.signal_pid_args.extend(pid_arg);
        w.literal_sensitive = true;
    }
    if super::backend_signals::is_backend_pid(schema.as_deref(), &name)
        && !w.signal_pid_args.iter().any(|a| std::ptr::eq(*a, n))
    {
        w.reads_backend_pid = true;
        // Refused under transaction pooling only: not served from a cache shared by both.
        w.literal_sensitive = true;
    }
    w.list(args, c);
    w.list(agg_order, c);
    w.opt(agg_filter, c);
    if let Some(over) = over {
        w.push(NodeRef::WindowDef(over), c);
    }
    Ok(())
}

/// `set_config(name, value, is_local)`: the setting's name if it is a string literal, and the
/// value if that is one too (a parameter or an expression gives `None`).
fn set_config_call(args: &[Node]) -> Option<(String, Option<String>)> {
    let name = string_literal(args.first())?;
    Some((
        super::classify::setting_name(&name),
        string_literal(args.get(1)),
    ))
}

/// The name `current_setting`'s first argument gives: a literal, a parameter (`$1`, `$1::text`),
/// or something computed.
fn setting_read(arg: Option<&Node>) -> super::SettingRead {
    if let Some(name) = string_literal(arg) {
        return super::SettingRead::Named(super::classify::setting_name(&name));
    }
    let mut node = arg.and_then(|n| n.node.as_ref());
    while let Some(NodeEnum::TypeCast(cast)) = node {
        node = cast.arg.as_deref().and_then(|n| n.node.as_ref());
    }
    match node {
        Some(NodeEnum::ParamRef(p)) => super::SettingRead::Param(p.number),
        _ => super::SettingRead::Computed,
    }
}

/// The text of a string-literal argument (a parameter or an expression gives `None`).
pub(super) fn string_literal(n: Option<&Node>) -> Option<String> {
    match n.and_then(|n| n.node.as_ref()) {
        Some(NodeEnum::AConst(AConst {
            val: Some(a_const::Val::Sval(s)),
            ..
        })) => Some(s.sval.clone()),
        _ => None,
    }
}

pub(super) fn named_arg_expr<'a>(w: &mut Walker<'a>, n: &'a NamedArgExpr, c: &Ctx) -> R {
    let NamedArgExpr {
        xpr,
        arg,
        name: _,
        argnumber: _,
        location: _,
    } = n;
    w.opt(xpr, c);
    w.opt(arg, c);
    Ok(())
}

pub(super) fn res_target<'a>(w: &mut Walker<'a>, n: &'a ResTarget, c: &Ctx) -> R {
    let ResTarget {
        name: _,
        indirection,
        val,
        location: _,
    } = n;
    w.list(indirection, c);
    w.opt(val, c);
    Ok(())
}

pub(super) fn multi_assign_ref<'a>(w: &mut Walker<'a>, n: &'a MultiAssignRef, c: &Ctx) -> R {
    let MultiAssignRef {
        source,
        colno: _,
        ncolumns: _,
    } = n;
    w.opt(source, c);
    Ok(())
}

pub(super) fn sort_by<'a>(w: &mut Walker<'a>, n: &'a SortBy, c: &Ctx) -> R {
    let SortBy {
        node,
        sortby_dir: _,
        sortby_nulls: _,
        use_op,
        location: _,
    } = n;
    operator(w, use_op)?;
    w.opt(node, c);
    Ok(())
}

pub(super) fn window_def<'a>(w: &mut Walker<'a>, n: &'a WindowDef, c: &Ctx) -> R {
    let WindowDef {
        name: _,
        refname: _,
        partition_clause,
        order_clause,
        frame_options: _,
        start_offset,
        end_offset,
        location: _,
    } = n;
    w.list(partition_clause, c);
    w.list(order_clause, c);
    w.opt(start_offset, c);
    w.opt(end_offset, c);
    Ok(())
}

pub(super) fn grouping_set<'a>(w: &mut Walker<'a>, n: &'a GroupingSet, c: &Ctx) -> R {
    let GroupingSet {
        kind: _,
        content,
        location: _,
    } = n;
    w.list(content, c);
    Ok(())
}

pub(super) fn grouping_func<'a>(w: &mut Walker<'a>, n: &'a GroupingFunc, c: &Ctx) -> R {
    let GroupingFunc {
        xpr,
        args,
        refs,
        agglevelsup: _,
        location: _,
    } = n;
    w.opt(xpr, c);
    w.list(args, c);
    w.list(refs, c);
    Ok(())
}

pub(super) fn xml_expr<'a>(w: &mut Walker<'a>, n: &'a XmlExpr, c: &Ctx) -> R {
    let XmlExpr {
        xpr,
        op: _,
        name: _,
        named_args,
        arg_names,
        args,
        xmloption: _,
        indent: _,
        r#type: _,
        typmod: _,
        location: _,
    } = n;
    w.opt(xpr, c);
    w.list(named_args, c);
    w.list(arg_names, c);
    w.list(args, c);
    Ok(())
}

pub(super) fn xml_serialize<'a>(w: &mut Walker<'a>, n: &'a XmlSerialize, c: &Ctx) -> R {
    let XmlSerialize {
        xmloption: _,
        expr,
        type_name,
        indent: _,
        location: _,
    } = n;
    w.opt(expr, c);
    if let Some(t) = type_name {
        w.push(NodeRef::TypeName(t), c);
    }
    Ok(())
}

pub(super) fn sql_value_function<'a>(w: &mut Walker<'a>, n: &'a SqlValueFunction, c: &Ctx) -> R {
    let SqlValueFunction {
        xpr,
        op: _,
        r#type: _,
        typmod: _,
        location: _,
    } = n;
    w.opt(xpr, c);
    Ok(())
}

pub(super) fn set_to_default<'a>(w: &mut Walker<'a>, n: &'a SetToDefault, c: &Ctx) -> R {
    let SetToDefault {
        xpr,
        type_id: _,
        type_mod: _,
        collation: _,
        location: _,
    } = n;
    w.opt(xpr, c);
    Ok(())
}

pub(super) fn current_of_expr<'a>(w: &mut Walker<'a>, n: &'a CurrentOfExpr, c: &Ctx) -> R {
    let CurrentOfExpr {
        xpr,
        cvarno: _,
        cursor_name: _,
        cursor_param: _,
    } = n;
    w.opt(xpr, c);
    Ok(())
}

pub(super) fn merge_support_func<'a>(w: &mut Walker<'a>, n: &'a MergeSupportFunc, c: &Ctx) -> R {
    let MergeSupportFunc {
        xpr,
        msftype: _,
        msfcollid: _,
        location: _,
    } = n;
    w.opt(xpr, c);
    Ok(())
}
