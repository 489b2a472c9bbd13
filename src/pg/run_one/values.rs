//! Result values as JSON: RowDescription and DataRow decoded (text format), each value turned
//! into the JSON a model reads most naturally for its type. Exact where JSON is not: numeric,
//! 64-bit integers beyond 2^53, NaN and infinities stay strings.

use serde_json::Value;

use super::Column;

pub const TEXT_OID: u32 = 25;

/// Names of the built-in types most results carry (others are shown by OID).
const NAMES: &[(u32, &str)] = &[
    (16, "boolean"),
    (17, "bytea"),
    (18, "char"),
    (19, "name"),
    (20, "bigint"),
    (21, "smallint"),
    (23, "integer"),
    (25, "text"),
    (26, "oid"),
    (114, "json"),
    (700, "real"),
    (701, "double precision"),
    (1042, "character"),
    (1043, "character varying"),
    (1082, "date"),
    (1083, "time"),
    (1114, "timestamp"),
    (1184, "timestamptz"),
    (1186, "interval"),
    (1700, "numeric"),
    (2950, "uuid"),
    (3802, "jsonb"),
    (1000, "boolean[]"),
    (1005, "smallint[]"),
    (1007, "integer[]"),
    (1016, "bigint[]"),
    (1009, "text[]"),
    (1015, "character varying[]"),
];

/// The SQL name of a built-in type, or `None` for one tollgate does not name.
pub fn type_name(oid: u32) -> Option<&'static str> {
    NAMES.iter().find(|(o, _)| *o == oid).map(|(_, n)| *n)
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if b.len() < n {
        return None;
    }
    let (head, tail) = b.split_at(n);
    *b = tail;
    Some(head)
}

fn i16_of(b: &mut &[u8]) -> Option<i16> {
    take(b, 2).map(|x| i16::from_be_bytes([x[0], x[1]]))
}

fn i32_of(b: &mut &[u8]) -> Option<i32> {
    take(b, 4).map(|x| i32::from_be_bytes([x[0], x[1], x[2], x[3]]))
}

/// The columns of a RowDescription body; `None` if it is malformed.
pub fn columns(body: &[u8]) -> Option<Vec<Column>> {
    let mut b = body;
    let n = usize::try_from(i16_of(&mut b)?).ok()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let nul = b.iter().position(|&c| c == 0)?;
        let name = String::from_utf8_lossy(&b[..nul]).into_owned();
        b = &b[nul + 1..];
        take(&mut b, 6)?; // table oid, column number
        let type_oid = i32_of(&mut b)? as u32;
        take(&mut b, 8)?; // type size, modifier, format
        out.push(Column { name, type_oid });
    }
    Some(out)
}

/// The text values of a DataRow body (`None` for NULL); `None` if it is malformed.
pub fn data_row(body: &[u8]) -> Option<Vec<Option<String>>> {
    let mut b = body;
    let n = usize::try_from(i16_of(&mut b)?).ok()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = i32_of(&mut b)?;
        if len < 0 {
            out.push(None);
            continue;
        }
        let v = take(&mut b, len as usize)?;
        out.push(Some(String::from_utf8_lossy(v).into_owned()));
    }
    Some(out)
}

/// Integers JavaScript (and so most JSON readers) hold exactly.
const EXACT: i64 = 1 << 53;

/// A value as JSON for its column type.
pub fn to_json(type_oid: u32, text: Option<&str>) -> Value {
    let Some(t) = text else {
        return Value::Null;
    };
    match type_oid {
        16 => Value::Bool(t == "t"),
        20 | 21 | 23 | 26 => match t.parse::<i64>() {
            Ok(n) if (-EXACT..=EXACT).contains(&n) => Value::from(n),
            _ => Value::String(t.to_string()),
        },
        700 | 701 => match t.parse::<f64>() {
            Ok(f) if f.is_finite() => Value::from(f),
            _ => Value::String(t.to_string()),
        },
        114 | 3802 => serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.to_string())),
        _ => Value::String(t.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    #[test]
    fn values_keep_their_type_and_their_exactness() {
        let cases: &[(u32, Option<&str>, Value)] = &[
            (23, Some("42"), serde_json::json!(42)),
            (
                20,
                Some("-9007199254740992"),
                serde_json::json!(-9007199254740992i64),
            ),
            (
                20,
                Some("9007199254740993"),
                serde_json::json!("9007199254740993"),
            ),
            (16, Some("t"), serde_json::json!(true)),
            (16, Some("f"), serde_json::json!(false)),
            (701, Some("1.5"), serde_json::json!(1.5)),
            (701, Some("NaN"), serde_json::json!("NaN")),
            (700, Some("-Infinity"), serde_json::json!("-Infinity")),
            (1700, Some("12.30"), serde_json::json!("12.30")),
            (3802, Some(r#"{"a": [1]}"#), serde_json::json!({"a": [1]})),
            (114, Some("not json"), serde_json::json!("not json")),
            (
                25,
                Some("***@example.org"),
                serde_json::json!("***@example.org"),
            ),
            (
                1184,
                Some("2026-01-02 03:04:05+00"),
                serde_json::json!("2026-01-02 03:04:05+00"),
            ),
            (23, None, Value::Null),
        ];
        for (oid, text, want) in cases {
            assert_eq!(&to_json(*oid, *text), want, "{oid} {text:?}");
        }
        assert_eq!(type_name(1700), Some("numeric"));
        assert_eq!(type_name(99999), None);
    }

    #[test]
    fn row_descriptions_and_rows_decode_and_malformed_ones_are_refused() {
        let mut b = BytesMut::new();
        b.put_i16(2);
        for (name, oid) in [("id", 23), ("email", 25)] {
            b.put_slice(name.as_bytes());
            b.put_u8(0);
            b.put_i32(16384);
            b.put_i16(1);
            b.put_i32(oid);
            b.put_i16(4);
            b.put_i32(-1);
            b.put_i16(0);
        }
        let cols = columns(&b).unwrap();
        assert_eq!(
            cols,
            vec![
                Column {
                    name: "id".into(),
                    type_oid: 23
                },
                Column {
                    name: "email".into(),
                    type_oid: 25
                }
            ]
        );
        assert!(columns(&b[..b.len() - 1]).is_none());
        let mut r = BytesMut::new();
        r.put_i16(2);
        r.put_i32(1);
        r.put_slice(b"7");
        r.put_i32(-1);
        assert_eq!(data_row(&r).unwrap(), vec![Some("7".to_string()), None]);
        assert!(data_row(&r[..6]).is_none());
        let mut lying = BytesMut::new();
        lying.put_i16(1);
        lying.put_i32(1_000_000);
        assert!(data_row(&lying).is_none(), "a length past the end");
    }
}
