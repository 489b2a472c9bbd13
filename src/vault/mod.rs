//! The credential vault: an AES-256-GCM encrypted JSON file of named secrets.
//!
//! Each record is sealed with its own random 96-bit nonce and authenticated with its name as
//! associated data, so records cannot be swapped between names. A `key_check` record tells a
//! wrong master key apart from a tampered file. The master key comes from `TOLLGATE_MASTER_KEY`
//! or a key file, never from the config.

mod key;
mod lock;

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};

pub use key::{MasterKey, MASTER_KEY_ENV};
pub use lock::FileLock;

const FORMAT: &str = "tollgate-vault";
const VERSION: u32 = 1;
const KEY_CHECK_PLAINTEXT: &[u8] = b"tollgate vault key check";

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("vault {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("vault {path}: not a tollgate vault file ({reason})")]
    Format { path: PathBuf, reason: String },
    #[error("vault {path}: the master key does not open this vault")]
    WrongKey { path: PathBuf },
    #[error("vault {path}: record \"{name}\" failed authentication (tampered or corrupt)")]
    Tampered { path: PathBuf, name: String },
    #[error("vault: no secret named \"{name}\"{}", if *.file_missing { " (the vault file does not exist)" } else { "" })]
    Missing { name: String, file_missing: bool },
    #[error(
        "vault: secret names are 1-128 characters of letters, digits, '_', '-', '.' (got {0:?})"
    )]
    BadName(String),
    #[error("master key: {0}")]
    Key(String),
}

/// A decrypted secret. Its Debug output is redacted so it cannot leak through logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sealed {
    nonce: String,
    ciphertext: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VaultFile {
    format: String,
    version: u32,
    cipher: String,
    key_check: Sealed,
    records: BTreeMap<String, Sealed>,
}

/// An open vault: records stay sealed in memory and are decrypted on `get`.
pub struct Vault {
    path: PathBuf,
    key: MasterKey,
    key_check: Sealed,
    records: BTreeMap<String, Sealed>,
    /// The file was not there when opened (empty until the first `set` writes it): a missing
    /// secret then says so, rather than sending the operator to look for a name.
    file_missing: bool,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("path", &self.path)
            .field("records", &self.list())
            .finish()
    }
}

