//! SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL speaks it, server side, against stored verifiers.
//!
//! Written here rather than taken from pgwire because the proof check must be constant-time
//! (pgwire compares with `==`) and to avoid pulling a second TLS crypto stack into the build.
//! Verified against postgres-protocol's client (tokio-postgres, libpq) in the tests.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const ITERATIONS: u32 = 4096;
/// Iterations of an agent's login verifier. PBKDF2 iterations slow down guessing a *chosen*
/// password from a stolen verifier or a captured exchange; an agent token is 192 random bits,
/// which no iteration count makes easier or harder to guess, so logins use few iterations: a
/// client connecting per transaction does not pay 4096 HMACs each time (nor does tollgate, for
/// a Redis AUTH). The 4096-iteration verifier is kept for clients that insist on it.
pub const LOGIN_ITERATIONS: u32 = 64;
pub const MECHANISM: &str = "SCRAM-SHA-256";
/// SCRAM with channel binding (`tls-server-end-point`), offered on TLS connections only.
pub const MECHANISM_PLUS: &str = "SCRAM-SHA-256-PLUS";
const CHANNEL_BINDING_TYPE: &str = "tls-server-end-point";

/// What the connection settled about channel binding before client-first-message.
#[derive(Debug, Clone, Copy, Default)]
pub struct Binding<'a> {
    /// The client chose SCRAM-SHA-256-PLUS.
    pub plus_selected: bool,
    /// `tls-server-end-point` data when SCRAM-SHA-256-PLUS was offered (TLS connections).
    pub offered: Option<&'a [u8]>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported on this connection")]
    ChannelBindingUnsupported,
    /// The client supports channel binding and believes the server does not, though it was
    /// offered: a downgrade by someone in the middle.
    #[error("SCRAM channel binding negotiation error")]
    Downgrade,
    #[error("password authentication failed")]
    BadProof,
}

/// What is stored per agent: salt, iterations, StoredKey, ServerKey. The token is not recoverable.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    pub salt: Vec<u8>,
    pub iterations: u32,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl std::fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
    out
}

impl ScramVerifier {
    /// A verifier for `password` with a fresh random salt.
    pub fn derive(password: &[u8]) -> ScramVerifier {
        Self::derive_iterations(password, ITERATIONS)
    }

