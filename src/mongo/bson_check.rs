//! Strict BSON validation of what agents send. BSON itself allows a key twice in one document,
//! and servers, drivers and policy readers disagree about which copy wins: a policy that reads
//! the first `find` while the server obeys the last is a bypass. So every document of a command
//! is checked whole, at every level, before anything reads it: well-formed elements (through
//! the `bson` crate's raw reader), UTF-8 keys and strings, no duplicate keys, array keys
//! `0, 1, 2, ...` in order, and a bounded nesting depth.

use std::collections::HashSet;

use bson::raw::{RawBsonRef, RawDocument};

/// MongoDB itself refuses documents nested deeper than 180 levels when storing them; commands
/// an agent needs are far shallower. Deeper input is refused (and recursion stays bounded).
pub const MAX_DEPTH: usize = 100;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BsonError {
    #[error("invalid BSON: {0}")]
    Malformed(String),
    #[error("duplicate key \"{key}\" in {path}: ambiguous documents are refused")]
    DuplicateKey { key: String, path: String },
    #[error("BSON nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("array key \"{key}\" at {path} is out of order (expected \"{expected}\")")]
    ArrayKey {
        key: String,
        path: String,
        expected: usize,
    },
}

/// Checks one document and returns it as a `RawDocument` that every later reader may trust.
pub fn validate(bytes: &[u8]) -> Result<&RawDocument, BsonError> {
    let doc = RawDocument::from_bytes(bytes).map_err(|e| BsonError::Malformed(e.to_string()))?;
    check_document(doc, 1, &mut String::new())?;
    Ok(doc)
}

/// Reads the document at the start of `bytes` (its length prefix says where it ends) and checks
/// it; returns it and the number of bytes it took.
pub fn validate_prefix(bytes: &[u8]) -> Result<(&RawDocument, usize), BsonError> {
    if bytes.len() < 5 {
        return Err(BsonError::Malformed("document shorter than 5 bytes".into()));
    }
    let len = i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if len < 5 || len as usize > bytes.len() {
        return Err(BsonError::Malformed(format!(
            "document length {len} does not fit in the {} bytes left",
            bytes.len()
        )));
    }
    let len = len as usize;
    Ok((validate(&bytes[..len])?, len))
}

fn check_document(doc: &RawDocument, depth: usize, path: &mut String) -> Result<(), BsonError> {
    if depth > MAX_DEPTH {
        return Err(BsonError::TooDeep);
    }
    // Most command documents have a handful of keys: a linear scan beats hashing there.
    let mut small: Vec<&str> = Vec::new();
    let mut large: Option<HashSet<&str>> = None;
    for item in doc.iter() {
        let (key, value) = item.map_err(|e| BsonError::Malformed(e.to_string()))?;
        let key = key.as_str();
        let fresh = match &mut large {
            Some(set) => set.insert(key),
            None if small.len() < 16 => {
                let fresh = !small.contains(&key);
                small.push(key);
                fresh
            }
            None => {
                let mut set: HashSet<&str> = small.drain(..).collect();
                let fresh = set.insert(key);
                large = Some(set);
                fresh
            }
        };
        if !fresh {
            return Err(BsonError::DuplicateKey {
                key: key.to_string(),
                path: describe(path),
            });
        }
        check_value(value, key, depth, path)?;
    }
    Ok(())
}

fn check_value(
    value: RawBsonRef<'_>,
    key: &str,
    depth: usize,
    path: &mut String,
) -> Result<(), BsonError> {
    let mark = path.len();
    let descend = |path: &mut String| {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
    };
    let result = match value {
        RawBsonRef::Document(d) => {
            descend(path);
            check_document(d, depth + 1, path)
        }
        RawBsonRef::Array(a) => {
            descend(path);
            if depth + 1 > MAX_DEPTH {
                return Err(BsonError::TooDeep);
            }
            let doc = RawDocument::from_bytes(a.as_bytes())
                .map_err(|e| BsonError::Malformed(e.to_string()))?;
            for (expected, item) in doc.iter().enumerate() {
                let (k, v) = item.map_err(|e| BsonError::Malformed(e.to_string()))?;
                if k.as_str().parse::<usize>().ok() != Some(expected)
                    || (k.as_str().len() > 1 && k.as_str().starts_with('0'))
                {
                    return Err(BsonError::ArrayKey {
                        key: k.as_str().to_string(),
                        path: describe(path),
                        expected,
                    });
                }
                check_value(v, k.as_str(), depth + 1, path)?;
            }
            Ok(())
        }
        RawBsonRef::JavaScriptCodeWithScope(c) => {
            descend(path);
            check_document(c.scope, depth + 1, path)
        }
        // Every other element was fully decoded (strings as UTF-8) by the iterator.
        _ => Ok(()),
    };
    path.truncate(mark);
    result
}

