//! Handlers for statements that name objects by name lists: DROP, COMMENT, SECURITY LABEL, RENAME, ALTER ... SET SCHEMA / OWNER TO / DEPENDS ON, ALTER EXTENSION ADD/DROP, GRANT/REVOKE and ALTER DEFAULT PRIVILEGES, roles, CREATE SCHEMA, IMPORT FOREIGN SCHEMA, publications.

use pg_query::protobuf::{
    node::Node as NodeEnum, AccessPriv, AlterDefaultPrivilegesStmt, AlterExtensionContentsStmt,
    AlterObjectDependsStmt, AlterObjectSchemaStmt, AlterOwnerStmt, AlterPublicationStmt,
    AlterRoleSetStmt, AlterRoleStmt, CommentStmt, CreatePublicationStmt, CreateRoleStmt,
    CreateSchemaStmt, DropOwnedStmt, DropRoleStmt, DropStmt, GrantRoleStmt, GrantStmt,
    GrantTargetType, ImportForeignSchemaStmt, Node, ObjectType, ObjectWithArgs, PublicationObjSpec,
    PublicationObjSpecType, PublicationTable, ReassignOwnedStmt, RenameStmt, RoleSpec,
    SecLabelStmt,
};
use pg_query::NodeRef;

use super::names::{list_items, object_relation, strings};
use super::walker::{Ctx, Walker};
use super::{AnalyzeError, Operation};

type R = Result<(), AnalyzeError>;

/// Record the relation an object name denotes for `objtype` (if any) with `op`, and walk it.
fn object<'a>(w: &mut Walker<'a>, objtype: i32, obj: &'a Node, op: Operation, c: &Ctx) -> R {
    if let Some((schema, name)) = object_relation(objtype, obj)? {
        w.relation(schema, name, op);
    }
    w.node(obj, &c.with_op(op, false));
    Ok(())
}

fn object_opt<'a>(
    w: &mut Walker<'a>,
    objtype: i32,
    obj: &'a Option<Box<Node>>,
    op: Operation,
    c: &Ctx,
) -> R {
    match obj {
        Some(obj) => object(w, objtype, obj, op, c),
        None => Ok(()),
    }
}

pub(super) fn drop<'a>(w: &mut Walker<'a>, n: &'a DropStmt, c: &Ctx) -> R {
    let DropStmt {
        objects,
        remove_type,
        behavior: _,
        missing_ok: _,
        concurrent: _,
    } = n;
    for obj in objects {
        object(w, *remove_type, obj, Operation::Ddl, c)?;
    }
    Ok(())
}

pub(super) fn comment<'a>(w: &mut Walker<'a>, n: &'a CommentStmt, c: &Ctx) -> R {
    let CommentStmt {
        objtype,
        object: obj,
        comment: _,
    } = n;
    object_opt(w, *objtype, obj, Operation::Ddl, c)
}

pub(super) fn sec_label<'a>(w: &mut Walker<'a>, n: &'a SecLabelStmt, c: &Ctx) -> R {
    let SecLabelStmt {
        objtype,
        object: obj,
        provider: _,
        label: _,
    } = n;
    object_opt(w, *objtype, obj, Operation::Ddl, c)
}

pub(super) fn rename<'a>(w: &mut Walker<'a>, n: &'a RenameStmt, c: &Ctx) -> R {
    let RenameStmt {
        rename_type,
        relation_type: _,
        relation,
        object: obj,
        subname,
        newname,
        behavior: _,
        missing_ok: _,
    } = n;
    // ALTER SCHEMA s RENAME TO t changes the name of every relation in s.
    if *rename_type == ObjectType::ObjectSchema as i32 {
        w.relation(Some(subname.clone()), "*".to_owned(), Operation::Ddl);
        w.relation(Some(newname.clone()), "*".to_owned(), Operation::Ddl);
    }
    w.range_var_opt(relation, &c.with_op(Operation::Ddl, false));
    object_opt(w, *rename_type, obj, Operation::Ddl, c)
}

