//! Applying a mask plan to a complete upstream reply: decoded with redis-protocol (RESP2 or
//! RESP3, whichever the session speaks), values replaced, re-encoded. Errors pass unchanged.

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::types::BytesFrame as F2;
use redis_protocol::resp3::types::BytesFrame as F3;

use crate::policy::redis::{MaskFields, MaskPlan, Strategy};

#[derive(Debug, thiserror::Error)]
#[error("cannot mask the upstream reply: {0}")]
pub struct MaskError(String);

/// The reply the agent sees. `resp3`: the session negotiated HELLO 3.
pub fn mask(raw: &Bytes, plan: &MaskPlan, resp3: bool) -> Result<Bytes, MaskError> {
    if plan.is_none() || raw.first().is_some_and(|b| matches!(b, b'-' | b'!')) {
        return Ok(raw.clone());
    }
    let e = |e: redis_protocol::error::RedisProtocolError| MaskError(e.to_string());
    let mut out = BytesMut::with_capacity(raw.len() + 64);
    if resp3 {
        let (mut f, _) = redis_protocol::resp3::decode::complete::decode_bytes(raw)
            .map_err(e)?
            .ok_or_else(|| MaskError("incomplete".into()))?;
        restore_order(&mut f);
        mask3(&mut f, plan);
        redis_protocol::resp3::encode::complete::extend_encode(&mut out, &f, false).map_err(e)?;
    } else {
        let (mut f, _) = redis_protocol::resp2::decode::decode_bytes(raw)
            .map_err(e)?
            .ok_or_else(|| MaskError("incomplete".into()))?;
        mask2(&mut f, plan);
        redis_protocol::resp2::encode::extend_encode(&mut out, &f, false).map_err(e)?;
    }
    Ok(out.freeze())
}

/// The element count in the header of an array reply (`*N\r\n`; `-1` for RESP2's null
/// array), `None` for any other frame.
pub fn exec_len(raw: &[u8]) -> Option<i64> {
    let rest = raw.strip_prefix(b"*")?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// EXEC's reply: element i masked with the plan of the i-th queued command. An array whose
/// element count is not the number of plans is refused whole: its elements could not be
/// paired with their commands' plans, and a partly masked reply is never relayed.
pub fn mask_exec(raw: &Bytes, plans: &[MaskPlan], resp3: bool) -> Result<Bytes, MaskError> {
    if !matches!(raw.first(), Some(b'*')) {
        return Ok(raw.clone()); // aborted (null) or an error
    }
    match exec_len(raw) {
        Some(n) if n < 0 => return Ok(raw.clone()), // aborted by WATCH (`*-1`)
        Some(n) if usize::try_from(n) == Ok(plans.len()) => {}
        n => {
            return Err(MaskError(format!(
                "EXEC answered {} replies for {} queued commands",
                n.map_or_else(|| "?".into(), |n| n.to_string()),
                plans.len()
            )))
        }
    }
    let e = |e: redis_protocol::error::RedisProtocolError| MaskError(e.to_string());
    let mut out = BytesMut::with_capacity(raw.len() + 64);
    if resp3 {
        let (mut f, _) = redis_protocol::resp3::decode::complete::decode_bytes(raw)
            .map_err(e)?
            .ok_or_else(|| MaskError("incomplete".into()))?;
        restore_order(&mut f);
        let F3::Array { data, .. } = &mut f else {
            return Ok(raw.clone());
        };
        for (item, plan) in data.iter_mut().zip(plans) {
            mask3(item, plan);
        }
        redis_protocol::resp3::encode::complete::extend_encode(&mut out, &f, false).map_err(e)?;
    } else {
        let (mut f, _) = redis_protocol::resp2::decode::decode_bytes(raw)
            .map_err(e)?
            .ok_or_else(|| MaskError("incomplete".into()))?;
        // `*-1` (a transaction aborted by WATCH) decodes as a null: relayed as it came, not
        // re-encoded as the bulk null `$-1`.
        let F2::Array(items) = &mut f else {
            return Ok(raw.clone());
        };
        for (item, plan) in items.iter_mut().zip(plans) {
            mask2(item, plan);
        }
        redis_protocol::resp2::encode::extend_encode(&mut out, &f, false).map_err(e)?;
    }
    Ok(out.freeze())
}

fn set2(f: &mut F2, s: Strategy) {
    if let F2::BulkString(b) | F2::SimpleString(b) = f {
        *b = s.apply(b);
    }
}

fn pairs2(items: &mut [F2], m: &MaskFields) {
    for kv in items.chunks_mut(2) {
        if let [F2::BulkString(field), v] = kv {
            if let Some(s) = m.of(field) {
                set2(v, s);
            }
        } else if let [F2::Array(pair)] = kv {
            pairs2(pair, m);
        } else if let [F2::Array(p1), F2::Array(p2)] = kv {
            pairs2(p1, m);
            pairs2(p2, m);
        }
    }
}

pub fn mask2(f: &mut F2, plan: &MaskPlan) {
    match (plan, f) {
        (MaskPlan::None, _) => {}
        (MaskPlan::Value(s), f) => set2(f, *s),
        (MaskPlan::Elements(ss), F2::Array(items)) => {
            for (item, s) in items.iter_mut().zip(ss) {
                if let Some(s) = s {
                    set2(item, *s);
                }
            }
        }
        (MaskPlan::AllValues(s), F2::Array(items)) => items.iter_mut().for_each(|i| set2(i, *s)),
        (MaskPlan::HashPairs(m), F2::Array(items)) => pairs2(items, m),
        (MaskPlan::ScanPairs(m), F2::Array(items)) => {
            if let Some(F2::Array(inner)) = items.get_mut(1) {
                pairs2(inner, m);
            }
        }
        (MaskPlan::AclSecrets(login), f) => acl2(f, login.as_deref()),
        (MaskPlan::ConfigSecrets, F2::Array(items)) => {
            let kept: Vec<F2> = std::mem::take(items)
                .chunks(2)
                .filter(|kv| !matches!(kv.first(), Some(F2::BulkString(k) | F2::SimpleString(k)) if is_secret(k)))
                .flat_map(|kv| kv.iter().cloned())
                .collect();
            *items = kept;
        }
        _ => {}
    }
}

/// An ACL LIST line without the password hashes (`#<hex>`) when it is `login`'s (every line
/// when `login` is unknown).
fn acl_line(line: &[u8], login: Option<&str>) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(line).ok()?;
    let mut words = text.split(' ');
    let (Some("user"), Some(name)) = (words.next(), words.next()) else {
        return None;
    };
    if login.is_some_and(|l| l != name) {
        return None;
    }
    let kept: Vec<&str> = text.split(' ').filter(|w| !w.starts_with('#')).collect();
    Some(kept.join(" ").into_bytes())
}

