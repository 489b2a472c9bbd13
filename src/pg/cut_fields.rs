//! ErrorResponse and NoticeResponse messages too large to hold, cut field by field as they
//! arrive. A server error can quote a value the statement built: `select repeat('x',
//! 200000000)::int` (43 bytes) made the server send a 200 MB error, which the relay read whole
//! (four sessions: 2.2 GB) and the audit log recorded whole. Each field keeps its first
//! [`KEEP`] bytes and says how long it was, so the client still gets a well-formed message with
//! every field (SQLSTATE, the message's head, detail, hint, position...) and the gateway never
//! holds more than one piece of it.

use bytes::{BufMut, Bytes, BytesMut};

use super::frame::{Frame, FrameError, CHUNK};
use super::link::ServerReader;

/// The most of one field's value that is kept.
pub const KEEP: usize = 64 * 1024;

/// Reads the `len`-byte message tagged `tag` (header still unread) in pieces and returns it
/// with every field cut to [`KEEP`] bytes.
pub async fn read_cut(reader: &mut ServerReader, tag: u8, len: usize) -> Result<Frame, FrameError> {
    let mut cut = FieldCut::new(tag);
    let mut left = len;
    while left > 0 {
        let piece = reader.chunk(left.min(CHUNK)).await?;
        left -= piece.len();
        cut.feed_message(&piece);
    }
    Ok(cut.finish())
}

/// A field-list message (`type byte, value, NUL` ... `NUL`) rebuilt from its body as it arrives.
pub struct FieldCut {
    out: BytesMut,
    /// The next byte is a field type (or the list's terminating NUL).
    at_type: bool,
    /// Bytes of the current value kept, and dropped.
    kept: usize,
    dropped: usize,
    /// The terminating NUL was seen: anything after it is ignored.
    done: bool,
    /// Bytes of the message's header (tag and length) still to pass over ([`FieldCut::feed_message`]).
    header: usize,
}

impl FieldCut {
    pub fn new(tag: u8) -> FieldCut {
        let mut out = BytesMut::with_capacity(4 * KEEP);
        out.put_u8(tag);
        out.put_i32(0); // the length, set by `finish`
        FieldCut {
            out,
            at_type: true,
            kept: 0,
            dropped: 0,
            done: false,
            header: 5,
        }
    }

    /// The next bytes of the whole message, its header first (passed over: `finish` writes
    /// its own).
    pub fn feed_message(&mut self, piece: &[u8]) {
        let skip = self.header.min(piece.len());
        self.header -= skip;
        self.feed(&piece[skip..]);
    }

    /// The next bytes of the message's body.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.done {
            if self.at_type {
                let t = bytes[0];
                bytes = &bytes[1..];
                self.out.put_u8(t);
                if t == 0 {
                    self.done = true;
                } else {
                    (self.at_type, self.kept, self.dropped) = (false, 0, 0);
                }
                continue;
            }
            match memchr::memchr(0, bytes) {
                Some(i) => {
                    self.take(&bytes[..i]);
                    self.end_value();
                    bytes = &bytes[i + 1..];
                }
                None => {
                    self.take(bytes);
                    bytes = &[];
                }
            }
        }
    }

    fn take(&mut self, value: &[u8]) {
        let k = KEEP.saturating_sub(self.kept).min(value.len());
        self.out.extend_from_slice(&value[..k]);
        self.kept += k;
        self.dropped += value.len() - k;
    }

    fn end_value(&mut self) {
        if self.dropped > 0 {
            // Cut on a byte boundary; the marker says so in ASCII whatever the encoding.
            let marker = format!(" ... [{} bytes in all]", self.kept + self.dropped);
            self.out.extend_from_slice(marker.as_bytes());
        }
        self.out.put_u8(0);
        self.at_type = true;
    }

    /// The rebuilt message (a field or the list left unterminated by a short message is closed).
    pub fn finish(mut self) -> Frame {
        if !self.done {
            if !self.at_type {
                self.end_value();
            }
            self.out.put_u8(0);
        }
        let len = (self.out.len() - 1) as i32;
        self.out[1..5].copy_from_slice(&len.to_be_bytes());
        let raw: Bytes = self.out.freeze();
        Frame { tag: raw[0], raw }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::backend as msg;

    fn body(fields: &[(u8, &[u8])]) -> Vec<u8> {
        let mut b = Vec::new();
        for (t, v) in fields {
            b.push(*t);
            b.extend_from_slice(v);
            b.push(0);
        }
        b.push(0);
        b
    }

    #[test]
    fn every_field_survives_each_cut_to_its_head_in_any_piece_size() {
        let big = vec![b'x'; 300_000];
        let b = body(&[
            (b'S', b"ERROR"),
            (b'C', b"22P02"),
            (b'M', &big),
            (b'D', b"detail"),
        ]);
        for piece in [1, 7, 4096, 70_000, b.len()] {
            let mut cut = FieldCut::new(msg::ERROR_RESPONSE);
            for chunk in b.chunks(piece) {
                cut.feed(chunk);
            }
            let f = cut.finish();
            assert_eq!(
                i32::from_be_bytes([f.raw[1], f.raw[2], f.raw[3], f.raw[4]]) as usize,
                f.raw.len() - 1
            );
            assert_eq!(msg::error_field(f.body(), b'C').as_deref(), Some("22P02"));
            assert_eq!(msg::error_field(f.body(), b'D').as_deref(), Some("detail"));
            let m = msg::error_field(f.body(), b'M').unwrap();
            assert!(
                m.starts_with("xxx") && m.ends_with(" ... [300000 bytes in all]"),
                "{}",
                &m[m.len() - 40..]
            );
            assert_eq!(m.len(), KEEP + " ... [300000 bytes in all]".len());
        }
    }

    #[test]
    fn a_short_message_is_kept_as_it_is_and_a_broken_one_is_closed() {
        let b = body(&[(b'S', b"NOTICE"), (b'M', b"hello")]);
        let mut cut = FieldCut::new(msg::NOTICE_RESPONSE);
        cut.feed(&b);
        let mut expected = vec![msg::NOTICE_RESPONSE];
        expected.extend_from_slice(&((b.len() + 4) as i32).to_be_bytes());
        expected.extend_from_slice(&b);
        assert_eq!(&cut.finish().raw[..], &expected[..]);
        // A value never terminated, no list terminator: closed, readable.
        let mut cut = FieldCut::new(msg::ERROR_RESPONSE);
        cut.feed(b"Mabc");
        let f = cut.finish();
        assert_eq!(msg::error_field(f.body(), b'M').as_deref(), Some("abc"));
        assert_eq!(f.body().last(), Some(&0));
    }
}