/// ALTER ... SET SCHEMA s: the relation also appears under its new name.
pub(super) fn alter_object_schema<'a>(
    w: &mut Walker<'a>,
    n: &'a AlterObjectSchemaStmt,
    c: &Ctx,
) -> R {
    let AlterObjectSchemaStmt {
        object_type,
        relation,
        object: obj,
        newschema,
        missing_ok: _,
    } = n;
    if let Some(rv) = relation {
        w.relation(Some(newschema.clone()), rv.relname.clone(), Operation::Ddl);
    }
    w.range_var_opt(relation, &c.with_op(Operation::Ddl, false));
    object_opt(w, *object_type, obj, Operation::Ddl, c)
}

/// ALTER ... OWNER TO: the new owner holds every privilege on the object: Dcl.
pub(super) fn alter_owner<'a>(w: &mut Walker<'a>, n: &'a AlterOwnerStmt, c: &Ctx) -> R {
    let AlterOwnerStmt {
        object_type,
        relation,
        object: obj,
        newowner,
    } = n;
    w.range_var_opt(relation, &c.with_op(Operation::Dcl, false));
    w.role_opt(newowner, c);
    object_opt(w, *object_type, obj, Operation::Dcl, c)
}

pub(super) fn alter_object_depends<'a>(
    w: &mut Walker<'a>,
    n: &'a AlterObjectDependsStmt,
    c: &Ctx,
) -> R {
    let AlterObjectDependsStmt {
        object_type,
        relation,
        object: obj,
        extname,
        remove: _,
    } = n;
    w.range_var_opt(relation, &c.with_op(Operation::Ddl, false));
    if let Some(e) = extname {
        w.push(NodeRef::String(e), c);
    }
    object_opt(w, *object_type, obj, Operation::Ddl, c)
}

pub(super) fn alter_extension_contents<'a>(
    w: &mut Walker<'a>,
    n: &'a AlterExtensionContentsStmt,
    c: &Ctx,
) -> R {
    let AlterExtensionContentsStmt {
        extname: _,
        action: _,
        objtype,
        object: obj,
    } = n;
    object_opt(w, *objtype, obj, Operation::Ddl, c)
}

/// Whether GRANT ... ON ALL <objtype> IN SCHEMA reaches relations.
fn objtype_is_relation(objtype: i32) -> bool {
    matches!(
        ObjectType::try_from(objtype),
        Ok(ObjectType::ObjectTable | ObjectType::ObjectSequence)
    )
}

/// GRANT/REVOKE: Dcl on each relation named, or on every relation of a schema.
pub(super) fn grant<'a>(w: &mut Walker<'a>, n: &'a GrantStmt, c: &Ctx) -> R {
    let GrantStmt {
        is_grant: _,
        targtype,
        objtype,
        objects,
        privileges,
        grantees,
        grant_option: _,
        grantor,
        behavior: _,
    } = n;
    let dcl = c.with_op(Operation::Dcl, false);
    if *targtype == GrantTargetType::AclTargetAllInSchema as i32 && objtype_is_relation(*objtype) {
        let schemas = strings(objects).ok_or_else(|| {
            AnalyzeError::Unsupported("GRANT ... IN SCHEMA with an unexpected name".to_owned())
        })?;
        for s in schemas {
            w.relation(Some(s.to_owned()), "*".to_owned(), Operation::Dcl);
        }
    }
    w.list(objects, &dcl);
    w.list(privileges, c);
    w.list(grantees, c);
    w.role_opt(grantor, c);
    Ok(())
}

