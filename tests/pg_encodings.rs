//! Client encodings other than UTF-8 end to end: tollgate's decoders checked byte for byte against
//! the real server's (`convert_from`), LATIN1 / LATIN9 / WIN1252 / EUC_JP sessions querying,
//! getting masked rows and refusals in their own encoding, `SET client_encoding` mid-session
//! (pipelined too), and the encodings an ASCII byte can hide in (SJIS, BIG5, ...) refused.

mod support;

use std::collections::BTreeMap;

use support::{error_field, harness, message, raw_login, read_message};
use tokio::io::AsyncWriteExt;
use tollgate::client_encoding::{lookup, ClientEncoding, Lookup};

fn rt() -> tokio::runtime::Handle {
    harness().runtime.clone()
}

fn enc(name: &str) -> ClientEncoding {
    match lookup(name) {
        Lookup::Supported(e) => e,
        other => panic!("{name}: {other:?}"),
    }
}

/// Every multibyte sequence PostgreSQL's EUC encodings define (and the single bytes above 0x7F
/// of the others), as the server decodes them: `None` where it refuses.
async fn server_decodes(
    c: &tokio_postgres::Client,
    encoding: &str,
    seqs: &[Vec<u8>],
) -> Vec<Option<String>> {
    c.batch_execute(
        "CREATE OR REPLACE FUNCTION pg_temp.try_convert(b bytea, e name) RETURNS text
         LANGUAGE plpgsql AS $$ BEGIN RETURN convert_from(b, e);
         EXCEPTION WHEN others THEN RETURN NULL; END $$",
    )
    .await
    .unwrap();
    let mut out = Vec::with_capacity(seqs.len());
    for chunk in seqs.chunks(4000) {
        let arr: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        let rows = c
            .query(
                "SELECT pg_temp.try_convert(b, $2::name) FROM unnest($1::bytea[]) WITH ORDINALITY AS t(b, n) ORDER BY n",
                &[&arr, &encoding],
            )
            .await
            .unwrap();
        out.extend(rows.iter().map(|r| r.get::<_, Option<String>>(0)));
    }
    out
}

fn sequences(encoding: &str) -> Vec<Vec<u8>> {
    let hi = 0xA1u8..=0xFE;
    let mut seqs: Vec<Vec<u8>> = Vec::new();
    match encoding {
        "EUC_JP" | "EUC_KR" | "EUC_CN" => {
            for a in hi.clone() {
                for b in hi.clone() {
                    seqs.push(vec![a, b]);
                }
            }
            if encoding == "EUC_JP" {
                for b in 0xA1u8..=0xDF {
                    seqs.push(vec![0x8E, b]);
                }
                for a in hi.clone() {
                    for b in hi.clone() {
                        seqs.push(vec![0x8F, a, b]);
                    }
                }
            }
        }
        _ => seqs.extend((0x80u8..=0xFF).map(|b| vec![b])),
    }
    seqs
}

/// Where tollgate and the server both decode a sequence, they must agree; where the server
/// refuses one tollgate may accept it (the server then refuses the statement); where tollgate
/// refuses, it must say so rather than guess. Returns (agreed, server-only, tollgate-only).
#[test]
fn decoders_agree_with_the_server_byte_for_byte() {
    rt().block_on(async {
        let c = support::upstream().await;
        let mut report = BTreeMap::new();
        let mut differences = Vec::new();
        for name in tollgate::client_encoding::supported_names() {
            if name == "UTF8" || name == "SQL_ASCII" {
                continue;
            }
            let e = enc(name);
            let seqs = sequences(name);
            let server = server_decodes(&c, name, &seqs).await;
            let (mut agreed, mut server_only, mut ours_only) = (0, 0, 0);
            for (seq, theirs) in seqs.iter().zip(server) {
                let ours = e.decode(seq).ok().map(|s| s.into_owned());
                match (&ours, &theirs) {
                    (Some(a), Some(b)) if a == b => agreed += 1,
                    (Some(a), Some(b)) => {
                        differences.push(format!("{name} {seq:02X?}: tollgate {a:?}, server {b:?}"))
                    }
                    (None, Some(_)) => server_only += 1,
                    (Some(_), None) => ours_only += 1,
                    (None, None) => {}
                }
            }
            report.insert(name, (agreed, server_only, ours_only));
        }
        println!("per encoding (agreed, decoded only by the server, only by tollgate): {report:?}");
        assert!(
            differences.is_empty(),
            "{} sequences decode differently:\n{}",
            differences.len(),
            differences.join("\n")
        );
    });
}

/// A session logged in as `agent` that switched to `encoding`; returns the stream.
async fn session_in(agent: &str, encoding: &str) -> tokio::net::TcpStream {
    let mut s = raw_login(agent).await;
    let (tags, code) = query(
        &mut s,
        format!("SET client_encoding TO '{encoding}'").as_bytes(),
    )
    .await;
    assert_eq!(code, None, "SET client_encoding {encoding}: {tags:?}");
    s
}

