//! Fuzzing the Redis decoders: the client command reader (RESP arrays and inline commands,
//! with the size limit) and the upstream reply scanner (RESP2 and RESP3, resumable). Generated
//! commands and replies must come back exactly, whatever the chunking; random and mutated bytes
//! must give a command, a wait for more, or a protocol error, never a panic.
//! Case count: `TOLLGATE_FUZZ_CASES` (see tests/support/fuzz.rs and docs/reliability.md).

mod support;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use support::fuzz::{config, mutated};
use tollgate::redis::command::{encode_command, CommandParser, ProtocolError};
use tollgate::redis::scan::ReplyScanner;

/// Every command of `data` fed `chunk` bytes at a time: (commands as (args, raw), the error).
fn commands(
    data: &[u8],
    chunk: usize,
    limit: usize,
) -> (Vec<(Vec<Bytes>, Bytes)>, Option<ProtocolError>) {
    let mut parser = CommandParser::new(limit);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match parser.next(&mut buf) {
                Ok(Some(c)) => out.push((c.args, c.raw)),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fn arg() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..24),
        "[a-z:*]{1,12}".prop_map(String::into_bytes),
        Just(b"\r\n".to_vec()),
    ]
}

fn command() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(arg(), 1..6)
}

fn command_seeds() -> Vec<Vec<u8>> {
    vec![
        b"*3\r\n$3\r\nSET\r\n$7\r\ncache:1\r\n$2\r\nhi\r\n".to_vec(),
        b"*2\r\n$3\r\nGET\r\n$7\r\ncache:1\r\n".to_vec(),
        b"PING\r\n".to_vec(),
        b"set \"a b\" 'c\\'d' \"\\x41\\n\"\r\n".to_vec(),
        b"*1\r\n$4\r\nPING\r\n*0\r\n\r\n*-1\r\n".to_vec(),
        b"*2\r\n$4\r\nAUTH\r\n$-1\r\n".to_vec(),
    ]
}

/// One RESP2/RESP3 reply frame, encoded.
fn reply() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        "[ -~]{0,12}".prop_map(|s| format!("+{s}\r\n").into_bytes()),
        "[ -~]{0,12}".prop_map(|s| format!("-ERR {s}\r\n").into_bytes()),
        any::<i64>().prop_map(|n| format!(":{n}\r\n").into_bytes()),
        Just(b"$-1\r\n".to_vec()),
        Just(b"*-1\r\n".to_vec()),
        Just(b"_\r\n".to_vec()),
        Just(b"#t\r\n".to_vec()),
        Just(b",1.5\r\n".to_vec()),
        Just(b"(12345678901234567890\r\n".to_vec()),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| bulk(b'$', &b)),
        prop::collection::vec(any::<u8>(), 0..20).prop_map(|b| bulk(b'!', &b)),
        "[ -~]{0,10}".prop_map(|s| bulk(b'=', format!("txt:{s}").as_bytes())),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            (
                prop::sample::select(vec![b'*', b'~', b'>']),
                prop::collection::vec(inner.clone(), 0..6)
            )
                .prop_map(|(k, items)| aggregate(k, items.len(), &items)),
            prop::collection::vec((inner.clone(), inner.clone()), 0..4).prop_map(|pairs| {
                let flat: Vec<Vec<u8>> = pairs.into_iter().flat_map(|(a, b)| [a, b]).collect();
                aggregate(b'%', flat.len() / 2, &flat)
            }),
            // An attribute is followed by the value it describes: one frame together.
            (inner.clone(), inner.clone(), inner).prop_map(|(k, v, value)| {
                let mut a = aggregate(b'|', 1, &[k, v]);
                a.extend_from_slice(&value);
                a
            }),
        ]
    })
}

fn bulk(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![kind];
    v.extend_from_slice(format!("{}\r\n", payload.len()).as_bytes());
    v.extend_from_slice(payload);
    v.extend_from_slice(b"\r\n");
    v
}

fn aggregate(kind: u8, n: usize, items: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![kind];
    v.extend_from_slice(format!("{n}\r\n").as_bytes());
    for i in items {
        v.extend_from_slice(i);
    }
    v
}

/// The frame lengths the scanner finds in `data` fed `chunk` bytes at a time, relaying the
/// scanned prefix now and then as the relay does for large replies.
fn scan(data: &[u8], chunk: usize, stream_every: usize) -> (Vec<usize>, bool) {
    let mut scanner = ReplyScanner::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut lens = Vec::new();
    // Bytes of the current frame already relayed (removed from the buffer).
    let mut relayed = 0;
    for (i, piece) in data.chunks(chunk.max(1)).enumerate() {
        buf.extend_from_slice(piece);
        loop {
            match scanner.next_frame(&buf) {
                Ok(Some(n)) => {
                    assert!(n <= buf.len(), "frame longer than the buffer");
                    lens.push(relayed + n);
                    relayed = 0;
                    buf.drain(..n);
                }
                Ok(None) => {
                    if stream_every > 0 && i % stream_every == 0 {
                        let n = scanner.scanned();
                        assert!(n <= buf.len());
                        relayed += n;
                        buf.drain(..n);
                        scanner.consumed(n);
                    }
                    break;
                }
                Err(_) => return (lens, true),
            }
        }
    }
    (lens, false)
}

