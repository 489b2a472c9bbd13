//! MongoDB message framing: the 16-byte header (`messageLength`, `requestID`, `responseTo`,
//! `opCode`, little-endian), opcodes, and a reader that checks the declared length against the
//! phase's limit before buffering a single byte of the body.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// `maxMessageSizeBytes` of every MongoDB server since 3.6, and what tollgate advertises.
pub const MAX_MESSAGE_BYTES: usize = 48_000_000;
/// `maxBsonObjectSize`: one document.
pub const MAX_BSON_OBJECT_BYTES: usize = 16 * 1024 * 1024;
/// Before authentication only `hello`, `isMaster`, `saslStart`, `saslContinue`, `ping`,
/// `buildInfo` and `endSessions` are served: small documents. An unauthenticated peer cannot
/// make tollgate buffer more than this.
pub const PRE_AUTH_MAX_BYTES: usize = 64 * 1024;
pub const HEADER_LEN: usize = 16;
/// A read buffer larger than this is released once it is empty.
const MAX_IDLE_BUFFER: usize = 64 * 1024;

/// The opcodes tollgate knows. Anything else is a protocol error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// 1: the legacy reply, answer to OP_QUERY.
    Reply,
    /// 2004: legacy query; drivers still send `hello`/`isMaster` with it first.
    Query,
    /// 2012: compression wrapper. tollgate never advertises compressors, so it is refused.
    Compressed,
    /// 2013: every command since MongoDB 3.6.
    Msg,
    /// Removed opcodes (OP_UPDATE 2001, OP_INSERT 2002, OP_GET_MORE 2005, OP_DELETE 2006,
    /// OP_KILL_CURSORS 2007): MongoDB 6.0 dropped them; tollgate refuses them.
    Legacy(i32),
}

impl OpCode {
    pub fn from_i32(code: i32) -> Option<OpCode> {
        Some(match code {
            1 => OpCode::Reply,
            2004 => OpCode::Query,
            2012 => OpCode::Compressed,
            2013 => OpCode::Msg,
            2001 | 2002 | 2005 | 2006 | 2007 => OpCode::Legacy(code),
            _ => return None,
        })
    }

    pub fn as_i32(self) -> i32 {
        match self {
            OpCode::Reply => 1,
            OpCode::Query => 2004,
            OpCode::Compressed => 2012,
            OpCode::Msg => 2013,
            OpCode::Legacy(c) => c,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("connection closed in the middle of a message")]
    Truncated,
    #[error("invalid message length {0}")]
    BadLength(i64),
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("unknown opcode {0}")]
    UnknownOpCode(i32),
    #[error("OP_COMPRESSED is not supported: tollgate advertises no compressors; connect without `compressors`")]
    Compressed,
    #[error("opcode {0} was removed in MongoDB 6.0 and is not supported; use OP_MSG")]
    RemovedOpCode(i32),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("{0}")]
    Held(#[from] crate::ratelimit::HeldExhausted),
    #[error("{0}")]
    Io(String),
}

impl From<std::io::Error> for WireError {
    fn from(e: std::io::Error) -> WireError {
        WireError::Io(e.to_string())
    }
}

/// The standard message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub length: usize,
    pub request_id: i32,
    pub response_to: i32,
    pub op_code: OpCode,
}

fn le_i32(b: &[u8], at: usize) -> i32 {
    i32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Header {
    /// Reads and checks a header (`buf` holds at least 16 bytes). The length is checked
    /// against `limit` here, before the body is read.
    pub fn parse(buf: &[u8], limit: usize) -> Result<Header, WireError> {
        if buf.len() < HEADER_LEN {
            return Err(WireError::Malformed("header shorter than 16 bytes".into()));
        }
        let len = le_i32(buf, 0);
        // An OP_MSG needs at least flags and one kind-0 section of an empty document.
        if len < HEADER_LEN as i32 + 4 {
            return Err(WireError::BadLength(len.into()));
        }
        let length = len as usize;
        if length > limit {
            return Err(WireError::TooLarge { len: length, limit });
        }
        let code = le_i32(buf, 12);
        let op_code = match OpCode::from_i32(code) {
            Some(OpCode::Compressed) => return Err(WireError::Compressed),
            Some(OpCode::Legacy(c)) => return Err(WireError::RemovedOpCode(c)),
            Some(op) => op,
            None => return Err(WireError::UnknownOpCode(code)),
        };
        Ok(Header {
            length,
            request_id: le_i32(buf, 4),
            response_to: le_i32(buf, 8),
            op_code,
        })
    }

    /// Writes the 16 header bytes.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.length as i32).to_le_bytes());
        out.extend_from_slice(&self.request_id.to_le_bytes());
        out.extend_from_slice(&self.response_to.to_le_bytes());
        out.extend_from_slice(&self.op_code.as_i32().to_le_bytes());
    }
}

