//! The backend messages tollgate itself sends, encoded with pgwire's codecs.

use bytes::{BufMut, Bytes, BytesMut};
use pgwire::messages::response::{ErrorResponse, NoticeResponse, ReadyForQuery, TransactionStatus};
use pgwire::messages::startup::{
    Authentication, BackendKeyData, NegotiateProtocolVersion, ParameterStatus, SecretKey,
};
use pgwire::messages::Message;

pub const AUTHENTICATION: u8 = b'R';
pub const PARAMETER_STATUS: u8 = b'S';
pub const BACKEND_KEY_DATA: u8 = b'K';
pub const READY_FOR_QUERY: u8 = b'Z';
pub const ERROR_RESPONSE: u8 = b'E';
pub const NOTICE_RESPONSE: u8 = b'N';
pub const COMMAND_COMPLETE: u8 = b'C';
pub const EMPTY_QUERY: u8 = b'I';
pub const PORTAL_SUSPENDED: u8 = b's';
pub const PARSE_COMPLETE: u8 = b'1';
pub const BIND_COMPLETE: u8 = b'2';
pub const CLOSE_COMPLETE: u8 = b'3';
pub const ROW_DESCRIPTION: u8 = b'T';
pub const NO_DATA: u8 = b'n';
pub const PARAMETER_DESCRIPTION: u8 = b't';
pub const COPY_IN_RESPONSE: u8 = b'G';
pub const COPY_OUT_RESPONSE: u8 = b'H';
pub const COPY_BOTH_RESPONSE: u8 = b'W';
pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
pub const DATA_ROW: u8 = b'D';
pub const COPY_DATA: u8 = b'd';
pub const NOTIFICATION_RESPONSE: u8 = b'A';

fn encode<M: Message>(m: M) -> Bytes {
    let mut buf = BytesMut::new();
    m.encode(&mut buf)
        .expect("messages built by tollgate are within size limits");
    buf.freeze()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
}

/// The fields of an error tollgate reports, before encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgErrorFields {
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    /// The server routine field (`R`), where tollgate answers as the server would and drivers
    /// recognise the error by it (asyncpg: `RevalidateCachedQuery`).
    pub routine: Option<&'static str>,
}

impl PgErrorFields {
    pub fn error(code: &'static str, message: impl Into<String>) -> PgErrorFields {
        PgErrorFields {
            severity: Severity::Error,
            code,
            message: message.into(),
            detail: None,
            hint: None,
            routine: None,
        }
    }
    pub fn fatal(code: &'static str, message: impl Into<String>) -> PgErrorFields {
        PgErrorFields {
            severity: Severity::Fatal,
            code,
            message: message.into(),
            detail: None,
            hint: None,
            routine: None,
        }
    }
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    pub fn with_routine(mut self, routine: &'static str) -> Self {
        self.routine = Some(routine);
        self
    }

    /// The ErrorResponse with its texts written by `text` (the client's encoding).
    pub fn encode_with(&self, text: impl Fn(&str) -> Vec<u8>) -> Bytes {
        let sev = match self.severity {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        };
        let mut body = BytesMut::new();
        let mut field = |code: u8, value: &[u8]| {
            body.put_u8(code);
            body.put_slice(value);
            body.put_u8(0);
        };
        field(b'S', sev.as_bytes());
        field(b'V', sev.as_bytes());
        field(b'C', self.code.as_bytes());
        field(b'M', &text(&self.message));
        if let Some(d) = &self.detail {
            field(b'D', &text(d));
        }
        if let Some(h) = &self.hint {
            field(b'H', &text(h));
        }
        if let Some(r) = self.routine {
            field(b'R', r.as_bytes());
        }
        body.put_u8(0);
        raw_message(ERROR_RESPONSE, &body)
    }

    pub fn encode(&self) -> Bytes {
        let sev = match self.severity {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        };
        let mut fields = vec![
            (b'S', sev.to_string()),
            (b'V', sev.to_string()),
            (b'C', self.code.to_string()),
        ];
        fields.push((b'M', self.message.clone()));
        if let Some(d) = &self.detail {
            fields.push((b'D', d.clone()));
        }
        if let Some(h) = &self.hint {
            fields.push((b'H', h.clone()));
        }
        if let Some(r) = self.routine {
            fields.push((b'R', r.to_string()));
        }
        encode(ErrorResponse::new(fields))
    }
}

