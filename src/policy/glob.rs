//! Glob patterns for table, function and key names: `*` any run, `?` one character.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(String);

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        Glob(pattern.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, text: &str) -> bool {
        glob_match(self.0.as_bytes(), text.as_bytes())
    }

    /// This `schema.table` pattern against a relation's own two parts, each against its own:
    /// `public.*` does not reach `"public.evil".t`, whose joined text `public.evil.t` `matches`
    /// would accept. A pattern without a dot reaches nothing.
    pub fn matches_parts(&self, schema: &str, name: &str) -> bool {
        self.0.split_once('.').is_some_and(|(s, n)| {
            glob_match(s.as_bytes(), schema.as_bytes()) && glob_match(n.as_bytes(), name.as_bytes())
        })
    }

    /// `matches` for names that need not be UTF-8 (Redis keys and channels).
    pub fn matches_bytes(&self, text: &[u8]) -> bool {
        glob_match(self.0.as_bytes(), text)
    }
}

/// Iterative matcher with single-star backtracking: linear in practice, no recursion.
fn glob_match(p: &[u8], t: &[u8]) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_table() {
        for (p, t, m) in [
            ("public.orders", "public.orders", true),
            ("public.*", "public.orders", true),
            ("public.*", "private.orders", false),
            ("*", "x.y", true),
            ("cache:*", "cache:", true),
            ("cache:*", "cach", false),
            ("a?c", "abc", true),
            ("*.secrets", "public.secrets", true),
            ("p*s", "public.orders", true),
            ("p*s", "public.order", false),
            ("", "", true),
        ] {
            assert_eq!(Glob::new(p).matches(t), m, "{p} ~ {t}");
        }
    }

    #[test]
    fn parts_are_matched_each_against_its_own() {
        for (p, schema, name, m) in [
            ("public.*", "public", "orders", true),
            ("public.*", "public.evil", "t", false),
            ("public.*", "public", "x.y", true),
            ("*.orders", "sales", "orders", true),
            ("*.orders", "sales", "x.orders", false),
            ("*.*", "any", "thing", true),
            ("p?blic.o*", "public", "orders", true),
            ("orders", "public", "orders", false),
        ] {
            assert_eq!(
                Glob::new(p).matches_parts(schema, name),
                m,
                "{p} ~ ({schema}, {name})"
            );
        }
    }
}
