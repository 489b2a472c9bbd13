//! TLS with rustls (one crypto provider: aws-lc-rs): the front-end certificate (held in an
//! `ArcSwap`, replaced on reload without touching open sessions), the upstream client
//! configurations (`tls = disable | require | verify-full`), the SCRAM channel-binding data of
//! the certificate, and the development certificates of `tollgate certs dev`.

pub mod dev;
pub mod stream;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sha2::{Digest, Sha256, Sha384, Sha512};

pub use stream::{NetRead, NetStream, NetWrite, SharedTls};

/// The ALPN protocol PostgreSQL 17 negotiates (required for direct TLS).
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// Where a system trust store usually lives, for `verify-full` upstreams without a `ca_file`.
const SYSTEM_CA_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{}: no certificate found (expected PEM \"BEGIN CERTIFICATE\" blocks)", .0.display())]
    NoCertificate(PathBuf),
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("no system CA bundle found (looked in {}); set ca_file", SYSTEM_CA_BUNDLES.join(", "))]
    NoSystemRoots,
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The process's crypto provider. Built explicitly (never the process default), so a second
/// provider compiled in by some dependency can never make rustls panic.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// Reads every certificate of a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_err = |source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let pem = read_pem(path).map_err(read_err)?;
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let read_err = |source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let pem = read_pem(path).map_err(read_err)?;
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(read_err)
}

/// A PEM file's text, refusing a FIFO or device: a reload re-reads these, and opening a FIFO
/// would wait for a writer (`config::read_regular_file`).
fn read_pem(path: &Path) -> Result<String, rustls_pki_types::pem::Error> {
    crate::config::read_regular_file(path).map_err(rustls_pki_types::pem::Error::Io)
}

/// The front end's TLS: one certificate, two server configurations (PostgreSQL offers ALPN
/// `postgresql`; Redis clients negotiate none), and the certificate's channel-binding data.
pub struct ServerTls {
    pub pg: Arc<ServerConfig>,
    pub redis: Arc<ServerConfig>,
    /// `tls-server-end-point` data (RFC 5929): the certificate's hash, with the hash of its
    /// signature algorithm (SHA-256 for MD5/SHA-1). `None` when that hash is not defined
    /// (Ed25519, RSA-PSS): SCRAM-SHA-256-PLUS is then not offered.
    pub end_point: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("channel_binding", &self.end_point.is_some())
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads a certificate chain and its private key (PKCS#8, PKCS#1 or SEC1 PEM).
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<ServerTls, TlsError> {
        let certs = read_certs(cert_file)?;
        let key = read_key(key_file)?;
        let end_point = end_point_hash(&certs[0]).map(Arc::from);
        let build = |alpn: Option<&[u8]>| -> Result<Arc<ServerConfig>, TlsError> {
            let mut config = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(certs.clone(), key.clone_key())
                .map_err(|e| TlsError::Invalid {
                    path: key_file.to_path_buf(),
                    message: format!("certificate and key do not make a usable pair: {e}"),
                })?;
            if let Some(p) = alpn {
                config.alpn_protocols = vec![p.to_vec()];
            }
            Ok(Arc::new(config))
        };
        Ok(ServerTls {
            pg: build(Some(ALPN_POSTGRESQL))?,
            redis: build(None)?,
            end_point,
        })
    }
}

/// The current front-end TLS state: swapped whole on reload; a handshake takes what is current
/// when it starts, and an open session keeps its connection whatever happens after.
#[derive(Debug, Default)]
pub struct TlsHolder {
    current: ArcSwapOption<ServerTls>,
}

impl TlsHolder {
    pub fn new(tls: Option<ServerTls>) -> TlsHolder {
        TlsHolder {
            current: ArcSwapOption::from(tls.map(Arc::new)),
        }
    }

    pub fn current(&self) -> Option<Arc<ServerTls>> {
        self.current.load_full()
    }

    pub fn store(&self, tls: ServerTls) {
        self.current.store(Some(Arc::new(tls)));
    }
}

/// `tls-server-end-point` channel-binding data of a DER certificate (RFC 5929 section 4.1).
pub fn end_point_hash(cert: &[u8]) -> Option<Vec<u8>> {
    use x509_cert::der::Decode;
    let parsed = x509_cert::Certificate::from_der(cert).ok()?;
    let oid = parsed.signature_algorithm.oid.to_string();
    let digest: Vec<u8> = match oid.as_str() {
        // md5WithRSA, sha1WithRSA, sha256WithRSA, ecdsa-with-SHA1, ecdsa-with-SHA256
        "1.2.840.113549.1.1.4"
        | "1.2.840.113549.1.1.5"
        | "1.2.840.113549.1.1.11"
        | "1.2.840.10045.4.1"
        | "1.2.840.10045.4.3.2" => Sha256::digest(cert).to_vec(),
        // sha384WithRSA, ecdsa-with-SHA384
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => Sha384::digest(cert).to_vec(),
        // sha512WithRSA, ecdsa-with-SHA512
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => Sha512::digest(cert).to_vec(),
        _ => return None,
    };
    Some(digest)
}

/// How tollgate talks to an upstream (`tls` in `[upstream.NAME]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum UpstreamTlsMode {
    /// Plain TCP.
    #[serde(rename = "disable")]
    Disable,
    /// TLS, certificate not checked (encryption against passive listeners only).
    #[serde(rename = "require")]
    Require,
    /// TLS, certificate chain checked against `ca_file` (or the system store) and the host name
    /// (or IP address) checked against the certificate.
    #[serde(rename = "verify-full")]
    VerifyFull,
}

