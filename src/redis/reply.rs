//! Replies tollgate writes itself (the only place RESP errors are built), and the one function
//! that turns a refusal into the agent's error line.

use bytes::Bytes;

use crate::refusal::Refusal;

pub const OK: &[u8] = b"+OK\r\n";
pub const QUEUED_ABORT: &[u8] = b"-EXECABORT Transaction discarded because of previous errors.\r\n";
/// EXEC of a transaction queued under a policy a reload has replaced since MULTI: its commands
/// were judged under the old one (a revoked key or a new mask would not hold), so none runs.
pub const POLICY_CHANGED_ABORT: &[u8] = b"-EXECABORT Transaction discarded: the policy changed while it was queued (tollgate); run it again\r\n";
pub const WRONGPASS: &[u8] = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n";
pub const NOAUTH: &[u8] = b"-NOAUTH Authentication required.\r\n";
pub const NOAUTH_HELLO: &[u8] = b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n";
pub const NOPROTO: &[u8] = b"-NOPROTO unsupported protocol version\r\n";

/// `-CODE message\r\n`, with line breaks in the message replaced (they would end the frame).
pub fn error(code: &str, message: &str) -> Bytes {
    let clean: String = message
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    Bytes::from(format!("-{code} {clean}\r\n"))
}

/// The agent's error for a refused command: names the rule and, when known, what the agent may
/// do instead (the same hint PostgreSQL puts in HINT); the session stays usable.
pub fn refusal(r: &Refusal) -> Bytes {
    error(r.class.resp_code(), &r.line())
}

/// PING's reply before authentication: `+PONG`, or the argument echoed as a bulk string.
pub fn pong(arg: Option<&[u8]>) -> Bytes {
    match arg {
        None => Bytes::from_static(b"+PONG\r\n"),
        Some(a) => {
            let mut v = format!("${}\r\n", a.len()).into_bytes();
            v.extend_from_slice(a);
            v.extend_from_slice(b"\r\n");
            Bytes::from(v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_one_line() {
        assert_eq!(&error("ERR", "a\r\nb")[..], b"-ERR a  b\r\n");
        let d = Refusal::permission("analyst: read_keys", "no");
        assert_eq!(
            &refusal(&d)[..],
            b"-NOPERM tollgate: no (rule: analyst: read_keys)\r\n"
        );
    }
}