pub fn notice(code: &str, message: &str) -> Bytes {
    let fields = vec![
        (b'S', "NOTICE".to_string()),
        (b'V', "NOTICE".to_string()),
        (b'C', code.to_string()),
        (b'M', message.to_string()),
    ];
    encode(NoticeResponse::new(fields))
}

pub fn ready_for_query(status: u8) -> Bytes {
    let status = match status {
        b'T' => TransactionStatus::Transaction,
        b'E' => TransactionStatus::Error,
        _ => TransactionStatus::Idle,
    };
    encode(ReadyForQuery::new(status))
}

pub fn auth_ok() -> Bytes {
    encode(Authentication::Ok)
}

pub fn auth_sasl(mechanisms: &[&str]) -> Bytes {
    encode(Authentication::SASL(
        mechanisms.iter().map(|m| m.to_string()).collect(),
    ))
}

pub fn auth_sasl_continue(data: &str) -> Bytes {
    encode(Authentication::SASLContinue(Bytes::copy_from_slice(
        data.as_bytes(),
    )))
}

pub fn auth_sasl_final(data: &str) -> Bytes {
    encode(Authentication::SASLFinal(Bytes::copy_from_slice(
        data.as_bytes(),
    )))
}

pub fn parameter_status(name: &str, value: &str) -> Bytes {
    encode(ParameterStatus::new(name.to_string(), value.to_string()))
}

pub fn backend_key_data(pid: i32, secret: i32) -> Bytes {
    encode(BackendKeyData::new(pid, SecretKey::I32(secret)))
}

/// Protocol 3.0 as a startup packet and NegotiateProtocolVersion write it (major << 16 | minor).
pub const PROTOCOL_3_0: i32 = 3 << 16;

/// `newest`: the newest protocol version the server speaks, as a whole number
/// ([`PROTOCOL_3_0`]).
pub fn negotiate_protocol_version(newest: i32, unsupported: Vec<String>) -> Bytes {
    encode(NegotiateProtocolVersion::new(newest, unsupported))
}

/// One field of an ErrorResponse/NoticeResponse body (`C` code, `M` message, `V` severity...).
pub fn error_field(body: &[u8], wanted: u8) -> Option<String> {
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            return None;
        }
        let nul = tail.iter().position(|&b| b == 0)?;
        if field == wanted {
            return Some(String::from_utf8_lossy(&tail[..nul]).into_owned());
        }
        rest = &tail[nul + 1..];
    }
    None
}

/// `raw` (a whole ErrorResponse or NoticeResponse) with its `P` field (the 1-based character
/// position of the error in the statement) replaced by `map` of it; `None` if it has none.
pub fn with_error_position(raw: &[u8], map: impl Fn(usize) -> usize) -> Option<Bytes> {
    let position: usize = error_field(raw.get(5..)?, b'P')?.parse().ok()?;
    rebuild_fields(raw, |field, value, out| {
        match field {
            b'P' => out.put_slice(map(position).to_string().as_bytes()),
            _ => out.put_slice(value),
        }
        true
    })
}

/// `raw` (a whole ErrorResponse or NoticeResponse) without its `D` (detail) field; `None` if it
/// has none.
pub fn without_detail(raw: &[u8]) -> Option<Bytes> {
    error_field(raw.get(5..)?, b'D')?;
    rebuild_fields(raw, |field, value, out| {
        out.put_slice(value);
        field != b'D'
    })
}

/// `raw` (a whole ErrorResponse or NoticeResponse) rebuilt field by field: `write` puts a
/// field's value into the new message and says whether to keep the field. `None` when `raw` is
/// not well formed.
fn rebuild_fields(
    raw: &[u8],
    mut write: impl FnMut(u8, &[u8], &mut BytesMut) -> bool,
) -> Option<Bytes> {
    let (&tag, rest) = raw.split_first()?;
    let body = rest.get(4..)?;
    let mut out = BytesMut::with_capacity(raw.len() + 8);
    out.put_u8(tag);
    out.put_i32(0); // set below
    let mut fields = body;
    while let Some((&field, tail)) = fields.split_first() {
        if field == 0 {
            break;
        }
        let nul = tail.iter().position(|&b| b == 0)?;
        let mark = out.len();
        out.put_u8(field);
        if write(field, &tail[..nul], &mut out) {
            out.put_u8(0);
        } else {
            out.truncate(mark);
        }
        fields = &tail[nul + 1..];
    }
    out.put_u8(0);
    let len = (out.len() - 1) as i32;
    out[1..5].copy_from_slice(&len.to_be_bytes());
    Some(out.freeze())
}

