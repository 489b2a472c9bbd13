//! One statement on a pooled server connection, its result collected: how the MCP `query` tool
//! reaches PostgreSQL without an upstream login per call.
//!
//! The extended protocol (Parse, Bind, Describe, Execute, Sync; text results) runs exactly one
//! statement: the server itself rejects a string of several. Execute asks for at most
//! `max_rows + 1` rows (the portal then stops by itself); past the byte cap or the statement
//! timeout tollgate sends its own CancelRequest and reads the connection back to ReadyForQuery.
//! The connection goes back to its pool clean, reset (`DISCARD ALL`, when the statement may have
//! left session state) or closed (a transaction left open, a cancel that could not be delivered,
//! a connection that broke or whose statement was abandoned). The policy decision, masking and
//! audit records are the caller's (the session core's); this module only runs what it is given.

mod reading;
pub mod values;

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

use super::backend::{self as msg};
use super::cancel::{send_cancel, CancelTarget};
use super::pool::{AgentShare, CheckoutError, Pool, Server, SettingsKey};
use reading::Reading;

pub use reading::ERROR_KEEP;

/// The most parameters one statement can carry: Bind counts them in a signed 16-bit integer.
pub const MAX_PARAMS: usize = i16::MAX as usize;

/// How much of a result is collected, and for how long the statement may run.
#[derive(Debug, Clone)]
pub struct Caps {
    /// Rows kept; one more row means `truncated` (the server stops the portal there).
    pub max_rows: Option<u64>,
    /// Bytes of row data kept (the values as the server sent them).
    pub max_bytes: u64,
    /// Cancelled upstream after this long.
    pub timeout: Option<Duration>,
}

/// A result column: its name and type as RowDescription gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
}

/// Why a result stops short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// More rows than `max_rows`.
    Rows,
    /// More bytes than `max_bytes`.
    Bytes,
}

/// A statement's result as collected.
#[derive(Debug, Clone, Default)]
pub struct Collected {
    pub columns: Vec<Column>,
    /// Text values (`None` is SQL NULL).
    pub rows: Vec<Vec<Option<String>>>,
    /// The server's CommandComplete tag (`SELECT 5`, `INSERT 0 1`); for a truncated result the
    /// tag of what was kept (`SELECT <rows kept>`).
    pub command_tag: String,
    /// Rows the statement affected or returned, as the tag says (or rows kept when truncated).
    pub affected: Option<u64>,
    pub truncated: Option<Cut>,
    /// Bytes of row data kept.
    pub bytes: u64,
}

/// An error the server reported for the statement (its own words: the agent's statement).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Checkout(#[from] CheckoutError),
    #[error("{}", .0.message)]
    Server(ServerError),
    #[error("canceling statement due to statement timeout of {} ms", .0.as_millis())]
    TimedOut(Duration),
    #[error("connection to the upstream lost: {0}")]
    Lost(String),
    #[error("unexpected message from the upstream: {0}")]
    Protocol(String),
    /// The statement cannot be sent as given (nothing was sent).
    #[error("{0}")]
    Invalid(String),
}

/// What to run: the text (already checked and, if masked, rewritten) and its parameters, sent
/// as text (`None`: NULL) for `$1`, `$2`, ...
#[derive(Debug, Clone)]
pub struct Statement<'a> {
    pub sql: &'a str,
    pub params: &'a [Option<String>],
    /// The policy says the statement may leave session state (SET, PREPARE, LISTEN, temporary
    /// tables, unknown functions): the connection is reset before anyone else gets it.
    pub leaves_state: bool,
}

/// Runs `stmt` on a connection of `pool` (settings `key`) and collects its result.
/// The connection counts against `share` (the agent's share of a transaction pool) while held.
pub async fn run(
    pool: &Arc<Pool>,
    key: &Arc<SettingsKey>,
    share: Option<&AgentShare>,
    stmt: &Statement<'_>,
    caps: &Caps,
) -> Result<Collected, RunError> {
    check(stmt)?;
    // MCP calls hold a connection for one statement, bounded by the statement timeout.
    let server = pool.checkout(key, share).await?;
    let cancel = CancelTarget {
        addr: server.info.addr,
        pid: server.info.pid,
        secret: server.info.secret,
        tls: pool.target().tls.clone(),
    };
    let mut lent = Lent {
        pool: pool.clone(),
        server: Some(server),
        running: Some(cancel),
    };
    let server = lent.server.as_mut().expect("just checked out");
    // The Parse below replaces the unnamed statement on this connection: a wire session whose
    // unnamed statement was there must have it put back before its next Bind.
    *server.info.unnamed_owner.lock().expect("unnamed statement") = None;
    let request = encode(stmt, caps.max_rows);
    if let Err(e) = server.writer.write_all(&request).await {
        return Err(RunError::Lost(e.to_string()));
    }
    let mut reading = Reading::new(caps);
    let outcome = reading.read(&mut lent).await;
    // Back to the pool: usable only if the server is idle again and nothing of ours may still
    // hit it; reset unless the statement is known to leave nothing behind.
    let usable = outcome.idle && reading.cancel_delivered;
    lent.running = None;
    if let Some(mut server) = lent.server.take() {
        // An idle connection does not keep what a large result grew.
        server.reader.shrink();
        pool.checkin(server, !stmt.leaves_state, usable);
    }
    match (reading.error, outcome.lost) {
        (Some(e), _) => Err(e),
        (None, Some(lost)) => Err(RunError::Lost(lost)),
        (None, None) => Ok(reading.collected),
    }
}

