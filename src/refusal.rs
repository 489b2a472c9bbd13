//! What tollgate says when it refuses: one value for every door, whether the policy, a limit or
//! the session core refused. Each protocol renders it in one place (PostgreSQL: SQLSTATE,
//! message, DETAIL and HINT in `pg::refusal`; Redis: one `-NOPERM`/`-ERR` line in
//! `redis::reply`), with the same words everywhere: `tollgate: <reason> (rule: <rule>)`, and a
//! hint an agent can act on (when to retry, what it may use instead): PostgreSQL's HINT field,
//! `; hint: ...` at the end of a Redis error line, the same text on both.

use std::time::Duration;

/// Why, in protocol-neutral terms; each class has one code per protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalClass {
    /// The policy does not allow it.
    Permission,
    /// Not a valid request (a syntax error, an unknown command, a wrong number of arguments).
    Syntax,
    /// Valid, but not something tollgate can let through safely (fails closed).
    Unsupported,
    /// Larger than a configured limit allows.
    TooLarge,
    /// Text that is not valid in the session's encoding.
    Encoding,
    /// Over the agent's statement rate.
    RateLimited,
    /// Over a connection cap (per agent or in total).
    TooManyConnections,
    /// This connection must be encrypted.
    TlsRequired,
    /// The audit log cannot be written: nothing runs unrecorded.
    AuditUnavailable,
    /// A cursor the agent names is none of its own (never opened by its sessions, another
    /// agent's, or closed): answered as the server answers a cursor it does not have, so a
    /// driver handles it as it would the server's, and another agent's cursor is not told
    /// apart from one that does not exist.
    CursorNotFound,
}

impl RefusalClass {
    /// The PostgreSQL SQLSTATE of this class.
    pub fn sqlstate(self) -> &'static str {
        match self {
            RefusalClass::Permission => "42501",
            RefusalClass::Syntax => "42601",
            RefusalClass::Unsupported => "0A000",
            RefusalClass::TooLarge => "54000",
            RefusalClass::Encoding => "22021",
            RefusalClass::RateLimited => "53400",
            RefusalClass::TooManyConnections => "53300",
            RefusalClass::TlsRequired => "28000",
            RefusalClass::AuditUnavailable => "58030",
            RefusalClass::CursorNotFound => "34000",
        }
    }

    /// The MongoDB error `code` and `codeName` of this class (codes from the server's own
    /// table, so drivers classify them as they would the server's).
    pub fn mongo_code(self) -> (i32, &'static str) {
        match self {
            RefusalClass::Permission | RefusalClass::TlsRequired => (13, "Unauthorized"),
            RefusalClass::Syntax => (9, "FailedToParse"),
            RefusalClass::Unsupported => (238, "NotImplemented"),
            RefusalClass::TooLarge => (10334, "BSONObjectTooLarge"),
            RefusalClass::Encoding => (22, "InvalidBSON"),
            RefusalClass::RateLimited | RefusalClass::TooManyConnections => {
                (462, "IngressRequestRateLimitExceeded")
            }
            RefusalClass::AuditUnavailable => (96, "OperationFailed"),
            RefusalClass::CursorNotFound => (43, "CursorNotFound"),
        }
    }

    /// The RESP error code of this class (the word after `-`).
    pub fn resp_code(self) -> &'static str {
        match self {
            RefusalClass::Permission | RefusalClass::TlsRequired => "NOPERM",
            _ => "ERR",
        }
    }
}

/// A refusal: the class, the rule that decided (named to the agent), the reason, and where it
/// applies when to retry and what the agent may do instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub class: RefusalClass,
    /// `FILE: table public.orders`, `default-deny`, `builtin: dangerous-command`,
    /// `tollgate.toml: limits.max_client_connections`, ...
    pub rule: String,
    pub reason: String,
    /// When one more statement would be accepted (rate limits).
    pub retry_after: Option<Duration>,
    /// What the agent may do instead, in a sentence (bounded by whoever fills it in).
    pub instead: Option<String>,
}

impl Refusal {
    pub fn new(class: RefusalClass, rule: impl Into<String>, reason: impl Into<String>) -> Self {
        Refusal {
            class,
            rule: rule.into(),
            reason: reason.into(),
            retry_after: None,
            instead: None,
        }
    }

    /// Not allowed by the policy.
    pub fn permission(rule: impl Into<String>, reason: impl Into<String>) -> Self {
        Refusal::new(RefusalClass::Permission, rule, reason)
    }

    /// Not a valid request (unknown command, wrong arity, syntax).
    pub fn syntax(rule: impl Into<String>, reason: impl Into<String>) -> Self {
        Refusal::new(RefusalClass::Syntax, rule, reason)
    }

    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    pub fn with_instead(mut self, instead: impl Into<String>) -> Self {
        self.instead = Some(instead.into());
        self
    }

    /// The message every protocol shows: `tollgate: <reason> (rule: <rule>)`.
    pub fn message(&self) -> String {
        format!("tollgate: {} (rule: {})", self.reason, self.rule)
    }

    /// The message with the hint, for protocols whose errors are one line (Redis):
    /// `tollgate: <reason> (rule: <rule>); hint: <hint>`.
    pub fn line(&self) -> String {
        match self.hint() {
            Some(h) => format!("{}; hint: {h}", self.message()),
            None => self.message(),
        }
    }

    /// A hint for the agent: when to retry and what it may do instead, if known.
    pub fn hint(&self) -> Option<String> {
        let retry = self
            .retry_after
            .map(|d| format!("retry after {} ms", d.as_millis().max(1)));
        match (retry, &self.instead) {
            (Some(r), Some(i)) => Some(format!("{r}; {i}")),
            (Some(r), None) => Some(r),
            (None, Some(i)) => Some(i.clone()),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_words_on_every_protocol() {
        let r = Refusal::permission("default-deny", "no rule allows select on public.secrets");
        assert_eq!(
            r.message(),
            "tollgate: no rule allows select on public.secrets (rule: default-deny)"
        );
        assert_eq!(r.class.sqlstate(), "42501");
        assert_eq!(r.class.resp_code(), "NOPERM");
        assert_eq!(r.class.mongo_code(), (13, "Unauthorized"));
        assert_eq!(r.hint(), None);
        let rate = Refusal::new(
            RefusalClass::RateLimited,
            "analyst: limits",
            "over the rate",
        )
        .with_retry_after(Duration::from_micros(10));
        assert_eq!(rate.hint().as_deref(), Some("retry after 1 ms"));
        assert_eq!(rate.class.resp_code(), "ERR");
        assert_eq!(
            rate.line(),
            "tollgate: over the rate (rule: analyst: limits); hint: retry after 1 ms"
        );
        let instead = r
            .clone()
            .with_instead("allowed on \"shop\": public.orders (select)");
        assert_eq!(
            instead.line(),
            format!("{}; hint: {}", instead.message(), instead.hint().unwrap())
        );
    }
}