/// Found by `reply_bytes_never_panic_the_scanner`: a line with no type byte (a bare CRLF, at
/// the start or inside an aggregate) panicked the scanner on a slice index.
#[test]
fn a_bare_crlf_from_the_upstream_is_a_scan_error() {
    for wire in [&b"\r\n"[..], b"*2\r\n:1\r\n\r\n", b"|1\r\n\r\n+x\r\n"] {
        assert_eq!(scan(wire, wire.len(), 0), (vec![], true), "{wire:?}");
        assert_eq!(scan(wire, 1, 1), (vec![], true), "{wire:?}");
    }
}

/// Found by `client_bytes_are_read_or_refused_the_same_way_in_any_chunks`: after an empty
/// array (which Redis ignores) the reader asked for more bytes though whole commands followed,
/// so a client that sent them together waited for replies forever.
#[test]
fn commands_after_an_empty_array_are_read_at_once() {
    let wire = b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n";
    let (got, err) = commands(wire, wire.len(), 1 << 20);
    assert_eq!(err, None);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, vec![Bytes::from_static(b"PING")]);
}

proptest! {
    #![proptest_config(config())]

    /// Generated commands (RESP arrays) come back exactly, whatever the chunking.
    #[test]
    fn commands_round_trip_whatever_the_chunking(
        cmds in prop::collection::vec(command(), 1..6),
        chunk in 1usize..50,
    ) {
        let mut wire = Vec::new();
        for c in &cmds {
            let args: Vec<Bytes> = c.iter().map(|a| Bytes::from(a.clone())).collect();
            wire.extend_from_slice(&encode_command(&args));
        }
        let (got, err) = commands(&wire, chunk, 1 << 20);
        prop_assert_eq!(err, None);
        prop_assert_eq!(got.len(), cmds.len());
        for ((args, raw), want) in got.iter().zip(&cmds) {
            let want_args: Vec<Bytes> = want.iter().map(|a| Bytes::from(a.clone())).collect();
            prop_assert_eq!(args, &want_args);
            prop_assert_eq!(raw, &encode_command(&want_args));
        }
    }

    /// Random and mutated client bytes: the same commands and error whatever the chunking,
    /// every argument within the limit, and the forwarded bytes a well-formed array.
    #[test]
    fn client_bytes_are_read_or_refused_the_same_way_in_any_chunks(
        data in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            mutated(command_seeds(), 6),
        ],
        chunk in 1usize..40,
        limit in prop_oneof![Just(4usize), 1usize..64, Just(1usize << 20)],
    ) {
        let whole = commands(&data, data.len().max(1), limit);
        let dribbled = commands(&data, chunk, limit);
        // Chunking may move where a "need more bytes" becomes an error (a partial line is
        // judged only once long enough), but never what was read before it.
        prop_assert_eq!(&whole.0, &dribbled.0);
        prop_assert_eq!(whole.1.is_some(), dribbled.1.is_some());
        for (args, raw) in &whole.0 {
            prop_assert!(!args.is_empty());
            prop_assert!(raw.starts_with(b"*") && raw.ends_with(b"\r\n"));
            // Array arguments are held to the limit; an inline line to Redis's 64 KiB.
            for a in args {
                prop_assert!(a.len() <= limit.max(64 * 1024));
            }
        }
    }

    /// Generated replies are cut exactly at their ends, whatever the chunking and streaming.
    #[test]
    fn replies_are_cut_where_they_end(
        frames in prop::collection::vec(reply(), 1..6),
        chunk in 1usize..64,
        stream_every in 0usize..4,
    ) {
        let wire: Vec<u8> = frames.concat();
        let (lens, failed) = scan(&wire, chunk, stream_every);
        prop_assert!(!failed);
        let want: Vec<usize> = frames.iter().map(Vec::len).collect();
        prop_assert_eq!(lens, want);
    }

    /// Random and mutated upstream bytes: frames within the input, or an error; never a panic.
    #[test]
    fn reply_bytes_never_panic_the_scanner(
        data in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            prop::collection::vec(reply(), 1..4)
                .prop_flat_map(|f| mutated(vec![f.concat()], 6)),
        ],
        chunk in 1usize..64,
        stream_every in 0usize..4,
    ) {
        let (lens, _) = scan(&data, chunk, stream_every);
        prop_assert!(lens.iter().sum::<usize>() <= data.len());
    }
}
