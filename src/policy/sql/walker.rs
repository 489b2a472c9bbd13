//! The iterative parse-tree walker: an explicit work stack of (node, context), CTE name scopes, and the collector of relations and functions found.

use std::collections::HashSet;
use std::rc::Rc;

use pg_query::protobuf::{Node, ObjectWithArgs, RangeVar, RawStmt, RoleSpec, TypeName};
use pg_query::NodeRef;

use super::names::{function_name, non_empty};
use super::{
    classify, dispatch, is_safe_builtin_function, AnalyzeError, FunctionRef, Operation,
    RelationAccess, RelationOccurrence, StatementInfo,
};

/// CTE names visible at some point of the tree, innermost first.
pub(super) struct Scope {
    names: Vec<String>,
    parent: Option<Rc<Scope>>,
}

/// What a node inherits from where it sits in the tree.
#[derive(Clone)]
pub(super) struct Ctx {
    /// CTE names visible here.
    pub scope: Option<Rc<Scope>>,
    /// Operation done on a relation named directly by a node reached with this context.
    pub op: Operation,
    /// Whether an unqualified relation name here may denote a visible CTE (FROM items do; the
    /// targets of INSERT/UPDATE/DELETE/MERGE, COPY, DDL, ... never do).
    pub cte_ok: bool,
}

impl Ctx {
    /// The context of a top-level statement.
    pub fn root() -> Ctx {
        Ctx {
            scope: None,
            op: Operation::Select,
            cte_ok: true,
        }
    }

    /// Same scope, another operation.
    pub fn with_op(&self, op: Operation, cte_ok: bool) -> Ctx {
        Ctx {
            scope: self.scope.clone(),
            op,
            cte_ok,
        }
    }

    /// Same scope, reading (FROM items, subqueries).
    pub fn select(&self) -> Ctx {
        self.with_op(Operation::Select, true)
    }

    /// A context in which `names` are visible CTEs, on top of this context's CTEs.
    pub fn with_ctes(&self, names: Vec<String>) -> Ctx {
        Ctx {
            scope: Some(Rc::new(Scope {
                names,
                parent: self.scope.clone(),
            })),
            op: self.op,
            cte_ok: self.cte_ok,
        }
    }

    /// Whether `name` is a CTE visible here.
    fn is_cte(&self, name: &str) -> bool {
        let mut scope = self.scope.as_deref();
        while let Some(s) = scope {
            if s.names.iter().any(|n| n == name) {
                return true;
            }
            scope = s.parent.as_deref();
        }
        false
    }
}

/// Walk state for one statement.
pub(super) struct Walker<'a> {
    stack: Vec<(NodeRef<'a>, Ctx)>,
    relations: Vec<RelationAccess>,
    relations_seen: HashSet<RelationAccess>,
    functions: Vec<FunctionRef>,
    functions_seen: HashSet<FunctionRef>,
    /// Set by handlers that read a literal value into the analysis.
    pub literal_sensitive: bool,
    /// Set when a row-locking clause is met.
    pub row_locking: bool,
    occurrences: Vec<RelationOccurrence>,
    /// Locations of relations named by TABLESAMPLE clauses.
    pub tablesample_locations: Vec<i32>,
    column_names: HashSet<String>,
    /// See [`StatementInfo::bare_column_names`].
    bare_column_names: HashSet<String>,
    pub column_star: bool,
    /// See [`StatementInfo::set_config_calls`].
    pub set_config_calls: Vec<Option<(String, Option<String>)>>,
    /// See [`StatementInfo::setting_reads`].
    pub setting_reads: Vec<super::SettingRead>,
    /// See [`StatementInfo::signals`].
    pub signals: Vec<super::SignalTarget>,
    /// See [`StatementInfo::reads_backend_pid`].
    pub reads_backend_pid: bool,
    /// `pg_backend_pid()` calls that are the process id of a signal call (not reads).
    pub signal_pid_args: Vec<&'a pg_query::protobuf::FuncCall>,
}

