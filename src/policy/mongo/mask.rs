//! Masks for BSON values, and where a masked field sits in a document: pure functions from the
//! real value to what the agent sees. Strategies are the SQL side's (`policy::mask`), applied
//! to BSON: strings are masked, documents and other types under a masked path become null
//! (nothing of their contents survives), arrays are masked element by element, null stays null.

use bson::{Bson, Document};
use sha2::{Digest, Sha256};

use super::path::{is_element, relation_of, Relation};
use super::rules::MaskedField;
use crate::policy::mask::MaskStrategy;

/// One value as the agent sees it. `hash_key` keys the `hash` strategy (so equal values stay
/// equal without being guessable from a dictionary).
pub fn mask_value(v: &Bson, strategy: &MaskStrategy, hash_key: &str) -> Bson {
    match (v, strategy) {
        (Bson::Null, _) | (_, MaskStrategy::Null) => Bson::Null,
        (Bson::Array(items), _) => Bson::Array(
            items
                .iter()
                .map(|i| mask_value(i, strategy, hash_key))
                .collect(),
        ),
        (Bson::String(_), MaskStrategy::Redact(text)) => Bson::String(text.clone()),
        (Bson::String(_), MaskStrategy::Default) => Bson::String("REDACTED".into()),
        (Bson::String(s), MaskStrategy::Hash) => {
            let digest = Sha256::digest([hash_key.as_bytes(), s.as_bytes()].concat());
            Bson::String(format!("h_{}", &hex::encode(digest)[..16]))
        }
        (Bson::String(s), MaskStrategy::Partial(n)) => {
            let chars: Vec<char> = s.chars().collect();
            let n = usize::from(*n);
            if chars.len() > n {
                Bson::String(format!(
                    "***{}",
                    chars[chars.len() - n..].iter().collect::<String>()
                ))
            } else {
                Bson::String("***".into())
            }
        }
        (Bson::String(s), MaskStrategy::Email) => match s.rsplit_once('@') {
            Some((local, domain)) if !local.is_empty() && !domain.is_empty() => {
                Bson::String(format!("***@{domain}"))
            }
            _ => Bson::String("***".into()),
        },
        (Bson::DateTime(d), MaskStrategy::Default) => {
            // Truncated to the start of its year, as the SQL side's date_trunc('year').
            let nanos = i128::from(d.timestamp_millis()) * 1_000_000;
            time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
                .ok()
                .and_then(|t| time::Date::from_ordinal_date(t.year(), 1).ok())
                .map(|day| {
                    let start = day.midnight().assume_utc().unix_timestamp() * 1000;
                    Bson::DateTime(bson::DateTime::from_millis(start))
                })
                .unwrap_or(Bson::Null)
        }
        _ => Bson::Null,
    }
}

/// Applies every masked field to `doc` in place (through subdocuments and arrays of
/// subdocuments along each path).
pub fn mask_document(doc: &mut Document, fields: &[MaskedField], hash_key: &str) {
    for f in fields {
        let parts: Vec<&str> = f.path.split('.').collect();
        mask_path(doc, &parts, &f.strategy, hash_key);
    }
}

fn mask_path(doc: &mut Document, parts: &[&str], strategy: &MaskStrategy, hash_key: &str) {
    let Some((first, rest)) = parts.split_first() else {
        return;
    };
    if let Some(v) = doc.get_mut(*first) {
        if rest.is_empty() {
            *v = mask_value(v, strategy, hash_key);
        } else {
            descend(v, rest, strategy, hash_key);
        }
    }
    mask_dotted_keys(doc, parts, strategy, hash_key);
}

/// Keys that are dotted paths themselves: a change event's `updatedFields` names what an update
/// set by its path (`"address.zip"`, `"contacts.0.phone"`), and field names may hold dots. Each
/// is compared with the masked path as a path (array indexes aside): a key at or inside the
/// masked field is masked whole, a key holding it is masked along the rest of the path.
fn mask_dotted_keys(doc: &mut Document, parts: &[&str], strategy: &MaskStrategy, hash_key: &str) {
    let dotted: Vec<String> = doc.keys().filter(|k| k.contains('.')).cloned().collect();
    for k in dotted {
        let Some(v) = doc.get_mut(&k) else {
            continue;
        };
        match relation_of(k.split('.'), parts.iter().copied()) {
            Relation::Same | Relation::Inside => *v = mask_value(v, strategy, hash_key),
            Relation::Holds => {
                // The rest of the masked path after the key's last field.
                let fields = k.split('.').filter(|s| !is_element(s)).count();
                let mut seen = 0;
                let at = parts
                    .iter()
                    .position(|p| {
                        if !is_element(p) {
                            seen += 1;
                        }
                        seen > fields
                    })
                    .unwrap_or(parts.len());
                match &parts[at..] {
                    [] => *v = mask_value(v, strategy, hash_key),
                    rest => descend(v, rest, strategy, hash_key),
                }
            }
            Relation::Apart => {}
        }
    }
}

