//! The client's named prepared statements under transaction pooling. A client's statement can
//! run on any server connection of the pool, so tollgate prepares it there under a name of its
//! own — `tg_` and the SHA-256 of the text as forwarded and its parameter types, so two different
//! statements never share a name and every session preparing the same one shares it (a name
//! anyone can compute, so no agent may name a statement `tg_...`: `policy::reserved`) — and
//! prepares it again on a connection that does not have it yet, before the Bind or Describe that
//! needs it. The client's names stay the client's: they are rewritten in Bind and Describe.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use sha2::{Digest, Sha256};

use super::backend as msg;
use super::frame::Frame;
use super::frontend as fe;
use super::pending::{Expect, Pending};
use super::pool::server::Held;
use super::pool::stale_plans;
use super::pool::ServerInfo;
use crate::policy::mask::PositionMap;

/// A statement as tollgate prepares it on server connections.
#[derive(Debug, Clone)]
pub struct ServerStatement {
    pub name: Arc<str>,
    /// The Parse message under `name` (the text as forwarded, the client's parameter types).
    pub parse: Bytes,
    /// The [`stale_plans`] mark when the client parsed it: the result columns it was described
    /// are those of then. Once `name` is marked stale after it, the client's statement fails
    /// as the server's own would (0A000) until the client parses it again.
    pub parsed_at: u64,
}

impl ServerStatement {
    /// Whether the client's statement was parsed before its plan went stale.
    pub fn stale_for_client(&self) -> bool {
        stale_plans::is_stale(&self.name, self.parsed_at)
    }
}

/// The client's unnamed statement, and which (session, parse) put it on a connection.
#[derive(Debug, Clone)]
pub struct Unnamed {
    pub parse: Bytes,
    pub owner: (u64, u64),
}

/// `forwarded` is the Parse message about to be sent (the client's, or its masking rewrite),
/// named `client_name`: the same statement under tollgate's name, on `upstream`'s pool (the
/// name differs per upstream: the same text may have other columns on another database, and
/// [`stale_plans`] marks names). `scope`: `None` for a session
/// that reads text as the pool's connections do (the name is every such session's); otherwise
/// (session id, settings epoch) of a session whose settings may read the text otherwise (a date
/// literal under its DateStyle): the name is its own, so it never gets a statement prepared
/// under other settings, nor gives its own to another session.
pub fn server_statement(
    forwarded: &Bytes,
    client_name: &str,
    upstream: &str,
    scope: Option<(u64, u64)>,
) -> ServerStatement {
    let body = &forwarded[5..];
    // name\0 text\0 types: everything after the name identifies the statement.
    let rest = &body[client_name.len() + 1..];
    let mut hasher = Sha256::new();
    hasher.update(upstream.as_bytes());
    hasher.update(b"\0");
    hasher.update(rest);
    if let Some((session, epoch)) = scope {
        hasher.update(b"\0scope");
        hasher.update(session.to_be_bytes());
        hasher.update(epoch.to_be_bytes());
    }
    let digest = hasher.finalize();
    let name: Arc<str> = format!(
        "{}{}",
        crate::policy::reserved::RESERVED_PREFIX,
        hex::encode(&digest[..16])
    )
    .into();
    let mut out = BytesMut::with_capacity(body.len() + 40);
    out.put_slice(name.as_bytes());
    out.put_u8(0);
    out.put_slice(rest);
    ServerStatement {
        parse: msg::raw_message(fe::PARSE, &out),
        name,
        parsed_at: stale_plans::now(),
    }
}

fn close_statement(name: &str) -> Bytes {
    let mut body = BytesMut::with_capacity(name.len() + 2);
    body.put_u8(b'S');
    body.put_slice(name.as_bytes());
    body.put_u8(0);
    msg::raw_message(fe::CLOSE, &body)
}

/// Before `name` is prepared on the connection: `None` when it is ready there (nothing to send);
/// otherwise the statements to close first — the oldest one at the connection's bound, and
/// `name` itself when the server may hold a stale copy of it (its plan was refused since it was
/// prepared there, or it was ever marked stale and tollgate lost count of it there).
fn make_room(server: &ServerInfo, name: &Arc<str>) -> Option<Vec<Arc<str>>> {
    let mut prepared = server.prepared.lock().expect("prepared statements");
    match prepared.held(name) {
        Held::Ready => None,
        Held::Stale => {
            prepared.renew(name);
            Some(vec![name.clone()])
        }
        Held::Missing => {
            let mut closing: Vec<Arc<str>> = prepared.insert(name.clone()).into_iter().collect();
            if stale_plans::was_marked(name) {
                closing.push(name.clone());
            }
            Some(closing)
        }
    }
}

