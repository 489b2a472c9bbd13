//! Client messages larger than any statement may be. A Query or Parse whose text is over
//! `limits.max_statement_bytes` is refused before analysis, but used to be read whole first (up
//! to `limits.max_message_bytes`, 64 MiB): twenty sessions each sending a 60 MB Query and
//! stopping held 1.2 GB of the gateway. Such a message is now kept only as far as the refusal
//! needs (the head of its text, which is still over the limit) and the rest dropped as it arrives.

use bytes::{BufMut, BytesMut};
use tokio::io::AsyncRead;

use super::frame::{Frame, FrameError, FrameReader, Incoming};

/// What a Parse carries besides its text: a name and up to 65,535 parameter types (4 bytes each).
const PARSE_EXTRAS: usize = 512 * 1024;

/// The most of an over-long Query or Parse that is kept for its refusal (and counted in the
/// held budget while the rest arrives): the statement limit and what a Parse carries besides.
pub fn kept_head(max_statement: usize) -> usize {
    whole_up_to(max_statement)
}

/// The next client message, or the announcement of a Query or Parse longer than
/// `max_statement` (plus what a Parse carries besides its text), left unread. Cancel-safe: it
/// only buffers, so it may race other events; [`complete`] then reads an announced one.
pub async fn announced<R: AsyncRead + Unpin>(
    client: &mut FrameReader<R>,
    max_statement: usize,
) -> Result<Option<Incoming>, FrameError> {
    client
        .next_or_large(whole_up_to(max_statement), |t| matches!(t, b'Q' | b'P'))
        .await
}

/// The message [`announced`] found: an announced one is read in pieces and cut to the head
/// of its text ([`cut_statement`]). Not cancel-safe: await it to the end.
pub async fn complete<R: AsyncRead + Unpin>(
    client: &mut FrameReader<R>,
    incoming: Option<Incoming>,
    max_statement: usize,
) -> Result<Option<Frame>, FrameError> {
    match incoming {
        None => Ok(None),
        Some(Incoming::Whole(f)) => Ok(Some(f)),
        Some(Incoming::Large { tag, len }) => {
            let keep = whole_up_to(max_statement);
            let head = client.head_of(len, keep).await?;
            cut_statement(tag, &head[5.min(head.len())..])
                .ok_or(FrameError::TooLarge { len, limit: keep })
                .map(Some)
        }
    }
}

/// Both steps at once (tests).
#[cfg(test)]
async fn next_message<R: AsyncRead + Unpin>(
    client: &mut FrameReader<R>,
    max_statement: usize,
) -> Result<Option<Frame>, FrameError> {
    let incoming = announced(client, max_statement).await?;
    complete(client, incoming, max_statement).await
}

fn whole_up_to(max_statement: usize) -> usize {
    max_statement.saturating_add(PARSE_EXTRAS)
}

/// A Query or Parse rebuilt from the head of its body, its text cut there: longer than any
/// statement may be, so it is refused as such (a Parse keeps its name, and no parameter types).
/// `None` for a Parse whose text ended within the head (it was the rest that was large, an
/// absurd name, and a Parse without its types must not run) and for a Query with a NUL inside
/// its text (malformed: PostgreSQL refuses it, and the text before the NUL must not run).
fn cut_statement(tag: u8, body: &[u8]) -> Option<Frame> {
    let mut out = BytesMut::with_capacity(body.len() + 8);
    out.put_u8(tag);
    out.put_i32(0);
    if tag == b'P' {
        let end = memchr::memchr(0, body)?;
        let text = &body[end + 1..];
        if memchr::memchr(0, text).is_some() {
            return None;
        }
        out.extend_from_slice(&body[..=end]);
        out.extend_from_slice(text);
        out.put_u8(0);
        out.put_i16(0);
    } else {
        // A Query's text ends at its one NUL, the message's last byte, beyond this head: a NUL
        // inside it is a malformed message whose short text must not run in its place.
        if memchr::memchr(0, body).is_some() {
            return None;
        }
        out.extend_from_slice(body);
        out.put_u8(0);
    }
    let len = (out.len() - 1) as i32;
    out[1..5].copy_from_slice(&len.to_be_bytes());
    let raw = out.freeze();
    Some(Frame { tag, raw })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::frame::tests_support::Dribble;

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[tokio::test]
    async fn an_oversize_query_is_cut_and_the_stream_stays_in_step() {
        let max = 1000;
        let mut q = vec![b'x'; 2_000_000];
        q.push(0);
        let mut input = message(b'Q', &q);
        input.extend(message(b'Q', b"select 1\0"));
        let mut r = FrameReader::new(Dribble(input, 70_000), 1 << 30);
        let f = next_message(&mut r, max).await.unwrap().unwrap();
        assert_eq!(f.tag, b'Q');
        let text = &f.body()[..f.body().len() - 1];
        assert!(
            text.len() > max && text.len() <= max + PARSE_EXTRAS,
            "{}",
            text.len()
        );
        assert_eq!(f.body().last(), Some(&0));
        let next = next_message(&mut r, max).await.unwrap().unwrap();
        assert_eq!(next.body(), b"select 1\0");
    }

    /// `announced` races other events in the relay's select: dropped and called again, it
    /// announces the same message, none of it read (review: reading the pieces inside the
    /// select lost the stream's place when a reply arrived mid-upload).
    #[tokio::test]
    async fn the_announcement_can_be_dropped_and_made_again() {
        let max = 1000;
        let mut q = vec![b'x'; 2_000_000];
        q.push(0);
        let input = message(b'Q', &q);
        let mut r = FrameReader::new(Dribble(input, 70_000), 1 << 30);
        for _ in 0..3 {
            match announced(&mut r, max).await.unwrap() {
                Some(Incoming::Large { tag, len }) => assert_eq!((tag, len), (b'Q', q.len() + 5)),
                other => panic!("{other:?}"),
            }
            assert!(r.buffered() < 200_000, "nothing consumed, little buffered");
        }
        let incoming = announced(&mut r, max).await.unwrap();
        let f = complete(&mut r, incoming, max).await.unwrap().unwrap();
        assert_eq!(f.tag, b'Q');
        assert!(
            announced(&mut r, max).await.unwrap().is_none(),
            "the stream ends in step"
        );
    }

    #[tokio::test]
    async fn an_oversize_parse_keeps_its_name_and_loses_its_types() {
        let max = 1000;
        let mut body = b"stmt\0".to_vec();
        body.extend(vec![b'y'; 1_000_000]);
        body.extend_from_slice(b"\0\x00\x01\x00\x00\x00\x17");
        let mut r = FrameReader::new(Dribble(message(b'P', &body), 70_000), 1 << 30);
        let f = next_message(&mut r, max).await.unwrap().unwrap();
        let b = f.body();
        assert!(b.starts_with(b"stmt\0yyy") && b.ends_with(b"y\0\0\0"));
        let len = i32::from_be_bytes([f.raw[1], f.raw[2], f.raw[3], f.raw[4]]) as usize;
        assert_eq!(len, f.raw.len() - 1);
        // A Parse large for another reason than its text is not rebuilt: a name longer than
        // the head, or a text that ended within it.
        assert!(cut_statement(b'P', &[b'n'; 525_000]).is_none());
        assert!(cut_statement(b'P', b"n\0select 1\0\0\0").is_none());
        // Nor a Query whose text has a NUL inside (review: `select 1\0` and 60 MB of junk ran
        // as `select 1`).
        assert!(cut_statement(b'Q', b"select 1\0junk").is_none());
        assert!(cut_statement(b'Q', b"select 1 /* junk").is_some());
    }
}
