//! A hand-driven MongoDB wire client for tests that send what no driver would (duplicate keys,
//! bad checksums, oversized or compressed messages, other sessions' cursor ids): SCRAM-SHA-256
//! login with tollgate's own SCRAM client, then OP_MSG messages as raw bytes.

use bson::spec::BinarySubtype;
use bson::{doc, Binary, Bson, Document};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate::auth::scram_client::ScramClient;
use tollgate::mongo::wire::{MessageReader, MAX_MESSAGE_BYTES};
use tollgate::mongo::OpMsg;

pub struct RawMongo {
    pub stream: TcpStream,
    buf: BytesMut,
    next: i32,
}

fn binary(bytes: Vec<u8>) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Generic,
        bytes,
    })
}

impl RawMongo {
    pub async fn connect(port: u16) -> RawMongo {
        RawMongo {
            stream: TcpStream::connect(("127.0.0.1", port)).await.unwrap(),
            buf: BytesMut::new(),
            next: 1,
        }
    }

    /// Connects and logs in as `agent`; panics if the login fails.
    pub async fn login(port: u16, agent: &str, token: &str) -> RawMongo {
        let mut c = RawMongo::connect(port).await;
        let r = c.try_login(agent, token).await;
        assert_eq!(r.get_bool("done").ok(), Some(true), "login: {r:?}");
        c
    }

    /// hello, saslStart, saslContinue; returns the last reply (an error on failure).
    pub async fn try_login(&mut self, agent: &str, token: &str) -> Document {
        let h = self.command(doc! { "hello": 1, "$db": "admin" }).await;
        assert_eq!(h.get_bool("isWritablePrimary").ok(), Some(true), "{h:?}");
        let mut scram = ScramClient::new(agent, token);
        let r = self
            .command(doc! {
                "saslStart": 1, "mechanism": "SCRAM-SHA-256",
                "payload": binary(scram.client_first().into_bytes()),
                "options": { "skipEmptyExchange": true }, "$db": "shop",
            })
            .await;
        let Ok(first) = r.get_binary_generic("payload") else {
            return r;
        };
        let fin = scram.client_final(first).unwrap();
        self.command(doc! {
            "saslContinue": 1, "conversationId": 1,
            "payload": binary(fin.into_bytes()), "$db": "shop",
        })
        .await
    }

    pub fn next_id(&mut self) -> i32 {
        self.next += 1;
        self.next
    }

    /// Sends one command and reads its reply.
    pub async fn command(&mut self, cmd: Document) -> Document {
        let id = self.next_id();
        let bytes = OpMsg::reply(0, id, &cmd).encode(false);
        self.raw(&bytes).await
    }

    /// Sends one command and reads its reply; `None` when the connection is closed.
    pub async fn try_command(&mut self, cmd: Document) -> Option<Document> {
        let id = self.next_id();
        let bytes = OpMsg::reply(0, id, &cmd).encode(false);
        self.stream.write_all(&bytes).await.ok()?;
        self.read().await
    }

    /// Sends raw bytes (a whole message) and reads one reply.
    pub async fn raw(&mut self, bytes: &[u8]) -> Document {
        self.stream.write_all(bytes).await.unwrap();
        self.read().await.expect("a reply")
    }