impl Vault {
    /// Opens a vault file; a missing file is an empty vault (created on the first `set`).
    pub fn open(path: &Path, key: MasterKey) -> Result<Vault, VaultError> {
        let io = |source| VaultError::Io {
            path: path.to_path_buf(),
            source,
        };
        // Never a FIFO: a reload re-reads the vault, and opening one waits for a writer.
        let text = match crate::config::read_regular_file(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key_check = seal(&key, "", KEY_CHECK_PLAINTEXT);
                return Ok(Vault {
                    path: path.to_path_buf(),
                    key,
                    key_check,
                    records: BTreeMap::new(),
                    file_missing: true,
                });
            }
            Err(e) => return Err(io(e)),
        };
        let format_err = |reason: String| VaultError::Format {
            path: path.to_path_buf(),
            reason,
        };
        let file: VaultFile = serde_json::from_str(&text).map_err(|e| format_err(e.to_string()))?;
        if file.format != FORMAT || file.cipher != "AES-256-GCM" {
            return Err(format_err(format!(
                "format {:?} cipher {:?}",
                file.format, file.cipher
            )));
        }
        if file.version != VERSION {
            return Err(format_err(format!("unsupported version {}", file.version)));
        }
        match open_sealed(&key, "", &file.key_check) {
            Ok(p) if p == KEY_CHECK_PLAINTEXT => {}
            _ => {
                return Err(VaultError::WrongKey {
                    path: path.to_path_buf(),
                })
            }
        }
        Ok(Vault {
            path: path.to_path_buf(),
            key,
            key_check: file.key_check,
            records: file.records,
            file_missing: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn list(&self) -> Vec<String> {
        self.records.keys().cloned().collect()
    }

    pub fn get(&self, name: &str) -> Result<Secret, VaultError> {
        let sealed = self.records.get(name).ok_or_else(|| VaultError::Missing {
            name: name.to_string(),
            file_missing: self.file_missing,
        })?;
        let plain = open_sealed(&self.key, name, sealed).map_err(|_| VaultError::Tampered {
            path: self.path.clone(),
            name: name.to_string(),
        })?;
        String::from_utf8(plain)
            .map(Secret)
            .map_err(|_| VaultError::Tampered {
                path: self.path.clone(),
                name: name.to_string(),
            })
    }

    /// Resolves a config value: `vault:NAME` is read from the vault; a literal value is accepted
    /// only where `allow_literal` (user names; never passwords).
    pub fn resolve(&self, reference: &str, allow_literal: bool) -> Result<Secret, VaultError> {
        match crate::config::SecretRef::parse(reference) {
            crate::config::SecretRef::Vault(name) => self.get(&name),
            crate::config::SecretRef::Literal(v) if allow_literal => Ok(Secret::new(v)),
            crate::config::SecretRef::Literal(_) => Err(VaultError::Key(
                "a password must be a vault reference".into(),
            )),
        }
    }

    /// Stores a secret under `name` (fresh nonce) and saves the file atomically.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), VaultError> {
        validate_name(name)?;
        self.records
            .insert(name.to_string(), seal(&self.key, name, value.as_bytes()));
        self.save()
    }

    pub fn remove(&mut self, name: &str) -> Result<bool, VaultError> {
        let existed = self.records.remove(name).is_some();
        if existed {
            self.save()?;
        }
        Ok(existed)
    }

    /// Re-encrypts every record under `new_key` and saves; the old key no longer opens the file.
    pub fn rotate_key(&mut self, new_key: MasterKey) -> Result<(), VaultError> {
        let mut resealed = BTreeMap::new();
        for name in self.records.keys() {
            let secret = self.get(name)?;
            resealed.insert(
                name.clone(),
                seal(&new_key, name, secret.expose().as_bytes()),
            );
        }
        self.key_check = seal(&new_key, "", KEY_CHECK_PLAINTEXT);
        self.records = resealed;
        self.key = new_key;
        self.save()
    }

    fn save(&mut self) -> Result<(), VaultError> {
        let file = VaultFile {
            format: FORMAT.to_string(),
            version: VERSION,
            cipher: "AES-256-GCM".to_string(),
            key_check: self.key_check.clone(),
            records: self.records.clone(),
        };
        let text = serde_json::to_string_pretty(&file).expect("vault file serialises");
        write_private_atomically(&self.path, text.as_bytes()).map_err(|source| VaultError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.file_missing = false;
        Ok(())
    }
}

fn validate_name(name: &str) -> Result<(), VaultError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(VaultError::BadName(name.to_string()))
    }
}

fn aad(name: &str) -> Vec<u8> {
    format!("{FORMAT}/v{VERSION}/{name}").into_bytes()
}

fn seal(key: &MasterKey, name: &str, plain: &[u8]) -> Sealed {
    let cipher = Aes256Gcm::new_from_slice(key.bytes()).expect("32-byte key");
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let aad = aad(name);
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plain,
                aad: &aad,
            },
        )
        .expect("AES-GCM encryption cannot fail for in-memory buffers");
    Sealed {
        nonce: B64.encode(nonce),
        ciphertext: B64.encode(ct),
    }
}

fn open_sealed(key: &MasterKey, name: &str, sealed: &Sealed) -> Result<Vec<u8>, ()> {
    let nonce = B64.decode(&sealed.nonce).map_err(|_| ())?;
    let ct = B64.decode(&sealed.ciphertext).map_err(|_| ())?;
    if nonce.len() != 12 {
        return Err(());
    }
    let cipher = Aes256Gcm::new_from_slice(key.bytes()).expect("32-byte key");
    let aad = aad(name);
    cipher
        .decrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &ct,
                aad: &aad,
            },
        )
        .map_err(|_| ())
}

