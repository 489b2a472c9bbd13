//! Commands that reach other clients' connections, kept to the agent's own (the upstream
//! connections of its sessions, from `clients.rs`): `CLIENT KILL` sent once per own connection
//! with an `ID` filter added, and the replies of `CLIENT LIST`, `SLOWLOG GET/LEN` and `MONITOR`
//! filtered so another agent's connections, commands and arguments never show.

use std::collections::HashSet;

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::types::BytesFrame as F2;
use redis_protocol::resp3::types::BytesFrame as F3;

use super::command::encode_command;

/// Most upstream commands one CLIENT KILL may turn into (one per own connection).
pub const MAX_KILL_PARTS: usize = 1024;

/// What tollgate does with a CLIENT KILL.
#[derive(Debug, PartialEq, Eq)]
pub enum KillPlan {
    /// Send these commands; sum their replies (`old_style`: `CLIENT KILL addr:port`, answered
    /// `+OK` or `-ERR No such client`).
    Parts {
        commands: Vec<Vec<Bytes>>,
        old_style: bool,
    },
    /// Answer this without asking the upstream.
    Local(Bytes),
}

/// Turns `CLIENT KILL ...` into commands that can only reach `own` (the agent's upstream client
/// ids): an `ID` filter naming another connection is answered as if that client did not exist;
/// otherwise the filters are sent once per own connection with `ID <id>` added.
pub fn plan_kill(args: &[Bytes], own: &[u64]) -> KillPlan {
    let old_style = args.len() == 3;
    let filters: Vec<Bytes> = if old_style {
        vec![Bytes::from_static(b"ADDR"), args[2].clone()]
    } else {
        args[2..].to_vec()
    };
    let none = || {
        if old_style {
            Bytes::from_static(b"-ERR No such client\r\n")
        } else {
            Bytes::from_static(b":0\r\n")
        }
    };
    if filters.is_empty() || !filters.len().is_multiple_of(2) {
        return KillPlan::Local(Bytes::from_static(b"-ERR syntax error\r\n"));
    }
    let id_filter = filters
        .chunks(2)
        .find(|kv| kv[0].eq_ignore_ascii_case(b"id"))
        .map(|kv| kv[1].clone());
    let prefix = [Bytes::from_static(b"CLIENT"), Bytes::from_static(b"KILL")];
    if let Some(id) = id_filter {
        let parsed = std::str::from_utf8(&id)
            .ok()
            .and_then(|s| s.parse::<u64>().ok());
        return match parsed {
            Some(id) if own.contains(&id) => KillPlan::Parts {
                commands: vec![prefix.iter().chain(&filters).cloned().collect()],
                old_style,
            },
            // Redis's own answer to an id that is not a number.
            None => KillPlan::Local(Bytes::from_static(
                b"-ERR client-id should be greater than 0\r\n",
            )),
            Some(_) => KillPlan::Local(none()),
        };
    }
    if own.is_empty() {
        return KillPlan::Local(none());
    }
    if own.len() > MAX_KILL_PARTS {
        return KillPlan::Local(Bytes::from(format!(
            "-ERR tollgate: this agent has more than {MAX_KILL_PARTS} connections; kill them by ID\r\n"
        )));
    }
    let commands = own
        .iter()
        .map(|id| {
            prefix
                .iter()
                .chain(&filters)
                .cloned()
                .chain([Bytes::from_static(b"ID"), Bytes::from(id.to_string())])
                .collect()
        })
        .collect();
    KillPlan::Parts {
        commands,
        old_style,
    }
}

/// The bytes of a plan's commands, to forward.
pub fn encode_all(commands: &[Vec<Bytes>]) -> BytesMut {
    let mut out = BytesMut::new();
    for c in commands {
        out.extend_from_slice(&encode_command(c));
    }
    out
}

