//! Helpers for the relay's unit tests: a PostgreSQL session on a test core, and backend and
//! frontend messages as the wire carries them.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::backend::{self as msg, PgErrorFields};
use super::frame::Frame;
use super::statement::PgSession;
use crate::audit::Protocol;
use crate::session::testing::TestCore;

pub const TOKEN: &str = "tg_relay_test";

pub const POLICY: &str = r#"agents = ["analyst"]
[[postgres]]
upstream = "shop"
[[postgres.table]]
name = "orders"
allow = ["select"]
"#;

pub fn core() -> TestCore {
    TestCore::new(&[("analyst", TOKEN)], &[("analyst.toml", POLICY)])
}

/// The analyst's session on `shop`, and the accepted connection that must outlive it.
pub fn session(t: &TestCore) -> (crate::session::Accepted, Arc<PgSession>) {
    let (accepted, s) = t.session(Protocol::Postgres, "analyst", TOKEN, "shop");
    (accepted, Arc::new(PgSession::new(s)))
}

pub fn frame(raw: Bytes) -> Frame {
    Frame { tag: raw[0], raw }
}

/// A message with an empty body (ParseComplete, BindComplete, NoData, Sync, ...).
pub fn bare(tag: u8) -> Frame {
    frame(msg::raw_message(tag, &[]))
}

pub fn ready(status: u8) -> Frame {
    frame(msg::ready_for_query(status))
}

pub fn complete(tag: &str) -> Frame {
    frame(msg::command_complete(tag))
}

pub fn server_error(code: &'static str, message: &str) -> Frame {
    frame(PgErrorFields::error(code, message).encode())
}

pub fn server_fatal(code: &'static str, message: &str) -> Frame {
    frame(PgErrorFields::fatal(code, message).encode())
}

pub fn data_row(value: &str) -> Frame {
    let mut body = BytesMut::new();
    body.put_i16(1);
    body.put_i32(value.len() as i32);
    body.put_slice(value.as_bytes());
    frame(msg::raw_message(msg::DATA_ROW, &body))
}

/// Client messages.
pub fn query(sql: &str) -> Frame {
    frame(msg::raw_message(b'Q', format!("{sql}\0").as_bytes()))
}

pub fn parse(name: &str, sql: &str) -> Frame {
    let mut body = BytesMut::new();
    body.put_slice(name.as_bytes());
    body.put_u8(0);
    body.put_slice(sql.as_bytes());
    body.put_u8(0);
    body.put_i16(0);
    frame(msg::raw_message(b'P', &body))
}

pub fn bind(portal: &str, statement: &str) -> Frame {
    let mut body = BytesMut::new();
    body.put_slice(portal.as_bytes());
    body.put_u8(0);
    body.put_slice(statement.as_bytes());
    body.put_u8(0);
    body.put_i16(0);
    body.put_i16(0);
    body.put_i16(0);
    frame(msg::raw_message(b'B', &body))
}

pub fn execute(portal: &str, max_rows: i32) -> Frame {
    let mut body = BytesMut::new();
    body.put_slice(portal.as_bytes());
    body.put_u8(0);
    body.put_i32(max_rows);
    frame(msg::raw_message(b'E', &body))
}

/// The messages in `bytes`: (tag, body).
pub fn messages(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while bytes.len() >= 5 {
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        out.push((bytes[0], bytes[5..1 + len].to_vec()));
        bytes = &bytes[1 + len..];
    }
    out
}
