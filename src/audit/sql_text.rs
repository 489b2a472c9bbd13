//! The SQL text an audit record holds for a statement. It is the whole text as the agent sent
//! it, so a record never hides part of what ran: a 64 KiB cut once let
//! `select 1 /* 66,000 bytes */; delete from orders ...` run with only the comment recorded.
//! Every statement that runs is within `limits.max_statement_bytes` (longer ones are refused
//! unread), so records stay bounded; a refused text keeps its head, marked as cut.
//!
//! A refused statement (nothing of it ran) keeps only its head ([`refused`]).
//!
//! With `[audit] redact_literals`, literal values are replaced: by PostgreSQL's normaliser
//! (`$1`, `$2`, ...), or, for text its grammar rejects (another server version's syntax, a head
//! cut mid-statement), token by token by its scanner (`?`), so a statement is recorded without
//! its values rather than not at all.

use pg_query::protobuf::Token;

/// What is recorded when even the scanner cannot tell the literals apart (an unterminated
/// quote: PostgreSQL's own lexer rejects such a text too, so it never runs).
const UNREDACTABLE: &str = "<statement not recorded: its literal values could not be told apart>";

/// `text` as its audit record holds it (see the module doc); `max_statement_bytes` is the
/// longest text that may run.
pub fn recorded(text: &str, redact: bool, max_statement_bytes: usize) -> String {
    let text = &*without_passwords(text);
    if text.len() <= max_statement_bytes {
        return if redact {
            redacted(text)
        } else {
            text.to_string()
        };
    }
    // Refused unread. The text may itself be a head (a message too large to hold is kept only
    // so far, `pg::oversize`), so its length is a lower bound.
    let head = head(text, REFUSED_KEEP.min(max_statement_bytes));
    let shown = if redact {
        redacted(head)
    } else {
        head.to_string()
    };
    format!(
        "{shown} ... [more than limits.max_statement_bytes ({max_statement_bytes} bytes): refused unread, the first {} recorded]",
        head.len()
    )
}

/// How much of a refused statement's text is recorded.
pub const REFUSED_KEEP: usize = 4096;

/// What a marker after a cut head may add.
const MARKER_ROOM: usize = 256;

/// A refused statement's recorded text (any protocol): its first [`REFUSED_KEEP`] bytes, marked
/// when cut. Nothing of it ran, so the head says what was tried; and refusals take no rate
/// token, so a whole 1 MiB text per refusal would let an agent write the log as fast as it
/// can send (a review measured 14 MB/s with 64 KiB heads).
pub fn refused(text: String) -> String {
    // Room for the marker of a head a door already cut (`recorded` of a text over the limit),
    // which must not be cut again: it says what the whole was.
    if text.len() <= REFUSED_KEEP + MARKER_ROOM {
        return text;
    }
    let cut = head(&text, REFUSED_KEEP);
    format!(
        "{cut} ... [{} bytes in all; refused, not run: the first {} recorded]",
        text.len(),
        cut.len()
    )
}

fn redacted(text: &str) -> String {
    let text = without_comments(text);
    pg_query::normalize(&text)
        .ok()
        .or_else(|| scanned(&text))
        .unwrap_or_else(|| UNREDACTABLE.to_string())
}

