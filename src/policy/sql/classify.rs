//! Classification of a top-level statement into a StatementKind, including the details of SET/RESET/SHOW (setting names normalised as PostgreSQL does, values rendered), EXPLAIN's ANALYZE option and the statement wrapped by EXPLAIN/PREPARE/DECLARE/CREATE TABLE AS.

use pg_query::protobuf::{
    a_const::Val, node::Node as NodeEnum, DefElem, Node, SelectStmt, TransactionStmtKind,
    VariableSetKind, VariableSetStmt,
};

use super::{AnalyzeError, StatementKind};

/// The kind of a top-level statement.
pub(super) fn kind(stmt: &NodeEnum) -> Result<StatementKind, AnalyzeError> {
    use StatementKind as K;
    Ok(match stmt {
        NodeEnum::SelectStmt(s) if select_into(s) => K::Ddl,
        NodeEnum::SelectStmt(_) => K::Select,
        NodeEnum::InsertStmt(_) => K::Insert,
        NodeEnum::UpdateStmt(_) => K::Update,
        NodeEnum::DeleteStmt(_) => K::Delete,
        NodeEnum::MergeStmt(_) => K::Merge,
        NodeEnum::TruncateStmt(_) => K::Truncate,
        NodeEnum::CopyStmt(c) => K::Copy {
            to_program_or_file: c.is_program || !c.filename.is_empty(),
        },
        NodeEnum::ExplainStmt(e) => K::Explain {
            analyze: explain_analyzes(&e.options),
        },
        NodeEnum::TransactionStmt(t) => match TransactionStmtKind::try_from(t.kind) {
            Ok(TransactionStmtKind::TransStmtPrepare) => K::Other("PREPARE TRANSACTION".into()),
            Ok(TransactionStmtKind::TransStmtCommitPrepared) => K::Other("COMMIT PREPARED".into()),
            Ok(TransactionStmtKind::TransStmtRollbackPrepared) => {
                K::Other("ROLLBACK PREPARED".into())
            }
            Ok(TransactionStmtKind::Undefined) | Err(_) => {
                return Err(AnalyzeError::Unsupported(
                    "transaction statement of an unknown kind".into(),
                ))
            }
            Ok(_) => K::Transaction,
        },
        NodeEnum::ConstraintsSetStmt(_) => K::Transaction,
        NodeEnum::VariableSetStmt(v) => variable_set(v)?,
        NodeEnum::VariableShowStmt(v) => K::Show {
            name: setting_name(&v.name),
        },
        NodeEnum::DiscardStmt(d) => K::Discard {
            all: d.target() == pg_query::protobuf::DiscardMode::DiscardAll,
        },
        NodeEnum::PrepareStmt(p) => K::Prepare {
            name: p.name.clone(),
        },
        NodeEnum::ExecuteStmt(e) => K::Execute {
            name: e.name.clone(),
        },
        NodeEnum::DeallocateStmt(d) => K::Deallocate {
            name: (!d.isall).then(|| d.name.clone()),
        },
        NodeEnum::DeclareCursorStmt(d) => K::DeclareCursor {
            name: d.portalname.clone(),
            // CURSOR_OPT_HOLD in PostgreSQL's parsenodes.h.
            hold: d.options & 0x0020 != 0,
        },
        NodeEnum::FetchStmt(_) => K::FetchOrMove,
        NodeEnum::ClosePortalStmt(_) => K::ClosePortal,
        NodeEnum::ListenStmt(l) => K::Listen {
            channel: l.conditionname.clone(),
        },
        NodeEnum::NotifyStmt(n) => K::Notify {
            channel: n.conditionname.clone(),
        },
        NodeEnum::UnlistenStmt(_) => K::Unlisten,
        NodeEnum::DoStmt(_) => K::Do,
        NodeEnum::CallStmt(_) => K::Call,
        NodeEnum::LockStmt(_) => K::Lock,
        NodeEnum::VacuumStmt(_)
        | NodeEnum::ClusterStmt(_)
        | NodeEnum::ReindexStmt(_)
        | NodeEnum::CheckPointStmt(_) => K::Maintenance,
        NodeEnum::AlterSystemStmt(_) => K::AlterSystem,
        NodeEnum::LoadStmt(_) => K::LoadLibrary,
        NodeEnum::GrantStmt(_)
        | NodeEnum::GrantRoleStmt(_)
        | NodeEnum::AlterDefaultPrivilegesStmt(_)
        | NodeEnum::CreateRoleStmt(_)
        | NodeEnum::AlterRoleStmt(_)
        | NodeEnum::AlterRoleSetStmt(_)
        | NodeEnum::DropRoleStmt(_)
        | NodeEnum::DropOwnedStmt(_)
        | NodeEnum::ReassignOwnedStmt(_)
        | NodeEnum::AlterOwnerStmt(_) => K::Dcl,
        NodeEnum::CreateTableAsStmt(_)
        | NodeEnum::ViewStmt(_)
        | NodeEnum::RefreshMatViewStmt(_)
        | NodeEnum::CreateStmt(_)
        | NodeEnum::CreateForeignTableStmt(_)
        | NodeEnum::AlterTableStmt(_)
        | NodeEnum::IndexStmt(_)
        | NodeEnum::DropStmt(_)
        | NodeEnum::CommentStmt(_)
        | NodeEnum::SecLabelStmt(_)
        | NodeEnum::RenameStmt(_)
        | NodeEnum::AlterObjectSchemaStmt(_)
        | NodeEnum::AlterObjectDependsStmt(_)
        | NodeEnum::AlterExtensionContentsStmt(_)
        | NodeEnum::RuleStmt(_)
        | NodeEnum::CreateTrigStmt(_)
        | NodeEnum::CreateEventTrigStmt(_)
        | NodeEnum::AlterEventTrigStmt(_)
        | NodeEnum::CreatePolicyStmt(_)
        | NodeEnum::AlterPolicyStmt(_)
        | NodeEnum::CreateFunctionStmt(_)
        | NodeEnum::AlterFunctionStmt(_)
        | NodeEnum::CreateSchemaStmt(_)
        | NodeEnum::CreateSeqStmt(_)
        | NodeEnum::AlterSeqStmt(_)
        | NodeEnum::CreateStatsStmt(_)
        | NodeEnum::AlterStatsStmt(_)
        | NodeEnum::CompositeTypeStmt(_)
        | NodeEnum::DefineStmt(_)
        | NodeEnum::CreateDomainStmt(_)
        | NodeEnum::AlterDomainStmt(_)
        | NodeEnum::CreateEnumStmt(_)
        | NodeEnum::CreateRangeStmt(_)
        | NodeEnum::AlterEnumStmt(_)
        | NodeEnum::AlterTypeStmt(_)
        | NodeEnum::AlterCollationStmt(_)
        | NodeEnum::CreateExtensionStmt(_)
        | NodeEnum::AlterExtensionStmt(_)
        | NodeEnum::CreateFdwStmt(_)
        | NodeEnum::AlterFdwStmt(_)
        | NodeEnum::CreateForeignServerStmt(_)
        | NodeEnum::AlterForeignServerStmt(_)
        | NodeEnum::CreateUserMappingStmt(_)
        | NodeEnum::AlterUserMappingStmt(_)
        | NodeEnum::DropUserMappingStmt(_)
        | NodeEnum::ImportForeignSchemaStmt(_)
        | NodeEnum::CreateTableSpaceStmt(_)
        | NodeEnum::DropTableSpaceStmt(_)
        | NodeEnum::AlterTableSpaceOptionsStmt(_)
        | NodeEnum::AlterTableMoveAllStmt(_)
        | NodeEnum::CreateAmStmt(_)
        | NodeEnum::CreatePlangStmt(_)
        | NodeEnum::CreateCastStmt(_)
        | NodeEnum::CreateTransformStmt(_)
        | NodeEnum::CreateConversionStmt(_)
        | NodeEnum::CreateOpClassStmt(_)
        | NodeEnum::CreateOpFamilyStmt(_)
        | NodeEnum::AlterOpFamilyStmt(_)
        | NodeEnum::AlterOperatorStmt(_)
        | NodeEnum::AlterTsdictionaryStmt(_)
        | NodeEnum::AlterTsconfigurationStmt(_)
        | NodeEnum::CreatedbStmt(_)
        | NodeEnum::AlterDatabaseStmt(_)
        | NodeEnum::AlterDatabaseRefreshCollStmt(_)
        | NodeEnum::AlterDatabaseSetStmt(_)
        | NodeEnum::DropdbStmt(_)
        | NodeEnum::CreatePublicationStmt(_)
        | NodeEnum::AlterPublicationStmt(_)
        | NodeEnum::CreateSubscriptionStmt(_)
        | NodeEnum::AlterSubscriptionStmt(_)
        | NodeEnum::DropSubscriptionStmt(_) => K::Ddl,
        // Anything else is not a statement the grammar produces at top level (PL/pgSQL
        // assignments, expressions, analysed trees): refuse rather than guess.
        _ => {
            return Err(AnalyzeError::Unsupported(
                "a top-level node that is not a known statement".into(),
            ))
        }
    })
}