/// The summed answer of a CLIENT KILL sent in parts: the number killed (or `+OK`/`-ERR No such
/// client` for the old form), or the first error when no part succeeded.
pub fn kill_reply(killed: i64, old_style: bool, error: Option<Bytes>) -> Bytes {
    match (error, killed) {
        (Some(e), 0) => e,
        _ if old_style && killed > 0 => Bytes::from_static(b"+OK\r\n"),
        _ if old_style => Bytes::from_static(b"-ERR No such client\r\n"),
        _ => Bytes::from(format!(":{killed}\r\n")),
    }
}

/// The number a part's reply adds to the sum, or `Err` for an error reply.
pub fn kill_part(frame: &[u8]) -> Result<i64, ()> {
    match frame.first() {
        Some(b':') => std::str::from_utf8(&frame[1..])
            .ok()
            .and_then(|s| s.trim_end().parse().ok())
            .ok_or(()),
        Some(b'+') => Ok(1),
        _ => Err(()),
    }
}

/// CLIENT LIST's reply (a bulk or verbatim string of `id=... addr=...` lines) with only the lines
/// whose id `own` accepts. Anything else (an error) passes unchanged.
pub fn client_list(frame: &Bytes, own: impl Fn(u64) -> bool) -> Bytes {
    let (kind, body) = match split_string(frame) {
        Some(x) => x,
        None => return frame.clone(),
    };
    let (prefix, text) = match kind {
        b'=' if body.len() >= 4 => (&body[..4], &body[4..]),
        _ => (&b""[..], body),
    };
    let mut kept = Vec::with_capacity(text.len());
    for line in text.split_inclusive(|b| *b == b'\n') {
        let id = line
            .split(|b| *b == b' ')
            .find_map(|w| w.strip_prefix(b"id="))
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| d.trim_end().parse::<u64>().ok());
        if id.is_some_and(&own) {
            kept.extend_from_slice(line);
        }
    }
    let mut out = Vec::with_capacity(kept.len() + 16);
    out.push(kind);
    out.extend_from_slice(format!("{}\r\n", prefix.len() + kept.len()).as_bytes());
    out.extend_from_slice(prefix);
    out.extend_from_slice(&kept);
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

/// `$len\r\nbody\r\n` or `=len\r\nbody\r\n`: the type byte and the body.
fn split_string(frame: &[u8]) -> Option<(u8, &[u8])> {
    let kind = *frame.first()?;
    if kind != b'$' && kind != b'=' {
        return None;
    }
    let header_end = frame.iter().position(|b| *b == b'\n')?;
    let len: usize = std::str::from_utf8(&frame[1..header_end])
        .ok()?
        .trim_end()
        .parse()
        .ok()?;
    let body = frame.get(header_end + 1..header_end + 1 + len)?;
    Some((kind, body))
}

#[derive(Debug, thiserror::Error)]
#[error("cannot filter the upstream reply: {0}")]
pub struct FilterError(String);

/// SLOWLOG GET's reply with only the entries of connections at `addrs` (an entry's fifth element
/// is its client's `ip:port`), at most `count` of them: `Ok(None)` for an error reply.
pub fn slowlog(
    frame: &Bytes,
    addrs: &HashSet<String>,
    count: usize,
    resp3: bool,
) -> Result<Bytes, FilterError> {
    if !matches!(frame.first(), Some(b'*')) {
        return Ok(frame.clone());
    }
    let e = |e: redis_protocol::error::RedisProtocolError| FilterError(e.to_string());
    let mut out = BytesMut::with_capacity(frame.len());
    if resp3 {
        let (mut f, _) = redis_protocol::resp3::decode::complete::decode_bytes(frame)
            .map_err(e)?
            .ok_or_else(|| FilterError("incomplete".into()))?;
        if let F3::Array { data, .. } = &mut f {
            data.retain(|entry| entry_addr3(entry).is_some_and(|a| addrs.contains(a)));
            data.truncate(count);
        }
        redis_protocol::resp3::encode::complete::extend_encode(&mut out, &f, false).map_err(e)?;
    } else {
        let (mut f, _) = redis_protocol::resp2::decode::decode_bytes(frame)
            .map_err(e)?
            .ok_or_else(|| FilterError("incomplete".into()))?;
        if let F2::Array(items) = &mut f {
            items.retain(|entry| entry_addr2(entry).is_some_and(|a| addrs.contains(a)));
            items.truncate(count);
        }
        redis_protocol::resp2::encode::extend_encode(&mut out, &f, false).map_err(e)?;
    }
    Ok(out.freeze())
}