impl<'a> Walker<'a> {
    fn new() -> Walker<'a> {
        Walker {
            stack: Vec::new(),
            relations: Vec::new(),
            relations_seen: HashSet::new(),
            functions: Vec::new(),
            functions_seen: HashSet::new(),
            literal_sensitive: false,
            row_locking: false,
            occurrences: Vec::new(),
            tablesample_locations: Vec::new(),
            column_names: HashSet::new(),
            bare_column_names: HashSet::new(),
            set_config_calls: Vec::new(),
            setting_reads: Vec::new(),
            signals: Vec::new(),
            reads_backend_pid: false,
            signal_pid_args: Vec::new(),
            column_star: false,
        }
    }

    /// Schedule a typed node.
    pub fn push(&mut self, node: NodeRef<'a>, ctx: &Ctx) {
        self.stack.push((node, ctx.clone()));
    }

    /// Schedule a generic node. An empty node (a NIL list element) carries nothing.
    pub fn node(&mut self, node: &'a Node, ctx: &Ctx) {
        if let Some(inner) = &node.node {
            self.stack.push((inner.to_ref(), ctx.clone()));
        }
    }

    /// Schedule an optional generic node.
    pub fn opt(&mut self, node: &'a Option<Box<Node>>, ctx: &Ctx) {
        if let Some(node) = node {
            self.node(node, ctx);
        }
    }

    /// Schedule a list of generic nodes (in source order).
    pub fn list(&mut self, nodes: &'a [Node], ctx: &Ctx) {
        for node in nodes.iter().rev() {
            self.node(node, ctx);
        }
    }

    /// Schedule an optional RangeVar.
    pub fn range_var_opt(&mut self, rv: &'a Option<RangeVar>, ctx: &Ctx) {
        if let Some(rv) = rv {
            self.push(NodeRef::RangeVar(rv), ctx);
        }
    }

    /// Schedule an optional TypeName.
    pub fn type_name_opt(&mut self, t: &'a Option<TypeName>, ctx: &Ctx) {
        if let Some(t) = t {
            self.push(NodeRef::TypeName(t), ctx);
        }
    }

    /// Schedule an optional RoleSpec.
    pub fn role_opt(&mut self, r: &'a Option<RoleSpec>, ctx: &Ctx) {
        if let Some(r) = r {
            self.push(NodeRef::RoleSpec(r), ctx);
        }
    }

    /// Schedule an optional ObjectWithArgs.
    pub fn object_with_args_opt(&mut self, o: &'a Option<ObjectWithArgs>, ctx: &Ctx) {
        if let Some(o) = o {
            self.push(NodeRef::ObjectWithArgs(o), ctx);
        }
    }

    /// Record a relation access.
    pub fn relation(&mut self, schema: Option<String>, name: String, op: Operation) {
        let access = RelationAccess { schema, name, op };
        if self.relations_seen.insert(access.clone()) {
            self.relations.push(access);
        }
    }

    /// Record the relation a RangeVar names, unless it denotes a visible CTE.
    pub fn range_var(&mut self, rv: &RangeVar, ctx: &Ctx) {
        let unqualified = rv.schemaname.is_empty() && rv.catalogname.is_empty();
        if ctx.cte_ok && unqualified && ctx.is_cte(&rv.relname) {
            return;
        }
        // A cross-database name (`db.schema.t`) is an error in PostgreSQL unless `db` is the
        // current database, so the catalog name adds nothing. A temporary relation being
        // created always lives in the session's temporary schema.
        let schema = if rv.schemaname.is_empty() && rv.relpersistence == "t" {
            Some("pg_temp".to_owned())
        } else {
            non_empty(&rv.schemaname)
        };
        self.relation(schema.clone(), rv.relname.clone(), ctx.op);
        self.occurrences.push(RelationOccurrence {
            schema,
            name: rv.relname.clone(),
            op: ctx.op,
            location: usize::try_from(rv.location).ok(),
            // FROM items are exactly the places where a name may denote a CTE.
            from_item: ctx.cte_ok && ctx.op == Operation::Select,
            alias: rv.alias.as_ref().map(|a| a.aliasname.clone()),
            inh: rv.inh,
            tablesample: false,
        });
    }

    /// Record a column name part read by the statement.
    pub fn column_name(&mut self, name: &str) {
        if !self.column_names.contains(name) {
            self.column_names.insert(name.to_owned());
        }
    }

    /// A column reference of one name (`x`): a column, or a whole-row reference to a relation.
    pub fn bare_column_name(&mut self, name: &str) {
        if !self.bare_column_names.contains(name) {
            self.bare_column_names.insert(name.to_owned());
        }
    }

    /// Record a function call.
    pub fn function(&mut self, schema: Option<String>, name: String) {
        let f = FunctionRef { schema, name };
        if self.functions_seen.insert(f.clone()) {
            self.functions.push(f);
        }
    }

    /// Record a function called by a (possibly qualified) name list.
    pub fn function_names(&mut self, names: &[Node], what: &str) -> Result<(), AnalyzeError> {
        let (schema, name) = function_name(names, what)?;
        self.function(schema, name);
        Ok(())
    }

    /// Process the work stack until it is empty.
    fn run(&mut self) -> Result<(), AnalyzeError> {
        while let Some((node, ctx)) = self.stack.pop() {
            dispatch::visit(self, node, &ctx)?;
        }
        Ok(())
    }
}

