//! The login phase of a MongoDB connection, as a state machine without sockets: the session
//! feeds it each message until an agent is authenticated. It answers the handshake (legacy
//! OP_QUERY and OP_MSG `hello`, with `speculativeAuthenticate` taken up), runs SCRAM-SHA-256
//! over `saslStart`/`saslContinue`, answers `ping` and `endSessions`, and refuses everything
//! else with Unauthorized 13 until the login succeeds. Malformed input gets an error and the
//! connection is closed.

use bson::{doc, Document};

use super::hello::{hello_reply, is_hello, UpstreamFacts};
use super::op_msg::{MsgError, OpMsg};
use super::op_query;
use super::reply::{self, code};
use super::sasl::{SaslLogin, SaslStep};
use super::wire::{Message, OpCode};
use crate::auth::ScramVerifier;

/// What to do after one message of the login phase.
#[derive(Debug, PartialEq)]
pub enum LoginOutcome {
    /// Write these bytes (empty: the client asked for no reply) and read on.
    Reply(Vec<u8>),
    /// Write `reply`: `agent` is authenticated. The session goes on to the upstream.
    Authenticated {
        agent: String,
        reply: Vec<u8>,
        /// The request this answers (a refusal at admission answers it instead).
        request_id: i32,
    },
    /// Write `reply` (AuthenticationFailed) and read on: a login as `user` failed (recorded by
    /// the session).
    Failed { user: String, reply: Vec<u8> },
    /// Write `reply` and close the connection (a protocol error).
    Close(Vec<u8>),
}

/// One connection's login state.
pub struct LoginPhase {
    facts: UpstreamFacts,
    connection_id: i64,
    sasl: Option<Box<SaslLogin>>,
    next_id: i32,
}

fn strip_ok(mut d: Document) -> Document {
    d.remove("ok");
    d
}

impl LoginPhase {
    /// `facts`: the upstream's limits and wire versions (learned when the gateway started);
    /// `connection_id`: what `hello` reports as `connectionId`.
    pub fn new(facts: UpstreamFacts, connection_id: i64) -> LoginPhase {
        LoginPhase {
            facts,
            connection_id,
            sasl: None,
            next_id: 1,
        }
    }