/// Whether a SELECT creates a table (`SELECT ... INTO t`): the INTO clause sits on the
/// leftmost arm of a set operation, so every arm is searched.
fn select_into(s: &SelectStmt) -> bool {
    let mut todo = vec![s];
    while let Some(s) = todo.pop() {
        if s.into_clause.is_some() {
            return true;
        }
        todo.extend(s.larg.as_deref());
        todo.extend(s.rarg.as_deref());
    }
    false
}

/// The kind of the statement wrapped by EXPLAIN, PREPARE, DECLARE CURSOR or CREATE TABLE AS.
pub(super) fn inner_kind(stmt: &NodeEnum) -> Result<Option<StatementKind>, AnalyzeError> {
    let inner = match stmt {
        NodeEnum::ExplainStmt(e) => e.query.as_deref(),
        NodeEnum::PrepareStmt(p) => p.query.as_deref(),
        NodeEnum::DeclareCursorStmt(d) => d.query.as_deref(),
        NodeEnum::CreateTableAsStmt(c) => c.query.as_deref(),
        _ => return Ok(None),
    };
    match inner.and_then(|n| n.node.as_ref()) {
        Some(n) => kind(n).map(Some),
        None => Err(AnalyzeError::Unsupported(
            "a wrapping statement without its inner statement".into(),
        )),
    }
}