/// The number of SLOWLOG entries of connections at `addrs` (SLOWLOG LEN, asked as GET -1).
pub fn slowlog_len(
    frame: &Bytes,
    addrs: &HashSet<String>,
    resp3: bool,
) -> Result<Bytes, FilterError> {
    if !matches!(frame.first(), Some(b'*')) {
        return Ok(frame.clone());
    }
    let filtered = slowlog(frame, addrs, usize::MAX, resp3)?;
    let n = if resp3 {
        match redis_protocol::resp3::decode::complete::decode_bytes(&filtered) {
            Ok(Some((F3::Array { data, .. }, _))) => data.len(),
            _ => 0,
        }
    } else {
        match redis_protocol::resp2::decode::decode_bytes(&filtered) {
            Ok(Some((F2::Array(items), _))) => items.len(),
            _ => 0,
        }
    };
    Ok(Bytes::from(format!(":{n}\r\n")))
}

fn entry_addr2(entry: &F2) -> Option<&str> {
    match entry {
        F2::Array(items) => match items.get(4) {
            Some(F2::BulkString(b) | F2::SimpleString(b)) => std::str::from_utf8(b).ok(),
            _ => None,
        },
        _ => None,
    }
}

fn entry_addr3(entry: &F3) -> Option<&str> {
    match entry {
        F3::Array { data, .. } => match data.get(4) {
            Some(F3::BlobString { data, .. } | F3::SimpleString { data, .. }) => {
                std::str::from_utf8(data).ok()
            }
            _ => None,
        },
        _ => None,
    }
}

/// Whether `frame` is a MONITOR line (`+1700000000.123456 [0 127.0.0.1:5000] "get" "k"`).
pub fn is_monitor_line(frame: &[u8]) -> bool {
    let Some(rest) = frame.strip_prefix(b"+") else {
        return false;
    };
    let stamp_end = rest.iter().position(|b| *b == b' ').unwrap_or(0);
    stamp_end > 0
        && rest[..stamp_end]
            .iter()
            .all(|b| b.is_ascii_digit() || *b == b'.')
        && rest.get(stamp_end + 1) == Some(&b'[')
}