    /// A verifier with a fresh random salt and `iterations` (see [`LOGIN_ITERATIONS`]).
    pub fn derive_iterations(password: &[u8], iterations: u32) -> ScramVerifier {
        let mut salt = vec![0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        ScramVerifier::derive_with(password, salt, iterations)
    }

    pub fn derive_with(password: &[u8], salt: Vec<u8>, iterations: u32) -> ScramVerifier {
        let salted = salted_password(password, &salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        ScramVerifier {
            salt,
            iterations,
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// Checks a plain password (for protocols that send it, such as Redis AUTH). Constant-time.
    pub fn check_password(&self, password: &[u8]) -> bool {
        let other = ScramVerifier::derive_with(password, self.salt.clone(), self.iterations);
        bool::from(
            other.stored_key.ct_eq(&self.stored_key) & other.server_key.ct_eq(&self.server_key),
        )
    }

    pub fn encode(&self) -> String {
        format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }

    pub fn decode(text: &str) -> Result<ScramVerifier, &'static str> {
        Self::decode_min(text, ITERATIONS)
    }

    /// A login verifier of a random token (see [`LOGIN_ITERATIONS`]).
    pub fn decode_login(text: &str) -> Result<ScramVerifier, &'static str> {
        Self::decode_min(text, LOGIN_ITERATIONS)
    }

    fn decode_min(text: &str, min_iterations: u32) -> Result<ScramVerifier, &'static str> {
        let rest = text
            .strip_prefix("SCRAM-SHA-256$")
            .ok_or("must start with SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$').ok_or("missing '$' before the keys")?;
        let (iter, salt) = params.split_once(':').ok_or("missing iterations:salt")?;
        let (stored, server) = keys.split_once(':').ok_or("missing StoredKey:ServerKey")?;
        let iterations: u32 = iter.parse().map_err(|_| "bad iteration count")?;
        if iterations < min_iterations {
            return Err("iteration count too low");
        }
        let key = |s: &str| -> Result<[u8; 32], &'static str> {
            B64.decode(s)
                .map_err(|_| "bad base64")?
                .try_into()
                .map_err(|_| "keys must be 32 bytes")
        };
        Ok(ScramVerifier {
            salt: B64.decode(salt).map_err(|_| "bad base64 salt")?,
            iterations,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }

    /// A stand-in verifier for an unknown agent, so that an unknown name and a wrong token look
    /// alike on the wire (same messages, same salt on every attempt, same failure).
    pub fn mock_for(name: &str, server_secret: &[u8; 32]) -> ScramVerifier {
        Self::mock_with(name, server_secret, ITERATIONS)
    }

    /// [`ScramVerifier::mock_for`] with the iterations of login verifiers.
    pub fn mock_login_for(name: &str, server_secret: &[u8; 32]) -> ScramVerifier {
        Self::mock_with(name, server_secret, LOGIN_ITERATIONS)
    }

    /// The salt depends on the iterations too: a real agent's two verifiers (PostgreSQL's login
    /// one, MongoDB's) have salts of their own, so an unknown name showing one salt on both
    /// doors told it apart (a live review enumerated agents that way).
    fn mock_with(name: &str, server_secret: &[u8; 32], iterations: u32) -> ScramVerifier {
        let mut input = name.as_bytes().to_vec();
        input.push(0);
        input.extend_from_slice(&iterations.to_be_bytes());
        let salt = hmac(server_secret, &input)[..16].to_vec();
        let mut random = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut random);
        ScramVerifier {
            salt,
            iterations,
            stored_key: random,
            server_key: random,
        }
    }
}

/// One server-side SCRAM exchange: `client_first` → server-first, `client_final` → server-final.
pub struct ScramServer {
    verifier: ScramVerifier,
    client_first_bare: String,
    server_first: String,
    gs2_header: String,
    /// Channel-binding data the client must echo (empty without channel binding).
    cb_data: Vec<u8>,
    nonce: String,
}

fn split_attr(part: &str, key: char) -> Result<&str, ScramError> {
    let mut chars = part.chars();
    if chars.next() == Some(key) && chars.next() == Some('=') {
        Ok(&part[2..])
    } else {
        Err(ScramError::Malformed("unexpected attribute"))
    }
}

impl ScramServer {
    /// Handles client-first-message; returns the exchange state and server-first-message.
    pub fn start(
        verifier: ScramVerifier,
        client_first: &[u8],
        binding: Binding<'_>,
    ) -> Result<(ScramServer, String), ScramError> {
        let text =
            std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        // gs2-header: cbind-flag "," [authzid] ","
        let mut parts = text.splitn(3, ',');
        let flag = parts.next().ok_or(ScramError::Malformed("empty"))?;
        let authzid = parts.next().ok_or(ScramError::Malformed("no gs2 header"))?;
        let bare = parts
            .next()
            .ok_or(ScramError::Malformed("no client-first-bare"))?;
        let cb_data = match flag {
            "n" | "y" if binding.plus_selected => {
                return Err(ScramError::Malformed(
                    "SCRAM-SHA-256-PLUS selected without channel binding",
                ))
            }
            "y" if binding.offered.is_some() => return Err(ScramError::Downgrade),
            "n" | "y" => Vec::new(),
            f => match f.strip_prefix("p=") {
                None => return Err(ScramError::Malformed("bad channel binding flag")),
                Some(_) if !binding.plus_selected => {
                    return Err(ScramError::Malformed(
                        "channel binding requested without SCRAM-SHA-256-PLUS",
                    ))
                }
                Some(CHANNEL_BINDING_TYPE) => binding
                    .offered
                    .ok_or(ScramError::ChannelBindingUnsupported)?
                    .to_vec(),
                Some(_) => return Err(ScramError::ChannelBindingUnsupported),
            },
        };
        if !authzid.is_empty() {
            return Err(ScramError::Malformed("authzid is not supported"));
        }
        let mut attrs = bare.split(',');
        // PostgreSQL ignores the SCRAM user name (the startup packet names the user).
        split_attr(attrs.next().ok_or(ScramError::Malformed("no user"))?, 'n')?;
        let client_nonce = split_attr(attrs.next().ok_or(ScramError::Malformed("no nonce"))?, 'r')?;
        if client_nonce.is_empty()
            || !client_nonce
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
        {
            return Err(ScramError::Malformed("bad nonce"));
        }
        let mut server_nonce = [0u8; 18];
        rand::rngs::OsRng.fill_bytes(&mut server_nonce);
        let nonce = format!("{client_nonce}{}", B64.encode(server_nonce));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&verifier.salt),
            verifier.iterations
        );
        let state = ScramServer {
            verifier,
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            gs2_header: format!("{flag},,"),
            cb_data,
            nonce,
        };
        Ok((state, server_first))
    }

