//! The client side of SCRAM-SHA-256 (RFC 5802/7677): tollgate logs in to an upstream with the
//! vaulted user and password, as MongoDB and PostgreSQL speak it. postgres-protocol's client
//! is not used: it always sends an empty user name (right for PostgreSQL, which takes it from
//! the startup packet, wrong for MongoDB, which needs it in `n=`), and it runs PBKDF2 on every
//! login. Here the salted password is kept in memory per (password, salt, iteration count), which
//! never changes while the vaulted password does not: a new server connection costs four HMACs
//! instead of 4096 iterations (1-2 ms of CPU) once the first login to that server is done.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Fewer iterations than this make the salted password cheap to brute-force: MongoDB itself
/// never uses fewer for SCRAM-SHA-256. (PostgreSQL lets an administrator choose fewer, with
/// `scram_iterations`; its logins accept what the server asks, as libpq does.)
const MIN_ITERATIONS: u32 = 4096;
/// A server asking for more would make every login a denial of service on the gateway.
const MAX_ITERATIONS: u32 = 1_000_000;

/// The longest salt accepted, in base64 (768 bytes decoded).
const MAX_SALT_BASE64: usize = 1024;

/// Salted passwords kept at most; the cache is emptied when full (a vault with more upstream
/// logins than this only pays PBKDF2 more often).
const SALTED_CACHE: usize = 256;

/// (SHA-256 of the prepared password, salt, iterations) → salted password.
type SaltedKey = ([u8; 32], Vec<u8>, u32);

fn salted_cache() -> &'static Mutex<HashMap<SaltedKey, [u8; 32]>> {
    static CACHE: OnceLock<Mutex<HashMap<SaltedKey, [u8; 32]>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Whether the salted password for this key is kept (tests).
#[cfg(test)]
fn is_cached(prepared: &[u8], salt: &[u8], iterations: u32) -> bool {
    let key: SaltedKey = (Sha256::digest(prepared).into(), salt.to_vec(), iterations);
    salted_cache()
        .lock()
        .expect("salted cache")
        .contains_key(&key)
}