/// Kinds whose decision may depend on literal values or session state: never cached.
pub(super) fn kind_is_literal_sensitive(kind: &StatementKind) -> bool {
    use StatementKind as K;
    matches!(
        kind,
        K::Set { .. }
            | K::Copy { .. }
            | K::Execute { .. }
            | K::Ddl
            | K::Dcl
            | K::Do
            | K::AlterSystem
            | K::LoadLibrary
            | K::Other(_)
    )
}

/// Whether EXPLAIN's options turn ANALYZE on (then the statement is executed). Mirrors
/// PostgreSQL's defGetBoolean; anything that is not clearly "off" counts as on.
fn explain_analyzes(options: &[Node]) -> bool {
    options.iter().any(|o| match &o.node {
        Some(NodeEnum::DefElem(d)) if d.defname == "analyze" => !def_elem_is_false(d),
        _ => false,
    })
}

fn def_elem_is_false(d: &DefElem) -> bool {
    match d.arg.as_deref().and_then(|a| a.node.as_ref()) {
        None => false,
        Some(NodeEnum::Integer(i)) => i.ival == 0,
        Some(NodeEnum::Boolean(b)) => !b.boolval,
        Some(NodeEnum::String(s)) => {
            s.sval.eq_ignore_ascii_case("false") || s.sval.eq_ignore_ascii_case("off")
        }
        Some(NodeEnum::AConst(c)) => match &c.val {
            Some(Val::Ival(i)) => i.ival == 0,
            Some(Val::Boolval(b)) => !b.boolval,
            Some(Val::Sval(s)) => {
                s.sval.eq_ignore_ascii_case("false") || s.sval.eq_ignore_ascii_case("off")
            }
            _ => false,
        },
        Some(_) => false,
    }
}

/// A setting name as PostgreSQL looks it up: case-insensitive, with the old aliases mapped.
pub fn setting_name(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    match lower.as_str() {
        "sort_mem" => "work_mem".to_owned(),
        "vacuum_mem" => "maintenance_work_mem".to_owned(),
        _ => lower,
    }
}

