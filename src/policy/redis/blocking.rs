//! Blocking commands under an agent's `statement_timeout`: the command's own timeout argument is
//! capped, so the upstream gives up with its native timeout reply (a nil) no later than the
//! policy allows, and "block forever" (`0`) becomes "block at most the limit". A blocking command
//! whose timeout argument tollgate cannot place is refused while a limit applies (fail closed).

use std::time::Duration;

use bytes::Bytes;

use super::commands::CommandInfo;
use crate::refusal::Refusal;

/// Where a command keeps its timeout, and in which unit.
enum Slot {
    /// Seconds (a float since Redis 6) at this index; negative counts from the end.
    Seconds(isize),
    /// Milliseconds at this index.
    Millis(isize),
    /// Milliseconds after the `BLOCK` option, if present (XREAD, XREADGROUP).
    BlockOption,
}

fn slot(name: &str) -> Option<Slot> {
    Some(match name {
        "blpop" | "brpop" | "bzpopmin" | "bzpopmax" | "brpoplpush" | "blmove" => Slot::Seconds(-1),
        "blmpop" | "bzmpop" => Slot::Seconds(1),
        "xread" | "xreadgroup" => Slot::BlockOption,
        "wait" => Slot::Millis(2),
        "waitaof" => Slot::Millis(3),
        _ => return None,
    })
}

/// The arguments to forward instead of `args`, when the timeout had to be capped to `cap`.
/// `Ok(None)`: the command does not block longer than `cap` as it is.
pub fn cap_timeout(
    info: &CommandInfo,
    args: &[Bytes],
    cap: Duration,
    rule: &str,
) -> Result<Option<Vec<Bytes>>, Refusal> {
    let name = info.name.as_str();
    let Some(slot) = slot(name) else {
        if info.has_flag("blocking") {
            return Err(Refusal::permission(
                rule,
                format!(
                    "'{name}' may block and tollgate cannot cap its timeout to the statement timeout of {} ms",
                    cap.as_millis()
                ),
            ));
        }
        return Ok(None);
    };
    let index = |i: isize| {
        if i < 0 {
            args.len().checked_sub(i.unsigned_abs())
        } else {
            Some(i as usize).filter(|&i| i < args.len())
        }
    };
    // Where the timeouts are: one fixed slot, or every BLOCK option (Redis takes the last).
    let (ats, millis) = match slot {
        Slot::Seconds(i) => (index(i).into_iter().collect(), false),
        Slot::Millis(i) => (index(i).into_iter().collect(), true),
        Slot::BlockOption => (block_values(args, name == "xreadgroup"), true),
    };
    let mut out: Option<Vec<Bytes>> = None;
    for at in ats {
        // A malformed timeout is left for the upstream to reject with its own error.
        let Some(given) = std::str::from_utf8(&args[at])
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
        else {
            continue;
        };
        let given_secs = if millis { given / 1000.0 } else { given };
        if given_secs != 0.0 && given_secs <= cap.as_secs_f64() {
            continue;
        }
        let capped = if millis {
            cap.as_millis().max(1).to_string()
        } else {
            format!("{:.3}", cap.as_secs_f64().max(0.001))
        };
        out.get_or_insert_with(|| args.to_vec())[at] = Bytes::from(capped);
    }
    Ok(out)
}