fn acl2(f: &mut F2, login: Option<&str>) {
    match f {
        // ACL LIST: one line per user.
        F2::Array(items) if items.iter().all(|i| matches!(i, F2::BulkString(_))) => {
            for item in items.iter_mut() {
                if let F2::BulkString(b) = item {
                    if let Some(line) = acl_line(b, login) {
                        *b = Bytes::from(line);
                    }
                }
            }
        }
        // ACL GETUSER: field/value pairs; `passwords` emptied.
        F2::Array(items) => {
            for kv in items.chunks_mut(2) {
                if let [F2::BulkString(k) | F2::SimpleString(k), v] = kv {
                    if k.eq_ignore_ascii_case(b"passwords") {
                        *v = F2::Array(Vec::new());
                    }
                }
            }
        }
        _ => {}
    }
}

fn acl3(f: &mut F3, login: Option<&str>) {
    match f {
        F3::Array { data, .. } if data.iter().all(|i| matches!(i, F3::BlobString { .. })) => {
            for item in data.iter_mut() {
                if let F3::BlobString { data, .. } = item {
                    if let Some(line) = acl_line(data, login) {
                        *data = Bytes::from(line);
                    }
                }
            }
        }
        F3::Map { data, .. } => {
            for (k, v) in data.iter_mut() {
                if field3(k).is_some_and(|k| k.eq_ignore_ascii_case(b"passwords")) {
                    *v = F3::Array {
                        data: Vec::new(),
                        attributes: None,
                    };
                }
            }
        }
        _ => {}
    }
}

/// A CONFIG GET parameter whose value is a secret (requirepass, masterauth, TLS passphrases).
fn is_secret(name: &[u8]) -> bool {
    crate::policy::redis::builtin::SECRET_SETTINGS
        .iter()
        .any(|s| name.eq_ignore_ascii_case(s.as_bytes()))
}

/// redis-protocol 6 decodes RESP3 maps back to front (it pops pairs off the end); putting them
/// back in wire order keeps a re-encoded reply identical apart from the masked values.
fn restore_order(f: &mut F3) {
    match f {
        F3::Map { data, .. } => {
            data.reverse();
            for v in data.values_mut() {
                restore_order(v);
            }
        }
        F3::Array { data, .. } | F3::Push { data, .. } => data.iter_mut().for_each(restore_order),
        _ => {}
    }
}