/// One whole message: its header and all its bytes (header included), zero-copy.
#[derive(Debug, Clone)]
pub struct Message {
    pub header: Header,
    pub raw: Bytes,
}

impl Message {
    /// The bytes after the header.
    pub fn body(&self) -> &[u8] {
        &self.raw[HEADER_LEN..]
    }
}

/// Frames one direction of a connection; the limit changes with the phase (pre-auth, then
/// `maxMessageSizeBytes`).
pub struct MessageReader<R> {
    inner: R,
    buf: BytesMut,
    limit: usize,
    /// The buffer's share of `limits.max_held_client_bytes` (a client's reader only).
    held: crate::ratelimit::Held,
}

impl<R: AsyncRead + Unpin> MessageReader<R> {
    pub fn new(inner: R, limit: usize) -> MessageReader<R> {
        MessageReader {
            inner,
            buf: BytesMut::new(),
            limit,
            held: Default::default(),
        }
    }

    /// A reader that starts with bytes already read from `inner` (a login's leftovers).
    pub fn with_buffer(inner: R, limit: usize, buf: BytesMut) -> MessageReader<R> {
        MessageReader {
            inner,
            buf,
            limit,
            held: Default::default(),
        }
    }

    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// Counts this reader's buffer against the gateway-wide budget from now on.
    pub fn set_held(&mut self, held: crate::ratelimit::Held) {
        self.held = held;
    }

    /// True when a whole message is buffered (reading it will not wait on the socket).
    pub fn has_buffered_message(&self) -> bool {
        self.buf.len() >= HEADER_LEN && {
            let len = le_i32(&self.buf, 0);
            len > 0 && self.buf.len() >= len as usize
        }
    }

