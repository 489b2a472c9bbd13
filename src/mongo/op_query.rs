//! Legacy OP_QUERY (opcode 2004) and OP_REPLY (opcode 1). Drivers still open a connection with
//! `hello`/`isMaster` sent as OP_QUERY on `admin.$cmd` before they know the server speaks
//! OP_MSG; that is the only OP_QUERY tollgate accepts (MongoDB 6.0 removed the rest), and it is
//! answered with an OP_REPLY.

use bson::Document;

use super::bson_check::{self, BsonError};
use super::op_msg::encode_document;
use super::wire::{Header, Message, OpCode, HEADER_LEN};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("malformed OP_QUERY: {0}")]
    Malformed(&'static str),
    #[error("{0}")]
    Bson(#[from] BsonError),
    #[error("OP_QUERY is only supported for the connection handshake (hello/isMaster on admin.$cmd); use OP_MSG")]
    NotHandshake,
}

/// The handshake command carried by an OP_QUERY.
#[derive(Debug, Clone, PartialEq)]
pub struct LegacyHello {
    pub request_id: i32,
    /// The database of `<db>.$cmd`.
    pub database: String,
    /// The command document, unwrapped from `$query` if the driver wrapped it.
    pub command: Document,
}

fn le_i32(b: &[u8], at: usize) -> Result<i32, QueryError> {
    b.get(at..at + 4)
        .map(|s| i32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(QueryError::Malformed("truncated"))
}

/// Parses an OP_QUERY; anything but `hello`/`isMaster` on `<db>.$cmd` is refused.
pub fn parse_handshake(msg: &Message) -> Result<LegacyHello, QueryError> {
    let raw = &msg.raw[..];
    let mut at = HEADER_LEN;
    let _flags = le_i32(raw, at)?;
    at += 4;
    let nul = raw[at..]
        .iter()
        .position(|&b| b == 0)
        .ok_or(QueryError::Malformed("unterminated collection name"))?;
    let ns = std::str::from_utf8(&raw[at..at + nul])
        .map_err(|_| QueryError::Malformed("collection name is not UTF-8"))?;
    at += nul + 1;
    let _skip = le_i32(raw, at)?;
    let _limit = le_i32(raw, at + 4)?;
    at += 8;
    let (doc, n) = bson_check::validate_prefix(&raw[at..])?;
    at += n;
    if at < raw.len() {
        // returnFieldsSelector: validated, unused.
        let (_, m) = bson_check::validate_prefix(&raw[at..])?;
        if at + m != raw.len() {
            return Err(QueryError::Malformed("bytes after the field selector"));
        }
    }
    let database = ns
        .strip_suffix(".$cmd")
        .filter(|d| !d.is_empty())
        .ok_or(QueryError::NotHandshake)?;
    let mut command = Document::try_from(doc).map_err(|e| BsonError::Malformed(e.to_string()))?;
    if let Ok(inner) = command.get_document("$query") {
        command = inner.clone();
    }
    let name = command.keys().next().map(|k| k.as_str()).unwrap_or("");
    if !matches!(name, "hello" | "isMaster" | "ismaster") {
        return Err(QueryError::NotHandshake);
    }
    Ok(LegacyHello {
        request_id: msg.header.request_id,
        database: database.to_string(),
        command,
    })
}

/// An OP_REPLY with one document, answering `response_to`.
pub fn encode_reply(request_id: i32, response_to: i32, doc: &Document) -> Vec<u8> {
    let body = encode_document(doc);
    let length = HEADER_LEN + 20 + body.len();
    let mut out = Vec::with_capacity(length);
    Header {
        length,
        request_id,
        response_to,
        op_code: OpCode::Reply,
    }
    .write(&mut out);
    out.extend_from_slice(&0i32.to_le_bytes()); // responseFlags
    out.extend_from_slice(&0i64.to_le_bytes()); // cursorID
    out.extend_from_slice(&0i32.to_le_bytes()); // startingFrom
    out.extend_from_slice(&1i32.to_le_bytes()); // numberReturned
    out.extend_from_slice(&body);
    out
}

/// Reads the first document of an OP_REPLY (what an upstream answers to an OP_QUERY hello).
pub fn parse_reply(msg: &Message) -> Result<Document, QueryError> {
    if msg.header.op_code != OpCode::Reply || msg.raw.len() < HEADER_LEN + 20 + 5 {
        return Err(QueryError::Malformed("not an OP_REPLY with a document"));
    }
    let (doc, _) = bson_check::validate_prefix(&msg.raw[HEADER_LEN + 20..])?;
    Document::try_from(doc).map_err(|e| QueryError::Bson(BsonError::Malformed(e.to_string())))
}

/// Encodes an OP_QUERY (used by tests and by clients of a legacy-only handshake).
pub fn encode_query(request_id: i32, namespace: &str, doc: &Document) -> Vec<u8> {
    let body = encode_document(doc);
    let length = HEADER_LEN + 4 + namespace.len() + 1 + 8 + body.len();
    let mut out = Vec::with_capacity(length);
    Header {
        length,
        request_id,
        response_to: 0,
        op_code: OpCode::Query,
    }
    .write(&mut out);
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(namespace.as_bytes());
    out.push(0);
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&(-1i32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mongo::op_msg::tests::frame;
    use bson::doc;

    #[test]
    fn handshake_queries_are_read_and_others_refused() {
        let q = encode_query(
            3,
            "admin.$cmd",
            &doc! { "isMaster": 1, "client": { "driver": { "name": "x" } } },
        );
        let h = parse_handshake(&frame(&q).unwrap()).unwrap();
        assert_eq!(h.database, "admin");
        assert_eq!(h.request_id, 3);
        let wrapped = encode_query(
            4,
            "admin.$cmd",
            &doc! { "$query": { "hello": 1 }, "$readPreference": { "mode": "primary" } },
        );
        assert!(parse_handshake(&frame(&wrapped).unwrap())
            .unwrap()
            .command
            .contains_key("hello"));
        for (ns, cmd) in [
            ("shop.orders", doc! { "hello": 1 }),
            ("admin.$cmd", doc! { "find": "orders" }),
            ("$cmd", doc! { "hello": 1 }),
        ] {
            assert_eq!(
                parse_handshake(&frame(&encode_query(1, ns, &cmd)).unwrap()).unwrap_err(),
                QueryError::NotHandshake,
                "{ns}"
            );
        }
    }

    #[test]
    fn reply_roundtrips() {
        let r = encode_reply(9, 3, &doc! { "ok": 1.0, "maxWireVersion": 21 });
        let m = frame(&r).unwrap();
        assert_eq!(m.header.response_to, 3);
        assert_eq!(
            parse_reply(&m).unwrap().get_i32("maxWireVersion").ok(),
            Some(21)
        );
    }

    #[test]
    fn truncated_queries_are_errors() {
        let q = encode_query(3, "admin.$cmd", &doc! { "hello": 1 });
        for cut in HEADER_LEN + 4..q.len() {
            let mut bytes = q[..cut].to_vec();
            let len = bytes.len() as i32;
            bytes[..4].copy_from_slice(&len.to_le_bytes());
            if let Ok(m) = frame(&bytes) {
                assert!(parse_handshake(&m).is_err(), "cut at {cut}");
            }
        }
    }
}