fn descend(v: &mut Bson, rest: &[&str], strategy: &MaskStrategy, hash_key: &str) {
    match v {
        Bson::Document(d) => mask_path(d, rest, strategy, hash_key),
        Bson::Array(items) => {
            // `tags.0.email`: an index names one element; otherwise every element.
            if let Ok(i) = rest[0].parse::<usize>() {
                if let Some(item) = items.get_mut(i) {
                    if rest.len() == 1 {
                        *item = mask_value(item, strategy, hash_key);
                    } else {
                        descend(item, &rest[1..], strategy, hash_key);
                    }
                }
            }
            for item in items.iter_mut() {
                descend(item, rest, strategy, hash_key);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn field(path: &str, s: &str) -> MaskedField {
        MaskedField {
            path: path.into(),
            strategy: MaskStrategy::parse(s).unwrap(),
            rule: "r".into(),
        }
    }

    #[test]
    fn strategies_on_bson() {
        let m = |v: Bson, s: &str| mask_value(&v, &MaskStrategy::parse(s).unwrap(), "k");
        assert_eq!(
            m("ann@example.com".into(), "email"),
            Bson::from("***@example.com")
        );
        assert_eq!(m("nope".into(), "email"), Bson::from("***"));
        assert_eq!(
            m("+1-555-201-1234".into(), "partial:4"),
            Bson::from("***1234")
        );
        assert_eq!(m("123".into(), "partial:4"), Bson::from("***"));
        assert_eq!(m("x".into(), "redact"), Bson::from("REDACTED"));
        assert_eq!(m("x".into(), "redact:[gone]"), Bson::from("[gone]"));
        assert_eq!(m("x".into(), "null"), Bson::Null);
        assert_eq!(m(Bson::Int32(5), "redact"), Bson::Null);
        assert_eq!(m(Bson::Document(doc! { "a": "b" }), "email"), Bson::Null);
        assert_eq!(m(Bson::Null, "redact"), Bson::Null);
        let h = m("secret".into(), "hash");
        assert_eq!(h, m("secret".into(), "hash"));
        assert_ne!(
            h,
            mask_value(&"secret".into(), &MaskStrategy::Hash, "other-key")
        );
        assert_eq!(h.as_str().unwrap().len(), 18);
        let d = bson::DateTime::from_millis(1_718_000_000_000); // 2024-06-10
        assert_eq!(
            m(Bson::DateTime(d), "default"),
            Bson::DateTime(bson::DateTime::from_millis(1_704_067_200_000))
        );
        assert_eq!(
            m(Bson::Array(vec!["a@b.c".into(), Bson::Null]), "email"),
            Bson::Array(vec!["***@b.c".into(), Bson::Null])
        );
    }

    #[test]
    fn dotted_keys_are_paths() {
        // A change event's updatedFields: keys are the paths the update set.
        let mut d = doc! { "updateDescription": { "updatedFields": {
            "contacts.0.phone": "555-1234",
            "contacts.1": { "kind": "work", "phone": "555-9999" },
            "contacts.0.kind": "home",
            "address.zip": "12345",
            "ssn.x": "900",
        } } };
        let prefix = |f: MaskedField| MaskedField {
            path: format!("updateDescription.updatedFields.{}", f.path),
            ..f
        };
        mask_document(
            &mut d,
            &[
                prefix(field("contacts.phone", "partial:2")),
                prefix(field("address.zip", "redact")),
                prefix(field("ssn", "redact")),
            ],
            "k",
        );
        assert_eq!(
            d,
            doc! { "updateDescription": { "updatedFields": {
                "contacts.0.phone": "***34",
                "contacts.1": { "kind": "work", "phone": "***99" },
                "contacts.0.kind": "home",
                "address.zip": "REDACTED",
                "ssn.x": "REDACTED",
            } } }
        );
    }

    #[test]
    fn paths_through_documents_and_arrays() {
        let mut d = doc! {
            "email": "a@b.com",
            "address": { "zip": "12345", "city": "X" },
            "contacts": [ { "phone": "555-1234" }, { "phone": "555-9999" } ],
        };
        mask_document(
            &mut d,
            &[
                field("email", "email"),
                field("address.zip", "redact"),
                field("contacts.phone", "partial:2"),
            ],
            "k",
        );
        assert_eq!(
            d,
            doc! {
                "email": "***@b.com",
                "address": { "zip": "REDACTED", "city": "X" },
                "contacts": [ { "phone": "***34" }, { "phone": "***99" } ],
            }
        );
    }
}
