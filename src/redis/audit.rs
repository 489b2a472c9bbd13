//! A Redis command as the audit log records it: name, subcommand, key and channel names; every
//! other argument replaced by `?`, so values never reach the log.

use bytes::Bytes;

use crate::policy::redis::FoundKey;

const MAX_NAME: usize = 128;
const MAX_STATEMENT: usize = 4096;

fn push_lossy(out: &mut String, b: &[u8]) {
    // Fast path (most names): short printable ASCII is copied as it is.
    if b.len() <= MAX_NAME && b.iter().all(|c| (0x20..0x7f).contains(c)) {
        out.push_str(std::str::from_utf8(b).expect("ASCII"));
        return;
    }
    let s = String::from_utf8_lossy(b);
    out.extend(
        s.chars()
            .take(MAX_NAME)
            .map(|c| if c.is_control() { '?' } else { c }),
    );
}

/// `SET cache:1 ?`, `CLIENT SETNAME ?`, `SUBSCRIBE news.a`: names kept, values redacted.
pub fn statement(args: &[Bytes], keys: &[FoundKey], subcommand: bool) -> String {
    let mut out = String::new();
    let Some(name) = args.first() else {
        return out;
    };
    push_lossy(&mut out, &name.to_ascii_uppercase());
    let lname = name.to_ascii_lowercase();
    let channels = matches!(
        &lname[..],
        b"subscribe"
            | b"psubscribe"
            | b"ssubscribe"
            | b"unsubscribe"
            | b"punsubscribe"
            | b"sunsubscribe"
    );
    for (i, a) in args.iter().enumerate().skip(1) {
        if out.len() > MAX_STATEMENT {
            out.push_str(" ...");
            break;
        }
        out.push(' ');
        let shown = channels
            || keys.iter().any(|k| k.index == i)
            || (i == 1 && (subcommand || matches!(&lname[..], b"publish" | b"spublish")));
        if i == 1 && subcommand {
            push_lossy(&mut out, &a.to_ascii_uppercase());
        } else if shown {
            push_lossy(&mut out, a);
        } else {
            out.push('?');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::redis::FoundKey;

    fn args(s: &str) -> Vec<Bytes> {
        s.split(' ')
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect()
    }

    #[test]
    fn values_are_never_recorded() {
        let key = |i| FoundKey {
            index: i,
            access: Default::default(),
        };
        assert_eq!(
            statement(&args("set cache:1 secret"), &[key(1)], false),
            "SET cache:1 ?"
        );
        assert_eq!(statement(&args("AUTH analyst tok"), &[], false), "AUTH ? ?");
        assert_eq!(
            statement(&args("client setname x"), &[], true),
            "CLIENT SETNAME ?"
        );
        assert_eq!(
            statement(&args("subscribe a b"), &[], false),
            "SUBSCRIBE a b"
        );
        assert_eq!(
            statement(&args("publish news hello"), &[], false),
            "PUBLISH news ?"
        );
    }
}