/// The positions of every `BLOCK` value of XREAD / XREADGROUP, read as Redis reads the options
/// (`GROUP g c` takes two values, `COUNT` and `BLOCK` one, `STREAMS` ends them): a repeated
/// BLOCK is capped at each occurrence, and a group, consumer or stream named "block" is not
/// taken for the option. A word Redis would not accept is stepped over (Redis answers it with
/// a syntax error), so a later BLOCK is still found.
fn block_values(args: &[Bytes], group: bool) -> Vec<usize> {
    let is = |i: usize, w: &str| args[i].eq_ignore_ascii_case(w.as_bytes());
    let mut found = Vec::new();
    let mut i = 1;
    while i < args.len() {
        let more = args.len() - i - 1;
        if is(i, "streams") && more > 0 {
            break;
        } else if (is(i, "block") || is(i, "count")) && more > 0 {
            if is(i, "block") {
                found.push(i + 1);
            }
            i += 1;
        } else if group && is(i, "group") && more >= 2 {
            i += 2;
        }
        i += 1;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::redis::tests::args;

    fn info(name: &str, blocking: bool) -> CommandInfo {
        CommandInfo {
            name: name.into(),
            flags: if blocking {
                vec!["blocking".into()]
            } else {
                vec![]
            },
            ..CommandInfo::default()
        }
    }

    fn cap(name: &str, line: &str, ms: u64) -> Result<Option<String>, Refusal> {
        cap_timeout(
            &info(name, true),
            &args(line),
            Duration::from_millis(ms),
            "p: limits",
        )
        .map(|o| {
            o.map(|v| {
                v.iter()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
        })
    }

    #[test]
    fn timeouts_are_capped_in_their_own_units() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("blpop", "BLPOP a b 0", Some("BLPOP a b 2.000")),
            ("blpop", "BLPOP a 10", Some("BLPOP a 2.000")),
            ("blpop", "BLPOP a 1.5", None),
            (
                "brpoplpush",
                "BRPOPLPUSH a b 0",
                Some("BRPOPLPUSH a b 2.000"),
            ),
            (
                "blmove",
                "BLMOVE a b LEFT RIGHT 0",
                Some("BLMOVE a b LEFT RIGHT 2.000"),
            ),
            ("bzmpop", "BZMPOP 0 1 z MIN", Some("BZMPOP 2.000 1 z MIN")),
            ("blmpop", "BLMPOP 1 1 l LEFT", None),
            (
                "xread",
                "XREAD COUNT 1 BLOCK 0 STREAMS s $",
                Some("XREAD COUNT 1 BLOCK 2000 STREAMS s $"),
            ),
            ("xread", "XREAD BLOCK 500 STREAMS s $", None),
            ("xread", "XREAD STREAMS s $", None),
            // A stream named "block" is not the option.
            ("xread", "XREAD STREAMS block $", None),
            (
                "xreadgroup",
                "XREADGROUP GROUP g c BLOCK 60000 STREAMS s >",
                Some("XREADGROUP GROUP g c BLOCK 2000 STREAMS s >"),
            ),
            // Redis takes the last BLOCK: each is capped.
            (
                "xread",
                "XREAD BLOCK 100 BLOCK 0 STREAMS s $",
                Some("XREAD BLOCK 100 BLOCK 2000 STREAMS s $"),
            ),
            (
                "xread",
                "XREAD BLOCK 0 COUNT 5 block 90000 STREAMS s $",
                Some("XREAD BLOCK 2000 COUNT 5 block 2000 STREAMS s $"),
            ),
            // A group named "streams" does not end the options.
            (
                "xreadgroup",
                "XREADGROUP GROUP streams c BLOCK 0 STREAMS s >",
                Some("XREADGROUP GROUP streams c BLOCK 2000 STREAMS s >"),
            ),
            // A COUNT of "block" is COUNT's value, not the option.
            ("xread", "XREAD COUNT block STREAMS s $", None),
            ("wait", "WAIT 1 0", Some("WAIT 1 2000")),
            ("waitaof", "WAITAOF 1 0 100", None),
            // Malformed timeouts are the upstream's to refuse.
            ("blpop", "BLPOP a -1", None),
            ("blpop", "BLPOP a soon", None),
        ];
        for (name, line, want) in cases {
            assert_eq!(cap(name, line, 2000).unwrap().as_deref(), *want, "{line}");
        }
    }

    #[test]
    fn unknown_blocking_commands_are_refused_under_a_limit() {
        let d = cap("bf.blockingthing", "BF.BLOCKINGTHING k 0", 1000).unwrap_err();
        assert_eq!(d.rule, "p: limits");
        assert!(d.reason.contains("cannot cap"), "{}", d.reason);
        let plain = cap_timeout(
            &info("get", false),
            &args("GET k"),
            Duration::from_secs(1),
            "r",
        );
        assert_eq!(plain.unwrap(), None);
    }
}
