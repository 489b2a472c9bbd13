//! Decision-cache key of a SQL string, computed from PostgreSQL's own scanner tokens.
//!
//! Two strings get the same key only if PostgreSQL's scanner (`pg_query::scan`, the lexer the
//! server runs) yields the same token sequence for both, except for the values of literal
//! constants. Comments and whitespace are ignored, keywords compare case-insensitively (they are
//! the same token), identifiers compare by their exact source text. Since the grammar only sees
//! tokens, two strings with the same key parse to the same tree up to literal values, so they
//! get the same analysis unless the analysis reads a literal, which then sets
//! `literal_sensitive` (and the statement must not be cached).
//!
//! Why not `pg_query::fingerprint`: it is built to group similar queries, not to key decisions.
//! It ignores the relation name when the relation has an alias (`SELECT * FROM orders o` and
//! `SELECT * FROM secrets o` share a fingerprint), drops schema names and runs of digits in
//! relation names, and ignores everything below 100 levels of nesting. Any of these would let
//! a forbidden statement hit an allowed statement's cache entry.
//!
//! The key is a SipHash keyed with a random per-process secret, so an attacker cannot search
//! offline for two strings with colliding keys; keys are only meaningful within one process.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::OnceLock;

use pg_query::protobuf::{KeywordKind, Token};

use super::{map_pg_query_error, AnalyzeError};

static KEY: OnceLock<RandomState> = OnceLock::new();

/// Fingerprint for a decision cache: equal for statements that differ only in whitespace,
/// comments, keyword case and literal values. Computed from PostgreSQL's own scanner.
/// Plain SQL is scanned in Rust ([`super::fast_scan`]), with the same key as the scanner path.
pub fn fingerprint(sql: &str) -> Result<u64, AnalyzeError> {
    match fast_fingerprint(sql) {
        Some(key) => Ok(key),
        None => scanner_fingerprint(sql),
    }
}

/// The key from [`super::fast_scan`], when `sql` is in the subset it scans (equal to what
/// [`fingerprint`] returns then).
pub fn fast_fingerprint(sql: &str) -> Option<u64> {
    let mut stream = Vec::with_capacity(sql.len() * 2 + 64);
    super::fast_scan::token_stream(sql, &mut stream)?;
    let mut hasher = KEY.get_or_init(RandomState::new).build_hasher();
    hasher.write(&stream);
    Some(hasher.finish())
}

/// The key from PostgreSQL's own scanner (what [`fingerprint`] falls back to).
pub fn scanner_fingerprint(sql: &str) -> Result<u64, AnalyzeError> {
    // The scanner's output is a flat token list: no deep recursion, safe on any thread.
    let scanned = pg_query::scan(sql).map_err(map_pg_query_error)?;
    let mut hasher = KEY.get_or_init(RandomState::new).build_hasher();
    let bytes = sql.as_bytes();
    let mut after_uescape = false;
    for token in &scanned.tokens {
        let kind = Token::try_from(token.token).unwrap_or(Token::Nul);
        if matches!(kind, Token::SqlComment | Token::CComment) {
            continue;
        }
        token.token.hash(&mut hasher);
        let keyword = KeywordKind::try_from(token.keyword_kind).unwrap_or(KeywordKind::NoKeyword);
        let text = token_text(bytes, token.start, token.end);
        let is_literal = matches!(
            kind,
            Token::Iconst
                | Token::Fconst
                | Token::Sconst
                | Token::Usconst
                | Token::Bconst
                | Token::Xconst
        );
        // The string after UESCAPE changes how the preceding U&"..." identifier decodes, so it
        // is part of the statement's structure, not a literal value.
        if (is_literal && !after_uescape) || keyword != KeywordKind::NoKeyword {
            // Literal values are normalised away; a keyword is fully identified by its token.
            0u8.hash(&mut hasher);
        } else {
            1u8.hash(&mut hasher);
            text.hash(&mut hasher);
        }
        after_uescape = kind == Token::Uescape;
    }
    Ok(hasher.finish())
}

/// One token of a statement as PostgreSQL's scanner sees it (comments left out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScannedToken {
    pub kind: Token,
    pub start: usize,
    pub end: usize,
}

/// The non-comment tokens of `sql`, in order. Two strings with the same [`fingerprint`] have
/// the same sequence of token kinds, so an index into this list means the same place in both.
pub fn structural_tokens(sql: &str) -> Result<Vec<ScannedToken>, AnalyzeError> {
    let scanned = pg_query::scan(sql).map_err(map_pg_query_error)?;
    let len = sql.len();
    Ok(scanned
        .tokens
        .iter()
        .filter_map(|t| {
            let kind = Token::try_from(t.token).unwrap_or(Token::Nul);
            if matches!(kind, Token::SqlComment | Token::CComment) {
                return None;
            }
            let start = usize::try_from(t.start).unwrap_or(0).min(len);
            let end = usize::try_from(t.end).unwrap_or(len).clamp(start, len);
            Some(ScannedToken { kind, start, end })
        })
        .collect())
}

