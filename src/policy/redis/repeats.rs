//! Commands that name the same key more than once where the upstream does the key's work, or
//! copies its value, again for every occurrence: refused for every agent, because the cost
//! grows with the repeats rather than with the data (a 2.4 KB `SUNION` naming a 100,000-member
//! set 200 times blocked Redis for 6.4 s; `MGET` of one 4 MB value 400 times made it build a
//! 1.55 GB reply), and the upstream serves every other agent one command at a time.
//!
//! Keys are found from the command table's key specs and compared byte for byte. Per command:
//!
//! | command | keys compared | what a repeat costs Redis |
//! |---|---|---|
//! | MGET | every key | the value is copied into the reply again |
//! | SUNION, SINTER, SDIFF, SINTERCARD | every key | the set is walked or probed again |
//! | ZUNION, ZINTER, ZDIFF, ZINTERCARD | every key | the sorted set is walked or probed again (to scale scores, WEIGHTS does it without a repeat) |
//! | SUNIONSTORE, SINTERSTORE, SDIFFSTORE, ZUNIONSTORE, ZINTERSTORE, ZDIFFSTORE | the sources | as above; the destination may also be a source (written once) |
//! | BITOP | the sources | the string is read and combined again |
//! | PFCOUNT | every key | the HyperLogLog is merged again |
//! | PFMERGE | the sources | as PFCOUNT; the destination is merged anyway and may also be named as a source |
//! | XREAD, XREADGROUP | every stream | the stream's entries are copied into the reply again |
//! | JSON.MGET (RedisJSON) | every key | the document is serialized again |
//!
//! Kept, because a repeat is cheap or means something:
//! - EXISTS counts every occurrence (its documented meaning), DEL, UNLINK and TOUCH find the key
//!   once and miss after (O(1) each), WATCH ignores a key already watched;
//! - MSET and MSETNX: the last value wins, and the cost is the bytes the command carries;
//! - BLPOP, BRPOP, BLMPOP, LMPOP, BZPOPMIN, BZPOPMAX, ZMPOP, BZMPOP: they stop at the first key
//!   with data, and Redis blocks on each key once;
//! - two-key moves (LMOVE, RPOPLPUSH, SMOVE, RENAME, COPY ...): the same key twice is a
//!   rotation or a no-op, O(1);
//! - EVAL, EVALSHA, FCALL: what the script does with its keys is its own; MIGRATE's key spec is
//!   incomplete (tollgate cannot place its keys), and both are refused unless a policy names
//!   them.
//!
//! Commands whose keys cannot be placed are left to `decide` and to the upstream.

use std::collections::HashSet;

use bytes::Bytes;

use super::builtin::AVAILABILITY_RULE;
use super::commands::CommandInfo;
use super::keys::find_keys;
use crate::refusal::{Refusal, RefusalClass};

/// Which of a command's keys must be distinct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compared {
    Every,
    /// Every key but the first the key specs find (the destination).
    Sources,
}

/// The commands checked (as the command table names them), with what a repeat costs.
fn compared(name: &str) -> Option<(Compared, &'static str)> {
    use Compared::*;
    const WALK: &str = "walks or probes it again for every occurrence";
    Some(match name {
        "mget" => (
            Every,
            "copies its value into the reply again for every occurrence",
        ),
        "json.mget" => (Every, "serializes the document again for every occurrence"),
        "sunion" | "sinter" | "sdiff" | "sintercard" | "zunion" | "zinter" | "zdiff"
        | "zintercard" => (Every, WALK),
        "sunionstore" | "sinterstore" | "sdiffstore" | "zunionstore" | "zinterstore"
        | "zdiffstore" => (Sources, WALK),
        "bitop" => (
            Sources,
            "reads and combines the string again for every occurrence",
        ),
        "pfcount" => (Every, "merges the HyperLogLog again for every occurrence"),
        "pfmerge" => (Sources, "merges the HyperLogLog again for every occurrence"),
        "xread" | "xreadgroup" => (
            Every,
            "copies the stream's entries into the reply again for every occurrence",
        ),
        _ => return None,
    })
}

/// Refuses `args` (command `info`) when it names one key twice where a repeat costs the upstream
/// the key's work again (the table in this module's documentation).
pub fn check_repeats(info: &CommandInfo, args: &[Bytes]) -> Result<(), Refusal> {
    let Some((which, cost)) = compared(&info.name) else {
        return Ok(());
    };
    let mut keys = Vec::new();
    if find_keys(info, args, &mut keys).is_err() {
        // `decide` refuses it, or (passthrough) the upstream answers with its own error.
        return Ok(());
    }
    let skip = match which {
        Compared::Every => 0,
        Compared::Sources => 1,
    };
    let mut seen = HashSet::with_capacity(keys.len().saturating_sub(skip));
    for k in keys.iter().skip(skip).filter(|k| !k.access.not_key) {
        let key = &args[k.index][..];
        if !seen.insert(key) {
            return Err(refusal(&info.name, key, cost));
        }
    }
    Ok(())
}

