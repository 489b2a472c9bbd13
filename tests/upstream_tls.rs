//! Upstream TLS: the demo's PostgreSQL serves TLS only (`ssl = on`, `hostssl`, certificate from
//! the demo's development CA) and the gateway connects with `tls = "verify-full"`. Sessions,
//! the schema loader (masking) and cancels work; plain text or a CA that does not vouch for
//! the server fails closed. (A test binary of its own: it starts its own demo.)

mod support;

use std::time::{Duration, Instant};

use support::tls::{copy_demo, pg_url_at, start_gateway};
use support::{connect, db_message, sqlstate, upstream_tls_harness};

const VERIFY_FULL: &str = "tls = \"verify-full\"\nca_file = \"tls/ca.crt\"\n";

#[tokio::test]
async fn sessions_and_the_schema_loader_use_verified_tls() {
    upstream_tls_harness();
    let trusted = connect("trusted").await;
    let row = trusted
        .query_one(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "the upstream session is encrypted");
    assert!(row.get::<_, String>(1).starts_with("TLS"));

    // Masking needs the table shapes, read over a tokio-postgres side connection: had it
    // failed (plain text is refused upstream), this statement would be refused.
    let analyst = connect("analyst").await;
    let email: String = analyst
        .query_one("SELECT email FROM customers ORDER BY id LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    assert!(email.starts_with("***@"), "{email}");
}

#[tokio::test]
async fn cancel_reaches_a_tls_upstream() {
    upstream_tls_harness();
    let c = connect("trusted").await;
    let token = c.cancel_token();
    let started = Instant::now();
    let sleeper = tokio::spawn(async move { c.simple_query("SELECT pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let e = sleeper.await.unwrap().unwrap_err();
    assert_eq!(sqlstate(&e), "57014");
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// Connects as `trusted` through a second gateway whose `[upstream.shop]` TLS lines are `tls`.
async fn through_gateway_with(tls: &str) -> Result<(), tokio_postgres::Error> {
    upstream_tls_harness();
    let dir = copy_demo(|c| {
        assert!(c.contains(VERIFY_FULL));
        c.replace(VERIFY_FULL, tls)
    });
    tollgate::tls::dev::DevCerts::generate()
        .unwrap()
        .write(&dir.path().join("other"), false)
        .unwrap();
    let gw = start_gateway(dir.path()).await;
    let url = format!(
        "{}?sslmode=disable",
        pg_url_at("trusted", gw.pg_addr.unwrap().port())
    );
    let c = support::connect_url(&url).await?;
    c.simple_query("SELECT 1").await.map(|_| ())
}

#[tokio::test]
async fn plain_text_or_an_untrusted_certificate_fails_closed() {
    for (tls, what) in [
        ("tls = \"disable\"\n", "plain text"),
        (
            "tls = \"verify-full\"\nca_file = \"other/ca.crt\"\n",
            "another CA",
        ),
    ] {
        let e = through_gateway_with(tls).await.expect_err(what);
        assert_eq!(sqlstate(&e), "08006", "{what}: {e}");
        assert!(db_message(&e).contains("unavailable"), "{what}: {e}");
    }
    // `require` encrypts without checking the certificate.
    through_gateway_with("tls = \"require\"\n")
        .await
        .expect("tls = require");
}

/// A redis-server serving TLS only, with the demo's password; killed on drop.
struct TlsRedis {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_tls_redis(password: &str) -> (TlsRedis, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    tollgate::tls::dev::DevCerts::generate()
        .unwrap()
        .write(dir.path(), false)
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = |f: &str| dir.path().join(f).display().to_string();
    let child = std::process::Command::new("redis-server")
        .args(["--port", "0", "--bind", "127.0.0.1", "--save", ""])
        .args(["--tls-port", &port.to_string()])
        .args(["--tls-cert-file", &p("server.crt")])
        .args(["--tls-key-file", &p("server.key")])
        .args(["--tls-ca-cert-file", &p("ca.crt")])
        .args(["--tls-auth-clients", "no", "--requirepass", password])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server is required (apt-get install redis-server)");
    let ca = dir.path().join("ca.crt");
    (
        TlsRedis {
            child,
            port,
            _dir: dir,
        },
        ca,
    )
}

#[tokio::test]
async fn redis_upstream_over_verified_tls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = &upstream_tls_harness().env;
    // redis://default:PASSWORD@127.0.0.1:PORT
    let (_user, rest) = env
        .upstream_redis_url
        .trim_start_matches("redis://")
        .split_once(':')
        .unwrap();
    let (password, port) = rest.rsplit_once("@127.0.0.1:").unwrap();
    let (redis, ca) = start_tls_redis(password);
    let deadline = Instant::now() + Duration::from_secs(10);
    while support::tls::tls_connect(redis.port, &ca, &[])
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "TLS redis-server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dir = copy_demo(|c| {
        let old = format!("port = {port}\nuser = \"default\"\n");
        assert!(c.contains(&old), "{c}");
        c.replace(
            &old,
            &format!(
                "port = {}\nuser = \"default\"\ntls = \"verify-full\"\nca_file = \"{}\"\n",
                redis.port,
                ca.display()
            ),
        )
    });
    let gw = start_gateway(dir.path()).await;
    let mut s = tokio::net::TcpStream::connect(gw.redis_addr.unwrap())
        .await
        .unwrap();
    let token = env.token("writer");
    let auth = format!(
        "*3\r\n$4\r\nAUTH\r\n$6\r\nwriter\r\n${}\r\n{token}\r\n",
        token.len()
    );
    let reply = support::redis_exchange(&mut s, auth.as_bytes(), "\r\n").await;
    assert_eq!(reply, "+OK\r\n");
    let reply = support::redis_exchange(
        &mut s,
        b"*3\r\n$3\r\nSET\r\n$9\r\ncache:tls\r\n$2\r\nok\r\n*2\r\n$3\r\nGET\r\n$9\r\ncache:tls\r\n",
        "$2\r\nok\r\n",
    )
    .await;
    assert_eq!(reply, "+OK\r\n$2\r\nok\r\n");
    drop(s);

    // A blocking command on the session's own TLS connection, then the client stops sending:
    // Redis is told (close_notify and FIN, not just a dropped write half), frees the blocked
    // command, and the session ends at once rather than at the end of its grace.
    let mut s = tokio::net::TcpStream::connect(gw.redis_addr.unwrap())
        .await
        .unwrap();
    assert_eq!(
        support::redis_exchange(&mut s, auth.as_bytes(), "\r\n").await,
        "+OK\r\n"
    );
    s.write_all(b"*3\r\n$5\r\nBLPOP\r\n$15\r\ncache:tls-never\r\n$1\r\n0\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.shutdown().await.unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("the session ends")
        .ok();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "ended after {:?}: {:?}",
        started.elapsed(),
        String::from_utf8_lossy(&rest)
    );
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));

    // The same upstream with a CA that did not sign its certificate: refused, closed.
    let other = tempfile::tempdir().unwrap();
    tollgate::tls::dev::DevCerts::generate()
        .unwrap()
        .write(other.path(), false)
        .unwrap();
    let text = std::fs::read_to_string(dir.path().join("tollgate.toml")).unwrap();
    std::fs::write(
        dir.path().join("tollgate.toml"),
        text.replace(
            &ca.display().to_string(),
            &other.path().join("ca.crt").display().to_string(),
        )
        // A log of its own: the first gateway still writes the other (one writer per log).
        .replace("file = \"audit.log\"", "file = \"audit2.log\""),
    )
    .unwrap();
    let gw2 = start_gateway(dir.path()).await;
    let mut s = tokio::net::TcpStream::connect(gw2.redis_addr.unwrap())
        .await
        .unwrap();
    let reply = support::redis_exchange(&mut s, auth.as_bytes(), "\r\n").await;
    assert!(reply.starts_with("-ERR tollgate: upstream"), "{reply}");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut rest)).await;
    let _ = s.shutdown().await;
}
