//! The reply side of one statement: messages read up to ReadyForQuery, rows kept within the
//! caps, and tollgate's own cancel when a cap or the statement timeout is reached.
//!
//! Every message is judged by its header before it is read: a row that would pass what
//! `max_result_bytes` still allows (or any row once the result is cut), a notice nobody reads,
//! is dropped piece by piece as it arrives and never held, however large the server made it;
//! an error longer than [`ERROR_KEEP`] is cut field by field as it arrives. So one statement holds at most its
//! byte cap of rows in memory, whatever the upstream sends.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::{values, Caps, Collected, Column, Cut, Lent, RunError, ServerError};
use crate::pg::backend::{self as msg};
use crate::pg::frame::{Frame, FrameError, CHUNK};

/// After a cancel, how long the server may take to answer before the connection is given up.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// An error message longer than this is cut field by field as it arrives (each field keeps its
/// first `cut_fields::KEEP` bytes).
pub const ERROR_KEEP: usize = 64 * 1024;

/// Messages the result does not use (notices, notifications, parameter changes) longer than this
/// are dropped without being read whole.
const IGNORED_KEEP: usize = 64 * 1024;

/// Any other message (RowDescription, CommandComplete, ...) is read whole up to this size; the
/// server never sends one larger (1,664 columns of 63-byte names are ~140 KB), so a larger one
/// means the connection cannot be trusted.
const STRUCTURAL_MAX: usize = 1 << 20;

/// How reading the replies ended.
pub(super) struct Ended {
    /// ReadyForQuery `I`: the server is idle outside a transaction.
    pub idle: bool,
    /// The connection broke or went silent.
    pub lost: Option<String>,
}

impl Ended {
    fn lost(why: impl Into<String>) -> Ended {
        Ended {
            idle: false,
            lost: Some(why.into()),
        }
    }
}

/// What to do with the next message, judged by its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Read it whole and handle it.
    Read,
    /// Drop it as it arrives; first cancel the statement if `cancel`.
    Skip { cancel: bool },
    /// An error message too long to hold: keep its beginning, drop the rest.
    ErrorCut,
    /// Larger than any such message can be: give the connection up.
    Refuse,
}

/// What a row (DataRow, or a COPY line) of `size` bytes will be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Keep,
    /// Past a cap the server stops at by itself (the row cap), or after the result was cut.
    Drop,
    /// Past the byte cap: the result is cut here and the statement cancelled.
    Cut,
}

/// One read from the connection, raced against the deadline.
#[derive(Debug, Clone, Copy)]
enum Op {
    Header,
    Frame,
    Chunk(usize),
}

enum Got {
    Header(Option<(u8, usize)>),
    Frame(Option<Frame>),
    Chunk(Bytes),
}

/// The reply side of one statement: what was collected, and what tollgate did about it.
pub(super) struct Reading<'c> {
    caps: &'c Caps,
    pub collected: Collected,
    pub error: Option<RunError>,
    /// tollgate cancelled the statement (bytes or time); its 57014 is then tollgate's to explain.
    cancelled: Option<Cut>,
    timed_out: bool,
    /// False when a cancel was sent but could not be confirmed delivered.
    pub cancel_delivered: bool,
    /// When the statement (then, after a cancel, the server's answer) is due.
    deadline: Option<Instant>,
}

