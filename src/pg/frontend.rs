//! Zero-copy views of the client messages tollgate inspects, validated once.
//!
//! Query and Parse text must be valid UTF-8: the text the policy sees is exactly the text that is
//! forwarded (no lossy replacement that could make the analyser and the server disagree).

use super::frame::Frame;

pub const QUERY: u8 = b'Q';
pub const PARSE: u8 = b'P';
pub const BIND: u8 = b'B';
pub const DESCRIBE: u8 = b'D';
pub const EXECUTE: u8 = b'E';
pub const CLOSE: u8 = b'C';
pub const SYNC: u8 = b'S';
pub const FLUSH: u8 = b'H';
pub const TERMINATE: u8 = b'X';
pub const FUNCTION_CALL: u8 = b'F';
pub const COPY_DATA: u8 = b'd';
pub const COPY_DONE: u8 = b'c';
pub const COPY_FAIL: u8 = b'f';
pub const PASSWORD: u8 = b'p';

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("invalid {0} message: missing string terminator")]
    Unterminated(&'static str),
    #[error("invalid {0} message: text is not valid UTF-8")]
    NotUtf8(&'static str),
    #[error("invalid {0} message: truncated")]
    Truncated(&'static str),
}

/// Reads a NUL-terminated string at `at`; returns it and the offset after the NUL.
fn cstr<'a>(
    body: &'a [u8],
    at: usize,
    what: &'static str,
) -> Result<(&'a str, usize), MessageError> {
    let rest = body.get(at..).ok_or(MessageError::Truncated(what))?;
    let nul = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or(MessageError::Unterminated(what))?;
    let s = std::str::from_utf8(&rest[..nul]).map_err(|_| MessageError::NotUtf8(what))?;
    Ok((s, at + nul + 1))
}

/// `Query`: one string.
pub fn query_text(frame: &Frame) -> Result<&str, MessageError> {
    Ok(cstr(frame.body(), 0, "Query")?.0)
}

/// Reads a NUL-terminated byte string at `at`; returns it and the offset after the NUL.
fn cbytes<'a>(
    body: &'a [u8],
    at: usize,
    what: &'static str,
) -> Result<(&'a [u8], usize), MessageError> {
    let rest = body.get(at..).ok_or(MessageError::Truncated(what))?;
    let nul = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or(MessageError::Unterminated(what))?;
    Ok((&rest[..nul], at + nul + 1))
}

/// `Query`: its text as the client's bytes (decoded in the client's encoding by the caller).
pub fn query_bytes(frame: &Frame) -> Result<&[u8], MessageError> {
    Ok(cbytes(frame.body(), 0, "Query")?.0)
}

/// `Parse`: statement name (UTF-8, as drivers write them) and the query text as the client's
/// bytes.
pub fn parse_name_and_bytes(frame: &Frame) -> Result<(&str, &[u8]), MessageError> {
    let (name, at) = cstr(frame.body(), 0, "Parse")?;
    let (query, at) = cbytes(frame.body(), at, "Parse")?;
    if frame.body().len() < at + 2 {
        return Err(MessageError::Truncated("Parse"));
    }
    Ok((name, query))
}

/// `Parse`: statement name and query text (parameter type OIDs are not needed).
pub fn parse_fields(frame: &Frame) -> Result<(&str, &str), MessageError> {
    let (name, at) = cstr(frame.body(), 0, "Parse")?;
    let (query, at) = cstr(frame.body(), at, "Parse")?;
    if frame.body().len() < at + 2 {
        return Err(MessageError::Truncated("Parse"));
    }
    Ok((name, query))
}

/// `Bind`: portal name and statement name.
pub fn bind_names(frame: &Frame) -> Result<(&str, &str), MessageError> {
    let (portal, at) = cstr(frame.body(), 0, "Bind")?;
    let (statement, _) = cstr(frame.body(), at, "Bind")?;
    Ok((portal, statement))
}