fn set3(f: &mut F3, s: Strategy) {
    match f {
        F3::BlobString { data, .. } | F3::SimpleString { data, .. } => *data = s.apply(data),
        F3::VerbatimString { data, .. } => *data = s.apply(data),
        _ => {}
    }
}

fn field3(f: &F3) -> Option<&[u8]> {
    match f {
        F3::BlobString { data, .. } | F3::SimpleString { data, .. } => Some(data),
        _ => None,
    }
}

fn pairs3(items: &mut [F3], m: &MaskFields) {
    if items.iter().all(|i| matches!(i, F3::Array { .. })) {
        // HRANDFIELD ... WITHVALUES in RESP3: an array of [field, value] pairs.
        for i in items {
            if let F3::Array { data, .. } = i {
                pairs3(data, m);
            }
        }
        return;
    }
    for kv in items.chunks_mut(2) {
        if let [k, v] = kv {
            if let Some(s) = field3(k).and_then(|k| m.of(k)) {
                set3(v, s);
            }
        }
    }
}

pub fn mask3(f: &mut F3, plan: &MaskPlan) {
    match (plan, f) {
        (MaskPlan::None, _) => {}
        (MaskPlan::Value(s), f) => set3(f, *s),
        (MaskPlan::Elements(ss), F3::Array { data, .. }) => {
            for (item, s) in data.iter_mut().zip(ss) {
                if let Some(s) = s {
                    set3(item, *s);
                }
            }
        }
        (MaskPlan::AllValues(s), F3::Array { data, .. }) => {
            data.iter_mut().for_each(|i| set3(i, *s))
        }
        (MaskPlan::HashPairs(m), F3::Map { data, .. }) => {
            for (k, v) in data.iter_mut() {
                if let Some(s) = field3(k).and_then(|k| m.of(k)) {
                    set3(v, s);
                }
            }
        }
        (MaskPlan::HashPairs(m), F3::Array { data, .. }) => pairs3(data, m),
        (MaskPlan::ScanPairs(m), F3::Array { data, .. }) => {
            if let Some(F3::Array { data: inner, .. }) = data.get_mut(1) {
                pairs3(inner, m);
            }
        }
        (MaskPlan::AclSecrets(login), f) => acl3(f, login.as_deref()),
        (MaskPlan::ConfigSecrets, F3::Map { data, .. }) => {
            data.retain(|k, _| !field3(k).is_some_and(is_secret));
        }
        (MaskPlan::ConfigSecrets, F3::Array { data, .. }) => {
            let kept: Vec<F3> = std::mem::take(data)
                .chunks(2)
                .filter(|kv| !kv.first().and_then(field3).is_some_and(is_secret))
                .flat_map(|kv| kv.iter().cloned())
                .collect();
            *data = kept;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> MaskFields {
        MaskFields::single(vec!["email".into()], Strategy::Email)
    }

    #[test]
    fn hgetall_resp2_and_resp3() {
        let r2 = Bytes::from_static(
            b"*4\r\n$4\r\nname\r\n$3\r\nAnn\r\n$5\r\nemail\r\n$11\r\nann@x.co.uk\r\n",
        );
        let out = mask(&r2, &MaskPlan::HashPairs(fields()), false).unwrap();
        assert_eq!(
            &out[..],
            b"*4\r\n$4\r\nname\r\n$3\r\nAnn\r\n$5\r\nemail\r\n$11\r\n***@x.co.uk\r\n"
        );
        let r3 = Bytes::from_static(
            b"%2\r\n$4\r\nname\r\n$3\r\nAnn\r\n$5\r\nemail\r\n$11\r\nann@x.co.uk\r\n",
        );
        let out = mask(&r3, &MaskPlan::HashPairs(fields()), true).unwrap();
        assert_eq!(
            &out[..],
            b"%2\r\n$4\r\nname\r\n$3\r\nAnn\r\n$5\r\nemail\r\n$11\r\n***@x.co.uk\r\n"
        );
    }

    /// F2 of the Redis review: HELLO queued inside MULTI had no plan, so EXEC's elements were
    /// masked with the plans of the commands before them. A count that does not match is
    /// refused whole, never masked in part.
    #[test]
    fn exec_with_more_or_fewer_elements_than_plans_is_refused_whole() {
        let plans = [
            MaskPlan::Value(Strategy::Email),
            MaskPlan::HashPairs(fields()),
        ];
        let three = Bytes::from_static(
            b"*3\r\n*0\r\n$18\r\nuser31@example.com\r\n*2\r\n$5\r\nemail\r\n$18\r\nuser31@example.com\r\n",
        );
        for resp3 in [false, true] {
            let e = mask_exec(&three, &plans, resp3).unwrap_err();
            assert!(e.to_string().contains("3 replies for 2"), "{e}");
        }
        let one = Bytes::from_static(b"*1\r\n$18\r\nuser31@example.com\r\n");
        assert!(mask_exec(&one, &plans, false).is_err());
        let two = Bytes::from_static(
            b"*2\r\n$18\r\nuser31@example.com\r\n*2\r\n$5\r\nemail\r\n$18\r\nuser31@example.com\r\n",
        );
        let out = mask_exec(&two, &plans, false).unwrap();
        assert!(!out.windows(7).any(|w| w == b"user31@"), "{out:?}");
        // Aborted (WATCH) and errors pass as they came.
        let null = Bytes::from_static(b"*-1\r\n");
        assert_eq!(mask_exec(&null, &plans, false).unwrap(), null);
        assert_eq!(exec_len(b"*12\r\n"), Some(12));
        assert_eq!(exec_len(b"+OK\r\n"), None);
    }

    #[test]
    fn config_get_leaves_secrets_out() {
        let r2 = Bytes::from_static(
            b"*6\r\n$10\r\nmaxclients\r\n$5\r\n10000\r\n$11\r\nrequirepass\r\n$6\r\nhunter\r\n$10\r\nmasterauth\r\n$0\r\n\r\n",
        );
        let out = mask(&r2, &MaskPlan::ConfigSecrets, false).unwrap();
        assert_eq!(&out[..], b"*2\r\n$10\r\nmaxclients\r\n$5\r\n10000\r\n");
        let r3 = Bytes::from_static(
            b"%2\r\n$11\r\nrequirepass\r\n$6\r\nhunter\r\n$7\r\ntimeout\r\n$1\r\n0\r\n",
        );
        let out = mask(&r3, &MaskPlan::ConfigSecrets, true).unwrap();
        assert_eq!(&out[..], b"%1\r\n$7\r\ntimeout\r\n$1\r\n0\r\n");
    }

    #[test]
    fn acl_replies_leave_the_login_hash_out() {
        let hash = "#".to_string() + &"ab".repeat(32);
        let list = format!(
            "*2\r\n${}\r\nuser default on {hash} ~* +@all\r\n${}\r\nuser app on {hash} ~* +@all\r\n",
            "user default on  ~* +@all".len() + hash.len(),
            "user app on  ~* +@all".len() + hash.len(),
        );
        let out = mask(
            &Bytes::from(list.clone()),
            &MaskPlan::AclSecrets(Some("default".into())),
            false,
        )
        .unwrap();
        let out = String::from_utf8(out.to_vec()).unwrap();
        assert!(out.contains("user default on ~* +@all"), "{out}");
        assert!(
            out.contains(&format!("user app on {hash}")),
            "other users as they are: {out}"
        );
        let getuser = format!(
            "*4\r\n$5\r\nflags\r\n*1\r\n$2\r\non\r\n$9\r\npasswords\r\n*1\r\n$64\r\n{}\r\n",
            "ab".repeat(32)
        );
        let out = mask(&Bytes::from(getuser), &MaskPlan::AclSecrets(None), false).unwrap();
        assert_eq!(
            &out[..],
            b"*4\r\n$5\r\nflags\r\n*1\r\n$2\r\non\r\n$9\r\npasswords\r\n*0\r\n"
        );
    }

    #[test]
    fn values_elements_and_errors() {
        let v = Bytes::from_static(b"$3\r\nabc\r\n");
        assert_eq!(
            &mask(&v, &MaskPlan::Value(Strategy::Redact), false).unwrap()[..],
            b"$10\r\n[REDACTED]\r\n"
        );
        let err = Bytes::from_static(b"-WRONGTYPE x\r\n");
        assert_eq!(
            mask(&err, &MaskPlan::Value(Strategy::Redact), false).unwrap(),
            err
        );
        let arr = Bytes::from_static(b"*2\r\n$1\r\na\r\n$-1\r\n");
        assert_eq!(
            &mask(
                &arr,
                &MaskPlan::Elements(vec![Some(Strategy::Redact), Some(Strategy::Redact)]),
                false
            )
            .unwrap()[..],
            b"*2\r\n$10\r\n[REDACTED]\r\n$-1\r\n"
        );
        let scan = Bytes::from_static(b"*2\r\n$1\r\n0\r\n*2\r\n$5\r\nemail\r\n$5\r\na@b.c\r\n");
        assert_eq!(
            &mask(&scan, &MaskPlan::ScanPairs(fields()), false).unwrap()[..],
            b"*2\r\n$1\r\n0\r\n*2\r\n$5\r\nemail\r\n$7\r\n***@b.c\r\n"
        );
    }
}
