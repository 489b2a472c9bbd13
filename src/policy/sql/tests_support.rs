//! Shared helpers for the table-driven analyser tests: a case is SQL, the expected kinds of its statements and the expected set of relation accesses (and optionally functions); failures of a whole table are reported together.

use std::collections::BTreeSet;

use super::{analyze, Analysis, FunctionRef, Operation, RelationAccess, StatementKind};

/// One table-driven case.
pub(super) struct Case {
    pub sql: String,
    /// Expected kind of each statement, in order.
    pub kinds: Vec<StatementKind>,
    /// Expected relation accesses over all statements, as "op name" or "op schema.name".
    pub rels: Vec<&'static str>,
    /// Expected functions over all statements ("name" or "schema.name"); None = not checked.
    pub funcs: Option<Vec<&'static str>>,
}

/// A single-statement case.
pub(super) fn case(sql: &str, kind: StatementKind, rels: &[&'static str]) -> Case {
    Case {
        sql: sql.to_owned(),
        kinds: vec![kind],
        rels: rels.to_vec(),
        funcs: None,
    }
}

/// A multi-statement case.
pub(super) fn multi(sql: &str, kinds: Vec<StatementKind>, rels: &[&'static str]) -> Case {
    Case {
        sql: sql.to_owned(),
        kinds,
        rels: rels.to_vec(),
        funcs: None,
    }
}

impl Case {
    /// Also check the set of functions.
    pub fn funcs(mut self, funcs: &[&'static str]) -> Case {
        self.funcs = Some(funcs.to_vec());
        self
    }
}

fn op_name(op: Operation) -> &'static str {
    match op {
        Operation::Select => "select",
        Operation::Insert => "insert",
        Operation::Update => "update",
        Operation::Delete => "delete",
        Operation::Truncate => "truncate",
        Operation::Ddl => "ddl",
        Operation::Dcl => "dcl",
        Operation::CopyTo => "copyto",
        Operation::CopyFrom => "copyfrom",
        Operation::Lock => "lock",
        Operation::Maintenance => "maintenance",
    }
}

pub(super) fn render_rel(r: &RelationAccess) -> String {
    match &r.schema {
        Some(s) => format!("{} {}.{}", op_name(r.op), s, r.name),
        None => format!("{} {}", op_name(r.op), r.name),
    }
}

pub(super) fn render_fn(f: &FunctionRef) -> String {
    match &f.schema {
        Some(s) => format!("{s}.{}", f.name),
        None => f.name.clone(),
    }
}

/// All relation accesses of an analysis, rendered.
pub(super) fn rels_of(a: &Analysis) -> BTreeSet<String> {
    a.statements
        .iter()
        .flat_map(|s| s.relations.iter().map(render_rel))
        .collect()
}

/// All functions of an analysis, rendered.
pub(super) fn funcs_of(a: &Analysis) -> BTreeSet<String> {
    a.statements
        .iter()
        .flat_map(|s| s.functions.iter().map(render_fn))
        .collect()
}

/// Analyse, panicking with the SQL on error.
pub(super) fn must(sql: &str) -> Analysis {
    analyze(sql).unwrap_or_else(|e| panic!("{}: {e}", short(sql)))
}

/// The start of a (possibly huge) SQL string, for messages.
pub(super) fn short(sql: &str) -> String {
    sql.chars().take(200).collect()
}

/// Run a table; report every failing case at once. Returns the number of cases run.
pub(super) fn run_table(cases: Vec<Case>) -> usize {
    let mut failures = Vec::new();
    let n = cases.len();
    for c in cases {
        let a = match analyze(&c.sql) {
            Ok(a) => a,
            Err(e) => {
                failures.push(format!("{}\n    error: {e}", short(&c.sql)));
                continue;
            }
        };
        let kinds: Vec<StatementKind> = a.statements.iter().map(|s| s.kind.clone()).collect();
        if kinds != c.kinds {
            failures.push(format!(
                "{}\n    kinds: got {kinds:?}, want {:?}",
                c.sql, c.kinds
            ));
        }
        let got = rels_of(&a);
        let want: BTreeSet<String> = c.rels.iter().map(|s| (*s).to_owned()).collect();
        if got != want {
            failures.push(format!(
                "{}\n    relations: got {got:?}, want {want:?}",
                c.sql
            ));
        }
        if let Some(funcs) = &c.funcs {
            let got = funcs_of(&a);
            let want: BTreeSet<String> = funcs.iter().map(|s| (*s).to_owned()).collect();
            if got != want {
                failures.push(format!(
                    "{}\n    functions: got {got:?}, want {want:?}",
                    c.sql
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    n
}
