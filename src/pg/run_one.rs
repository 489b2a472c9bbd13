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

pub mod values;

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

use super::backend::{self as msg};
use super::cancel::{send_cancel, CancelTarget};
use super::frame::Frame;
use super::pool::{CheckoutError, Pool, Server, SettingsKey};

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
pub async fn run(
    pool: &Arc<Pool>,
    key: &Arc<SettingsKey>,
    stmt: &Statement<'_>,
    caps: &Caps,
) -> Result<Collected, RunError> {
    // MCP calls hold a connection for one statement, bounded by the statement timeout.
    let server = pool.checkout(key, None).await?;
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
    if let Some(server) = lent.server.take() {
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

/// Parse (unnamed, parameter types left to the server), Bind (text parameters, text results),
/// Describe the portal, Execute (at most `max_rows + 1` rows), Sync.
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

/// How reading the replies ended.
struct Ended {
    /// ReadyForQuery `I`: the server is idle outside a transaction.
    idle: bool,
    /// The connection broke or went silent.
    lost: Option<String>,
}

/// The reply side of one statement: what was collected, and what tollgate did about it.
struct Reading<'c> {
    caps: &'c Caps,
    collected: Collected,
    error: Option<RunError>,
    /// tollgate cancelled the statement (bytes or time); its 57014 is then tollgate's to explain.
    cancelled: Option<Cut>,
    timed_out: bool,
    /// False when a cancel was sent but could not be confirmed delivered.
    cancel_delivered: bool,
}

/// After a cancel, how long the server may take to answer before the connection is given up.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

impl<'c> Reading<'c> {
    fn new(caps: &'c Caps) -> Reading<'c> {
        Reading {
            caps,
            collected: Collected::default(),
            error: None,
            cancelled: None,
            timed_out: false,
            cancel_delivered: true,
        }
    }

    async fn read(&mut self, lent: &mut Lent) -> Ended {
        let started = tokio::time::Instant::now();
        let mut deadline = self.caps.timeout.map(|t| started + t);
        loop {
            let server = lent.server.as_mut().expect("lent until checked in");
            let next = match deadline {
                Some(d) => match tokio::time::timeout_at(d, server.reader.next()).await {
                    Ok(r) => r,
                    Err(_) if self.timed_out => {
                        return Ended {
                            idle: false,
                            lost: Some("the upstream did not answer tollgate's cancel".into()),
                        };
                    }
                    Err(_) => {
                        self.timed_out = true;
                        self.cancel(lent).await;
                        deadline = Some(tokio::time::Instant::now() + CANCEL_GRACE);
                        continue;
                    }
                },
                None => server.reader.next().await,
            };
            let frame = match next {
                Ok(Some(f)) => f,
                Ok(None) => {
                    return Ended {
                        idle: false,
                        lost: Some("the upstream closed the connection".into()),
                    }
                }
                Err(e) => {
                    return Ended {
                        idle: false,
                        lost: Some(e.to_string()),
                    }
                }
            };
            match self.on_frame(&frame) {
                Step::Continue => {}
                Step::Cancel => {
                    self.cancel(lent).await;
                }
                Step::CopyIn => {
                    // Nothing to send: end the COPY; the server answers with an error. It
                    // ignored the Sync sent with the statement (copy-in mode), so one more.
                    let mut fail = BytesMut::from(
                        &msg::raw_message(
                            b'f',
                            b"COPY FROM STDIN is not available through this tool\0",
                        )[..],
                    );
                    fail.extend_from_slice(&msg::raw_message(b'S', &[]));
                    let server = lent.server.as_mut().expect("lent");
                    if let Err(e) = server.writer.write_all(&fail).await {
                        return Ended {
                            idle: false,
                            lost: Some(e.to_string()),
                        };
                    }
                }
                Step::Done(status) => {
                    return Ended {
                        idle: status == b'I',
                        lost: None,
                    }
                }
            }
        }
    }

    /// tollgate's own CancelRequest, awaited: by the time it returns the server has the signal,
    /// so it cannot hit whatever runs next on this connection.
    async fn cancel(&mut self, lent: &mut Lent) {
        if let Some(target) = lent.running.take() {
            self.cancel_delivered = send_cancel(target).await;
        }
    }

    fn on_frame(&mut self, frame: &Frame) -> Step {
        let body = frame.body();
        match frame.tag {
            msg::PARSE_COMPLETE | msg::BIND_COMPLETE | msg::NO_DATA => {}
            msg::ROW_DESCRIPTION => match values::columns(body) {
                Some(cols) => self.collected.columns = cols,
                None => return self.protocol("malformed RowDescription"),
            },
            msg::DATA_ROW => return self.on_row(body),
            b'd' => {
                // COPY ... TO STDOUT: each data message is one row of one text column.
                if self.collected.columns.is_empty() {
                    self.collected.columns.push(Column {
                        name: "copy".into(),
                        type_oid: values::TEXT_OID,
                    });
                }
                let line = String::from_utf8_lossy(body)
                    .trim_end_matches('\n')
                    .to_string();
                return self.keep(vec![Some(line)], body.len() as u64);
            }
            msg::COPY_OUT_RESPONSE | b'c' => {}
            msg::COPY_IN_RESPONSE => return Step::CopyIn,
            msg::COPY_BOTH_RESPONSE => return self.protocol("replication streams are not served"),
            msg::COMMAND_COMPLETE => {
                let tag = body.split(|&b| b == 0).next().unwrap_or_default();
                self.collected.command_tag = String::from_utf8_lossy(tag).into_owned();
                self.collected.affected = msg::command_rows(body);
            }
            msg::PORTAL_SUSPENDED => {
                // The row cap stopped the portal: more rows were there.
                self.collected.truncated.get_or_insert(Cut::Rows);
            }
            msg::EMPTY_QUERY => self.collected.command_tag = String::new(),
            msg::ERROR_RESPONSE => self.on_error(body),
            msg::READY_FOR_QUERY => {
                if self.collected.truncated.is_some() {
                    let n = self.collected.rows.len() as u64;
                    self.collected.command_tag = format!("SELECT {n}");
                    self.collected.affected = Some(n);
                }
                return Step::Done(body.first().copied().unwrap_or(b'I'));
            }
            // Notices, parameter changes and notifications are not part of the result.
            _ => {}
        }
        Step::Continue
    }

    fn on_row(&mut self, body: &[u8]) -> Step {
        match values::data_row(body) {
            Some(row) => self.keep(row, body.len() as u64),
            None => self.protocol("malformed DataRow"),
        }
    }

    /// Keeps a row unless a cap was reached; the first row past the byte cap cancels the rest.
    fn keep(&mut self, row: Vec<Option<String>>, size: u64) -> Step {
        if self.collected.truncated.is_some() {
            return Step::Continue;
        }
        if let Some(max) = self.caps.max_rows {
            if self.collected.rows.len() as u64 >= max {
                self.collected.truncated = Some(Cut::Rows);
                return Step::Continue; // the portal stops at max + 1 by itself
            }
        }
        if self.collected.bytes + size > self.caps.max_bytes {
            self.collected.truncated = Some(Cut::Bytes);
            self.cancelled = Some(Cut::Bytes);
            return Step::Cancel;
        }
        self.collected.bytes += size;
        self.collected.rows.push(row);
        Step::Continue
    }

    fn on_error(&mut self, body: &[u8]) {
        let field = |c| msg::error_field(body, c);
        let code = field(b'C').unwrap_or_default();
        if code == "57014" && (self.timed_out || self.cancelled.is_some()) {
            if self.timed_out && self.cancelled.is_none() {
                let t = self.caps.timeout.unwrap_or_default();
                self.error = Some(RunError::TimedOut(t));
            }
            // A byte-cap cancel: the rows kept are the result.
            return;
        }
        if self.error.is_none() {
            self.error = Some(RunError::Server(ServerError {
                code,
                message: field(b'M').unwrap_or_default(),
                detail: field(b'D'),
                hint: field(b'H'),
            }));
        }
    }

    fn protocol(&mut self, what: &str) -> Step {
        if self.error.is_none() {
            self.error = Some(RunError::Protocol(what.to_string()));
        }
        Step::Continue
    }
}

enum Step {
    Continue,
    Cancel,
    CopyIn,
    Done(u8),
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

    fn frame(tag: u8, body: &[u8]) -> Frame {
        Frame {
            tag,
            raw: msg::raw_message(tag, body),
        }
    }

    fn data_row(values: &[&str]) -> Frame {
        let mut b = BytesMut::new();
        b.put_i16(values.len() as i16);
        for v in values {
            b.put_i32(v.len() as i32);
            b.put_slice(v.as_bytes());
        }
        frame(b'D', &b)
    }

    #[test]
    fn caps_cut_rows_and_bytes_and_the_cancel_is_ours_to_explain() {
        let caps = Caps {
            max_rows: Some(2),
            max_bytes: 1 << 20,
            timeout: None,
        };
        let mut r = Reading::new(&caps);
        for _ in 0..3 {
            assert!(matches!(r.on_frame(&data_row(&["a"])), Step::Continue));
        }
        r.on_frame(&frame(b's', b""));
        assert!(matches!(r.on_frame(&frame(b'Z', b"I")), Step::Done(b'I')));
        assert_eq!(r.collected.rows.len(), 2);
        assert_eq!(r.collected.truncated, Some(Cut::Rows));
        assert_eq!(r.collected.command_tag, "SELECT 2");

        let caps = Caps {
            max_rows: None,
            max_bytes: 20,
            timeout: None,
        };
        let mut r = Reading::new(&caps);
        assert!(matches!(
            r.on_frame(&data_row(&["0123456789"])),
            Step::Continue
        ));
        assert!(matches!(
            r.on_frame(&data_row(&["0123456789"])),
            Step::Cancel
        ));
        assert!(matches!(r.on_frame(&data_row(&["x"])), Step::Continue));
        let mut e = BytesMut::new();
        for (c, v) in [
            (b'S', "ERROR"),
            (b'C', "57014"),
            (b'M', "canceling statement"),
        ] {
            e.put_u8(c);
            e.put_slice(v.as_bytes());
            e.put_u8(0);
        }
        e.put_u8(0);
        r.on_frame(&frame(b'E', &e));
        assert!(r.error.is_none(), "our own cancel is not the agent's error");
        assert_eq!(r.collected.rows.len(), 1);
        assert_eq!(r.collected.bytes, 16);
        assert_eq!(r.collected.truncated, Some(Cut::Bytes));
    }

    #[test]
    fn server_errors_are_kept_with_their_fields() {
        let caps = Caps {
            max_rows: None,
            max_bytes: 100,
            timeout: None,
        };
        let mut r = Reading::new(&caps);
        let mut e = BytesMut::new();
        for (c, v) in [
            (b'S', "ERROR"),
            (b'C', "22012"),
            (b'M', "division by zero"),
            (b'H', "h"),
        ] {
            e.put_u8(c);
            e.put_slice(v.as_bytes());
            e.put_u8(0);
        }
        e.put_u8(0);
        r.on_frame(&frame(b'E', &e));
        match &r.error {
            Some(RunError::Server(s)) => {
                assert_eq!(s.code, "22012");
                assert_eq!(s.message, "division by zero");
                assert_eq!(s.hint.as_deref(), Some("h"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(r.on_frame(&frame(b'D', b"\0")), Step::Continue));
        assert!(
            matches!(r.error, Some(RunError::Server(_))),
            "the first error stays"
        );
    }
}
