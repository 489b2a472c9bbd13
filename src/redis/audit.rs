//! A Redis command as the audit log records it: name, subcommand, key and channel names; every
//! other argument replaced by `?`, so values never reach the log.

use bytes::Bytes;

use crate::policy::redis::FoundKey;

const MAX_NAME: usize = 128;
const MAX_STATEMENT: usize = 4096;

/// Appends `b` as recorded: short printable ASCII as it is (upper-cased with `upper`), anything
/// else lossily decoded, cut at `MAX_NAME` characters, control characters as `?`.
fn push_lossy(out: &mut String, b: &[u8], upper: bool) {
    // Fast path (most names): short printable ASCII is copied as it is.
    if b.len() <= MAX_NAME && b.iter().all(|c| (0x20..0x7f).contains(c)) {
        if let Ok(ascii) = std::str::from_utf8(b) {
            let start = out.len();
            out.push_str(ascii);
            if upper {
                out[start..].make_ascii_uppercase();
            }
            return;
        }
    }
    let s = String::from_utf8_lossy(b);
    out.extend(s.chars().take(MAX_NAME).map(|c| {
        if c.is_control() {
            '?'
        } else if upper {
            c.to_ascii_uppercase()
        } else {
            c
        }
    }));
}

/// Whether `name` is one of the (un)subscribe commands, whose arguments are all channel names
/// (the relay's own list, `SubKind::of_word`, in any case).
fn names_channels(name: &[u8]) -> bool {
    // The longest of them, `punsubscribe`, has 12 letters.
    let mut buf = [0u8; 12];
    let Some(lower) = buf.get_mut(..name.len()) else {
        return false;
    };
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    super::pubsub::SubKind::of_word(lower).is_some()
}

/// `SET cache:1 ?`, `CLIENT SETNAME ?`, `SUBSCRIBE news.a`: names kept, values redacted.
pub fn statement(args: &[Bytes], keys: &[FoundKey], subcommand: bool) -> String {
    let Some(name) = args.first() else {
        return String::new();
    };
    // Every argument shown costs at most its length; every other one two bytes.
    let mut out = String::with_capacity(
        args.iter()
            .map(|a| a.len().min(MAX_NAME) + 2)
            .sum::<usize>()
            .min(MAX_STATEMENT + 8),
    );
    push_lossy(&mut out, name, true);
    let channels = names_channels(name);
    let publish = name.eq_ignore_ascii_case(b"publish") || name.eq_ignore_ascii_case(b"spublish");
    for (i, a) in args.iter().enumerate().skip(1) {
        if out.len() > MAX_STATEMENT {
            out.push_str(" ...");
            break;
        }
        out.push(' ');
        let shown =
            channels || keys.iter().any(|k| k.index == i) || (i == 1 && (subcommand || publish));
        if i == 1 && subcommand {
            push_lossy(&mut out, a, true);
        } else if shown {
            push_lossy(&mut out, a, false);
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
        assert_eq!(
            statement(&args("Config gEt maxmemory"), &[], true),
            "CONFIG GET ?"
        );
        assert_eq!(
            statement(&args("pSubscribe news.*"), &[], false),
            "PSUBSCRIBE news.*"
        );
    }

    #[test]
    fn names_that_are_not_plain_ascii_are_shown_lossily_and_bounded() {
        let name = Bytes::from_static(b"g\xc3\xa9t\x01");
        let key = Bytes::from_static(b"k\xffey\n");
        let shown = statement(
            &[name, key],
            &[FoundKey {
                index: 1,
                access: Default::default(),
            }],
            false,
        );
        assert_eq!(shown, "GéT? k\u{fffd}ey?");
        let long = Bytes::from(vec![b'a'; 300]);
        let shown = statement(&[long], &[], false);
        assert_eq!(shown, "A".repeat(MAX_NAME));
        let huge: Vec<Bytes> = std::iter::once(Bytes::from_static(b"mset"))
            .chain((0..3000).map(|_| Bytes::from_static(b"value")))
            .collect();
        let shown = statement(&huge, &[], false);
        assert!(shown.ends_with(" ...") && shown.len() < MAX_STATEMENT + 8);
    }
}