/// Closes `names` on the connection, their replies hidden from the client.
fn send_closes(names: Vec<Arc<str>>, pending: &Pending, out: &mut BytesMut) {
    for name in names {
        pending.push(Expect::Hidden {
            server_name: None,
            started: None,
        });
        out.extend_from_slice(&close_statement(&name));
    }
}

/// What the reply to a Parse or Close looks like when tollgate gives it itself.
pub fn parse_complete() -> Bytes {
    msg::raw_message(msg::PARSE_COMPLETE, &[])
}

pub fn close_complete() -> Bytes {
    msg::raw_message(msg::CLOSE_COMPLETE, &[])
}

/// Whether `name` must be prepared (again) on the connection before it can run there.
pub fn missing_here(server: &ServerInfo, name: &str) -> bool {
    let prepared = server.prepared.lock().expect("prepared statements");
    !matches!(prepared.held(name), Held::Ready)
}

/// Whether tollgate counts `name` as prepared on the connection (stale or not): after its
/// Parse failed it does not.
pub fn counted_here(server: &ServerInfo, name: &str) -> bool {
    server
        .prepared
        .lock()
        .expect("prepared statements")
        .contains(name)
}

/// After a copy of `name` prepared on the connection was described (and compared with the
/// client's description): it is the statement of now, whatever mark that made.
pub fn described_here(server: &ServerInfo, name: &str) {
    server
        .prepared
        .lock()
        .expect("prepared statements")
        .renew(name);
}

/// Sends `stmt`'s Parse to the connection unless it has it already (its reply is hidden from
/// the client); at the connection's bound the oldest statement is closed there first.
pub fn ensure_prepared(
    server: &ServerInfo,
    stmt: &ServerStatement,
    pending: &Pending,
    out: &mut BytesMut,
) {
    let Some(closing) = make_room(server, &stmt.name) else {
        return;
    };
    send_closes(closing, pending, out);
    pending.push(Expect::Hidden {
        server_name: Some(stmt.name.clone()),
        started: Some(std::time::Instant::now()),
    });
    out.extend_from_slice(&stmt.parse);
}

/// Prepares a statement that always parses (`SELECT`) under `name` on the connection, its
/// reply hidden from the client: so that a `DEALLOCATE` of the name that follows succeeds where
/// the connection lacked the statement. Not recorded in the connection's cache.
pub fn prepare_placeholder(name: &str, pending: &Pending, out: &mut BytesMut) {
    let mut body = BytesMut::with_capacity(name.len() + 10);
    body.put_slice(name.as_bytes());
    body.put_u8(0);
    body.put_slice(b"SELECT\0");
    body.put_u16(0);
    pending.push(Expect::Hidden {
        server_name: None,
        started: Some(std::time::Instant::now()),
    });
    out.extend_from_slice(&msg::raw_message(fe::PARSE, &body));
}

/// The client's Parse of `stmt`: forwarded under tollgate's name, or answered by tollgate when
/// the connection already has it. `positions`: where a rewritten text came from (error positions).
pub fn parse(
    server: &ServerInfo,
    stmt: &ServerStatement,
    named: Option<u64>,
    positions: Option<Box<PositionMap>>,
    pending: &Pending,
    out: &mut BytesMut,
) {
    let Some(closing) = make_room(server, &stmt.name) else {
        pending.push(match named {
            Some(seq) => Expect::SyntheticParse(seq),
            None => Expect::Synthetic(parse_complete()),
        });
        return;
    };
    send_closes(closing, pending, out);
    pending.push(Expect::Parse {
        refusal: None,
        server_name: Some(stmt.name.clone()),
        named,
        positions,
        started: std::time::Instant::now(),
    });
    out.extend_from_slice(&stmt.parse);
}

/// The client's unnamed statement is on this connection, or is put back there first.
pub fn ensure_unnamed(
    server: &ServerInfo,
    unnamed: &Unnamed,
    pending: &Pending,
    out: &mut BytesMut,
) {
    let mut owner = server.unnamed_owner.lock().expect("unnamed statement");
    if *owner == Some(unnamed.owner) {
        return;
    }
    *owner = Some(unnamed.owner);
    pending.push(Expect::Hidden {
        server_name: None,
        started: Some(std::time::Instant::now()),
    });
    out.extend_from_slice(&unnamed.parse);
}

