//! Which server process each call of `pg_cancel_backend` / `pg_terminate_backend` names: the
//! backend running the statement (`pg_backend_pid()`), a literal process id, a parameter, or
//! something tollgate cannot evaluate. The analyser records it; the policy decides
//! (`policy::backends`). Also the cheap word screen that sends passthrough statements mentioning
//! these functions to the analysis instead of the fast path.

use pg_query::protobuf::{a_const, node::Node as NodeEnum, AConst, FuncCall, Node, TypeCast};

/// What the process id argument of one `pg_cancel_backend`/`pg_terminate_backend` call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignalTarget {
    /// `pg_backend_pid()`: the backend running the statement itself.
    OwnBackend,
    /// A literal process id.
    Pid(i32),
    /// `$n`: the value is bound later (extended protocol Bind).
    Param(i32),
    /// A column, an expression, a subquery; or a mention of the function tollgate cannot follow
    /// (a DO or function body, a DDL reference, a comment): which process it names is unknown.
    Unknown,
}

/// The functions that signal a server process.
const SIGNAL_FUNCTIONS: [&str; 2] = ["pg_cancel_backend", "pg_terminate_backend"];

/// Words of the screen: the two functions, and `U&`, with which an identifier can spell them
/// without their letters.
pub(super) const SCREEN: [&str; 3] = ["pg_cancel_backend", "pg_terminate_backend", "u&"];

fn builtin(schema: Option<&str>) -> bool {
    matches!(schema, None | Some("pg_catalog"))
}

/// `pg_cancel_backend` / `pg_terminate_backend` (unqualified or in pg_catalog).
pub fn is_signal_function(schema: Option<&str>, name: &str) -> bool {
    builtin(schema) && SIGNAL_FUNCTIONS.contains(&name)
}

/// `pg_backend_pid` (unqualified or in pg_catalog).
pub fn is_backend_pid(schema: Option<&str>, name: &str) -> bool {
    builtin(schema) && name == "pg_backend_pid"
}

/// Whether a statement text may call a signal function (ASCII case-insensitive): statements
/// that do not are passed by the passthrough fast path without a parse.
pub fn may_signal(sql: &str) -> bool {
    static WORDS: super::screen::Screen = super::screen::Screen::new(&SCREEN);
    WORDS.matches(sql)
}

/// How many times `text` names a signal function (ASCII case-insensitive), calls or not.
fn mentions(text: &str) -> usize {
    let lower = text.to_ascii_lowercase();
    SIGNAL_FUNCTIONS
        .iter()
        .map(|f| lower.matches(f).count())
        .sum()
}

/// After the walk of statement `raw` (whose text passed [`may_signal`]): every time its parse
/// tree names a signal function (identifiers decoded, string constants and DO or function bodies
/// included) beyond the calls the walker recorded, it names one tollgate cannot follow.
pub(super) fn account(info: &mut super::StatementInfo, raw: &pg_query::protobuf::RawStmt) {
    // The tree's debug form holds every name and string of the statement exactly once, each
    // call's function name included; comments are not in it.
    let named = mentions(&format!("{:?}", raw.stmt));
    if named > info.signals.len() {
        info.signals.push(SignalTarget::Unknown);
    }
    if named > 0 {
        info.literal_sensitive = true;
    }
}

/// The target of a signal call with arguments `args`, and the `pg_backend_pid()` call that is
/// its argument, if it is one (that call names the target, it is not a read of the process id).
pub(super) fn target(args: &[Node]) -> (SignalTarget, Option<&FuncCall>) {
    // The process id: the named argument `pid`, or the first positional one.
    let named = args.iter().find_map(|a| match a.node.as_ref() {
        Some(NodeEnum::NamedArgExpr(n)) if n.name == "pid" => n.arg.as_deref(),
        _ => None,
    });
    let positional = args
        .first()
        .filter(|a| !matches!(a.node, Some(NodeEnum::NamedArgExpr(_))));
    match named.or(positional) {
        Some(arg) => classify(arg),
        None => (SignalTarget::Unknown, None),
    }
}

fn classify(arg: &Node) -> (SignalTarget, Option<&FuncCall>) {
    match arg.node.as_ref() {
        Some(NodeEnum::AConst(AConst {
            val: Some(v),
            isnull: false,
            ..
        })) => (literal(v), None),
        Some(NodeEnum::ParamRef(p)) => (SignalTarget::Param(p.number), None),
        // `'123'::int`, `pg_backend_pid()::int4`: the value is the argument's (a cast that would
        // change it, such as of a fraction, leaves a form refused below).
        Some(NodeEnum::TypeCast(c)) => match c.as_ref() {
            TypeCast {
                arg: Some(inner), ..
            } => classify(inner),
            _ => (SignalTarget::Unknown, None),
        },
        Some(NodeEnum::FuncCall(f)) if f.args.is_empty() && is_pid_call(f) => {
            (SignalTarget::OwnBackend, Some(f))
        }
        _ => (SignalTarget::Unknown, None),
    }
}

fn is_pid_call(f: &FuncCall) -> bool {
    match super::names::function_name(&f.funcname, "function call") {
        Ok((schema, name)) => is_backend_pid(schema.as_deref(), &name),
        Err(_) => false,
    }
}

