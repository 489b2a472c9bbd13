//! A Redis command as the audit log records it: name, subcommand, key and channel names, the
//! parameter names of CONFIG, and the code of scripts and functions (it is what ran); every
//! other argument replaced by `?`, so values never reach the log.

mod arg;

use bytes::Bytes;

use crate::policy::redis::FoundKey;

/// What one name (key, channel, subcommand, parameter) may take of a record, in bytes.
const MAX_NAME: usize = 128;
/// What a script's or function library's code may take: the keys after it still fit.
const MAX_SCRIPT: usize = 2048;
/// Past this, the remaining arguments are left out (and counted).
const MAX_STATEMENT: usize = 4096;

/// Commands whose arguments other than keys are recorded by a rule of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Other,
    /// (UN)SUBSCRIBE and their pattern and shard forms: every argument is a channel name.
    Channels,
    /// PUBLISH, SPUBLISH: the channel (the message is a value).
    Publish,
    /// EVAL, EVAL_RO: the script.
    Eval,
    /// EVALSHA, EVALSHA_RO, FCALL, FCALL_RO: the script's SHA1 or the function's name.
    Call,
    /// SCRIPT LOAD's script, SCRIPT EXISTS's SHA1s.
    Script,
    /// FUNCTION LOAD's code (and its REPLACE).
    Function,
    /// CONFIG SET's parameter names (not their values), CONFIG GET's patterns.
    Config,
    /// SCAN's options: the MATCH pattern is a key pattern the policy checked, COUNT and TYPE
    /// say how much and what it walked.
    Scan,
    /// HSCAN, SSCAN, ZSCAN: their option words and COUNT; the MATCH pattern is matched against
    /// fields and members, which are values, so it stays redacted.
    ScanValues,
}

fn family(name: &[u8]) -> Family {
    // The longest name looked for, `punsubscribe`, has 12 letters.
    let mut buf = [0u8; 12];
    let Some(lower) = buf.get_mut(..name.len()) else {
        return Family::Other;
    };
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    // The relay's own list of (un)subscribe commands.
    if super::pubsub::SubKind::of_word(lower).is_some() {
        return Family::Channels;
    }
    match &*lower {
        b"publish" | b"spublish" => Family::Publish,
        b"eval" | b"eval_ro" => Family::Eval,
        b"evalsha" | b"evalsha_ro" | b"fcall" | b"fcall_ro" => Family::Call,
        b"script" => Family::Script,
        b"function" => Family::Function,
        b"config" => Family::Config,
        b"scan" => Family::Scan,
        b"hscan" | b"sscan" | b"zscan" => Family::ScanValues,
        _ => Family::Other,
    }
}

/// How one argument is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shown {
    Redacted,
    Name,
    /// A subcommand or option word: upper-cased.
    Word,
    Code,
}

/// How argument `i` (1..) of `args` is recorded; `scan`: the SCAN family's options, read once
/// (`scan_options`).
fn shown(
    args: &[Bytes],
    i: usize,
    keys: &[FoundKey],
    subcommand: bool,
    fam: Family,
    scan: &[Shown],
) -> Shown {
    let sub = |word: &[u8]| args[1].eq_ignore_ascii_case(word);
    let has_sub = matches!(fam, Family::Script | Family::Function | Family::Config);
    if i == 1 && (subcommand || has_sub) {
        return Shown::Word;
    }
    if keys.iter().any(|k| k.index == i) {
        return Shown::Name;
    }
    match fam {
        Family::Channels => Shown::Name,
        Family::Publish | Family::Call if i == 1 => Shown::Name,
        Family::Eval if i == 1 => Shown::Code,
        Family::Script if sub(b"load") && i == 2 => Shown::Code,
        Family::Script if sub(b"exists") => Shown::Name,
        // FUNCTION LOAD [REPLACE] code
        Family::Function if sub(b"load") && i == args.len() - 1 => Shown::Code,
        Family::Function if sub(b"load") && args[i].eq_ignore_ascii_case(b"replace") => Shown::Word,
        // CONFIG SET name value [name value ...]
        Family::Config if sub(b"set") && i.is_multiple_of(2) => Shown::Name,
        Family::Config if sub(b"get") => Shown::Name,
        Family::Scan | Family::ScanValues => scan.get(i).copied().unwrap_or(Shown::Redacted),
        _ => Shown::Redacted,
    }
}

/// The types SCAN's TYPE names that are shown.
const TYPE_NAMES: [&[u8]; 6] = [b"string", b"list", b"set", b"zset", b"hash", b"stream"];

