//! Handlers for CREATE/ALTER TABLE: columns, constraints, partitions, LIKE, INHERITS, composite types. Named relations get op Ddl; relations only read (LIKE source, foreign-key target) get Select.

use pg_query::protobuf::{
    AlterTableCmd, AlterTableStmt, AtAlterConstraint, ColumnDef, CompositeTypeStmt, Constraint,
    CreateForeignTableStmt, CreateStmt, PartitionBoundSpec, PartitionCmd, PartitionElem,
    PartitionRangeDatum, PartitionSpec, ReplicaIdentityStmt, TableLikeClause,
};
use pg_query::NodeRef;

use super::walker::{Ctx, Walker};
use super::{AnalyzeError, Operation};

type R = Result<(), AnalyzeError>;

/// Context for relations named by DDL.
pub(super) fn ddl(c: &Ctx) -> Ctx {
    c.with_op(Operation::Ddl, false)
}

pub(super) fn create_stmt<'a>(w: &mut Walker<'a>, n: &'a CreateStmt, c: &Ctx) -> R {
    let CreateStmt {
        relation,
        table_elts,
        inh_relations,
        partbound,
        partspec,
        of_typename,
        constraints,
        nnconstraints,
        options,
        oncommit: _,
        tablespacename: _,
        access_method: _,
        if_not_exists: _,
    } = n;
    let d = ddl(c);
    w.range_var_opt(relation, &d);
    // INHERITS (parent) / PARTITION OF parent: the new table becomes part of the parent.
    w.list(inh_relations, &d);
    w.list(table_elts, &d);
    if let Some(p) = partbound {
        w.push(NodeRef::PartitionBoundSpec(p), &d);
    }
    if let Some(p) = partspec {
        w.push(NodeRef::PartitionSpec(p), &d);
    }
    w.type_name_opt(of_typename, &d);
    w.list(constraints, &d);
    w.list(nnconstraints, &d);
    w.list(options, &d);
    Ok(())
}

pub(super) fn create_foreign_table<'a>(
    w: &mut Walker<'a>,
    n: &'a CreateForeignTableStmt,
    c: &Ctx,
) -> R {
    let CreateForeignTableStmt {
        base_stmt,
        servername: _,
        options,
    } = n;
    if let Some(b) = base_stmt {
        w.push(NodeRef::CreateStmt(b), c);
    }
    w.list(options, c);
    Ok(())
}

pub(super) fn column_def<'a>(w: &mut Walker<'a>, n: &'a ColumnDef, c: &Ctx) -> R {
    let ColumnDef {
        colname: _,
        type_name,
        compression: _,
        inhcount: _,
        is_local: _,
        is_not_null: _,
        is_from_type: _,
        storage: _,
        storage_name: _,
        raw_default,
        cooked_default,
        identity: _,
        identity_sequence,
        generated: _,
        coll_clause,
        coll_oid: _,
        constraints,
        fdwoptions,
        location: _,
    } = n;
    w.type_name_opt(type_name, c);
    w.opt(raw_default, c);
    w.opt(cooked_default, c);
    w.range_var_opt(identity_sequence, &ddl(c));
    if let Some(k) = coll_clause {
        w.push(NodeRef::CollateClause(k), c);
    }
    w.list(constraints, c);
    w.list(fdwoptions, c);
    Ok(())
}

/// A constraint. A FOREIGN KEY's referenced table is read by every insert/update (an oracle
/// on its contents): Select.
pub(super) fn constraint<'a>(w: &mut Walker<'a>, n: &'a Constraint, c: &Ctx) -> R {
    let Constraint {
        contype: _,
        conname: _,
        deferrable: _,
        initdeferred: _,
        is_enforced: _,
        skip_validation: _,
        initially_valid: _,
        is_no_inherit: _,
        raw_expr,
        cooked_expr: _,
        generated_when: _,
        generated_kind: _,
        nulls_not_distinct: _,
        keys,
        without_overlaps: _,
        including,
        exclusions,
        options,
        indexname: _,
        indexspace: _,
        reset_default_tblspc: _,
        access_method: _,
        where_clause,
        pktable,
        fk_attrs,
        pk_attrs,
        fk_with_period: _,
        pk_with_period: _,
        fk_matchtype: _,
        fk_upd_action: _,
        fk_del_action: _,
        fk_del_set_cols,
        old_conpfeqop,
        old_pktable_oid: _,
        location: _,
    } = n;
    w.opt(raw_expr, c);
    w.list(keys, c);
    w.list(including, c);
    w.list(exclusions, c);
    w.list(options, c);
    w.opt(where_clause, c);
    w.range_var_opt(pktable, &c.with_op(Operation::Select, false));
    w.list(fk_attrs, c);
    w.list(pk_attrs, c);
    w.list(fk_del_set_cols, c);
    w.list(old_conpfeqop, c);
    Ok(())
}