/// Sends a simple Query with `sql` as raw bytes; returns the messages up to ReadyForQuery and
/// the SQLSTATE of an error.
async fn query(s: &mut tokio::net::TcpStream, sql: &[u8]) -> (Vec<(u8, Vec<u8>)>, Option<String>) {
    let mut body = sql.to_vec();
    body.push(0);
    s.write_all(&message(b'Q', &body)).await.unwrap();
    read_reply(s).await
}

async fn read_reply(s: &mut tokio::net::TcpStream) -> (Vec<(u8, Vec<u8>)>, Option<String>) {
    let mut msgs = Vec::new();
    let mut code = None;
    loop {
        let (tag, body) = read_message(s).await;
        if tag == b'E' {
            code = error_field(&body, b'C');
        }
        let done = tag == b'Z';
        msgs.push((tag, body));
        if done {
            return (msgs, code);
        }
    }
}

/// The first column of every DataRow, as raw bytes.
fn first_values(msgs: &[(u8, Vec<u8>)]) -> Vec<Vec<u8>> {
    msgs.iter()
        .filter(|(t, _)| *t == b'D')
        .map(|(_, b)| {
            let len = i32::from_be_bytes([b[2], b[3], b[4], b[5]]) as usize;
            b[6..6 + len].to_vec()
        })
        .collect()
}

fn error_bytes(msgs: &[(u8, Vec<u8>)], field: u8) -> Vec<u8> {
    let (_, body) = msgs.iter().find(|(t, _)| *t == b'E').expect("an error");
    let mut rest = &body[..];
    while let Some((&f, tail)) = rest.split_first() {
        let nul = tail.iter().position(|&b| b == 0).unwrap();
        if f == field {
            return tail[..nul].to_vec();
        }
        rest = &tail[nul + 1..];
    }
    Vec::new()
}

#[test]
fn single_byte_and_euc_sessions_query_masked_rows_and_get_errors_in_their_encoding() {
    rt().block_on(async {
        // (encoding, a literal in it, the same text in UTF-8)
        let cases: [(&str, &[u8], &str); 4] = [
            ("LATIN1", b"caf\xe9", "café"),
            ("LATIN9", b"\xa4uro", "€uro"),
            ("WIN1252", b"\x80 \x93q\x94", "€ “q”"),
            ("EUC_JP", b"\xa4\xa2\xa4\xa4", "あい"),
        ];
        for (name, literal, utf8) in cases {
            let mut s = session_in("analyst", name).await;
            // A literal comes back as the client wrote it (the server converts both ways).
            let mut sql = b"SELECT '".to_vec();
            sql.extend_from_slice(literal);
            sql.extend_from_slice(b"'::text AS v");
            let (msgs, code) = query(&mut s, &sql).await;
            assert_eq!(code, None, "{name}: {msgs:?}");
            assert_eq!(first_values(&msgs), vec![literal.to_vec()], "{name}");
            // Masked columns stay masked; the filter's literal is read in the client's encoding.
            let mut sql = b"SELECT email, name FROM customers WHERE name <> '".to_vec();
            sql.extend_from_slice(literal);
            sql.extend_from_slice(b"' ORDER BY id LIMIT 3");
            let (msgs, code) = query(&mut s, &sql).await;
            assert_eq!(code, None, "{name}: {msgs:?}");
            let emails = first_values(&msgs);
            assert_eq!(emails.len(), 3, "{name}");
            assert!(
                emails.iter().all(|e| e.starts_with(b"***@")),
                "{name}: {emails:?}"
            );
            // A refusal naming a table with a character of the encoding comes back in it.
            let mut sql = b"SELECT * FROM \"".to_vec();
            sql.extend_from_slice(literal);
            sql.extend_from_slice(b"\"");
            let (msgs, code) = query(&mut s, &sql).await;
            assert_eq!(code.as_deref(), Some("42501"), "{name}: {msgs:?}");
            let m = error_bytes(&msgs, b'M');
            assert!(
                m.windows(literal.len()).any(|w| w == literal),
                "{name}: the message names the table in the client's encoding: {:?}",
                String::from_utf8_lossy(&m)
            );
            assert!(
                !String::from_utf8_lossy(&m).contains(utf8),
                "{name}: not in UTF-8"
            );
            // Bytes that are not valid in the encoding are refused like the server would.
            if name == "EUC_JP" {
                let (msgs, code) = query(&mut s, b"SELECT '\xa4'").await;
                assert_eq!(code.as_deref(), Some("22021"), "{msgs:?}");
            }
            // The session is still usable.
            let (_, code) = query(&mut s, b"SELECT 1").await;
            assert_eq!(code, None);
        }
    });
}

