//! Whether a server connection reads SQL text as tollgate's analysis does. The analyser reads
//! string literals with `standard_conforming_strings = on` (a backslash is an ordinary
//! character); a connection that reports it off reads `'a\' || ' , (select ...) -- '` as one
//! string and a subquery where the analyser sees two strings, so what was checked is not what
//! runs. No agent may set it (SET, SET LOCAL, `set_config`, startup parameters and options:
//! `policy::settings`, `login_guard`), but a role or database default, the server's
//! configuration, or SQL the login guard cannot see (a passthrough agent's DO block building
//! `ALTER ROLE` from pieces, an administrator) can change it. So the connection layer checks it
//! whatever changed it: a server connection that reports it off, at login or later in a reply,
//! is never used for any agent (a passthrough agent's login guard reads the text too): the
//! session ends with a FATAL naming the reason, the connection is closed.
//!
//! The client encoding is handled where text is decoded (`PgSession::decode`): one the server
//! reports and tollgate cannot decode exactly admits pure ASCII only. Server encodings need no
//! check: PostgreSQL refuses the encodings in which an ASCII byte can end a character (SJIS,
//! BIG5, GBK, ...) as server encodings, and converts client text before its lexer reads it.

use crate::policy::AgentPolicy;
use crate::refusal::{Refusal, RefusalClass};

/// The setting whose value decides how backslashes in string literals are read.
pub const SETTING: &str = "standard_conforming_strings";

/// The rule named (shared with the settings agents may not change).
pub const RULE: &str = crate::policy::sql::login_guard::PROTECTED_SETTING_RULE;

/// Whether tollgate analyses the statements of an agent with `policy` on `upstream`: every
/// profile but passthrough (whose statements are let through unparsed on the fast path, and
/// whose DO blocks can run anything the role may).
pub fn analysed(policy: Option<&AgentPolicy>, upstream: &str) -> bool {
    !policy.is_some_and(|p| {
        p.with_shadow.is_none()
            && p.enforced
                .as_ref()
                .and_then(|m| m.get(upstream))
                .and_then(|r| r.sql())
                .is_some_and(|r| r.passthrough)
    })
}

/// `Err` when a server parameter (`name`, `value`, as ParameterStatus reports it) means the
/// server reads SQL text differently from the analysis.
pub fn check(name: &str, value: &str) -> Result<(), Refusal> {
    if name != SETTING || value.eq_ignore_ascii_case("on") {
        return Ok(());
    }
    Err(Refusal::new(
        RefusalClass::Unsupported,
        RULE,
        format!(
            "the server connection reports {SETTING} = {value}: it would read backslashes in string literals differently from tollgate's analysis, so it is not used and the session ends"
        ),
    )
    .with_instead(format!(
        "an administrator must set {SETTING} back to on for the upstream's login (ALTER ROLE ... RESET {SETTING}, or the database's or server's setting)"
    )))
}

/// [`check`] of every parameter a connection reported at login.
pub fn check_all(params: &[(String, String)]) -> Result<(), Refusal> {
    params.iter().try_for_each(|(n, v)| check(n, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_standard_conforming_strings_on_reads_as_the_analyser_does() {
        assert!(check(SETTING, "on").is_ok());
        assert!(check(SETTING, "ON").is_ok());
        assert!(
            check("client_encoding", "SJIS").is_ok(),
            "handled at decode"
        );
        let r = check(SETTING, "off").unwrap_err();
        assert_eq!(r.rule, "builtin: protected-setting");
        assert!(r.reason.contains("standard_conforming_strings = off"));
        let params = vec![
            ("application_name".to_string(), "x".to_string()),
            (SETTING.to_string(), "off".to_string()),
        ];
        assert!(check_all(&params).is_err());
        assert!(check_all(&params[..1]).is_ok());
    }
}
