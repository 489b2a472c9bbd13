//! What a query document or an aggregation expression reads: the field paths it references,
//! whether it uses the whole document (`$$ROOT`, a computed `$getField`), server-side
//! JavaScript, or searches it cannot be checked against masks (`$text`, `$jsonSchema`).
//! Unknown operators are errors: what the walker does not understand is refused.

use bson::{Bson, Document};

/// Everything a walk found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Refs {
    /// Dotted field paths read.
    pub paths: Vec<String>,
    /// The whole document is used as a value (`$$ROOT`, `$$CURRENT`, computed field names).
    pub whole_document: bool,
    /// `$where`, `$function`, `$accumulator`.
    pub javascript: Option<&'static str>,
    /// `$text` or `$jsonSchema`: matches over fields that cannot be listed.
    pub opaque: Option<&'static str>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WalkError {
    #[error("unknown operator \"{0}\"")]
    Unknown(String),
    #[error("{0}")]
    Malformed(String),
}

/// Query operators whose argument is a literal (or literals and nested operator documents).
const VALUE_OPERATORS: &[&str] = &[
    "$eq",
    "$ne",
    "$gt",
    "$gte",
    "$lt",
    "$lte",
    "$in",
    "$nin",
    "$exists",
    "$type",
    "$mod",
    "$regex",
    "$options",
    "$size",
    "$bitsAllClear",
    "$bitsAllSet",
    "$bitsAnyClear",
    "$bitsAnySet",
    "$geoWithin",
    "$geoIntersects",
    "$near",
    "$nearSphere",
    "$maxDistance",
    "$minDistance",
    "$geometry",
    "$box",
    "$center",
    "$centerSphere",
    "$polygon",
    "$uniqueDocs",
    "$all",
];

/// Aggregation expression operators (MongoDB 8.0), accumulators and window operators included.
const EXPRESSION_OPERATORS: &[&str] = &[
    "$abs",
    "$acos",
    "$acosh",
    "$add",
    "$addToSet",
    "$allElementsTrue",
    "$and",
    "$anyElementTrue",
    "$arrayElemAt",
    "$arrayToObject",
    "$asin",
    "$asinh",
    "$atan",
    "$atan2",
    "$atanh",
    "$avg",
    "$binarySize",
    "$bitAnd",
    "$bitNot",
    "$bitOr",
    "$bitXor",
    "$bottom",
    "$bottomN",
    "$bsonSize",
    "$ceil",
    "$cmp",
    "$concat",
    "$concatArrays",
    "$cond",
    "$convert",
    "$cos",
    "$cosh",
    "$count",
    "$covariancePop",
    "$covarianceSamp",
    "$dateAdd",
    "$dateDiff",
    "$dateFromParts",
    "$dateFromString",
    "$dateSubtract",
    "$dateToParts",
    "$dateToString",
    "$dateTrunc",
    "$dayOfMonth",
    "$dayOfWeek",
    "$dayOfYear",
    "$degreesToRadians",
    "$denseRank",
    "$derivative",
    "$divide",
    "$documentNumber",
    "$eq",
    "$exp",
    "$expMovingAvg",
    "$filter",
    "$first",
    "$firstN",
    "$floor",
    "$getField",
    "$gt",
    "$gte",
    "$hour",
    "$ifNull",
    "$in",
    "$indexOfArray",
    "$indexOfBytes",
    "$indexOfCP",
    "$integral",
    "$isArray",
    "$isNumber",
    "$isoDayOfWeek",
    "$isoWeek",
    "$isoWeekYear",
    "$last",
    "$lastN",
    "$let",
    "$linearFill",
    "$literal",
    "$ln",
    "$locf",
    "$log",
    "$log10",
    "$lt",
    "$lte",
    "$ltrim",
    "$map",
    "$max",
    "$maxN",
    "$median",
    "$mergeObjects",
    "$meta",
    "$millisecond",
    "$min",
    "$minN",
    "$minute",
    "$mod",
    "$month",
    "$multiply",
    "$ne",
    "$not",
    "$objectToArray",
    "$or",
    "$percentile",
    "$pow",
    "$push",
    "$radiansToDegrees",
    "$rand",
    "$range",
    "$rank",
    "$reduce",
    "$regexFind",
    "$regexFindAll",
    "$regexMatch",
    "$replaceAll",
    "$replaceOne",
    "$reverseArray",
    "$round",
    "$rtrim",
    "$sampleRate",
    "$second",
    "$setDifference",
    "$setEquals",
    "$setField",
    "$setIntersection",
    "$setIsSubset",
    "$setUnion",
    "$shift",
    "$sin",
    "$sinh",
    "$size",
    "$slice",
    "$sortArray",
    "$split",
    "$sqrt",
    "$stdDevPop",
    "$stdDevSamp",
    "$strcasecmp",
    "$strLenBytes",
    "$strLenCP",
    "$substr",
    "$substrBytes",
    "$substrCP",
    "$subtract",
    "$sum",
    "$switch",
    "$tan",
    "$tanh",
    "$toBool",
    "$toDate",
    "$toDecimal",
    "$toDouble",
    "$toHashedIndexKey",
    "$toInt",
    "$toLong",
    "$toLower",
    "$toObjectId",
    "$toString",
    "$toUpper",
    "$toUUID",
    "$top",
    "$topN",
    "$trim",
    "$trunc",
    "$tsIncrement",
    "$tsSecond",
    "$type",
    "$unsetField",
    "$week",
    "$year",
    "$zip",
    "$function",
    "$accumulator",
    "$isoDate",
    "$avgN",
    "$stdDev",
    "$countN",
    "$bitsN",
    "$firstElem",
    "$lastElem",
    "$sigmoid",
    "$createObjectId",
    "$encStrStartsWith",
    "$encStrEndsWith",
    "$encStrContains",
    "$encStrNormalizedEq",
];

