//! Front-end TLS against the demo's development CA: psql and tokio-postgres with
//! `verify-full` and channel binding, PostgreSQL 17 direct TLS (ALPN `postgresql`), broken
//! handshakes, the Redis TLS listener, `require_tls` per listener and per agent, and
//! certificate reload without dropping sessions.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use sha2::Digest;
use support::tls::{ca_of, copy_demo, pg_connect_tls, pg_url_at, start_gateway, tls_connect};
use support::{error_field, harness, redis_exchange};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_postgres::config::ChannelBinding as CbMode;

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

async fn read_msg<S: AsyncRead + Unpin>(s: &mut S) -> (u8, Vec<u8>) {
    let mut head = [0u8; 5];
    s.read_exact(&mut head).await.expect("message header");
    let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).await.expect("message body");
    (head[0], body)
}

/// Startup and SCRAM over any stream; `binding` = the certificate hash for -PLUS.
/// Returns the tags seen up to ReadyForQuery, or the first error's SQLSTATE.
async fn login<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    agent: &str,
    binding: Option<Vec<u8>>,
) -> Result<(), String> {
    let token = harness().env.token(agent).to_string();
    let mut buf = BytesMut::new();
    frontend::startup_message([("user", agent), ("database", "shop")], &mut buf).unwrap();
    s.write_all(&buf).await.unwrap();
    let (tag, body) = read_msg(s).await;
    if tag == b'E' {
        return Err(error_field(&body, b'C').unwrap_or_default());
    }
    let mechanisms = String::from_utf8_lossy(&body[4..]).to_string();
    let (mechanism, cb) = match binding {
        Some(hash) => {
            assert!(mechanisms.contains("SCRAM-SHA-256-PLUS"), "{mechanisms}");
            (
                "SCRAM-SHA-256-PLUS",
                ChannelBinding::tls_server_end_point(hash),
            )
        }
        None => ("SCRAM-SHA-256", ChannelBinding::unsupported()),
    };
    let mut scram = ScramSha256::new(token.as_bytes(), cb);
    buf.clear();
    frontend::sasl_initial_response(mechanism, scram.message(), &mut buf).unwrap();
    s.write_all(&buf).await.unwrap();
    let (tag, body) = read_msg(s).await;
    if tag == b'E' {
        return Err(error_field(&body, b'C').unwrap_or_default());
    }
    scram.update(&body[4..]).unwrap();
    buf.clear();
    frontend::sasl_response(scram.message(), &mut buf).unwrap();
    s.write_all(&buf).await.unwrap();
    loop {
        let (tag, body) = read_msg(s).await;
        match tag {
            b'Z' => return Ok(()),
            b'E' => return Err(error_field(&body, b'C').unwrap_or_default()),
            _ => {}
        }
    }
}

/// Runs `SELECT 1` on a logged-in raw connection.
async fn select_one<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) {
    let mut buf = BytesMut::new();
    frontend::query("SELECT 1", &mut buf).unwrap();
    s.write_all(&buf).await.unwrap();
    let mut tags = Vec::new();
    loop {
        let (tag, _) = read_msg(s).await;
        tags.push(tag);
        if tag == b'Z' {
            break;
        }
    }
    assert_eq!(tags, b"TDCZ");
}

