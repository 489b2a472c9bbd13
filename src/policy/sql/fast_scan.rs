//! The decision-cache key of plain SQL without calling PostgreSQL's scanner.
//!
//! [`fingerprint`](super::fingerprint) keys the decision cache on the tokens of
//! `pg_query::scan`, which costs more than the rest of a cached decision (the scan is returned
//! as a protobuf message and decoded: ~1.4 µs of a statement's ~20 µs under pgbench). Most
//! statements agents send use a small part of the lexical grammar: keywords, plain and quoted
//! identifiers, decimal numbers, standard strings, `$n` parameters, punctuation and the common
//! operators. This module scans exactly that part and feeds the hasher the very same bytes the
//! pg_query path would, so the key is identical, not merely similar; anything outside the part
//! (comments, dollar quotes, escape strings, prefixed strings, exponents, unusual operators,
//! non-ASCII text, over-long names) returns `None` and the caller falls back to the real
//! scanner. The tests (`fast_scan/tests.rs`) check the identity on generated statements, on every
//! short string over an alphabet that reaches every branch, and on every keyword.
//!
//! Keywords are taken from pg_query's own token list, each checked once against the real
//! scanner, so a word is treated as a keyword only if PostgreSQL's scanner says it is one.

use std::sync::OnceLock;

use pg_query::protobuf::{KeywordKind, Token};

use crate::policy::fixed_map::FixedMap;

/// Longest identifier PostgreSQL keeps untruncated (NAMEDATALEN - 1).
const MAX_IDENT: usize = 63;
/// Longest keyword in PostgreSQL's list is 17 bytes; longer words are identifiers.
const MAX_KEYWORD: usize = 24;

/// Writes to `out` the bytes [`super::fingerprint`]'s scanner path feeds its hasher for `sql`
/// (a `Hasher` digests a stream of bytes however it is split into writes, so one write of `out`
/// gives the same key), or returns `None` when `sql` leaves the subset scanned here.
pub(super) fn token_stream(sql: &str, out: &mut Vec<u8>) -> Option<()> {
    let bytes = sql.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        match c {
            _ if is_space(c) => i += 1,
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                i = word_end(bytes, i);
                // A word glued to a quote or `&` may be a string prefix (E'', B'', X'', N'',
                // U&''), which the real scanner reads as one token.
                if matches!(bytes.get(i), Some(b'\'' | b'"' | b'&')) || i - start > MAX_IDENT {
                    return None;
                }
                let word = &bytes[start..i];
                match keyword(word) {
                    // UESCAPE changes how the next string is read (see fingerprint.rs).
                    Some(t) if t == Token::Uescape as i32 => return None,
                    Some(t) => literal_or_keyword(out, t),
                    None => text_token(out, Token::Ident as i32, word),
                }
            }
            // A number, or a dot starting one (`.5`).
            _ if c.is_ascii_digit()
                || (c == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)) =>
            {
                let (end, token) = number(bytes, i)?;
                i = end;
                literal_or_keyword(out, token as i32);
            }
            b'.' if bytes.get(i + 1) == Some(&b'.') => return None,
            b'\'' => {
                i = string_end(bytes, i)?;
                // Strings separated only by whitespace with a newline are one literal.
                let next = bytes[i..].iter().position(|b| !is_space(*b));
                if next.is_some_and(|n| bytes[i + n] == b'\'') {
                    return None;
                }
                literal_or_keyword(out, Token::Sconst as i32);
            }
            b'"' => {
                i = quoted_ident_end(bytes, i)?;
                text_token(out, Token::Ident as i32, &bytes[start..i]);
            }
            b'$' => {
                let digits = bytes[i + 1..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                i += 1 + digits;
                if digits == 0 || digits > 9 || bytes.get(i).is_some_and(|b| is_word_byte(*b)) {
                    return None;
                }
                text_token(out, Token::Param as i32, &bytes[start..i]);
            }
            b':' => {
                let (len, token) = match bytes.get(i + 1) {
                    Some(b':') if bytes.get(i + 2) != Some(&b':') => (2, Token::Typecast as i32),
                    Some(b':') => return None,
                    Some(b'=') => (2, Token::ColonEquals as i32),
                    _ => (1, i32::from(b':')),
                };
                i += len;
                text_token(out, token, &bytes[start..i]);
            }
            b',' | b'(' | b')' | b'[' | b']' | b';' | b'.' => {
                i += 1;
                text_token(out, i32::from(c), &bytes[start..i]);
            }
            _ if is_operator_byte(c) => {
                i += bytes[i..]
                    .iter()
                    .take_while(|b| is_operator_byte(**b))
                    .count();
                let token = operator(&bytes[start..i])?;
                text_token(out, token, &bytes[start..i]);
            }
            _ => return None,
        }
    }
    Some(())
}

/// A literal or a keyword: the token alone (values and spellings are normalised away), as
/// `token.hash(h); 0u8.hash(h)` would feed a hasher.
fn literal_or_keyword(out: &mut Vec<u8>, token: i32) {
    out.extend_from_slice(&token.to_ne_bytes());
    out.push(0);
}