/// Analyse one parsed statement. `total_len` is the length of the whole input, for the span of
/// a statement whose length the parser leaves open (the last one).
pub(super) fn analyze_statement(
    raw: &RawStmt,
    total_len: usize,
) -> Result<StatementInfo, AnalyzeError> {
    let RawStmt {
        stmt,
        stmt_location,
        stmt_len,
    } = raw;
    let stmt = stmt
        .as_deref()
        .and_then(|n| n.node.as_ref())
        .ok_or_else(|| AnalyzeError::Unsupported("empty statement node".to_owned()))?;
    let kind = classify::kind(stmt)?;
    let inner_kind = classify::inner_kind(stmt)?.map(Box::new);

    let mut walker = Walker::new();
    walker.push(stmt.to_ref(), &Ctx::root());
    walker.run()?;

    // pg_dump's `set_config(name, ...) FROM pg_settings WHERE name = '...'`: the name is known.
    if let [None] = walker.set_config_calls.as_slice() {
        if let Some(call) = super::settings_filter::single_named_setting(stmt) {
            walker.set_config_calls[0] = Some(call);
        }
    }
    let literal_sensitive = walker.literal_sensitive
        || classify::kind_is_literal_sensitive(&kind)
        || inner_kind
            .as_deref()
            .is_some_and(classify::kind_is_literal_sensitive)
        || walker
            .functions
            .iter()
            .any(|f| !is_safe_builtin_function(f));

    let start = usize::try_from(*stmt_location).unwrap_or(0).min(total_len);
    let end = match usize::try_from(*stmt_len) {
        Ok(0) | Err(_) => total_len,
        Ok(len) => start.saturating_add(len).min(total_len),
    };

    Ok(StatementInfo {
        kind,
        relations: walker.relations,
        functions: walker.functions,
        literal_sensitive,
        inner_kind,
        row_locking: walker.row_locking,
        set_config_calls: walker.set_config_calls,
        setting_reads: walker.setting_reads,
        signals: walker.signals,
        reads_backend_pid: walker.reads_backend_pid,
        defines_unread_code: defines_unread_code(stmt),
        span: start..end,
        occurrences: walker
            .occurrences
            .into_iter()
            .map(|mut o| {
                o.tablesample = o.location.is_some_and(|l| {
                    walker
                        .tablesample_locations
                        .iter()
                        .any(|t| usize::try_from(*t).ok() == Some(l))
                });
                o
            })
            .collect(),
        column_names: {
            let mut v: Vec<String> = walker.column_names.into_iter().collect();
            v.sort();
            v
        },
        column_star: walker.column_star,
        bare_column_names: walker.bare_column_names.into_iter().collect(),
    })
}

/// See [`StatementInfo::defines_unread_code`]: a function with a string body, and the
/// definitions that make functions callable another way (an aggregate's state function, an
/// operator's, a cast's, a type's input, ...), whose calls then carry no function name the
/// analysis sees (the re-review ran `ts_rewrite` as a temporary aggregate and operator).
fn defines_unread_code(stmt: &pg_query::protobuf::node::Node) -> bool {
    use pg_query::protobuf::node::Node as N;
    match stmt {
        N::CreateFunctionStmt(f) => f.sql_body.is_none(),
        N::DefineStmt(_)
        | N::CreateCastStmt(_)
        | N::CreateTransformStmt(_)
        | N::CreateConversionStmt(_)
        | N::CreateOpClassStmt(_)
        | N::CreateOpFamilyStmt(_)
        | N::AlterOpFamilyStmt(_)
        | N::AlterOperatorStmt(_)
        | N::AlterTypeStmt(_)
        | N::CreatePlangStmt(_)
        | N::CreateEventTrigStmt(_)
        | N::RuleStmt(_) => true,
        _ => false,
    }
}
