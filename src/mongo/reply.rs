//! The replies tollgate writes itself: `{ok: 1}` answers and `{ok: 0, errmsg, code, codeName}`
//! errors with the server's own codes, so drivers classify tollgate's refusals as they would the
//! server's (Unauthorized 13, AuthenticationFailed 18, ...). One function renders a refusal.

use bson::{doc, Document};

use crate::refusal::Refusal;

/// Codes tollgate uses outside refusals.
pub mod code {
    pub const BAD_VALUE: (i32, &str) = (2, "BadValue");
    pub const FAILED_TO_PARSE: (i32, &str) = (9, "FailedToParse");
    pub const UNAUTHORIZED: (i32, &str) = (13, "Unauthorized");
    pub const PROTOCOL_ERROR: (i32, &str) = (17, "ProtocolError");
    pub const AUTHENTICATION_FAILED: (i32, &str) = (18, "AuthenticationFailed");
    pub const INVALID_BSON: (i32, &str) = (22, "InvalidBSON");
    pub const CURSOR_NOT_FOUND: (i32, &str) = (43, "CursorNotFound");
    pub const COMMAND_NOT_FOUND: (i32, &str) = (59, "CommandNotFound");
    pub const MECHANISM_UNAVAILABLE: (i32, &str) = (334, "MechanismUnavailable");
    pub const HOST_UNREACHABLE: (i32, &str) = (6, "HostUnreachable");
}

/// `{ok: 0, errmsg, code, codeName}`.
pub fn error(code: (i32, &str), errmsg: impl Into<String>) -> Document {
    doc! {
        "ok": 0.0,
        "errmsg": errmsg.into(),
        "code": code.0,
        "codeName": code.1,
    }
}

/// A refusal as the agent sees it: the same words as on every door, the class's code, and
/// the hint (retry time, what to do instead) when there is one.
pub fn refusal(r: &Refusal) -> Document {
    let mut d = error(r.class.mongo_code(), r.message());
    if let Some(hint) = r.hint() {
        d.insert("tollgateHint", hint);
    }
    d
}

/// `{ok: 1}` with the given fields first.
pub fn ok(mut fields: Document) -> Document {
    fields.insert("ok", 1.0);
    fields
}

/// Is this reply document an error (`ok` is 0 or missing)?
pub fn is_error(reply: &Document) -> bool {
    match reply.get("ok") {
        Some(bson::Bson::Double(v)) => *v == 0.0,
        Some(bson::Bson::Int32(v)) => *v == 0,
        Some(bson::Bson::Int64(v)) => *v == 0,
        Some(bson::Bson::Boolean(b)) => !b,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refusal::RefusalClass;

    #[test]
    fn refusals_carry_the_code_the_message_and_the_hint() {
        let r = Refusal::permission(
            "analyst: mongo shop.orders",
            "no rule allows find on shop.secrets",
        )
        .with_instead("read shop.orders instead");
        let d = refusal(&r);
        assert_eq!(d.get_f64("ok").ok(), Some(0.0));
        assert_eq!(d.get_i32("code").ok(), Some(13));
        assert_eq!(d.get_str("codeName").ok(), Some("Unauthorized"));
        assert_eq!(
            d.get_str("errmsg").ok(),
            Some(
                "tollgate: no rule allows find on shop.secrets (rule: analyst: mongo shop.orders)"
            )
        );
        assert_eq!(
            d.get_str("tollgateHint").ok(),
            Some("read shop.orders instead")
        );
        let rate = Refusal::new(RefusalClass::RateLimited, "r", "slow down");
        assert_eq!(refusal(&rate).get_i32("code").ok(), Some(462));
        assert!(is_error(&d));
        assert!(!is_error(&ok(doc! { "n": 1 })));
    }
}