/// A literal process id: an integer, or a string holding exactly one (as `int4in` reads it).
fn literal(v: &a_const::Val) -> SignalTarget {
    match v {
        a_const::Val::Ival(i) => SignalTarget::Pid(i.ival),
        a_const::Val::Sval(s) => match s.sval.trim().parse::<i32>() {
            Ok(n) => SignalTarget::Pid(n),
            Err(_) => SignalTarget::Unknown,
        },
        _ => SignalTarget::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::super::analyze;
    use super::*;

    fn signals(sql: &str) -> (Vec<SignalTarget>, bool) {
        let a = analyze(sql).unwrap();
        let s = &a.statements[0];
        (s.signals.clone(), s.reads_backend_pid)
    }

    #[test]
    fn targets_are_classified() {
        use SignalTarget::*;
        let cases: &[(&str, &[SignalTarget], bool)] = &[
            (
                "SELECT pg_terminate_backend(pg_backend_pid())",
                &[OwnBackend],
                false,
            ),
            (
                "SELECT pg_catalog.pg_cancel_backend(pg_catalog.pg_backend_pid())",
                &[OwnBackend],
                false,
            ),
            (
                "SELECT pg_cancel_backend(pg_backend_pid()::int4)",
                &[OwnBackend],
                false,
            ),
            ("SELECT pg_terminate_backend(123)", &[Pid(123)], false),
            ("SELECT pg_terminate_backend(-5)", &[Pid(-5)], false),
            ("SELECT pg_terminate_backend('77')", &[Pid(77)], false),
            (
                "SELECT pg_terminate_backend('77'::integer, 1000)",
                &[Pid(77)],
                false,
            ),
            ("SELECT pg_cancel_backend(pid => 9)", &[Pid(9)], false),
            (
                "SELECT pg_terminate_backend(timeout => 5, pid => 9)",
                &[Pid(9)],
                false,
            ),
            ("SELECT pg_terminate_backend($1)", &[Param(1)], false),
            ("SELECT PG_TERMINATE_BACKEND(12)", &[Pid(12)], false),
            (
                "SELECT U&\"pg\\005fterminate_backend\"(12)",
                &[Pid(12)],
                false,
            ),
            ("SELECT * FROM pg_terminate_backend(12)", &[Pid(12)], false),
            ("SELECT pg_terminate_backend(12.0)", &[Unknown], false),
            ("SELECT pg_terminate_backend('0x1F')", &[Unknown], false),
            ("SELECT pg_terminate_backend(NULL)", &[Unknown], false),
            (
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
                &[Unknown],
                false,
            ),
            (
                "SELECT pg_cancel_backend(pg_backend_pid() + 1)",
                &[Unknown],
                true,
            ),
            (
                "SELECT pg_cancel_backend((SELECT pg_backend_pid()))",
                &[Unknown],
                true,
            ),
            ("SELECT pg_backend_pid()", &[], true),
            (
                "SELECT pid FROM pg_stat_activity WHERE pid = pg_backend_pid()",
                &[],
                true,
            ),
            (
                "SELECT pg_terminate_backend(pg_backend_pid()), pg_backend_pid()",
                &[OwnBackend],
                true,
            ),
            ("SELECT 1", &[], false),
        ];
        for (sql, targets, reads) in cases {
            assert_eq!(signals(sql), (targets.to_vec(), *reads), "{sql}");
        }
    }

    #[test]
    fn mentions_that_are_not_calls_are_unknown() {
        for sql in [
            "DO $$ BEGIN PERFORM pg_terminate_backend(1); END $$",
            "CREATE FUNCTION f(int) RETURNS bool LANGUAGE sql AS 'SELECT pg_cancel_backend($1)'",
            "SELECT 'pg_cancel_backend'",
            "ALTER FUNCTION pg_terminate_backend(integer, bigint) OWNER TO x",
            "ALTER FUNCTION U&\"pg\\005fterminate_backend\"(integer, bigint) OWNER TO x",
            "GRANT EXECUTE ON FUNCTION pg_cancel_backend(int) TO x",
            "CREATE OPERATOR === (function = U&\"pg\\005fterminate_backend\", leftarg = int, rightarg = bigint)",
            "SELECT public.pg_terminate_backend(1)",
        ] {
            let (targets, _) = signals(sql);
            assert!(targets.contains(&SignalTarget::Unknown), "{sql}: {targets:?}");
        }
    }

    #[test]
    fn the_screen_sees_every_spelling() {
        for sql in [
            "select pg_terminate_backend(1)",
            "SELECT PG_CANCEL_BACKEND(1)",
            "SELECT U&\"pg\\005fcancel\\005fbackend\"(1)",
            "select u&\"x\"",
        ] {
            assert!(may_signal(sql), "{sql}");
        }
        assert!(!may_signal("SELECT pg_backend_pid()"));
        // A comment names nothing the server runs.
        assert_eq!(
            signals("SELECT 1 /* pg_terminate_backend(1) */"),
            (vec![], false)
        );
        assert!(!may_signal("SELECT * FROM orders"));
        assert_eq!(
            mentions("select PG_TERMINATE_BACKEND(1), pg_cancel_backend(2)"),
            2
        );
    }
}