impl UpstreamTlsMode {
    /// The default for a host: `disable` for loopback addresses and `localhost`, `verify-full`
    /// for everything else.
    pub fn default_for(host: &str) -> UpstreamTlsMode {
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if loopback {
            UpstreamTlsMode::Disable
        } else {
            UpstreamTlsMode::VerifyFull
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            UpstreamTlsMode::Disable => "disable",
            UpstreamTlsMode::Require => "require",
            UpstreamTlsMode::VerifyFull => "verify-full",
        }
    }
}

/// What a connection to one upstream needs for TLS (absent when `tls = "disable"`).
#[derive(Clone)]
pub struct UpstreamTls {
    pub mode: UpstreamTlsMode,
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("mode", &self.mode.name())
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl UpstreamTls {
    /// Builds the client side for `host` (`None` for `disable`). `alpn` is offered as is.
    pub fn build(
        mode: UpstreamTlsMode,
        host: &str,
        ca_file: Option<&Path>,
        alpn: Option<&[u8]>,
    ) -> Result<Option<UpstreamTls>, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let mut config = match mode {
            UpstreamTlsMode::Disable => return Ok(None),
            UpstreamTlsMode::Require => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verify::AnyCertificate::new(provider())))
                .with_no_client_auth(),
            UpstreamTlsMode::VerifyFull => builder
                .with_root_certificates(roots(ca_file)?)
                .with_no_client_auth(),
        };
        if let Some(p) = alpn {
            config.alpn_protocols = vec![p.to_vec()];
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let server_name =
            ServerName::try_from(bare.to_string()).map_err(|_| TlsError::Invalid {
                path: PathBuf::from(host),
                message: "not a valid host name or IP address for TLS".into(),
            })?;
        Ok(Some(UpstreamTls {
            mode,
            config: Arc::new(config),
            server_name,
        }))
    }

    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.config.clone())
    }
}

/// The trust anchors of `ca_file`, or of the system bundle.
fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let path = match ca_file {
        Some(p) => p.to_path_buf(),
        None => SYSTEM_CA_BUNDLES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or(TlsError::NoSystemRoots)?,
    };
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(read_certs(&path)?);
    if added == 0 {
        return Err(TlsError::Invalid {
            path,
            message: "no usable CA certificate".into(),
        });
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_upstreams_default_to_plain_others_to_verify_full() {
        for host in ["127.0.0.1", "127.0.0.53", "::1", "[::1]", "localhost"] {
            assert_eq!(
                UpstreamTlsMode::default_for(host),
                UpstreamTlsMode::Disable,
                "{host}"
            );
        }
        for host in ["db.example.com", "10.0.0.5", "localhost.evil.com", "::2"] {
            assert_eq!(
                UpstreamTlsMode::default_for(host),
                UpstreamTlsMode::VerifyFull,
                "{host}"
            );
        }
    }

    #[test]
    fn dev_certificates_load_and_bind_with_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dev::DevCerts::generate().unwrap();
        certs.write(dir.path(), false).unwrap();
        let tls = ServerTls::load(
            &dir.path().join("server.crt"),
            &dir.path().join("server.key"),
        )
        .unwrap();
        let der = read_certs(&dir.path().join("server.crt")).unwrap();
        assert_eq!(tls.end_point.as_deref(), Some(&Sha256::digest(&der[0])[..]));
        assert_eq!(tls.pg.alpn_protocols, vec![ALPN_POSTGRESQL.to_vec()]);
        assert!(tls.redis.alpn_protocols.is_empty());
        // Writing again over existing files needs `force`.
        assert!(certs.write(dir.path(), false).is_err());
        // A key that does not match the certificate is refused.
        let other = dev::DevCerts::generate().unwrap();
        std::fs::write(dir.path().join("other.key"), &other.server_key_pem).unwrap();
        assert!(ServerTls::load(
            &dir.path().join("server.crt"),
            &dir.path().join("other.key")
        )
        .is_err());
    }

    #[test]
    fn upstream_configs_build_for_each_mode() {
        let dir = tempfile::tempdir().unwrap();
        dev::DevCerts::generate()
            .unwrap()
            .write(dir.path(), false)
            .unwrap();
        let ca = dir.path().join("ca.crt");
        assert!(
            UpstreamTls::build(UpstreamTlsMode::Disable, "db", None, None)
                .unwrap()
                .is_none()
        );
        let t = UpstreamTls::build(UpstreamTlsMode::VerifyFull, "127.0.0.1", Some(&ca), None)
            .unwrap()
            .unwrap();
        assert!(matches!(t.server_name, ServerName::IpAddress(_)));
        assert!(UpstreamTls::build(UpstreamTlsMode::Require, "db.example.com", None, None).is_ok());
        // A key file is not a CA.
        assert!(UpstreamTls::build(
            UpstreamTlsMode::VerifyFull,
            "db",
            Some(&dir.path().join("ca.key")),
            None
        )
        .is_err());
    }
}