/// Source text of a token; the whole remaining input if the offsets are unusable.
fn token_text(bytes: &[u8], start: i32, end: i32) -> &[u8] {
    let start = usize::try_from(start).unwrap_or(0).min(bytes.len());
    let end = usize::try_from(end)
        .unwrap_or(bytes.len())
        .clamp(start, bytes.len());
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::fingerprint;

    fn fp(sql: &str) -> u64 {
        fingerprint(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    #[test]
    fn whitespace_case_and_literals_are_normalised() {
        assert_eq!(
            fp("SELECT * FROM t WHERE id = 1"),
            fp("select *  from t where id=2")
        );
        assert_eq!(
            fp("SELECT * FROM t WHERE name = 'a'"),
            fp("SELECT * FROM t /* hi */ WHERE name = $$b$$ -- x")
        );
    }

    #[test]
    fn different_tables_schemas_and_aliases_differ() {
        assert_ne!(fp("SELECT * FROM orders"), fp("SELECT * FROM secrets"));
        assert_ne!(fp("SELECT * FROM orders o"), fp("SELECT * FROM secrets o"));
        assert_ne!(fp("SELECT * FROM a.t"), fp("SELECT * FROM b.t"));
        assert_ne!(fp("SELECT * FROM t_2024_01"), fp("SELECT * FROM t_2024_02"));
        assert_ne!(fp("SELECT * FROM \"T\""), fp("SELECT * FROM \"t\""));
        assert_ne!(fp("SELECT 1 + 2"), fp("SELECT 1 - 2"));
    }

    #[test]
    fn pg_query_fingerprint_would_collide_where_ours_does_not() {
        // Evidence for not using pg_query::fingerprint as a cache key.
        let pq = |s: &str| pg_query::fingerprint(s, 0, 0).map(|f| f.value).ok();
        assert_eq!(pq("SELECT * FROM orders o"), pq("SELECT * FROM secrets o"));
        assert_ne!(fp("SELECT * FROM orders o"), fp("SELECT * FROM secrets o"));
        let deep = |t: &str| {
            format!(
                "SELECT {}(SELECT count(*) FROM {t}){}",
                "1+(".repeat(120),
                ")".repeat(120)
            )
        };
        assert_eq!(pq(&deep("orders")), pq(&deep("secrets")));
        assert_ne!(fp(&deep("orders")), fp(&deep("secrets")));
    }

    #[test]
    fn comments_are_where_postgres_says_they_are() {
        // PostgreSQL reads `-- ' ; SELECT * FROM secrets` as a comment: the two strings are the
        // same statement, and share a key.
        assert_eq!(fp("SELECT 1 -- ' ; SELECT * FROM secrets"), fp("SELECT 1"));
        // Inside a string literal, `--` is not a comment: two statements, different key.
        assert_ne!(
            fp("SELECT '1 -- ' ; SELECT * FROM secrets"),
            fp("SELECT '1 -- '")
        );
        assert_ne!(
            fp("SELECT 1 /* ' */ ; SELECT * FROM secrets"),
            fp("SELECT 1 /* ' ; SELECT * FROM secrets */")
        );
        // Nested block comments, as PostgreSQL nests them.
        assert_ne!(
            fp("SELECT 1 /* /* */ ; SELECT * FROM secrets */"),
            fp("SELECT 1 /* */ ; SELECT * FROM secrets")
        );
        // Dollar quoting hides a statement inside a literal.
        assert_ne!(
            fp("SELECT $$ $$; SELECT * FROM secrets; $$ $$"),
            fp("SELECT $$ x $$")
        );
        assert_eq!(
            fp("SELECT $a$ ; SELECT * FROM secrets $a$"),
            fp("SELECT 'x'")
        );
    }

    #[test]
    fn uescape_string_is_part_of_the_key() {
        assert_ne!(
            fp("SELECT * FROM U&\"!0073ecrets\" UESCAPE '!'"),
            fp("SELECT * FROM U&\"!0073ecrets\" UESCAPE '#'")
        );
    }

    #[test]
    fn stable_within_the_process() {
        assert_eq!(fp("SELECT 1"), fp("SELECT 1"));
        assert_eq!(fp(""), fp("  -- nothing"));
    }

    #[test]
    fn unterminated_input_is_an_error_or_distinct() {
        // The scanner either rejects an unterminated literal or keys it apart from complete
        // statements; it must never equal a harmless statement's key.
        match fingerprint("SELECT 'abc") {
            Err(_) => {}
            Ok(k) => assert_ne!(k, fp("SELECT 'abc'")),
        }
    }
}
