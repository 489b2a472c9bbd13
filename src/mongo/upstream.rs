//! The upstream MongoDB server: connect (TLS unless the upstream's `tls` is `disable`), `hello`
//! (its wire versions and limits, intersected with tollgate's), and log in with the vaulted user
//! by SCRAM-SHA-256 against the configured auth source (`admin` by default). A connection is a
//! plain request/reply channel until the session takes its stream over for relaying.

use std::time::Duration;

use bson::spec::BinarySubtype;
use bson::{doc, Binary, Bson, Document};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::hello::{upstream_hello_command, HelloError, UpstreamFacts};
use super::op_msg::{MsgError, OpMsg};
use super::reply::is_error;
use super::wire::{MessageReader, WireError, MAX_MESSAGE_BYTES};
use crate::auth::scram_client::{ScramClient, ScramClientError};
use crate::tls::{NetStream, UpstreamTls};
use crate::vault::Secret;

/// Where an upstream is and how to log in to it.
pub struct MongoTarget {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// `None` for `tls = "disable"`; otherwise the connection starts with a TLS handshake.
    pub tls: Option<UpstreamTls>,
    /// The database the vaulted user is defined in (`authSource`), usually `admin`.
    pub auth_source: String,
}

/// The vaulted login of a MongoDB upstream.
#[derive(Debug)]
pub struct MongoCredentials {
    pub user: Secret,
    pub password: Secret,
}

impl std::fmt::Debug for MongoTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoTarget")
            .field("name", &self.name)
            .field("addr", &format_args!("{}:{}", self.host, self.port))
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot reach the upstream: {0}")]
    Connect(std::io::Error),
    #[error("the upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("upstream TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("unexpected reply from the upstream: {0}")]
    Protocol(String),
    #[error("{0}")]
    Hello(#[from] HelloError),
    /// The server's code name only: its message could echo what was sent.
    #[error("the upstream refused tollgate's login ({0})")]
    LoginRefused(String),
    #[error("the upstream's SCRAM exchange failed: {0}")]
    Scram(#[from] ScramClientError),
    /// A command answered `ok: 0`: its code name and message.
    #[error("the upstream answered {code_name}: {message}")]
    Command { code_name: String, message: String },
}

impl From<WireError> for UpstreamError {
    fn from(e: WireError) -> UpstreamError {
        UpstreamError::Protocol(e.to_string())
    }
}

impl From<MsgError> for UpstreamError {
    fn from(e: MsgError) -> UpstreamError {
        UpstreamError::Protocol(e.to_string())
    }
}

/// A connection to the upstream that tollgate drives command by command.
pub struct MongoConnection {
    stream: NetStream,
    buf: BytesMut,
    next_id: i32,
    /// From the upstream's `hello`, intersected with tollgate's own range.
    pub facts: UpstreamFacts,
    /// The upstream's `hello` reply as received.
    pub hello: Document,
}

impl MongoTarget {
    /// Connects, says `hello`, and logs in with `credentials` (none: an unauthenticated
    /// connection, for provisioning a test server).
    pub async fn connect(
        &self,
        credentials: Option<&MongoCredentials>,
        timeout: Duration,
    ) -> Result<MongoConnection, UpstreamError> {
        tokio::time::timeout(timeout, self.connect_inner(credentials))
            .await
            .map_err(|_| UpstreamError::Timeout(timeout))?
    }

    async fn connect_inner(
        &self,
        credentials: Option<&MongoCredentials>,
    ) -> Result<MongoConnection, UpstreamError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(UpstreamError::Connect)?;
        tcp.set_nodelay(true).map_err(UpstreamError::Connect)?;
        let stream = match &self.tls {
            Some(tls) => NetStream::from(
                tls.connector()
                    .connect(tls.server_name.clone(), tcp)
                    .await
                    .map_err(UpstreamError::Tls)?,
            ),
            None => NetStream::Plain(tcp),
        };
        let mut conn = MongoConnection {
            stream,
            buf: BytesMut::new(),
            next_id: 1,
            facts: UpstreamFacts::from_hello(&doc! { "maxWireVersion": 6 })?,
            hello: Document::new(),
        };
        let hello = conn.command(&upstream_hello_command("tollgate")).await?;
        if is_error(&hello) {
            return Err(command_error(&hello));
        }
        conn.facts = UpstreamFacts::from_hello(&hello)?;
        conn.hello = hello;
        if let Some(c) = credentials {
            conn.login(c, &self.auth_source).await?;
        }
        Ok(conn)
    }
}