/// A Bind naming `server_name` instead of the client's statement name.
pub fn renamed_bind(frame: &Frame, portal: &str, statement: &str, server_name: &str) -> Bytes {
    let body = frame.body();
    let tail = &body[portal.len() + 1 + statement.len() + 1..];
    let mut out = BytesMut::with_capacity(body.len() + server_name.len());
    out.put_slice(portal.as_bytes());
    out.put_u8(0);
    out.put_slice(server_name.as_bytes());
    out.put_u8(0);
    out.put_slice(tail);
    msg::raw_message(fe::BIND, &out)
}

/// A Flush: the server sends what it has for the messages before it.
pub fn flush() -> Bytes {
    msg::raw_message(fe::FLUSH, &[])
}

/// A Describe of statement `server_name`.
pub fn renamed_describe(server_name: &str) -> Bytes {
    let mut body = BytesMut::with_capacity(server_name.len() + 2);
    body.put_u8(b'S');
    body.put_slice(server_name.as_bytes());
    body.put_u8(0);
    msg::raw_message(fe::DESCRIBE, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_msg(name: &str, sql: &str, types: &[i32]) -> Bytes {
        let mut body = BytesMut::new();
        body.put_slice(name.as_bytes());
        body.put_u8(0);
        body.put_slice(sql.as_bytes());
        body.put_u8(0);
        body.put_i16(types.len() as i16);
        for t in types {
            body.put_i32(*t);
        }
        msg::raw_message(fe::PARSE, &body)
    }

    #[test]
    fn the_same_statement_gets_the_same_name_whatever_the_client_called_it() {
        let a = server_statement(&parse_msg("s1", "SELECT $1", &[23]), "s1", "shop", None);
        let b = server_statement(
            &parse_msg("other", "SELECT $1", &[23]),
            "other",
            "shop",
            None,
        );
        let c = server_statement(&parse_msg("s1", "SELECT $1", &[25]), "s1", "shop", None);
        let d = server_statement(&parse_msg("s1", "SELECT $1 ", &[23]), "s1", "shop", None);
        assert_eq!(a.name, b.name);
        assert_eq!(a.parse, b.parse);
        assert_ne!(a.name, c.name, "parameter types are part of the statement");
        assert_ne!(a.name, d.name);
        let elsewhere = server_statement(&parse_msg("s1", "SELECT $1", &[23]), "s1", "eu", None);
        assert_ne!(
            a.name, elsewhere.name,
            "each upstream's statements are its own"
        );
        assert!(a.name.starts_with("tg_") && a.name.len() == 35);
        assert_eq!(&a.parse[5..5 + a.name.len()], a.name.as_bytes());
        // A session whose settings may read the text otherwise prepares its own, per change of
        // its settings.
        let mine = |epoch| {
            server_statement(
                &parse_msg("s1", "SELECT $1", &[23]),
                "s1",
                "shop",
                Some((7, epoch)),
            )
        };
        assert_ne!(mine(1).name, a.name);
        assert_ne!(mine(1).name, mine(2).name);
        assert_eq!(mine(1).name, mine(1).name);
        let theirs = server_statement(
            &parse_msg("s1", "SELECT $1", &[23]),
            "s1",
            "shop",
            Some((8, 1)),
        );
        assert_ne!(mine(1).name, theirs.name);
    }

    #[test]
    fn a_bind_keeps_everything_but_the_statement_name() {
        let mut body = BytesMut::new();
        body.put_slice(b"p\0s1\0");
        body.put_slice(&[0, 0, 0, 1, 0, 0, 0, 1, b'7', 0, 0]);
        let raw = msg::raw_message(fe::BIND, &body);
        let frame = Frame { tag: fe::BIND, raw };
        let out = renamed_bind(&frame, "p", "s1", "tg_x");
        assert_eq!(&out[5..], b"p\0tg_x\0\0\0\0\x01\0\0\0\x01\x37\0\0");
        let f = Frame {
            tag: fe::BIND,
            raw: out,
        };
        assert_eq!(fe::bind_names(&f).unwrap(), ("p", "tg_x"));
    }
}
