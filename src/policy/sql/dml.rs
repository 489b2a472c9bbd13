//! Handlers for data-modifying statements: INSERT/UPDATE/DELETE/MERGE targets (op Insert/Update/Delete, plus Select when the statement reads the target), their sources, ON CONFLICT, RETURNING, MERGE WHEN clauses.

use pg_query::protobuf::{
    node::Node as NodeEnum, CmdType, DeleteStmt, InferClause, InsertStmt, MergeStmt,
    MergeWhenClause, Node, OnConflictAction, OnConflictClause, RangeVar, ReturningClause,
    ReturningOption, UpdateStmt,
};
use pg_query::NodeRef;

use super::query::with;
use super::walker::{Ctx, Walker};
use super::{AnalyzeError, Operation};

type R = Result<(), AnalyzeError>;

/// The DML target: never a CTE, always the real relation.
fn target<'a>(w: &mut Walker<'a>, rv: &'a Option<RangeVar>, c: &Ctx, op: Operation) {
    if let Some(rv) = rv {
        w.push(NodeRef::RangeVar(rv), &c.with_op(op, false));
    }
}

/// A value that reads nothing from the target row: a constant, a parameter, DEFAULT, a cast
/// of one of these, or (for ON CONFLICT) a column of the proposed row `excluded.col`.
fn reads_nothing(node: &Node, excluded_ok: bool) -> bool {
    match &node.node {
        Some(NodeEnum::AConst(_))
        | Some(NodeEnum::ParamRef(_))
        | Some(NodeEnum::SetToDefault(_)) => true,
        Some(NodeEnum::TypeCast(t)) => t
            .arg
            .as_deref()
            .is_some_and(|a| reads_nothing(a, excluded_ok)),
        Some(NodeEnum::ColumnRef(cr)) if excluded_ok => matches!(
            cr.fields.first().and_then(|f| f.node.as_ref()),
            Some(NodeEnum::String(s)) if s.sval == "excluded"
        ),
        _ => false,
    }
}

/// Whether every SET item of an UPDATE-like target list reads nothing from the target.
fn set_list_reads_nothing(target_list: &[Node], excluded_ok: bool) -> bool {
    target_list.iter().all(|t| match &t.node {
        Some(NodeEnum::ResTarget(rt)) => {
            rt.indirection.is_empty()
                && rt
                    .val
                    .as_deref()
                    .is_some_and(|v| reads_nothing(v, excluded_ok))
        }
        _ => false,
    })
}

fn returning<'a>(w: &mut Walker<'a>, r: &'a Option<ReturningClause>, c: &Ctx) -> bool {
    match r {
        Some(r) => {
            w.push(NodeRef::ReturningClause(r), c);
            true
        }
        None => false,
    }
}

/// INSERT: Insert on the target; Select on it too when RETURNING or ON CONFLICT DO UPDATE
/// reads it; Update on it for ON CONFLICT DO UPDATE.
pub(super) fn insert_stmt<'a>(w: &mut Walker<'a>, n: &'a InsertStmt, c: &Ctx) -> R {
    let InsertStmt {
        relation,
        cols,
        select_stmt,
        on_conflict_clause,
        returning_clause,
        with_clause,
        r#override: _,
    } = n;
    let c = with(w, with_clause, &c.select())?;
    target(w, relation, &c, Operation::Insert);
    let mut reads_target = returning(w, returning_clause, &c);
    w.list(cols, &c);
    w.opt(select_stmt, &c);
    if let Some(oc) = on_conflict_clause {
        if oc.action == OnConflictAction::OnconflictUpdate as i32 {
            target(w, relation, &c, Operation::Update);
            reads_target |=
                oc.where_clause.is_some() || !set_list_reads_nothing(&oc.target_list, true);
        }
        w.push(NodeRef::OnConflictClause(oc), &c);
    }
    if reads_target {
        target(w, relation, &c, Operation::Select);
    }
    Ok(())
}

