//! The Redis decision: a pure function of (rules, command table, arguments). No I/O.

use bytes::Bytes;

use super::builtin;
use super::commands::{CommandInfo, CommandTable, KeyAccess, Looked};
use super::keys::{find_keys, FoundKey, KeysError};
use super::mask::Strategy;
use super::rules::{covers_field, KeyMask, PatternRule, RedisRules};
use crate::policy::decide::DEFAULT_DENY;
use crate::policy::glob::Glob;
use crate::refusal::Refusal;

/// How the reply must be masked before the agent sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum MaskPlan {
    #[default]
    None,
    /// The reply is one value (GET, HGET, GETDEL, SET ... GET).
    Value(Strategy),
    /// The reply is an array of values; element i masked with the i-th strategy (MGET, HMGET).
    Elements(Vec<Option<Strategy>>),
    /// Field/value pairs: a flat array, an array of pairs, or a RESP3 map (HGETALL, HRANDFIELD).
    HashPairs(MaskFields),
    /// `[cursor, [field, value, ...]]` (HSCAN).
    ScanPairs(MaskFields),
    /// An array of values whose fields are unknown: every element masked (HVALS).
    AllValues(Strategy),
    /// CONFIG GET: the secret parameters (`builtin::SECRET_SETTINGS`) are left out.
    ConfigSecrets,
    /// ACL LIST / ACL GETUSER: the password hashes of the user tollgate logs in as (of every
    /// user while that is unknown) are left out.
    AclSecrets(Option<String>),
}

/// Which hash fields are masked, and how: one part per mask rule of the key (its fields, none
/// meaning every field, and its strategy); a field several parts mask gets the strictest.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskFields {
    pub parts: Vec<(Vec<String>, Strategy)>,
}

impl MaskFields {
    /// One rule's fields.
    pub fn single(fields: Vec<String>, strategy: Strategy) -> MaskFields {
        MaskFields {
            parts: vec![(fields, strategy)],
        }
    }

    pub fn of(&self, field: &[u8]) -> Option<Strategy> {
        self.parts
            .iter()
            .filter(|(fields, _)| covers_field(fields, field))
            .map(|(_, s)| *s)
            .reduce(Strategy::stricter)
    }
}

impl From<&KeyMask<'_>> for MaskFields {
    fn from(m: &KeyMask<'_>) -> MaskFields {
        MaskFields { parts: m.parts() }
    }
}

impl MaskPlan {
    pub fn is_none(&self) -> bool {
        matches!(self, MaskPlan::None)
    }