/// A COUNT shown as sent: a plain number of at most six digits (the policy caps COUNT at
/// 100,000), no leading zero; a longer one could be a card number passed as a count.
fn plain_count(v: &[u8]) -> bool {
    (1..=6).contains(&v.len()) && v[0] != b'0' && v.iter().all(u8::is_ascii_digit)
}

/// How each argument of a SCAN-family command is recorded (SCAN cursor [options]; xSCAN key
/// cursor [options]; `from` is where the options start), read in one pass as Redis's parser
/// reads them: in turn from `from`, `MATCH` and `COUNT` (and SCAN's `TYPE`) each take the
/// argument after them, `NOVALUES` none. The cursor, and anything from a word Redis would
/// reject on, stay redacted; so does the MATCH pattern unless `scan` (SCAN's matches keys), and
/// a COUNT that is not a number (Redis refuses it: it is not a count but text).
fn scan_options(args: &[Bytes], from: usize, scan: bool) -> Vec<Shown> {
    let mut how = vec![Shown::Redacted; args.len()];
    let mut at = from;
    while at < args.len() {
        let word = &args[at];
        let is = |w: &[u8]| word.eq_ignore_ascii_case(w);
        let takes_value = is(b"match") || is(b"count") || (scan && is(b"type"));
        if takes_value && at + 1 < args.len() {
            let value = &args[at + 1];
            let shown = if is(b"match") {
                scan
            } else if is(b"count") {
                plain_count(value)
            } else {
                // SCAN's TYPE: one of Redis's own type names; any other text (a module's
                // type, or a value posing as one) is not shown.
                TYPE_NAMES.iter().any(|t| value.eq_ignore_ascii_case(t))
            };
            how[at] = Shown::Word;
            if shown {
                how[at + 1] = Shown::Name;
            }
            at += 2;
        } else if is(b"novalues") {
            how[at] = Shown::Word;
            at += 1;
        } else {
            break;
        }
    }
    how
}

