//! Handlers for DDL that creates or changes objects attached to relations: indexes, views, CREATE TABLE AS / materialized views, sequences, extended statistics, rules, triggers, row-level security policies. Named relations get op Ddl; queries inside (view bodies, rule actions, policy expressions) are walked as reads.

use pg_query::protobuf::{
    AlterPolicyStmt, AlterSeqStmt, AlterStatsStmt, CreatePolicyStmt, CreateSeqStmt,
    CreateStatsStmt, CreateTableAsStmt, CreateTrigStmt, IndexElem, IndexStmt, RuleStmt, StatsElem,
    TriggerTransition, ViewStmt,
};
use pg_query::NodeRef;

use super::ddl_tables::ddl;
use super::walker::{Ctx, Walker};
use super::AnalyzeError;

type R = Result<(), AnalyzeError>;

pub(super) fn index_stmt<'a>(w: &mut Walker<'a>, n: &'a IndexStmt, c: &Ctx) -> R {
    let IndexStmt {
        idxname: _,
        relation,
        access_method: _,
        table_space: _,
        index_params,
        index_including_params,
        options,
        where_clause,
        exclude_op_names,
        idxcomment: _,
        index_oid: _,
        old_number: _,
        old_create_subid: _,
        old_first_relfilelocator_subid: _,
        unique: _,
        nulls_not_distinct: _,
        primary: _,
        isconstraint: _,
        iswithoutoverlaps: _,
        deferrable: _,
        initdeferred: _,
        transformed: _,
        concurrent: _,
        if_not_exists: _,
        reset_default_tblspc: _,
    } = n;
    let d = ddl(c);
    w.range_var_opt(relation, &d);
    w.list(index_params, &d);
    w.list(index_including_params, &d);
    w.list(options, &d);
    w.opt(where_clause, &d);
    w.list(exclude_op_names, &d);
    Ok(())
}

pub(super) fn index_elem<'a>(w: &mut Walker<'a>, n: &'a IndexElem, c: &Ctx) -> R {
    let IndexElem {
        name: _,
        expr,
        indexcolname: _,
        collation,
        opclass,
        opclassopts,
        ordering: _,
        nulls_ordering: _,
    } = n;
    w.opt(expr, c);
    w.list(collation, c);
    w.list(opclass, c);
    w.list(opclassopts, c);
    Ok(())
}

/// CREATE VIEW: Ddl on the view, its query's relations read.
pub(super) fn view<'a>(w: &mut Walker<'a>, n: &'a ViewStmt, c: &Ctx) -> R {
    let ViewStmt {
        view,
        aliases,
        query,
        replace: _,
        options,
        with_check_option: _,
    } = n;
    w.range_var_opt(view, &ddl(c));
    w.list(aliases, c);
    w.opt(query, &c.select());
    w.list(options, c);
    Ok(())
}

/// CREATE TABLE / MATERIALIZED VIEW ... AS, SELECT INTO: Ddl on the new relation (through
/// the INTO clause), its query's relations read.
pub(super) fn create_table_as<'a>(w: &mut Walker<'a>, n: &'a CreateTableAsStmt, c: &Ctx) -> R {
    let CreateTableAsStmt {
        query,
        into,
        objtype: _,
        is_select_into: _,
        if_not_exists: _,
    } = n;
    w.opt(query, &c.select());
    if let Some(i) = into {
        w.push(NodeRef::IntoClause(i), c);
    }
    Ok(())
}

pub(super) fn create_seq<'a>(w: &mut Walker<'a>, n: &'a CreateSeqStmt, c: &Ctx) -> R {
    let CreateSeqStmt {
        sequence,
        options,
        owner_id: _,
        for_identity: _,
        if_not_exists: _,
    } = n;
    w.range_var_opt(sequence, &ddl(c));
    w.list(options, c);
    Ok(())
}

