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

    /// Every subscription, by kind.
    pub fn each(&self) -> impl Iterator<Item = (SubKind, &Bytes)> {
        [SubKind::Channel, SubKind::Pattern, SubKind::Shard]
            .into_iter()
            .flat_map(move |k| self.sets[k as usize].iter().map(move |n| (k, n)))
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

/// Whether a RESP2 `frame` has the shape of an (un)subscribe confirmation: `[word, channel or
/// nil, count]`. No command's reply has that shape (only a script's could), so one that
/// reaches an ordinary reply's place means the upstream and tollgate disagree about the
/// session's subscriptions (`to_client::misfit`).
pub fn looks_like_confirmation(frame: &[u8]) -> bool {
    // Cheap test first: `*3\r\n$N\r\n` and a word ending in "subscribe" (9 to 12 letters).
    let Some(rest) = frame.strip_prefix(b"*3\r\n$") else {
        return false;
    };
    if !rest
        .get(3..rest.len().min(24))
        .is_some_and(|w| w.windows(9).any(|x| x.eq_ignore_ascii_case(b"subscribe")))
    {
        return false;
    }
    use redis_protocol::resp2::types::OwnedFrame as O;
    let Ok(Some((O::Array(items), _))) = redis_protocol::resp2::decode::decode(frame) else {
        return false;
    };
    matches!(
        items.as_slice(),
        [O::BulkString(word), O::BulkString(_) | O::Null, O::Integer(_)]
            if SubKind::of_word(&word.to_ascii_lowercase()).is_some()
    )
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

    #[test]
    fn confirmation_shapes_are_recognised() {
        for (frame, is) in [
            ("*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n", true),
            ("*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n", true),
            ("*3\r\n$9\r\nsubscribe\r\n$-1\r\n:0\r\n", true),
            ("*3\r\n$12\r\nPUNSUBSCRIBE\r\n$1\r\n*\r\n:2\r\n", true),
            // LRANGE of ["subscribe", "news", "1"]: bulk strings only.
            ("*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n$1\r\n1\r\n", false),
            ("*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n:1\r\n", false),
            ("*2\r\n$9\r\nsubscribe\r\n:1\r\n", false),
            ("$9\r\nsubscribe\r\n", false),
        ] {
            assert_eq!(looks_like_confirmation(frame.as_bytes()), is, "{frame:?}");
        }
    }
}
