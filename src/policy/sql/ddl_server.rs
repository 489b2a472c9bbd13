//! Handlers for server-level DDL: extensions, foreign data wrappers, foreign servers, user mappings, tablespaces, databases, subscriptions. Every node field is walked; none of these names a relation.

use pg_query::protobuf::{
    AlterDatabaseRefreshCollStmt, AlterDatabaseSetStmt, AlterDatabaseStmt, AlterExtensionStmt,
    AlterFdwStmt, AlterForeignServerStmt, AlterSubscriptionStmt, AlterTableMoveAllStmt,
    AlterTableSpaceOptionsStmt, AlterUserMappingStmt, CreateExtensionStmt, CreateFdwStmt,
    CreateForeignServerStmt, CreateSubscriptionStmt, CreateTableSpaceStmt, CreateUserMappingStmt,
    CreatedbStmt, DropSubscriptionStmt, DropTableSpaceStmt, DropUserMappingStmt, DropdbStmt,
};
use pg_query::NodeRef;

use super::walker::{Ctx, Walker};
use super::AnalyzeError;

type R = Result<(), AnalyzeError>;

pub(super) fn create_extension<'a>(w: &mut Walker<'a>, n: &'a CreateExtensionStmt, c: &Ctx) -> R {
    let CreateExtensionStmt {
        extname: _,
        if_not_exists: _,
        options,
    } = n;
    w.list(options, c);
    Ok(())
}

pub(super) fn alter_extension<'a>(w: &mut Walker<'a>, n: &'a AlterExtensionStmt, c: &Ctx) -> R {
    let AlterExtensionStmt {
        extname: _,
        options,
    } = n;
    w.list(options, c);
    Ok(())
}

pub(super) fn create_fdw<'a>(w: &mut Walker<'a>, n: &'a CreateFdwStmt, c: &Ctx) -> R {
    let CreateFdwStmt {
        fdwname: _,
        func_options,
        options,
    } = n;
    w.list(func_options, c);
    w.list(options, c);
    Ok(())
}

pub(super) fn alter_fdw<'a>(w: &mut Walker<'a>, n: &'a AlterFdwStmt, c: &Ctx) -> R {
    let AlterFdwStmt {
        fdwname: _,
        func_options,
        options,
    } = n;
    w.list(func_options, c);
    w.list(options, c);
    Ok(())
}

pub(super) fn create_foreign_server<'a>(
    w: &mut Walker<'a>,
    n: &'a CreateForeignServerStmt,
    c: &Ctx,
) -> R {
    let CreateForeignServerStmt {
        servername: _,
        servertype: _,
        version: _,
        fdwname: _,
        if_not_exists: _,
        options,
    } = n;
    w.list(options, c);
    Ok(())
}

pub(super) fn alter_foreign_server<'a>(
    w: &mut Walker<'a>,
    n: &'a AlterForeignServerStmt,
    c: &Ctx,
) -> R {
    let AlterForeignServerStmt {
        servername: _,
        version: _,
        options,
        has_version: _,
    } = n;
    w.list(options, c);
    Ok(())
}

pub(super) fn create_user_mapping<'a>(
    w: &mut Walker<'a>,
    n: &'a CreateUserMappingStmt,
    c: &Ctx,
) -> R {
    let CreateUserMappingStmt {
        user,
        servername: _,
        if_not_exists: _,
        options,
    } = n;
    w.role_opt(user, c);
    w.list(options, c);
    Ok(())
}

pub(super) fn alter_user_mapping<'a>(
    w: &mut Walker<'a>,
    n: &'a AlterUserMappingStmt,
    c: &Ctx,
) -> R {
    let AlterUserMappingStmt {
        user,
        servername: _,
        options,
    } = n;
    w.role_opt(user, c);
    w.list(options, c);
    Ok(())
}