    /// What the agent is shown of the reply, in the words of policy files (`tollgate explain`).
    pub fn describe(&self) -> String {
        let fields = |m: &MaskFields| {
            m.parts
                .iter()
                .map(|(fields, s)| match fields.is_empty() {
                    true => format!("every field: {}", s.name()),
                    false => format!("{}: {}", fields.join(", "), s.name()),
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        match self {
            MaskPlan::None => "none".into(),
            MaskPlan::Value(s) => format!("the value: {}", s.name()),
            MaskPlan::Elements(each) => {
                let each: Vec<&str> = each.iter().map(|s| s.map_or("-", Strategy::name)).collect();
                format!("each value in turn: {}", each.join(", "))
            }
            MaskPlan::HashPairs(m) => format!("hash fields ({})", fields(m)),
            MaskPlan::ScanPairs(m) => format!("scanned hash fields ({})", fields(m)),
            MaskPlan::AllValues(s) => format!("every value: {}", s.name()),
            MaskPlan::ConfigSecrets => "secret parameters left out (builtin)".into(),
            MaskPlan::AclSecrets(_) => "password hashes left out (builtin)".into(),
        }
    }
}

/// The command as judged: keys found (positions in the arguments), the mask plan, and whether
/// it reaches other clients' connections.
#[derive(Debug, Default, Clone)]
pub struct Judged {
    pub keys: Vec<FoundKey>,
    pub mask: MaskPlan,
    /// The mask rule behind `mask`, for the audit record (a policy mask, not a built-in one).
    pub mask_rule: Option<String>,
    pub scope: builtin::ClientScope,
}

fn lname(info: &CommandInfo) -> &str {
    &info.name
}

pub(super) fn arg_is(a: &[u8], word: &str) -> bool {
    a.eq_ignore_ascii_case(word.as_bytes())
}

/// Judges one command. `args[0]` is the command name.
pub fn decide(rules: &RedisRules, table: &CommandTable, args: &[Bytes]) -> Result<Judged, Refusal> {
    decide_looked_up(rules, table.lookup(args), args)
}

/// [`decide`] for a command already looked up in the command table.
pub fn decide_looked_up(
    rules: &RedisRules,
    looked: Looked<'_>,
    args: &[Bytes],
) -> Result<Judged, Refusal> {
    let info = match looked {
        Ok(i) => i,
        Err(sub) => {
            let name = String::from_utf8_lossy(args.first().map(|a| &a[..]).unwrap_or(b""));
            let what = if sub {
                let s = String::from_utf8_lossy(&args[1]);
                format!(
                    "unknown subcommand '{}'. Try {} HELP.",
                    clip(&s),
                    clip(&name).to_uppercase()
                )
            } else {
                format!("unknown command '{}'", clip(&name))
            };
            if rules.passthrough && !rules.has_denies() && rules.masks.is_empty() {
                // The upstream answers it (module commands loaded later, typos).
                return Ok(Judged::default());
            }
            return Err(Refusal::syntax("builtin: unknown-command", what));
        }
    };
    let name = lname(info);
    if !info.arity_ok(args.len()) {
        return Err(Refusal::syntax(
            "builtin: arity",
            format!("wrong number of arguments for '{name}' command"),
        ));
    }
    check_command(rules, info)?;
    let mut judged = Judged {
        scope: builtin::client_scope(name, args),
        ..Judged::default()
    };
    if name == "config|get" {
        judged.mask = MaskPlan::ConfigSecrets;
    }
    check_special(rules, info, args)?;
    let keys_placed = if name == "sort" || name == "sort_ro" {
        sort_keys(args, &mut judged.keys)
    } else {
        find_keys(info, args, &mut judged.keys)
    };
    if name == "set" && !args[3..].iter().any(|a| arg_is(a, "get")) {
        // SET's spec says RW+access only because of its optional GET argument.
        for k in &mut judged.keys {
            k.access = KeyAccess {
                write: true,
                ..KeyAccess::default()
            };
        }
    }
    match keys_placed {
        Ok(()) => {}
        Err(_) if rules.passthrough && rules.masks.is_empty() && rules.deny_keys.is_empty() => {
            return Ok(judged)
        }
        Err(KeysError::Unplaceable) => {
            return Err(Refusal::permission(
                "builtin: unplaceable-keys",
                format!("tollgate cannot tell which keys '{name}' touches with these arguments"),
            ))
        }
        Err(KeysError::Malformed) => {
            return Err(Refusal::syntax(
                "builtin: arity",
                format!("wrong number of arguments or keys for '{name}' command"),
            ))
        }
    }
    check_keys(rules, name, args, &judged.keys)?;
    if judged.mask.is_none() {
        (judged.mask, judged.mask_rule) = mask_plan(rules, name, args, &judged.keys)?;
    }
    Ok(judged)
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

fn check_command(rules: &RedisRules, info: &CommandInfo) -> Result<(), Refusal> {
    let name = lname(info);
    let facts = info.builtin();
    if let Some(why) = facts.never {
        return Err(Refusal::permission("builtin: protocol", why));
    }
    if let Some(d) = rules.deny.iter().find(|d| d.pattern.covers(info)) {
        return Err(Refusal::permission(
            d.rule.clone(),
            format!("command '{name}' is denied"),
        ));
    }
    let named = || {
        rules.allow.iter().any(|a| {
            matches!(&a.pattern, super::rules::CommandPattern::Name(_)) && a.pattern.covers(info)
        })
    };
    // Passthrough with deny_keys or masks: a command that reaches keys it does not name (a
    // script's redis.call, FLUSHDB) would get around them (a live review read a denied key
    // through EVAL). Refused unless the policy names it, as for a restricted agent.
    if rules.passthrough
        && (!rules.deny_keys.is_empty() || !rules.masks.is_empty())
        && super::builtin::REACHES_UNNAMED_KEYS.contains(&name)
        && !named()
    {
        return Err(Refusal::permission(
            "builtin: unnamed-keys",
            format!("command '{name}' reaches keys it does not name, and this agent's policy denies or masks keys; a policy that trusts the agent with it names it in commands"),
        ));
    }
    if rules.passthrough || facts.always_allowed {
        return Ok(());
    }
    if facts.default_refused {
        if !named() {
            return Err(Refusal::permission(
                "builtin: dangerous-command",
                format!("command '{name}' is refused unless a policy names it explicitly"),
            ));
        }
        return Ok(());
    }
    if rules.allow.iter().any(|a| a.pattern.covers(info)) {
        return Ok(());
    }
    Err(Refusal::permission(
        DEFAULT_DENY,
        format!("no rule allows command '{name}'"),
    ))
}

/// Arguments that are not keys but still need a rule: channels, databases, scan patterns.
/// Redis's option parsers let an option repeat and take its last value, so every occurrence of
/// an option is checked, not the first one found.
fn check_special(rules: &RedisRules, info: &CommandInfo, args: &[Bytes]) -> Result<(), Refusal> {
    let name = lname(info);
    if rules.passthrough {
        return Ok(());
    }
    match name {
        "subscribe" | "ssubscribe" => {
            for ch in &args[1..] {
                need_channel(rules, ch, false)?;
            }
        }
        "psubscribe" => {
            for p in &args[1..] {
                need_channel(rules, p, true)?;
            }
        }
        "publish" | "spublish" => need_channel(rules, &args[1], false)?,
        // The channels (or their subscriber counts) another agent uses are not this one's to see:
        // a pattern must lie within the agent's channel rules; none means every channel.
        "pubsub|channels" | "pubsub|shardchannels" => {
            if args.len() == 2 {
                need_channel(rules, b"*", true)?;
            }
            for p in &args[2..] {
                need_channel(rules, p, true)?;
            }
        }
        "pubsub|numsub" | "pubsub|shardnumsub" => {
            for ch in &args[2..] {
                need_channel(rules, ch, false)?;
            }
        }
        "select" => need_db(rules, &args[1])?,
        "move" => need_db(rules, &args[2])?,
        "swapdb" => {
            need_db(rules, &args[1])?;
            need_db(rules, &args[2])?;
        }
        // COPY source destination [DB n] [REPLACE]: options start after the two keys.
        "copy" => {
            for db in option_values(args, 3, "db") {
                need_db(rules, db)?;
            }
        }
        "scan" => {
            // SCAN cursor [MATCH p] [COUNT n] [TYPE t]: Redis filters with the last MATCH.
            let mut patterns = option_values(args, 2, "match").peekable();
            let within = |p: &[u8]| rules.read_keys.iter().any(|r| pattern_within(p, &r.glob));
            let ok = patterns.peek().is_some() && patterns.all(within);
            if !ok {
                return Err(Refusal::permission(
                    rule_or_default(&rules.read_keys),
                    "SCAN needs a MATCH pattern within the keys the agent may read (every MATCH, when it repeats)",
                ));
            }
        }
        // CLIENT TRACKING ... BCAST [PREFIX p]...: invalidations name every key written under
        // each prefix (all keys without one), read or not: each prefix must lie within the
        // keys the agent may read, as SCAN's MATCH (a live review was sent admin:* key names).
        "client|tracking" if args.iter().any(|a| a.eq_ignore_ascii_case(b"bcast")) => {
            let mut prefixes: Vec<Vec<u8>> = option_values(args, 3, "prefix")
                .map(|p| {
                    let mut glob = Vec::with_capacity(p.len() + 1);
                    for &c in p {
                        if matches!(c, b'*' | b'?' | b'[' | b']' | b'\\') {
                            glob.push(b'\\');
                        }
                        glob.push(c);
                    }
                    glob.push(b'*');
                    glob
                })
                .collect();
            if prefixes.is_empty() {
                prefixes.push(b"*".to_vec());
            }
            let within = |p: &Vec<u8>| rules.read_keys.iter().any(|r| pattern_within(p, &r.glob));
            if !prefixes.iter().all(within) {
                return Err(Refusal::permission(
                    rule_or_default(&rules.read_keys),
                    "CLIENT TRACKING BCAST needs a PREFIX within the keys the agent may read for every prefix (without one it tracks every key)",
                ));
            }
        }
        "randomkey" if !rules.read_keys.iter().any(|r| r.glob.as_str() == "*") => {
            return Err(Refusal::permission(
                DEFAULT_DENY,
                "RANDOMKEY may name any key: allowed only with read_keys = [\"*\"]",
            ));
        }
        // How many keys the database holds counts the keys outside the agent's patterns too.
        "dbsize" if !rules.read_keys.iter().any(|r| r.glob.as_str() == "*") => {
            return Err(Refusal::permission(
                DEFAULT_DENY,
                "DBSIZE counts every key, those the agent may not read included: allowed only with read_keys = [\"*\"] (count yours with SCAN ... MATCH)",
            ));
        }
        _ => {}
    }
    Ok(())
}

/// The argument after every occurrence of option `word` at or after `from`: a superset of the
/// value Redis's parser uses, whichever occurrence it takes (an occurrence that is itself
/// another option's value only adds a check).
pub(super) fn option_values<'a>(
    args: &'a [Bytes],
    from: usize,
    word: &'a str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    let from = from.min(args.len());
    args[from..]
        .windows(2)
        .filter(move |w| arg_is(&w[0], word))
        .map(|w| &w[1][..])
}

fn rule_or_default(rules: &[PatternRule]) -> String {
    rules
        .first()
        .map(|r| r.rule.clone())
        .unwrap_or_else(|| DEFAULT_DENY.into())
}

fn need_db(rules: &RedisRules, db: &[u8]) -> Result<(), Refusal> {
    let n = std::str::from_utf8(db)
        .ok()
        .and_then(|s| s.parse::<u32>().ok());
    match n {
        Some(n) if rules.databases.contains(&n) => Ok(()),
        _ => Err(Refusal::permission(
            DEFAULT_DENY,
            format!(
                "database {} is not in the policy's databases",
                clip(&String::from_utf8_lossy(db))
            ),
        )),
    }
}

fn need_channel(rules: &RedisRules, ch: &[u8], is_pattern: bool) -> Result<(), Refusal> {
    let ok = rules.channels.iter().any(|r| {
        if is_pattern {
            pattern_within(ch, &r.glob)
        } else {
            r.glob.matches_bytes(ch)
        }
    });
    if ok {
        Ok(())
    } else {
        Err(Refusal::permission(
            DEFAULT_DENY,
            format!(
                "no rule allows channel{} '{}'",
                if is_pattern { " pattern" } else { "" },
                clip(&String::from_utf8_lossy(ch))
            ),
        ))
    }
}

/// Is every name `pattern` (a Redis glob) can match also matched by `glob`? Conservative:
/// a pattern without wildcards is tested as a name; one with wildcards only under `*` or under
/// `prefix*` when it starts with that literal prefix.
pub fn pattern_within(pattern: &[u8], glob: &Glob) -> bool {
    let meta = |b: &u8| matches!(b, b'*' | b'?' | b'[' | b'\\');
    if !pattern.iter().any(meta) {
        return glob.matches_bytes(pattern);
    }
    let g = glob.as_str().as_bytes();
    match g.split_last() {
        Some((b'*', prefix)) => !prefix.iter().any(meta) && pattern.starts_with(prefix),
        _ => false,
    }
}

/// SORT key [BY p] [LIMIT o c] [GET p ...] [ASC|DESC] [ALPHA] [STORE dst]: BY and GET read
/// keys named by the sorted values, so they are refused; STORE writes `dst`.
fn sort_keys(args: &[Bytes], out: &mut Vec<FoundKey>) -> Result<(), KeysError> {
    out.push(FoundKey {
        index: 1,
        access: KeyAccess {
            read: true,
            exposes: true,
            ..KeyAccess::default()
        },
    });
    let mut i = 2;
    while i < args.len() {
        let a = &args[i];
        if arg_is(a, "by") || arg_is(a, "get") {
            return Err(KeysError::Unplaceable);
        } else if arg_is(a, "limit") {
            i += 3;
            continue;
        } else if arg_is(a, "store") {
            let dst = i + 1;
            if dst >= args.len() {
                return Err(KeysError::Malformed);
            }
            out.push(FoundKey {
                index: dst,
                access: KeyAccess {
                    write: true,
                    ..KeyAccess::default()
                },
            });
            i += 2;
            continue;
        }
        i += 1;
    }
    Ok(())
}

fn check_keys(
    rules: &RedisRules,
    name: &str,
    args: &[Bytes],
    keys: &[FoundKey],
) -> Result<(), Refusal> {
    let key_name = |k: &FoundKey| clip(&String::from_utf8_lossy(&args[k.index]));
    for k in keys.iter().filter(|k| !k.access.not_key) {
        let key = &args[k.index];
        if let Some(d) = rules.deny_keys.iter().find(|d| d.glob.matches_bytes(key)) {
            return Err(Refusal::permission(
                d.rule.clone(),
                format!("key '{}' is denied", key_name(k)),
            ));
        }
        if rules.passthrough {
            continue;
        }
        if (k.access.read || k.access.exposes) && !matches_any(&rules.read_keys, key) {
            return Err(Refusal::permission(
                DEFAULT_DENY,
                format!("no rule allows '{name}' to read key '{}'", key_name(k)),
            ));
        }
        if k.access.write && !matches_any(&rules.write_keys, key) {
            return Err(Refusal::permission(
                DEFAULT_DENY,
                format!("no rule allows '{name}' to write key '{}'", key_name(k)),
            ));
        }
    }
    if rules.passthrough {
        return Ok(());
    }
    // Data moving from one key to another (RENAME, COPY, SMOVE, *STORE, BITOP ...): the agent
    // must be able to read and write every key involved.
    let reads = keys.iter().any(|k| k.access.read || k.access.exposes);
    let writes = keys.iter().any(|k| k.access.write);
    let distinct = keys.iter().any(|k| args[k.index] != args[keys[0].index]);
    if reads && writes && distinct {
        for k in keys.iter().filter(|k| !k.access.not_key) {
            let key = &args[k.index];
            if !matches_any(&rules.read_keys, key) || !matches_any(&rules.write_keys, key) {
                return Err(Refusal::permission(
                    "builtin: copy-between-keys",
                    format!(
                        "'{name}' moves data between keys; the agent must be able to read and write key '{}'",
                        key_name(k)
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn matches_any(rules: &[PatternRule], key: &[u8]) -> bool {
    rules.iter().any(|r| r.glob.matches_bytes(key))
}

fn mask_plan(
    rules: &RedisRules,
    name: &str,
    args: &[Bytes],
    keys: &[FoundKey],
) -> Result<(MaskPlan, Option<String>), Refusal> {
    if rules.masks.is_empty() {
        return Ok((MaskPlan::None, None));
    }
    let masked: Vec<(usize, KeyMask)> = keys
        .iter()
        .filter(|k| !k.access.not_key)
        .filter_map(|k| rules.mask_for(&args[k.index]).map(|m| (k.index, m)))
        .collect();
    let Some((_, first)) = masked.first() else {
        return Ok((MaskPlan::None, None));
    };
    let plan = match name {
        "get" | "getdel" | "getex" | "getset" => MaskPlan::Value(first.value()),
        "set" => MaskPlan::Value(first.value()), // only with GET: otherwise it returns no value
        "mget" => MaskPlan::Elements(
            args[1..]
                .iter()
                .map(|k| rules.mask_for(k).map(|m| m.value()))
                .collect(),
        ),
        "hget" => match first.field(&args[2]) {
            Some(s) => MaskPlan::Value(s),
            None => MaskPlan::None,
        },
        "hmget" => MaskPlan::Elements(args[2..].iter().map(|f| first.field(f)).collect()),
        "hgetall" => MaskPlan::HashPairs(first.into()),
        "hrandfield" => {
            if args.len() > 3 && arg_is(&args[3], "withvalues") {
                MaskPlan::HashPairs(first.into())
            } else {
                MaskPlan::None
            }
        }
        "hscan" => MaskPlan::ScanPairs(first.into()),
        "hvals" => MaskPlan::AllValues(first.value()),
        // Field names only: masking hides values, not which fields exist.
        "hkeys" | "hexists" | "hlen" => MaskPlan::None,
        _ => {
            let exposes = keys
                .iter()
                .any(|k| k.access.exposes && rules.is_masked(&args[k.index]));
            if exposes || builtin::mask_refused(name) {
                return Err(Refusal::permission(
                    first.rule().to_owned(),
                    format!(
                        "'{name}' would reveal the masked value of key '{}'",
                        clip(&String::from_utf8_lossy(&args[masked[0].0]))
                    ),
                ));
            }
            MaskPlan::None
        }
    };
    let rule = (!plan.is_none()).then(|| first.rule().to_owned());
    Ok((plan, rule))
}
