//! Handlers for queries: SELECT (with set operations, VALUES, TABLE), WITH and CTE name scoping, FROM items (relations, joins, subqueries, functions, XMLTABLE, TABLESAMPLE), SELECT INTO, row locking.

use pg_query::protobuf::{
    node::Node as NodeEnum, Alias, CommonTableExpr, CteCycleClause, CteSearchClause, IntoClause,
    JoinExpr, LockingClause, RangeFunction, RangeSubselect, RangeTableFunc, RangeTableFuncCol,
    RangeTableSample, RangeVar, SelectStmt, WithClause,
};
use pg_query::NodeRef;

use super::walker::{Ctx, Walker};
use super::{AnalyzeError, Operation};

type R = Result<(), AnalyzeError>;

/// Handle a WITH clause: schedule each CTE body with the names visible to it, and return the
/// context of the statement the clause belongs to (all CTE names visible).
///
/// PostgreSQL's scoping: without RECURSIVE, a CTE sees only the CTEs listed before it (a later
/// or its own name denotes a real table); with RECURSIVE, every CTE of the list sees all of
/// them. The statement body sees all of them, and so do its subqueries, but not a sibling or
/// outer query.
pub(super) fn with<'a>(
    w: &mut Walker<'a>,
    with: &'a Option<WithClause>,
    c: &Ctx,
) -> Result<Ctx, AnalyzeError> {
    let Some(WithClause {
        ctes,
        recursive,
        location: _,
    }) = with
    else {
        return Ok(c.clone());
    };
    let mut list = Vec::with_capacity(ctes.len());
    for node in ctes {
        match &node.node {
            Some(NodeEnum::CommonTableExpr(cte)) => list.push(&**cte),
            _ => {
                return Err(AnalyzeError::Unsupported(
                    "WITH list element that is not a CTE".to_owned(),
                ))
            }
        }
    }
    if *recursive {
        let all = c.with_ctes(list.iter().map(|cte| cte.ctename.clone()).collect());
        for cte in list {
            cte_body(w, cte, &all.select());
        }
        Ok(all)
    } else {
        let mut visible = c.clone();
        for cte in list {
            cte_body(w, cte, &visible.select());
            visible = visible.with_ctes(vec![cte.ctename.clone()]);
        }
        Ok(visible)
    }
}

fn cte_body<'a>(w: &mut Walker<'a>, cte: &'a CommonTableExpr, c: &Ctx) {
    let CommonTableExpr {
        ctename: _,
        aliascolnames,
        ctematerialized: _,
        ctequery,
        search_clause,
        cycle_clause,
        location: _,
        cterecursive: _,
        cterefcount: _,
        ctecolnames,
        ctecoltypes,
        ctecoltypmods,
        ctecolcollations,
    } = cte;
    w.opt(ctequery, c);
    w.list(aliascolnames, c);
    if let Some(s) = search_clause {
        w.push(NodeRef::CtesearchClause(s), c);
    }
    if let Some(k) = cycle_clause {
        w.push(NodeRef::CtecycleClause(k), c);
    }
    // Filled only by parse analysis; walked so that anything present is checked.
    w.list(ctecolnames, c);
    w.list(ctecoltypes, c);
    w.list(ctecoltypmods, c);
    w.list(ctecolcollations, c);
}

pub(super) fn cte_search<'a>(w: &mut Walker<'a>, n: &'a CteSearchClause, c: &Ctx) -> R {
    let CteSearchClause {
        search_col_list,
        search_breadth_first: _,
        search_seq_column: _,
        location: _,
    } = n;
    w.list(search_col_list, c);
    Ok(())
}

pub(super) fn cte_cycle<'a>(w: &mut Walker<'a>, n: &'a CteCycleClause, c: &Ctx) -> R {
    let CteCycleClause {
        cycle_col_list,
        cycle_mark_column: _,
        cycle_mark_value,
        cycle_mark_default,
        cycle_path_column: _,
        location: _,
        cycle_mark_type: _,
        cycle_mark_typmod: _,
        cycle_mark_collation: _,
        cycle_mark_neop: _,
    } = n;
    w.list(cycle_col_list, c);
    w.opt(cycle_mark_value, c);
    w.opt(cycle_mark_default, c);
    Ok(())
}

/// SELECT, VALUES, TABLE x, and set operations (UNION/INTERSECT/EXCEPT of two SelectStmts).
pub(super) fn select_stmt<'a>(w: &mut Walker<'a>, n: &'a SelectStmt, c: &Ctx) -> R {
    let SelectStmt {
        distinct_clause,
        into_clause,
        target_list,
        from_clause,
        where_clause,
        group_clause,
        group_distinct: _,
        having_clause,
        window_clause,
        values_lists,
        sort_clause,
        limit_offset,
        limit_count,
        limit_option: _,
        locking_clause,
        with_clause,
        op: _,
        all: _,
        larg,
        rarg,
    } = n;
    let c = with(w, with_clause, &c.select())?;
    if let Some(l) = larg {
        w.push(NodeRef::SelectStmt(l), &c);
    }
    if let Some(r) = rarg {
        w.push(NodeRef::SelectStmt(r), &c);
    }
    if let Some(into) = into_clause {
        w.push(NodeRef::IntoClause(into), &c);
    }
    w.list(distinct_clause, &c);
    w.list(target_list, &c);
    w.list(from_clause, &c);
    w.opt(where_clause, &c);
    w.list(group_clause, &c);
    w.opt(having_clause, &c);
    w.list(window_clause, &c);
    w.list(values_lists, &c);
    w.list(sort_clause, &c);
    w.opt(limit_offset, &c);
    w.opt(limit_count, &c);
    w.list(locking_clause, &c);
    Ok(())
}