pub(super) fn drop_user_mapping<'a>(w: &mut Walker<'a>, n: &'a DropUserMappingStmt, c: &Ctx) -> R {
    let DropUserMappingStmt {
        user,
        servername: _,
        missing_ok: _,
    } = n;
    w.role_opt(user, c);
    Ok(())
}

pub(super) fn create_table_space<'a>(
    w: &mut Walker<'a>,
    n: &'a CreateTableSpaceStmt,
    c: &Ctx,
) -> R {
    let CreateTableSpaceStmt {
        tablespacename: _,
        owner,
        location: _,
        options,
    } = n;
    w.role_opt(owner, c);
    w.list(options, c);
    Ok(())
}

pub(super) fn drop_table_space(n: &DropTableSpaceStmt) -> R {
    let DropTableSpaceStmt {
        tablespacename: _,
        missing_ok: _,
    } = n;
    Ok(())
}

pub(super) fn alter_table_space_options<'a>(
    w: &mut Walker<'a>,
    n: &'a AlterTableSpaceOptionsStmt,
    c: &Ctx,
) -> R {
    let AlterTableSpaceOptionsStmt {
        tablespacename: _,
        options,
        is_reset: _,
    } = n;
    w.list(options, c);
    Ok(())
}

pub(super) fn alter_table_move_all<'a>(
    w: &mut Walker<'a>,
    n: &'a AlterTableMoveAllStmt,
    c: &Ctx,
) -> R {
    let AlterTableMoveAllStmt {
        orig_tablespacename: _,
        objtype: _,
        roles,
        new_tablespacename: _,
        nowait: _,
    } = n;
    w.list(roles, c);
    Ok(())
}

pub(super) fn createdb<'a>(w: &mut Walker<'a>, n: &'a CreatedbStmt, c: &Ctx) -> R {
    let CreatedbStmt { dbname: _, options } = n;
    w.list(options, c);
    Ok(())
}

pub(super) fn alter_database<'a>(w: &mut Walker<'a>, n: &'a AlterDatabaseStmt, c: &Ctx) -> R {
    let AlterDatabaseStmt { dbname: _, options } = n;
    w.list(options, c);
    Ok(())
}

pub(super) fn alter_database_refresh_coll(n: &AlterDatabaseRefreshCollStmt) -> R {
    let AlterDatabaseRefreshCollStmt { dbname: _ } = n;
    Ok(())
}

pub(super) fn alter_database_set<'a>(
    w: &mut Walker<'a>,
    n: &'a AlterDatabaseSetStmt,
    c: &Ctx,
) -> R {
    let AlterDatabaseSetStmt { dbname: _, setstmt } = n;
    if let Some(x) = setstmt {
        w.push(NodeRef::VariableSetStmt(x), c);
    }
    Ok(())
}

pub(super) fn dropdb<'a>(w: &mut Walker<'a>, n: &'a DropdbStmt, c: &Ctx) -> R {
    let DropdbStmt {
        dbname: _,
        missing_ok: _,
        options,
    } = n;
    w.list(options, c);
    Ok(())
}

pub(super) fn create_subscription<'a>(
    w: &mut Walker<'a>,
    n: &'a CreateSubscriptionStmt,
    c: &Ctx,
) -> R {
    let CreateSubscriptionStmt {
        subname: _,
        conninfo: _,
        publication,
        options,
        conninfo_location: _,
    } = n;
    w.list(publication, c);
    w.list(options, c);
    Ok(())
}

pub(super) fn alter_subscription<'a>(
    w: &mut Walker<'a>,
    n: &'a AlterSubscriptionStmt,
    c: &Ctx,
) -> R {
    let AlterSubscriptionStmt {
        kind: _,
        subname: _,
        conninfo: _,
        publication,
        options,
        conninfo_location: _,
    } = n;
    w.list(publication, c);
    w.list(options, c);
    Ok(())
}

pub(super) fn drop_subscription(n: &DropSubscriptionStmt) -> R {
    let DropSubscriptionStmt {
        subname: _,
        missing_ok: _,
        behavior: _,
    } = n;
    Ok(())
}
