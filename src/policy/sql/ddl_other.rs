//! Handlers for DDL on routines and types: functions and procedures (including SQL-standard bodies, which are walked), event triggers, aggregates/operators (DefineStmt), domains, enums, ranges, collations, casts, transforms, conversions, access methods, languages, operator classes and families, text search. Every node field is walked; none of these names a relation.

use pg_query::protobuf::{
    AlterCollationStmt, AlterDomainStmt, AlterEnumStmt, AlterEventTrigStmt, AlterFunctionStmt,
    AlterOpFamilyStmt, AlterOperatorStmt, AlterTsConfigurationStmt, AlterTsDictionaryStmt,
    AlterTypeStmt, CreateAmStmt, CreateCastStmt, CreateConversionStmt, CreateDomainStmt,
    CreateEnumStmt, CreateEventTrigStmt, CreateFunctionStmt, CreateOpClassItem, CreateOpClassStmt,
    CreateOpFamilyStmt, CreatePLangStmt, CreateRangeStmt, CreateTransformStmt, DefineStmt,
    FunctionParameter, ReturnStmt,
};
use pg_query::NodeRef;

use super::walker::{Ctx, Walker};
use super::AnalyzeError;

type R = Result<(), AnalyzeError>;

pub(super) fn create_function<'a>(w: &mut Walker<'a>, n: &'a CreateFunctionStmt, c: &Ctx) -> R {
    let CreateFunctionStmt {
        is_procedure: _,
        replace: _,
        funcname,
        parameters,
        return_type,
        options,
        sql_body,
    } = n;
    w.list(funcname, c);
    w.list(parameters, c);
    w.type_name_opt(return_type, c);
    w.list(options, c);
    // BEGIN ATOMIC ... END / RETURN expr: SQL that runs when the function is called.
    w.opt(sql_body, &c.select());
    Ok(())
}

pub(super) fn function_parameter<'a>(w: &mut Walker<'a>, n: &'a FunctionParameter, c: &Ctx) -> R {
    let FunctionParameter {
        name: _,
        arg_type,
        mode: _,
        defexpr,
        location: _,
    } = n;
    w.type_name_opt(arg_type, c);
    w.opt(defexpr, c);
    Ok(())
}

pub(super) fn alter_function<'a>(w: &mut Walker<'a>, n: &'a AlterFunctionStmt, c: &Ctx) -> R {
    let AlterFunctionStmt {
        objtype: _,
        func,
        actions,
    } = n;
    w.object_with_args_opt(func, c);
    w.list(actions, c);
    Ok(())
}

pub(super) fn return_stmt<'a>(w: &mut Walker<'a>, n: &'a ReturnStmt, c: &Ctx) -> R {
    let ReturnStmt { returnval } = n;
    w.opt(returnval, c);
    Ok(())
}

pub(super) fn create_event_trig<'a>(w: &mut Walker<'a>, n: &'a CreateEventTrigStmt, c: &Ctx) -> R {
    let CreateEventTrigStmt {
        trigname: _,
        eventname: _,
        whenclause,
        funcname,
    } = n;
    w.function_names(funcname, "event trigger function")?;
    w.list(whenclause, c);
    Ok(())
}

pub(super) fn alter_event_trig(n: &AlterEventTrigStmt) -> R {
    let AlterEventTrigStmt {
        trigname: _,
        tgenabled: _,
    } = n;
    Ok(())
}

pub(super) fn define<'a>(w: &mut Walker<'a>, n: &'a DefineStmt, c: &Ctx) -> R {
    let DefineStmt {
        kind: _,
        oldstyle: _,
        defnames,
        args,
        definition,
        if_not_exists: _,
        replace: _,
    } = n;
    w.list(defnames, c);
    w.list(args, c);
    w.list(definition, c);
    Ok(())
}

pub(super) fn create_domain<'a>(w: &mut Walker<'a>, n: &'a CreateDomainStmt, c: &Ctx) -> R {
    let CreateDomainStmt {
        domainname,
        type_name,
        coll_clause,
        constraints,
    } = n;
    w.list(domainname, c);
    w.type_name_opt(type_name, c);
    if let Some(x) = coll_clause {
        w.push(NodeRef::CollateClause(x), c);
    }
    w.list(constraints, c);
    Ok(())
}

pub(super) fn alter_domain<'a>(w: &mut Walker<'a>, n: &'a AlterDomainStmt, c: &Ctx) -> R {
    let AlterDomainStmt {
        subtype: _,
        type_name,
        name: _,
        def,
        behavior: _,
        missing_ok: _,
    } = n;
    w.list(type_name, c);
    w.opt(def, c);
    Ok(())
}

pub(super) fn create_enum<'a>(w: &mut Walker<'a>, n: &'a CreateEnumStmt, c: &Ctx) -> R {
    let CreateEnumStmt { type_name, vals } = n;
    w.list(type_name, c);
    w.list(vals, c);
    Ok(())
}

pub(super) fn create_range<'a>(w: &mut Walker<'a>, n: &'a CreateRangeStmt, c: &Ctx) -> R {
    let CreateRangeStmt { type_name, params } = n;
    w.list(type_name, c);
    w.list(params, c);
    Ok(())
}

pub(super) fn alter_enum<'a>(w: &mut Walker<'a>, n: &'a AlterEnumStmt, c: &Ctx) -> R {
    let AlterEnumStmt {
        type_name,
        old_val: _,
        new_val: _,
        new_val_neighbor: _,
        new_val_is_after: _,
        skip_if_new_val_exists: _,
    } = n;
    w.list(type_name, c);
    Ok(())
}

