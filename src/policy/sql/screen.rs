//! A cheap screen for statements: does the text mention one of a few words (ASCII, any case)?
//! One pass over the bytes, so the passthrough fast path and per-statement bookkeeping pay
//! next to nothing for statements that mention none of them.

/// Whether `text` contains one of `words` (lower-case ASCII), ignoring ASCII case.
pub fn mentions_any(text: &str, words: &[&str]) -> bool {
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
}
