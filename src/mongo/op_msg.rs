//! OP_MSG (opcode 2013): flag bits, one kind-0 body document, kind-1 document sequences, and
//! the optional CRC-32C checksum. Every document is validated strictly (`bson_check`) when the
//! message is parsed, so nothing downstream reads an ambiguous or malformed document.

use bson::Document;
use bytes::Bytes;

use super::bson_check::{self, BsonError};
use super::wire::{Header, Message, OpCode, WireError, HEADER_LEN};

/// Bit 0: a CRC-32C of the whole message follows the last section.
pub const CHECKSUM_PRESENT: u32 = 1;
/// Bit 1: the sender will send another message without waiting for a reply (no reply is
/// expected to this one).
pub const MORE_TO_COME: u32 = 1 << 1;
/// Bit 16: the client accepts a stream of replies (exhaust cursors).
pub const EXHAUST_ALLOWED: u32 = 1 << 16;
/// Bits 0-15 must be understood; any we do not know is an error (the spec says so).
const REQUIRED_MASK: u32 = 0xffff;
const KNOWN_REQUIRED: u32 = CHECKSUM_PRESENT | MORE_TO_COME;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MsgError {
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("{0}")]
    Bson(#[from] BsonError),
    #[error("OP_MSG checksum mismatch")]
    Checksum,
    #[error("OP_MSG has unknown required flag bits {0:#x}")]
    UnknownFlags(u32),
    #[error("OP_MSG must have exactly one body (kind 0) section, found {0}")]
    BodyCount(usize),
    #[error("OP_MSG section kind {0} is not supported")]
    SectionKind(u8),
    #[error("document sequence \"{0}\" is given twice, or also as a field of the body")]
    DuplicateSequence(String),
    #[error("malformed OP_MSG: {0}")]
    Malformed(&'static str),
}

/// A kind-1 section: `identifier` names the command field the documents belong to (`documents`
/// of an insert, `updates`, `deletes`).
#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    pub identifier: String,
    /// Each document's raw bytes (validated).
    pub documents: Vec<Bytes>,
}

/// A parsed OP_MSG. Raw bytes are kept so an unchanged message is forwarded as received.
#[derive(Debug, Clone)]
pub struct OpMsg {
    pub request_id: i32,
    pub response_to: i32,
    pub flags: u32,
    /// The kind-0 document's bytes (validated).
    pub body: Bytes,
    pub sequences: Vec<Sequence>,
}