pub(super) fn alter_type<'a>(w: &mut Walker<'a>, n: &'a AlterTypeStmt, c: &Ctx) -> R {
    let AlterTypeStmt { type_name, options } = n;
    w.list(type_name, c);
    w.list(options, c);
    Ok(())
}

pub(super) fn alter_collation<'a>(w: &mut Walker<'a>, n: &'a AlterCollationStmt, c: &Ctx) -> R {
    let AlterCollationStmt { collname } = n;
    w.list(collname, c);
    Ok(())
}

pub(super) fn create_am<'a>(w: &mut Walker<'a>, n: &'a CreateAmStmt, c: &Ctx) -> R {
    let CreateAmStmt {
        amname: _,
        handler_name,
        amtype: _,
    } = n;
    w.list(handler_name, c);
    Ok(())
}

pub(super) fn create_p_lang<'a>(w: &mut Walker<'a>, n: &'a CreatePLangStmt, c: &Ctx) -> R {
    let CreatePLangStmt {
        replace: _,
        plname: _,
        plhandler,
        plinline,
        plvalidator,
        pltrusted: _,
    } = n;
    w.list(plhandler, c);
    w.list(plinline, c);
    w.list(plvalidator, c);
    Ok(())
}

pub(super) fn create_cast<'a>(w: &mut Walker<'a>, n: &'a CreateCastStmt, c: &Ctx) -> R {
    let CreateCastStmt {
        sourcetype,
        targettype,
        func,
        context: _,
        inout: _,
    } = n;
    w.type_name_opt(sourcetype, c);
    w.type_name_opt(targettype, c);
    w.object_with_args_opt(func, c);
    Ok(())
}

pub(super) fn create_transform<'a>(w: &mut Walker<'a>, n: &'a CreateTransformStmt, c: &Ctx) -> R {
    let CreateTransformStmt {
        replace: _,
        type_name,
        lang: _,
        fromsql,
        tosql,
    } = n;
    w.type_name_opt(type_name, c);
    w.object_with_args_opt(fromsql, c);
    w.object_with_args_opt(tosql, c);
    Ok(())
}

pub(super) fn create_conversion<'a>(w: &mut Walker<'a>, n: &'a CreateConversionStmt, c: &Ctx) -> R {
    let CreateConversionStmt {
        conversion_name,
        for_encoding_name: _,
        to_encoding_name: _,
        func_name,
        def: _,
    } = n;
    w.list(conversion_name, c);
    w.list(func_name, c);
    Ok(())
}

pub(super) fn create_op_class<'a>(w: &mut Walker<'a>, n: &'a CreateOpClassStmt, c: &Ctx) -> R {
    let CreateOpClassStmt {
        opclassname,
        opfamilyname,
        amname: _,
        datatype,
        items,
        is_default: _,
    } = n;
    w.list(opclassname, c);
    w.list(opfamilyname, c);
    w.type_name_opt(datatype, c);
    w.list(items, c);
    Ok(())
}

pub(super) fn create_op_class_item<'a>(w: &mut Walker<'a>, n: &'a CreateOpClassItem, c: &Ctx) -> R {
    let CreateOpClassItem {
        itemtype: _,
        name,
        number: _,
        order_family,
        class_args,
        storedtype,
    } = n;
    w.object_with_args_opt(name, c);
    w.list(order_family, c);
    w.list(class_args, c);
    w.type_name_opt(storedtype, c);
    Ok(())
}

pub(super) fn create_op_family<'a>(w: &mut Walker<'a>, n: &'a CreateOpFamilyStmt, c: &Ctx) -> R {
    let CreateOpFamilyStmt {
        opfamilyname,
        amname: _,
    } = n;
    w.list(opfamilyname, c);
    Ok(())
}

pub(super) fn alter_op_family<'a>(w: &mut Walker<'a>, n: &'a AlterOpFamilyStmt, c: &Ctx) -> R {
    let AlterOpFamilyStmt {
        opfamilyname,
        amname: _,
        is_drop: _,
        items,
    } = n;
    w.list(opfamilyname, c);
    w.list(items, c);
    Ok(())
}

pub(super) fn alter_operator<'a>(w: &mut Walker<'a>, n: &'a AlterOperatorStmt, c: &Ctx) -> R {
    let AlterOperatorStmt { opername, options } = n;
    w.object_with_args_opt(opername, c);
    w.list(options, c);
    Ok(())
}

pub(super) fn alter_ts_dictionary<'a>(
    w: &mut Walker<'a>,
    n: &'a AlterTsDictionaryStmt,
    c: &Ctx,
) -> R {
    let AlterTsDictionaryStmt { dictname, options } = n;
    w.list(dictname, c);
    w.list(options, c);
    Ok(())
}

pub(super) fn alter_ts_configuration<'a>(
    w: &mut Walker<'a>,
    n: &'a AlterTsConfigurationStmt,
    c: &Ctx,
) -> R {
    let AlterTsConfigurationStmt {
        kind: _,
        cfgname,
        tokentype,
        dicts,
        r#override: _,
        replace: _,
        missing_ok: _,
    } = n;
    w.list(cfgname, c);
    w.list(tokentype, c);
    w.list(dicts, c);
    Ok(())
}