/// `SET cache:1 ?`, `CLIENT SETNAME ?`, `SUBSCRIBE news.a`, `CONFIG SET dir ?`,
/// `EVAL "return redis.call('get',KEYS[1])" ? cache:1`: names and code kept, values redacted.
/// Text is shown as [`arg::push`] writes it: bare, or quoted and escaped, cuts marked.
pub fn statement(args: &[Bytes], keys: &[FoundKey], subcommand: bool) -> String {
    let Some(name) = args.first() else {
        return String::new();
    };
    let fam = family(name);
    let scan = match fam {
        Family::Scan => scan_options(args, 2, true),
        Family::ScanValues => scan_options(args, 3, false),
        _ => Vec::new(),
    };
    // Every argument shown costs about its length; every other one two bytes.
    let mut out = String::with_capacity(
        args.iter()
            .map(|a| a.len().min(MAX_NAME) + 2)
            .sum::<usize>()
            .min(MAX_STATEMENT + 32),
    );
    arg::push(&mut out, name, MAX_NAME, true);
    for (i, a) in args.iter().enumerate().skip(1) {
        if out.len() > MAX_STATEMENT {
            // Bare text never starts with `…`: this cannot be an argument.
            out.push_str(&format!(" …[+{} arguments]", args.len() - i));
            break;
        }
        out.push(' ');
        match shown(args, i, keys, subcommand, fam, &scan) {
            Shown::Redacted => out.push('?'),
            Shown::Name => arg::push(&mut out, a, MAX_NAME, false),
            Shown::Word => arg::push(&mut out, a, MAX_NAME, true),
            Shown::Code => arg::push(&mut out, a, MAX_SCRIPT, false),
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

    fn key(index: usize) -> FoundKey {
        FoundKey {
            index,
            access: Default::default(),
        }
    }

    #[test]
    fn values_are_never_recorded() {
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
            statement(&args("pSubscribe news.*"), &[], false),
            "PSUBSCRIBE news.*"
        );
        assert_eq!(
            statement(&args("migrate h 1 cache:1 0 100 AUTH pw"), &[key(3)], false),
            "MIGRATE ? ? cache:1 ? ? ? ?"
        );
    }

    /// A script is the code that ran, not a stored value: it is recorded (keys as ever, the
    /// script's other arguments redacted); so are the SHA1s and function names that call one.
    #[test]
    fn scripts_and_function_code_are_recorded() {
        let eval = |name: &str, script: &str, rest: &[&str], keys: &[FoundKey]| {
            let mut a = vec![
                Bytes::from(name.to_string()),
                Bytes::from(script.to_string()),
            ];
            a.extend(rest.iter().map(|r| Bytes::from(r.to_string())));
            statement(&a, keys, false)
        };
        assert_eq!(
            eval("EVAL", "return redis.call('get','admin:x')", &["0"], &[]),
            r#"EVAL "return redis.call('get','admin:x')" ?"#
        );
        assert_eq!(
            eval(
                "eval_ro",
                "return redis.call(\"get\", KEYS[1])\n",
                &["1", "cache:1", "argv-secret"],
                &[key(3)]
            ),
            r#"EVAL_RO "return redis.call(\"get\", KEYS[1])\n" ? cache:1 ?"#
        );
        assert_eq!(
            statement(
                &args("evalsha e0e1f9fabfc9d4800c877a703b823ac0578ff831 1 cache:1 v"),
                &[key(3)],
                false
            ),
            "EVALSHA e0e1f9fabfc9d4800c877a703b823ac0578ff831 ? cache:1 ?"
        );
        assert_eq!(
            statement(&args("FCALL_RO myfunc 0 v"), &[], false),
            "FCALL_RO myfunc ? ?"
        );
        assert_eq!(
            eval("SCRIPT", "load", &["return 1"], &[]),
            r#"SCRIPT LOAD "return 1""#
        );
        assert_eq!(
            statement(&args("script exists abc def"), &[], true),
            "SCRIPT EXISTS abc def"
        );
        let lib = "#!lua name=mylib\nredis.register_function('f', function() return 1 end)";
        let shown_lib =
            r##""#!lua name=mylib\nredis.register_function('f', function() return 1 end)""##;
        assert_eq!(
            eval("FUNCTION", "LOAD", &["replace", lib], &[]),
            format!("FUNCTION LOAD REPLACE {shown_lib}")
        );
        assert_eq!(
            eval("function", "load", &[lib], &[]),
            format!("FUNCTION LOAD {shown_lib}")
        );
        assert_eq!(
            statement(&args("FUNCTION RESTORE payload"), &[], true),
            "FUNCTION RESTORE ?"
        );
        // A long script is cut, visibly, and the keys after it are still recorded.
        let long = format!("return 1 -- {}", "x".repeat(5000));
        let shown = eval("EVAL", &long, &["1", "cache:1"], &[key(3)]);
        assert!(shown.starts_with("EVAL \"return 1 -- xxx"), "{shown}");
        assert!(shown.ends_with("\"…[+2964 bytes] ? cache:1"), "{shown}");
    }

    /// CONFIG SET's parameter names are recorded, never their values (`requirepass`).
    #[test]
    fn config_parameter_names_are_recorded() {
        assert_eq!(
            statement(&args("CONFIG SET dir /x"), &[], true),
            "CONFIG SET dir ?"
        );
        assert_eq!(
            statement(&args("config set requirepass pw maxmemory 1gb"), &[], true),
            "CONFIG SET requirepass ? maxmemory ?"
        );
        assert_eq!(
            statement(&args("Config gEt maxmemory *pass*"), &[], true),
            "CONFIG GET maxmemory *pass*"
        );
        // The same without the command table (a refusal before the lookup).
        assert_eq!(
            statement(&args("config set dir /x"), &[], false),
            "CONFIG SET dir ?"
        );
        assert_eq!(
            statement(&args("CONFIG RESETSTAT"), &[], true),
            "CONFIG RESETSTAT"
        );
    }

    /// SCAN's MATCH pattern is the reach the policy checked: recorded, like keys. The patterns of
    /// HSCAN, SSCAN and ZSCAN match fields and members (values): redacted.
    #[test]
    fn scan_patterns_are_recorded_member_patterns_are_not() {
        assert_eq!(
            statement(
                &args("scan 0 match cache:* count 500 type string"),
                &[],
                false
            ),
            "SCAN ? MATCH cache:* COUNT 500 TYPE string"
        );
        assert_eq!(
            statement(&args("SCAN 17 MATCH a:* MATCH cache:*"), &[], false),
            "SCAN ? MATCH a:* MATCH cache:*"
        );
        // Read in turn as Redis does: a pattern named like an option is still the pattern.
        assert_eq!(
            statement(&args("SCAN 0 MATCH count COUNT 5"), &[], false),
            "SCAN ? MATCH count COUNT 5"
        );
        // What Redis would reject (a word it does not know, an option without its value) is
        // not read as options.
        assert_eq!(
            statement(&args("SCAN 0 secret MATCH x"), &[], false),
            "SCAN ? ? ? ?"
        );
        assert_eq!(statement(&args("SCAN 0 MATCH"), &[], false), "SCAN ? ?");
        assert_eq!(
            statement(&args("SSCAN s 0 MATCH 078-05-* COUNT 10"), &[key(1)], false),
            "SSCAN s ? MATCH ? COUNT 10"
        );
        assert_eq!(
            statement(
                &args("hscan session:1 0 match *mail* novalues"),
                &[key(1)],
                false
            ),
            "HSCAN session:1 ? MATCH ? NOVALUES"
        );
        assert_eq!(
            statement(&args("ZSCAN z 0 COUNT 3 MATCH 4111*"), &[key(1)], false),
            "ZSCAN z ? COUNT 3 MATCH ?"
        );
        // Values where Redis expects none are not shown: TYPE is SCAN's only (HSCAN's is a
        // syntax error there, its argument anyone's text), a COUNT that is not a number.
        assert_eq!(
            statement(
                &args("HSCAN session:1 0 TYPE 078-05-1120"),
                &[key(1)],
                false
            ),
            "HSCAN session:1 ? ? ?"
        );
        assert_eq!(
            statement(&args("SCAN 0 COUNT 078-05-1120 TYPE 4111-1111"), &[], false),
            "SCAN ? COUNT ? TYPE ?"
        );
        // Only Redis's type names, and plain counts of up to six digits.
        assert_eq!(
            statement(
                &args("SCAN 0 TYPE Swordfish COUNT 4111111111111111"),
                &[],
                false
            ),
            "SCAN ? TYPE ? COUNT ?"
        );
        assert_eq!(
            statement(
                &args("SCAN 0 TYPE zset COUNT 078051 COUNT 100000"),
                &[],
                false
            ),
            "SCAN ? TYPE zset COUNT ? COUNT 100000"
        );
    }

    #[test]
    fn names_are_escaped_distinguishably_and_cut_visibly() {
        let name = Bytes::from_static(b"g\xc3\xa9t\x01");
        let k = Bytes::from_static(b"k\xffey\n");
        assert_eq!(
            statement(&[name, k], &[key(1)], false),
            r#""GéT\x01" "k\xffey\n""#
        );
        // A control byte is not a literal `?`, nor is a key named `?` a redacted value.
        let get = |k: &[u8]| {
            statement(
                &[Bytes::from_static(b"GET"), Bytes::copy_from_slice(k)],
                &[key(1)],
                false,
            )
        };
        assert_eq!(get(b"a\x1bb"), r#"GET "a\x1bb""#);
        assert_eq!(get(b"a?b"), "GET a?b");
        assert_eq!(get(b"?"), r#"GET "?""#);
        assert_eq!(get(b"a b"), r#"GET "a b""#);
        // Two keys sharing their first 128 bytes read differently.
        let prefix = format!("cache:{}", "A".repeat(140));
        let (a, b) = (
            get(format!("{prefix}:tail").as_bytes()),
            get(format!("{prefix}:other").as_bytes()),
        );
        assert_ne!(a, b);
        assert_eq!(a, format!("GET \"cache:{}\"…[+23 bytes]", "A".repeat(122)));
        let long = Bytes::from(vec![b'a'; 300]);
        assert_eq!(
            statement(&[long], &[], false),
            format!("\"{}\"…[+172 bytes]", "A".repeat(MAX_NAME))
        );
        let huge: Vec<Bytes> = std::iter::once(Bytes::from_static(b"mset"))
            .chain((0..3000).map(|_| Bytes::from_static(b"value")))
            .collect();
        let shown = statement(&huge, &[], false);
        assert!(shown.ends_with(" …[+953 arguments]"), "{shown}");
        assert!(shown.len() < MAX_STATEMENT + 32);
        // Bounded whatever the arguments hold.
        let nasty: Vec<Bytes> = std::iter::once(Bytes::from_static(b"eval"))
            .chain(std::iter::once(Bytes::from(vec![0x1b; 100_000])))
            .chain((0..3000).map(|_| Bytes::from(vec![0xff; 1000])))
            .collect();
        let keys: Vec<FoundKey> = (2..3002).map(key).collect();
        let shown = statement(&nasty, &keys, false);
        assert!(
            shown.len() < MAX_STATEMENT + MAX_SCRIPT + MAX_NAME + 64,
            "{}",
            shown.len()
        );
    }
}