pub(super) fn alter_seq<'a>(w: &mut Walker<'a>, n: &'a AlterSeqStmt, c: &Ctx) -> R {
    let AlterSeqStmt {
        sequence,
        options,
        for_identity: _,
        missing_ok: _,
    } = n;
    w.range_var_opt(sequence, &ddl(c));
    w.list(options, c);
    Ok(())
}

pub(super) fn create_stats<'a>(w: &mut Walker<'a>, n: &'a CreateStatsStmt, c: &Ctx) -> R {
    let CreateStatsStmt {
        defnames,
        stat_types,
        exprs,
        relations,
        stxcomment: _,
        transformed: _,
        if_not_exists: _,
    } = n;
    let d = ddl(c);
    w.list(defnames, &d);
    w.list(stat_types, &d);
    w.list(exprs, &d);
    w.list(relations, &d);
    Ok(())
}

pub(super) fn stats_elem<'a>(w: &mut Walker<'a>, n: &'a StatsElem, c: &Ctx) -> R {
    let StatsElem { name: _, expr } = n;
    w.opt(expr, c);
    Ok(())
}

pub(super) fn alter_stats<'a>(w: &mut Walker<'a>, n: &'a AlterStatsStmt, c: &Ctx) -> R {
    let AlterStatsStmt {
        defnames,
        stxstattarget,
        missing_ok: _,
    } = n;
    w.list(defnames, c);
    w.opt(stxstattarget, c);
    Ok(())
}

/// CREATE RULE: Ddl on the relation; the actions are statements in their own right.
pub(super) fn rule<'a>(w: &mut Walker<'a>, n: &'a RuleStmt, c: &Ctx) -> R {
    let RuleStmt {
        relation,
        rulename: _,
        where_clause,
        event: _,
        instead: _,
        actions,
        replace: _,
    } = n;
    w.range_var_opt(relation, &ddl(c));
    w.opt(where_clause, &c.select());
    w.list(actions, &Ctx::root());
    Ok(())
}

/// CREATE TRIGGER: Ddl on the relation(s); the trigger function is called (later) by name.
pub(super) fn create_trigger<'a>(w: &mut Walker<'a>, n: &'a CreateTrigStmt, c: &Ctx) -> R {
    let CreateTrigStmt {
        replace: _,
        isconstraint: _,
        trigname: _,
        relation,
        funcname,
        args,
        row: _,
        timing: _,
        events: _,
        columns,
        when_clause,
        transition_rels,
        deferrable: _,
        initdeferred: _,
        constrrel,
    } = n;
    let d = ddl(c);
    w.function_names(funcname, "trigger function")?;
    w.range_var_opt(relation, &d);
    w.range_var_opt(constrrel, &d);
    w.list(args, c);
    w.list(columns, c);
    w.opt(when_clause, &c.select());
    w.list(transition_rels, c);
    Ok(())
}

pub(super) fn trigger_transition(n: &TriggerTransition) -> R {
    let TriggerTransition {
        name: _,
        is_new: _,
        is_table: _,
    } = n;
    Ok(())
}

pub(super) fn create_policy<'a>(w: &mut Walker<'a>, n: &'a CreatePolicyStmt, c: &Ctx) -> R {
    let CreatePolicyStmt {
        policy_name: _,
        table,
        cmd_name: _,
        permissive: _,
        roles,
        qual,
        with_check,
    } = n;
    w.range_var_opt(table, &ddl(c));
    w.list(roles, c);
    w.opt(qual, &c.select());
    w.opt(with_check, &c.select());
    Ok(())
}

pub(super) fn alter_policy<'a>(w: &mut Walker<'a>, n: &'a AlterPolicyStmt, c: &Ctx) -> R {
    let AlterPolicyStmt {
        policy_name: _,
        table,
        roles,
        qual,
        with_check,
    } = n;
    w.range_var_opt(table, &ddl(c));
    w.list(roles, c);
    w.opt(qual, &c.select());
    w.opt(with_check, &c.select());
    Ok(())
}
