//! The upstream Redis: connecting and logging in with the vaulted password (and ACL user), and
//! learning its command table once (`COMMAND`).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::command::encode_command;
use super::scan::ReplyScanner;
use crate::policy::redis::CommandTable;
use crate::tls::{NetStream, UpstreamTls};
use crate::vault::Secret;

/// A Redis upstream as the gateway knows it.
pub struct RedisTarget {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// `None` for `tls = "disable"`; otherwise the connection starts with a TLS handshake.
    pub tls: Option<UpstreamTls>,
    /// From the vault; swapped when the vault is reloaded.
    pub credentials: ArcSwap<RedisCredentials>,
    /// Learned from the upstream at start (or at the first session if it was down then).
    pub table: ArcSwapOption<CommandTable>,
    /// Which upstream connections are tollgate's sessions', and whose.
    pub clients: Arc<super::clients::UpstreamClients>,
    /// The connections sessions share until they need one of their own.
    pub shared: super::shared::SharedUpstream,
}

/// The login of a Redis upstream.
#[derive(Debug)]
pub struct RedisCredentials {
    /// ACL user; `default` means `AUTH password` (a `requirepass` server).
    pub user: Secret,
    pub password: Secret,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget")
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
    /// The upstream's own error line, which never contains the password.
    #[error("the upstream refused tollgate's login: {0}")]
    LoginRefused(String),
    #[error("unexpected reply from the upstream: {0}")]
    Protocol(String),
    #[error("upstream TLS handshake failed: {0}")]
    Tls(std::io::Error),
}

/// What the readiness probe says about a login the upstream refused, from its error line's
/// code: only a refusal of the credentials is called one (a full or loading server must not
/// send an operator to rotate a good password).
pub fn login_refusal(line: &str) -> String {
    let code = line
        .trim_start_matches('-')
        .split_whitespace()
        .next()
        .unwrap_or("ERR");
    let lower = line.to_ascii_lowercase();
    if matches!(code, "WRONGPASS" | "NOAUTH" | "NOPERM")
        || lower.contains("invalid password")
        || lower.contains("invalid username")
    {
        "the upstream refused tollgate's credentials".into()
    } else if code == "LOADING" {
        "the upstream is loading its dataset".into()
    } else if lower.contains("max number of clients") {
        "the upstream has no connection free for tollgate (max number of clients reached)".into()
    } else {
        crate::session::login_refused_with(code, 32)
    }
}

/// A logged-in upstream connection.
pub struct Upstream {
    pub stream: NetStream,
    /// The upstream's id for this connection (`CLIENT ID`), if it answered one.
    pub client_id: Option<u64>,
    /// tollgate's end of the connection, as the upstream names it (`ip:port`).
    pub local_addr: String,
}

impl RedisCredentials {
    /// Upstream `u`'s login from `vault` (the password must be a vault reference).
    pub fn resolve(
        u: &crate::config::UpstreamConfig,
        vault: &crate::vault::Vault,
    ) -> Result<RedisCredentials, crate::vault::VaultError> {
        Ok(RedisCredentials {
            user: vault.resolve(&u.user, true)?,
            password: vault.resolve(&u.password, false)?,
        })
    }
}

impl RedisTarget {
    /// Upstream `name` of the config, with its credentials resolved from `vault`.
    pub fn from_config(
        name: &str,
        u: &crate::config::UpstreamConfig,
        vault: &crate::vault::Vault,
    ) -> Result<RedisTarget, crate::doors::DoorError> {
        Ok(RedisTarget {
            name: name.to_string(),
            host: u.host.clone(),
            port: u.port,
            credentials: ArcSwap::from_pointee(RedisCredentials::resolve(u, vault)?),
            tls: crate::doors::upstream_tls(name, u)?,
            table: Default::default(),
            clients: Default::default(),
            shared: super::shared::SharedUpstream::new(u.shared_connections()),
        })
    }

    /// An upstream nobody connects to, logged in as `default` with password `pw` (unit tests).
    #[cfg(test)]
    pub fn for_tests() -> Arc<RedisTarget> {
        Arc::new(RedisTarget {
            name: "cache".into(),
            host: "127.0.0.1".into(),
            port: 1,
            tls: None,
            credentials: ArcSwap::from_pointee(RedisCredentials {
                user: Secret::new("default".into()),
                password: Secret::new("pw".into()),
            }),
            table: Default::default(),
            clients: Default::default(),
            shared: super::shared::SharedUpstream::new(0),
        })
    }

    /// Connects and authenticates (`AUTH [user] password`).
    pub async fn connect(&self, timeout: Duration) -> Result<Upstream, UpstreamError> {
        tokio::time::timeout(timeout, self.connect_inner())
            .await
            .map_err(|_| UpstreamError::Timeout(timeout))?
    }