/// SELECT ... INTO / CREATE TABLE AS target: a new relation (DDL).
pub(super) fn into_clause<'a>(w: &mut Walker<'a>, n: &'a IntoClause, c: &Ctx) -> R {
    let IntoClause {
        rel,
        col_names,
        access_method: _,
        options,
        on_commit: _,
        table_space_name: _,
        view_query,
        skip_data: _,
    } = n;
    w.range_var_opt(rel, &c.with_op(Operation::Ddl, false));
    w.list(col_names, c);
    w.list(options, c);
    if let Some(q) = view_query {
        w.push(NodeRef::Query(q), c);
    }
    Ok(())
}

/// FOR UPDATE/SHARE [OF name]: the names refer to FROM items, not to relations.
pub(super) fn locking_clause(w: &mut Walker<'_>, n: &LockingClause) -> R {
    let LockingClause {
        locked_rels,
        strength: _,
        wait_policy: _,
    } = n;
    w.row_locking = true;
    if locked_rels
        .iter()
        .all(|r| matches!(r.node, Some(NodeEnum::RangeVar(_))))
    {
        Ok(())
    } else {
        Err(AnalyzeError::Unsupported(
            "FOR UPDATE/SHARE OF an unexpected item".to_owned(),
        ))
    }
}

pub(super) fn range_var<'a>(w: &mut Walker<'a>, n: &'a RangeVar, c: &Ctx) -> R {
    let RangeVar {
        catalogname: _,
        schemaname: _,
        relname: _,
        inh: _,
        relpersistence: _,
        alias,
        location: _,
    } = n;
    w.range_var(n, c);
    if let Some(a) = alias {
        w.push(NodeRef::Alias(a), c);
    }
    Ok(())
}

pub(super) fn alias<'a>(w: &mut Walker<'a>, n: &'a Alias, c: &Ctx) -> R {
    let Alias {
        aliasname: _,
        colnames,
    } = n;
    w.list(colnames, c);
    Ok(())
}

fn alias_opt<'a>(w: &mut Walker<'a>, a: &'a Option<Alias>, c: &Ctx) {
    if let Some(a) = a {
        w.push(NodeRef::Alias(a), c);
    }
}

pub(super) fn join_expr<'a>(w: &mut Walker<'a>, n: &'a JoinExpr, c: &Ctx) -> R {
    let JoinExpr {
        jointype: _,
        is_natural: _,
        larg,
        rarg,
        using_clause,
        join_using_alias,
        quals,
        alias,
        rtindex: _,
    } = n;
    w.opt(larg, c);
    w.opt(rarg, c);
    w.list(using_clause, c);
    alias_opt(w, join_using_alias, c);
    w.opt(quals, c);
    alias_opt(w, alias, c);
    Ok(())
}

pub(super) fn range_subselect<'a>(w: &mut Walker<'a>, n: &'a RangeSubselect, c: &Ctx) -> R {
    let RangeSubselect {
        lateral: _,
        subquery,
        alias,
    } = n;
    w.opt(subquery, &c.select());
    alias_opt(w, alias, c);
    Ok(())
}

/// A function in FROM, or ROWS FROM(...): a list of [call, column definitions] pairs.
pub(super) fn range_function<'a>(w: &mut Walker<'a>, n: &'a RangeFunction, c: &Ctx) -> R {
    let RangeFunction {
        lateral: _,
        ordinality: _,
        is_rowsfrom: _,
        functions,
        alias,
        coldeflist,
    } = n;
    w.list(functions, c);
    alias_opt(w, alias, c);
    w.list(coldeflist, c);
    Ok(())
}

/// XMLTABLE(...) in FROM.
pub(super) fn range_table_func<'a>(w: &mut Walker<'a>, n: &'a RangeTableFunc, c: &Ctx) -> R {
    let RangeTableFunc {
        lateral: _,
        docexpr,
        rowexpr,
        namespaces,
        columns,
        alias,
        location: _,
    } = n;
    w.opt(docexpr, c);
    w.opt(rowexpr, c);
    w.list(namespaces, c);
    w.list(columns, c);
    alias_opt(w, alias, c);
    Ok(())
}

pub(super) fn range_table_func_col<'a>(w: &mut Walker<'a>, n: &'a RangeTableFuncCol, c: &Ctx) -> R {
    let RangeTableFuncCol {
        colname: _,
        type_name,
        for_ordinality: _,
        is_not_null: _,
        colexpr,
        coldefexpr,
        location: _,
    } = n;
    if let Some(t) = type_name {
        w.push(NodeRef::TypeName(t), c);
    }
    w.opt(colexpr, c);
    w.opt(coldefexpr, c);
    Ok(())
}

/// `rel TABLESAMPLE method(args) [REPEATABLE(seed)]`: the method is a function called by name.
pub(super) fn range_table_sample<'a>(w: &mut Walker<'a>, n: &'a RangeTableSample, c: &Ctx) -> R {
    let RangeTableSample {
        relation,
        method,
        args,
        repeatable,
        location: _,
    } = n;
    w.function_names(method, "TABLESAMPLE method")?;
    if let Some(NodeEnum::RangeVar(rv)) = relation.as_deref().and_then(|r| r.node.as_ref()) {
        w.tablesample_locations.push(rv.location);
    }
    w.opt(relation, c);
    w.list(args, c);
    w.opt(repeatable, c);
    Ok(())
}