fn describe(path: &str) -> String {
    if path.is_empty() {
        "the top level".into()
    } else {
        path.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a document from (type, key, payload) elements, duplicates and all.
    pub(crate) fn raw_doc(elements: &[(u8, &str, Vec<u8>)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (t, k, payload) in elements {
            body.push(*t);
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(payload);
        }
        let mut out = ((body.len() + 5) as i32).to_le_bytes().to_vec();
        out.extend_from_slice(&body);
        out.push(0);
        out
    }

    pub(crate) fn string(s: &[u8]) -> Vec<u8> {
        let mut v = ((s.len() + 1) as i32).to_le_bytes().to_vec();
        v.extend_from_slice(s);
        v.push(0);
        v
    }

    #[test]
    fn accepts_ordinary_commands() {
        let doc = bson::rawdoc! { "find": "orders", "filter": { "a": [1, 2, { "b": "c" }] }, "$db": "shop" };
        assert!(validate(doc.as_bytes()).is_ok());
    }

    #[test]
    fn duplicate_keys_are_refused_at_every_level() {
        let top = raw_doc(&[
            (2, "find", string(b"orders")),
            (2, "find", string(b"secrets")),
        ]);
        assert!(
            matches!(validate(&top), Err(BsonError::DuplicateKey { key, .. }) if key == "find")
        );
        let inner = raw_doc(&[
            (0x10, "a", 1i32.to_le_bytes().to_vec()),
            (0x10, "a", 2i32.to_le_bytes().to_vec()),
        ]);
        let outer = raw_doc(&[(2, "find", string(b"orders")), (3, "filter", inner)]);
        let err = validate(&outer).unwrap_err();
        assert_eq!(
            err,
            BsonError::DuplicateKey {
                key: "a".into(),
                path: "filter".into()
            }
        );
        // More keys than the linear scan handles.
        let mut many: Vec<(u8, String, Vec<u8>)> = (0..40)
            .map(|i| (0x10, format!("k{i}"), 1i32.to_le_bytes().to_vec()))
            .collect();
        many.push((0x10, "k33".into(), vec![0; 4]));
        let refs: Vec<(u8, &str, Vec<u8>)> = many
            .iter()
            .map(|(t, k, p)| (*t, k.as_str(), p.clone()))
            .collect();
        assert!(matches!(
            validate(&raw_doc(&refs)),
            Err(BsonError::DuplicateKey { .. })
        ));
    }

    #[test]
    fn invalid_utf8_and_bad_arrays_are_refused() {
        let bad_str = raw_doc(&[(2, "find", string(&[0xff, 0xfe]))]);
        assert!(matches!(validate(&bad_str), Err(BsonError::Malformed(_))));
        let arr = raw_doc(&[(0x10, "1", 1i32.to_le_bytes().to_vec())]);
        let doc = raw_doc(&[(4, "pipeline", arr)]);
        assert!(matches!(validate(&doc), Err(BsonError::ArrayKey { .. })));
        let arr = raw_doc(&[(0x10, "0", vec![1, 0, 0, 0]), (0x10, "0", vec![2, 0, 0, 0])]);
        assert!(validate(&raw_doc(&[(4, "a", arr)])).is_err());
    }

    #[test]
    fn nesting_is_bounded() {
        let mut doc = raw_doc(&[]);
        for _ in 0..MAX_DEPTH {
            doc = raw_doc(&[(3, "a", doc)]);
        }
        assert_eq!(validate(&doc).unwrap_err(), BsonError::TooDeep);
        let mut ok = raw_doc(&[]);
        for _ in 0..MAX_DEPTH - 1 {
            ok = raw_doc(&[(3, "a", ok)]);
        }
        assert!(validate(&ok).is_ok());
    }

    #[test]
    fn truncated_and_lying_lengths_are_errors() {
        let good = bson::rawdoc! { "a": "b" }.into_bytes();
        for cut in 0..good.len() {
            assert!(validate(&good[..cut]).is_err());
        }
        let mut lying = good.clone();
        lying[0] = 200;
        assert!(validate(&lying).is_err());
        assert!(validate_prefix(&lying).is_err());
        let (_, n) = validate_prefix(&[good.clone(), vec![1, 2, 3]].concat()).unwrap();
        assert_eq!(n, good.len());
    }
}