impl<'c> Reading<'c> {
    pub fn new(caps: &'c Caps) -> Reading<'c> {
        Reading {
            caps,
            collected: Collected::default(),
            error: None,
            cancelled: None,
            timed_out: false,
            cancel_delivered: true,
            deadline: None,
        }
    }

    pub async fn read(&mut self, lent: &mut Lent) -> Ended {
        self.deadline = self.caps.timeout.map(|t| Instant::now() + t);
        loop {
            let (tag, len) = match self.io(lent, Op::Header).await {
                Ok(Got::Header(Some(h))) => h,
                Ok(_) => return Ended::lost("the upstream closed the connection"),
                Err(e) => return e,
            };
            match self.plan(tag, len) {
                Plan::Read => {}
                Plan::Skip { cancel } => {
                    if cancel {
                        self.cancel(lent).await;
                    }
                    if let Err(e) = self.skip(lent, len).await {
                        return e;
                    }
                    continue;
                }
                Plan::ErrorCut => {
                    if let Err(e) = self.error_cut(lent, len).await {
                        return e;
                    }
                    continue;
                }
                Plan::Refuse => {
                    return Ended::lost(format!(
                        "the upstream sent a '{}' message of {len} bytes",
                        tag.escape_ascii()
                    ))
                }
            }
            let frame = match self.io(lent, Op::Frame).await {
                Ok(Got::Frame(Some(f))) => f,
                Ok(_) => return Ended::lost("the upstream closed the connection"),
                Err(e) => return e,
            };
            match self.on_frame(&frame) {
                Step::Continue => {}
                Step::Cancel => self.cancel(lent).await,
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
                        return Ended::lost(e.to_string());
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

    /// One read, within the deadline: at the statement timeout tollgate cancels the statement
    /// and gives the server [`CANCEL_GRACE`] to answer; every read is cancel-safe, so the one
    /// interrupted is simply started again.
    async fn io(&mut self, lent: &mut Lent, op: Op) -> Result<Got, Ended> {
        loop {
            let reader = &mut lent.server.as_mut().expect("lent until checked in").reader;
            let read = async {
                match op {
                    Op::Header => reader.next_header().await.map(Got::Header),
                    Op::Frame => reader.next().await.map(Got::Frame),
                    Op::Chunk(max) => reader.chunk(max).await.map(Got::Chunk),
                }
            };
            let done: Result<Got, FrameError> = match self.deadline {
                Some(d) => match tokio::time::timeout_at(d, read).await {
                    Ok(r) => r,
                    Err(_) if self.timed_out => {
                        return Err(Ended::lost("the upstream did not answer tollgate's cancel"))
                    }
                    Err(_) => {
                        self.timed_out = true;
                        self.cancel(lent).await;
                        self.deadline = Some(Instant::now() + CANCEL_GRACE);
                        continue;
                    }
                },
                None => read.await,
            };
            return done.map_err(|e| Ended::lost(e.to_string()));
        }
    }

    /// Drops the next `len` bytes (a whole message, header included) as they arrive.
    async fn skip(&mut self, lent: &mut Lent, mut len: usize) -> Result<(), Ended> {
        while len > 0 {
            match self.io(lent, Op::Chunk(len.min(CHUNK))).await? {
                Got::Chunk(piece) => len -= piece.len(),
                _ => unreachable!("a chunk was asked for"),
            }
        }
        Ok(())
    }

    /// An ErrorResponse of `len` bytes, longer than [`ERROR_KEEP`]: read in pieces and cut
    /// field by field as the relay cuts it (`cut_fields`: every field keeps its head and says how
    /// long it was), then read as the error.
    async fn error_cut(&mut self, lent: &mut Lent, len: usize) -> Result<(), Ended> {
        let mut cut = crate::pg::cut_fields::FieldCut::new(msg::ERROR_RESPONSE);
        let mut left = len;
        while left > 0 {
            match self.io(lent, Op::Chunk(left.min(CHUNK))).await? {
                Got::Chunk(piece) => {
                    left -= piece.len();
                    cut.feed_message(&piece);
                }
                _ => unreachable!("a chunk was asked for"),
            }
        }
        self.on_error(cut.finish().body());
        Ok(())
    }

    /// What to do with a message of `len` bytes (tag and length included) tagged `tag`.
    fn plan(&mut self, tag: u8, len: usize) -> Plan {
        let body = len.saturating_sub(5);
        match tag {
            msg::DATA_ROW | b'd' => match self.fate(body as u64) {
                Fate::Keep => Plan::Read,
                Fate::Drop => Plan::Skip { cancel: false },
                Fate::Cut => Plan::Skip { cancel: true },
            },
            msg::ERROR_RESPONSE if len > ERROR_KEEP => Plan::ErrorCut,
            msg::NOTICE_RESPONSE | msg::NOTIFICATION_RESPONSE | msg::PARAMETER_STATUS
                if len > IGNORED_KEEP =>
            {
                Plan::Skip { cancel: false }
            }
            msg::ERROR_RESPONSE
            | msg::NOTICE_RESPONSE
            | msg::NOTIFICATION_RESPONSE
            | msg::PARAMETER_STATUS => Plan::Read,
            _ if len > STRUCTURAL_MAX => Plan::Refuse,
            _ => Plan::Read,
        }
    }

    /// tollgate's own CancelRequest, awaited: by the time it returns the server has the signal,
    /// so it cannot hit whatever runs next on this connection.
    async fn cancel(&mut self, lent: &mut Lent) {
        if let Some(target) = lent.running.take() {
            self.cancel_delivered = crate::pg::cancel::send_cancel(target).await;
        }
    }

    pub(super) fn on_frame(&mut self, frame: &Frame) -> Step {
        let body = frame.body();
        match frame.tag {
            msg::PARSE_COMPLETE | msg::BIND_COMPLETE | msg::NO_DATA => {}
            msg::ROW_DESCRIPTION => match values::columns(body) {
                Some(cols) => self.collected.columns = cols,
                None => return self.protocol("malformed RowDescription"),
            },
            msg::DATA_ROW => return self.row(body, values::data_row),
            b'd' => {
                // COPY ... TO STDOUT: each data message is one row of one text column.
                if self.collected.columns.is_empty() {
                    self.collected.columns.push(Column {
                        name: "copy".into(),
                        type_oid: values::TEXT_OID,
                    });
                }
                return self.row(body, |b| {
                    let line = String::from_utf8_lossy(b)
                        .trim_end_matches('\n')
                        .to_string();
                    Some(vec![Some(line)])
                });
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

    /// A row: kept (decoded by `decode`) if its fate allows; the one that cuts the result
    /// cancels the rest; others are not even decoded.
    fn row(&mut self, body: &[u8], decode: impl Fn(&[u8]) -> Option<Vec<Option<String>>>) -> Step {
        match self.fate(body.len() as u64) {
            Fate::Keep => match decode(body) {
                Some(row) => {
                    self.collected.bytes += body.len() as u64;
                    self.collected.rows.push(row);
                    Step::Continue
                }
                None => self.protocol("malformed DataRow"),
            },
            Fate::Drop => Step::Continue,
            Fate::Cut => Step::Cancel,
        }
    }

    /// What a row of `size` bytes will be. The first row past the row cap marks the result
    /// truncated (the portal stops at `max_rows + 1` by itself); the first past the byte cap
    /// cuts it and is the one to cancel the statement; every row after a cut is dropped.
    fn fate(&mut self, size: u64) -> Fate {
        if self.collected.truncated.is_some() {
            return Fate::Drop;
        }
        if let Some(max) = self.caps.max_rows {
            if self.collected.rows.len() as u64 >= max {
                self.collected.truncated = Some(Cut::Rows);
                return Fate::Drop;
            }
        }
        if self.collected.bytes + size > self.caps.max_bytes {
            self.collected.truncated = Some(Cut::Bytes);
            self.cancelled = Some(Cut::Bytes);
            return Fate::Cut;
        }
        Fate::Keep
    }

    pub(super) fn on_error(&mut self, body: &[u8]) {
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

pub(super) enum Step {
    Continue,
    Cancel,
    CopyIn,
    Done(u8),
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

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

    fn error_body(fields: &[(u8, &str)]) -> BytesMut {
        let mut e = BytesMut::new();
        for (c, v) in fields {
            e.put_u8(*c);
            e.put_slice(v.as_bytes());
            e.put_u8(0);
        }
        e.put_u8(0);
        e
    }

    #[test]
    fn messages_are_judged_by_their_header_before_they_are_read() {
        let caps = Caps {
            max_rows: Some(3),
            max_bytes: 100,
            timeout: None,
        };
        let mut r = Reading::new(&caps);
        assert_eq!(r.plan(b'T', 200), Plan::Read);
        assert_eq!(r.plan(b'D', 5 + 60), Plan::Read, "fits: read");
        r.on_frame(&data_row(&["x".repeat(54).as_str()]));
        assert_eq!(r.collected.bytes, 60);
        // 60 + 41 > 100: the row is never read, the statement is cancelled once.
        assert_eq!(r.plan(b'D', 5 + 41), Plan::Skip { cancel: true });
        assert_eq!(r.collected.truncated, Some(Cut::Bytes));
        assert_eq!(r.plan(b'D', 5 + 1), Plan::Skip { cancel: false });
        assert_eq!(r.plan(b'd', 1 << 30), Plan::Skip { cancel: false });
        // The server's 57014 for that cancel is ours, not the agent's error.
        r.on_frame(&frame(
            b'E',
            &error_body(&[(b'C', "57014"), (b'M', "canceling")]),
        ));
        assert!(r.error.is_none());
        // A huge row past the row cap is dropped unread too, without a cancel.
        let mut r = Reading::new(&caps);
        for _ in 0..3 {
            assert_eq!(r.plan(b'D', 10), Plan::Read);
            r.on_frame(&data_row(&["a"]));
        }
        assert_eq!(r.plan(b'D', 1 << 30), Plan::Skip { cancel: false });
        assert_eq!(r.collected.truncated, Some(Cut::Rows));
        // Errors keep their beginning; unused messages are dropped; the rest has a ceiling.
        assert_eq!(r.plan(b'E', ERROR_KEEP), Plan::Read);
        assert_eq!(r.plan(b'E', ERROR_KEEP + 1), Plan::ErrorCut);
        assert_eq!(r.plan(b'N', 1 << 20), Plan::Skip { cancel: false });
        assert_eq!(r.plan(b'N', 100), Plan::Read);
        assert_eq!(r.plan(b'T', STRUCTURAL_MAX), Plan::Read);
        assert_eq!(r.plan(b'T', STRUCTURAL_MAX + 1), Plan::Refuse);
    }

    #[test]
    fn a_row_past_the_byte_cap_is_not_even_decoded() {
        let caps = Caps {
            max_rows: None,
            max_bytes: 10,
            timeout: None,
        };
        let mut r = Reading::new(&caps);
        // Malformed, but past the cap: dropped before decoding, so no protocol error.
        assert!(matches!(
            r.on_frame(&frame(b'D', &[0xff; 64])),
            Step::Cancel
        ));
        assert!(r.error.is_none());
        assert_eq!(r.collected.truncated, Some(Cut::Bytes));
    }
}
