//! Finding every key of a command from its key specs, as Redis itself does
//! (`getKeysUsingKeySpecs`); a spec that cannot be followed makes the command unplaceable.

use bytes::Bytes;

use super::commands::{BeginSearch, CommandInfo, FindKeys, KeyAccess, KeySpec};

/// One key argument: its position in the command and what the command does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoundKey {
    pub index: usize,
    pub access: KeyAccess,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeysError {
    /// The command's key positions depend on something its specs cannot describe.
    Unplaceable,
    /// The arguments do not fit the specs (wrong key count, bad number of keys).
    Malformed,
}

/// Appends the keys of `args` (args[0] is the command name) to `out`.
pub fn find_keys(
    info: &CommandInfo,
    args: &[Bytes],
    out: &mut Vec<FoundKey>,
) -> Result<(), KeysError> {
    for spec in &info.key_specs {
        if spec.access.incomplete {
            return Err(KeysError::Unplaceable);
        }
        match &spec.begin {
            BeginSearch::Index(i) => place(spec, args, *i, out)?,
            BeginSearch::Keyword { keyword, startfrom } => {
                // Redis's own key extraction stops at the first occurrence, but a command's
                // option parser may take a later one (`GEORADIUS ... STORE a STORE b` stores
                // into b): every occurrence starts keys, so whichever the command uses is
                // checked. Past the first, keys that do not fit mean tollgate cannot tell.
                for (n, at) in keyword_positions(args, keyword, *startfrom).enumerate() {
                    match place(spec, args, at + 1, out) {
                        Ok(()) => {}
                        Err(e) if n == 0 => return Err(e),
                        Err(_) => return Err(KeysError::Unplaceable),
                    }
                }
            }
            BeginSearch::Unknown => return Err(KeysError::Unplaceable),
        }
    }
    Ok(())
}

/// Appends the keys `spec` finds when its first key (or key count) is at `first`.
fn place(
    spec: &KeySpec,
    args: &[Bytes],
    first: i64,
    out: &mut Vec<FoundKey>,
) -> Result<(), KeysError> {
    let argc = args.len() as i64;
    let (first, last, step) = match spec.find {
        FindKeys::Range {
            lastkey,
            keystep,
            limit,
        } => {
            let last = if lastkey >= 0 {
                first + lastkey
            } else if limit == 0 {
                argc + lastkey
            } else {
                first + ((argc - first) / limit + lastkey)
            };
            (first, last, keystep)
        }
        FindKeys::Keynum {
            keynumidx,
            firstkey,
            keystep,
        } => {
            let at = first + keynumidx;
            let n = usize::try_from(at)
                .ok()
                .and_then(|i| args.get(i))
                .and_then(|a| std::str::from_utf8(a).ok())
                .and_then(|s| s.parse::<i64>().ok())
                .filter(|n| *n >= 0)
                .ok_or(KeysError::Malformed)?;
            let first = first + firstkey;
            (first, first + (n - 1) * keystep.max(1), keystep)
        }
        FindKeys::Unknown => return Err(KeysError::Unplaceable),
    };
    if step <= 0 && last >= first {
        return Err(KeysError::Unplaceable);
    }
    let mut i = first;
    while i <= last {
        if i >= argc || i < 1 {
            return Err(KeysError::Malformed);
        }
        out.push(FoundKey {
            index: i as usize,
            access: spec.access,
        });
        i += step;
    }
    Ok(())
}

