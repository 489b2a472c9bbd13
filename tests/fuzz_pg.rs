//! Fuzzing the PostgreSQL decoders that read a client's bytes: framing (with the size limit and
//! any chunking), the startup packet and CancelRequest, the Query/Parse/Bind/Execute/Describe
//! views, and the SCRAM-SHA-256 exchange (the server side, and a whole login over a byte stream).
//! Inputs are random bytes and mutations of valid messages; every input must give an answer
//! (a value or a typed error), never a panic, and a changed SCRAM message must never log in.
//! Case count: `TOLLGATE_FUZZ_CASES` (see tests/support/fuzz.rs and docs/reliability.md).

mod support;

use std::sync::OnceLock;

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use proptest::prelude::*;
use support::fuzz::{block_on, config, mutated, Chunked};
use tollgate::auth::scram::{Binding, ScramServer, ScramVerifier, LOGIN_ITERATIONS};
use tollgate::pg::frame::{Frame, FrameReader};
use tollgate::pg::{client_auth, frontend as views, startup};

const TOKEN: &str = "tg_fuzz_token";

fn verifier() -> &'static ScramVerifier {
    static V: OnceLock<ScramVerifier> = OnceLock::new();
    V.get_or_init(|| ScramVerifier::derive_iterations(TOKEN.as_bytes(), LOGIN_ITERATIONS))
}

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// Valid client messages of every kind the gateway reads, as seeds.
fn client_messages() -> Vec<Vec<u8>> {
    let mut parse = b"stmt\0SELECT * FROM orders WHERE id = $1\0".to_vec();
    parse.extend_from_slice(&1i16.to_be_bytes());
    parse.extend_from_slice(&23i32.to_be_bytes());
    let mut bind = b"portal\0stmt\0".to_vec();
    bind.extend_from_slice(&[0, 1, 0, 0, 0, 1, 0, 0, 0, 1, b'7', 0, 0]);
    let mut execute = b"portal\0".to_vec();
    execute.extend_from_slice(&0i32.to_be_bytes());
    vec![
        msg(b'Q', b"SELECT 1\0"),
        msg(b'P', &parse),
        msg(b'B', &bind),
        msg(b'E', &execute),
        msg(b'D', b"Sstmt\0"),
        msg(b'C', b"Pportal\0"),
        msg(b'S', b""),
        msg(b'H', b""),
        msg(b'd', b"1\t2\n"),
        msg(b'c', b""),
        msg(b'X', b""),
        [msg(b'Q', b"BEGIN\0"), msg(b'S', b"")].concat(),
    ]
}

fn startup_packets() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for params in [
        vec![("user", "writer"), ("database", "shop")],
        vec![
            ("user", "analyst"),
            ("database", "shop"),
            ("options", "-c statement_timeout=5s --search_path=x"),
            ("application_name", "psql"),
            ("_pq_.compression", "on"),
        ],
        vec![("user", "a"), ("replication", "database")],
    ] {
        let mut buf = BytesMut::new();
        frontend::startup_message(params, &mut buf).unwrap();
        seeds.push(buf.to_vec());
    }
    let mut cancel = 16i32.to_be_bytes().to_vec();
    cancel.extend_from_slice(&80877102i32.to_be_bytes());
    cancel.extend_from_slice(&[0, 0, 0, 7, 0, 0, 0, 9]);
    seeds.push(cancel);
    seeds
}

/// Every frame (or the error that stopped reading) of `data` delivered `chunk` bytes at a time.
fn frames(data: &[u8], chunk: usize, limit: usize) -> (Vec<Vec<u8>>, Option<String>) {
    block_on(async {
        let mut reader = FrameReader::new(Chunked::new(data, chunk), limit);
        let mut out = Vec::new();
        loop {
            match reader.next().await {
                Ok(Some(f)) => out.push(f.raw.to_vec()),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e.to_string())),
            }
        }
    })
}

