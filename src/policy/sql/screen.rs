//! A cheap screen for statements: does the text mention one of a few words (ASCII, any case)?
//! One pass over the bytes, so the passthrough fast path and per-statement bookkeeping pay
//! next to nothing for statements that mention none of them.

/// The passthrough fast path's words, in one pass: a statement that mentions none of them can
/// neither touch the upstream login (`login_guard::may_touch`) nor signal a backend
/// (`backend_signals::may_signal`), and is let through without a parse.
const PASSTHROUGH: [&str; 17] = [
    "alter",
    "drop",
    "revoke",
    "encoding",
    "standard_conforming",
    "names",
    "set_config",
    "u&",
    "pg_cancel_backend",
    "pg_terminate_backend",
    "_mem",
    "execute",
    "e'",
    "pg_settings",
    "query_to_",
    "ts_stat",
    "ts_rewrite",
];

static PASSTHROUGH_SCREEN: Screen = Screen::new(&PASSTHROUGH);

/// Whether a passthrough statement needs the analysis (see [`PASSTHROUGH`]).
pub fn passthrough_needs_analysis(text: &str) -> bool {
    PASSTHROUGH_SCREEN.matches(text) || continues_a_string(text.as_bytes())
}

/// Whether the text holds a string literal continued on the next line (`'AL'` newline `'TER'`):
/// PostgreSQL joins the two, so a word split across them is in no screen's sight (a re-review
/// ran `DO 'BEGIN AL'` newline `'TER ROLE ...'` unparsed). Such a text is parsed.
pub fn continues_a_string(bytes: &[u8]) -> bool {
    (0..bytes.len()).any(|i| bytes[i] == b'\'' && continuation_after(&bytes[i + 1..]).is_some())
}

/// The length of what PostgreSQL's lexer takes as a string's continuation at the start of
/// `rest` (after a closing quote): whitespace and `--` comments with at least one newline (`\n`
/// or `\r`) in them, up to the opening quote of the next string, which it joins to the first
/// (its `whitespace_with_newline` before a quote). `None` when the string does not continue.
pub fn continuation_after(rest: &[u8]) -> Option<usize> {
    let (mut i, mut newline) = (0, false);
    loop {
        match rest.get(i) {
            Some(b' ' | b'\t' | b'\x0b' | b'\x0c') => i += 1,
            Some(b'\n' | b'\r') => {
                newline = true;
                i += 1;
            }
            Some(b'-') if rest.get(i + 1) == Some(&b'-') => {
                while !matches!(rest.get(i), None | Some(b'\n' | b'\r')) {
                    i += 1;
                }
            }
            Some(b'\'') if newline => return Some(i),
            _ => return None,
        }
    }
}

/// [`mentions_any`] with its words indexed by first byte once, at compile time: a byte that
/// starts no word costs one table load (about half the time of `mentions_any` on pgbench's
/// statements, with more words).
pub struct Screen {
    words: &'static [&'static str],
    /// For each byte, the words (bits) that start with it, in either case.
    by_first: [u32; 256],
    /// For each byte, the words (bits) whose second byte it is, in either case: a word is
    /// compared only where both of its first two bytes are, which ordinary statements rarely
    /// have (the letters of `names` or `reset` are everywhere, `na` and `re` much less so).
    by_second: [u32; 256],
}

impl Screen {
    /// `words`: at most 32, lower-case ASCII, each at least two bytes long.
    pub const fn new(words: &'static [&'static str]) -> Screen {
        assert!(words.len() <= 32);
        let mut by_first = [0u32; 256];
        let mut by_second = [0u32; 256];
        let mut i = 0;
        while i < words.len() {
            let w = words[i].as_bytes();
            assert!(w.len() >= 2);
            by_first[w[0] as usize] |= 1 << i;
            by_first[w[0].to_ascii_uppercase() as usize] |= 1 << i;
            by_second[w[1] as usize] |= 1 << i;
            by_second[w[1].to_ascii_uppercase() as usize] |= 1 << i;
            i += 1;
        }
        Screen {
            words,
            by_first,
            by_second,
        }
    }

    /// Whether `text` contains one of the words, ignoring ASCII case.
    pub fn matches(&self, text: &str) -> bool {
        self.matches_bytes(text.as_bytes())
    }

    /// [`Screen::matches`] on bytes in any ASCII-compatible encoding (a message not decoded yet).
    pub fn matches_bytes(&self, bytes: &[u8]) -> bool {
        self.scan(bytes, true) != 0
    }

    /// The words (bits, in the order given to [`Screen::new`]) that `bytes` contains, ignoring
    /// ASCII case: one pass answers several questions about one text.
    pub fn found(&self, bytes: &[u8]) -> u32 {
        self.scan(bytes, false)
    }

    /// The words found in `bytes`; with `first`, the scan stops at the first one.
    fn scan(&self, bytes: &[u8], first: bool) -> u32 {
        let mut found = 0u32;
        for (i, pair) in bytes.windows(2).enumerate() {
            let mut set =
                self.by_first[usize::from(pair[0])] & self.by_second[usize::from(pair[1])] & !found;
            while set != 0 {
                let bit = set.trailing_zeros() as usize;
                set &= set - 1;
                let word = self.words[bit].as_bytes();
                if bytes
                    .get(i..i + word.len())
                    .is_some_and(|r| r.eq_ignore_ascii_case(word))
                {
                    found |= 1 << bit;
                    if first {
                        return found;
                    }
                }
            }
        }
        found
    }
}