/// A connection out of its pool: closed (its statement cancelled first if it was still running)
/// if the call is dropped before it went back, so an abandoned call never leaves a statement
/// running or a connection unaccounted.
struct Lent {
    pool: Arc<Pool>,
    server: Option<Server>,
    running: Option<CancelTarget>,
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(target) = self.running.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(send_cancel(target));
            }
        }
        if let Some(server) = self.server.take() {
            self.pool.checkin(server, false, false);
        }
    }
}

/// What the wire cannot carry is refused before anything is sent: more parameters than Bind can
/// count (their number would wrap), a parameter longer than its 32-bit length, or a NUL in the
/// text (Parse ends the statement there: the server would run less than what was judged).
fn check(stmt: &Statement<'_>) -> Result<(), RunError> {
    if stmt.params.len() > MAX_PARAMS {
        return Err(RunError::Invalid(format!(
            "{} parameters: a statement takes at most {MAX_PARAMS}",
            stmt.params.len()
        )));
    }
    if let Some(i) = stmt
        .params
        .iter()
        .position(|p| p.as_ref().is_some_and(|v| i32::try_from(v.len()).is_err()))
    {
        return Err(RunError::Invalid(format!(
            "parameter ${} is longer than 2 GiB",
            i + 1
        )));
    }
    if stmt.sql.contains('\0') {
        return Err(RunError::Invalid(
            "the statement contains a NUL character".into(),
        ));
    }
    Ok(())
}

/// Parse (unnamed, parameter types left to the server), Bind (text parameters, text results),
/// Describe the portal, Execute (at most `max_rows + 1` rows), Sync. `check` passed.
fn encode(stmt: &Statement<'_>, max_rows: Option<u64>) -> Bytes {
    let mut out = BytesMut::with_capacity(stmt.sql.len() + 64);
    let mut body = BytesMut::new();
    body.put_u8(0); // unnamed statement
    body.put_slice(stmt.sql.as_bytes());
    body.put_u8(0);
    body.put_i16(0);
    out.extend_from_slice(&msg::raw_message(b'P', &body));
    body.clear();
    body.put_u8(0); // unnamed portal
    body.put_u8(0); // unnamed statement
    body.put_i16(0); // every parameter in text
    body.put_i16(stmt.params.len() as i16);
    for p in stmt.params {
        match p {
            Some(v) => {
                body.put_i32(v.len() as i32);
                body.put_slice(v.as_bytes());
            }
            None => body.put_i32(-1),
        }
    }
    body.put_i16(0); // every result column in text
    out.extend_from_slice(&msg::raw_message(b'B', &body));
    out.extend_from_slice(&msg::raw_message(b'D', b"P\0"));
    let limit = max_rows
        .map(|m| i32::try_from(m.saturating_add(1)).unwrap_or(i32::MAX))
        .unwrap_or(0);
    body.clear();
    body.put_u8(0);
    body.put_i32(limit);
    out.extend_from_slice(&msg::raw_message(b'E', &body));
    out.extend_from_slice(&msg::raw_message(b'S', &[]));
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let len = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            out.push((rest[0], rest[5..1 + len].to_vec()));
            rest = &rest[1 + len..];
        }
        out
    }

    #[test]
    fn one_statement_in_the_extended_protocol_with_a_row_cap() {
        let params = [Some("7".to_string()), None];
        let stmt = Statement {
            sql: "SELECT $1, $2",
            params: &params,
            leaves_state: false,
        };
        let f = frames(&encode(&stmt, Some(1000)));
        let tags: Vec<u8> = f.iter().map(|(t, _)| *t).collect();
        assert_eq!(tags, b"PBDES".to_vec());
        assert_eq!(f[0].1, b"\0SELECT $1, $2\0\0\0".to_vec());
        // portal, statement, 0 format codes, 2 params: "7" and NULL, 0 result format codes
        let mut bind = vec![0, 0, 0, 0, 0, 2, 0, 0, 0, 1, b'7', 0xff, 0xff, 0xff, 0xff];
        bind.extend_from_slice(&[0, 0]);
        assert_eq!(f[1].1, bind);
        assert_eq!(f[2].1, b"P\0".to_vec());
        assert_eq!(f[3].1, vec![0, 0, 0, 0x03, 0xe9], "max_rows + 1 = 1001");
        let unlimited = frames(&encode(&stmt, None));
        assert_eq!(unlimited[3].1, vec![0, 0, 0, 0, 0]);
    }

    #[test]
    fn what_the_wire_cannot_carry_is_refused_before_sending() {
        let many = vec![Some("a".to_string()); MAX_PARAMS + 1];
        let stmt = Statement {
            sql: "SELECT $1",
            params: &many,
            leaves_state: false,
        };
        match check(&stmt) {
            Err(RunError::Invalid(m)) => assert!(m.contains("at most 32767"), "{m}"),
            other => panic!("{other:?}"),
        }
        let most = vec![None; MAX_PARAMS];
        let stmt = Statement {
            params: &most,
            ..stmt
        };
        assert!(check(&stmt).is_ok());
        let f = frames(&encode(&stmt, None));
        assert_eq!(&f[1].1[4..6], &32767i16.to_be_bytes(), "counted exactly");
        let stmt = Statement {
            sql: "SELECT 1\0; DROP TABLE orders",
            params: &[],
            leaves_state: false,
        };
        assert!(matches!(check(&stmt), Err(RunError::Invalid(_))));
    }
}