/// UPDATE: Update on the target; Select on it too when WHERE, FROM, RETURNING or a SET value
/// reads it (PostgreSQL requires SELECT privilege then; the row count is an oracle).
pub(super) fn update_stmt<'a>(w: &mut Walker<'a>, n: &'a UpdateStmt, c: &Ctx) -> R {
    let UpdateStmt {
        relation,
        target_list,
        where_clause,
        from_clause,
        returning_clause,
        with_clause,
    } = n;
    let c = with(w, with_clause, &c.select())?;
    target(w, relation, &c, Operation::Update);
    let reads_target = returning(w, returning_clause, &c)
        || where_clause.is_some()
        || !from_clause.is_empty()
        || !set_list_reads_nothing(target_list, false);
    if reads_target {
        target(w, relation, &c, Operation::Select);
    }
    w.list(target_list, &c);
    w.opt(where_clause, &c);
    w.list(from_clause, &c);
    Ok(())
}

/// DELETE: Delete on the target; Select on it too when WHERE, USING or RETURNING reads it.
pub(super) fn delete_stmt<'a>(w: &mut Walker<'a>, n: &'a DeleteStmt, c: &Ctx) -> R {
    let DeleteStmt {
        relation,
        using_clause,
        where_clause,
        returning_clause,
        with_clause,
    } = n;
    let c = with(w, with_clause, &c.select())?;
    target(w, relation, &c, Operation::Delete);
    let reads_target =
        returning(w, returning_clause, &c) || where_clause.is_some() || !using_clause.is_empty();
    if reads_target {
        target(w, relation, &c, Operation::Select);
    }
    w.list(using_clause, &c);
    w.opt(where_clause, &c);
    Ok(())
}

/// MERGE: the target gets Select (the join condition reads it) and each operation its WHEN
/// clauses perform; the source is read.
pub(super) fn merge_stmt<'a>(w: &mut Walker<'a>, n: &'a MergeStmt, c: &Ctx) -> R {
    let MergeStmt {
        relation,
        source_relation,
        join_condition,
        merge_when_clauses,
        returning_clause,
        with_clause,
    } = n;
    let c = with(w, with_clause, &c.select())?;
    target(w, relation, &c, Operation::Select);
    for clause in merge_when_clauses {
        let Some(NodeEnum::MergeWhenClause(mw)) = &clause.node else {
            return Err(AnalyzeError::Unsupported(
                "MERGE clause that is not a WHEN clause".to_owned(),
            ));
        };
        let op = match CmdType::try_from(mw.command_type) {
            Ok(CmdType::CmdUpdate) => Some(Operation::Update),
            Ok(CmdType::CmdInsert) => Some(Operation::Insert),
            Ok(CmdType::CmdDelete) => Some(Operation::Delete),
            Ok(CmdType::CmdNothing) => None,
            _ => {
                return Err(AnalyzeError::Unsupported(
                    "MERGE action of an unknown kind".to_owned(),
                ))
            }
        };
        if let Some(op) = op {
            target(w, relation, &c, op);
        }
    }
    returning(w, returning_clause, &c);
    w.opt(source_relation, &c);
    w.opt(join_condition, &c);
    w.list(merge_when_clauses, &c);
    Ok(())
}

pub(super) fn merge_when_clause<'a>(w: &mut Walker<'a>, n: &'a MergeWhenClause, c: &Ctx) -> R {
    let MergeWhenClause {
        match_kind: _,
        command_type: _,
        r#override: _,
        condition,
        target_list,
        values,
    } = n;
    w.opt(condition, c);
    w.list(target_list, c);
    w.list(values, c);
    Ok(())
}

pub(super) fn on_conflict_clause<'a>(w: &mut Walker<'a>, n: &'a OnConflictClause, c: &Ctx) -> R {
    let OnConflictClause {
        action: _,
        infer,
        target_list,
        where_clause,
        location: _,
    } = n;
    if let Some(i) = infer {
        w.push(NodeRef::InferClause(i), c);
    }
    w.list(target_list, c);
    w.opt(where_clause, c);
    Ok(())
}

pub(super) fn infer_clause<'a>(w: &mut Walker<'a>, n: &'a InferClause, c: &Ctx) -> R {
    let InferClause {
        index_elems,
        where_clause,
        conname: _,
        location: _,
    } = n;
    w.list(index_elems, c);
    w.opt(where_clause, c);
    Ok(())
}

pub(super) fn returning_clause<'a>(w: &mut Walker<'a>, n: &'a ReturningClause, c: &Ctx) -> R {
    let ReturningClause { options, exprs } = n;
    w.list(options, c);
    w.list(exprs, c);
    Ok(())
}

pub(super) fn returning_option(n: &ReturningOption) -> R {
    let ReturningOption {
        option: _,
        value: _,
        location: _,
    } = n;
    Ok(())
}