fn refusal(name: &str, key: &[u8], cost: &str) -> Refusal {
    let key: String = String::from_utf8_lossy(key).chars().take(64).collect();
    let reason = format!(
        "{} names the key \"{key}\" more than once: refused, because the upstream {cost} while every other agent waits; name each key once",
        name.to_uppercase()
    );
    Refusal::new(RefusalClass::TooLarge, AVAILABILITY_RULE, reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::redis::commands::{BeginSearch, FindKeys, KeyAccess, KeySpec};
    use crate::policy::redis::tests::args;
    use crate::policy::redis::tests::table;

    /// Against Redis 7.0's own command table (its key specs place the keys).
    #[test]
    fn repeats_that_cost_the_upstream_again_are_refused() {
        let table = table();
        for (line, refused) in [
            ("SUNION cache:s cache:s", true),
            ("SUNION cache:s cache:t", false),
            ("SUNION cache:s", false),
            ("sinter cache:a cache:b cache:a", true),
            ("SDIFF cache:a cache:b cache:b", true),
            ("SINTERCARD 2 cache:s cache:s LIMIT 10", true),
            ("SINTERCARD 2 cache:s cache:t LIMIT 10", false),
            // Byte for byte: keys are case sensitive.
            ("SUNION cache:s Cache:s cache:S", false),
            ("SUNION cache:s cache:s\0", false),
            ("SUNIONSTORE cache:s cache:s cache:t", false),
            ("SUNIONSTORE cache:d cache:s cache:s", true),
            ("SINTERSTORE cache:d cache:s cache:d cache:s", true),
            ("SDIFFSTORE cache:d cache:d cache:e", false),
            ("ZUNION 2 cache:z cache:z WITHSCORES", true),
            ("ZUNION 2 cache:z cache:y WEIGHTS 2 2", false),
            // A key named like a score or option after the keys is not a key.
            ("ZUNION 1 cache:z WEIGHTS 1 AGGREGATE cache:z", false),
            ("ZINTER 3 a b a", true),
            ("ZDIFF 2 a a", true),
            ("ZINTERCARD 2 a a", true),
            ("ZUNIONSTORE d 2 d d", true),
            ("ZUNIONSTORE d 2 d e", false),
            ("ZINTERSTORE d 2 e e", true),
            ("ZDIFFSTORE d 2 e f", false),
            ("MGET cache:big cache:big", true),
            ("MGET cache:a cache:b cache:c", false),
            ("PFCOUNT h h", true),
            ("PFCOUNT h g", false),
            ("PFMERGE d d s", false),
            ("PFMERGE d s s", true),
            ("PFMERGE d", false),
            ("BITOP AND d s s", true),
            ("BITOP AND d d s", false),
            ("BITOP NOT d d", false),
            ("XREAD COUNT 10 STREAMS x x 0 0", true),
            ("XREAD COUNT 10 STREAMS x y 0 0", false),
            // The ids are not keys: the same id twice is fine.
            ("XREAD STREAMS x y x 0", false),
            ("XREADGROUP GROUP g c STREAMS x x > >", true),
            ("XREADGROUP GROUP g c STREAMS x >", false),
            // Kept: a repeat is cheap or means something.
            ("EXISTS k k k", false),
            ("DEL k k", false),
            ("UNLINK k k", false),
            ("TOUCH k k", false),
            ("WATCH k k", false),
            ("MSET k 1 k 2", false),
            ("BLPOP l l 1", false),
            ("LMOVE l l LEFT RIGHT", false),
            ("SMOVE s s m", false),
            ("EVAL x 2 k k", false),
            // Keys that cannot be placed are left to `decide` and the upstream.
            ("ZUNION 5 a a", false),
            ("ZUNION x a a", false),
        ] {
            let a = args(line);
            let info = table.lookup(&a).expect(line);
            assert_eq!(check_repeats(info, &a).is_err(), refused, "{line}");
        }
    }

    /// A module command is checked by the name and key specs the upstream reports.
    #[test]
    fn module_commands_are_placed_by_their_own_key_specs() {
        let json_mget = CommandInfo {
            name: "json.mget".into(),
            arity: -3,
            key_specs: vec![KeySpec {
                access: KeyAccess {
                    read: true,
                    exposes: true,
                    ..KeyAccess::default()
                },
                begin: BeginSearch::Index(1),
                find: FindKeys::Range {
                    lastkey: -2,
                    keystep: 1,
                    limit: 0,
                },
            }],
            ..CommandInfo::default()
        };
        assert!(check_repeats(&json_mget, &args("JSON.MGET doc doc $")).is_err());
        assert!(check_repeats(&json_mget, &args("JSON.MGET doc other $")).is_ok());
        assert!(check_repeats(&json_mget, &args("JSON.MGET doc $ $")).is_ok());
    }

    #[test]
    fn the_refusal_names_the_rule_the_command_and_the_key() {
        let table = table();
        let a = args("SUNION cache:s cache:t cache:s");
        let r = check_repeats(table.lookup(&a).unwrap(), &a).unwrap_err();
        assert_eq!(r.rule, AVAILABILITY_RULE);
        assert_eq!(r.class, RefusalClass::TooLarge);
        assert!(
            r.reason
                .starts_with("SUNION names the key \"cache:s\" more than once"),
            "{}",
            r.reason
        );
        // A long key is clipped in the reason.
        let long = "k".repeat(1000);
        let a = args(&format!("MGET {long} {long}"));
        let r = check_repeats(table.lookup(&a).unwrap(), &a).unwrap_err();
        assert!(r.reason.len() < 300, "{}", r.reason);
    }
}