    /// The request id for the next message tollgate writes on this connection.
    pub fn next_request_id(&mut self) -> i32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// Handles one message. `verifier_of` finds an agent's verifier; `mock` builds the
    /// stand-in for unknown names (so they fail like wrong tokens); `now` is `hello`'s
    /// `localTime`.
    pub fn handle(
        &mut self,
        msg: &Message,
        now: bson::DateTime,
        verifier_of: impl FnOnce(&str) -> Option<ScramVerifier>,
        mock: impl FnOnce(&str) -> ScramVerifier,
    ) -> LoginOutcome {
        if msg.header.op_code == OpCode::Query {
            let id = self.next_request_id();
            return match op_query::parse_handshake(msg) {
                Ok(h) => {
                    let r = hello_reply(&h.command, &self.facts, self.connection_id, now, None);
                    LoginOutcome::Reply(op_query::encode_reply(id, h.request_id, &r))
                }
                Err(e) => {
                    let r =
                        doc! { "$err": e.to_string(), "code": code::PROTOCOL_ERROR.0, "ok": 0.0 };
                    LoginOutcome::Close(op_query::encode_reply(id, msg.header.request_id, &r))
                }
            };
        }
        let parsed = OpMsg::parse(msg).and_then(|m| m.body_document().map(|b| (m, b)));
        let (m, body) = match parsed {
            Ok(x) => x,
            Err(e) => {
                let c = match e {
                    MsgError::Bson(_) => code::INVALID_BSON,
                    _ => code::PROTOCOL_ERROR,
                };
                let id = self.next_request_id();
                let r = reply::error(c, format!("tollgate: {e}"));
                return LoginOutcome::Close(
                    OpMsg::reply(msg.header.request_id, id, &r).encode(false),
                );
            }
        };
        let name = body.keys().next().cloned().unwrap_or_default();
        let mut agent = None;
        let mut failed: Option<String> = None;
        let user_of = |cmd: &Document| match cmd.get("payload") {
            Some(bson::Bson::Binary(b)) => super::sasl::scram_user(&b.bytes).unwrap_or_default(),
            _ => String::new(),
        };
        let answer = if is_hello(&name) {
            let mut spec = None;
            if let Ok(s) = body.get_document("speculativeAuthenticate") {
                // Declined (no field in the reply) unless the start is well formed; the
                // driver then authenticates with saslStart.
                if let SaslStep::Continue(l, r) = SaslLogin::start(s, verifier_of, mock) {
                    self.sasl = Some(l);
                    spec = Some(strip_ok(r));
                }
            }
            hello_reply(&body, &self.facts, self.connection_id, now, spec)
        } else {
            match name.as_str() {
                "saslStart" => match SaslLogin::start(&body, verifier_of, mock) {
                    SaslStep::Continue(l, r) => {
                        self.sasl = Some(l);
                        r
                    }
                    SaslStep::Done { reply, .. } | SaslStep::Failed(reply) => {
                        failed = Some(user_of(&body));
                        reply
                    }
                },
                "saslContinue" => {
                    let user = self.sasl.as_ref().map(|l| l.agent().to_string());
                    match self.sasl.take().map(|l| l.next(&body)) {
                        Some(SaslStep::Continue(l, r)) => {
                            self.sasl = Some(l);
                            r
                        }
                        Some(SaslStep::Done { agent: a, reply }) => {
                            agent = Some(a);
                            reply
                        }
                        Some(SaslStep::Failed(r)) => {
                            failed = user;
                            r
                        }
                        None => {
                            failed = Some(String::new());
                            reply::error(code::AUTHENTICATION_FAILED, super::sasl::AUTH_FAILED)
                        }
                    }
                }
                "ping" => reply::ok(Document::new()),
                "endSessions" => reply::ok(Document::new()),
                other => reply::error(
                    code::UNAUTHORIZED,
                    format!("command {other} requires authentication"),
                ),
            }
        };
        let id = self.next_request_id();
        let bytes = if m.more_to_come() {
            Vec::new()
        } else {
            OpMsg::reply(m.request_id, id, &answer).encode(false)
        };
        match (agent, failed) {
            (Some(agent), _) => LoginOutcome::Authenticated {
                agent,
                reply: bytes,
                request_id: m.request_id,
            },
            (None, Some(user)) => LoginOutcome::Failed { user, reply: bytes },
            (None, None) => LoginOutcome::Reply(bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mongo::op_msg::tests::frame;
    use bson::doc;

    fn facts() -> UpstreamFacts {
        UpstreamFacts::from_hello(
            &doc! { "maxWireVersion": 21, "logicalSessionTimeoutMinutes": 30 },
        )
        .unwrap()
    }

    fn reply_doc(bytes: &[u8]) -> Document {
        OpMsg::parse(&frame(bytes).unwrap())
            .unwrap()
            .body_document()
            .unwrap()
    }

    fn msg(d: Document) -> Message {
        frame(&OpMsg::reply(0, 9, &d).encode(false)).unwrap()
    }

    #[test]
    fn handshake_then_refusals_until_login() {
        let mut p = LoginPhase::new(facts(), 3);
        let now = bson::DateTime::from_millis(0);
        let none = |_: &str| None;
        let mock = |n: &str| ScramVerifier::mock_for(n, &[1; 32]);
        let q = frame(&op_query::encode_query(
            1,
            "admin.$cmd",
            &doc! { "isMaster": 1 },
        ))
        .unwrap();
        let LoginOutcome::Reply(r) = p.handle(&q, now, none, mock) else {
            panic!()
        };
        let hello = op_query::parse_reply(&frame(&r).unwrap()).unwrap();
        assert_eq!(hello.get_bool("ismaster").ok(), Some(true));
        let LoginOutcome::Reply(r) = p.handle(
            &msg(doc! { "find": "orders", "$db": "shop" }),
            now,
            none,
            mock,
        ) else {
            panic!()
        };
        assert_eq!(reply_doc(&r).get_i32("code").ok(), Some(13));
        let LoginOutcome::Reply(r) =
            p.handle(&msg(doc! { "ping": 1, "$db": "admin" }), now, none, mock)
        else {
            panic!()
        };
        assert!(!reply::is_error(&reply_doc(&r)));
        let LoginOutcome::Failed { reply: r, .. } = p.handle(&msg(doc! { "saslContinue": 1, "conversationId": 1, "payload": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: vec![] }, "$db": "admin" }), now, none, mock) else { panic!() };
        assert_eq!(reply_doc(&r).get_i32("code").ok(), Some(18));
        // A legacy query that is not a handshake closes the connection.
        let bad = frame(&op_query::encode_query(
            2,
            "shop.orders",
            &doc! { "find": 1 },
        ))
        .unwrap();
        assert!(matches!(
            p.handle(&bad, now, none, mock),
            LoginOutcome::Close(_)
        ));
    }
}
