//! One Redis argument as the audit record shows it: bare when it is plain text, else quoted
//! with escapes, and cut with a visible marker, so two different arguments never read the same.

use std::fmt::Write;

use crate::audit::terminal::steers;

/// Whether `b` can be shown as it is: text without spaces, quotes, backslashes or characters
/// that steer a terminal, that is not `?` (a redacted value) and does not start with `…`
/// (tollgate's cut markers). Anything else is quoted, so bare text is never ambiguous.
fn is_bare(b: &[u8]) -> bool {
    if b.is_empty() || b == b"?" {
        return false;
    }
    // Fast path (most names): printable ASCII.
    if b.iter().all(|c| (0x21..0x7f).contains(c)) {
        return !b.contains(&b'"') && !b.contains(&b'\\');
    }
    let Ok(s) = std::str::from_utf8(b) else {
        return false;
    };
    !s.starts_with('…')
        && !s
            .chars()
            .any(|c| c == '"' || c == '\\' || c.is_whitespace() || steers(c))
}

/// Appends `b` as recorded: bare (see [`is_bare`]), or in double quotes with `\"`, `\\`,
/// `\n`, `\r`, `\t`, and `\xNN` for every byte of a character that steers a terminal and every
/// byte that is not UTF-8. What is shown of it takes at most `max` bytes of `out` (plus the
/// quotes); the rest is left out and counted: `"cache:AAAA"…[+40 bytes]` (bytes of the
/// argument). `upper` upper-cases ASCII letters (command and subcommand names).
pub fn push(out: &mut String, b: &[u8], max: usize, upper: bool) {
    let start = out.len();
    if b.len() <= max && is_bare(b) {
        // Bare text is valid UTF-8 (checked in `is_bare`).
        out.push_str(std::str::from_utf8(b).unwrap_or_default());
        if upper {
            out[start..].make_ascii_uppercase();
        }
        return;
    }
    out.push('"');
    let body = out.len();
    let mut used = 0; // bytes of `b` shown
    'all: for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            let before = out.len();
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if steers(c) => {
                    for byte in c.encode_utf8(&mut [0; 4]).bytes() {
                        let _ = write!(out, "\\x{byte:02x}");
                    }
                }
                c if upper => out.push(c.to_ascii_uppercase()),
                c => out.push(c),
            }
            if out.len() - body > max {
                out.truncate(before);
                break 'all;
            }
            used += c.len_utf8();
        }
        for byte in chunk.invalid() {
            if out.len() - body + 4 > max {
                break 'all;
            }
            let _ = write!(out, "\\x{byte:02x}");
            used += 1;
        }
    }
    out.push('"');
    if used < b.len() {
        let _ = write!(out, "…[+{} bytes]", b.len() - used);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(b: &[u8], max: usize) -> String {
        let mut s = String::new();
        push(&mut s, b, max, false);
        s
    }

    #[test]
    fn plain_text_is_bare_the_rest_quoted() {
        for (arg, want) in [
            (&b"cache:1"[..], "cache:1"),
            (b"caf\xc3\xa9:1", "café:1"),
            (b"", r#""""#),
            (b"?", r#""?""#),
            (b"a b", r#""a b""#),
            (b"say \"hi\" \\o/", r#""say \"hi\" \\o/""#),
            (b"k\x1b[2K\r\n\t", r#""k\x1b[2K\r\n\t""#),
            (b"csi\xc2\x9b nbsp\xc2\xa0", "\"csi\\xc2\\x9b nbsp\u{a0}\""),
            (b"ls\xe2\x80\xa8", r#""ls\xe2\x80\xa8""#),
            (b"bad\xff\xfe", r#""bad\xff\xfe""#),
            ("…[+5 bytes]".as_bytes(), r#""…[+5 bytes]""#),
            (b"a\\x1b", r#""a\\x1b""#),
        ] {
            assert_eq!(shown(arg, 128), want, "{arg:?}");
        }
        let mut s = String::new();
        push(&mut s, b"config", 128, true);
        push(&mut s, b"g\xc3\xa9t\x01", 128, true);
        assert_eq!(s, r#"CONFIG"GéT\x01""#);
    }

    #[test]
    fn a_cut_is_marked_with_what_was_left_out() {
        let a = [b"cache:".as_slice(), &[b'A'; 140], b":tail"].concat();
        let b = [b"cache:".as_slice(), &[b'A'; 140], b":other-tail"].concat();
        let (sa, sb) = (shown(&a, 128), shown(&b, 128));
        assert_eq!(sa, format!("\"cache:{}\"…[+23 bytes]", "A".repeat(122)));
        assert_eq!(sb, format!("\"cache:{}\"…[+29 bytes]", "A".repeat(122)));
        assert_ne!(sa, sb);
        // Exactly the bound: whole, bare.
        assert_eq!(shown(&[b'x'; 128], 128), "x".repeat(128));
        // A cut never splits a character or an escape, and stays within the bound.
        for arg in [
            "é".repeat(100).into_bytes(),
            b"\x1b".repeat(100),
            b"\xff".repeat(100),
            "🦀".repeat(100).into_bytes(),
        ] {
            let s = shown(&arg, 30);
            let body = s.split('"').nth(1).unwrap();
            assert!(body.len() <= 30, "{s}");
            let left: usize = s
                .rsplit("[+")
                .next()
                .unwrap()
                .trim_end_matches(" bytes]")
                .parse()
                .unwrap();
            assert!(left > 0 && left < arg.len(), "{s}");
            assert!(!s.contains('\u{fffd}'), "{s}");
        }
        assert_eq!(shown(&b"\x1b".repeat(10), 8), r#""\x1b\x1b"…[+8 bytes]"#);
    }
}