fn psql(conninfo: &str, password: &str, command: &str) -> (bool, String, String) {
    let out = Command::new("psql")
        .args([conninfo, "-X", "-A", "-t", "-c", command])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql is required (apt-get install postgresql-client)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn psql_verify_full_with_channel_binding_against_the_dev_ca() {
    let env = &harness().env;
    let conninfo = format!(
        "host=127.0.0.1 port={} dbname=shop user=analyst sslmode=verify-full sslrootcert={} channel_binding=require",
        env.pg_port,
        env.ca_file.display()
    );
    let (ok, out, err) = psql(
        &conninfo,
        env.token("analyst"),
        "SELECT count(*) FROM customers",
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "2000");
    let (ok, out, err) = psql(&conninfo, env.token("analyst"), "\\conninfo");
    assert!(ok && out.contains("SSL connection"), "{out}{err}");

    // The demo prints the same line (password in it) and writes the URL to the env file.
    let (ok, out, err) = Command::new("psql")
        .args([
            &env.pg_tls_url("analyst"),
            "-X",
            "-A",
            "-t",
            "-c",
            "SELECT 1",
        ])
        .output()
        .map(|o| {
            (
                o.status.success(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
        .unwrap();
    assert!(ok && out.trim() == "1", "{out}{err}");

    // Another CA does not vouch for the gateway's certificate.
    let other = tempfile::tempdir().unwrap();
    tollgate::tls::dev::DevCerts::generate()
        .unwrap()
        .write(other.path(), false)
        .unwrap();
    let wrong = conninfo.replace(
        &env.ca_file.display().to_string(),
        &other.path().join("ca.crt").display().to_string(),
    );
    let (ok, _, err) = psql(&wrong, env.token("analyst"), "SELECT 1");
    assert!(!ok && err.contains("certificate verify failed"), "{err}");
}

#[tokio::test]
async fn tokio_postgres_over_tls_with_and_without_channel_binding() {
    let env = &harness().env;
    let url = pg_url_at("analyst", env.pg_port);
    for mode in [CbMode::Require, CbMode::Prefer, CbMode::Disable] {
        let c = pg_connect_tls(&url, &env.ca_file, mode)
            .await
            .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        let n: i64 = c
            .query_one("SELECT count(*) FROM orders WHERE id < $1", &[&100i64])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 99);
        // Policy still applies inside TLS.
        let e = c.simple_query("SELECT * FROM secrets").await.unwrap_err();
        assert_eq!(support::sqlstate(&e), "42501");
    }
    // A wrong token over TLS fails like over plain text.
    let wrong = url.replace(env.token("analyst"), "tg_wrong");
    let e = pg_connect_tls(&wrong, &env.ca_file, CbMode::Require)
        .await
        .err()
        .unwrap();
    assert_eq!(support::sqlstate(&e), "28P01");
}

#[tokio::test]
async fn direct_tls_needs_alpn_postgresql() {
    let env = &harness().env;
    // PostgreSQL 17 `sslnegotiation=direct`: ClientHello first, ALPN postgresql.
    let mut s = tls_connect(env.pg_port, &env.ca_file, &[b"postgresql"])
        .await
        .expect("direct TLS handshake");
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"postgresql"[..]));
    let cert = s.get_ref().1.peer_certificates().unwrap()[0].clone();
    let hash = sha2::Sha256::digest(&cert).to_vec();
    login(&mut s, "analyst", Some(hash)).await.unwrap();
    select_one(&mut s).await;

    // Channel binding to another certificate (a proxy in the middle) fails.
    let mut s = tls_connect(env.pg_port, &env.ca_file, &[b"postgresql"])
        .await
        .unwrap();
    assert_eq!(
        login(&mut s, "analyst", Some(vec![0u8; 32])).await,
        Err("28P01".into())
    );

    // No ALPN: the handshake completes, then a FATAL inside TLS and the end.
    let mut s = tls_connect(env.pg_port, &env.ca_file, &[]).await.unwrap();
    let (tag, body) = read_msg(&mut s).await;
    assert_eq!(tag, b'E');
    assert_eq!(error_field(&body, b'C').as_deref(), Some("08P01"));
    assert!(error_field(&body, b'M').unwrap().contains("ALPN"));

    // Another protocol's ALPN: the handshake itself fails.
    assert!(tls_connect(env.pg_port, &env.ca_file, &[b"http/1.1"])
        .await
        .is_err());
}

/// A TLS session with the PostgreSQL listener, begun as libpq begins it (SSLRequest, `S`).
async fn tls_after_ssl_request() -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let env = &harness().env;
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", env.pg_port))
        .await
        .unwrap();
    tcp.write_all(&SSL_REQUEST).await.unwrap();
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"S");
    let config = support::tls::client_config(&env.ca_file, &[]);
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .expect("the certificate is valid for localhost too")
}

#[tokio::test]
async fn ssl_request_then_tls_then_startup_inside() {
    let mut s = tls_after_ssl_request().await;
    login(&mut s, "writer", None).await.unwrap();
    select_one(&mut s).await;
}