fn known_expression_operator(op: &str) -> bool {
    EXPRESSION_OPERATORS.contains(&op)
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Walks a query (filter) document; `prefix` is the path of an enclosing `$elemMatch`.
pub fn query_refs(doc: &Document, prefix: &str, refs: &mut Refs) -> Result<(), WalkError> {
    for (k, v) in doc {
        if let Some(op) = k.strip_prefix('$') {
            match op {
                "and" | "or" | "nor" => {
                    let Bson::Array(items) = v else {
                        return Err(WalkError::Malformed(format!("{k} needs an array")));
                    };
                    for item in items {
                        let Bson::Document(d) = item else {
                            return Err(WalkError::Malformed(format!("{k} needs documents")));
                        };
                        query_refs(d, prefix, refs)?;
                    }
                }
                "expr" => expr_refs(v, refs)?,
                "where" => refs.javascript = Some("$where"),
                "text" => refs.opaque = Some("$text"),
                "jsonSchema" => refs.opaque = Some("$jsonSchema"),
                "comment" | "sampleRate" | "alwaysTrue" | "alwaysFalse" => {}
                _ => return Err(WalkError::Unknown(k.clone())),
            }
            continue;
        }
        let path = join(prefix, k);
        refs.paths.push(path.clone());
        if let Bson::Document(d) = v {
            if d.keys().next().is_some_and(|f| f.starts_with('$')) {
                operator_refs(d, &path, refs)?;
            }
        }
    }
    Ok(())
}

/// An operator document applied to the field at `path` (`{$gt: 1, $lt: 5}`).
fn operator_refs(d: &Document, path: &str, refs: &mut Refs) -> Result<(), WalkError> {
    for (op, arg) in d {
        match op.as_str() {
            "$elemMatch" => {
                let Bson::Document(inner) = arg else {
                    return Err(WalkError::Malformed("$elemMatch needs a document".into()));
                };
                if inner.keys().next().is_some_and(|f| f.starts_with('$'))
                    && !inner
                        .keys()
                        .any(|f| matches!(f.as_str(), "$and" | "$or" | "$nor" | "$expr" | "$where"))
                {
                    operator_refs(inner, path, refs)?;
                } else {
                    query_refs(inner, path, refs)?;
                }
            }
            "$not" => match arg {
                Bson::Document(inner) => operator_refs(inner, path, refs)?,
                Bson::RegularExpression(_) => {}
                _ => {
                    return Err(WalkError::Malformed(
                        "$not needs a document or a regex".into(),
                    ))
                }
            },
            "$all" => {
                if let Bson::Array(items) = arg {
                    for item in items {
                        if let Bson::Document(inner) = item {
                            if inner.keys().next().is_some_and(|f| f.starts_with('$')) {
                                operator_refs(inner, path, refs)?;
                            }
                        }
                    }
                }
            }
            o if VALUE_OPERATORS.contains(&o) => {}
            o if o.starts_with('$') => return Err(WalkError::Unknown(o.to_string())),
            _ => {
                return Err(WalkError::Malformed(format!(
                    "field \"{op}\" mixed with operators at {path}"
                )))
            }
        }
    }
    Ok(())
}

/// Walks an aggregation expression.
pub fn expr_refs(e: &Bson, refs: &mut Refs) -> Result<(), WalkError> {
    match e {
        Bson::String(s) => string_ref(s, refs),
        Bson::Array(items) => {
            for i in items {
                expr_refs(i, refs)?;
            }
        }
        Bson::Document(d) => {
            let mut keys = d.keys();
            match (keys.next(), keys.next()) {
                (Some(op), None) if op.starts_with('$') => {
                    operator_expr(op, d.get(op).unwrap_or(&Bson::Null), refs)?
                }
                _ => {
                    for (k, v) in d {
                        if k.starts_with('$') {
                            return Err(WalkError::Malformed(format!(
                                "operator \"{k}\" mixed with fields in an expression"
                            )));
                        }
                        expr_refs(v, refs)?;
                    }
                }
            }
        }
        Bson::JavaScriptCode(_) | Bson::JavaScriptCodeWithScope(_) => {
            refs.javascript = Some("JavaScript code")
        }
        _ => {}
    }
    Ok(())
}

fn string_ref(s: &str, refs: &mut Refs) {
    if let Some(var) = s.strip_prefix("$$") {
        let (name, rest) = var.split_once('.').unwrap_or((var, ""));
        if matches!(name, "ROOT" | "CURRENT") {
            if rest.is_empty() {
                refs.whole_document = true;
            } else {
                refs.paths.push(rest.to_string());
            }
        }
        // Other variables are bound by $let/$map/$filter/$reduce from expressions that are
        // walked where they are defined, or are system values ($$NOW, $$REMOVE).
    } else if let Some(path) = s.strip_prefix('$') {
        if !path.is_empty() {
            refs.paths.push(path.to_string());
        }
    }
}

/// A literal field name (`"email"` or `{$literal: "email"}`), if the argument is one.
fn literal_name(b: &Bson) -> Option<&str> {
    match b {
        Bson::String(s) if !s.starts_with('$') => Some(s),
        Bson::Document(d) if d.len() == 1 => d.get_str("$literal").ok(),
        _ => None,
    }
}

fn is_whole_document(b: Option<&Bson>) -> bool {
    match b {
        None => true,
        Some(Bson::String(s)) => s == "$$ROOT" || s == "$$CURRENT",
        _ => false,
    }
}

fn operator_expr(op: &str, arg: &Bson, refs: &mut Refs) -> Result<(), WalkError> {
    match op {
        "$literal" => Ok(()),
        "$function" => {
            refs.javascript = Some("$function");
            Ok(())
        }
        // The index key of the document: the raw values of the indexed fields.
        "$meta" if arg.as_str() == Some("indexKey") => {
            refs.opaque = Some("{$meta: \"indexKey\"}");
            Ok(())
        }
        "$accumulator" => {
            refs.javascript = Some("$accumulator");
            Ok(())
        }
        // The result of these is all of `input`, one field set or removed: every value of
        // `input` is read (`$$ROOT`, or no input: the whole document).
        "$setField" | "$unsetField" => {
            let (input, value) = match arg {
                Bson::Document(d) => (d.get("input"), d.get("value")),
                _ => (None, None),
            };
            match input {
                i if is_whole_document(i) => refs.whole_document = true,
                Some(i) => expr_refs(i, refs)?,
                None => refs.whole_document = true,
            }
            if let Some(v) = value {
                expr_refs(v, refs)?;
            }
            Ok(())
        }
        // The order `sortBy` names is a comparison of those fields' values: they are read.
        "$top" | "$topN" | "$bottom" | "$bottomN" => {
            let Bson::Document(d) = arg else {
                return expr_refs(arg, refs);
            };
            for (k, v) in d {
                match (k.as_str(), v) {
                    ("sortBy", Bson::Document(order)) => {
                        refs.paths.extend(order.keys().cloned());
                    }
                    ("sortBy", _) => refs.whole_document = true,
                    _ => expr_refs(v, refs)?,
                }
            }
            Ok(())
        }
        "$getField" => {
            let (field, input, value) = match arg {
                Bson::Document(d) if d.contains_key("field") => {
                    (d.get("field"), d.get("input"), d.get("value"))
                }
                other => (Some(other), None, None),
            };
            match (field.and_then(literal_name), is_whole_document(input)) {
                (Some(name), true) => refs.paths.push(name.to_string()),
                (Some(name), false) => {
                    // A field of another value: reading that value reads the field too.
                    if let Some(i) = input {
                        let mut inner = Refs::default();
                        expr_refs(i, &mut inner)?;
                        for p in &inner.paths {
                            refs.paths.push(join(p, name));
                        }
                        refs.whole_document |= inner.whole_document;
                        refs.javascript = refs.javascript.or(inner.javascript);
                    }
                }
                (None, _) => refs.whole_document = true,
            }
            if let Some(v) = value {
                expr_refs(v, refs)?;
            }
            Ok(())
        }
        o if known_expression_operator(o) => expr_refs(arg, refs),
        o => Err(WalkError::Unknown(o.to_string())),
    }
}

/// Do two dotted paths overlap (one equals or contains the other, array indexes and positional
/// operators aside: `contacts.0.phone` is `contacts.phone`)?
pub use super::path::overlaps;

/// A row filter must be a query tollgate understands, without JavaScript or opaque matches.
pub fn check_row_filter(doc: &Document) -> Result<(), String> {
    let mut refs = Refs::default();
    query_refs(doc, "", &mut refs).map_err(|e| e.to_string())?;
    if let Some(js) = refs.javascript {
        return Err(format!("{js} (JavaScript) is not allowed in a row filter"));
    }
    if let Some(o) = refs.opaque {
        return Err(format!("{o} is not allowed in a row filter"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn q(d: Document) -> Result<Refs, WalkError> {
        let mut r = Refs::default();
        query_refs(&d, "", &mut r).map(|_| r)
    }

    fn x(e: Bson) -> Result<Refs, WalkError> {
        let mut r = Refs::default();
        expr_refs(&e, &mut r).map(|_| r)
    }

    #[test]
    fn query_paths() {
        let r = q(doc! { "a": 1, "b.c": { "$gt": 2 }, "$or": [ { "d": 1 }, { "e": { "$elemMatch": { "f": 1 } } } ] }).unwrap();
        assert_eq!(r.paths, ["a", "b.c", "d", "e", "e.f"]);
        assert_eq!(
            q(doc! { "$where": "1" }).unwrap().javascript,
            Some("$where")
        );
        assert_eq!(
            q(doc! { "$text": { "$search": "x" } }).unwrap().opaque,
            Some("$text")
        );
        assert!(matches!(
            q(doc! { "a": { "$fancy": 1 } }),
            Err(WalkError::Unknown(_))
        ));
        assert!(matches!(
            q(doc! { "$fancy": 1 }),
            Err(WalkError::Unknown(_))
        ));
        let r = q(doc! { "$expr": { "$eq": ["$x", "$$ROOT.y"] } }).unwrap();
        assert_eq!(r.paths, ["x", "y"]);
    }

    #[test]
    fn expression_paths() {
        let r = x(Bson::Document(doc! { "$concat": ["$email", "!"] })).unwrap();
        assert_eq!(r.paths, ["email"]);
        assert!(
            x(Bson::Document(doc! { "$objectToArray": "$$ROOT" }))
                .unwrap()
                .whole_document
        );
        assert_eq!(
            x(Bson::Document(doc! { "$getField": "email" }))
                .unwrap()
                .paths,
            ["email"]
        );
        assert_eq!(
            x(Bson::Document(
                doc! { "$getField": { "field": "zip", "input": "$address" } }
            ))
            .unwrap()
            .paths,
            ["address.zip"]
        );
        assert!(
            x(Bson::Document(
                doc! { "$getField": { "field": { "$concat": ["em", "ail"] } } }
            ))
            .unwrap()
            .whole_document
        );
        assert_eq!(
            x(Bson::Document(doc! { "$function": { "body": "f" } }))
                .unwrap()
                .javascript,
            Some("$function")
        );
        assert!(x(Bson::Document(doc! { "$literal": "$email" }))
            .unwrap()
            .paths
            .is_empty());
        assert!(matches!(
            x(Bson::Document(doc! { "$newOp": 1 })),
            Err(WalkError::Unknown(_))
        ));
        let r = x(Bson::Document(
            doc! { "a": "$x", "b": { "$add": ["$y", 1] } },
        ))
        .unwrap();
        assert_eq!(r.paths, ["x", "y"]);
    }

    #[test]
    fn overlap() {
        assert!(overlaps("email", "email"));
        assert!(overlaps("address", "address.zip"));
        assert!(overlaps("address.zip.x", "address.zip"));
        assert!(!overlaps("emails", "email"));
        assert!(!overlaps("a.b", "a.c"));
        assert!(overlaps("contacts.0.phone", "contacts.phone"));
        assert!(overlaps("contacts.0", "contacts.phone"));
    }
}
