//! A refusal as PostgreSQL says it: the class's SQLSTATE, `tollgate: <reason> (rule: <rule>)`,
//! the agent and upstream in DETAIL, and when to retry or what to do instead in HINT. The only
//! place PostgreSQL refusals are built.

use super::backend::PgErrorFields;
use crate::refusal::{Refusal, RefusalClass};

/// A refused statement: the session goes on.
pub fn error(r: &Refusal, agent: &str, upstream: &str) -> PgErrorFields {
    let fields = PgErrorFields::error(r.class.sqlstate(), r.message())
        .with_detail(format!("agent \"{agent}\", upstream \"{upstream}\""));
    match (r.hint(), r.class) {
        (Some(h), _) => fields.with_hint(h),
        (None, RefusalClass::Permission) => fields
            .with_hint("the statement was refused by tollgate's policy; see `tollgate explain`"),
        (None, _) => fields,
    }
}

/// A refused connection: FATAL, the connection ends.
pub fn fatal(r: &Refusal) -> PgErrorFields {
    let fields = PgErrorFields::fatal(r.class.sqlstate(), r.message());
    match r.hint() {
        Some(h) => fields.with_hint(h),
        None => fields,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_rule_once() {
        let r = Refusal::permission(
            "builtin: protected-setting",
            "setting \"role\" may not be changed through the gateway",
        );
        let f = error(&r, "analyst", "shop");
        assert_eq!(f.code, "42501");
        assert_eq!(
            f.message,
            "tollgate: setting \"role\" may not be changed through the gateway (rule: builtin: protected-setting)"
        );
        assert_eq!(
            f.detail.as_deref(),
            Some("agent \"analyst\", upstream \"shop\"")
        );
        let rate = Refusal::new(RefusalClass::RateLimited, "analyst: limits", "over")
            .with_retry_after(std::time::Duration::from_millis(250));
        assert_eq!(
            error(&rate, "a", "b").hint.as_deref(),
            Some("retry after 250 ms")
        );
        assert_eq!(fatal(&rate).severity, crate::pg::backend::Severity::Fatal);
    }
}