/// Any other token: its kind and exact source text, as `token.hash(h); 1u8.hash(h);
/// text.hash(h)` would feed a hasher (a slice is fed as its length, then its bytes).
fn text_token(out: &mut Vec<u8>, token: i32, text: &[u8]) {
    out.extend_from_slice(&token.to_ne_bytes());
    out.push(1);
    out.extend_from_slice(&text.len().to_ne_bytes());
    out.extend_from_slice(text);
}

/// Whitespace as the scanner reads it (vertical tab left out: left to the real scanner).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c')
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$'
}

fn word_end(bytes: &[u8], start: usize) -> usize {
    start
        + bytes[start..]
            .iter()
            .take_while(|b| is_word_byte(**b))
            .count()
}

fn is_operator_byte(b: u8) -> bool {
    matches!(
        b,
        b'~' | b'!'
            | b'@'
            | b'#'
            | b'^'
            | b'&'
            | b'|'
            | b'`'
            | b'?'
            | b'+'
            | b'-'
            | b'*'
            | b'/'
            | b'%'
            | b'<'
            | b'>'
            | b'='
    )
}

/// The token of a run of operator characters, for the runs whose reading is unambiguous: one
/// character of the scanner's "self" set, or a two-character comparison. Longer runs (where
/// the scanner strips trailing `+`/`-` or finds comments) are left to the real scanner.
fn operator(run: &[u8]) -> Option<i32> {
    match run {
        [c @ (b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'<' | b'>' | b'=')] => Some(i32::from(*c)),
        b"<=" => Some(Token::LessEquals as i32),
        b">=" => Some(Token::GreaterEquals as i32),
        b"<>" | b"!=" => Some(Token::NotEquals as i32),
        b"=>" => Some(Token::EqualsGreater as i32),
        _ => None,
    }
}

/// A decimal number starting at `start` (a digit, or a dot before a digit): its end and token.
/// Integers that fit in 32 bits are ICONST, larger ones and decimals FCONST, as in the real
/// scanner; exponents, `..`, trailing letters or underscores (PostgreSQL 16's separators and
/// non-decimal integers) and very long numbers are left to the real scanner.
fn number(bytes: &[u8], start: usize) -> Option<(usize, Token)> {
    let digits = |from: usize| {
        bytes[from..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let int_len = digits(start);
    let mut end = start + int_len;
    let mut token = Token::Iconst;
    if bytes.get(end) == Some(&b'.') {
        if bytes.get(end + 1) == Some(&b'.') {
            return None;
        }
        end += 1 + digits(end + 1);
        token = Token::Fconst;
    } else {
        if int_len > 18 {
            return None;
        }
        let value: i64 = std::str::from_utf8(&bytes[start..end]).ok()?.parse().ok()?;
        if value > i64::from(i32::MAX) {
            token = Token::Fconst;
        }
    }
    if end - start > 40
        || bytes
            .get(end)
            .is_some_and(|b| is_word_byte(*b) || *b == b'.')
    {
        return None;
    }
    Some((end, token))
}

/// End (past the closing quote) of a standard string starting at `start`; `None` if it is
/// unterminated or holds a backslash (whose meaning depends on standard_conforming_strings).
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        match bytes.get(i)? {
            b'\\' => return None,
            b'\'' if bytes.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// End (past the closing quote) of a quoted identifier starting at `start`; `None` if it is
/// unterminated, empty or too long to survive untruncated.
fn quoted_ident_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    let mut len = 0;
    loop {
        match bytes.get(i)? {
            b'"' if bytes.get(i + 1) == Some(&b'"') => i += 2,
            b'"' => break,
            _ => i += 1,
        }
        len += 1;
    }
    (len > 0 && len <= MAX_IDENT).then_some(i + 1)
}

/// The keyword token of `word` (any case), if PostgreSQL's scanner reads it as a keyword.
fn keyword(word: &[u8]) -> Option<i32> {
    if word.len() > MAX_KEYWORD {
        return None;
    }
    let mut lower = [0u8; MAX_KEYWORD];
    for (l, b) in lower.iter_mut().zip(word) {
        *l = b.to_ascii_lowercase();
    }
    keywords().get(&lower[..word.len()]).copied()
}

type Keywords = FixedMap<Box<[u8]>, i32>;

pub(super) fn keywords() -> &'static Keywords {
    static KEYWORDS: OnceLock<Keywords> = OnceLock::new();
    KEYWORDS.get_or_init(|| {
        let mut map = Keywords::default();
        // Keyword tokens follow the named tokens in pg_query's enum; each name (less the `_P`
        // suffix bison needs) is kept only if the real scanner reads it as that keyword.
        for value in Token::AbortP as i32..Token::AbortP as i32 + 1000 {
            let Ok(token) = Token::try_from(value) else {
                continue;
            };
            let name = token.as_str_name().to_ascii_lowercase();
            let word = name.strip_suffix("_p").unwrap_or(&name);
            if scans_as_keyword(word, value) {
                map.insert(word.as_bytes().into(), value);
            }
        }
        map
    })
}

fn scans_as_keyword(word: &str, value: i32) -> bool {
    if word.len() > MAX_KEYWORD || !word.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return false;
    }
    let Ok(scanned) = pg_query::scan(word) else {
        return false;
    };
    matches!(scanned.tokens.as_slice(), [t] if t.token == value
        && t.keyword_kind != KeywordKind::NoKeyword as i32
        && t.start == 0
        && usize::try_from(t.end).ok() == Some(word.len()))
}

#[cfg(test)]
mod tests;
