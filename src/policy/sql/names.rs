//! Helpers that turn parse-tree name lists (lists of String nodes) into schema-qualified relation and function names, and decode the object lists of DROP/COMMENT/ALTER ... statements.

use pg_query::protobuf::{node::Node as NodeEnum, Node, ObjectType};

use super::AnalyzeError;

/// `Some(s)` unless `s` is empty.
pub(super) fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// The strings of a name list, or None if an element is not a String node.
pub(super) fn strings(items: &[Node]) -> Option<Vec<&str>> {
    items
        .iter()
        .map(|n| match &n.node {
            Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
            _ => None,
        })
        .collect()
}

/// (schema, name) of a dotted name of 1 to 3 parts (`name`, `schema.name`,
/// `catalog.schema.name`; PostgreSQL refuses a catalog other than the current database).
pub(super) fn qualified(parts: &[&str]) -> Option<(Option<String>, String)> {
    match parts {
        [name] => Some((None, (*name).to_owned())),
        [schema, name] | [_, schema, name] => {
            Some((Some((*schema).to_owned()), (*name).to_owned()))
        }
        _ => None,
    }
}

/// (schema, name) of a function name list; refuses shapes PostgreSQL would not call.
pub(super) fn function_name(
    names: &[Node],
    what: &str,
) -> Result<(Option<String>, String), AnalyzeError> {
    strings(names)
        .as_deref()
        .and_then(qualified)
        .ok_or_else(|| AnalyzeError::Unsupported(format!("{what} with an unexpected name shape")))
}

/// The elements of a List node, or None for any other node.
pub(super) fn list_items(node: &Node) -> Option<&[Node]> {
    match &node.node {
        Some(NodeEnum::List(l)) => Some(&l.items),
        _ => None,
    }
}

/// How an object list element of a given object type names a relation.
enum RelationPart {
    /// The whole name is the relation (`DROP TABLE s.t`).
    Whole,
    /// All but the last element (`DROP TRIGGER trg ON s.t` is `[s, t, trg]`;
    /// `COMMENT ON COLUMN s.t.c` is `[s, t, c]`).
    AllButLast,
    /// A schema name: every relation in it (`DROP SCHEMA s`).
    Schema,
    /// Not a relation (functions, types, roles, ...).
    None,
}

fn relation_part(objtype: ObjectType) -> RelationPart {
    match objtype {
        ObjectType::ObjectTable
        | ObjectType::ObjectView
        | ObjectType::ObjectMatview
        | ObjectType::ObjectIndex
        | ObjectType::ObjectSequence
        | ObjectType::ObjectForeignTable => RelationPart::Whole,
        ObjectType::ObjectColumn
        | ObjectType::ObjectTrigger
        | ObjectType::ObjectRule
        | ObjectType::ObjectPolicy
        | ObjectType::ObjectTabconstraint => RelationPart::AllButLast,
        ObjectType::ObjectSchema => RelationPart::Schema,
        _ => RelationPart::None,
    }
}

/// The relation (schema, name) that one element of an object list denotes for `objtype`, if
/// any. `name == "*"` stands for all relations of a schema. Errors if the element does not
/// have the shape PostgreSQL's grammar gives it for that object type.
pub(super) fn object_relation(
    objtype: i32,
    object: &Node,
) -> Result<Option<(Option<String>, String)>, AnalyzeError> {
    let objtype = ObjectType::try_from(objtype).unwrap_or(ObjectType::Undefined);
    let unexpected = || {
        AnalyzeError::Unsupported(format!(
            "object name of unexpected shape for {}",
            objtype.as_str_name()
        ))
    };
    match relation_part(objtype) {
        RelationPart::None => Ok(None),
        RelationPart::Schema => match &object.node {
            Some(NodeEnum::String(s)) => Ok(Some((Some(s.sval.clone()), "*".to_owned()))),
            _ => Err(unexpected()),
        },
        part => {
            let items = list_items(object).ok_or_else(unexpected)?;
            let parts = strings(items).ok_or_else(unexpected)?;
            let parts = match part {
                RelationPart::AllButLast => parts.split_last().map(|(_, rest)| rest).unwrap_or(&[]),
                _ => &parts[..],
            };
            qualified(parts).map(Some).ok_or_else(unexpected)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::qualified;

    #[test]
    fn qualified_names() {
        assert_eq!(qualified(&["t"]), Some((None, "t".to_owned())));
        assert_eq!(
            qualified(&["s", "t"]),
            Some((Some("s".to_owned()), "t".to_owned()))
        );
        assert_eq!(
            qualified(&["db", "s", "t"]),
            Some((Some("s".to_owned()), "t".to_owned()))
        );
        assert_eq!(qualified(&[]), None);
        assert_eq!(qualified(&["a", "b", "c", "d"]), None);
    }
}
