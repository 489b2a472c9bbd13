//! Admin tokens (`admin_tokens.toml`): names, roles (`viewer`, `admin`) and SCRAM verifiers,
//! stored exactly like agent tokens (salted PBKDF2; the token itself is never written). A token
//! that passed once is remembered by its SHA-256 so each request does not pay PBKDF2 again.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::{valid_agent_name, ScramVerifier};
use crate::config::SourceError;

/// What a token may do: `viewer` reads, `admin` also changes (reload) and probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Admin,
}

impl Role {
    pub fn parse(word: &str) -> Option<Role> {
        match word {
            "viewer" => Some(Role::Viewer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    pub name: String,
    pub role: Role,
    /// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, as for agents.
    pub verifier: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensFile {
    #[serde(default, rename = "token")]
    pub tokens: Vec<TokenRecord>,
}

/// A new random admin token: `tga_` and 48 hex characters (192 bits).
pub fn generate_admin_token() -> String {
    let mut b = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("tga_{}", hex::encode(b))
}

impl TokensFile {
    pub fn load(path: &Path) -> Result<TokensFile, SourceError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TokensFile::default()),
            Err(e) => return Err(SourceError::io(path, &e)),
        };
        toml::from_str(&text).map_err(|e| SourceError::from_toml(path, &text, &e))
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let mut text = String::from(
            "# tollgate admin tokens: written by `tollgate admin-token add`. Holds verifiers, never tokens.\n\n",
        );
        text.push_str(&toml::to_string(self).expect("admin tokens file serialises"));
        crate::vault::write_private_atomically(path, text.as_bytes())
    }

    /// Adds a token named `name` with a new verifier for `token`; refuses duplicates.
    pub fn add(&mut self, name: &str, role: Role, token: &str) -> Result<(), String> {
        if !valid_agent_name(name) {
            return Err(format!(
                "admin token names are 1-63 letters, digits, '_', '-', '.' (got {name:?})"
            ));
        }
        if self.tokens.iter().any(|t| t.name == name) {
            return Err(format!("admin token \"{name}\" already exists"));
        }
        self.tokens.push(TokenRecord {
            name: name.to_string(),
            role,
            verifier: ScramVerifier::derive(token.as_bytes()).encode(),
        });
        Ok(())
    }
}

/// Who called: the token's name and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// The loaded tokens, ready to check.
#[derive(Debug, Default)]
pub struct AdminTokens {
    records: Vec<(Caller, ScramVerifier)>,
    /// SHA-256 of tokens that passed, so a verified token costs a hash, not PBKDF2.
    verified: Mutex<HashMap<[u8; 32], Caller>>,
}

impl AdminTokens {
    pub fn load(path: &Path) -> Result<AdminTokens, SourceError> {
        let file = TokensFile::load(path)?;
        let mut records = Vec::new();
        for t in file.tokens {
            let verifier = ScramVerifier::decode(&t.verifier).map_err(|e| {
                SourceError::semantic(
                    path,
                    format!("admin token \"{}\": bad verifier: {e}", t.name),
                )
            })?;
            records.push((
                Caller {
                    name: t.name,
                    role: t.role,
                },
                verifier,
            ));
        }
        Ok(AdminTokens {
            records,
            verified: Mutex::new(HashMap::new()),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Remembered answer for `token`, if it passed before (cheap).
    pub fn cached(&self, token: &str) -> Option<Caller> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.verified.lock().ok()?.get(&digest).cloned()
    }

    /// Checks `token` against every verifier (constant time each; PBKDF2, so call it off the
    /// async workers). Successes are remembered.
    pub fn verify(&self, token: &str) -> Option<Caller> {
        if let Some(c) = self.cached(token) {
            return Some(c);
        }
        let mut found = None;
        for (caller, verifier) in &self.records {
            if verifier.check_password(token.as_bytes()) && found.is_none() {
                found = Some(caller.clone());
            }
        }
        if let Some(c) = &found {
            let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            if let Ok(mut m) = self.verified.lock() {
                m.insert(digest, c.clone());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stored_as_verifiers_and_checked_by_role() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin_tokens.toml");
        let mut f = TokensFile::default();
        let (view, admin) = (generate_admin_token(), generate_admin_token());
        f.add("grafana", Role::Viewer, &view).unwrap();
        f.add("ops", Role::Admin, &admin).unwrap();
        assert!(f.add("ops", Role::Viewer, "x").is_err());
        assert!(f.add("bad name", Role::Viewer, "x").is_err());
        f.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&view) && !text.contains(&admin));
        let tokens = AdminTokens::load(&path).unwrap();
        assert_eq!(tokens.verify(&view).unwrap().role, Role::Viewer);
        assert_eq!(tokens.cached(&view).unwrap().name, "grafana");
        assert_eq!(tokens.verify(&admin).unwrap().role, Role::Admin);
        assert!(tokens.verify("tga_wrong").is_none());
        assert!(tokens.cached("tga_wrong").is_none());
        assert!(Role::Admin > Role::Viewer);
    }

    #[test]
    fn a_missing_file_means_no_tokens_and_a_bad_one_is_located() {
        let dir = tempfile::tempdir().unwrap();
        assert!(AdminTokens::load(&dir.path().join("none.toml"))
            .unwrap()
            .is_empty());
        let path = dir.path().join("t.toml");
        std::fs::write(
            &path,
            "[[token]]\nname = \"a\"\nrole = \"root\"\nverifier = \"x\"\n",
        )
        .unwrap();
        let err = AdminTokens::load(&path).unwrap_err().to_string();
        assert!(err.contains("t.toml:3:"), "{err}");
    }
}
