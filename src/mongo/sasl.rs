//! Agent login over `saslStart` / `saslContinue` (and `speculativeAuthenticate` in `hello`):
//! SCRAM-SHA-256 with the agent's token as password, checked against the agent's stored
//! verifier by the same `auth::ScramServer` the PostgreSQL front end uses (RFC 7677 math is the
//! same; MongoDB's SCRAM-SHA-256 SASLprep's the password and uses it directly). Unlike
//! PostgreSQL, MongoDB clients put the user name in `n=`: that is the agent's name. An unknown
//! name gets a mock verifier, so it fails exactly like a wrong token (AuthenticationFailed 18).

use bson::spec::BinarySubtype;
use bson::{doc, Binary, Bson, Document};

use super::reply::{self, code};
use crate::auth::scram::{Binding, ScramServer, MECHANISM};
use crate::auth::ScramVerifier;

/// What the client is told on any failure: nothing about which step or why.
pub const AUTH_FAILED: &str = "Authentication failed.";
const CONVERSATION_ID: i32 = 1;

/// A login in progress after `saslStart` (or a speculative start in `hello`).
pub struct SaslLogin {
    agent: String,
    phase: Phase,
    skip_empty_exchange: bool,
}

enum Phase {
    /// Waiting for client-final.
    Proof(Box<ScramServer>),
    /// Proof accepted, server-final sent with `done: false`: waiting for the empty exchange.
    Final,
}

/// The result of one step.
pub enum SaslStep {
    /// Send `reply`; the login goes on.
    Continue(Box<SaslLogin>, Document),
    /// Send `reply`; the agent is authenticated.
    Done { agent: String, reply: Document },
    /// Send `reply` (AuthenticationFailed); the login is over.
    Failed(Document),
}

fn failed() -> SaslStep {
    SaslStep::Failed(reply::error(code::AUTHENTICATION_FAILED, AUTH_FAILED))
}

fn payload(cmd: &Document) -> Option<&[u8]> {
    match cmd.get("payload")? {
        Bson::Binary(b) => Some(&b.bytes),
        _ => None,
    }
}

fn binary(bytes: Vec<u8>) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Generic,
        bytes,
    })
}