fn any_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        mutated(client_messages(), 6),
        prop::collection::vec(mutated(client_messages(), 2), 1..6).prop_map(|v| v.concat()),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Framing: the same frames (and the same error) however the bytes arrive; every frame is
    /// whole, within the limit, and its length field tells its size.
    #[test]
    fn frames_do_not_depend_on_chunking_and_respect_the_limit(
        data in any_bytes(),
        chunk in 1usize..40,
        limit in prop_oneof![Just(5usize), 5usize..200, Just(64 * 1024)],
    ) {
        let whole = frames(&data, data.len().max(1), limit);
        let dribbled = frames(&data, chunk, limit);
        prop_assert_eq!(&whole, &dribbled);
        let mut consumed = 0;
        for f in &whole.0 {
            prop_assert!(f.len() >= 5 && f.len() <= limit);
            let declared = i32::from_be_bytes([f[1], f[2], f[3], f[4]]) as usize;
            prop_assert_eq!(declared + 1, f.len());
            prop_assert_eq!(&data[consumed..consumed + f.len()], &f[..]);
            consumed += f.len();
        }
        if whole.1.is_none() {
            prop_assert_eq!(consumed, data.len());
        }
    }

    /// The message views never panic on any frame body, and a valid Query keeps its text.
    #[test]
    fn message_views_answer_every_body(tag in any::<u8>(), body in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        mutated(client_messages(), 4).prop_map(|m| m.get(5..).unwrap_or_default().to_vec()),
    ]) {
        let frame = Frame { tag, raw: msg(tag, &body).into() };
        let _ = views::query_text(&frame);
        let _ = views::parse_fields(&frame);
        let _ = views::bind_names(&frame);
        let _ = views::execute_portal(&frame);
        let _ = views::target(&frame, "Describe");
        if let Ok(text) = views::query_text(&frame) {
            prop_assert!(body.starts_with(text.as_bytes()));
            prop_assert_eq!(body.get(text.len()), Some(&0));
        }
    }

    /// Startup packets and cancel requests: a parsed request or a FATAL with a SQLSTATE, and a
    /// user, when accepted, is never empty.
    #[test]
    fn startup_packets_are_parsed_or_refused(
        data in prop_oneof![prop::collection::vec(any::<u8>(), 0..128), mutated(startup_packets(), 6)],
        chunk in 1usize..16,
    ) {
        let result = block_on(async {
            let mut reader = FrameReader::new(Chunked::new(&data, chunk), 10_000);
            startup::negotiate(&mut reader, None).await
        });
        match result {
            Ok(startup::StartupRequest::Startup(p)) => prop_assert!(!p.user.is_empty()),
            Ok(startup::StartupRequest::Cancel { .. }) => {}
            Err(startup::StartupError::Refused(f)) => {
                prop_assert_eq!(f.code.len(), 5);
                prop_assert!(!f.message.is_empty());
            }
            Err(_) => {}
        }
    }

    /// The server side of SCRAM: any client-first is answered or refused; a client-final that
    /// differs in any byte from the real client's never authenticates, the real one does.
    #[test]
    fn scram_messages_changed_in_any_byte_never_log_in(
        first_edits in prop::collection::vec(support::fuzz::mutation(), 0..3),
        final_edits in prop::collection::vec(support::fuzz::mutation(), 0..4),
    ) {
        let mut client = ScramSha256::new(TOKEN.as_bytes(), ChannelBinding::unsupported());
        let first = client.message().to_vec();
        let first_mutated = support::fuzz::mutate(&first, &first_edits);
        let Ok((server, server_first)) =
            ScramServer::start(verifier().clone(), &first_mutated, Binding::default())
        else {
            prop_assert_ne!(&first_mutated, &first, "the real client-first was refused");
            return Ok(());
        };
        if client.update(server_first.as_bytes()).is_err() {
            // The client's nonce was mutated: the server's reply no longer extends it.
            prop_assert_ne!(&first_mutated, &first);
            return Ok(());
        }
        let real_final = client.message().to_vec();
        let final_mutated = support::fuzz::mutate(&real_final, &final_edits);
        let outcome = server.finish(&final_mutated);
        if final_mutated == real_final && first_mutated == first {
            prop_assert!(outcome.is_ok(), "{outcome:?}");
        } else if final_mutated != real_final {
            prop_assert!(outcome.is_err(), "a changed client-final logged in: {:?}",
                String::from_utf8_lossy(&final_mutated));
        }
    }

    /// A whole login over a byte stream (SASLInitialResponse, SASLResponse as the client might
    /// send them, mutated): refused with a typed error, never a panic, never a login (the
    /// server nonce is fresh, so no replayed or invented message can pass).
    #[test]
    fn a_login_from_stored_or_invented_bytes_never_succeeds(
        data in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            mutated(sasl_seeds(), 6),
        ],
        known in any::<bool>(),
    ) {
        let result = block_on(async {
            let mut reader = FrameReader::new(Chunked::new(&data, 7), 64 * 1024);
            let mut sink = tokio::io::sink();
            client_auth::authenticate(&mut reader, &mut sink, verifier(), known, "writer", None)
                .await
        });
        prop_assert!(result.is_err());
    }
}

/// A real client's SASLInitialResponse followed by a SASLResponse from another exchange.
fn sasl_seeds() -> Vec<Vec<u8>> {
    let mut client = ScramSha256::new(TOKEN.as_bytes(), ChannelBinding::unsupported());
    let mut buf = BytesMut::new();
    frontend::sasl_initial_response("SCRAM-SHA-256", client.message(), &mut buf).unwrap();
    let initial = buf.to_vec();
    let (_, server_first) =
        ScramServer::start(verifier().clone(), client.message(), Binding::default()).unwrap();
    client.update(server_first.as_bytes()).unwrap();
    buf.clear();
    frontend::sasl_response(client.message(), &mut buf).unwrap();
    vec![initial.clone(), [initial, buf.to_vec()].concat()]
}