/// `text` with each comment replaced by `/* */`: a comment can hold anything (a card number
/// noted beside the literal it was), and neither the normaliser nor the scan takes it out.
/// Text the scanner cannot read is returned as is (its redaction fails closed anyway).
fn without_comments(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("--") && !text.contains("/*") {
        return std::borrow::Cow::Borrowed(text);
    }
    let Ok(scan) = pg_query::scan(text) else {
        return std::borrow::Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for t in scan.tokens {
        if !matches!(
            Token::try_from(t.token),
            Ok(Token::SqlComment | Token::CComment)
        ) {
            continue;
        }
        let (Ok(start), Ok(end)) = (usize::try_from(t.start), usize::try_from(t.end)) else {
            return std::borrow::Cow::Borrowed(text);
        };
        let Some(before) = text.get(at..start) else {
            return std::borrow::Cow::Borrowed(text);
        };
        out.push_str(before);
        out.push_str("/* */");
        at = end;
    }
    out.push_str(text.get(at..).unwrap_or_default());
    std::borrow::Cow::Owned(out)
}

/// What a string literal of a statement that mentions a password is recorded as.
const PASSWORD_SHOWN: &str = "'<password>'";

/// What is recorded for a statement that mentions a password and that the scanner cannot read
/// (an unterminated quote: PostgreSQL's lexer rejects it too, so it never runs).
const PASSWORD_UNREADABLE: &str =
    "<statement not recorded: it mentions a password and its literals could not be told apart>";

/// `text` as recorded whatever `redact_literals` says (as pgaudit does for passwords): in a
/// statement that mentions a password anywhere, every string literal is recorded as
/// [`PASSWORD_SHOWN`]; a dollar-quoted one (a function body, a `DO` block) is read as SQL in turn,
/// so its code stays and its literals go. Asking where exactly the password sits was not enough:
/// a re-review found it after a quoted `"password"` option name, in a `DO` block, and as a
/// `format()` argument. And a connection URI with a password (`postgresql://u:p@h/db`) is
/// recorded as [`PASSWORD_SHOWN`] in any statement. The admin API's viewers read the log (a
/// live review read a role's password there). Text that mentions neither costs one pass over
/// its bytes.
fn without_passwords(text: &str) -> std::borrow::Cow<'_, str> {
    let (mentions, uri) = password_or_uri(text.as_bytes());
    if !mentions && !uri {
        return std::borrow::Cow::Borrowed(text);
    }
    match literals_without_passwords(text, mentions, 0) {
        Some(out) => out,
        None if mentions => std::borrow::Cow::Owned(PASSWORD_UNREADABLE.to_string()),
        None => std::borrow::Cow::Borrowed(text),
    }
}

/// How deep dollar-quoted bodies are read into (a body inside a body inside a body...).
const NESTING: usize = 8;

/// `text` with the literals [`without_passwords`] replaces replaced (all of them when
/// `every`); `None` if the scanner cannot read it.
fn literals_without_passwords(
    text: &str,
    every: bool,
    depth: usize,
) -> Option<std::borrow::Cow<'_, str>> {
    let scan = pg_query::scan(text).ok()?;
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for t in scan.tokens {
        if !matches!(Token::try_from(t.token), Ok(Token::Sconst | Token::Usconst)) {
            continue;
        }
        let (start, end) = (usize::try_from(t.start).ok()?, usize::try_from(t.end).ok()?);
        let literal = text.get(start..end)?;
        let shown = if every {
            dollar_body_without_passwords(literal, depth)
                .unwrap_or(std::borrow::Cow::Borrowed(PASSWORD_SHOWN))
        } else if uri_with_password(literal.as_bytes()) {
            std::borrow::Cow::Borrowed(PASSWORD_SHOWN)
        } else {
            continue;
        };
        out.push_str(text.get(at..start)?);
        out.push_str(&shown);
        at = end;
    }
    if at == 0 {
        return Some(std::borrow::Cow::Borrowed(text));
    }
    out.push_str(text.get(at..)?);
    Some(std::borrow::Cow::Owned(out))
}

/// A dollar-quoted literal (`$tag$ ... $tag$`) with its content read as SQL and its own literals
/// replaced; `None` for any other literal, or content the scanner cannot read.
fn dollar_body_without_passwords(literal: &str, depth: usize) -> Option<std::borrow::Cow<'_, str>> {
    if depth >= NESTING || !literal.starts_with('$') {
        return None;
    }
    let tag_end = literal[1..].find('$')? + 2;
    let tag = &literal[..tag_end];
    let body = literal.get(tag_end..literal.len().checked_sub(tag.len())?)?;
    if !literal.ends_with(tag) || literal.len() < 2 * tag.len() {
        return None;
    }
    // Content with no literal of its own is a value (`$b$secret$b$`), not a body: replaced.
    match literals_without_passwords(body, true, depth + 1)? {
        std::borrow::Cow::Borrowed(_) => None,
        inner => Some(std::borrow::Cow::Owned(format!("{tag}{inner}{tag}"))),
    }
}

fn is_password_at(b: &[u8], i: usize) -> bool {
    b.get(i..i + 8)
        .is_some_and(|w| w.eq_ignore_ascii_case(b"password"))
}