    /// Splits a whole message off `buf` if there is one (a pure step, also used by tests).
    pub fn split_message(buf: &mut BytesMut, limit: usize) -> Result<Option<Message>, WireError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let header = Header::parse(buf, limit)?;
        if buf.len() < header.length {
            buf.reserve(header.length - buf.len());
            return Ok(None);
        }
        let raw = buf.split_to(header.length).freeze();
        crate::ratelimit::detach_after(buf, header.length);
        Ok(Some(Message { header, raw }))
    }

    /// The next message, or `None` on a clean end of stream between messages.
    pub async fn next(&mut self) -> Result<Option<Message>, WireError> {
        loop {
            if let Some(m) = Self::split_message(&mut self.buf, self.limit)? {
                if self.buf.is_empty() && self.buf.capacity() > MAX_IDLE_BUFFER {
                    self.buf = BytesMut::new();
                }
                return Ok(Some(m));
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(8192);
            }
            // What was consumed since the last read is given back before waiting for the next.
            self.held.track(self.buf.len())?;
            let n = self.inner.read_buf(&mut self.buf).await?;
            self.held.track(self.buf.len())?;
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(WireError::Truncated)
                };
            }
        }
    }

    /// The request id of the message at the front of the buffer (whole or not), once its header
    /// has arrived: what a reply to a refused oversized message answers.
    pub fn front_request_id(&self) -> Option<i32> {
        (self.buf.len() >= HEADER_LEN).then(|| le_i32(&self.buf, 4))
    }

    /// The declared length of the message at the front of the buffer, once its header arrived.
    pub fn front_length(&self) -> Option<usize> {
        (self.buf.len() >= HEADER_LEN)
            .then(|| le_i32(&self.buf, 0))
            .and_then(|l| usize::try_from(l).ok())
    }

    /// Reads and drops the next `len` bytes (an oversized message refused after its header was
    /// read), never holding more than one read's worth of them.
    pub async fn discard(&mut self, mut len: usize) -> Result<(), WireError> {
        loop {
            let n = len.min(self.buf.len());
            let _ = self.buf.split_to(n);
            len -= n;
            if len == 0 {
                return Ok(());
            }
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return Err(WireError::Truncated);
            }
        }
    }

    pub fn into_inner(self) -> (R, BytesMut) {
        (self.inner, self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len: i32, op: i32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(&7i32.to_le_bytes());
        v.extend_from_slice(&0i32.to_le_bytes());
        v.extend_from_slice(&op.to_le_bytes());
        v
    }

    #[test]
    fn lengths_are_checked_before_the_body_arrives() {
        let mut buf = BytesMut::from(&header(1_000_000_000, 2013)[..]);
        assert_eq!(
            MessageReader::<&[u8]>::split_message(&mut buf, MAX_MESSAGE_BYTES).unwrap_err(),
            WireError::TooLarge {
                len: 1_000_000_000,
                limit: MAX_MESSAGE_BYTES
            }
        );
        let mut buf = BytesMut::from(&header(70_000, 2013)[..]);
        assert!(matches!(
            MessageReader::<&[u8]>::split_message(&mut buf, PRE_AUTH_MAX_BYTES),
            Err(WireError::TooLarge { .. })
        ));
        for bad in [-1, 0, 15, 19] {
            let mut buf = BytesMut::from(&header(bad, 2013)[..]);
            assert_eq!(
                MessageReader::<&[u8]>::split_message(&mut buf, MAX_MESSAGE_BYTES).unwrap_err(),
                WireError::BadLength(bad.into())
            );
        }
    }

    #[tokio::test]
    async fn an_oversized_message_is_discarded_and_the_next_one_read() {
        let mut big = header(40_000, 2013);
        big.resize(40_000, 7);
        let mut small = header(21, 2013);
        small.extend_from_slice(&[0, 0, 0, 0, 0]);
        big.extend_from_slice(&small);
        let mut r = MessageReader::new(&big[..], 1024);
        let Err(WireError::TooLarge { len, .. }) = r.next().await else {
            panic!("limit")
        };
        assert_eq!(r.front_request_id(), Some(7));
        r.discard(len).await.unwrap();
        assert_eq!(r.next().await.unwrap().unwrap().raw.len(), 21);
    }

    #[test]
    fn opcodes_compressed_removed_and_unknown_are_refused() {
        for (op, want) in [
            (2012, WireError::Compressed),
            (2002, WireError::RemovedOpCode(2002)),
            (2005, WireError::RemovedOpCode(2005)),
            (9999, WireError::UnknownOpCode(9999)),
        ] {
            let mut buf = BytesMut::from(&header(40, op)[..]);
            assert_eq!(
                MessageReader::<&[u8]>::split_message(&mut buf, MAX_MESSAGE_BYTES).unwrap_err(),
                want
            );
        }
    }

    #[tokio::test]
    async fn reads_messages_split_across_reads_and_reports_truncation() {
        let mut whole = header(21, 2013);
        whole.extend_from_slice(&[0, 0, 0, 0, 0]);
        let mut two = whole.clone();
        two.extend_from_slice(&whole);
        let mut r = MessageReader::new(&two[..], MAX_MESSAGE_BYTES);
        assert_eq!(r.next().await.unwrap().unwrap().raw.len(), 21);
        assert_eq!(r.next().await.unwrap().unwrap().body(), &[0, 0, 0, 0, 0]);
        assert!(r.next().await.unwrap().is_none());
        let mut r = MessageReader::new(&whole[..18], MAX_MESSAGE_BYTES);
        assert_eq!(r.next().await.unwrap_err(), WireError::Truncated);
    }
}