/// ALTER DEFAULT PRIVILEGES [IN SCHEMA s] GRANT ... ON TABLES: Dcl on every future relation
/// of the schemas (of every schema without IN SCHEMA).
pub(super) fn alter_default_privileges<'a>(
    w: &mut Walker<'a>,
    n: &'a AlterDefaultPrivilegesStmt,
    c: &Ctx,
) -> R {
    let AlterDefaultPrivilegesStmt { options, action } = n;
    if let Some(action) = action {
        if objtype_is_relation(action.objtype) {
            let mut schemas = Vec::new();
            for o in options {
                if let Some(NodeEnum::DefElem(d)) = &o.node {
                    if d.defname == "schemas" {
                        let names = d
                            .arg
                            .as_deref()
                            .and_then(list_items)
                            .and_then(strings)
                            .ok_or_else(|| {
                                AnalyzeError::Unsupported(
                                    "ALTER DEFAULT PRIVILEGES with an unexpected schema list"
                                        .to_owned(),
                                )
                            })?;
                        schemas.extend(names.into_iter().map(|s| Some(s.to_owned())));
                    }
                }
            }
            if schemas.is_empty() {
                schemas.push(None);
            }
            for s in schemas {
                w.relation(s, "*".to_owned(), Operation::Dcl);
            }
        }
        w.push(NodeRef::GrantStmt(action), c);
    }
    w.list(options, c);
    Ok(())
}

pub(super) fn object_with_args<'a>(w: &mut Walker<'a>, n: &'a ObjectWithArgs, c: &Ctx) -> R {
    let ObjectWithArgs {
        objname,
        objargs,
        objfuncargs,
        args_unspecified: _,
    } = n;
    w.list(objname, c);
    w.list(objargs, c);
    w.list(objfuncargs, c);
    Ok(())
}

pub(super) fn access_priv<'a>(w: &mut Walker<'a>, n: &'a AccessPriv, c: &Ctx) -> R {
    let AccessPriv { priv_name: _, cols } = n;
    w.list(cols, c);
    Ok(())
}

pub(super) fn role_spec(n: &RoleSpec) -> R {
    let RoleSpec {
        roletype: _,
        rolename: _,
        location: _,
    } = n;
    Ok(())
}

pub(super) fn grant_role<'a>(w: &mut Walker<'a>, n: &'a GrantRoleStmt, c: &Ctx) -> R {
    let GrantRoleStmt {
        granted_roles,
        grantee_roles,
        is_grant: _,
        opt,
        grantor,
        behavior: _,
    } = n;
    w.list(granted_roles, c);
    w.list(grantee_roles, c);
    w.list(opt, c);
    w.role_opt(grantor, c);
    Ok(())
}

pub(super) fn create_role<'a>(w: &mut Walker<'a>, n: &'a CreateRoleStmt, c: &Ctx) -> R {
    let CreateRoleStmt {
        stmt_type: _,
        role: _,
        options,
    } = n;
    w.list(options, c);
    Ok(())
}

pub(super) fn alter_role<'a>(w: &mut Walker<'a>, n: &'a AlterRoleStmt, c: &Ctx) -> R {
    let AlterRoleStmt {
        role,
        options,
        action: _,
    } = n;
    w.role_opt(role, c);
    w.list(options, c);
    Ok(())
}

pub(super) fn alter_role_set<'a>(w: &mut Walker<'a>, n: &'a AlterRoleSetStmt, c: &Ctx) -> R {
    let AlterRoleSetStmt {
        role,
        database: _,
        setstmt,
    } = n;
    w.role_opt(role, c);
    if let Some(s) = setstmt {
        w.push(NodeRef::VariableSetStmt(s), c);
    }
    Ok(())
}

pub(super) fn drop_role<'a>(w: &mut Walker<'a>, n: &'a DropRoleStmt, c: &Ctx) -> R {
    let DropRoleStmt {
        roles,
        missing_ok: _,
    } = n;
    w.list(roles, c);
    Ok(())
}

pub(super) fn drop_owned<'a>(w: &mut Walker<'a>, n: &'a DropOwnedStmt, c: &Ctx) -> R {
    let DropOwnedStmt { roles, behavior: _ } = n;
    w.list(roles, c);
    Ok(())
}

pub(super) fn reassign_owned<'a>(w: &mut Walker<'a>, n: &'a ReassignOwnedStmt, c: &Ctx) -> R {
    let ReassignOwnedStmt { roles, newrole } = n;
    w.list(roles, c);
    w.role_opt(newrole, c);
    Ok(())
}