/// `LIKE source`: copies the source's definition: Select on the source.
pub(super) fn table_like<'a>(w: &mut Walker<'a>, n: &'a TableLikeClause, c: &Ctx) -> R {
    let TableLikeClause {
        relation,
        options: _,
        relation_oid: _,
    } = n;
    w.range_var_opt(relation, &c.with_op(Operation::Select, false));
    Ok(())
}

pub(super) fn partition_elem<'a>(w: &mut Walker<'a>, n: &'a PartitionElem, c: &Ctx) -> R {
    let PartitionElem {
        name: _,
        expr,
        collation,
        opclass,
        location: _,
    } = n;
    w.opt(expr, c);
    w.list(collation, c);
    w.list(opclass, c);
    Ok(())
}

pub(super) fn partition_spec<'a>(w: &mut Walker<'a>, n: &'a PartitionSpec, c: &Ctx) -> R {
    let PartitionSpec {
        strategy: _,
        part_params,
        location: _,
    } = n;
    w.list(part_params, c);
    Ok(())
}

pub(super) fn partition_bound<'a>(w: &mut Walker<'a>, n: &'a PartitionBoundSpec, c: &Ctx) -> R {
    let PartitionBoundSpec {
        strategy: _,
        is_default: _,
        modulus: _,
        remainder: _,
        listdatums,
        lowerdatums,
        upperdatums,
        location: _,
    } = n;
    w.list(listdatums, c);
    w.list(lowerdatums, c);
    w.list(upperdatums, c);
    Ok(())
}

pub(super) fn partition_range_datum<'a>(
    w: &mut Walker<'a>,
    n: &'a PartitionRangeDatum,
    c: &Ctx,
) -> R {
    let PartitionRangeDatum {
        kind: _,
        value,
        location: _,
    } = n;
    w.opt(value, c);
    Ok(())
}

/// ATTACH/DETACH PARTITION name.
pub(super) fn partition_cmd<'a>(w: &mut Walker<'a>, n: &'a PartitionCmd, c: &Ctx) -> R {
    let PartitionCmd {
        name,
        bound,
        concurrent: _,
    } = n;
    w.range_var_opt(name, &ddl(c));
    if let Some(b) = bound {
        w.push(NodeRef::PartitionBoundSpec(b), c);
    }
    Ok(())
}

pub(super) fn alter_table<'a>(w: &mut Walker<'a>, n: &'a AlterTableStmt, c: &Ctx) -> R {
    let AlterTableStmt {
        relation,
        cmds,
        objtype: _,
        missing_ok: _,
    } = n;
    let d = ddl(c);
    w.range_var_opt(relation, &d);
    w.list(cmds, &d);
    Ok(())
}

/// One ALTER TABLE subcommand; `def` may name another relation (INHERIT parent), a column,
/// a constraint, a partition, an expression.
pub(super) fn alter_table_cmd<'a>(w: &mut Walker<'a>, n: &'a AlterTableCmd, c: &Ctx) -> R {
    let AlterTableCmd {
        subtype: _,
        name: _,
        num: _,
        newowner,
        def,
        behavior: _,
        missing_ok: _,
        recurse: _,
    } = n;
    w.role_opt(newowner, c);
    w.opt(def, &ddl(c));
    Ok(())
}

pub(super) fn at_alter_constraint(n: &AtAlterConstraint) -> R {
    let AtAlterConstraint {
        conname: _,
        alter_enforceability: _,
        is_enforced: _,
        alter_deferrability: _,
        deferrable: _,
        initdeferred: _,
        alter_inheritability: _,
        noinherit: _,
    } = n;
    Ok(())
}

pub(super) fn replica_identity(n: &ReplicaIdentityStmt) -> R {
    let ReplicaIdentityStmt {
        identity_type: _,
        name: _,
    } = n;
    Ok(())
}

pub(super) fn composite_type<'a>(w: &mut Walker<'a>, n: &'a CompositeTypeStmt, c: &Ctx) -> R {
    let CompositeTypeStmt {
        typevar,
        coldeflist,
    } = n;
    w.range_var_opt(typevar, &ddl(c));
    w.list(coldeflist, c);
    Ok(())
}
