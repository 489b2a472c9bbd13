//! The upstream login against a scripted server that is not the upstream: once SCRAM started,
//! only the server's proof ends it; skipping to AuthenticationOk or asking for the password
//! instead is refused.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::{connect, login_refusal, UpstreamError, UpstreamTarget};
use crate::vault::Secret;

fn auth(code: i32, extra: &[u8]) -> Vec<u8> {
    let mut m = vec![b'R'];
    m.extend_from_slice(&((8 + extra.len()) as i32).to_be_bytes());
    m.extend_from_slice(&code.to_be_bytes());
    m.extend_from_slice(extra);
    m
}

/// A server that asks for SCRAM-SHA-256, reads the client's first message, then sends `then`.
async fn impostor(then: Vec<u8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let len = s.read_i32().await.unwrap() as usize;
        let mut startup = vec![0u8; len - 4];
        s.read_exact(&mut startup).await.unwrap();
        s.write_all(&auth(10, b"SCRAM-SHA-256\0\0")).await.unwrap();
        let mut tag = [0u8; 1];
        s.read_exact(&mut tag).await.unwrap();
        let len = s.read_i32().await.unwrap() as usize;
        let mut body = vec![0u8; len - 4];
        s.read_exact(&mut body).await.unwrap();
        s.write_all(&then).await.unwrap();
        if then.len() > 9 || then[8] != 0 {
            // A password request: read the answer, then let the client in.
            let _ = s.read(&mut [0u8; 256]).await;
            let _ = s.write_all(&auth(0, b"")).await;
        }
        // What a real server sends after a login: without the checks, the login succeeds here.
        let _ = s.write_all(&[b'Z', 0, 0, 0, 5, b'I']).await;
        let _ = s.read(&mut [0u8; 64]).await;
    });
    port
}

/// A target on 127.0.0.1:`port` with made-up credentials (also the pool's tests').
pub(crate) fn target(port: u16) -> UpstreamTarget {
    UpstreamTarget {
        name: "shop".into(),
        host: "127.0.0.1".into(),
        port,
        database: "shop".into(),
        user: Secret::new("tollgate_shop".into()),
        password: Secret::new("vaulted".into()),
        search_path: "public".into(),
        tls: None,
        no_connection_check: Default::default(),
    }
}

#[tokio::test]
async fn a_server_that_skips_scrams_proof_is_not_the_upstream() {
    for (then, what) in [
        (auth(0, b""), "AuthenticationOk without the server's proof"),
        (auth(3, b""), "a cleartext password request mid-SCRAM"),
        (auth(5, b"salt"), "an MD5 request mid-SCRAM"),
    ] {
        let port = impostor(then).await;
        let got = connect(&target(port), &[], Duration::from_secs(5)).await;
        match got {
            Err(UpstreamError::Protocol(m)) => assert!(m.contains("SCRAM"), "{what}: {m}"),
            other => panic!("{what}: {:?}", other.err()),
        }
    }
}

/// A server that refuses a startup packet naming `client_connection_check_interval` with
/// `code`: after the login as PostgreSQL before 14 does (42704) or one on Windows (22023), or
/// before it as a proxy does (08P01). Logs anyone in (trust). Returns each connection's
/// startup packet.
async fn refusing_the_check(
    code: &'static str,
    before_login: bool,
) -> (u16, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let len = s.read_i32().await.unwrap() as usize;
            let mut startup = vec![0u8; len - 4];
            s.read_exact(&mut startup).await.unwrap();
            let refused = has_check(&startup);
            tx.send(startup).unwrap();
            if !(refused && before_login) {
                s.write_all(&auth(0, b"")).await.unwrap();
            }
            if refused {
                let fields = format!(
                    "SFATAL\0C{code}\0Mparameter \"client_connection_check_interval\" refused\0\0"
                );
                let mut m = vec![b'E'];
                m.extend_from_slice(&((fields.len() + 4) as i32).to_be_bytes());
                m.extend_from_slice(fields.as_bytes());
                s.write_all(&m).await.unwrap();
                continue;
            }
            s.write_all(&[b'Z', 0, 0, 0, 5, b'I']).await.unwrap();
            tokio::spawn(async move {
                let _ = s.read(&mut [0u8; 64]).await;
            });
        }
    });
    (port, rx)
}

fn has_check(startup: &[u8]) -> bool {
    startup
        .windows(super::CONNECTION_CHECK.0.len())
        .any(|w| w == super::CONNECTION_CHECK.0.as_bytes())
}

#[tokio::test]
async fn a_server_that_refuses_the_connection_check_is_logged_in_without_it() {
    for (code, before_login) in [("42704", false), ("22023", false), ("08P01", true)] {
        let (port, mut startups) = refusing_the_check(code, before_login).await;
        let target = target(port);
        let conn = connect(&target, &[], Duration::from_secs(5)).await;
        assert!(conn.is_ok(), "{code}: {:?}", conn.err());
        assert!(
            has_check(&startups.recv().await.unwrap()),
            "{code}: asked first"
        );
        assert!(
            !has_check(&startups.recv().await.unwrap()),
            "{code}: then left out"
        );
        // Remembered: the next login asks once, without it.
        connect(&target, &[], Duration::from_secs(5)).await.unwrap();
        assert!(
            !has_check(&startups.recv().await.unwrap()),
            "{code}: remembered"
        );
        // A client's own value is passed as it is, and a refusal of it is the client's.
        let own = [(super::CONNECTION_CHECK.0.to_string(), "0".to_string())];
        let got = connect(&target, &own, Duration::from_secs(5)).await;
        assert!(
            matches!(got, Err(UpstreamError::LoginRefused(ref c)) if c == code),
            "{code}: {:?}",
            got.err()
        );
    }
}

#[test]
fn only_credential_codes_are_called_a_credentials_problem() {
    for code in ["28P01", "28000"] {
        assert!(login_refusal(code).contains("credentials"), "{code}");
    }
    for code in ["53300", "57P03", "3D000", "XX000"] {
        let said = login_refusal(code);
        assert!(
            !said.contains("credentials") && said.contains(code),
            "{said}"
        );
    }
    assert!(login_refusal("53300").contains("too many connections"));
    assert!(login_refusal("57P03").contains("starting up"));
    // Only a SQLSTATE's shape is passed on.
    assert!(login_refusal("28P01\n\x1b[2J password=x").ends_with("(SQLSTATE ?????)"));
}