    /// The next reply, or `None` when the connection closed.
    pub async fn read(&mut self) -> Option<Document> {
        loop {
            if let Some(m) =
                MessageReader::<TcpStream>::split_message(&mut self.buf, MAX_MESSAGE_BYTES).unwrap()
            {
                if m.header.op_code == tollgate::mongo::OpCode::Reply {
                    return Some(tollgate::mongo::op_query::parse_reply(&m).unwrap());
                }
                return Some(OpMsg::parse(&m).unwrap().body_document().unwrap());
            }
            let n = tokio::time::timeout(
                std::time::Duration::from_secs(20),
                self.stream.read_buf(&mut self.buf),
            )
            .await
            .expect("a reply within 20 s")
            .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }
}

/// A whole OP_MSG from a body given as raw BSON bytes (which may be invalid or ambiguous).
pub fn op_msg_with_raw_body(request_id: i32, flags: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let len = 16 + 4 + 1 + body.len();
    out.extend_from_slice(&(len as i32).to_le_bytes());
    out.extend_from_slice(&request_id.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&2013i32.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.push(0);
    out.extend_from_slice(body);
    out
}

/// BSON bytes of a document whose elements are given as (type byte, key, value bytes): lets
/// a test write duplicate keys or invalid strings.
pub fn raw_document(elements: &[(u8, &str, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (t, k, v) in elements {
        body.push(*t);
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v);
    }
    let mut out = ((body.len() + 5) as i32).to_le_bytes().to_vec();
    out.extend_from_slice(&body);
    out.push(0);
    out
}

/// A BSON string value's bytes.
pub fn bson_str(s: &[u8]) -> Vec<u8> {
    let mut v = ((s.len() + 1) as i32).to_le_bytes().to_vec();
    v.extend_from_slice(s);
    v.push(0);
    v
}

/// Commands an analyst may try, each with the rule that must refuse it (the wire test runs them
/// all; the MCP test those the `find`/`aggregate` tools can express).
pub fn adversarial() -> Vec<(&'static str, Document, &'static str)> {
    let db = |mut d: Document| {
        d.insert("$db", "shop");
        d
    };
    vec![
        ("secrets", db(doc! { "find": "secrets" }), "default-deny"),
        (
            "write",
            db(doc! { "insert": "orders", "documents": [ { "_id": -1 } ] }),
            "default-deny",
        ),
        (
            "delete",
            db(doc! { "delete": "orders", "deletes": [ { "q": {}, "limit": 0 } ] }),
            "default-deny",
        ),
        (
            "lookup secrets",
            db(
                doc! { "aggregate": "orders", "pipeline": [ { "$lookup": { "from": "secrets", "pipeline": [], "as": "s" } } ], "cursor": {} },
            ),
            "default-deny",
        ),
        (
            "unionWith",
            db(
                doc! { "aggregate": "orders", "pipeline": [ { "$unionWith": "secrets" } ], "cursor": {} },
            ),
            "default-deny",
        ),
        (
            "graphLookup",
            db(
                doc! { "aggregate": "orders", "pipeline": [ { "$graphLookup": { "from": "secrets", "startWith": "$x", "connectFromField": "a", "connectToField": "b", "as": "g" } } ], "cursor": {} },
            ),
            "default-deny",
        ),
        (
            "facet lookup",
            db(
                doc! { "aggregate": "orders", "pipeline": [ { "$facet": { "x": [ { "$lookup": { "from": "secrets", "localField": "a", "foreignField": "b", "as": "s" } } ] } } ], "cursor": {} },
            ),
            "default-deny",
        ),
        (
            "out",
            db(doc! { "aggregate": "orders", "pipeline": [ { "$out": "copy" } ], "cursor": {} }),
            "default-deny",
        ),
        (
            "merge",
            db(
                doc! { "aggregate": "customers", "pipeline": [ { "$merge": { "into": "orders" } } ], "cursor": {} },
            ),
            "default-deny",
        ),
        (
            "where",
            db(doc! { "find": "orders", "filter": { "$where": "true" } }),
            "builtin: javascript",
        ),
        (
            "function",
            db(
                doc! { "aggregate": "orders", "pipeline": [ { "$addFields": { "x": { "$function": { "body": "function(){return 1}", "args": [], "lang": "js" } } } } ], "cursor": {} },
            ),
            "builtin: javascript",
        ),
        (
            "mapReduce",
            db(
                doc! { "mapReduce": "orders", "map": "function(){}", "reduce": "function(){}", "out": { "inline": 1 } },
            ),
            "builtin: javascript",
        ),
        (
            "regex on masked",
            db(doc! { "find": "customers", "filter": { "email": { "$regex": "^a" } } }),
            "analyst: collection shop.customers",
        ),
        (
            "sort by masked",
            db(doc! { "find": "customers", "sort": { "ssn": 1 } }),
            "analyst: collection shop.customers",
        ),
        (
            "group by masked",
            db(
                doc! { "aggregate": "customers", "pipeline": [ { "$group": { "_id": "$email" } } ], "cursor": {} },
            ),
            "analyst: collection shop.customers",
        ),
        (
            "concat masked",
            db(
                doc! { "aggregate": "customers", "pipeline": [ { "$project": { "x": { "$concat": ["$email", "!"] } } } ], "cursor": {} },
            ),
            "analyst: collection shop.customers",
        ),
        (
            "getField",
            db(
                doc! { "aggregate": "customers", "pipeline": [ { "$project": { "x": { "$getField": "ssn" } } } ], "cursor": {} },
            ),
            "analyst: collection shop.customers",
        ),
        (
            "objectToArray ROOT",
            db(
                doc! { "aggregate": "customers", "pipeline": [ { "$project": { "x": { "$objectToArray": "$$ROOT" } } } ], "cursor": {} },
            ),
            "analyst: collection shop.customers",
        ),
        (
            "replaceRoot",
            db(
                doc! { "aggregate": "customers", "pipeline": [ { "$replaceRoot": { "newRoot": { "e": "$email" } } } ], "cursor": {} },
            ),
            "analyst: collection shop.customers",
        ),
        (
            "createUser",
            doc! { "createUser": "x", "pwd": "y", "roles": [], "$db": "admin" },
            "builtin: admin-command",
        ),
        (
            "dropUser tollgate",
            doc! { "dropUser": "tollgate", "$db": "admin" },
            "builtin: admin-command",
        ),
        (
            "grantRoles",
            doc! { "grantRolesToUser": "tollgate", "roles": ["root"], "$db": "admin" },
            "builtin: admin-command",
        ),
        ("eval", db(doc! { "eval": "1" }), "builtin: admin-command"),
        (
            "applyOps",
            doc! { "applyOps": [], "$db": "admin" },
            "builtin: admin-command",
        ),
        (
            "shutdown",
            doc! { "shutdown": 1, "$db": "admin" },
            "builtin: admin-command",
        ),
        (
            "setParameter",
            doc! { "setParameter": 1, "logLevel": 5, "$db": "admin" },
            "builtin: admin-command",
        ),
        (
            "getLog",
            doc! { "getLog": "global", "$db": "admin" },
            "builtin: admin-command",
        ),
        (
            "currentOp",
            doc! { "currentOp": 1, "$db": "admin" },
            "builtin: admin-command",
        ),
        (
            "killOp",
            doc! { "killOp": 1, "op": 1, "$db": "admin" },
            "builtin: admin-command",
        ),
        (
            "fsync",
            doc! { "fsync": 1, "lock": true, "$db": "admin" },
            "builtin: admin-command",
        ),
        (
            "re-auth",
            doc! { "saslStart": 1, "mechanism": "SCRAM-SHA-256", "$db": "admin" },
            "builtin: admin-command",
        ),
        (
            "rename across dbs",
            doc! { "renameCollection": "shop.orders", "to": "other.orders", "$db": "admin" },
            "builtin: admin-command",
        ),
        (
            "users collection",
            doc! { "find": "system.users", "$db": "admin" },
            "builtin: reserved-namespace",
        ),
        (
            "oplog",
            doc! { "find": "oplog.rs", "$db": "local" },
            "builtin: reserved-namespace",
        ),
        (
            "case variant",
            db(doc! { "FIND": "secrets" }),
            "builtin: admin-command",
        ),
        ("drop", db(doc! { "drop": "orders" }), "default-deny"),
        (
            "createIndexes",
            db(
                doc! { "createIndexes": "customers", "indexes": [ { "key": { "ssn": 1 }, "name": "s", "partialFilterExpression": { "ssn": { "$gt": "5" } } } ] },
            ),
            "default-deny",
        ),
        (
            "foreign cursor",
            db(doc! { "getMore": 4242i64, "collection": "orders" }),
            "builtin: foreign-cursor",
        ),
        (
            "unknown operator",
            db(doc! { "find": "orders", "filter": { "a": { "$frobnicate": 1 } } }),
            "builtin: not-understood",
        ),
        (
            "no $db",
            doc! { "find": "orders" },
            "builtin: malformed-command",
        ),
    ]
}