/// A CancelRequest over TLS is closed as PostgreSQL closes it, with close_notify: libpq 17's
/// cancel API (psycopg's `cancel_safe`) reported a cancel whose TLS ended without one as failed
/// ("SSL error: unexpected eof while reading"), though it took effect.
#[tokio::test]
async fn a_cancel_request_over_tls_ends_with_close_notify() {
    let mut s = tls_after_ssl_request().await;
    let mut cancel = 16i32.to_be_bytes().to_vec();
    cancel.extend_from_slice(&80877102i32.to_be_bytes());
    cancel.extend_from_slice(&[0, 0, 0, 7, 0, 0, 0, 9]);
    s.write_all(&cancel).await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("closed at once");
    assert!(
        matches!(read, Ok(0)),
        "a clean TLS close (close_notify), nothing else: {read:?} {rest:?}"
    );
}

#[tokio::test]
async fn broken_handshakes_close_only_their_own_connection() {
    let env = &harness().env;
    // An open session before and after the bad ones.
    let c = pg_connect_tls(
        &pg_url_at("analyst", env.pg_port),
        &env.ca_file,
        CbMode::Prefer,
    )
    .await
    .unwrap();
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5][..],
        &[0u8; 300][..],
    ] {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", env.pg_port))
            .await
            .unwrap();
        tcp.write_all(&SSL_REQUEST).await.unwrap();
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"S");
        tcp.write_all(garbage).await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "the gateway closes a failed handshake");
    }
    // Direct TLS garbage too.
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", env.pg_port))
        .await
        .unwrap();
    tcp.write_all(&[0x16, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest)).await;
    assert!(read.is_ok());

    // Plaintext pipelined after the SSLRequest (CVE-2021-23214): refused before any TLS.
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", env.pg_port))
        .await
        .unwrap();
    let mut both = SSL_REQUEST.to_vec();
    let mut startup = BytesMut::new();
    frontend::startup_message([("user", "analyst"), ("database", "shop")], &mut startup).unwrap();
    both.extend_from_slice(&startup);
    tcp.write_all(&both).await.unwrap();
    let (tag, body) = read_msg(&mut tcp).await;
    assert_eq!(tag, b'E');
    assert!(error_field(&body, b'M')
        .unwrap()
        .contains("unencrypted data after SSL request"));

    c.simple_query("SELECT 1")
        .await
        .expect("other sessions unharmed");
    pg_connect_tls(
        &pg_url_at("writer", env.pg_port),
        &env.ca_file,
        CbMode::Require,
    )
    .await
    .expect("new sessions still welcome");
}

/// The admin API speaks HTTPS on its port when `[tls]` is set (its bearer tokens crossed the
/// network in clear: a live review), and plain HTTP still answers there.
#[tokio::test]
async fn the_admin_api_answers_over_https_on_its_port() {
    let env = &harness().env;
    let port: u16 = env.admin_url().rsplit(':').next().unwrap().parse().unwrap();
    let mut s = tls_connect(port, &env.ca_file, &[]).await.unwrap();
    let request = format!(
        "GET /api/v1/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        env.admin_viewer_token
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer).await; // a close without close_notify is fine here
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"agents\""), "{answer}");
    let (status, _) = support::admin("get", "/healthz", support::AdminAs::Nobody).await;
    assert_eq!(status, 200, "plain HTTP on the same port");
}

#[tokio::test]
async fn redis_tls_listener_with_a_raw_rustls_client() {
    let env = &harness().env;
    let mut s = tls_connect(env.redis_tls_port, &env.ca_file, &[])
        .await
        .unwrap();
    let token = env.token("analyst");
    let auth = format!(
        "*3\r\n$4\r\nAUTH\r\n$7\r\nanalyst\r\n${}\r\n{token}\r\n",
        token.len()
    );
    s.write_all(auth.as_bytes()).await.unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"+OK\r\n");
    s.write_all(b"*2\r\n$3\r\nGET\r\n$7\r\ncache:1\r\n")
        .await
        .unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"$14\r\ncached value 1\r\n");
    s.write_all(b"*2\r\n$3\r\nGET\r\n$12\r\nadmin:config\r\n")
        .await
        .unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"-NOPERM"));
}

