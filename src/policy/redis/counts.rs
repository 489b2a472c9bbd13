//! Count arguments that make the upstream build a reply of that many elements, or walk that many
//! entries, in one go: refused above the agent's `max_rows` and above a built-in cap, because
//! the upstream runs one command at a time and every other agent waits while it works.

use bytes::Bytes;

use super::builtin::AVAILABILITY_RULE;
use super::decide::option_values;
use crate::refusal::{Refusal, RefusalClass};

/// The largest count one command may ask for when no `max_rows` is smaller.
/// (`HRANDFIELD key -20000000` kept Redis busy for 2.5 s and took 199 MB.)
pub const MAX_COUNT: u64 = 100_000;

/// Refuses `args` (command `name` as the command table names it) when a count in it is larger
/// than the agent's `max_rows` or [`MAX_COUNT`]:
/// - HRANDFIELD, SRANDMEMBER, ZRANDMEMBER: a negative count returns that many elements however
///   few the key holds (repeats allowed), so the absolute value is capped, by `max_rows` too;
/// - SCAN, HSCAN, SSCAN, ZSCAN: `COUNT` is how many entries one call walks (every occurrence:
///   Redis uses the last), capped by [`MAX_COUNT`] only (it is work, not rows returned).
///
/// Counts bounded by what the key holds (SPOP, LPOP, RPOP, LMPOP, ZMPOP, LRANGE ...) are not
/// capped here: they cost what reading the key costs, and `max_result_bytes` caps the reply.
pub fn check_counts(
    name: &str,
    args: &[Bytes],
    max_rows: Option<&(u64, String)>,
) -> Result<(), Refusal> {
    let builtin = (MAX_COUNT, AVAILABILITY_RULE);
    match name {
        "hrandfield" | "srandmember" | "zrandmember" => {
            let cap = match max_rows {
                Some((rows, rule)) if *rows < MAX_COUNT => (*rows, rule.as_str()),
                _ => builtin,
            };
            check(name, args.get(2).map(|a| &a[..]), cap)
        }
        "scan" => option_values(args, 2, "count").try_for_each(|n| check(name, Some(n), builtin)),
        "hscan" | "sscan" | "zscan" => {
            option_values(args, 3, "count").try_for_each(|n| check(name, Some(n), builtin))
        }
        _ => Ok(()),
    }
}

fn check(name: &str, count: Option<&[u8]>, (cap, rule): (u64, &str)) -> Result<(), Refusal> {
    // Not a number: the upstream answers with its own error.
    let Some(n) = count
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.trim().parse::<i64>().ok())
    else {
        return Ok(());
    };
    if n.unsigned_abs() <= cap {
        return Ok(());
    }
    let name = name.to_uppercase();
    let reason = if rule == AVAILABILITY_RULE {
        format!(
            "{name} with a count of {n} is refused: the most one command may ask for is {cap} (the upstream serves every agent one command at a time)"
        )
    } else {
        format!("{name} with a count of {n} is refused: the policy allows at most {cap} rows per command")
    };
    Err(Refusal::new(RefusalClass::TooLarge, rule, reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::redis::tests::args;

    fn rule(name: &str, line: &str, max_rows: Option<u64>) -> Option<String> {
        let rows = max_rows.map(|n| (n, "analyst: limits".to_string()));
        check_counts(name, &args(line), rows.as_ref())
            .err()
            .map(|r| r.rule)
    }

    #[test]
    fn counts_over_the_caps_are_refused() {
        let limits = Some("analyst: limits");
        let builtin = Some(AVAILABILITY_RULE);
        for (name, line, max_rows, expected) in [
            (
                "hrandfield",
                "HRANDFIELD session:31 -20000000",
                None,
                builtin,
            ),
            ("hrandfield", "HRANDFIELD session:31 -100000", None, None),
            (
                "hrandfield",
                "HRANDFIELD session:31 100001 WITHVALUES",
                None,
                builtin,
            ),
            (
                "hrandfield",
                "HRANDFIELD session:31 -1001",
                Some(1000),
                limits,
            ),
            ("hrandfield", "HRANDFIELD session:31 1000", Some(1000), None),
            ("hrandfield", "HRANDFIELD session:31", Some(1000), None),
            (
                "hrandfield",
                "HRANDFIELD session:31 -9223372036854775808",
                None,
                builtin,
            ),
            ("hrandfield", "HRANDFIELD session:31 lots", None, None),
            ("srandmember", "SRANDMEMBER s -5000", Some(1000), limits),
            (
                "zrandmember",
                "ZRANDMEMBER z -200000 WITHSCORES",
                Some(1_000_000),
                builtin,
            ),
            (
                "scan",
                "SCAN 0 MATCH cache:* COUNT 100000000",
                None,
                builtin,
            ),
            (
                "scan",
                "SCAN 0 COUNT 10 MATCH cache:* COUNT 1000000",
                None,
                builtin,
            ),
            // SCAN's COUNT is work, not rows: `max_rows` does not apply.
            ("scan", "SCAN 0 MATCH cache:* COUNT 10000", Some(1000), None),
            ("hscan", "HSCAN h 0 COUNT 200000", None, builtin),
            ("sscan", "SSCAN count 0 COUNT 5", None, None),
            (
                "zscan",
                "ZSCAN z 0 MATCH * COUNT 1 COUNT 999999",
                None,
                builtin,
            ),
            ("lpop", "LPOP l 5000000", Some(10), None),
        ] {
            assert_eq!(
                rule(name, line, max_rows).as_deref(),
                expected,
                "{line} with max_rows {max_rows:?}"
            );
        }
    }
}