fn crc(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

impl OpMsg {
    /// Parses and validates a whole message whose header says OP_MSG.
    pub fn parse(msg: &Message) -> Result<OpMsg, MsgError> {
        if msg.header.op_code != OpCode::Msg {
            return Err(MsgError::Malformed("not an OP_MSG"));
        }
        let raw = &msg.raw;
        let body_bytes = &raw[HEADER_LEN..];
        if body_bytes.len() < 4 {
            return Err(MsgError::Malformed("no flag bits"));
        }
        let flags =
            u32::from_le_bytes([body_bytes[0], body_bytes[1], body_bytes[2], body_bytes[3]]);
        let unknown = flags & REQUIRED_MASK & !KNOWN_REQUIRED;
        if unknown != 0 {
            return Err(MsgError::UnknownFlags(unknown));
        }
        let mut end = raw.len();
        if flags & CHECKSUM_PRESENT != 0 {
            if raw.len() < HEADER_LEN + 4 + 4 {
                return Err(MsgError::Malformed("checksum flag set but no room for it"));
            }
            end -= 4;
            let stated = u32::from_le_bytes([raw[end], raw[end + 1], raw[end + 2], raw[end + 3]]);
            if crc(&raw[..end]) != stated {
                return Err(MsgError::Checksum);
            }
        }
        let mut at = HEADER_LEN + 4;
        let mut body = None;
        let mut bodies = 0;
        let mut sequences: Vec<Sequence> = Vec::new();
        while at < end {
            let kind = raw[at];
            at += 1;
            match kind {
                0 => {
                    let (_, n) = bson_check::validate_prefix(&raw[at..end])?;
                    body = Some(raw.slice(at..at + n));
                    bodies += 1;
                    at += n;
                }
                1 => {
                    if end - at < 4 {
                        return Err(MsgError::Malformed("truncated document sequence"));
                    }
                    let size = i32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
                    if size < 5 || size as usize > end - at {
                        return Err(MsgError::Malformed("document sequence size out of bounds"));
                    }
                    let stop = at + size as usize;
                    let mut p = at + 4;
                    let nul = raw[p..stop]
                        .iter()
                        .position(|&b| b == 0)
                        .ok_or(MsgError::Malformed("unterminated sequence identifier"))?;
                    let identifier = std::str::from_utf8(&raw[p..p + nul])
                        .map_err(|_| MsgError::Malformed("sequence identifier is not UTF-8"))?
                        .to_string();
                    p += nul + 1;
                    let mut documents = Vec::new();
                    while p < stop {
                        let (_, n) = bson_check::validate_prefix(&raw[p..stop])?;
                        documents.push(raw.slice(p..p + n));
                        p += n;
                    }
                    if sequences.iter().any(|s| s.identifier == identifier) {
                        return Err(MsgError::DuplicateSequence(identifier));
                    }
                    sequences.push(Sequence {
                        identifier,
                        documents,
                    });
                    at = stop;
                }
                k => return Err(MsgError::SectionKind(k)),
            }
        }
        let body = match (body, bodies) {
            (Some(b), 1) => b,
            (_, n) => return Err(MsgError::BodyCount(n)),
        };
        let msg = OpMsg {
            request_id: msg.header.request_id,
            response_to: msg.header.response_to,
            flags,
            body,
            sequences,
        };
        // A sequence whose identifier is also a body field would be ambiguous (which wins?).
        let doc = msg.body_raw();
        for s in &msg.sequences {
            if doc.get(&s.identifier).ok().flatten().is_some() {
                return Err(MsgError::DuplicateSequence(s.identifier.clone()));
            }
        }
        Ok(msg)
    }

    pub fn body_raw(&self) -> &bson::RawDocument {
        // Validated in `parse` (or built by us).
        bson::RawDocument::from_bytes(&self.body).expect("validated body")
    }

    /// The body as an owned document (lossless: it has no duplicate keys).
    pub fn body_document(&self) -> Result<Document, MsgError> {
        Document::try_from(self.body_raw())
            .map_err(|e| MsgError::Bson(BsonError::Malformed(e.to_string())))
    }

    /// The sequences as owned documents, by identifier.
    pub fn sequence_documents(&self) -> Result<Vec<(String, Vec<Document>)>, MsgError> {
        self.sequences
            .iter()
            .map(|s| {
                let docs = s
                    .documents
                    .iter()
                    .map(|d| {
                        let raw = bson::RawDocument::from_bytes(d)
                            .map_err(|e| BsonError::Malformed(e.to_string()))?;
                        Document::try_from(raw).map_err(|e| BsonError::Malformed(e.to_string()))
                    })
                    .collect::<Result<Vec<_>, BsonError>>()?;
                Ok((s.identifier.clone(), docs))
            })
            .collect()
    }

    pub fn more_to_come(&self) -> bool {
        self.flags & MORE_TO_COME != 0
    }

    pub fn exhaust_allowed(&self) -> bool {
        self.flags & EXHAUST_ALLOWED != 0
    }

    /// A message with a new body, keeping flags and sequences.
    pub fn with_body(&self, body: &Document) -> OpMsg {
        OpMsg {
            body: Bytes::from(encode_document(body)),
            ..self.clone()
        }
    }

    /// The message to forward for a command the policy rewrote: its body and document
    /// sequences re-encoded, flags and request id kept (encode with `checksum` as received).
    pub fn with_command(&self, cmd: &crate::policy::mongo::Command) -> OpMsg {
        OpMsg {
            body: Bytes::from(encode_document(&cmd.body)),
            sequences: cmd
                .sequences
                .iter()
                .map(|(identifier, docs)| Sequence {
                    identifier: identifier.clone(),
                    documents: docs
                        .iter()
                        .map(|d| Bytes::from(encode_document(d)))
                        .collect(),
                })
                .collect(),
            ..self.clone()
        }
    }

    /// A reply to `request_id` carrying `body`.
    pub fn reply(response_to: i32, request_id: i32, body: &Document) -> OpMsg {
        OpMsg {
            request_id,
            response_to,
            flags: 0,
            body: Bytes::from(encode_document(body)),
            sequences: Vec::new(),
        }
    }

    /// Encodes the message. With `checksum`, the flag is set and a fresh CRC-32C appended
    /// (so a message tollgate rewrote never carries a stale checksum); without, both are
    /// stripped.
    pub fn encode(&self, checksum: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 5 + self.body.len() + 4);
        out.resize(HEADER_LEN, 0);
        let flags = if checksum {
            self.flags | CHECKSUM_PRESENT
        } else {
            self.flags & !CHECKSUM_PRESENT
        };
        out.extend_from_slice(&flags.to_le_bytes());
        out.push(0);
        out.extend_from_slice(&self.body);
        for s in &self.sequences {
            out.push(1);
            let size =
                4 + s.identifier.len() + 1 + s.documents.iter().map(|d| d.len()).sum::<usize>();
            out.extend_from_slice(&(size as i32).to_le_bytes());
            out.extend_from_slice(s.identifier.as_bytes());
            out.push(0);
            for d in &s.documents {
                out.extend_from_slice(d);
            }
        }
        let length = out.len() + if checksum { 4 } else { 0 };
        let mut header = Vec::with_capacity(HEADER_LEN);
        Header {
            length,
            request_id: self.request_id,
            response_to: self.response_to,
            op_code: OpCode::Msg,
        }
        .write(&mut header);
        out[..HEADER_LEN].copy_from_slice(&header);
        if checksum {
            let sum = crc(&out);
            out.extend_from_slice(&sum.to_le_bytes());
        }
        out
    }
}

