//! `tollgate certs dev`: a throwaway local CA, a server certificate for 127.0.0.1, ::1 and
//! localhost signed by it, and a client certificate, for development and the demo only.
//! Private keys are written 0600 and never overwrite existing files unless forced.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The names the development server certificate is valid for.
pub const SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// File names written by [`DevCerts::write`].
pub const FILES: [&str; 6] = [
    "ca.crt",
    "ca.key",
    "server.crt",
    "server.key",
    "client.crt",
    "client.key",
];

pub struct DevCerts {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

impl std::fmt::Debug for DevCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCerts").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DevCertsError {
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} already exists (use --force to replace the development certificates)", .0.display())]
    Exists(PathBuf),
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(days);
}

impl DevCerts {
    /// A fresh CA (ECDSA P-256, valid 10 years) and a server and a client certificate signed by
    /// it (valid about 2 years).
    pub fn generate() -> Result<DevCerts, DevCertsError> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "tollgate development CA");
        ca.distinguished_name
            .push(DnType::OrganizationName, "tollgate (development only)");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut ca, 3650);
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, &ca_key);

        let server_key = KeyPair::generate()?;
        let mut server = CertificateParams::new(
            SERVER_NAMES
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )?;
        server
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server.use_authority_key_identifier_extension = true;
        validity(&mut server, 825);
        let server_cert = server.signed_by(&server_key, &issuer)?;

        let client_key = KeyPair::generate()?;
        let mut client = CertificateParams::new(Vec::<String>::new())?;
        client
            .distinguished_name
            .push(DnType::CommonName, "tollgate-dev-client");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        client.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        client.use_authority_key_identifier_extension = true;
        validity(&mut client, 825);
        let client_cert = client.signed_by(&client_key, &issuer)?;

        Ok(DevCerts {
            ca_cert_pem: ca_cert.pem(),
            ca_key_pem: ca_key.serialize_pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
        })
    }

    /// Writes the six files into `dir` (created if missing). Keys are 0600. Existing files are
    /// replaced only with `force` (through a temporary file and a rename, so a running gateway
    /// watching them never reads half a file).
    pub fn write(&self, dir: &Path, force: bool) -> Result<Vec<PathBuf>, DevCertsError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DevCertsError::Write { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let contents = [
            &self.ca_cert_pem,
            &self.ca_key_pem,
            &self.server_cert_pem,
            &self.server_key_pem,
            &self.client_cert_pem,
            &self.client_key_pem,
        ];
        if !force {
            if let Some(existing) = FILES.iter().map(|f| dir.join(f)).find(|p| p.exists()) {
                return Err(DevCertsError::Exists(existing));
            }
        }
        let mut written = Vec::new();
        for (name, text) in FILES.iter().zip(contents) {
            let path = dir.join(name);
            let tmp = dir.join(format!(".{name}.tmp"));
            let mode = if name.ends_with(".key") { 0o600 } else { 0o644 };
            let _ = std::fs::remove_file(&tmp);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&tmp)
                .map_err(io(&tmp))?;
            file.write_all(text.as_bytes()).map_err(io(&tmp))?;
            drop(file);
            std::fs::rename(&tmp, &path).map_err(io(&path))?;
            written.push(path);
        }
        Ok(written)
    }
}
