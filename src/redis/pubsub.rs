//! Pub/sub on the reply stream: which frames are subscription confirmations, messages or RESP3
//! pushes (relayed without consuming a reply the client is owed), and the session's current
//! subscriptions.

use std::collections::HashSet;

use bytes::Bytes;
use redis_protocol::resp2::types::BytesFrame as F2;
use redis_protocol::resp3::types::BytesFrame as F3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubKind {
    Channel,
    Pattern,
    Shard,
}

impl SubKind {
    /// The kind a (un)subscribe command or confirmation word names, and whether it adds.
    pub fn of_word(word: &[u8]) -> Option<(SubKind, bool)> {
        Some(match word {
            b"subscribe" => (SubKind::Channel, true),
            b"psubscribe" => (SubKind::Pattern, true),
            b"ssubscribe" => (SubKind::Shard, true),
            b"unsubscribe" => (SubKind::Channel, false),
            b"punsubscribe" => (SubKind::Pattern, false),
            b"sunsubscribe" => (SubKind::Shard, false),
            _ => return None,
        })
    }
}

/// What a frame on the reply stream is, as far as pub/sub goes.
#[derive(Debug, PartialEq, Eq)]
pub enum PubSubFrame {
    /// A (un)subscribe confirmation for `name`.
    Confirmation {
        kind: SubKind,
        add: bool,
        name: Bytes,
    },
    /// A message, or any other RESP3 push: relayed as it comes.
    OutOfBand,
    /// A reply to a command.
    Reply,
}

/// The channels, patterns and shard channels this session is subscribed to.
#[derive(Debug, Default)]
pub struct Subscriptions {
    sets: [HashSet<Bytes>; 3],
}

impl Subscriptions {
    pub fn is_empty(&self) -> bool {
        self.sets.iter().all(HashSet::is_empty)
    }

    /// Records a confirmation; returns how many of that kind there were before.
    pub fn apply(&mut self, kind: SubKind, add: bool, name: Bytes) -> usize {
        let set = &mut self.sets[kind as usize];
        let before = set.len();
        if add {
            set.insert(name);
        } else {
            set.remove(&name);
        }
        before
    }

    /// Classifies `frame`. `expecting` says a (un)subscribe reply is owed; `resp3` the protocol.
    pub fn classify(&self, frame: &Bytes, resp3: bool, expecting: bool) -> PubSubFrame {
        let push = frame.first() == Some(&b'>');
        let subscribed = !self.is_empty() || expecting;
        if !(push || (subscribed && !resp3 && frame.first() == Some(&b'*'))) {
            return PubSubFrame::Reply;
        }
        match words(frame, resp3) {
            Some((word, name)) => match SubKind::of_word(&word) {
                Some((kind, add)) => PubSubFrame::Confirmation { kind, add, name },
                None if push || matches!(&word[..], b"message" | b"pmessage" | b"smessage") => {
                    PubSubFrame::OutOfBand
                }
                None => PubSubFrame::Reply,
            },
            None if push => PubSubFrame::OutOfBand,
            None => PubSubFrame::Reply,
        }
    }
}

/// A pub/sub frame's first two elements: (type word lower case, first name).
fn words(frame: &Bytes, resp3: bool) -> Option<(Vec<u8>, Bytes)> {
    let items: Vec<Bytes> = if resp3 || frame.first() == Some(&b'>') {
        let (f, _) = redis_protocol::resp3::decode::complete::decode_bytes(frame).ok()??;
        match f {
            F3::Push { data, .. } | F3::Array { data, .. } => data
                .into_iter()
                .take(2)
                .map(|x| match x {
                    F3::BlobString { data, .. } | F3::SimpleString { data, .. } => data,
                    _ => Bytes::new(),
                })
                .collect(),
            _ => return None,
        }
    } else {
        let (f, _) = redis_protocol::resp2::decode::decode_bytes(frame).ok()??;
        match f {
            F2::Array(data) => data
                .into_iter()
                .take(2)
                .map(|x| match x {
                    F2::BulkString(b) | F2::SimpleString(b) => b,
                    _ => Bytes::new(),
                })
                .collect(),
            _ => return None,
        }
    };
    let word = items.first()?.to_ascii_lowercase();
    Some((word, items.get(1).cloned().unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn frames_are_told_apart() {
        let mut subs = Subscriptions::default();
        let confirm = b("*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n");
        assert_eq!(
            subs.classify(&confirm, false, true),
            PubSubFrame::Confirmation {
                kind: SubKind::Channel,
                add: true,
                name: b("news")
            }
        );
        // Not subscribed and no (un)subscribe owed: an array is a reply (e.g. LRANGE).
        assert_eq!(subs.classify(&confirm, false, false), PubSubFrame::Reply);
        assert_eq!(subs.apply(SubKind::Channel, true, b("news")), 0);
        let message = b("*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n");
        assert_eq!(
            subs.classify(&message, false, false),
            PubSubFrame::OutOfBand
        );
        // A RESP3 push is always out of band; an array reply while subscribed in RESP3 is a reply.
        let push = b(">3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n");
        assert_eq!(subs.classify(&push, true, false), PubSubFrame::OutOfBand);
        assert_eq!(
            subs.classify(&b("*1\r\n$1\r\nx\r\n"), true, false),
            PubSubFrame::Reply
        );
        assert_eq!(
            subs.classify(&b("+PONG\r\n"), false, false),
            PubSubFrame::Reply
        );
        assert_eq!(subs.apply(SubKind::Channel, false, b("news")), 1);
        assert!(subs.is_empty());
    }
}