/// `Bind`: parameter `number` (1-based) read as an integer, as the server would read it for an
/// `integer` argument (text: `int4in`'s optional blanks and sign; binary: a 2-, 4- or 8-byte
/// big-endian integer that fits); `None` for a missing, NULL or unreadable value.
pub fn bind_int_parameter(frame: &Frame, number: i32) -> Option<i32> {
    let (format, value) = bind_parameter(frame, number)?;
    match format {
        0 => std::str::from_utf8(value?).ok()?.trim().parse().ok(),
        1 => match *value? {
            [a, b] => Some(i16::from_be_bytes([a, b]).into()),
            [a, b, c, d] => Some(i32::from_be_bytes([a, b, c, d])),
            [a, b, c, d, e, f, g, h] => {
                i32::try_from(i64::from_be_bytes([a, b, c, d, e, f, g, h])).ok()
            }
            _ => None,
        },
        _ => None,
    }
}

/// `Bind`: parameter `number` (1-based) as text: its bytes, in either format (a `text` or
/// `varchar` value is its characters in both). `None` for a missing parameter or a format
/// other than 0 and 1; `Some(None)` for NULL.
pub fn bind_text_parameter(frame: &Frame, number: i32) -> Option<Option<&[u8]>> {
    match bind_parameter(frame, number) {
        Some((0 | 1, value)) => Some(value),
        _ => None,
    }
}

/// `Bind`: the format code and the value (`None`: NULL) of parameter `number` (1-based);
/// `None` when the message has no such parameter.
fn bind_parameter(frame: &Frame, number: i32) -> Option<(i16, Option<&[u8]>)> {
    let body = frame.body();
    let index = usize::try_from(number).ok()?.checked_sub(1)?;
    let (_, at) = cbytes(body, 0, "Bind").ok()?;
    let (_, mut at) = cbytes(body, at, "Bind").ok()?;
    let i16_at = |at: usize| -> Option<i16> {
        let b = body.get(at..at + 2)?;
        Some(i16::from_be_bytes([b[0], b[1]]))
    };
    let formats = usize::try_from(i16_at(at)?).ok()?;
    let format = match formats {
        0 => 0,
        1 => i16_at(at + 2)?,
        _ => i16_at(at + 2 + 2 * index)?,
    };
    at += 2 + 2 * formats;
    let params = usize::try_from(i16_at(at)?).ok()?;
    if index >= params {
        return None;
    }
    at += 2;
    for i in 0..=index {
        let b = body.get(at..at + 4)?;
        let len = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        at += 4;
        let len = usize::try_from(len).ok(); // -1: NULL
        if i == index {
            return match len {
                Some(len) => Some((format, Some(body.get(at..at + len)?))),
                None => Some((format, None)),
            };
        }
        at += len.unwrap_or(0);
    }
    None
}

/// `Execute`: portal name.
pub fn execute_portal(frame: &Frame) -> Result<&str, MessageError> {
    Ok(cstr(frame.body(), 0, "Execute")?.0)
}