/// The user name of a SCRAM client-first-message (`n,,n=NAME,r=...`), `=2C`/`=3D` decoded.
pub fn scram_user(client_first: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(client_first).ok()?;
    let mut parts = text.splitn(3, ',');
    let (_flag, _authzid, bare) = (parts.next()?, parts.next()?, parts.next()?);
    let name = bare.split(',').next()?.strip_prefix("n=")?;
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

impl SaslLogin {
    /// Handles `saslStart` (or the `speculativeAuthenticate` document of a `hello`).
    /// `verifier_of` finds the agent's verifier; `mock` builds the stand-in for unknown names.
    pub fn start(
        cmd: &Document,
        verifier_of: impl FnOnce(&str) -> Option<ScramVerifier>,
        mock: impl FnOnce(&str) -> ScramVerifier,
    ) -> SaslStep {
        if cmd.get_str("mechanism").ok() != Some(MECHANISM) {
            return SaslStep::Failed(reply::error(
                code::MECHANISM_UNAVAILABLE,
                "tollgate supports SCRAM-SHA-256 only (authMechanism=SCRAM-SHA-256)",
            ));
        }
        let Some(first) = payload(cmd) else {
            return failed();
        };
        let Some(agent) = scram_user(first) else {
            return failed();
        };
        let verifier = verifier_of(&agent).unwrap_or_else(|| mock(&agent));
        let skip_empty_exchange = cmd
            .get_document("options")
            .ok()
            .and_then(|o| o.get_bool("skipEmptyExchange").ok())
            .unwrap_or(false);
        match ScramServer::start(verifier, first, Binding::default()) {
            Ok((server, server_first)) => SaslStep::Continue(
                Box::new(SaslLogin {
                    agent,
                    phase: Phase::Proof(Box::new(server)),
                    skip_empty_exchange,
                }),
                doc! {
                    "conversationId": CONVERSATION_ID,
                    "done": false,
                    "payload": binary(server_first.into_bytes()),
                    "ok": 1.0,
                },
            ),
            Err(_) => failed(),
        }
    }

    /// Handles `saslContinue`.
    pub fn next(self, cmd: &Document) -> SaslStep {
        let id_ok = matches!(
            cmd.get("conversationId"),
            Some(Bson::Int32(CONVERSATION_ID))
        ) || matches!(cmd.get("conversationId"), Some(Bson::Int64(1)));
        let Some(data) = payload(cmd).filter(|_| id_ok) else {
            return failed();
        };
        match self.phase {
            Phase::Proof(server) => match (*server).finish(data) {
                Ok(server_final) => {
                    let reply = doc! {
                        "conversationId": CONVERSATION_ID,
                        "done": self.skip_empty_exchange,
                        "payload": binary(server_final.into_bytes()),
                        "ok": 1.0,
                    };
                    if self.skip_empty_exchange {
                        SaslStep::Done {
                            agent: self.agent,
                            reply,
                        }
                    } else {
                        SaslStep::Continue(
                            Box::new(SaslLogin {
                                phase: Phase::Final,
                                ..self
                            }),
                            reply,
                        )
                    }
                }
                Err(_) => failed(),
            },
            Phase::Final if data.is_empty() => SaslStep::Done {
                agent: self.agent,
                reply: doc! {
                    "conversationId": CONVERSATION_ID,
                    "done": true,
                    "payload": binary(Vec::new()),
                    "ok": 1.0,
                },
            },
            Phase::Final => failed(),
        }
    }

    pub fn agent(&self) -> &str {
        &self.agent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scram_client::ScramClient;

    fn verifier() -> ScramVerifier {
        static V: std::sync::OnceLock<ScramVerifier> = std::sync::OnceLock::new();
        V.get_or_init(|| ScramVerifier::derive_with(b"tg_token", vec![9; 16], 4096))
            .clone()
    }

    fn lookup(name: &str) -> Option<ScramVerifier> {
        (name == "analyst").then(verifier)
    }

    fn mock(name: &str) -> ScramVerifier {
        ScramVerifier::mock_for(name, &[5; 32])
    }

    /// Runs a whole login as a driver would; returns the agent or the final error document.
    fn login(user: &str, password: &str, skip_empty: bool) -> Result<String, Document> {
        let mut client = ScramClient::new(user, password);
        let start = doc! {
            "saslStart": 1, "mechanism": "SCRAM-SHA-256",
            "payload": binary(client.client_first().into_bytes()),
            "options": { "skipEmptyExchange": skip_empty }, "$db": "shop",
        };
        let (login, r) = match SaslLogin::start(&start, lookup, mock) {
            SaslStep::Continue(l, r) => (l, r),
            SaslStep::Failed(e) => return Err(e),
            SaslStep::Done { .. } => panic!("done too early"),
        };
        let server_first = payload(&r).unwrap().to_vec();
        let fin = client
            .client_final(&server_first)
            .expect("server-first well formed");
        let cont = doc! { "saslContinue": 1, "conversationId": 1, "payload": binary(fin.into_bytes()), "$db": "shop" };
        match login.next(&cont) {
            SaslStep::Done { agent, reply } => {
                client
                    .verify_server_final(payload(&reply).unwrap())
                    .expect("server proof");
                Ok(agent)
            }
            SaslStep::Continue(login, reply) => {
                assert_eq!(reply.get_bool("done").ok(), Some(false));
                client
                    .verify_server_final(payload(&reply).unwrap())
                    .expect("server proof");
                let empty =
                    doc! { "saslContinue": 1, "conversationId": 1, "payload": binary(vec![]) };
                match login.next(&empty) {
                    SaslStep::Done { agent, reply } => {
                        assert_eq!(reply.get_bool("done").ok(), Some(true));
                        Ok(agent)
                    }
                    SaslStep::Failed(e) => Err(e),
                    SaslStep::Continue(..) => panic!("a third round"),
                }
            }
            SaslStep::Failed(e) => Err(e),
        }
    }

    #[test]
    fn right_token_logs_in_with_or_without_the_empty_exchange() {
        assert_eq!(login("analyst", "tg_token", true).unwrap(), "analyst");
        assert_eq!(login("analyst", "tg_token", false).unwrap(), "analyst");
    }

    #[test]
    fn wrong_token_and_unknown_agent_fail_identically() {
        let wrong = login("analyst", "tg_wrong", true).unwrap_err();
        let ghost = login("ghost", "tg_token", true).unwrap_err();
        assert_eq!(wrong, ghost);
        assert_eq!(wrong.get_i32("code").ok(), Some(18));
        assert_eq!(wrong.get_str("errmsg").ok(), Some(AUTH_FAILED));
    }

    #[test]
    fn odd_starts_fail_cleanly() {
        let plain =
            doc! { "saslStart": 1, "mechanism": "PLAIN", "payload": binary(b"\0a\0b".to_vec()) };
        assert!(
            matches!(SaslLogin::start(&plain, lookup, mock), SaslStep::Failed(d) if d.get_i32("code").ok() == Some(334))
        );
        for p in [&b""[..], b"n,,", b"n,,r=abc", b"n,,n=a=ZZ,r=x", &[0xff]] {
            let cmd = doc! { "saslStart": 1, "mechanism": "SCRAM-SHA-256", "payload": binary(p.to_vec()) };
            assert!(
                matches!(SaslLogin::start(&cmd, lookup, mock), SaslStep::Failed(_)),
                "{p:?}"
            );
        }
        let no_payload =
            doc! { "saslStart": 1, "mechanism": "SCRAM-SHA-256", "payload": "n,,n=a,r=b" };
        assert!(matches!(
            SaslLogin::start(&no_payload, lookup, mock),
            SaslStep::Failed(_)
        ));
    }

    #[test]
    fn user_names_are_unescaped() {
        assert_eq!(scram_user(b"n,,n=a=2Cb=3Dc,r=x").as_deref(), Some("a,b=c"));
        assert_eq!(scram_user(b"n,,n=analyst,r=x").as_deref(), Some("analyst"));
        assert_eq!(scram_user(b"n,,r=x"), None);
    }
}