#[test]
fn encodings_that_can_hide_ascii_are_refused() {
    rt().block_on(async {
        for name in [
            "SJIS",
            "BIG5",
            "GBK",
            "UHC",
            "GB18030",
            "JOHAB",
            "SHIFT_JIS_2004",
        ] {
            for agent in ["analyst", "trusted"] {
                let mut s = raw_login(agent).await;
                let sql = format!("SET client_encoding TO '{name}'");
                let (msgs, code) = query(&mut s, sql.as_bytes()).await;
                assert_eq!(code.as_deref(), Some("42501"), "{agent} {name}: {msgs:?}");
                let m = String::from_utf8_lossy(&error_bytes(&msgs, b'M')).into_owned();
                assert!(m.contains("multibyte"), "{m}");
                assert!(m.contains("(rule: builtin: protected-setting)"), "{m}");
                let (msgs, code) = query(
                    &mut s,
                    b"SELECT set_config('client_encoding', 'SJIS', false)",
                )
                .await;
                assert_eq!(code.as_deref(), Some("42501"), "{agent}: {msgs:?}");
                // SET NAMES is the same setting.
                let (_, code) = query(&mut s, format!("SET NAMES '{name}'").as_bytes()).await;
                assert_eq!(code.as_deref(), Some("42501"));
                let (_, code) = query(&mut s, b"SELECT 1").await;
                assert_eq!(code, None);
            }
        }
        // In the startup packet too (libpq's client_encoding parameter), before authentication.
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", harness().env.pg_port))
            .await
            .unwrap();
        let mut buf = bytes::BytesMut::new();
        postgres_protocol::message::frontend::startup_message(
            [
                ("user", "analyst"),
                ("database", "shop"),
                ("client_encoding", "SJIS"),
            ],
            &mut buf,
        )
        .unwrap();
        s.write_all(&buf).await.unwrap();
        let (tag, body) = read_message(&mut s).await;
        assert_eq!(tag, b'E');
        assert_eq!(error_field(&body, b'C').as_deref(), Some("42501"));
        assert!(error_field(&body, b'M').unwrap().contains("multibyte"));
        // A supported one is accepted there: the session starts in LATIN1.
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", harness().env.pg_port))
            .await
            .unwrap();
        buf.clear();
        postgres_protocol::message::frontend::startup_message(
            [
                ("user", "analyst"),
                ("database", "shop"),
                ("client_encoding", "LATIN1"),
            ],
            &mut buf,
        )
        .unwrap();
        s.write_all(&buf).await.unwrap();
        let (tag, _) = read_message(&mut s).await;
        assert_eq!(tag, b'R', "authentication requested");
    });
}

#[test]
fn a_pipelined_set_client_encoding_is_tracked() {
    rt().block_on(async {
        let mut s = raw_login("analyst").await;
        // SET and a LATIN1 query in one write: the second is read in LATIN1 by the server, and
        // by tollgate, which waits for the SET's reply before decoding it.
        let mut both = message(b'Q', b"SET client_encoding TO 'LATIN1'\0");
        both.extend(message(b'Q', b"SELECT 'caf\xe9'::text\0"));
        s.write_all(&both).await.unwrap();
        let (_, code) = read_reply(&mut s).await;
        assert_eq!(code, None);
        let (msgs, code) = read_reply(&mut s).await;
        assert_eq!(code, None, "{msgs:?}");
        assert_eq!(first_values(&msgs), vec![b"caf\xe9".to_vec()]);
        // Back to UTF8 inside a transaction that rolls back: LATIN1 again afterwards.
        let (_, code) = query(&mut s, b"BEGIN; SET client_encoding TO 'UTF8'").await;
        assert_eq!(code, None);
        let (msgs, _) = query(&mut s, "SELECT 'é'::text".as_bytes()).await;
        assert_eq!(first_values(&msgs), vec!["é".as_bytes().to_vec()]);
        let mut rollback = message(b'Q', b"ROLLBACK\0");
        rollback.extend(message(b'Q', b"SELECT '\xe9'::text\0"));
        s.write_all(&rollback).await.unwrap();
        let _ = read_reply(&mut s).await;
        let (msgs, code) = read_reply(&mut s).await;
        assert_eq!(code, None, "{msgs:?}");
        assert_eq!(first_values(&msgs), vec![b"\xe9".to_vec()]);
        // Inside an extended batch replies cannot be awaited: refused, the batch goes on to Sync.
        let mut batch = message(b'P', b"\0SET client_encoding TO 'UTF8'\0\0\0");
        batch.extend(message(b'B', b"\0\0\0\0\0\0\0\0"));
        batch.extend(message(b'E', b"\0\0\0\0\0"));
        batch.extend(message(b'P', b"\0SELECT '\xc3\xa9'\0\0\0"));
        batch.extend(message(b'S', b""));
        s.write_all(&batch).await.unwrap();
        let (msgs, code) = read_reply(&mut s).await;
        assert_eq!(code.as_deref(), Some("22021"), "{msgs:?}");
        let m = String::from_utf8_lossy(&error_bytes(&msgs, b'M')).into_owned();
        assert!(m.contains("send Sync"), "{m}");
    });
}