/// A hidden file beside `path`, `.NAME{suffix}` (its folder made if missing): the temp file a
/// write goes through, the lock the CLI holds while it changes the file.
pub(crate) fn hidden_beside(path: &Path, suffix: &str) -> std::io::Result<std::path::PathBuf> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy());
    Ok(dir.join(format!(".{}{suffix}", name.as_deref().unwrap_or("file"))))
}

/// Writes `bytes` to `path` via a 0600 temp file and a rename, so a crash never leaves half a file.
pub fn write_private_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = hidden_beside(path, &format!(".tmp{}", std::process::id()))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> MasterKey {
        MasterKey::from_bytes([b; 32])
    }

    #[test]
    fn set_get_list_roundtrip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.json");
        let mut v = Vault::open(&path, key(1)).unwrap();
        v.set("shop_password", "s3cret-pw").unwrap();
        v.set("shop_user", "tollgate_shop").unwrap();
        let v = Vault::open(&path, key(1)).unwrap();
        assert_eq!(v.get("shop_password").unwrap().expose(), "s3cret-pw");
        assert_eq!(v.list(), vec!["shop_password", "shop_user"]);
        let raw = std::fs::read_to_string(&path).unwrap();
        assert!(!raw.contains("s3cret-pw") && !raw.contains("tollgate_shop"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn wrong_key_is_reported_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.json");
        Vault::open(&path, key(1)).unwrap().set("a", "x").unwrap();
        assert!(matches!(
            Vault::open(&path, key(2)),
            Err(VaultError::WrongKey { .. })
        ));
    }

    #[test]
    fn swapped_or_edited_records_fail_authentication() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.json");
        let mut v = Vault::open(&path, key(1)).unwrap();
        v.set("a", "alpha").unwrap();
        v.set("b", "bravo").unwrap();
        let mut file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let a = file["records"]["a"].clone();
        file["records"]["b"] = a;
        std::fs::write(&path, file.to_string()).unwrap();
        let v = Vault::open(&path, key(1)).unwrap();
        assert!(matches!(v.get("b"), Err(VaultError::Tampered { .. })));
        assert_eq!(v.get("a").unwrap().expose(), "alpha");
    }

    #[test]
    fn every_record_gets_a_fresh_nonce() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.json");
        let mut v = Vault::open(&path, key(1)).unwrap();
        v.set("a", "same").unwrap();
        let first = v.records["a"].nonce.clone();
        v.set("a", "same").unwrap();
        assert_ne!(first, v.records["a"].nonce);
    }

    #[test]
    fn rotation_reencrypts_under_the_new_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.json");
        let mut v = Vault::open(&path, key(1)).unwrap();
        v.set("a", "alpha").unwrap();
        v.rotate_key(key(9)).unwrap();
        assert!(matches!(
            Vault::open(&path, key(1)),
            Err(VaultError::WrongKey { .. })
        ));
        assert_eq!(
            Vault::open(&path, key(9))
                .unwrap()
                .get("a")
                .unwrap()
                .expose(),
            "alpha"
        );
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let s = Secret::new("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{:?}", key(7)).contains("0707"));
    }

    #[test]
    fn bad_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = Vault::open(&dir.path().join("v.json"), key(1)).unwrap();
        assert!(matches!(v.set("a b", "x"), Err(VaultError::BadName(_))));
        let missing = v.get("nope").unwrap_err();
        assert!(
            missing
                .to_string()
                .ends_with("(the vault file does not exist)"),
            "{missing}"
        );
        v.set("a", "x").unwrap();
        let missing = v.get("nope").unwrap_err().to_string();
        assert_eq!(missing, "vault: no secret named \"nope\"");
    }
}