/// A document's BSON bytes. Encoding an in-memory `Document` only fails for keys with NUL
/// bytes, which no validated input has and tollgate never builds.
pub fn encode_document(doc: &Document) -> Vec<u8> {
    doc.to_vec().unwrap_or_else(|_| {
        bson::doc! { "ok": 0.0, "errmsg": "tollgate: could not encode a document", "code": 1 }
            .to_vec()
            .unwrap_or_default()
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::mongo::wire::{MessageReader, MAX_MESSAGE_BYTES};
    use bson::doc;
    use bytes::BytesMut;

    pub(crate) fn frame(bytes: &[u8]) -> Result<Message, WireError> {
        let mut buf = BytesMut::from(bytes);
        MessageReader::<&[u8]>::split_message(&mut buf, MAX_MESSAGE_BYTES)
            .map(|m| m.expect("whole"))
    }

    fn insert_msg() -> OpMsg {
        let d = |i: i32| Bytes::from(encode_document(&doc! { "_id": i }));
        OpMsg {
            request_id: 5,
            response_to: 0,
            flags: 0,
            body: Bytes::from(encode_document(&doc! { "insert": "orders", "$db": "shop" })),
            sequences: vec![Sequence {
                identifier: "documents".into(),
                documents: vec![d(1), d(2)],
            }],
        }
    }

    #[test]
    fn roundtrips_with_and_without_checksum() {
        let m = insert_msg();
        for checksum in [false, true] {
            let bytes = m.encode(checksum);
            let parsed = OpMsg::parse(&frame(&bytes).unwrap()).unwrap();
            assert_eq!(parsed.body, m.body);
            assert_eq!(parsed.sequences, m.sequences);
            assert_eq!(parsed.flags & CHECKSUM_PRESENT != 0, checksum);
            assert_eq!(
                parsed.encode(checksum),
                bytes,
                "re-encoding is byte-identical"
            );
        }
    }

    #[test]
    fn a_wrong_checksum_is_refused_and_rewrites_recompute_it() {
        let m = insert_msg();
        let mut bytes = m.encode(true);
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        assert_eq!(
            OpMsg::parse(&frame(&bytes).unwrap()).unwrap_err(),
            MsgError::Checksum
        );
        let rewritten = m.with_body(&doc! { "insert": "orders", "$db": "shop", "ordered": true });
        let again = OpMsg::parse(&frame(&rewritten.encode(true)).unwrap()).unwrap();
        assert_eq!(
            again.body_document().unwrap().get_bool("ordered").ok(),
            Some(true)
        );
    }

    #[test]
    fn a_rewritten_command_keeps_its_sequences() {
        let m = insert_msg();
        let mut cmd = crate::policy::mongo::Command::new(
            m.body_document().unwrap(),
            m.sequence_documents().unwrap(),
        )
        .unwrap();
        cmd.set_documents("documents", vec![doc! { "_id": 9 }]);
        cmd.body.insert("ordered", false);
        let out = m.with_command(&cmd);
        let again = OpMsg::parse(&frame(&out.encode(true)).unwrap()).unwrap();
        assert_eq!(again.request_id, 5);
        assert_eq!(
            again.sequence_documents().unwrap(),
            vec![("documents".to_string(), vec![doc! { "_id": 9 }])]
        );
        assert_eq!(
            again.body_document().unwrap().get_bool("ordered").ok(),
            Some(false)
        );
    }

    #[test]
    fn structural_errors() {
        let m = insert_msg();
        // Two bodies.
        let mut two = m.clone();
        two.sequences.clear();
        let mut bytes = two.encode(false);
        bytes.push(0);
        bytes.extend_from_slice(&two.body);
        let len = bytes.len() as i32;
        bytes[..4].copy_from_slice(&len.to_le_bytes());
        assert_eq!(
            OpMsg::parse(&frame(&bytes).unwrap()).unwrap_err(),
            MsgError::BodyCount(2)
        );
        // Unknown required flag.
        let mut odd = m.clone();
        odd.flags = 1 << 5;
        assert_eq!(
            OpMsg::parse(&frame(&odd.encode(false)).unwrap()).unwrap_err(),
            MsgError::UnknownFlags(1 << 5)
        );
        // Unknown optional flags are ignored and kept.
        let mut opt = m.clone();
        opt.flags = EXHAUST_ALLOWED | (1 << 20);
        assert!(OpMsg::parse(&frame(&opt.encode(false)).unwrap())
            .unwrap()
            .exhaust_allowed());
        // A sequence that is also a body field.
        let mut dup = m.clone();
        dup.body = Bytes::from(encode_document(
            &doc! { "insert": "o", "documents": [], "$db": "s" },
        ));
        assert!(matches!(
            OpMsg::parse(&frame(&dup.encode(false)).unwrap()),
            Err(MsgError::DuplicateSequence(_))
        ));
        // A sequence given twice.
        let mut twice = m.clone();
        twice.sequences.push(twice.sequences[0].clone());
        assert!(matches!(
            OpMsg::parse(&frame(&twice.encode(false)).unwrap()),
            Err(MsgError::DuplicateSequence(_))
        ));
        // Section kind 2.
        let mut bytes = m.encode(false);
        bytes[HEADER_LEN + 4] = 2;
        assert_eq!(
            OpMsg::parse(&frame(&bytes).unwrap()).unwrap_err(),
            MsgError::SectionKind(2)
        );
    }
}