#[test]
fn redis_cli_tls_with_cacert() {
    let env = &harness().env;
    let out = Command::new("redis-cli")
        .args([
            "--tls",
            "--cacert",
            env.ca_file.to_str().unwrap(),
            "-u",
            &format!(
                "redis://analyst:{}@127.0.0.1:{}",
                env.token("analyst"),
                env.redis_tls_port
            ),
            "--no-auth-warning",
            "GET",
            "cache:1",
        ])
        .output()
        .expect("redis-cli is required (apt-get install redis-tools)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        "cached value 1",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn require_tls_on_the_listeners() {
    let dir = copy_demo(|c| {
        c.replace(
            "redis_tls = \"127.0.0.1:0\"",
            "redis_tls = \"127.0.0.1:0\"\npostgres_require_tls = true\nredis_require_tls = true",
        )
    });
    let gw = start_gateway(dir.path()).await;
    let pg_port = gw.pg_addr.unwrap().port();
    let ca = ca_of(dir.path());

    let e = support::connect_url(&format!(
        "{}?sslmode=disable",
        pg_url_at("analyst", pg_port)
    ))
    .await
    .map(|_| ())
    .expect_err("plain text refused");
    assert_eq!(support::sqlstate(&e), "28000");
    assert!(
        support::db_message(&e).contains("listen.postgres_require_tls"),
        "{e}"
    );
    let c = pg_connect_tls(&pg_url_at("analyst", pg_port), &ca, CbMode::Require)
        .await
        .unwrap();
    c.simple_query("SELECT 1").await.unwrap();

    let mut plain = tokio::net::TcpStream::connect(gw.redis_addr.unwrap())
        .await
        .unwrap();
    let reply = redis_exchange(&mut plain, b"*1\r\n$4\r\nPING\r\n", "\r\n").await;
    assert!(
        reply.starts_with("-NOPERM") && reply.contains("listen.redis_require_tls"),
        "{reply}"
    );
    let mut s = tls_connect(gw.redis_tls_addr.unwrap().port(), &ca, &[])
        .await
        .unwrap();
    // Served there: answered as before any login (NOAUTH, as redis-server with a password).
    s.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"-NOAUTH"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
}

#[tokio::test]
async fn require_tls_per_agent_in_policy() {
    let dir = copy_demo(|c| c);
    std::fs::write(
        dir.path().join("policies").join("tls-only.toml"),
        "agents = [\"analyst\"]\nrequire_tls = true\n",
    )
    .unwrap();
    let gw = start_gateway(dir.path()).await;
    let pg_port = gw.pg_addr.unwrap().port();
    let ca = ca_of(dir.path());

    let e = support::connect_url(&format!(
        "{}?sslmode=disable",
        pg_url_at("analyst", pg_port)
    ))
    .await
    .map(|_| ())
    .expect_err("analyst must use TLS");
    assert_eq!(support::sqlstate(&e), "28000");
    let m = support::db_message(&e);
    assert!(
        m.contains("must connect over TLS") && m.contains("rule: tls-only: require_tls"),
        "{m}"
    );
    // Other agents are not bound by that file.
    support::connect_url(&format!("{}?sslmode=disable", pg_url_at("writer", pg_port)))
        .await
        .unwrap();
    pg_connect_tls(&pg_url_at("analyst", pg_port), &ca, CbMode::Prefer)
        .await
        .unwrap()
        .simple_query("SELECT 1")
        .await
        .unwrap();

    let token = harness().env.token("analyst");
    let auth = format!(
        "*3\r\n$4\r\nAUTH\r\n$7\r\nanalyst\r\n${}\r\n{token}\r\n",
        token.len()
    );
    let mut plain = tokio::net::TcpStream::connect(gw.redis_addr.unwrap())
        .await
        .unwrap();
    let reply = redis_exchange(&mut plain, auth.as_bytes(), "\r\n").await;
    assert!(
        reply.starts_with("-NOPERM") && reply.contains("tls-only: require_tls"),
        "{reply}"
    );
    // Nor by switching to it on a plain connection logged in as another agent (AUTH, HELLO):
    // the requirement held only at the first login (a live review).
    let writer = harness().env.token("writer");
    let mut plain = tokio::net::TcpStream::connect(gw.redis_addr.unwrap())
        .await
        .unwrap();
    let as_writer = format!(
        "*3\r\n$4\r\nAUTH\r\n$6\r\nwriter\r\n${}\r\n{writer}\r\n",
        writer.len()
    );
    let reply = redis_exchange(&mut plain, as_writer.as_bytes(), "\r\n").await;
    assert_eq!(reply, "+OK\r\n");
    let reply = redis_exchange(&mut plain, auth.as_bytes(), "\r\n").await;
    assert!(
        reply.starts_with("-NOPERM") && reply.contains("tls-only: require_tls"),
        "AUTH switch: {reply}"
    );
    let hello = format!(
        "*5\r\n$5\r\nHELLO\r\n$1\r\n2\r\n$4\r\nAUTH\r\n$7\r\nanalyst\r\n${}\r\n{token}\r\n",
        token.len()
    );
    let reply = redis_exchange(&mut plain, hello.as_bytes(), "\r\n").await;
    assert!(
        reply.starts_with("-NOPERM") && reply.contains("tls-only: require_tls"),
        "HELLO switch: {reply}"
    );
    // Still the writer.
    let reply = redis_exchange(&mut plain, b"*2\r\n$3\r\nGET\r\n$7\r\ncache:1\r\n", "\r\n").await;
    assert!(reply.starts_with('$'), "{reply}");
    let mut s = tls_connect(gw.redis_tls_addr.unwrap().port(), &ca, &[])
        .await
        .unwrap();
    s.write_all(auth.as_bytes()).await.unwrap();
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"+OK\r\n");

    let audit = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    assert!(audit.contains("must connect over TLS"), "refusals audited");
}