fn command_error(reply: &Document) -> UpstreamError {
    UpstreamError::Command {
        code_name: reply
            .get_str("codeName")
            .unwrap_or("UnknownError")
            .to_string(),
        message: reply
            .get_str("errmsg")
            .unwrap_or("")
            .chars()
            .take(200)
            .collect(),
    }
}

fn payload(reply: &Document) -> Result<&[u8], UpstreamError> {
    match reply.get("payload") {
        Some(Bson::Binary(b)) => Ok(&b.bytes),
        _ => Err(UpstreamError::Protocol(
            "SASL reply without a payload".into(),
        )),
    }
}

fn binary(bytes: Vec<u8>) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Generic,
        bytes,
    })
}

impl MongoConnection {
    /// SCRAM-SHA-256 with the vaulted user against `source`.
    async fn login(&mut self, c: &MongoCredentials, source: &str) -> Result<(), UpstreamError> {
        let refused = |r: &Document| {
            UpstreamError::LoginRefused(r.get_str("codeName").unwrap_or("UnknownError").to_string())
        };
        let mut client = ScramClient::new(c.user.expose(), c.password.expose());
        let start = doc! {
            "saslStart": 1,
            "mechanism": "SCRAM-SHA-256",
            "payload": binary(client.client_first().into_bytes()),
            "options": { "skipEmptyExchange": true },
            "$db": source,
        };
        let r = self.command(&start).await?;
        if is_error(&r) {
            return Err(refused(&r));
        }
        let conversation = r.get("conversationId").cloned().unwrap_or(Bson::Int32(1));
        let fin = client.client_final(payload(&r)?)?;
        let cont = doc! {
            "saslContinue": 1,
            "conversationId": conversation.clone(),
            "payload": binary(fin.into_bytes()),
            "$db": source,
        };
        let mut r = self.command(&cont).await?;
        if is_error(&r) {
            return Err(refused(&r));
        }
        client.verify_server_final(payload(&r)?)?;
        // Servers that ignore skipEmptyExchange want one more, empty, round.
        for _ in 0..2 {
            if r.get_bool("done").unwrap_or(false) {
                return Ok(());
            }
            r = self
                .command(&doc! {
                    "saslContinue": 1,
                    "conversationId": conversation.clone(),
                    "payload": binary(Vec::new()),
                    "$db": source,
                })
                .await?;
            if is_error(&r) {
                return Err(refused(&r));
            }
        }
        Err(UpstreamError::Protocol(
            "SASL conversation did not finish".into(),
        ))
    }

    /// Sends one command as OP_MSG and reads its reply (nothing else may be in flight).
    pub async fn command(&mut self, cmd: &Document) -> Result<Document, UpstreamError> {
        let id = self.send_command(cmd).await?;
        self.read_reply(id).await
    }

    /// Sends a command; its reply is read with [`MongoConnection::read_reply`]. Not
    /// cancel-safe (a message cut short leaves the connection unusable).
    pub async fn send_command(&mut self, cmd: &Document) -> Result<i32, UpstreamError> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let msg = OpMsg::reply(0, id, cmd);
        self.send_raw(&msg.encode(false)).await?;
        Ok(id)
    }

    /// The reply to the command sent as request `id`. Cancel-safe: what was read stays
    /// buffered, so it can be read to its end later (by another task, say).
    pub async fn read_reply(&mut self, id: i32) -> Result<Document, UpstreamError> {
        let reply = self.read_msg().await?;
        if reply.response_to != id {
            return Err(UpstreamError::Protocol(format!(
                "reply to request {} while waiting for {id}",
                reply.response_to
            )));
        }
        Ok(reply.body_document()?)
    }

    /// Writes bytes as they are (a message framed by the caller).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), UpstreamError> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(UpstreamError::Connect)
    }

    /// Reads the next OP_MSG from the upstream.
    pub async fn read_msg(&mut self) -> Result<OpMsg, UpstreamError> {
        loop {
            if let Some(m) =
                MessageReader::<NetStream>::split_message(&mut self.buf, MAX_MESSAGE_BYTES)?
            {
                return Ok(OpMsg::parse(&m)?);
            }
            if self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(UpstreamError::Connect)?
                == 0
            {
                return Err(UpstreamError::Connect(
                    std::io::ErrorKind::UnexpectedEof.into(),
                ));
            }
        }
    }

    /// Hands the stream (and anything read past the last reply) to a relay.
    pub fn into_parts(self) -> (NetStream, BytesMut) {
        (self.stream, self.buf)
    }
}