/// Whether `b` mentions "password" (in any case), and whether it holds "://", in one pass
/// (every statement recorded pays it: memchr finds the few places worth comparing; a searcher
/// built per call cost hundreds of instructions).
fn password_or_uri(b: &[u8]) -> (bool, bool) {
    let (mut password, mut uri) = (false, false);
    for i in memchr::memchr3_iter(b'p', b'P', b':', b) {
        if b[i] == b':' {
            uri |= b.get(i + 1..i + 3) == Some(b"//");
        } else {
            password |= is_password_at(b, i);
        }
        if password && uri {
            break;
        }
    }
    (password, uri)
}

/// Whether a literal holds a URI with a password in it (`scheme://user:password@host`).
fn uri_with_password(literal: &[u8]) -> bool {
    memchr::memmem::find_iter(literal, b"://").any(|i| {
        let rest = &literal[i + 3..];
        let authority = rest
            .iter()
            .position(|c| matches!(c, b'/' | b'?' | b'#' | b'\'' | b' '))
            .map_or(rest, |end| &rest[..end]);
        memchr::memrchr(b'@', authority).is_some_and(|at| authority[..at].contains(&b':'))
    })
}

/// Whether a server's message mentions a password (its outcome is then recorded without it: a
/// message can quote a literal the statement carried).
pub fn mentions_a_password(message: &str) -> bool {
    let (password, uri) = password_or_uri(message.as_bytes());
    password || (uri && uri_with_password(message.as_bytes()))
}

