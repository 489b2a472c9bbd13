//! Characters of agent-chosen text (statements, names, errors) that would steer the terminal
//! of the person reading the audit trail, and how they are shown instead.
//!
//! A record's text is the agent's: shown raw, a carriage return or an escape sequence could
//! erase the real line and print a forged record in its place. Escaped, it reads as what it is.

use std::borrow::Cow;
use std::fmt::Write;

/// Whether `c` moves the cursor, starts an escape sequence, breaks the line or reorders the
/// text around it: every control character (C0, DEL, C1 — U+009B is a one-character CSI),
/// the Unicode line and paragraph separators, and the bidirectional overrides and isolates
/// (which can make a line read differently from what it holds).
pub fn steers(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with every character that [`steers`] the terminal written as Rust writes it in a
/// string literal (`\u{1b}`, `\r`, `\t`, `\u{9b}`, `\u{2028}`); borrowed when there is none.
pub fn escaped(s: &str) -> Cow<'_, str> {
    if !s.chars().any(steers) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if steers(c) {
            // `escape_debug` gives `\t`, `\r`, `\n`, `\0` and `\u{..}` for these.
            let _ = write!(out, "{}", c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A JSON line with every character that [`steers`] the terminal written as a JSON escape
/// (`\u009b`): the same JSON value. Lines tollgate writes escape C0 already; DEL, C1, the
/// separators and the bidi controls are legal raw in JSON, so they reach the line as sent.
pub fn json_escaped(line: &str) -> Cow<'_, str> {
    if !line.chars().any(steers) {
        return Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 16);
    for c in line.chars() {
        if steers(c) {
            // Every character that steers is in the Basic Multilingual Plane: one escape.
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_steers_a_terminal_is_escaped() {
        for (raw, shown) in [
            ("plain text, é 中文 🦀", "plain text, é 中文 🦀"),
            ("a\x1b[2Kb", r"a\u{1b}[2Kb"),
            (
                "cr\rbel\x07tab\tnul\0del\x7f",
                r"cr\rbel\u{7}tab\tnul\0del\u{7f}",
            ),
            ("csi\u{9b}2K nel\u{85}", r"csi\u{9b}2K nel\u{85}"),
            ("ls\u{2028}ps\u{2029}", r"ls\u{2028}ps\u{2029}"),
            ("rlo\u{202e}gnp.exe", r"rlo\u{202e}gnp.exe"),
            ("a backslash \\u{1b} stays", "a backslash \\u{1b} stays"),
        ] {
            assert_eq!(escaped(raw), shown, "{raw:?}");
        }
        assert!(matches!(escaped("select 1"), Cow::Borrowed(_)));
    }

    #[test]
    fn json_lines_keep_their_value() {
        let line = serde_json::to_string(&serde_json::json!({"statement":
            "a\u{9b}2K\x7f\u{2028}\u{202e}\x1b\r\"\\u009b é"}))
        .unwrap();
        assert!(
            line.contains('\u{9b}'),
            "serde_json leaves C1 raw: {line:?}"
        );
        let shown = json_escaped(&line);
        assert_eq!(
            shown,
            r#"{"statement":"a\u009b2K\u007f\u2028\u202e\u001b\r\"\\u009b é"}"#
        );
        let back: serde_json::Value = serde_json::from_str(&shown).unwrap();
        let orig: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back, orig);
        assert!(matches!(json_escaped("{\"seq\":1}"), Cow::Borrowed(_)));
    }

    #[test]
    fn nothing_that_steers_survives() {
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            let s = format!("x{c}y");
            assert!(!escaped(&s).chars().any(steers), "{c:?}");
            if steers(c) {
                assert!(escaped(&s).is_ascii(), "{c:?}");
            }
        }
    }
}
