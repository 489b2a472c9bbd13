//! The vault master key: 32 bytes from `TOLLGATE_MASTER_KEY` or a key file, never printed.

use std::fmt;
use std::path::Path;

use rand::RngCore;

use super::VaultError;

pub const MASTER_KEY_ENV: &str = "TOLLGATE_MASTER_KEY";

pub struct MasterKey([u8; 32]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> MasterKey {
        MasterKey(bytes)
    }

    pub fn generate() -> MasterKey {
        let mut b = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut b);
        MasterKey(b)
    }

    /// Parses 64 hex characters (surrounding whitespace ignored). Errors never echo the input.
    pub fn parse(text: &str) -> Result<MasterKey, VaultError> {
        let text = text.trim();
        let bytes = hex::decode(text)
            .map_err(|_| VaultError::Key("expected 64 hexadecimal characters (32 bytes)".into()))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| VaultError::Key("expected 64 hexadecimal characters (32 bytes)".into()))?;
        Ok(MasterKey(arr))
    }

    /// `TOLLGATE_MASTER_KEY` if set, else the key file, else an error saying how to provide one.
    pub fn load(key_file: Option<&Path>) -> Result<MasterKey, VaultError> {
        if let Ok(v) = std::env::var(MASTER_KEY_ENV) {
            return MasterKey::parse(&v)
                .map_err(|e| VaultError::Key(format!("{MASTER_KEY_ENV}: {e}")));
        }
        match key_file {
            Some(path) => {
                let text = crate::config::read_regular_file(path)
                    .map_err(|e| VaultError::Key(format!("key file {}: {e}", path.display())))?;
                MasterKey::parse(&text)
                    .map_err(|e| VaultError::Key(format!("key file {}: {e}", path.display())))
            }
            None => Err(VaultError::Key(format!(
                "no master key: set {MASTER_KEY_ENV} or vault.key_file in the config"
            ))),
        }
    }

    /// A warning when the key file (if the key comes from one) may be read by other users than
    /// its owner: whoever reads it reads every vaulted secret (a live review: a 0644 key file
    /// was taken without a word).
    pub fn loose_permissions(key_file: Option<&Path>) -> Option<String> {
        use std::os::unix::fs::PermissionsExt;
        if std::env::var_os(MASTER_KEY_ENV).is_some() {
            return None;
        }
        let path = key_file?;
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        (mode & 0o077 != 0).then(|| {
            format!(
                "master key file {} may be read by other users (mode {:o}): chmod 600 it",
                path.display(),
                mode & 0o777
            )
        })
    }

    /// Writes the key as hex into a new 0600 file (refuses to overwrite).
    pub fn write_new_file(&self, path: &Path) -> Result<(), VaultError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| VaultError::Key(format!("key file {}: {e}", path.display())))?;
        f.write_all(hex::encode(self.0).as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| VaultError::Key(format!("key file {}: {e}", path.display())))
    }

    /// A key for another purpose derived from this one (HMAC-SHA-256 with a label), so such keys
    /// survive restarts without being stored.
    pub fn derive_subkey(&self, label: &[u8]) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(&self.0).expect("HMAC accepts any key length");
        mac.update(label);
        mac.finalize().into_bytes().into()
    }

    pub(super) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_hex_and_hides_bad_input() {
        let k = MasterKey::parse(&"ab".repeat(32)).unwrap();
        assert_eq!(k.bytes()[0], 0xab);
        let err = MasterKey::parse("not-a-key-zzzz").unwrap_err().to_string();
        assert!(!err.contains("zzzz"), "{err}");
        assert!(MasterKey::parse(&"ab".repeat(31)).is_err());
    }

    #[test]
    fn key_file_roundtrip_and_no_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let k = MasterKey::generate();
        k.write_new_file(&p).unwrap();
        assert!(k.write_new_file(&p).is_err());
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(MasterKey::parse(&text).unwrap().bytes(), k.bytes());
    }
}