#[tokio::test]
async fn certificate_reload_serves_new_handshakes_and_keeps_open_sessions() {
    let dir = copy_demo(|c| c);
    let gw = start_gateway(dir.path()).await;
    tollgate::gateway::reload_on_file_change(
        gw.gateway.clone(),
        Duration::from_millis(100),
        gw.stopping(),
    );
    let pg_port = gw.pg_addr.unwrap().port();
    let tls_dir = dir.path().join("tls");
    let old_ca = dir.path().join("old-ca.crt");
    std::fs::copy(tls_dir.join("ca.crt"), &old_ca).unwrap();

    let open = pg_connect_tls(&pg_url_at("analyst", pg_port), &old_ca, CbMode::Require)
        .await
        .unwrap();
    open.simple_query("SELECT 1").await.unwrap();

    // A new CA and certificate replace the files (as `tollgate certs dev --force` does).
    tollgate::tls::dev::DevCerts::generate()
        .unwrap()
        .write(&tls_dir, true)
        .unwrap();
    let new_ca = tls_dir.join("ca.crt");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = pg_connect_tls(&pg_url_at("analyst", pg_port), &new_ca, CbMode::Require).await;
        if r.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "new certificate not picked up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        pg_connect_tls(&pg_url_at("analyst", pg_port), &old_ca, CbMode::Require)
            .await
            .is_err(),
        "the old certificate is gone for new handshakes"
    );
    open.simple_query("SELECT count(*) FROM orders")
        .await
        .expect("the session opened under the old certificate continues");

    // A broken file: the reload fails and the current certificate stays.
    std::fs::write(tls_dir.join("server.crt"), "not a certificate").unwrap();
    assert!(gw.gateway.reload_tls().is_err());
    tokio::time::sleep(Duration::from_millis(300)).await;
    pg_connect_tls(&pg_url_at("writer", pg_port), &new_ca, CbMode::Require)
        .await
        .expect("last good certificate kept");
}

/// Over TLS too, a client refused while still sending reads why: the gateway drains the rest
/// of the connection's bytes (from the socket under the TLS stream, `tls::TlsHalf`) before it
/// closes, instead of resetting it under the client's write.
#[tokio::test]
async fn a_tls_client_refused_mid_argument_reads_the_error() {
    let env = &harness().env;
    let mut s = tls_connect(env.redis_tls_port, &env.ca_file, &[])
        .await
        .unwrap();
    let auth = support::redis_cmd(&["AUTH", "writer", env.token("writer")]);
    s.write_all(&auth).await.unwrap();
    let mut ok = [0u8; 5];
    s.read_exact(&mut ok).await.unwrap();
    assert_eq!(&ok, b"+OK\r\n");
    let got = support::redis_refused_mid_argument(&mut s).await;
    assert!(got.starts_with("-ERR Protocol error"), "{got}");
}
