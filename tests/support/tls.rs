//! TLS clients for the tests: rustls configurations trusting a given CA, tokio-postgres over
//! TLS, a raw TLS socket, and a second gateway started from a copy of the demo's files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A client configuration trusting only `ca` (PEM), offering `alpn`.
pub fn client_config(ca: &Path, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in tollgate::tls::read_certs(ca).unwrap() {
        roots.add(cert).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(tollgate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    config
}

/// A TLS connection to 127.0.0.1:`port` (the certificate checked against `ca`).
pub async fn tls_connect(
    port: u16,
    ca: &Path,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tokio_rustls::TlsConnector::from(Arc::new(client_config(ca, alpn)))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
}

/// tokio-postgres over TLS (`sslmode=require` with the certificate verified against `ca`).
pub async fn pg_connect_tls(
    url: &str,
    ca: &Path,
    channel_binding: tokio_postgres::config::ChannelBinding,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = url.parse().unwrap();
    config
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .channel_binding(channel_binding);
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_config(ca, &[]));
    let (client, conn) = config.connect(tls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// A copy of the demo's files (config, vault, key, agents, policies, certificates) with a fresh
/// audit log; `edit` rewrites tollgate.toml.
pub fn copy_demo(edit: impl FnOnce(String) -> String) -> tempfile::TempDir {
    let src = &super::harness().env.dir;
    let dst = super::copy_demo_dir();
    let config = std::fs::read_to_string(src.join("tollgate.toml")).unwrap();
    std::fs::write(dst.path().join("tollgate.toml"), edit(config)).unwrap();
    dst
}

/// Starts a gateway on the current runtime from `dir/tollgate.toml`.
pub async fn start_gateway(dir: &Path) -> tollgate::gateway::Running {
    let config = tollgate::config::Config::load(&dir.join("tollgate.toml")).unwrap();
    tollgate::gateway::start(config).await.unwrap()
}

pub fn ca_of(dir: &Path) -> PathBuf {
    dir.join("tls").join("ca.crt")
}

/// A plaintext PostgreSQL session of `agent` on a gateway started by [`start_gateway`].
pub async fn plain_client(gw: &tollgate::gateway::Running, agent: &str) -> tokio_postgres::Client {
    super::connect_url(&format!(
        "{}?sslmode=disable",
        pg_url_at(agent, gw.pg_addr.unwrap().port())
    ))
    .await
    .unwrap()
}

/// `postgresql://AGENT:TOKEN@127.0.0.1:PORT/shop` (no sslmode: the caller's connector decides).
pub fn pg_url_at(agent: &str, port: u16) -> String {
    let env = &super::harness().env;
    format!(
        "postgresql://{agent}:{}@127.0.0.1:{port}/shop",
        env.token(agent)
    )
}
