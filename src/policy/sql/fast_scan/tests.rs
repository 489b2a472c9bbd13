//! Differential tests: wherever the Rust scanner gives a key, it is the key PostgreSQL's
//! scanner path gives, so the decision cache cannot tell the two apart (and a statement can
//! never share a key with one whose token stream differs, beyond what the scanner path allows).

use super::super::fingerprint::{fast_fingerprint as fast_key, scanner_fingerprint as scanner_key};
use super::keywords;

/// Compares both paths on `sql`; returns whether the fast path answered.
fn check(sql: &str) -> bool {
    let Some(fast) = fast_key(sql) else {
        return false;
    };
    match scanner_key(sql) {
        Ok(slow) => assert_eq!(fast, slow, "keys differ for {sql:?}"),
        Err(e) => panic!("fast path keyed {sql:?}, which the scanner rejects: {e}"),
    }
    true
}

/// A small deterministic generator (xorshift), so a failure names a reproducible statement.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Spells `word` in a random mix of upper and lower case.
fn random_case(rng: &mut Rng, word: &str) -> String {
    word.chars()
        .map(|c| {
            if rng.below(2) == 0 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

/// Fragments inside the subset the fast path scans (it must answer for these).
#[rustfmt::skip]
const PLAIN: &[&str] = &[
    "select", "from", "where", "and", "or", "not", "in", "is", "null", "limit", "offset",
    "order", "by", "group", "having", "insert", "into", "values", "update", "set", "delete",
    "returning", "join", "left", "on", "as", "case", "when", "then", "else", "end", "between",
    "like", "ilike", "with", "nulls", "first", "last", "time", "zone", "ordinality", "format",
    "json", "names", "role", "user", "current_user", "true", "false", "array", "exists", "any",
    "all", "distinct", "count", "coalesce", "interval", "varchar", "int", "orders", "amount",
    "id", "pgbench_accounts", "aid", "a$b", "_x", "t1", "Orders", "x_2024_01", "\"Orders\"",
    "\"a\"\"b\"", "\"select\"", "e", "E", "b", "x", "n", "u", "0", "1", "42", "007",
    "2147483647", "2147483648", "9999999999", "123456789012345678", "1.5", ".5", "1.", "''",
    "'a'", "'it''s'", "$1", "$12", "=", "<", ">", "<=", ">=", "<>", "!=", "=>", "+", "-", "*",
    "/", "%", "^", "::", ":=", ":", ",", "(", ")", "[", "]", ";", ".",
];

/// Fragments the fast path leaves to PostgreSQL's scanner, or that change how their
/// neighbours scan: it must give up on them or agree with the scanner.
#[rustfmt::skip]
const EXOTIC: &[&str] = &[
    "uescape", "\"\"", "\"unterminated", "U&\"x\"",
    "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklm",
    "-2147483648", "1234567890123456789012", "1e5", "1.5E-3", "1_000", "0x1F", "0o17", "0b101",
    "1..2", "1.2.3", "12abc", "'a\\b'", "E'a\\nb'", "e'x'", "N'x'", "B'0101'", "X'ff'",
    "U&'d\\0061t'", "'a'\n'b'", "'a' 'b'", "'unterminated", "$$dollar$$", "$q$x$q$", "$1a", "$",
    "$0", "||", "~", "!", "@", "#", "&", "|", "?", "=-", "<-", "+-", "*-", "->>", "@>", ":::",
    "..", "\\", "{", "}", "`", "-- comment\n", "/* c */", "/* unterminated", "--", "'é'",
    "café", "\"naïve\"",
];

#[rustfmt::skip]
const SEPARATORS: &[&str] = &["", " ", " ", " ", "  ", "\n", "\t", "\r\n", "\x0c", "\x0b"];

#[test]
fn fast_key_equals_scanner_key_on_generated_statements() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut total, mut fast) = (0, 0);
    for _ in 0..20_000 {
        let len = 1 + rng.below(12);
        let mut sql = String::new();
        for _ in 0..len {
            let frag = if rng.below(40) == 0 {
                rng.pick(EXOTIC)
            } else {
                rng.pick(PLAIN)
            };
            let frag = if rng.below(3) == 0 {
                random_case(&mut rng, frag)
            } else {
                frag.to_string()
            };
            sql.push_str(&frag);
            sql.push_str(rng.pick(SEPARATORS));
        }
        total += 1;
        if check(&sql) {
            fast += 1;
        }
    }
    // The test only means something if the fast path answers often.
    assert!(fast * 3 > total, "fast path answered {fast} of {total}");
}

#[test]
fn fast_key_equals_scanner_key_on_all_short_strings() {
    // Every string of up to three characters over an alphabet that reaches every branch.
    let alphabet = [
        "a", "E", "1", "0", ".", " ", "\n", "'", "\"", "$", "-", "+", "<", "=", ">", ":", "!", "(",
        ";", "*", "/", "e", "_", "&", "|",
    ];
    let mut fast = 0;
    for a in alphabet {
        check(a);
        for b in alphabet {
            check(&format!("{a}{b}"));
            for c in alphabet {
                if check(&format!("{a}{b}{c}")) {
                    fast += 1;
                }
            }
        }
    }
    assert!(
        fast > 2_000,
        "fast path answered only {fast} three-character strings"
    );
}

#[test]
fn every_keyword_keys_like_the_scanner() {
    let words = keywords();
    // PostgreSQL 17 has about 490 keywords; a broken table would show here first.
    assert!(words.len() > 400, "only {} keywords", words.len());
    for word in words.keys() {
        let word = std::str::from_utf8(word).expect("keywords are ASCII");
        let upper = word.to_ascii_uppercase();
        for sql in [
            format!("SELECT {word} FROM t"),
            format!("{upper} x"),
            format!("a.{word}"),
            format!("{word}1"),
        ] {
            assert!(
                check(&sql) || word == "uescape",
                "fast path gave up on {sql:?}"
            );
        }
    }
}

#[test]
fn statements_agents_send_take_the_fast_path() {
    for sql in [
        "SELECT amount FROM orders WHERE id = 42",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
        "UPDATE pgbench_accounts SET abalance = abalance + -42 WHERE aid = 7;",
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 2, 3, 4, CURRENT_TIMESTAMP);",
        "select \"Id\", name from public.\"Customers\" where email like 'a%' and id in ($1, $2) limit 10",
        "SELECT o.id, c.email FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.amount >= 10.50 ORDER BY o.id DESC NULLS LAST",
        "SELECT count(*)::int FROM orders WHERE created_at > now() - interval '1 day'",
        "BEGIN",
        "COMMIT",
    ] {
        assert!(check(sql), "fast path gave up on {sql:?}");
    }
}

#[test]
fn literals_are_normalised_and_structure_is_not() {
    let key = |s: &str| fast_key(s).unwrap_or_else(|| panic!("{s}"));
    assert_eq!(
        key("SELECT * FROM t WHERE id = 1"),
        key("select *  from t\nwhere id=2")
    );
    assert_eq!(key("SELECT 'a', 1.5"), key("SELECT 'it''s', 2.25"));
    assert_ne!(key("SELECT * FROM orders"), key("SELECT * FROM secrets"));
    assert_ne!(
        key("SELECT * FROM orders o"),
        key("SELECT * FROM secrets o")
    );
    assert_ne!(key("SELECT * FROM \"T\""), key("SELECT * FROM \"t\""));
    assert_ne!(key("SELECT 1 + 2"), key("SELECT 1 - 2"));
    assert_ne!(key("SELECT 1"), key("SELECT 2147483648"));
    assert_ne!(key("SELECT $1"), key("SELECT $2"));
    assert_ne!(key("SELECT id FROM t"), key("SELECT \"id\" FROM t"));
}
