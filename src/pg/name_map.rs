//! Maps keyed by the client's prepared statement and portal names. The unnamed one (`""`),
//! which most drivers use for every statement, is kept in a field of its own: the per-message
//! lookups of the extended protocol then hash nothing.

use std::collections::HashMap;

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
            self.named.get(name)
        }
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut V> {
        if name.is_empty() {
            self.unnamed.as_mut()
        } else {
            self.named.get_mut(name)
        }
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn insert(&mut self, name: String, value: V) -> Option<V> {
        if name.is_empty() {
            self.unnamed.replace(value)
        } else {
            self.named.insert(name, value)
        }
    }

    pub fn remove(&mut self, name: &str) -> Option<V> {
        if name.is_empty() {
            self.unnamed.take()
        } else {
            self.named.remove(name)
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
