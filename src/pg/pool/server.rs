//! One pooled server connection: logged in once with the vaulted credentials and the startup
//! settings of its key, with what tollgate knows about it (backend key, reported parameters,
//! the statements prepared on it under tollgate's names).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use crate::pg::backend as msg;
use crate::pg::frame::{Frame, FrameReader};
use crate::pg::upstream::UpstreamConn;
use crate::tls::{NetRead, NetWrite};

/// What a server connection is for: the startup settings it was opened with (sorted), and the
/// pool mode of the sessions it serves. Connections are only handed to sessions that asked for
/// exactly these: `RESET`/`DISCARD ALL` bring a connection back to its settings, so nothing one
/// session set can reach another; and connections shared per transaction (whose sessions
/// cannot read session state) never serve session-mode sessions (which can, and are reset).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct SettingsKey(pub Vec<(String, String)>, pub bool);

impl SettingsKey {
    pub fn new(settings: &[(String, String)], per_transaction: bool) -> SettingsKey {
        let mut v: Vec<(String, String)> = settings
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        v.sort();
        SettingsKey(v, per_transaction)
    }
}

/// Most statements one server connection keeps prepared under tollgate's names.
pub const PREPARED_PER_CONNECTION: usize = 256;

/// The statements prepared on one server connection under tollgate's names, oldest first (the
/// oldest is closed on the server when the bound is reached), each with the
/// [`stale_plans`](super::stale_plans) mark it was prepared at.
#[derive(Debug, Default)]
pub struct Prepared {
    names: HashMap<Arc<str>, u64>,
    order: VecDeque<Arc<str>>,
}

/// Whether a connection has a statement ready to bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    Ready,
    Missing,
    /// Prepared there, but its plan was refused as stale since: close it and prepare it again.
    Stale,
}

impl Prepared {
    pub fn contains(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }

    pub fn held(&self, name: &str) -> Held {
        match self.names.get(name) {
            None => Held::Missing,
            Some(&at) if super::stale_plans::is_stale(name, at) => Held::Stale,
            Some(_) => Held::Ready,
        }
    }

    /// `name` (held) was closed and prepared again on the server.
    pub fn renew(&mut self, name: &str) {
        if let Some(at) = self.names.get_mut(name) {
            *at = super::stale_plans::now();
        }
    }

    /// Records `name`; returns the name to close on the server if the bound was passed.
    pub fn insert(&mut self, name: Arc<str>) -> Option<Arc<str>> {
        if self.names.contains_key(&name) {
            return None;
        }
        self.names.insert(name.clone(), super::stale_plans::now());
        self.order.push_back(name);
        if self.order.len() > PREPARED_PER_CONNECTION {
            let old = self.order.pop_front()?;
            self.names.remove(&old);
            return Some(old);
        }
        None
    }

    /// Forgets `name`; whether it was there.
    pub fn remove(&mut self, name: &str) -> bool {
        let held = self.names.remove(name).is_some();
        if held {
            self.order.retain(|n| &**n != name);
        }
        held
    }

