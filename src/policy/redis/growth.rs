//! Writes that make the upstream grow a string to an offset the command names rather than to
//! the bytes it carries: refused past a built-in size, because a 30-byte `SETRANGE k 536870911 x`
//! makes Redis allocate 512 MB (its own cap), and a few of them take the memory every other
//! agent's data lives in.

use bytes::Bytes;

use super::builtin::AVAILABILITY_RULE;
use super::decide::arg_is;
use crate::refusal::{Refusal, RefusalClass};

/// The longest string one command may make the upstream build from an offset: the gateway's
/// default `limits.max_message_bytes`, the largest value an agent may send in one command.
pub const MAX_GROWTH: u64 = 64 << 20;

/// Refuses `args` (command `name` as the command table names it) when it writes past
/// [`MAX_GROWTH`] bytes into a string:
/// - SETRANGE: the offset plus the value's length;
/// - SETBIT: the byte holding the bit;
/// - BITFIELD: every SET and INCRBY (GET reads without growing), offsets in bits or `#n` times
///   the type's width.
///
/// Arguments Redis would reject (not numbers, unknown types) are left for it to answer.
pub fn check_growth(name: &str, args: &[Bytes]) -> Result<(), Refusal> {
    match name {
        "setrange" => {
            let (Some(offset), Some(value)) = (args.get(2).and_then(|a| number(a)), args.get(3))
            else {
                return Ok(());
            };
            check(name, offset.saturating_add(value.len() as u64))
        }
        "setbit" => match args.get(2).and_then(|a| number(a)) {
            Some(bit) => check(name, bit / 8 + 1),
            None => Ok(()),
        },
        "bitfield" => {
            bitfield_writes(args).try_for_each(|end_bit| check(name, end_bit.div_ceil(8)))
        }
        _ => Ok(()),
    }
}

/// The bit after the last one each BITFIELD SET or INCRBY writes, in order; stops at the
/// first sub-command it cannot read (Redis refuses the whole command then).
fn bitfield_writes(args: &[Bytes]) -> impl Iterator<Item = u64> + '_ {
    let mut i = 2;
    std::iter::from_fn(move || loop {
        let op = args.get(i)?;
        if arg_is(op, "get") {
            i += 3;
        } else if arg_is(op, "overflow") {
            i += 2;
        } else if arg_is(op, "set") || arg_is(op, "incrby") {
            let width = width(args.get(i + 1)?)?;
            let at = args.get(i + 2)?;
            i += 4;
            let start = match at.strip_prefix(b"#") {
                Some(n) => number(n)?.saturating_mul(width),
                None => number(at)?,
            };
            return Some(start.saturating_add(width));
        } else {
            return None;
        }
    })
}

/// The width of a BITFIELD type (`i8`, `u16`, ...).
fn width(ty: &[u8]) -> Option<u64> {
    match ty.first()? {
        b'i' | b'I' | b'u' | b'U' => number(&ty[1..]),
        _ => None,
    }
}

fn number(a: &[u8]) -> Option<u64> {
    std::str::from_utf8(a).ok()?.parse().ok()
}

fn check(name: &str, bytes: u64) -> Result<(), Refusal> {
    if bytes <= MAX_GROWTH {
        return Ok(());
    }
    let reason = format!(
        "{} would make the upstream grow a string to {bytes} bytes: the most one command may is {MAX_GROWTH} (every agent's data shares the upstream's memory)",
        name.to_uppercase()
    );
    Err(Refusal::new(
        RefusalClass::TooLarge,
        AVAILABILITY_RULE,
        reason,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::redis::tests::args;

    fn refused(name: &str, line: &str) -> bool {
        check_growth(name, &args(line)).is_err()
    }

    #[test]
    fn writes_past_the_cap_are_refused_and_the_rest_left_to_redis() {
        for (name, line, expected) in [
            ("setrange", "SETRANGE cache:a 536870911 x", true),
            ("setrange", "SETRANGE cache:a 67108863 x", false),
            ("setrange", "SETRANGE cache:a 67108863 xy", true),
            ("setrange", "SETRANGE cache:a 0 hello", false),
            // Redis refuses a negative offset itself.
            ("setrange", "SETRANGE cache:a -1 x", false),
            ("setrange", "SETRANGE cache:a 18446744073709551615 x", true),
            ("setbit", "SETBIT cache:b 4294967295 1", true),
            ("setbit", "SETBIT cache:b 536870911 1", false),
            ("setbit", "SETBIT cache:b 536870912 1", true),
            ("setbit", "SETBIT cache:b 7 1", false),
            ("bitfield", "BITFIELD cache:c SET u8 4294967288 255", true),
            ("bitfield", "BITFIELD cache:c set i64 #67108864 1", true),
            ("bitfield", "BITFIELD cache:c INCRBY u8 #67108863 1", false),
            ("bitfield", "BITFIELD cache:c INCRBY u8 #67108864 1", true),
            // GET reads without growing; only the writes after it count.
            ("bitfield", "BITFIELD cache:c GET u8 4294967288", false),
            (
                "bitfield",
                "BITFIELD cache:c GET u8 0 OVERFLOW SAT SET u8 0 1 INCRBY u4 4294967288 1",
                true,
            ),
            ("bitfield", "BITFIELD cache:c SET x8 4294967288 1", false),
            ("bitfield", "BITFIELD cache:c SET u8", false),
            (
                "bitfield_ro",
                "BITFIELD_RO cache:c GET u8 4294967288",
                false,
            ),
            ("get", "GET cache:a", false),
        ] {
            assert_eq!(refused(name, line), expected, "{line}");
        }
    }

    #[test]
    fn the_refusal_names_the_availability_rule_and_the_size() {
        let r = check_growth("setrange", &args("SETRANGE cache:a 536870911 x")).unwrap_err();
        assert_eq!(r.rule, AVAILABILITY_RULE);
        assert!(r.reason.contains("536870912 bytes"), "{}", r.reason);
    }
}
