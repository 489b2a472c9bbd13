//! Admin tokens (`admin_tokens.toml`): names, roles (`viewer`, `admin`) and SCRAM verifiers,
//! stored exactly like agent tokens (salted PBKDF2; the token itself is never written). A token
//! that passed once is remembered by its SHA-256 so each request does not pay PBKDF2 again, and
//! so is a token that failed (the last [`MAX_REFUSED`] of them): repeating a wrong token costs a
//! hash, not PBKDF2 over every stored verifier. Both are forgotten when the tokens are reloaded.

use std::collections::{HashMap, HashSet, VecDeque};
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
    /// The same token's verifier with few iterations (`scram::LOGIN_ITERATIONS`), what checks
    /// use when present, as for agents: the token is 192 random bits, so no iteration count
    /// changes the cost of guessing it, while 4,096 made every wrong token cost the gateway
    /// PBKDF2 per stored token. Files written before it existed lack it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_verifier: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TokensFile {
    #[serde(rename = "token")]
    pub tokens: Vec<TokenRecord>,
    /// Whether the file lists its tokens: `[[token]]` tables, or `token = []` (what `save`
    /// writes for none). A missing, empty or comment-only file does not: that is what a
    /// deletion or a truncated write leaves, and a reload does not read it as "revoke all".
    #[serde(skip)]
    pub listed: bool,
}

/// The file as written: `token` absent told apart from `token = []`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Written {
    #[serde(rename = "token")]
    tokens: Option<Vec<TokenRecord>>,
}

/// A new random admin token: `tga_` and 48 hex characters (192 bits).
pub fn generate_admin_token() -> String {
    let mut b = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("tga_{}", hex::encode(b))
}

impl TokensFile {
    pub fn load(path: &Path) -> Result<TokensFile, SourceError> {
        let text = match crate::config::read_regular_file(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TokensFile::default()),
            Err(e) => return Err(SourceError::io(path, &e)),
        };
        let written: Written =
            toml::from_str(&text).map_err(|e| SourceError::from_toml(path, &text, &e))?;
        Ok(TokensFile {
            listed: written.tokens.is_some(),
            tokens: written.tokens.unwrap_or_default(),
        })
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
            login_verifier: Some(
                ScramVerifier::derive_iterations(
                    token.as_bytes(),
                    crate::auth::scram::LOGIN_ITERATIONS,
                )
                .encode(),
            ),
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

/// Wrong tokens remembered (by SHA-256): a bounded set, oldest forgotten first.
pub const MAX_REFUSED: usize = 4096;

/// What is already known of a presented token, from its SHA-256 alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known {
    Valid(Caller),
    Refused,
    /// Not seen yet: only PBKDF2 over the verifiers can tell.
    Unknown,
}

/// Digests of tokens that failed, in the order they failed.
#[derive(Debug, Default)]
struct Refused {
    set: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
}