/// Every position of `keyword` (lower case), in the order Redis searches: forwards from
/// `startfrom`, or backwards from `argc + startfrom` when it is negative.
fn keyword_positions<'a>(
    args: &'a [Bytes],
    keyword: &'a [u8],
    startfrom: i64,
) -> impl Iterator<Item = i64> + 'a {
    let argc = args.len() as i64;
    let matches = move |i: &i64| *i < argc && args[*i as usize].eq_ignore_ascii_case(keyword);
    let (forwards, backwards) = if startfrom > 0 {
        (startfrom..argc, 0..0)
    } else {
        (0..0, 1..argc + startfrom + 1)
    };
    forwards.chain(backwards.rev()).filter(matches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::redis::tests::args;

    fn ro() -> KeyAccess {
        KeyAccess {
            read: true,
            exposes: true,
            ..KeyAccess::default()
        }
    }
    fn info(specs: Vec<KeySpec>) -> CommandInfo {
        CommandInfo {
            name: "x".into(),
            arity: -1,
            key_specs: specs,
            ..CommandInfo::default()
        }
    }
    fn keys(info: &CommandInfo, line: &str) -> Result<Vec<usize>, KeysError> {
        let mut out = Vec::new();
        find_keys(info, &args(line), &mut out)?;
        Ok(out.iter().map(|k| k.index).collect())
    }

    #[test]
    fn xread_streams_keyword_with_limit() {
        let xread = info(vec![KeySpec {
            access: ro(),
            begin: BeginSearch::Keyword {
                keyword: b"streams".to_vec(),
                startfrom: 1,
            },
            find: FindKeys::Range {
                lastkey: -1,
                keystep: 1,
                limit: 2,
            },
        }]);
        assert_eq!(
            keys(&xread, "XREAD COUNT 2 STREAMS a b 0 0"),
            Ok(vec![4, 5])
        );
        assert_eq!(keys(&xread, "XREAD streams a 0"), Ok(vec![2]));
    }

    #[test]
    fn eval_keynum() {
        let eval = info(vec![KeySpec {
            access: ro(),
            begin: BeginSearch::Index(2),
            find: FindKeys::Keynum {
                keynumidx: 0,
                firstkey: 1,
                keystep: 1,
            },
        }]);
        assert_eq!(keys(&eval, "EVAL s 2 k1 k2 a1"), Ok(vec![3, 4]));
        assert_eq!(keys(&eval, "EVAL s 0 a1"), Ok(vec![]));
        assert_eq!(keys(&eval, "EVAL s 5 k1"), Err(KeysError::Malformed));
        assert_eq!(keys(&eval, "EVAL s -1 k1"), Err(KeysError::Malformed));
        assert_eq!(keys(&eval, "EVAL s x k1"), Err(KeysError::Malformed));
    }

    #[test]
    fn migrate_keys_backwards_and_ranges() {
        let mset = info(vec![KeySpec {
            access: ro(),
            begin: BeginSearch::Index(1),
            find: FindKeys::Range {
                lastkey: -1,
                keystep: 2,
                limit: 0,
            },
        }]);
        assert_eq!(keys(&mset, "MSET a 1 b 2"), Ok(vec![1, 3]));
        let unknown = info(vec![KeySpec {
            access: ro(),
            begin: BeginSearch::Unknown,
            find: FindKeys::Unknown,
        }]);
        assert_eq!(keys(&unknown, "SORT a"), Err(KeysError::Unplaceable));
        let kw = info(vec![KeySpec {
            access: ro(),
            begin: BeginSearch::Keyword {
                keyword: b"keys".to_vec(),
                startfrom: -2,
            },
            find: FindKeys::Range {
                lastkey: -1,
                keystep: 1,
                limit: 0,
            },
        }]);
        assert_eq!(keys(&kw, "MIGRATE h p \"\" 0 5 KEYS a b"), Ok(vec![7, 8]));
    }

    fn store(keyword: &str, startfrom: i64) -> KeySpec {
        KeySpec {
            access: KeyAccess {
                write: true,
                ..KeyAccess::default()
            },
            begin: BeginSearch::Keyword {
                keyword: keyword.as_bytes().to_vec(),
                startfrom,
            },
            find: FindKeys::Range {
                lastkey: 0,
                keystep: 1,
                limit: 0,
            },
        }
    }

    /// GEORADIUS's option parser takes the last STORE/STOREDIST; Redis's key extraction the
    /// first: every occurrence is a key, so the one that is written is always checked.
    #[test]
    fn every_occurrence_of_a_keyword_starts_keys() {
        let georadius = info(vec![store("store", 6), store("storedist", 6)]);
        assert_eq!(
            keys(
                &georadius,
                "GEORADIUS g 13 38 200 km STORE cache:ok STORE admin:pwned"
            ),
            Ok(vec![7, 9])
        );
        assert_eq!(
            keys(
                &georadius,
                "GEORADIUS g 13 38 200 km store a STOREDIST b STORE c"
            ),
            Ok(vec![7, 11, 9])
        );
        assert_eq!(
            keys(&georadius, "GEORADIUS g 13 38 200 km STORE a"),
            Ok(vec![7])
        );
        // A key named like the keyword: its own "occurrence" has no key after it.
        assert_eq!(
            keys(&georadius, "GEORADIUS g 13 38 200 km STORE store"),
            Err(KeysError::Unplaceable)
        );
        assert_eq!(
            keys(&georadius, "GEORADIUS g 13 38 200 km STORE"),
            Err(KeysError::Malformed)
        );
        // Searching backwards (MIGRATE ... KEYS): every occurrence too.
        let kw = info(vec![KeySpec {
            access: ro(),
            begin: BeginSearch::Keyword {
                keyword: b"keys".to_vec(),
                startfrom: -2,
            },
            find: FindKeys::Range {
                lastkey: -1,
                keystep: 1,
                limit: 0,
            },
        }]);
        assert_eq!(
            keys(&kw, "MIGRATE h p \"\" 0 5 KEYS a keys b"),
            Ok(vec![9, 7, 8, 9])
        );
    }
}