/// `Describe` / `Close`: target kind (`S` statement or `P` portal) and name.
pub fn target<'a>(frame: &'a Frame, what: &'static str) -> Result<(u8, &'a str), MessageError> {
    let kind = *frame.body().first().ok_or(MessageError::Truncated(what))?;
    Ok((kind, cstr(frame.body(), 1, what)?.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn frame(tag: u8, body: &[u8]) -> Frame {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        Frame {
            tag,
            raw: Bytes::from(v),
        }
    }

    #[test]
    fn reads_fields_and_rejects_malformed_bodies() {
        assert_eq!(query_text(&frame(QUERY, b"SELECT 1\0")), Ok("SELECT 1"));
        assert_eq!(
            query_text(&frame(QUERY, b"SELECT 1")),
            Err(MessageError::Unterminated("Query"))
        );
        assert_eq!(
            query_text(&frame(QUERY, b"SELECT \xff\0")),
            Err(MessageError::NotUtf8("Query"))
        );
        assert_eq!(
            parse_fields(&frame(PARSE, b"s1\0SELECT $1\0\0\0")),
            Ok(("s1", "SELECT $1"))
        );
        assert_eq!(
            parse_fields(&frame(PARSE, b"s1\0SELECT $1\0")),
            Err(MessageError::Truncated("Parse"))
        );
        assert_eq!(bind_names(&frame(BIND, b"p\0s\0\0\0")), Ok(("p", "s")));
        assert_eq!(
            query_bytes(&frame(QUERY, b"SELECT '\xe9'\0")),
            Ok(&b"SELECT '\xe9'"[..])
        );
        assert_eq!(
            parse_name_and_bytes(&frame(PARSE, b"s1\0SELECT '\xe9'\0\0\0")),
            Ok(("s1", &b"SELECT '\xe9'"[..]))
        );
        assert_eq!(execute_portal(&frame(EXECUTE, b"\0\0\0\0\0")), Ok(""));
        assert_eq!(
            target(&frame(DESCRIBE, b"Sname\0"), "Describe"),
            Ok((b'S', "name"))
        );
        assert_eq!(
            target(&frame(CLOSE, b""), "Close"),
            Err(MessageError::Truncated("Close"))
        );
    }

    /// A Bind of portal "" and statement "s" with `formats` and `values` (None: NULL).
    fn bind(formats: &[i16], values: &[Option<&[u8]>]) -> Frame {
        let mut b = b"\0s\0".to_vec();
        b.extend_from_slice(&(formats.len() as i16).to_be_bytes());
        for f in formats {
            b.extend_from_slice(&f.to_be_bytes());
        }
        b.extend_from_slice(&(values.len() as i16).to_be_bytes());
        for v in values {
            match v {
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v);
                }
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        b.extend_from_slice(&0i16.to_be_bytes()); // result formats
        frame(BIND, &b)
    }

    #[test]
    fn bind_parameters_are_read_as_integers_as_the_server_would() {
        let four = 1234i32.to_be_bytes();
        let eight = 77i64.to_be_bytes();
        let huge = (1i64 << 40).to_be_bytes();
        let two = 9i16.to_be_bytes();
        let cases: &[(Frame, i32, Option<i32>)] = &[
            (bind(&[], &[Some(b" 42 ")]), 1, Some(42)),
            (bind(&[], &[Some(b"-7")]), 1, Some(-7)),
            (bind(&[0], &[Some(b"4x")]), 1, None),
            (bind(&[1], &[Some(&four)]), 1, Some(1234)),
            (bind(&[1], &[Some(&two), Some(&eight)]), 2, Some(77)),
            (bind(&[0, 1], &[Some(b"5"), Some(&four)]), 1, Some(5)),
            (bind(&[0, 1], &[Some(b"5"), Some(&four)]), 2, Some(1234)),
            (bind(&[1], &[Some(&huge)]), 1, None),
            (bind(&[1], &[Some(b"abc")]), 1, None),
            (bind(&[], &[None]), 1, None),
            (bind(&[], &[Some(b"1")]), 2, None),
            (bind(&[], &[Some(b"1")]), 0, None),
            (bind(&[2], &[Some(b"1")]), 1, None),
            (frame(BIND, b"\0s\0\0\0\0\x01\0\0\0\x09"), 1, None),
        ];
        for (i, (f, n, expected)) in cases.iter().enumerate() {
            assert_eq!(bind_int_parameter(f, *n), *expected, "case {i}");
        }
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(tag in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut raw = vec![tag];
            raw.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
            raw.extend_from_slice(&body);
            let f = Frame { tag, raw: Bytes::from(raw) };
            let _ = query_text(&f);
            let _ = parse_fields(&f);
            let _ = bind_names(&f);
            let _ = bind_int_parameter(&f, 1);
            let _ = bind_int_parameter(&f, 3);
            let _ = execute_portal(&f);
            let _ = target(&f, "Describe");
        }
    }
}