impl Refused {
    fn insert(&mut self, digest: [u8; 32]) {
        if !self.set.insert(digest) {
            return;
        }
        self.order.push_back(digest);
        if self.order.len() > MAX_REFUSED {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

/// The loaded tokens, ready to check.
#[derive(Debug, Default)]
pub struct AdminTokens {
    records: Vec<(Caller, ScramVerifier)>,
    /// SHA-256 of tokens that passed, so a verified token costs a hash, not PBKDF2.
    verified: Mutex<HashMap<[u8; 32], Caller>>,
    /// SHA-256 of tokens that failed, so a repeated wrong token costs a hash too.
    refused: Mutex<Refused>,
    /// Full checks (PBKDF2 over every verifier) done since these tokens were loaded.
    checks: std::sync::atomic::AtomicU64,
    /// The file listed them (`TokensFile::listed`), even if none.
    listed: bool,
}

impl AdminTokens {
    pub fn load(path: &Path) -> Result<AdminTokens, SourceError> {
        let file = TokensFile::load(path)?;
        let listed = file.listed;
        let mut records = Vec::new();
        for t in file.tokens {
            let bad = |what: &str, e: &str| {
                SourceError::semantic(path, format!("admin token \"{}\": bad {what}: {e}", t.name))
            };
            let full = ScramVerifier::decode(&t.verifier).map_err(|e| bad("verifier", e))?;
            let verifier = match &t.login_verifier {
                Some(v) => ScramVerifier::decode_login(v).map_err(|e| bad("login_verifier", e))?,
                None => full,
            };
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
            listed,
            ..AdminTokens::default()
        })
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Whether these tokens, read at a reload, may take the place of `running`. A file that
    /// lists no token (missing, empty, comments only) may not when tokens are in use: a file
    /// deleted by mistake or caught half-written would lock every operator out of the admin
    /// API. Revoking them all takes an explicit `token = []` (docs/operations.md).
    pub fn may_replace(&self, running: &AdminTokens) -> Result<(), String> {
        if !self.is_empty() || self.listed || running.is_empty() {
            return Ok(());
        }
        Err(format!(
            "the file is missing or lists no token; keeping the {} running admin token(s) (write `token = []` to revoke them all)",
            running.records.len()
        ))
    }

    /// What is remembered of `token`: passed before, failed before, or not seen (one SHA-256).
    pub fn known(&self, token: &str) -> Known {
        let digest = digest(token);
        if let Some(c) = self
            .verified
            .lock()
            .ok()
            .and_then(|m| m.get(&digest).cloned())
        {
            return Known::Valid(c);
        }
        if self.refused.lock().is_ok_and(|r| r.set.contains(&digest)) {
            return Known::Refused;
        }
        Known::Unknown
    }

    /// Checks `token` against every verifier (constant time each; PBKDF2, so call it off the
    /// async workers). The answer is remembered either way.
    pub fn verify(&self, token: &str) -> Option<Caller> {
        match self.known(token) {
            Known::Valid(c) => return Some(c),
            Known::Refused => return None,
            Known::Unknown => {}
        }
        self.checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut found = None;
        for (caller, verifier) in &self.records {
            if verifier.check_password(token.as_bytes()) && found.is_none() {
                found = Some(caller.clone());
            }
        }
        let digest = digest(token);
        match &found {
            Some(c) => {
                if let Ok(mut m) = self.verified.lock() {
                    m.insert(digest, c.clone());
                }
            }
            None => {
                if let Ok(mut r) = self.refused.lock() {
                    r.insert(digest);
                }
            }
        }
        found
    }
}

impl AdminTokens {
    /// Full checks (PBKDF2 over every verifier) done since these tokens were loaded.
    pub fn checks(&self) -> u64 {
        self.checks.load(std::sync::atomic::Ordering::Relaxed)
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
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
        assert_eq!(tokens.known(&view), Known::Unknown);
        assert_eq!(tokens.verify(&view).unwrap().role, Role::Viewer);
        assert!(matches!(tokens.known(&view), Known::Valid(c) if c.name == "grafana"));
        assert_eq!(tokens.verify(&admin).unwrap().role, Role::Admin);
        assert_eq!(tokens.known("tga_wrong"), Known::Unknown);
        assert!(tokens.verify("tga_wrong").is_none());
        assert_eq!(tokens.known("tga_wrong"), Known::Refused);
        assert!(Role::Admin > Role::Viewer);
    }

    #[test]
    fn checks_use_the_login_verifier_and_files_without_one_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin_tokens.toml");
        let token = generate_admin_token();
        let mut f = TokensFile::default();
        f.add("ops", Role::Admin, &token).unwrap();
        let login = f.tokens[0].login_verifier.clone().unwrap();
        assert!(login.starts_with("SCRAM-SHA-256$64:"), "{login}");
        f.save(&path).unwrap();
        assert_eq!(
            AdminTokens::load(&path)
                .unwrap()
                .verify(&token)
                .unwrap()
                .name,
            "ops"
        );
        // A file written before login verifiers existed: the 4096-iteration one is used.
        f.tokens[0].login_verifier = None;
        f.save(&path).unwrap();
        assert!(!std::fs::read_to_string(&path)
            .unwrap()
            .contains("login_verifier"));
        let old = AdminTokens::load(&path).unwrap();
        assert_eq!(old.verify(&token).unwrap().name, "ops");
        assert!(old.verify("tga_wrong").is_none());
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

    #[test]
    fn only_a_file_that_lists_no_token_on_purpose_revokes_the_running_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin_tokens.toml");
        let mut f = TokensFile::default();
        f.add("ops", Role::Admin, &generate_admin_token()).unwrap();
        f.save(&path).unwrap();
        let running = AdminTokens::load(&path).unwrap();
        assert!(running.listed && running.may_replace(&running).is_ok());
        // What a deletion or a truncated write leaves: the running tokens stay.
        let header = "# tollgate admin tokens: written by `tollgate admin-token add`.\n\n";
        for text in [None, Some(""), Some(" \n"), Some(header)] {
            match text {
                None => std::fs::remove_file(&path).unwrap(),
                Some(t) => std::fs::write(&path, t).unwrap(),
            }
            let read = AdminTokens::load(&path).unwrap();
            assert!(read.is_empty() && !read.listed, "{text:?}");
            let why = read.may_replace(&running).unwrap_err();
            assert!(
                why.contains("keeping the 1 running admin token(s)") && why.contains("token = []"),
                "{why}"
            );
            // At startup (nothing running) it means no tokens, as before.
            assert!(read.may_replace(&AdminTokens::default()).is_ok());
        }
        // Written on purpose, by hand or by `save`: every token is revoked.
        std::fs::write(&path, "token = []\n").unwrap();
        assert!(AdminTokens::load(&path)
            .unwrap()
            .may_replace(&running)
            .is_ok());
        TokensFile::default().save(&path).unwrap();
        let none = AdminTokens::load(&path).unwrap();
        assert!(none.is_empty() && none.listed);
        assert!(none.may_replace(&running).is_ok());
    }

    #[test]
    fn a_repeated_wrong_token_costs_a_hash_and_the_memory_of_them_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin_tokens.toml");
        let mut f = TokensFile::default();
        let admin = generate_admin_token();
        f.add("ops", Role::Admin, &admin).unwrap();
        f.save(&path).unwrap();
        let tokens = AdminTokens::load(&path).unwrap();
        assert!(tokens.verify("tga_wrong").is_none());
        // Known from its hash: `verify` answers before any verifier is tried.
        assert_eq!(tokens.known("tga_wrong"), Known::Refused);
        for _ in 0..10 {
            assert!(tokens.verify("tga_wrong").is_none());
        }
        assert_eq!(tokens.checks(), 1, "one PBKDF2 check for eleven tries");
        let mut r = Refused::default();
        for i in 0..MAX_REFUSED + 10 {
            r.insert(digest(&format!("tga_{i}")));
        }
        assert_eq!((r.set.len(), r.order.len()), (MAX_REFUSED, MAX_REFUSED));
        assert!(!r.set.contains(&digest("tga_0")), "the oldest went first");
        assert!(r.set.contains(&digest(&format!("tga_{}", MAX_REFUSED + 9))));
        // A reload starts afresh: a token refused before it may be valid after it.
        let reloaded = AdminTokens::load(&path).unwrap();
        assert_eq!(reloaded.known("tga_wrong"), Known::Unknown);
        assert_eq!(reloaded.verify(&admin).unwrap().name, "ops");
    }
}