/// The client of a MONITOR line: `ip:port`, or `lua` / `unix:...` (`None` when unreadable).
pub fn monitor_addr(frame: &[u8]) -> Option<&str> {
    let open = frame.iter().position(|b| *b == b'[')?;
    let close = open + frame[open..].iter().position(|b| *b == b']')?;
    let inside = std::str::from_utf8(&frame[open + 1..close]).ok()?;
    let (_db, addr) = inside.split_once(' ')?;
    Some(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn words(line: &str) -> Vec<Bytes> {
        line.split(' ').map(b).collect()
    }

    fn lines(plan: &KillPlan) -> Vec<String> {
        match plan {
            KillPlan::Parts { commands, .. } => commands
                .iter()
                .map(|c| {
                    c.iter()
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect(),
            KillPlan::Local(r) => vec![String::from_utf8_lossy(r).into_owned()],
        }
    }

    #[test]
    fn client_kill_reaches_own_connections_only() {
        let own = [7, 9];
        assert_eq!(
            lines(&plan_kill(&words("CLIENT KILL ID 9"), &own)),
            vec!["CLIENT KILL ID 9"]
        );
        assert_eq!(
            lines(&plan_kill(&words("CLIENT KILL ID 8"), &own)),
            vec![":0\r\n"]
        );
        assert_eq!(
            lines(&plan_kill(
                &words("client kill TYPE normal SKIPME no"),
                &own
            )),
            vec![
                "CLIENT KILL TYPE normal SKIPME no ID 7",
                "CLIENT KILL TYPE normal SKIPME no ID 9"
            ]
        );
        assert_eq!(
            lines(&plan_kill(&words("CLIENT KILL 127.0.0.1:5000"), &own)),
            vec![
                "CLIENT KILL ADDR 127.0.0.1:5000 ID 7",
                "CLIENT KILL ADDR 127.0.0.1:5000 ID 9"
            ]
        );
        assert_eq!(
            lines(&plan_kill(
                &words("CLIENT KILL ADDR 127.0.0.1:5000 ID"),
                &own
            )),
            vec!["-ERR syntax error\r\n"]
        );
        assert_eq!(kill_reply(2, false, None), b(":2\r\n"));
        assert_eq!(kill_reply(1, true, None), b("+OK\r\n"));
        assert_eq!(kill_reply(0, true, None), b("-ERR No such client\r\n"));
        assert_eq!(
            kill_reply(0, false, Some(b("-ERR syntax error\r\n"))),
            b("-ERR syntax error\r\n")
        );
        assert_eq!(kill_part(b":1\r\n"), Ok(1));
        assert_eq!(kill_part(b"-ERR x\r\n"), Err(()));
    }

    fn string(kind: char, body: &str) -> Bytes {
        b(&format!("{kind}{}\r\n{body}\r\n", body.len()))
    }

    #[test]
    fn client_list_shows_own_lines_only() {
        let mine = "id=7 addr=a:1 cmd=get\n";
        let theirs = "id=8 addr=b:2 cmd=set secret\n";
        let list = string('$', &format!("{mine}{theirs}"));
        assert_eq!(client_list(&list, |id| id == 7), string('$', mine));
        let verbatim = string('=', &format!("txt:{mine}"));
        assert_eq!(client_list(&verbatim, |id| id == 8), string('=', "txt:"));
        let err = b("-ERR x\r\n");
        assert_eq!(client_list(&err, |_| true), err);
    }

    #[test]
    fn slowlog_entries_of_other_connections_are_left_out() {
        let entry = |id: u8, addr: &str| {
            format!(
                "*6\r\n:{id}\r\n:1700000000\r\n:15000\r\n*2\r\n$3\r\nget\r\n$6\r\nsecret\r\n${}\r\n{addr}\r\n$0\r\n\r\n",
                addr.len()
            )
        };
        let reply = b(&format!(
            "*3\r\n{}{}{}",
            entry(3, "127.0.0.1:5000"),
            entry(2, "127.0.0.1:6000"),
            entry(1, "127.0.0.1:5000")
        ));
        let mine: HashSet<String> = ["127.0.0.1:5000".to_string()].into();
        let out = slowlog(&reply, &mine, 10, false).unwrap();
        assert_eq!(
            out,
            b(&format!(
                "*2\r\n{}{}",
                entry(3, "127.0.0.1:5000"),
                entry(1, "127.0.0.1:5000")
            ))
        );
        assert_eq!(
            slowlog(&reply, &mine, 1, false).unwrap(),
            b(&format!("*1\r\n{}", entry(3, "127.0.0.1:5000")))
        );
        assert_eq!(slowlog_len(&reply, &mine, false).unwrap(), b(":2\r\n"));
        assert_eq!(
            slowlog_len(&reply, &HashSet::new(), false).unwrap(),
            b(":0\r\n")
        );
    }

    #[test]
    fn monitor_lines_are_recognised_with_their_client() {
        let line = b"+1700000000.123456 [0 127.0.0.1:5000] \"get\" \"k\"\r\n";
        assert!(is_monitor_line(line));
        assert_eq!(monitor_addr(line), Some("127.0.0.1:5000"));
        assert!(!is_monitor_line(b"+OK\r\n"));
        assert!(!is_monitor_line(b"+RESET\r\n"));
        // A script's commands name no client: never one of tollgate's addresses.
        assert_eq!(monitor_addr(b"+1.2 [0 lua] \"get\"\r\n"), Some("lua"));
    }
}