    pub fn clear(&mut self) {
        self.names.clear();
        self.order.clear();
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// What both relay halves may need to know about the attached server connection.
#[derive(Debug)]
pub struct ServerInfo {
    pub addr: SocketAddr,
    pub pid: i32,
    pub secret: i32,
    /// ParameterStatus as the server reported it at login (name, value). Connections of one
    /// key that reported the same share one list, so a session moving between them can tell
    /// by pointer that there is nothing to replay.
    pub params: Arc<[(String, String)]>,
    /// The raw ParameterStatus frames of the login, for a session's first view.
    pub param_frames: Vec<Frame>,
    /// Statements prepared on this connection under tollgate's names (transaction pooling).
    pub prepared: Mutex<Prepared>,
    /// Which session's statement holds the unnamed statement slot, if tollgate knows.
    pub unnamed_owner: Mutex<Option<(u64, u64)>>,
}

/// A pooled server connection, whole (both halves), as the pool keeps it.
pub struct Server {
    pub reader: FrameReader<NetRead>,
    pub writer: NetWrite,
    pub info: Arc<ServerInfo>,
    pub key: Arc<SettingsKey>,
    pub created: Instant,
    pub idle_since: Instant,
    pub generation: u64,
    /// Its room in the pool, given back however the connection ends.
    pub slot: super::PoolSlot,
    /// While an agent holds it from a transaction pool: its place in that agent's share.
    pub share: Option<super::share::ShareHeld>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("pid", &self.info.pid)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

fn param_of(frame: &Frame) -> Option<(String, String)> {
    let mut parts = frame.body().split(|b| *b == 0);
    let name = std::str::from_utf8(parts.next()?).ok()?.to_string();
    let value = std::str::from_utf8(parts.next()?).ok()?.to_string();
    Some((name, value))
}

impl Server {
    /// `like`: the parameters of another connection of the key, shared if this one reported
    /// the same.
    pub fn new(
        conn: UpstreamConn,
        key: Arc<SettingsKey>,
        generation: u64,
        slot: super::PoolSlot,
        like: Option<&Arc<[(String, String)]>>,
    ) -> Server {
        let params: Vec<(String, String)> =
            conn.parameter_frames.iter().filter_map(param_of).collect();
        let params = match like {
            Some(p) if p[..] == params[..] => p.clone(),
            _ => params.into(),
        };
        let now = Instant::now();
        Server {
            reader: conn.reader,
            writer: conn.writer,
            info: Arc::new(ServerInfo {
                addr: conn.addr,
                pid: conn.backend_pid,
                secret: conn.backend_secret,
                params,
                param_frames: conn.parameter_frames,
                prepared: Mutex::new(Prepared::default()),
                unnamed_owner: Mutex::new(None),
            }),
            key,
            created: now,
            idle_since: now,
            generation,
            slot,
            share: None,
        }
    }

    /// Whether the connection still looks usable: nothing may be waiting to be read on an idle
    /// connection (data means a protocol surprise, end of file a server that went away).
    pub async fn looks_alive(&mut self) -> bool {
        self.reader.quiet().await
    }

    /// Brings the connection back to its key's state: `DISCARD ALL` (closes portals and cursors,
    /// resets settings to the startup values, drops prepared statements, temporary tables,
    /// advisory locks and LISTENs). `false` if the server did not answer as expected: close it.
    pub async fn reset(&mut self, timeout: std::time::Duration) -> bool {
        let mut ok = false;
        let status = simple_query(
            &mut self.reader,
            &mut self.writer,
            "DISCARD ALL",
            timeout,
            |f| match f.tag {
                msg::COMMAND_COMPLETE => ok = f.body().starts_with(b"DISCARD ALL"),
                msg::ERROR_RESPONSE => ok = false,
                _ => {}
            },
        )
        .await;
        let ok = ok && status == Some(b'I');
        if ok {
            self.info.prepared.lock().expect("prepared").clear();
            *self.info.unnamed_owner.lock().expect("unnamed") = None;
        }
        ok
    }

    /// Ends the connection politely (Terminate), without waiting.
    pub async fn close(mut self) {
        terminate(&mut self.writer).await;
    }

    /// Ends a connection that may still be running something: its session ended in the middle
    /// of a statement (or of a pipelined batch), or it broke. PostgreSQL reads a Terminate only
    /// once the statement is over, so after a plain close the backend ran on outside the
    /// pool's count, and the pool opened another in its room: an agent disconnecting from
    /// `pg_sleep` in a loop piled up backends past `pool_size` (a review found 22 against 10).
    ///
    /// So: Terminate and end of stream (an idle backend exits at once); then, while the server
    /// has not closed the connection, cancels: one when the server has gone quiet for 50 ms
    /// after sending something (a statement ended, as a cancelled one does, and the next of a
    /// pipelined batch runs without a word), and one every second anyway; never two at once.
    /// A batch of quick statements streams without pause and draws none. What the server sends
    /// is read and dropped (no message boundaries are needed: the session may have left in the
    /// middle of one), so it never blocks in a write. The connection keeps its room in the pool
    /// and its place in its agent's share until the server has closed it, or for at most
    /// `within`. If it did not, its room and share come back to the caller (`Retained`).
    pub async fn retire(
        self,
        tls: Option<crate::tls::UpstreamTls>,
        within: Duration,
    ) -> Result<(), Retained> {
        use tokio::io::AsyncReadExt;
        use tokio::time::Instant;
        let Server {
            reader,
            mut writer,
            info,
            slot,
            share,
            ..
        } = self;
        let (mut raw, _) = reader.into_parts();
        terminate(&mut writer).await;
        // Even when the Terminate could not be written (the server reads nothing while it runs);
        // tried again below until it goes (a TLS close may wait for room as well).
        let mut shut = matches!(
            tokio::time::timeout(TERMINATE_WITHIN, writer.shutdown()).await,
            Ok(Ok(()))
        );
        let target = crate::pg::cancel::CancelTarget {
            addr: info.addr,
            pid: info.pid,
            secret: info.secret,
            tls,
        };
        let deadline = Instant::now() + within;
        let mut scratch = vec![0u8; 16 * 1024];
        // An idle backend reads the Terminate at once: no cancel for it (each one costs the
        // server a process).
        let mut periodic = Instant::now() + Duration::from_millis(100);
        let mut spoke: Option<Instant> = None;
        let mut cancel: Option<tokio::task::JoinHandle<bool>> = None;
        let gone = loop {
            let quiet = spoke.map_or(periodic, |t| t + CANCEL_QUIET);
            let until = quiet.min(periodic).min(deadline);
            match tokio::time::timeout_at(until, raw.read(&mut scratch)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(_)) => {
                    spoke = Some(Instant::now());
                    continue;
                }
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                break false;
            }
            if !shut {
                shut = matches!(
                    tokio::time::timeout(Duration::from_millis(20), writer.shutdown()).await,
                    Ok(Ok(()))
                );
            }
            spoke = None;
            periodic = Instant::now() + Duration::from_secs(1);
            if cancel.as_ref().is_none_or(|c| c.is_finished()) {
                cancel = Some(tokio::spawn(crate::pg::cancel::send_cancel(target.clone())));
            }
        };
        match gone {
            true => Ok(()),
            false => Err(Retained {
                _slot: slot,
                _share: share,
            }),
        }
    }
}

/// The room in the pool (and the agent's share) of a retired connection whose server kept it
/// past every cancel: held while its backend is terminated otherwise, given back when dropped.
pub struct Retained {
    _slot: super::PoolSlot,
    _share: Option<super::share::ShareHeld>,
}

/// How long a retiring connection's server stays quiet after sending something before what it
/// runs now is cancelled.
const CANCEL_QUIET: Duration = Duration::from_millis(50);

/// How long a Terminate (or the end of stream after it) may wait for room to be written.
const TERMINATE_WITHIN: Duration = Duration::from_millis(200);

/// Sends Terminate, waiting at most `TERMINATE_WITHIN` (a server busy in a statement reads
/// nothing).
pub(super) async fn terminate(writer: &mut NetWrite) {
    let _ = tokio::time::timeout(
        TERMINATE_WITHIN,
        writer.write_all(&msg::raw_message(b'X', &[])),
    )
    .await;
}

/// Runs `sql` as a simple Query on a server connection, handing each reply message to `each`
/// until ReadyForQuery: its transaction status, or `None` if the connection failed or
/// `within` passed.
pub(super) async fn simple_query(
    reader: &mut FrameReader<NetRead>,
    writer: &mut NetWrite,
    sql: &str,
    within: Duration,
    mut each: impl FnMut(&Frame),
) -> Option<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    let query = msg::raw_message(b'Q', &body);
    let run = async {
        writer.write_all(&query).await.ok()?;
        loop {
            let f = reader.next().await.ok()??;
            if f.tag == msg::READY_FOR_QUERY {
                return f.body().first().copied();
            }
            each(&f);
        }
    };
    tokio::time::timeout(within, run).await.ok().flatten()
}

/// The raw ParameterStatus frame for (name, value).
pub fn parameter_status(name: &str, value: &str) -> Bytes {
    msg::parameter_status(name, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepared_statements_are_bounded_oldest_first() {
        let mut p = Prepared::default();
        for i in 0..PREPARED_PER_CONNECTION {
            assert_eq!(p.insert(format!("s{i}").into()), None);
        }
        assert_eq!(p.insert("s0".into()), None, "already there");
        assert_eq!(p.insert("new".into()).as_deref(), Some("s0"));
        assert!(!p.contains("s0") && p.contains("new"));
        assert_eq!(p.len(), PREPARED_PER_CONNECTION);
        p.remove("new");
        assert!(!p.contains("new"));
    }

    #[test]
    fn settings_keys_ignore_order_and_name_case() {
        let a = SettingsKey::new(
            &[("DateStyle".into(), "ISO".into()), ("a".into(), "1".into())],
            true,
        );
        let b = SettingsKey::new(
            &[("a".into(), "1".into()), ("datestyle".into(), "ISO".into())],
            true,
        );
        assert_eq!(a, b);
        assert_ne!(a, SettingsKey::new(&[("a".into(), "2".into())], true));
        let s = SettingsKey::new(
            &[("a".into(), "1".into()), ("datestyle".into(), "ISO".into())],
            false,
        );
        assert_ne!(
            a, s,
            "session-mode sessions never get per-transaction connections"
        );
    }
}
