//! Dotted field paths compared as MongoDB reads them: a segment that is an array index (`0`,
//! `12`) or a positional operator (`$`, `$[]`, `$[id]`) names an element of an array, not a
//! field, so `contacts.0.phone` and `contacts.$[].phone` are the field `contacts.phone`. Every
//! check of a path against a masked field goes through `relation`, so no spelling of a path
//! gets past a mask.

/// How path `a` stands to path `b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// Different fields: neither holds the other.
    Apart,
    /// The same field (`contacts.phone`, `contacts.0.phone`).
    Same,
    /// `a` is strictly inside `b` (`ssn.x` in `ssn`; `email.0` in `email`).
    Inside,
    /// `b` is strictly inside `a` (`contacts` or `contacts.0` holds `contacts.phone`).
    Holds,
}

/// An array index or a positional operator: names an element, not a field.
pub fn is_element(segment: &str) -> bool {
    (!segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()))
        || segment == "$"
        || (segment.starts_with("$[") && segment.ends_with(']'))
}

/// Whether any segment of `p` names an array element.
pub fn has_element(p: &str) -> bool {
    p.split('.').any(is_element)
}

/// `a` against `b`, by their segments.
pub fn relation_of<'a, 'b>(
    a: impl IntoIterator<Item = &'a str>,
    b: impl IntoIterator<Item = &'b str>,
) -> Relation {
    let (fa, ta) = fields(a);
    let (fb, tb) = fields(b);
    let common = fa.iter().zip(&fb).take_while(|(x, y)| x == y).count();
    match (common == fa.len(), common == fb.len()) {
        (true, true) => match (ta, tb) {
            // A trailing element of the same field is inside it (`email.0` in `email`).
            (true, false) => Relation::Inside,
            (false, true) => Relation::Holds,
            _ => Relation::Same,
        },
        (false, true) => Relation::Inside,
        (true, false) => Relation::Holds,
        (false, false) => Relation::Apart,
    }
}

/// `a` against `b`, both dotted.
pub fn relation(a: &str, b: &str) -> Relation {
    relation_of(a.split('.'), b.split('.'))
}

/// Do two paths overlap (the same field, or one holds the other)?
pub fn overlaps(a: &str, b: &str) -> bool {
    relation(a, b) != Relation::Apart
}

/// Is `a` the field `b` or inside it?
pub fn within(a: &str, b: &str) -> bool {
    matches!(relation(a, b), Relation::Same | Relation::Inside)
}

/// The field segments of a path, and whether element segments follow the last of them.
fn fields<'a>(p: impl IntoIterator<Item = &'a str>) -> (Vec<&'a str>, bool) {
    let mut out = Vec::new();
    let mut trailing = false;
    for s in p {
        if is_element(s) {
            trailing = true;
        } else {
            out.push(s);
            trailing = false;
        }
    }
    (out, trailing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Relation::*;

    #[test]
    fn elements_are_not_fields() {
        for (a, b, want) in [
            ("email", "email", Same),
            ("emails", "email", Apart),
            ("a.b", "a.c", Apart),
            ("address", "address.zip", Holds),
            ("address.zip.x", "address.zip", Inside),
            ("contacts.0.phone", "contacts.phone", Same),
            ("contacts.12.phone.x", "contacts.phone", Inside),
            ("contacts.$.phone", "contacts.phone", Same),
            ("contacts.$[].phone", "contacts.phone", Same),
            ("contacts.$[x].phone", "contacts.phone", Same),
            ("contacts.0", "contacts.phone", Holds),
            ("contacts.0.kind", "contacts.phone", Apart),
            ("email.0", "email", Inside),
            ("email", "email.0", Holds),
            ("ssn.x", "ssn", Inside),
            ("a.5.b.c", "a.b", Inside),
            ("tags.1.email", "tags.0.email", Same),
        ] {
            assert_eq!(relation(a, b), want, "{a} against {b}");
        }
        assert!(overlaps("contacts.0", "contacts.phone"));
        assert!(within("contacts.0.phone", "contacts.phone"));
        assert!(!within("contacts", "contacts.phone"));
        assert!(is_element("$[item]") && is_element("007") && !is_element("$x") && !is_element(""));
        assert!(has_element("a.0.b") && !has_element("a.b"));
    }
}