/// Reads the fields of a backend ErrorResponse/NoticeResponse body: (code, message).
pub fn error_code_and_message(body: &[u8]) -> (Option<String>, Option<String>) {
    (error_field(body, b'C'), error_field(body, b'M'))
}

/// Row count of a CommandComplete tag (`SELECT 5`, `INSERT 0 5`, `UPDATE 3`, `COPY 7`).
pub fn command_rows(body: &[u8]) -> Option<u64> {
    let tag = body.split(|&b| b == 0).next()?;
    let last = tag.rsplit(|&b| b == b' ').next()?;
    std::str::from_utf8(last).ok()?.parse().ok()
}

/// CommandComplete with `tag` (`SELECT 1000`).
pub fn command_complete(tag: &str) -> Bytes {
    let mut body = Vec::with_capacity(tag.len() + 1);
    body.extend_from_slice(tag.as_bytes());
    body.push(0);
    raw_message(COMMAND_COMPLETE, &body)
}

/// The verb of a CommandComplete tag with another row count (`SELECT 5000` → `SELECT 1000`).
pub fn command_tag_with_rows(body: &[u8], rows: u64) -> String {
    let tag = body.split(|&b| b == 0).next().unwrap_or_default();
    let tag = String::from_utf8_lossy(tag);
    match tag.rsplit_once(' ') {
        Some((verb, n)) if n.parse::<u64>().is_ok() => format!("{verb} {rows}"),
        _ => format!("SELECT {rows}"),
    }
}

/// A raw message with the given tag and body (for messages pgwire has no type for).
pub fn raw_message(tag: u8, body: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(body.len() + 5);
    buf.put_u8(tag);
    buf.put_i32(body.len() as i32 + 4);
    buf.put_slice(body);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_roundtrip_and_tags() {
        let e = PgErrorFields::error("42501", "permission denied")
            .with_detail("d")
            .encode();
        assert_eq!(e[0], ERROR_RESPONSE);
        let (code, msg) = error_code_and_message(&e[5..]);
        assert_eq!(code.as_deref(), Some("42501"));
        assert_eq!(msg.as_deref(), Some("permission denied"));
        assert_eq!(ready_for_query(b'T')[..], [b'Z', 0, 0, 0, 5, b'T']);
        // Written by hand in the client's encoding, byte for byte what pgwire writes in UTF-8.
        let f = PgErrorFields::error("42501", "refusé").with_hint("h");
        assert_eq!(f.encode_with(|s| s.as_bytes().to_vec()), f.encode());
        let latin1 = f.encode_with(|s| s.chars().map(|c| c as u8).collect());
        assert!(latin1.windows(6).any(|w| w == b"refus\xe9"));
    }

    #[test]
    fn an_error_position_is_replaced_and_every_other_field_kept() {
        let mut raw = BytesMut::new();
        raw.put_u8(ERROR_RESPONSE);
        let body = b"SERROR\0C42703\0Mcolumn \"x\" does not exist\0P412\0Fparse.c\0\0";
        raw.put_i32(body.len() as i32 + 4);
        raw.put_slice(body);
        let out = with_error_position(&raw, |p| p - 400).unwrap();
        assert_eq!(out[0], ERROR_RESPONSE);
        assert_eq!(
            i32::from_be_bytes(out[1..5].try_into().unwrap()) as usize,
            out.len() - 1
        );
        assert_eq!(
            &out[5..],
            b"SERROR\0C42703\0Mcolumn \"x\" does not exist\0P12\0Fparse.c\0\0"
        );
        // No position, or a malformed one: nothing to replace.
        assert!(
            with_error_position(&PgErrorFields::error("42501", "no").encode(), |p| p).is_none()
        );
        assert!(with_error_position(b"E\0\0\0\x0bPx\0\0", |p| p).is_none());
        assert!(with_error_position(b"E\0\0", |p| p).is_none());
    }

    #[test]
    fn command_tags_give_row_counts() {
        assert_eq!(command_rows(b"SELECT 5\0"), Some(5));
        assert_eq!(command_rows(b"INSERT 0 12\0"), Some(12));
        assert_eq!(command_rows(b"BEGIN\0"), None);
    }
}
