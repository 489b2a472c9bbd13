//! What the session reads from an upstream reply without decoding it: the body of an OP_MSG
//! reply as a lazy `RawDocument`, whether it is an error (code and code name, never the server's
//! message: it can quote values), the cursor it opened or advanced, the documents it carries and
//! the count of a write. Replies nobody masks are relayed as received; this is all they cost.

use bson::raw::{RawBsonRef, RawDocument};

use super::wire::{Message, OpCode, HEADER_LEN};

/// A reply's body and flags (an OP_MSG whose first section is the body, as servers send).
pub struct ReplyView<'a> {
    pub body: &'a RawDocument,
    pub flags: u32,
}

/// What went wrong with an upstream reply as the session sees it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed reply from the upstream: {0}")]
pub struct BadReply(pub &'static str);

impl<'a> ReplyView<'a> {
    pub fn of(msg: &'a Message) -> Result<ReplyView<'a>, BadReply> {
        if msg.header.op_code != OpCode::Msg {
            return Err(BadReply("not an OP_MSG"));
        }
        let raw = &msg.raw[..];
        if raw.len() < HEADER_LEN + 5 {
            return Err(BadReply("too short"));
        }
        let flags = u32::from_le_bytes([raw[16], raw[17], raw[18], raw[19]]);
        if raw[20] != 0 {
            return Err(BadReply("the first section is not the body"));
        }
        let start = HEADER_LEN + 5;
        if raw.len() < start + 5 {
            return Err(BadReply("no body"));
        }
        let len = i32::from_le_bytes([raw[start], raw[start + 1], raw[start + 2], raw[start + 3]]);
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| start.checked_add(l))
            .filter(|e| *e <= raw.len())
            .ok_or(BadReply("body length out of bounds"))?;
        let body = RawDocument::from_bytes(&raw[start..end]).map_err(|_| BadReply("bad body"))?;
        Ok(ReplyView { body, flags })
    }

    pub fn more_to_come(&self) -> bool {
        self.flags & super::op_msg::MORE_TO_COME != 0
    }

    /// `ok` is 1 (or true); a missing or unreadable `ok` is an error.
    pub fn ok(&self) -> bool {
        match self.body.get("ok") {
            Ok(Some(RawBsonRef::Double(v))) => v != 0.0,
            Ok(Some(RawBsonRef::Int32(v))) => v != 0,
            Ok(Some(RawBsonRef::Int64(v))) => v != 0,
            Ok(Some(RawBsonRef::Boolean(b))) => b,
            _ => false,
        }
    }

    /// The error of a failed command, or the first write error / write concern error of one
    /// that succeeded partly: `CodeName (code)`.
    pub fn error(&self) -> Option<String> {
        let describe = |d: &RawDocument| {
            let code = match d.get("code") {
                Ok(Some(RawBsonRef::Int32(c))) => Some(i64::from(c)),
                Ok(Some(RawBsonRef::Int64(c))) => Some(c),
                Ok(Some(RawBsonRef::Double(c))) => Some(c as i64),
                _ => None,
            };
            let name = d.get_str("codeName").unwrap_or("Error");
            match code {
                Some(c) => format!("{name} ({c})"),
                None => name.to_string(),
            }
        };
        if !self.ok() {
            return Some(describe(self.body));
        }
        if let Ok(errors) = self.body.get_array("writeErrors") {
            if let Some(Ok(RawBsonRef::Document(first))) = errors.into_iter().next() {
                return Some(describe(first));
            }
        }
        if let Ok(wce) = self.body.get_document("writeConcernError") {
            return Some(describe(wce));
        }
        None
    }

    /// `cursor.id`, `cursor.ns` and the length of `firstBatch`/`nextBatch`.
    pub fn cursor(&self) -> Option<(i64, Option<&'a str>, u64)> {
        let c = self.body.get_document("cursor").ok()?;
        let id = match c.get("id").ok()?? {
            RawBsonRef::Int64(v) => v,
            RawBsonRef::Int32(v) => v.into(),
            _ => return None,
        };
        let batch = c
            .get_array("firstBatch")
            .or_else(|_| c.get_array("nextBatch"))
            .map(|a| a.into_iter().count() as u64)
            .unwrap_or(0);
        Some((id, c.get_str("ns").ok(), batch))
    }

    /// The documents a reply stands for, for the audit record: a cursor's batch, a write's `n`,
    /// a findAndModify's `lastErrorObject.n`, distinct's `values`.
    pub fn rows(&self) -> Option<u64> {
        if let Some((_, _, n)) = self.cursor() {
            return Some(n);
        }
        let number = |b: Option<RawBsonRef>| match b? {
            RawBsonRef::Int32(v) => u64::try_from(v).ok(),
            RawBsonRef::Int64(v) => u64::try_from(v).ok(),
            RawBsonRef::Double(v) if v >= 0.0 => Some(v as u64),
            _ => None,
        };
        if let Some(n) = number(self.body.get("n").ok().flatten()) {
            return Some(n);
        }
        if let Ok(l) = self.body.get_document("lastErrorObject") {
            return number(l.get("n").ok().flatten());
        }
        if let Ok(v) = self.body.get_array("values") {
            return Some(v.into_iter().count() as u64);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mongo::op_msg::{tests::frame, OpMsg};
    use bson::doc;

    fn view_of(d: bson::Document) -> (Message, bson::Document) {
        (frame(&OpMsg::reply(3, 4, &d).encode(false)).unwrap(), d)
    }

    #[test]
    fn reads_cursors_counts_and_errors_without_decoding() {
        let (m, _) = view_of(
            doc! { "cursor": { "id": 77i64, "ns": "shop.orders", "firstBatch": [ {"a": 1}, {"a": 2} ] }, "ok": 1.0 },
        );
        let v = ReplyView::of(&m).unwrap();
        assert!(v.ok());
        assert_eq!(v.cursor(), Some((77, Some("shop.orders"), 2)));
        assert_eq!(v.rows(), Some(2));
        assert_eq!(v.error(), None);
        let (m, _) = view_of(doc! { "n": 3, "ok": 1 });
        assert_eq!(ReplyView::of(&m).unwrap().rows(), Some(3));
        let (m, _) = view_of(
            doc! { "ok": 0.0, "errmsg": "E11000 dup key: { email: \"a@b.c\" }", "code": 11000, "codeName": "DuplicateKey" },
        );
        let v = ReplyView::of(&m).unwrap();
        assert!(!v.ok());
        assert_eq!(v.error().as_deref(), Some("DuplicateKey (11000)"));
        let (m, _) = view_of(
            doc! { "n": 0, "writeErrors": [ { "index": 0, "code": 11000, "errmsg": "x" } ], "ok": 1.0 },
        );
        assert_eq!(
            ReplyView::of(&m).unwrap().error().as_deref(),
            Some("Error (11000)")
        );
        let (m, _) = view_of(doc! { "lastErrorObject": { "n": 1 }, "value": {}, "ok": 1.0 });
        assert_eq!(ReplyView::of(&m).unwrap().rows(), Some(1));
    }
}