/// Whether `text` contains one of `words` (lower-case ASCII), ignoring ASCII case: the plain
/// definition every [`Screen`] is tested against.
#[cfg(test)]
fn mentions_any(text: &str, words: &[&str]) -> bool {
    let bytes = text.as_bytes();
    let mut firsts = [false; 256];
    for w in words {
        if let Some(&b) = w.as_bytes().first() {
            firsts[usize::from(b)] = true;
            firsts[usize::from(b.to_ascii_uppercase())] = true;
        }
    }
    for (i, &b) in bytes.iter().enumerate() {
        if !firsts[usize::from(b)] {
            continue;
        }
        let rest = &bytes[i..];
        if words
            .iter()
            .any(|w| rest.len() >= w.len() && rest[..w.len()].eq_ignore_ascii_case(w.as_bytes()))
        {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_words_in_any_case_anywhere() {
        let words = ["alter", "set_config"];
        assert!(mentions_any("ALTER role x", &words));
        assert!(mentions_any("select SeT_CoNfIg('a','b',false)", &words));
        assert!(mentions_any("x;alter", &words));
        assert!(!mentions_any("SELECT * FROM orders WHERE id = 1", &words));
        assert!(!mentions_any("alte", &words));
        assert!(!mentions_any("", &words));
        assert!(mentions_any("é ALTER", &words));
    }

    #[test]
    fn a_screen_finds_what_mentions_any_finds() {
        static WORDS: [&str; 3] = ["alter", "set_config", "u&"];
        static SCREEN: Screen = Screen::new(&WORDS);
        for text in [
            "ALTER role x",
            "select SeT_CoNfIg('a','b',false)",
            "x;alter",
            "SELECT * FROM orders WHERE id = 1",
            "alte",
            "",
            "é ALTER",
            "SELECT U&\"x\"",
            "u",
        ] {
            assert_eq!(SCREEN.matches(text), mentions_any(text, &WORDS), "{text}");
        }
    }

    proptest::proptest! {
        /// Texts built from pieces of the words (any case) and filler: the screen (which looks
        /// at two bytes before comparing) finds exactly what the plain definition finds.
        #[test]
        fn a_screen_agrees_with_mentions_any(
            pieces in proptest::collection::vec(
                (0usize..12, proptest::bool::ANY, 0usize..6),
                0..24,
            )
        ) {
            const FRAGMENTS: [&str; 12] = [
                "alter", "alte", "lter", "u&", "u", "&", "set_config", "set_", "names", "na",
                " ", "é",
            ];
            let mut text = String::new();
            for (i, upper, cut) in pieces {
                let f = FRAGMENTS[i];
                // Cut ASCII fragments short (`é` stays whole).
                let f = if f.is_ascii() { &f[..f.len().saturating_sub(cut).max(1)] } else { f };
                if upper {
                    text.push_str(&f.to_ascii_uppercase());
                } else {
                    text.push_str(f);
                }
            }
            static WORDS: [&str; 4] = ["alter", "set_config", "u&", "names"];
            static SCREEN: Screen = Screen::new(&WORDS);
            proptest::prop_assert_eq!(SCREEN.matches(&text), mentions_any(&text, &WORDS), "{}", text);
        }
    }

    proptest::proptest! {
        /// `found` says, word by word, what `matches` says for that word alone.
        #[test]
        fn found_is_matches_word_by_word(text in "[a-zA-Z_& é]{0,40}") {
            static WORDS: [&str; 4] = ["alter", "set_config", "u&", "names"];
            static SCREEN: Screen = Screen::new(&WORDS);
            let found = SCREEN.found(text.as_bytes());
            for (i, w) in WORDS.iter().enumerate() {
                proptest::prop_assert_eq!(found & (1 << i) != 0, mentions_any(&text, &[w]), "{} in {}", w, text);
            }
        }
    }

    #[test]
    fn string_continuations_are_found_as_postgresql_joins_them() {
        for text in [
            "'a'\n'b'",
            "'a'  \n\t 'b'",
            "'a'\r'b'",
            "'a' -- c\n'b'",
            "'a' -- c\n -- d\n 'b'",
        ] {
            assert!(continues_a_string(text.as_bytes()), "{text:?}");
        }
        for text in [
            "'a' 'b'",
            "'a' /* c */ 'b'",
            "'a' -- c 'b'",
            "'a', 'b'",
            "'a'",
        ] {
            assert!(!continues_a_string(text.as_bytes()), "{text:?}");
        }
    }

    #[test]
    fn the_passthrough_screen_is_every_screen_in_one() {
        let mut union: Vec<&str> = super::super::login_guard::TRIGGERS
            .iter()
            .chain(super::super::backend_signals::SCREEN.iter())
            .copied()
            .collect();
        union.sort_unstable();
        union.dedup();
        let mut ours = PASSTHROUGH.to_vec();
        ours.sort_unstable();
        assert_eq!(ours, union);
    }
}
