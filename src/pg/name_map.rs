//! Maps keyed by the client's prepared statement and portal names. The unnamed one (`""`),
//! which most drivers use for every statement, is kept in a field of its own: the per-message
//! lookups of the extended protocol then hash nothing.
//!
//! Names are keyed as PostgreSQL keys them: by their first 63 bytes (`NAMEDATALEN - 1`; its
//! portal and prepared-statement tables copy names with `strlcpy` into 64-byte keys, cutting
//! bytes, not characters). Two names that agree on those bytes are one portal on the server,
//! so they are one here: before, a protocol portal named with 64 bytes and a SQL `FETCH` of
//! its first 63 read one server portal under two row counts (2,000 rows past a limit of 1,000).

use std::borrow::Cow;
use std::collections::HashMap;

/// The longest name PostgreSQL keeps, in bytes.
const NAME_BYTES: usize = 63;

/// `name` as PostgreSQL keys it: its first 63 bytes. A cut inside a character leaves bytes that
/// are not UTF-8: they are kept after a NUL (which no client name holds), in hex, so names that
/// differ there stay apart, as on the server.
pub fn server_key(name: &str) -> Cow<'_, str> {
    if name.len() <= NAME_BYTES {
        return Cow::Borrowed(name);
    }
    let bytes = &name.as_bytes()[..NAME_BYTES];
    match std::str::from_utf8(bytes) {
        Ok(whole) => Cow::Borrowed(whole),
        Err(e) => {
            let (valid, partial) = bytes.split_at(e.valid_up_to());
            let valid = std::str::from_utf8(valid).unwrap_or_default();
            Cow::Owned(format!("{valid}\0{}", hex::encode(partial)))
        }
    }
}

/// `name` as PostgreSQL shows a name it truncated: its whole characters within the first 63
/// bytes (`pg_mbcliplen`), e.g. a database name in "does not exist".
pub fn clipped(name: &str) -> &str {
    let mut end = name.len().min(NAME_BYTES);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

#[derive(Debug)]
pub struct NameMap<V> {
    unnamed: Option<V>,
    named: HashMap<String, V>,
}

impl<V> Default for NameMap<V> {
    fn default() -> Self {
        NameMap {
            unnamed: None,
            named: HashMap::new(),
        }
    }
}

impl<V> NameMap<V> {
    pub fn get(&self, name: &str) -> Option<&V> {
        if name.is_empty() {
            self.unnamed.as_ref()
        } else {
            self.named.get(&*server_key(name))
        }
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut V> {
        if name.is_empty() {
            self.unnamed.as_mut()
        } else {
            self.named.get_mut(&*server_key(name))
        }
    }

    pub fn is_empty(&self) -> bool {
        self.unnamed.is_none() && self.named.is_empty()
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn insert(&mut self, name: String, value: V) -> Option<V> {
        if name.is_empty() {
            self.unnamed.replace(value)
        } else {
            let key = match server_key(&name) {
                Cow::Borrowed(k) if k.len() == name.len() => name,
                cut => cut.into_owned(),
            };
            self.named.insert(key, value)
        }
    }

    pub fn remove(&mut self, name: &str) -> Option<V> {
        if name.is_empty() {
            self.unnamed.take()
        } else {
            self.named.remove(&*server_key(name))
        }
    }

    /// Keeps the values `keep` says to keep.
    pub fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        if self.unnamed.as_ref().is_some_and(|v| !keep(v)) {
            self.unnamed = None;
        }
        self.named.retain(|_, v| keep(v));
    }

    pub fn clear(&mut self) {
        self.unnamed = None;
        self.named.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(String, u32),
        Remove(String),
        Clear,
        Retain(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        let name = prop_oneof![Just(String::new()), "[ab]{0,2}"];
        prop_oneof![
            (name.clone(), any::<u32>()).prop_map(|(n, v)| Op::Insert(n, v)),
            name.prop_map(Op::Remove),
            Just(Op::Clear),
            any::<u32>().prop_map(Op::Retain),
        ]
    }

    #[test]
    fn clipped_names_keep_whole_characters() {
        assert_eq!(clipped("shop"), "shop");
        assert_eq!(clipped(&"x".repeat(100)), "x".repeat(63));
        // 62 ASCII bytes, then a 2-byte character that would end past byte 63.
        let name = format!("{}é", "a".repeat(62));
        assert_eq!(clipped(&name), "a".repeat(62));
    }

    #[test]
    fn names_are_one_when_their_first_63_bytes_are() {
        let p63 = "p".repeat(63);
        let mut m = NameMap::default();
        m.insert(format!("{p63}X"), 1);
        assert_eq!(m.get(&p63), Some(&1));
        assert_eq!(m.get(&format!("{p63}Y")), Some(&1));
        assert_eq!(m.insert(p63.clone(), 2), Some(1));
        assert_eq!(m.remove(&format!("{p63}Z")), Some(2));
        assert!(m.is_empty());
        // A cut inside a character: the bytes that stay tell names apart, as on the server.
        let p62 = "p".repeat(62);
        let (e_acute, e_grave) = (format!("{p62}é"), format!("{p62}è"));
        assert_eq!(&e_acute.as_bytes()[..63], &e_grave.as_bytes()[..63]);
        m.insert(e_acute.clone(), 3);
        assert_eq!(m.get(&e_grave), Some(&3), "the same first 63 bytes");
        assert_eq!(
            m.get(&format!("{p62}ĕ")),
            None,
            "another first byte of the character"
        );
        assert_eq!(m.get(&p62), None);
    }

    proptest! {
        #[test]
        fn behaves_like_a_hash_map(ops in proptest::collection::vec(op(), 0..40)) {
            let mut ours = NameMap::default();
            let mut model = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(n, v) => prop_assert_eq!(ours.insert(n.clone(), v), model.insert(n, v)),
                    Op::Remove(n) => prop_assert_eq!(ours.remove(&n), model.remove(&n)),
                    Op::Clear => {
                        ours.clear();
                        model.clear();
                    }
                    Op::Retain(v) => {
                        ours.retain(|x| *x < v);
                        model.retain(|_, x| *x < v);
                    }
                }
                for n in ["", "a", "b", "ab", "ba", "aa"] {
                    prop_assert_eq!(ours.get(n), model.get(n));
                    prop_assert_eq!(ours.contains_key(n), model.contains_key(n));
                }
            }
        }
    }
}