    async fn connect_inner(&self) -> Result<Upstream, UpstreamError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(UpstreamError::Connect)?;
        tcp.set_nodelay(true).map_err(UpstreamError::Connect)?;
        let local_addr = tcp.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let mut stream = match &self.tls {
            Some(tls) => NetStream::from(
                tls.connector()
                    .connect(tls.server_name.clone(), tcp)
                    .await
                    .map_err(UpstreamError::Tls)?,
            ),
            None => NetStream::Plain(tcp),
        };
        // The login and the connection's id in one round trip.
        let mut login = self.auth_command();
        login.extend_from_slice(b"*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n");
        stream
            .write_all(&login)
            .await
            .map_err(UpstreamError::Connect)?;
        drop(login);
        let mut buf = BytesMut::with_capacity(256);
        let reply = read_reply_into(&mut stream, &mut buf).await?;
        if reply.first() == Some(&b'-') {
            let line = String::from_utf8_lossy(&reply).trim_end().to_string();
            return Err(UpstreamError::LoginRefused(line));
        }
        let id = read_reply_into(&mut stream, &mut buf).await?;
        if !buf.is_empty() {
            return Err(UpstreamError::Protocol(
                "unexpected data after the login replies".into(),
            ));
        }
        let client_id = id
            .strip_prefix(b":")
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| d.trim_end().parse().ok());
        Ok(Upstream {
            stream,
            client_id,
            local_addr,
        })
    }

    /// Makes `up` a session's own connection: counted in the upstream's open-connections gauge
    /// (for as long as the guard lives) and registered as `agent`'s, so CLIENT KILL/LIST,
    /// SLOWLOG and MONITOR keep every agent to its own connections.
    pub fn own(
        &self,
        up: &Upstream,
        agent: Arc<str>,
    ) -> (
        crate::telemetry::GaugeGuard,
        Option<super::clients::ClientEntry>,
    ) {
        let gauge = crate::telemetry::upstream_connection(&self.name);
        let entry = up
            .client_id
            .map(|id| self.clients.register(id, up.local_addr.clone(), agent));
        (gauge, entry)
    }

    /// `AUTH [user] password` with the vaulted login (also sent again after a client's RESET).
    /// The bytes hold the password: written to the upstream only, never logged or recorded.
    pub fn auth_command(&self) -> BytesMut {
        let creds = self.credentials.load();
        let user = creds.user.expose();
        let pw = Bytes::copy_from_slice(creds.password.expose().as_bytes());
        let cmd = if user.is_empty() || user == "default" {
            encode_command(&[Bytes::from_static(b"AUTH"), pw])
        } else {
            encode_command(&[
                Bytes::from_static(b"AUTH"),
                Bytes::copy_from_slice(user.as_bytes()),
                pw,
            ])
        };
        BytesMut::from(&cmd[..])
    }

    /// The command table, fetched from the upstream if not known yet.
    pub async fn table(&self, timeout: Duration) -> Result<Arc<CommandTable>, UpstreamError> {
        if let Some(t) = self.table.load_full() {
            return Ok(t);
        }
        let mut up = self.connect(timeout).await?;
        up.stream
            .write_all(b"*1\r\n$7\r\nCOMMAND\r\n")
            .await
            .map_err(UpstreamError::Connect)?;
        let raw = tokio::time::timeout(timeout * 4, read_reply(&mut up.stream))
            .await
            .map_err(|_| UpstreamError::Timeout(timeout))??;
        let (frame, _) = redis_protocol::resp2::decode::decode_bytes(&raw)
            .map_err(|e| UpstreamError::Protocol(e.to_string()))?
            .ok_or_else(|| UpstreamError::Protocol("incomplete COMMAND reply".into()))?;
        let table =
            CommandTable::from_reply(&frame).map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        let table = Arc::new(table);
        self.table.store(Some(table.clone()));
        Ok(table)
    }
}

/// Reads exactly one reply frame from a connection with nothing else in flight (probes).
pub async fn read_one_reply(stream: &mut NetStream) -> Result<Bytes, UpstreamError> {
    read_reply(stream).await
}

/// Reads exactly one reply frame (nothing else is in flight during login and COMMAND).
async fn read_reply(stream: &mut NetStream) -> Result<Bytes, UpstreamError> {
    let mut buf = BytesMut::with_capacity(4096);
    read_reply_into(stream, &mut buf).await
}

/// Reads one reply frame through `buf`, which keeps what was read past it.
async fn read_reply_into(
    stream: &mut NetStream,
    buf: &mut BytesMut,
) -> Result<Bytes, UpstreamError> {
    let mut scanner = ReplyScanner::default();
    loop {
        if let Some(n) = scanner
            .next_frame(&buf[..])
            .map_err(|e| UpstreamError::Protocol(e.to_string()))?
        {
            return Ok(buf.split_to(n).freeze());
        }
        let read = stream.read_buf(buf).await.map_err(UpstreamError::Connect)?;
        if read == 0 {
            return Err(UpstreamError::Connect(std::io::Error::from(
                std::io::ErrorKind::UnexpectedEof,
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::login_refusal;

    #[test]
    fn only_a_refusal_of_the_credentials_is_called_one() {
        for line in [
            "-WRONGPASS invalid username-password pair or user is disabled.",
            "-NOAUTH Authentication required.",
            "-ERR invalid password",
        ] {
            assert!(login_refusal(line).contains("credentials"), "{line}");
        }
        for (line, says) in [
            ("-ERR max number of clients reached", "no connection free"),
            ("-LOADING Redis is loading the dataset in memory", "loading"),
            ("-BUSY Redis is busy running a script", "(BUSY)"),
        ] {
            let said = login_refusal(line);
            assert!(
                said.contains(says) && !said.contains("credentials"),
                "{said}"
            );
        }
    }
}
