//! Handlers for utility statements that are not DDL: EXPLAIN, PREPARE/EXECUTE/DEALLOCATE, cursors, COPY, SET/SHOW/RESET/DISCARD, LISTEN/NOTIFY, transactions, DO, CALL, LOCK, TRUNCATE, VACUUM/ANALYZE/CLUSTER/REINDEX/CHECKPOINT, ALTER SYSTEM, LOAD.

use pg_query::protobuf::{
    node::Node as NodeEnum, AlterSystemStmt, CallStmt, CheckPointStmt, ClosePortalStmt,
    ClusterStmt, ConstraintsSetStmt, CopyStmt, DeallocateStmt, DeclareCursorStmt, DefElem,
    DiscardStmt, DoStmt, ExecuteStmt, ExplainStmt, FetchStmt, ListenStmt, LoadStmt, LockStmt,
    NotifyStmt, PrepareStmt, RefreshMatViewStmt, ReindexObjectType, ReindexStmt, TransactionStmt,
    TruncateStmt, UnlistenStmt, VacuumRelation, VacuumStmt, VariableSetStmt, VariableShowStmt,
};
use pg_query::NodeRef;

use super::walker::{Ctx, Walker};
use super::{AnalyzeError, Operation};

type R = Result<(), AnalyzeError>;

pub(super) fn def_elem<'a>(w: &mut Walker<'a>, n: &'a DefElem, c: &Ctx) -> R {
    let DefElem {
        defnamespace: _,
        defname: _,
        arg,
        defaction: _,
        location: _,
        arg_location: _,
    } = n;
    w.opt(arg, c);
    Ok(())
}

/// EXPLAIN: the inner statement's relations. An option with a value (`ANALYZE 0`,
/// `ANALYZE 'off'`) makes the classification depend on a literal.
pub(super) fn explain<'a>(w: &mut Walker<'a>, n: &'a ExplainStmt, c: &Ctx) -> R {
    let ExplainStmt { query, options } = n;
    if options
        .iter()
        .any(|o| matches!(&o.node, Some(NodeEnum::DefElem(d)) if d.arg.is_some()))
    {
        w.literal_sensitive = true;
    }
    w.opt(query, &c.select());
    w.list(options, c);
    Ok(())
}

pub(super) fn prepare<'a>(w: &mut Walker<'a>, n: &'a PrepareStmt, c: &Ctx) -> R {
    let PrepareStmt {
        name: _,
        argtypes,
        query,
    } = n;
    w.list(argtypes, c);
    w.opt(query, &c.select());
    Ok(())
}

pub(super) fn execute<'a>(w: &mut Walker<'a>, n: &'a ExecuteStmt, c: &Ctx) -> R {
    let ExecuteStmt { name: _, params } = n;
    w.list(params, &c.select());
    Ok(())
}

pub(super) fn deallocate(n: &DeallocateStmt) -> R {
    let DeallocateStmt {
        name: _,
        isall: _,
        location: _,
    } = n;
    Ok(())
}

pub(super) fn declare_cursor<'a>(w: &mut Walker<'a>, n: &'a DeclareCursorStmt, c: &Ctx) -> R {
    let DeclareCursorStmt {
        portalname: _,
        options: _,
        query,
    } = n;
    w.opt(query, &c.select());
    Ok(())
}

pub(super) fn fetch(n: &FetchStmt) -> R {
    let FetchStmt {
        direction: _,
        how_many: _,
        portalname: _,
        ismove: _,
    } = n;
    Ok(())
}

pub(super) fn close_portal(n: &ClosePortalStmt) -> R {
    let ClosePortalStmt { portalname: _ } = n;
    Ok(())
}

/// COPY table (cols) TO/FROM ...: CopyTo/CopyFrom on the table; COPY (query) TO: the query.
pub(super) fn copy<'a>(w: &mut Walker<'a>, n: &'a CopyStmt, c: &Ctx) -> R {
    let CopyStmt {
        relation,
        query,
        attlist,
        is_from,
        is_program: _,
        filename: _,
        options,
        where_clause,
    } = n;
    let op = if *is_from {
        Operation::CopyFrom
    } else {
        Operation::CopyTo
    };
    if let Some(rv) = relation {
        w.push(NodeRef::RangeVar(rv), &c.with_op(op, false));
    }
    w.opt(query, &c.select());
    w.list(attlist, c);
    w.list(options, c);
    w.opt(where_clause, &c.select());
    Ok(())
}

pub(super) fn variable_set<'a>(w: &mut Walker<'a>, n: &'a VariableSetStmt, c: &Ctx) -> R {
    let VariableSetStmt {
        kind: _,
        name: _,
        args,
        jumble_args: _,
        is_local: _,
        location: _,
    } = n;
    w.literal_sensitive = true;
    w.list(args, c);
    Ok(())
}

pub(super) fn variable_show(n: &VariableShowStmt) -> R {
    let VariableShowStmt { name: _ } = n;
    Ok(())
}

pub(super) fn discard(n: &DiscardStmt) -> R {
    let DiscardStmt { target: _ } = n;
    Ok(())
}

pub(super) fn listen(n: &ListenStmt) -> R {
    let ListenStmt { conditionname: _ } = n;
    Ok(())
}

pub(super) fn notify(n: &NotifyStmt) -> R {
    let NotifyStmt {
        conditionname: _,
        payload: _,
        payload_location: _,
    } = n;
    Ok(())
}