/// CREATE SCHEMA s [AUTHORIZATION r] [elements]: the elements are statements in their own
/// right (their unqualified names are created in `s`; reported as written).
pub(super) fn create_schema<'a>(w: &mut Walker<'a>, n: &'a CreateSchemaStmt, c: &Ctx) -> R {
    let CreateSchemaStmt {
        schemaname: _,
        authrole,
        schema_elts,
        if_not_exists: _,
    } = n;
    w.role_opt(authrole, c);
    w.list(schema_elts, &Ctx::root());
    Ok(())
}

/// IMPORT FOREIGN SCHEMA remote ... INTO local: creates relations in `local`. The listed
/// table names are remote names, not local relations.
pub(super) fn import_foreign_schema<'a>(
    w: &mut Walker<'a>,
    n: &'a ImportForeignSchemaStmt,
    c: &Ctx,
) -> R {
    let ImportForeignSchemaStmt {
        server_name: _,
        remote_schema: _,
        local_schema,
        list_type: _,
        table_list,
        options,
    } = n;
    if !table_list
        .iter()
        .all(|t| matches!(t.node, Some(NodeEnum::RangeVar(_))))
    {
        return Err(AnalyzeError::Unsupported(
            "IMPORT FOREIGN SCHEMA with an unexpected table list".to_owned(),
        ));
    }
    w.relation(Some(local_schema.clone()), "*".to_owned(), Operation::Ddl);
    w.list(options, c);
    Ok(())
}

pub(super) fn create_publication<'a>(
    w: &mut Walker<'a>,
    n: &'a CreatePublicationStmt,
    c: &Ctx,
) -> R {
    let CreatePublicationStmt {
        pubname: _,
        options,
        pubobjects,
        for_all_tables,
    } = n;
    if *for_all_tables {
        w.relation(None, "*".to_owned(), Operation::Ddl);
    }
    w.list(options, c);
    w.list(pubobjects, c);
    Ok(())
}

pub(super) fn alter_publication<'a>(w: &mut Walker<'a>, n: &'a AlterPublicationStmt, c: &Ctx) -> R {
    let AlterPublicationStmt {
        pubname: _,
        options,
        pubobjects,
        for_all_tables,
        action: _,
    } = n;
    if *for_all_tables {
        w.relation(None, "*".to_owned(), Operation::Ddl);
    }
    w.list(options, c);
    w.list(pubobjects, c);
    Ok(())
}

pub(super) fn publication_obj<'a>(w: &mut Walker<'a>, n: &'a PublicationObjSpec, c: &Ctx) -> R {
    let PublicationObjSpec {
        pubobjtype,
        name,
        pubtable,
        location: _,
    } = n;
    match PublicationObjSpecType::try_from(*pubobjtype) {
        Ok(PublicationObjSpecType::PublicationobjTable) => {}
        Ok(PublicationObjSpecType::PublicationobjTablesInSchema) => {
            w.relation(Some(name.clone()), "*".to_owned(), Operation::Ddl);
        }
        Ok(PublicationObjSpecType::PublicationobjTablesInCurSchema) => {
            w.relation(None, "*".to_owned(), Operation::Ddl);
        }
        _ => {
            return Err(AnalyzeError::Unsupported(
                "publication object of an unresolved kind".to_owned(),
            ))
        }
    }
    if let Some(t) = pubtable {
        w.push(NodeRef::PublicationTable(t), c);
    }
    Ok(())
}

pub(super) fn publication_table<'a>(w: &mut Walker<'a>, n: &'a PublicationTable, c: &Ctx) -> R {
    let PublicationTable {
        relation,
        where_clause,
        columns,
    } = n;
    w.range_var_opt(relation, &c.with_op(Operation::Ddl, false));
    w.opt(where_clause, &c.select());
    w.list(columns, c);
    Ok(())
}