    /// Handles client-final-message; on a valid proof returns server-final-message.
    pub fn finish(self, client_final: &[u8]) -> Result<String, ScramError> {
        let text =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut attrs = without_proof.split(',');
        let binding = split_attr(
            attrs
                .next()
                .ok_or(ScramError::Malformed("no channel binding"))?,
            'c',
        )?;
        let nonce = split_attr(attrs.next().ok_or(ScramError::Malformed("no nonce"))?, 'r')?;
        let mut expected = self.gs2_header.clone().into_bytes();
        expected.extend_from_slice(&self.cb_data);
        let expected = B64.encode(expected);
        if !bool::from(binding.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(ScramError::Malformed("channel binding mismatch"));
        }
        if nonce != self.nonce {
            return Err(ScramError::Malformed("nonce mismatch"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("bad proof encoding"))?;
        if proof.len() != 32 {
            return Err(ScramError::BadProof);
        }
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let client_signature = hmac(&self.verifier.stored_key, auth_message.as_bytes());
        let mut client_key = [0u8; 32];
        for (i, b) in client_key.iter_mut().enumerate() {
            *b = proof[i] ^ client_signature[i];
        }
        let candidate: [u8; 32] = Sha256::digest(client_key).into();
        if !bool::from(candidate.ct_eq(&self.verifier.stored_key)) {
            return Err(ScramError::BadProof);
        }
        let server_signature = hmac(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    fn exchange(verifier: ScramVerifier, password: &[u8]) -> Result<(), ScramError> {
        exchange_with(
            verifier,
            password,
            ChannelBinding::unsupported(),
            Binding::default(),
        )
    }

    fn exchange_with(
        verifier: ScramVerifier,
        password: &[u8],
        client_binding: ChannelBinding,
        binding: Binding<'_>,
    ) -> Result<(), ScramError> {
        let mut client = ScramSha256::new(password, client_binding);
        let (server, server_first) = ScramServer::start(verifier, client.message(), binding)?;
        client
            .update(server_first.as_bytes())
            .map_err(|_| ScramError::Malformed("client rejected server-first"))?;
        let server_final = server.finish(client.message())?;
        client
            .finish(server_final.as_bytes())
            .map_err(|_| ScramError::Malformed("client rejected server-final"))
    }

    #[test]
    fn postgres_protocol_client_logs_in_with_the_right_token() {
        let v = ScramVerifier::derive(b"tg_secret");
        assert_eq!(exchange(v, b"tg_secret"), Ok(()));
    }

    #[test]
    fn wrong_token_and_mock_verifier_fail_the_same_way() {
        let v = ScramVerifier::derive(b"tg_secret");
        assert_eq!(exchange(v, b"tg_wrong"), Err(ScramError::BadProof));
        let mock = ScramVerifier::mock_for("ghost", &[3; 32]);
        assert_eq!(
            exchange(mock.clone(), b"anything"),
            Err(ScramError::BadProof)
        );
        assert_eq!(mock.salt, ScramVerifier::mock_for("ghost", &[3; 32]).salt);
        // Like a real agent's two verifiers (one per door), the two stand-ins differ.
        assert_ne!(
            mock.salt,
            ScramVerifier::mock_login_for("ghost", &[3; 32]).salt
        );
    }

    #[test]
    fn channel_binding_tls_server_end_point() {
        let v = ScramVerifier::derive(b"tg_secret");
        let hash = [7u8; 32];
        let plus = Binding {
            plus_selected: true,
            offered: Some(&hash),
        };
        let offered = Binding {
            plus_selected: false,
            offered: Some(&hash),
        };
        // -PLUS with the right certificate hash.
        let cb = ChannelBinding::tls_server_end_point(hash.to_vec());
        assert_eq!(exchange_with(v.clone(), b"tg_secret", cb, plus), Ok(()));
        // A hash of another certificate (a proxy in the middle) fails.
        let cb = ChannelBinding::tls_server_end_point(vec![8u8; 32]);
        assert!(exchange_with(v.clone(), b"tg_secret", cb, plus).is_err());
        // Plain SCRAM over TLS from a client without channel binding ("n") is fine.
        let cb = ChannelBinding::unsupported();
        assert_eq!(exchange_with(v.clone(), b"tg_secret", cb, offered), Ok(()));
        // "y" (client could bind, thinks the server cannot) while -PLUS was offered: downgrade.
        let cb = ChannelBinding::unrequested();
        assert_eq!(
            exchange_with(v.clone(), b"tg_secret", cb, offered),
            Err(ScramError::Downgrade)
        );
        // "y" on a plain connection is fine.
        let cb = ChannelBinding::unrequested();
        assert_eq!(
            exchange_with(v.clone(), b"tg_secret", cb, Binding::default()),
            Ok(())
        );
        // Binding data on a connection that offered none.
        let cb = ChannelBinding::tls_server_end_point(hash.to_vec());
        assert!(exchange_with(v, b"tg_secret", cb, Binding::default()).is_err());
    }

    #[test]
    fn verifier_text_roundtrips_and_matches_postgres_format() {
        let v = ScramVerifier::derive(b"pw");
        let text = v.encode();
        assert!(text.starts_with("SCRAM-SHA-256$4096:"));
        assert_eq!(ScramVerifier::decode(&text).unwrap(), v);
        assert!(ScramVerifier::decode("md5abc").is_err());
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let v = ScramVerifier::derive(b"pw");
        for input in [
            &b""[..],
            b"n",
            b"n,,",
            b"x,,n=,r=abc",
            b"p=tls-server-end-point,,n=,r=a",
            b"n,a=admin,n=,r=a",
            &[0xff, 0xfe],
        ] {
            assert!(
                ScramServer::start(v.clone(), input, Binding::default()).is_err(),
                "{input:?}"
            );
        }
        let (s, _) = ScramServer::start(v, b"n,,n=,r=abcdef", Binding::default()).unwrap();
        assert!(s.finish(b"c=biws,r=wrong,p=AAAA").is_err());
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// Derived once: PBKDF2 with 4096 rounds is slow in debug builds.
    fn verifier() -> ScramVerifier {
        static V: std::sync::OnceLock<ScramVerifier> = std::sync::OnceLock::new();
        V.get_or_init(|| ScramVerifier::derive_with(b"pw", vec![1; 16], 4096))
            .clone()
    }

    proptest! {
        #[test]
        fn arbitrary_scram_messages_never_panic(first in proptest::collection::vec(any::<u8>(), 0..200), fin in proptest::collection::vec(any::<u8>(), 0..200)) {
            let hash = [1u8; 32];
            let binding = Binding { plus_selected: first.first() == Some(&b'p'), offered: Some(&hash) };
            if let Ok((s, _)) = ScramServer::start(verifier(), &first, binding) {
                prop_assert!(s.finish(&fin).is_err());
            }
        }

        #[test]
        fn well_formed_first_messages_with_odd_nonces(nonce in "[!-~]{0,40}") {
            let _ = ScramServer::start(verifier(), format!("n,,n=,r={nonce}").as_bytes(), Binding::default());
        }
    }
}