pub(super) fn variable_set(v: &VariableSetStmt) -> Result<StatementKind, AnalyzeError> {
    let kind = VariableSetKind::try_from(v.kind).unwrap_or(VariableSetKind::Undefined);
    let name = match kind {
        // SET TRANSACTION / SESSION CHARACTERISTICS / TRANSACTION SNAPSHOT.
        VariableSetKind::VarSetMulti => setting_name(&v.name).replace(' ', "_"),
        _ => setting_name(&v.name),
    };
    Ok(match kind {
        VariableSetKind::VarSetValue | VariableSetKind::VarSetMulti => StatementKind::Set {
            value: Some(render_values(&name, &v.args)?),
            name,
            local: v.is_local,
        },
        VariableSetKind::VarSetDefault => StatementKind::Set {
            name,
            value: None,
            local: v.is_local,
        },
        VariableSetKind::VarReset => StatementKind::Reset { name: Some(name) },
        VariableSetKind::VarResetAll => StatementKind::Reset { name: None },
        VariableSetKind::VarSetCurrent => StatementKind::Other("SET ... FROM CURRENT".into()),
        VariableSetKind::Undefined => {
            return Err(AnalyzeError::Unsupported(
                "SET statement of an unknown kind".into(),
            ))
        }
    })
}

/// Settings whose value is a list of identifiers that PostgreSQL quotes when it flattens them
/// (GUC_LIST_QUOTE).
fn is_quoted_list(name: &str) -> bool {
    matches!(
        name,
        "search_path"
            | "temp_tablespaces"
            | "session_preload_libraries"
            | "shared_preload_libraries"
            | "local_preload_libraries"
    )
}

/// The values of a SET, joined with ", " as PostgreSQL's flatten_set_variable_args does.
fn render_values(name: &str, args: &[Node]) -> Result<String, AnalyzeError> {
    let quote = is_quoted_list(name);
    let mut parts = Vec::with_capacity(args.len());
    for a in args {
        parts.push(render_value(a, quote)?);
    }
    Ok(parts.join(", "))
}

fn render_value(arg: &Node, quote: bool) -> Result<String, AnalyzeError> {
    let unexpected = || AnalyzeError::Unsupported("SET value of an unexpected shape".into());
    Ok(match arg.node.as_ref().ok_or_else(unexpected)? {
        NodeEnum::AConst(c) => match c.val.as_ref().ok_or_else(unexpected)? {
            Val::Sval(s) if quote => quote_identifier(&s.sval),
            Val::Sval(s) => s.sval.clone(),
            Val::Ival(i) => i.ival.to_string(),
            Val::Fval(f) => f.fval.clone(),
            Val::Boolval(b) => b.boolval.to_string(),
            Val::Bsval(b) => b.bsval.clone(),
        },
        // SET TIME ZONE INTERVAL '...' [HOUR TO MINUTE]: the interval's text.
        NodeEnum::TypeCast(t) => match t.arg.as_deref() {
            Some(inner) => render_value(inner, false)?,
            None => return Err(unexpected()),
        },
        // SET TRANSACTION / SESSION CHARACTERISTICS: name=value items.
        NodeEnum::DefElem(d) => match d.arg.as_deref() {
            Some(inner) => format!("{}={}", d.defname, render_value(inner, false)?),
            None => d.defname.clone(),
        },
        _ => return Err(unexpected()),
    })
}

/// PostgreSQL's quote_identifier: quote unless the name is a plain lower-case identifier
/// that is not a keyword (other than an unreserved one).
fn quote_identifier(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain && !is_non_unreserved_keyword(name) {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// Ask PostgreSQL's own scanner whether a word is a keyword that must be quoted.
fn is_non_unreserved_keyword(word: &str) -> bool {
    use pg_query::protobuf::KeywordKind;
    match pg_query::scan(word) {
        Ok(r) => r.tokens.first().is_some_and(|t| {
            let kind = KeywordKind::try_from(t.keyword_kind).unwrap_or(KeywordKind::NoKeyword);
            !matches!(
                kind,
                KeywordKind::NoKeyword | KeywordKind::UnreservedKeyword
            )
        }),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::{quote_identifier, setting_name};

    #[test]
    fn setting_names_fold_like_postgres() {
        assert_eq!(setting_name("Search_Path"), "search_path");
        assert_eq!(setting_name("SORT_MEM"), "work_mem");
    }

    #[test]
    fn identifiers_quote_like_postgres() {
        assert_eq!(quote_identifier("public"), "public");
        assert_eq!(quote_identifier("$user"), "\"$user\"");
        assert_eq!(quote_identifier("My Schema"), "\"My Schema\"");
        assert_eq!(quote_identifier("select"), "\"select\"");
        assert_eq!(quote_identifier("name"), "name");
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }
}