/// `text` with every literal token the scanner finds replaced by `?`; comments and everything
/// else kept as written.
fn scanned(text: &str) -> Option<String> {
    let tokens = pg_query::scan(text).ok()?.tokens;
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for t in tokens {
        let literal = matches!(
            Token::try_from(t.token),
            Ok(Token::Iconst
                | Token::Fconst
                | Token::Sconst
                | Token::Usconst
                | Token::Bconst
                | Token::Xconst)
        );
        if !literal {
            continue;
        }
        let (start, end) = (usize::try_from(t.start).ok()?, usize::try_from(t.end).ok()?);
        out.push_str(text.get(at..start)?);
        out.push('?');
        at = end;
    }
    out.push_str(text.get(at..)?);
    Some(out)
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub fn head(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_that_can_run_is_recorded_whole() {
        let sql = format!(
            "select 1 /* {} */; delete from orders where id = 7",
            "x".repeat(66_000)
        );
        assert_eq!(recorded(&sql, false, 1 << 20), sql);
        let r = recorded(&sql, true, 1 << 20);
        assert!(
            r.ends_with("delete from orders where id = $2"),
            "{}",
            &r[r.len() - 60..]
        );
    }

    #[test]
    fn a_text_over_the_limit_keeps_a_marked_head_that_the_refusal_keeps() {
        let sql = format!("select 'x{}'", "é".repeat(40_000));
        let r = recorded(&sql, false, 50_000);
        assert!(r.starts_with("select 'xéé"), "{}", &r[..20]);
        let marker = "... [more than limits.max_statement_bytes (50000 bytes): refused unread, the first 4095 recorded]";
        assert!(r.ends_with(marker), "{}", &r[r.len() - 120..]);
        // The refusal's own cut leaves a marked head alone (review: it cut the marker away).
        assert_eq!(refused(r.clone()), r);
        // Redacted, the cut literal cannot be told apart: nothing of it is recorded.
        let r = recorded(&sql, true, 50_000);
        assert!(r.starts_with(UNREDACTABLE), "{}", &r[..80]);
    }

    #[test]
    fn passwords_are_never_recorded() {
        for (sql, want) in [
            (
                "CREATE ROLE r LOGIN PASSWORD 'RolePassw0rd!'",
                "CREATE ROLE r LOGIN PASSWORD '<password>'",
            ),
            (
                "alter user r with encrypted password /* c */ 'x''y' valid until 'infinity'",
                "alter user r with encrypted password /* c */ '<password>' valid until '<password>'",
            ),
            (
                "CREATE USER MAPPING FOR r SERVER s OPTIONS (user 'u', \"password\" 'p1')",
                "CREATE USER MAPPING FOR r SERVER s OPTIONS (user '<password>', \"password\" '<password>')",
            ),
            (
                "SELECT dblink_connect('host=h PassWord = p2 dbname=d')",
                "SELECT dblink_connect('<password>')",
            ),
            (
                "ALTER ROLE r PASSWORD E'p\\3'",
                "ALTER ROLE r PASSWORD '<password>'",
            ),
            // A body is read as SQL: its code stays, its literals go.
            (
                "DO $$ BEGIN ALTER ROLE r PASSWORD 'pB1'; END $$",
                "DO $$ BEGIN ALTER ROLE r PASSWORD '<password>'; END $$",
            ),
            (
                "DO $f$ BEGIN EXECUTE format('ALTER ROLE %I PASSWORD %L', 'r', 'pB2'); END $f$",
                "DO $f$ BEGIN EXECUTE format('<password>', '<password>', '<password>'); END $f$",
            ),
            (
                "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $a$ ALTER ROLE r PASSWORD $b$pB3$b$ $a$",
                "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $a$ ALTER ROLE r PASSWORD '<password>' $a$",
            ),
            // A URI with a password, mentioned or not.
            (
                "SELECT dblink_connect('postgresql://u:pD1@127.0.0.1/shop')",
                "SELECT dblink_connect('<password>')",
            ),
            (
                "SELECT 'https://example.com/a:b@c', 'postgresql://u@h/db'",
                "SELECT 'https://example.com/a:b@c', 'postgresql://u@h/db'",
            ),
            ("SELECT 'no secret here'", "SELECT 'no secret here'"),
        ] {
            assert_eq!(recorded(sql, false, 1 << 20), want, "{sql}");
            let redacted = recorded(sql, true, 1 << 20);
            for secret in ["p1", "RolePassw0rd", "pB1", "pB2", "pB3", "pD1"] {
                assert!(!redacted.contains(secret), "{redacted}");
            }
        }
        // Unreadable by the scanner (PostgreSQL would not run it either): not recorded at all.
        assert_eq!(
            recorded("ALTER ROLE r PASSWORD 'unterminated", false, 1 << 20),
            PASSWORD_UNREADABLE
        );
        // A refused text's head too.
        let long = format!("CREATE ROLE r PASSWORD 'secret9' {}", "x".repeat(100));
        assert!(!recorded(&long, false, 50).contains("secret9"));
        assert!(mentions_a_password("invalid input: \"host=h password=x\""));
        assert!(mentions_a_password("bad uri \"postgresql://u:x@h\""));
        assert!(!mentions_a_password("permission denied to alter role"));
    }

    #[test]
    fn a_refused_text_keeps_its_head() {
        assert_eq!(refused("select 1".into()), "select 1");
        let long = format!("select '{}'", "a".repeat(10_000));
        let r = refused(long.clone());
        assert!(r.starts_with("select 'aaa"));
        assert!(
            r.ends_with("... [10009 bytes in all; refused, not run: the first 4096 recorded]"),
            "{r}"
        );
    }

    #[test]
    fn text_the_grammar_rejects_is_redacted_by_the_scanner() {
        // Not SQL PostgreSQL's grammar knows, but its scanner reads it: values still go.
        let sql = "frobnicate 'alice@example.com', 4111111111111111, E'\\x41', x'1f' /* c */ -- d";
        assert!(pg_query::normalize(sql).is_err());
        assert_eq!(
            recorded(sql, true, 1 << 20),
            "frobnicate ?, ?, ?, ? /* */ /* */"
        );
        assert_eq!(
            recorded("select 'unterminated", true, 1 << 20),
            UNREDACTABLE
        );
        assert_eq!(
            recorded("select 'a' || 'b'", true, 1 << 20),
            "select $1 || $2"
        );
    }

    /// Comments go under redaction too: the normaliser keeps them word for word.
    #[test]
    fn comments_are_not_recorded_under_redaction() {
        let sql = "INSERT INTO t VALUES (1, 'x') /* 4111-1111-1111-1111 */ -- ssn 078-05-1120\nRETURNING id";
        let r = recorded(sql, true, 1 << 20);
        assert!(!r.contains("4111") && !r.contains("078-05"), "{r}");
        assert!(r.contains("/* */") && r.contains("RETURNING"), "{r}");
        // A '--' inside a literal is not a comment; the literal goes as usual.
        let r = recorded("SELECT '--not a comment' AS a", true, 1 << 20);
        assert!(!r.contains("not a comment"), "{r}");
        // Without redaction nothing changes.
        assert_eq!(recorded(sql, false, 1 << 20), sql);
    }
}