pub(super) fn unlisten(n: &UnlistenStmt) -> R {
    let UnlistenStmt { conditionname: _ } = n;
    Ok(())
}

pub(super) fn transaction<'a>(w: &mut Walker<'a>, n: &'a TransactionStmt, c: &Ctx) -> R {
    let TransactionStmt {
        kind: _,
        options,
        savepoint_name: _,
        gid: _,
        chain: _,
        location: _,
    } = n;
    w.list(options, c);
    Ok(())
}

/// SET CONSTRAINTS: the names are constraint names, not relations.
pub(super) fn constraints_set(n: &ConstraintsSetStmt) -> R {
    let ConstraintsSetStmt {
        constraints,
        deferred: _,
    } = n;
    if constraints
        .iter()
        .all(|r| matches!(r.node, Some(NodeEnum::RangeVar(_))))
    {
        Ok(())
    } else {
        Err(AnalyzeError::Unsupported(
            "SET CONSTRAINTS with an unexpected item".to_owned(),
        ))
    }
}

/// DO: opaque code, only its options are walked.
pub(super) fn do_stmt<'a>(w: &mut Walker<'a>, n: &'a DoStmt, c: &Ctx) -> R {
    let DoStmt { args } = n;
    w.list(args, c);
    Ok(())
}

pub(super) fn call<'a>(w: &mut Walker<'a>, n: &'a CallStmt, c: &Ctx) -> R {
    let CallStmt {
        funccall,
        funcexpr,
        outargs,
    } = n;
    let c = c.select();
    if let Some(f) = funccall {
        w.push(NodeRef::FuncCall(f), &c);
    }
    if let Some(f) = funcexpr {
        w.push(NodeRef::FuncExpr(f), &c);
    }
    w.list(outargs, &c);
    Ok(())
}

pub(super) fn lock<'a>(w: &mut Walker<'a>, n: &'a LockStmt, c: &Ctx) -> R {
    let LockStmt {
        relations,
        mode: _,
        nowait: _,
    } = n;
    w.list(relations, &c.with_op(Operation::Lock, false));
    Ok(())
}

pub(super) fn truncate<'a>(w: &mut Walker<'a>, n: &'a TruncateStmt, c: &Ctx) -> R {
    let TruncateStmt {
        relations,
        restart_seqs: _,
        behavior: _,
    } = n;
    w.list(relations, &c.with_op(Operation::Truncate, false));
    Ok(())
}

pub(super) fn vacuum<'a>(w: &mut Walker<'a>, n: &'a VacuumStmt, c: &Ctx) -> R {
    let VacuumStmt {
        options,
        rels,
        is_vacuumcmd: _,
    } = n;
    w.list(options, c);
    w.list(rels, &c.with_op(Operation::Maintenance, false));
    Ok(())
}

pub(super) fn vacuum_relation<'a>(w: &mut Walker<'a>, n: &'a VacuumRelation, c: &Ctx) -> R {
    let VacuumRelation {
        relation,
        oid: _,
        va_cols,
    } = n;
    if let Some(rv) = relation {
        w.push(NodeRef::RangeVar(rv), c);
    }
    w.list(va_cols, c);
    Ok(())
}

pub(super) fn cluster<'a>(w: &mut Walker<'a>, n: &'a ClusterStmt, c: &Ctx) -> R {
    let ClusterStmt {
        relation,
        indexname: _,
        params,
    } = n;
    if let Some(rv) = relation {
        w.push(
            NodeRef::RangeVar(rv),
            &c.with_op(Operation::Maintenance, false),
        );
    }
    w.list(params, c);
    Ok(())
}

/// REINDEX INDEX/TABLE x, or SCHEMA s (every relation of s), SYSTEM/DATABASE.
pub(super) fn reindex<'a>(w: &mut Walker<'a>, n: &'a ReindexStmt, c: &Ctx) -> R {
    let ReindexStmt {
        kind,
        relation,
        name,
        params,
    } = n;
    if let Some(rv) = relation {
        w.push(
            NodeRef::RangeVar(rv),
            &c.with_op(Operation::Maintenance, false),
        );
    }
    if *kind == ReindexObjectType::ReindexObjectSchema as i32 {
        w.relation(Some(name.clone()), "*".to_owned(), Operation::Maintenance);
    }
    w.list(params, c);
    Ok(())
}

pub(super) fn checkpoint(n: &CheckPointStmt) -> R {
    let CheckPointStmt {} = n;
    Ok(())
}

pub(super) fn alter_system<'a>(w: &mut Walker<'a>, n: &'a AlterSystemStmt, c: &Ctx) -> R {
    let AlterSystemStmt { setstmt } = n;
    if let Some(s) = setstmt {
        w.push(NodeRef::VariableSetStmt(s), c);
    }
    Ok(())
}

pub(super) fn load(n: &LoadStmt) -> R {
    let LoadStmt { filename: _ } = n;
    Ok(())
}

pub(super) fn refresh_mat_view<'a>(w: &mut Walker<'a>, n: &'a RefreshMatViewStmt, c: &Ctx) -> R {
    let RefreshMatViewStmt {
        concurrent: _,
        skip_data: _,
        relation,
    } = n;
    if let Some(rv) = relation {
        w.push(NodeRef::RangeVar(rv), &c.with_op(Operation::Ddl, false));
    }
    Ok(())
}
