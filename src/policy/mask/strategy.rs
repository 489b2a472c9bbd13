//! Mask strategies as policy files name them, and the SQL expression each one puts in place of a
//! column. Every expression keeps the column's type and cannot fail on any stored value (so an
//! error message can never carry a raw value), and NULL stays NULL.

use std::fmt;

use super::quote_literal;

/// How a masked column's values are replaced.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MaskStrategy {
    /// A fixed text (`redact` = `REDACTED`, or `redact:TEXT`); NULL for non-text columns.
    Redact(String),
    /// Always NULL.
    Null,
    /// A keyed, deterministic digest (`h_` + 16 hex digits), so joins and GROUP BY still work.
    Hash,
    /// Keep the last N characters (`partial:N`): `***6789`.
    Partial(u8),
    /// Keep the domain: `***@example.com`.
    Email,
    /// The type's default: text redacted, dates and timestamps truncated to the year,
    /// everything else NULL.
    Default,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown mask \"{0}\" (known: redact, redact:TEXT, null, hash, partial:N, email, default)")]
pub struct ParseMaskError(pub String);

impl MaskStrategy {
    pub fn parse(word: &str) -> Result<MaskStrategy, ParseMaskError> {
        let bad = || ParseMaskError(word.to_owned());
        Ok(match word {
            "redact" => MaskStrategy::Redact("REDACTED".to_owned()),
            "null" => MaskStrategy::Null,
            "hash" => MaskStrategy::Hash,
            "email" => MaskStrategy::Email,
            "default" => MaskStrategy::Default,
            w => {
                if let Some(text) = w.strip_prefix("redact:") {
                    MaskStrategy::Redact(text.to_owned())
                } else if let Some(n) = w.strip_prefix("partial:") {
                    match n.parse::<u8>() {
                        Ok(n) if (1..=32).contains(&n) => MaskStrategy::Partial(n),
                        _ => return Err(bad()),
                    }
                } else {
                    return Err(bad());
                }
            }
        })
    }

    /// How much of the value survives: when two rules mask the same column differently, the
    /// strategy that reveals least wins.
    pub fn strictness(&self) -> u8 {
        match self {
            MaskStrategy::Null => 5,
            MaskStrategy::Redact(_) => 4,
            MaskStrategy::Default => 3,
            MaskStrategy::Hash => 2,
            MaskStrategy::Email => 1,
            MaskStrategy::Partial(_) => 0,
        }
    }

    /// The expression replacing column `col` (an already quoted identifier) of type `ty`
    /// (`format_type` output) in type category `category` (`pg_type.typcategory`).
    /// `hash_key` is the hex key of the `hash` strategy.
    pub fn expression(&self, col: &str, ty: &str, category: char, hash_key: &str) -> String {
        let text = category == 'S';
        let null = format!("NULL::{ty}");
        let guarded = |body: String| -> String {
            format!("(CASE WHEN {col} IS NULL THEN NULL ELSE {body} END)::{ty}")
        };
        match self {
            MaskStrategy::Null => null,
            MaskStrategy::Redact(t) if text => guarded(quote_literal(t)),
            MaskStrategy::Hash if text => guarded(format!(
                "'h_' || left(encode(sha256(convert_to({} || {col}::text, 'UTF8')), 'hex'), 16)",
                quote_literal(hash_key)
            )),
            MaskStrategy::Partial(n) if text => guarded(format!(
                "CASE WHEN length({col}::text) > {n} THEN '***' || right({col}::text, {n}) ELSE '***' END"
            )),
            MaskStrategy::Email if text => guarded(format!(
                "CASE WHEN strpos({col}::text, '@') > 0 THEN '***@' || split_part({col}::text, '@', -1) ELSE '***' END"
            )),
            MaskStrategy::Default if text => guarded("'REDACTED'".to_owned()),
            // Non-text columns: only the type's default says something other than NULL.
            MaskStrategy::Default if category == 'D' && !ty.starts_with("time ") && ty != "interval" => {
                format!("date_trunc('year', {col})::{ty}")
            }
            _ => null,
        }
    }
}

impl fmt::Display for MaskStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaskStrategy::Redact(t) if t == "REDACTED" => write!(f, "redact"),
            MaskStrategy::Redact(t) => write!(f, "redact:{t}"),
            MaskStrategy::Null => write!(f, "null"),
            MaskStrategy::Hash => write!(f, "hash"),
            MaskStrategy::Partial(n) => write!(f, "partial:{n}"),
            MaskStrategy::Email => write!(f, "email"),
            MaskStrategy::Default => write!(f, "default"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_form_and_rejects_others() {
        assert_eq!(MaskStrategy::parse("redact").unwrap().to_string(), "redact");
        assert_eq!(
            MaskStrategy::parse("redact:[hidden]").unwrap(),
            MaskStrategy::Redact("[hidden]".into())
        );
        assert_eq!(
            MaskStrategy::parse("partial:4").unwrap(),
            MaskStrategy::Partial(4)
        );
        for bad in ["partial:0", "partial:x", "partial:99", "REDACT", "mask", ""] {
            assert!(MaskStrategy::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn expressions_keep_the_type_and_guard_null() {
        let e = MaskStrategy::Email.expression("\"email\"", "text", 'S', "k");
        assert!(e.starts_with("(CASE WHEN \"email\" IS NULL"), "{e}");
        assert!(e.ends_with("::text"), "{e}");
        assert_eq!(
            MaskStrategy::Partial(4).expression("\"n\"", "integer", 'N', "k"),
            "NULL::integer"
        );
        assert_eq!(
            MaskStrategy::Default.expression("\"d\"", "date", 'D', "k"),
            "date_trunc('year', \"d\")::date"
        );
        let h = MaskStrategy::Hash.expression("\"s\"", "character varying(20)", 'S', "ab'c");
        assert!(h.contains("'ab''c'"), "key quoted: {h}");
    }
}