/// `Hi(password, salt, iterations)`, computed once per key.
fn salted_password(prepared: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let key: SaltedKey = (Sha256::digest(prepared).into(), salt.to_vec(), iterations);
    if let Some(s) = salted_cache().lock().expect("salted cache").get(&key) {
        return *s;
    }
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(prepared, salt, iterations, &mut salted);
    let mut cache = salted_cache().lock().expect("salted cache");
    if cache.len() >= SALTED_CACHE {
        cache.clear();
    }
    cache.insert(key, salted);
    salted
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramClientError {
    #[error("the password cannot be prepared with SASLprep")]
    Saslprep,
    #[error("malformed SCRAM server message: {0}")]
    Malformed(&'static str),
    #[error("the server's SCRAM iteration count {0} is outside the accepted range (at most {MAX_ITERATIONS})")]
    Iterations(u32),
    #[error(
        "the server did not prove it knows the password (wrong server or a man in the middle)"
    )]
    ServerSignature,
    #[error("the server refused the login: {0}")]
    Refused(String),
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// One client-side exchange.
pub struct ScramClient {
    user: String,
    password: String,
    nonce: String,
    client_first_bare: String,
    server_signature: Option<[u8; 32]>,
    /// The fewest iterations accepted from the server.
    min_iterations: u32,
    /// A password SASLprep refuses is used as it is (PostgreSQL's rule) instead of failing
    /// (MongoDB drivers').
    lenient_saslprep: bool,
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClient")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

fn escape_user(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

impl ScramClient {
    pub fn new(user: &str, password: &str) -> ScramClient {
        let mut raw = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let nonce = B64.encode(raw);
        let client_first_bare = format!("n={},r={nonce}", escape_user(user));
        ScramClient {
            user: user.to_string(),
            password: password.to_string(),
            nonce,
            client_first_bare,
            server_signature: None,
            min_iterations: MIN_ITERATIONS,
            lenient_saslprep: false,
        }
    }

    /// A PostgreSQL login: the user name is left empty (the server takes it from the startup
    /// packet), the server's iteration count is accepted from 1, and a password SASLprep
    /// refuses is used as it is, as libpq does.
    pub fn for_postgres(password: &str) -> ScramClient {
        ScramClient {
            min_iterations: 1,
            lenient_saslprep: true,
            ..ScramClient::new("", password)
        }
    }

    /// client-first-message (no channel binding: MongoDB does not offer it).
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// Reads server-first-message and returns client-final-message.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<String, ScramClientError> {
        let text = std::str::from_utf8(server_first)
            .map_err(|_| ScramClientError::Malformed("server-first is not UTF-8"))?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for part in text.split(',') {
            match part.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = Some(v),
                Some(("i", v)) => iterations = Some(v),
                Some(("m", _)) => return Err(ScramClientError::Malformed("mandatory extension")),
                _ => {}
            }
        }
        let nonce = nonce.ok_or(ScramClientError::Malformed("no nonce"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramClientError::Malformed(
                "server nonce does not extend ours",
            ));
        }
        let salt = salt.ok_or(ScramClientError::Malformed("no salt"))?;
        // Servers send 16 (PostgreSQL) or 28 (MongoDB) bytes; a larger one would only fill
        // the salted-password cache.
        if salt.len() > MAX_SALT_BASE64 {
            return Err(ScramClientError::Malformed("salt too long"));
        }
        let salt = B64
            .decode(salt)
            .map_err(|_| ScramClientError::Malformed("salt is not base64"))?;
        let iterations: u32 = iterations
            .ok_or(ScramClientError::Malformed("no iteration count"))?
            .parse()
            .map_err(|_| ScramClientError::Malformed("bad iteration count"))?;
        if !(self.min_iterations..=MAX_ITERATIONS).contains(&iterations) {
            return Err(ScramClientError::Iterations(iterations));
        }
        let prepared = match stringprep::saslprep(&self.password) {
            Ok(p) => p,
            Err(_) if self.lenient_saslprep => std::borrow::Cow::Borrowed(self.password.as_str()),
            Err(_) => return Err(ScramClientError::Saslprep),
        };
        let salted = salted_password(prepared.as_bytes(), &salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature.iter())
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = hmac(&salted, b"Server Key");
        self.server_signature = Some(hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks server-final-message (`v=...`), so a server that does not know the password
    /// cannot pose as the upstream.
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), ScramClientError> {
        let text = std::str::from_utf8(server_final)
            .map_err(|_| ScramClientError::Malformed("server-final is not UTF-8"))?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(ScramClientError::Refused(e.chars().take(100).collect()));
        }
        let v = text
            .split(',')
            .find_map(|p| p.strip_prefix("v="))
            .ok_or(ScramClientError::Malformed("no server signature"))?;
        let got = B64
            .decode(v)
            .map_err(|_| ScramClientError::Malformed("server signature is not base64"))?;
        let want = self.server_signature.ok_or(ScramClientError::Malformed(
            "server-final before server-first",
        ))?;
        if got.len() == 32 && bool::from(got.ct_eq(&want)) {
            Ok(())
        } else {
            Err(ScramClientError::ServerSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scram::{Binding, ScramServer};
    use crate::auth::ScramVerifier;

    #[test]
    fn logs_in_to_tollgates_own_scram_server_and_checks_its_proof() {
        let v = ScramVerifier::derive_with(b"pw", vec![4; 16], 4096);
        let mut c = ScramClient::new("up,user=x", "pw");
        assert!(c.client_first().starts_with("n,,n=up=2Cuser=3Dx,r="));
        let (server, first) =
            ScramServer::start(v.clone(), c.client_first().as_bytes(), Binding::default()).unwrap();
        let fin = c.client_final(first.as_bytes()).unwrap();
        let server_final = server.finish(fin.as_bytes()).unwrap();
        assert_eq!(c.verify_server_final(server_final.as_bytes()), Ok(()));
        assert_eq!(
            c.verify_server_final(b"v=AAAA"),
            Err(ScramClientError::ServerSignature)
        );
        assert!(matches!(
            c.verify_server_final(b"e=other-error"),
            Err(ScramClientError::Refused(_))
        ));

        let mut wrong = ScramClient::new("u", "not-pw");
        let (server, first) =
            ScramServer::start(v, wrong.client_first().as_bytes(), Binding::default()).unwrap();
        let fin = wrong.client_final(first.as_bytes()).unwrap();
        assert!(server.finish(fin.as_bytes()).is_err());
    }

    /// The nonce the client put in its first message.
    fn our_nonce(c: &ScramClient) -> String {
        c.client_first()
            .split_once(",r=")
            .map(|(_, n)| n.to_string())
            .unwrap()
    }

    #[test]
    fn postgres_logins_reuse_the_salted_password_and_still_check_the_password() {
        let salt = b"salt-of-this-test-only".to_vec();
        let v = ScramVerifier::derive_with(b"pg-secret", salt.clone(), 4096);
        let login = |password: &str| {
            let mut c = ScramClient::for_postgres(password);
            assert!(
                c.client_first().starts_with("n,,n=,r="),
                "PostgreSQL's form"
            );
            let (server, first) =
                ScramServer::start(v.clone(), c.client_first().as_bytes(), Binding::default())
                    .unwrap();
            let fin = c.client_final(first.as_bytes()).unwrap();
            let ok = server
                .finish(fin.as_bytes())
                .map(|f| c.verify_server_final(f.as_bytes()).is_ok());
            ok.unwrap_or(false)
        };
        assert!(!is_cached(b"pg-secret", &salt, 4096));
        assert!(login("pg-secret"));
        assert!(
            is_cached(b"pg-secret", &salt, 4096),
            "kept after the first login"
        );
        assert!(login("pg-secret"), "the kept salted password logs in again");
        // Another password has another key: never the kept one.
        assert!(!login("not-the-secret"));
        assert!(!is_cached(b"pg-secret", &salt, 1000));
    }

    #[test]
    fn postgres_accepts_fewer_iterations_and_mongodb_does_not() {
        let mut pg = ScramClient::for_postgres("pw");
        let ours = our_nonce(&pg);
        assert!(pg
            .client_final(format!("r={ours}x,s=AAAA,i=1000").as_bytes())
            .is_ok());
        let mut mongo = ScramClient::new("u", "pw");
        let ours = our_nonce(&mongo);
        assert_eq!(
            mongo
                .client_final(format!("r={ours}x,s=AAAA,i=1000").as_bytes())
                .unwrap_err(),
            ScramClientError::Iterations(1000)
        );
    }

    #[test]
    fn hostile_server_first_messages_are_refused() {
        let mut c = ScramClient::new("u", "pw");
        let ours = our_nonce(&c);
        for (msg, want) in [
            (
                format!("r={ours}x,s=AAAA,i=1"),
                ScramClientError::Iterations(1),
            ),
            (
                format!("r={ours}x,s=AAAA,i=99999999"),
                ScramClientError::Iterations(99_999_999),
            ),
            (
                "r=other,s=AAAA,i=4096".to_string(),
                ScramClientError::Malformed("server nonce does not extend ours"),
            ),
            (
                format!("r={ours},s=AAAA,i=4096"),
                ScramClientError::Malformed("server nonce does not extend ours"),
            ),
            (
                format!("m=x,r={ours}x,s=AAAA,i=4096"),
                ScramClientError::Malformed("mandatory extension"),
            ),
            (
                format!("r={ours}x,s=!!,i=4096"),
                ScramClientError::Malformed("salt is not base64"),
            ),
            (
                format!("r={ours}x,s={},i=4096", "A".repeat(2048)),
                ScramClientError::Malformed("salt too long"),
            ),
        ] {
            assert_eq!(c.client_final(msg.as_bytes()).unwrap_err(), want, "{msg}");
        }
    }
}
