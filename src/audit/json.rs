//! JSON members written by hand for audit records, without a general-purpose serializer on the
//! statement path: what `serde_json` writes (same escapes, same number forms), except that the
//! characters that steer a terminal are escaped too (see [`string`]).

/// What each byte becomes inside a JSON string: 0 = itself (or, from DEL up, see [`steering`]),
/// else the escape letter (`u` for `\u00XX`). The same table as serde_json's.
const ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Appends `s` as a quoted JSON string. Beyond JSON's own escapes (serde_json's: control
/// characters below U+0020, `"` and `\\`), every other character that steers a terminal
/// ([`super::terminal::steers`]) is written as `\uXXXX`: DEL, the C1 controls (U+009B is a
/// one-character CSI), the line and paragraph separators and the bidirectional marks,
/// overrides and isolates. A record's text is the agent's, and operators `tail -f` the raw log:
/// raw, these could make a line show something else than it holds. Any JSON reader gets the
/// same string back.
pub fn string(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // Plain ASCII text (most of it) is passed over eight bytes at a time.
    let mut clean = 0;
    while let Some(chunk) = bytes.get(clean..clean + 8) {
        if needs_look(u64::from_le_bytes(chunk.try_into().expect("8 bytes"))) {
            break;
        }
        clean += 8;
    }
    let mut start = 0;
    let mut i = clean;
    while i < bytes.len() {
        let b = bytes[i];
        let (code, len) = match ESCAPE[usize::from(b)] {
            b'u' => (u32::from(b), 1),
            0 if b < 0x7f => {
                i += 1;
                continue;
            }
            0 => match steering(&bytes[i..]) {
                Some(found) => found,
                None => {
                    i += 1;
                    continue;
                }
            },
            esc => {
                out.extend_from_slice(&bytes[start..i]);
                out.push(b'\\');
                out.push(esc);
                i += 1;
                start = i;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.extend_from_slice(b"\\u");
        for shift in [12, 8, 4, 0] {
            out.push(HEX[((code >> shift) & 0xf) as usize]);
        }
        i += len;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Whether a word of text needs a byte-by-byte look: a byte below 0x20, `"`, `\\`, DEL, or
/// any byte of a multi-byte character (word-at-a-time test: a zero byte of `x` shows in
/// `(x - 0x01..) & !x & 0x80..`).
fn needs_look(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    // Bytes below 0x20: `b - 0x20` borrows into the high bit, for bytes without it set.
    let below = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    let quote = zero(w ^ (ONES * u64::from(b'"')));
    let backslash = zero(w ^ (ONES * u64::from(b'\\')));
    (below | quote | backslash | zero(w ^ (ONES * 0x7f)) | (w & HIGH)) != 0
}

/// The steering character (beyond C0) that `rest` (valid UTF-8, from a character's first byte
/// on) starts with: its code point and UTF-8 length.
fn steering(rest: &[u8]) -> Option<(u32, usize)> {
    match *rest {
        // DEL
        [0x7f, ..] => Some((0x7f, 1)),
        // C1: U+0080..U+009F
        [0xc2, c @ 0x80..=0x9f, ..] => Some((u32::from(c), 2)),
        // U+061C ARABIC LETTER MARK
        [0xd8, 0x9c, ..] => Some((0x061c, 2)),
        // U+200E/U+200F marks, U+2028/U+2029 separators, U+202A..U+202E embeddings and overrides
        [0xe2, 0x80, c @ (0x8e | 0x8f | 0xa8..=0xae), ..] => {
            Some((0x2000 + u32::from(c - 0x80), 3))
        }
        // U+2066..U+2069 isolates
        [0xe2, 0x81, c @ 0xa6..=0xa9, ..] => Some((0x2040 + u32::from(c - 0x80), 3)),
        _ => None,
    }
}

/// Appends `s`, which needs no escape (tollgate's own names and timestamps), quoted.
pub fn plain(out: &mut Vec<u8>, s: &str) {
    debug_assert!(s.bytes().all(|b| ESCAPE[usize::from(b)] == 0), "{s:?}");
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

pub fn opt_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

pub fn number(out: &mut Vec<u8>, n: u64) {
    let mut buf = itoa::Buffer::new();
    out.extend_from_slice(buf.format(n).as_bytes());
}

pub fn opt_number(out: &mut Vec<u8>, n: Option<u64>) {
    match n {
        Some(n) => number(out, n),
        None => out.extend_from_slice(b"null"),
    }
}

/// `"name":` (names are fixed ASCII identifiers: never escaped).
pub fn key(out: &mut Vec<u8>, name: &str) {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// The value of a top-level string member `name` in one of tollgate's own record lines, or
/// `None` when the member is absent or `null`. Exact for lines this module wrote: inside a JSON
/// string every `"` is escaped, so `,"name":"` can only start a member.
pub fn member_str(line: &[u8], name: &str) -> Option<String> {
    let mut pat = Vec::with_capacity(name.len() + 5);
    pat.extend_from_slice(b",\"");
    pat.extend_from_slice(name.as_bytes());
    pat.extend_from_slice(b"\":\"");
    let at = memchr::memmem::find(line, &pat)? + pat.len() - 1;
    let rest = &line[at..];
    // Find the closing quote: the first '"' not escaped by an odd run of backslashes.
    let mut i = 1;
    let end = loop {
        let q = memchr::memchr2(b'"', b'\\', &rest[i..])? + i;
        if rest[q] == b'\\' {
            i = q + 2;
            continue;
        }
        break q;
    };
    serde_json::from_slice::<String>(&rest[..=end]).ok()
}

/// The value of a top-level unsigned member `name` (see [`member_str`]).
pub fn member_u64(line: &[u8], name: &str) -> Option<u64> {
    let mut pat = Vec::with_capacity(name.len() + 4);
    pat.extend_from_slice(b",\"");
    pat.extend_from_slice(name.as_bytes());
    pat.extend_from_slice(b"\":");
    let at = memchr::memmem::find(line, &pat)? + pat.len();
    let digits = line[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&line[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// JSON that serde_json wrote, with the steering characters it leaves raw escaped as
/// [`string`] escapes them: what `string` writes (tests compare the two).
#[cfg(test)]
pub(super) fn steering_escaped(serde_json_text: &str) -> String {
    let mut out = String::new();
    for c in serde_json_text.chars() {
        if super::terminal::steers(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ours(s: &str) -> String {
        let mut v = Vec::new();
        string(&mut v, s);
        String::from_utf8(v).unwrap()
    }

    fn expected(s: &str) -> String {
        steering_escaped(&serde_json::to_string(s).unwrap())
    }

    #[test]
    fn escapes_like_serde_json_and_steering_characters_too() {
        for s in [
            "",
            "plain",
            "quote \" and backslash \\",
            "tab\tnew\nline\rcr",
            "\u{0}\u{1}\u{8}\u{b}\u{c}\u{1f}",
            "é ü 中文 🦀",
            "</script>/",
        ] {
            assert_eq!(ours(s), serde_json::to_string(s).unwrap(), "{s:?}");
        }
        assert_eq!(
            ours("a\u{7f}b\u{80}\u{9b}31m\u{9f}\u{a0}"),
            "\"a\\u007fb\\u0080\\u009b31m\\u009f\u{a0}\""
        );
        assert_eq!(
            ours("x\u{2028}\u{2029}\u{202e}evil\u{202c}\u{2066}\u{2069}\u{200e}\u{200f}\u{61c}\u{2027}\u{202f}\u{2065}\u{206a}"),
            "\"x\\u2028\\u2029\\u202eevil\\u202c\\u2066\\u2069\\u200e\\u200f\\u061c\u{2027}\u{202f}\u{2065}\u{206a}\""
        );
    }

    #[test]
    fn every_escape_is_found_at_every_position_of_a_word() {
        for special in [
            '\u{0}', '\u{1f}', '"', '\\', '\n', ' ', '!', '#', '[', ']', '\u{7f}', 'é', '中',
            '\u{9b}', '\u{2028}', '\u{202e}',
        ] {
            for len in 0..24 {
                for at in 0..len {
                    let s: String = (0..len)
                        .map(|i| if i == at { special } else { 'a' })
                        .collect();
                    assert_eq!(ours(&s), expected(&s), "{s:?}");
                }
            }
        }
    }

    proptest! {
        #[test]
        fn any_string_reads_back_and_shows_no_steering_character(s in any::<String>()) {
            let line = ours(&s);
            prop_assert_eq!(&line, &expected(&s));
            prop_assert_eq!(serde_json::from_str::<String>(&line).unwrap(), s);
            prop_assert!(!line.chars().any(crate::audit::terminal::steers));
        }

        #[test]
        fn member_str_reads_back_any_value(s in any::<String>(), t in any::<String>()) {
            let mut line = b"{\"seq\":1,\"a\":".to_vec();
            string(&mut line, &t);
            line.extend_from_slice(b",\"agent\":");
            string(&mut line, &s);
            line.extend_from_slice(b",\"n\":42}");
            prop_assert_eq!(member_str(&line, "agent"), Some(s));
            prop_assert_eq!(member_u64(&line, "n"), Some(42));
        }
    }

    #[test]
    fn members_absent_or_null() {
        let line = br#"{"seq":7,"agent":null,"rule":"a\"b\\","x":1}"#;
        assert_eq!(member_str(line, "agent"), None);
        assert_eq!(member_str(line, "rule").as_deref(), Some("a\"b\\"));
        assert_eq!(member_u64(line, "x"), Some(1));
        assert_eq!(member_u64(line, "seq"), None, "first member has no comma");
    }
}
