//! Protections that do not depend on the policy files: commands refused unless a policy names
//! them, commands refused always (they would break the relay), commands always allowed.

/// Always allowed (connection housekeeping every client library does on its own).
pub const ALWAYS_ALLOWED: [&str; 18] = [
    "ping",
    "echo",
    "quit",
    "hello",
    "auth",
    "reset",
    "select",
    "multi",
    "exec",
    "discard",
    "watch",
    "unwatch",
    "client|setname",
    "client|getname",
    "client|id",
    "client|info",
    "client|setinfo",
    "command",
];

/// Refused even under `passthrough`: they turn the connection into a replication stream.
/// (CONFIG GET, MONITOR, RESET, CLIENT KILL/LIST/REPLY and SLOWLOG are served with the
/// protections of [`client_scope`], [`protect_upstream`] and the front end instead.)
pub const NEVER: [(&str, &str); 3] = [
    ("sync", "replication streams are not relayed"),
    ("psync", "replication streams are not relayed"),
    ("replconf", "replication streams are not relayed"),
];

/// Commands that reach other clients' connections, and how the front end keeps an agent to its
/// own (the upstream connections of its own sessions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientScope {
    #[default]
    None,
    /// CLIENT KILL (every filter form): only the agent's own connections are killed.
    Kill,
    /// CLIENT LIST: only the agent's own connections are listed.
    List,
    /// CLIENT UNBLOCK id: only the agent's own connections (others answer 0, as if unknown).
    Unblock,
    /// CLIENT TRACKING ... REDIRECT id: only to one of the agent's own connections.
    Redirect,
    /// SLOWLOG GET [n]: only entries of the agent's own connections.
    SlowlogGet,
    /// SLOWLOG LEN: the number of the agent's own entries.
    SlowlogLen,
    /// MONITOR: only the commands of the agent's own connections.
    Monitor,
}

/// The scope of command `name` (as the command table names it).
pub fn client_scope(name: &str, args: &[bytes::Bytes]) -> ClientScope {
    match name {
        "client|kill" => ClientScope::Kill,
        "client|list" => ClientScope::List,
        "client|unblock" => ClientScope::Unblock,
        "client|tracking" if args.iter().any(|a| a.eq_ignore_ascii_case(b"redirect")) => {
            ClientScope::Redirect
        }
        "slowlog|get" => ClientScope::SlowlogGet,
        "slowlog|len" => ClientScope::SlowlogLen,
        "monitor" => ClientScope::Monitor,
        _ => ClientScope::None,
    }
}

/// CONFIG GET parameters whose values are secrets: left out of CONFIG GET's reply.
pub const SECRET_SETTINGS: [&str; 4] = [
    "requirepass",
    "masterauth",
    "tls-key-file-pass",
    "tls-client-key-file-pass",
];

/// Refused unless a policy names them (by name, not by category): admin and dangerous
/// commands, scripts, and commands that read or write arbitrary keys.
pub const DEFAULT_REFUSED: [&str; 27] = [
    "config",
    "flushall",
    "flushdb",
    "debug",
    "shutdown",
    "replicaof",
    "slaveof",
    "migrate",
    "module",
    "acl",
    "script",
    "function",
    "eval",
    "evalsha",
    "eval_ro",
    "evalsha_ro",
    "fcall",
    "fcall_ro",
    "swapdb",
    "keys",
    "restore",
    "restore-asking",
    "failover",
    "cluster",
    "client",
    "save",
    "bgsave",
];

/// Commands that read or write keys they do not name among their arguments: scripts (their
/// `redis.call`s), and whole-database ones. A passthrough agent with `deny_keys` or masks may
/// run them only where its policy names them.
pub const REACHES_UNNAMED_KEYS: [&str; 9] = [
    "eval",
    "evalsha",
    "eval_ro",
    "evalsha_ro",
    "fcall",
    "fcall_ro",
    "flushall",
    "flushdb",
    "swapdb",
];

/// Refused on masked keys even though they return no value directly: they reveal its bytes,
/// length or encoding another way.
pub const MASK_REFUSED: [&str; 22] = [
    // Oracles on a masked value (a live review): membership answered yes or no (SISMEMBER,
    // while SMISMEMBER was refused), a count of what matched (SREM, LREM, LINSERT), the
    // length (SETRANGE of nothing), the score (ZADD ... INCR 0).
    "sismember",
    "srem",
    "lrem",
    "linsert",
    "setrange",
    "zadd",
    "dump",
    "lcs",
    "getrange",
    "substr",
    "strlen",
    "hstrlen",
    "object",
    "sort",
    "sort_ro",
    "getbit",
    "bitcount",
    "bitpos",
    "bitfield",
    "bitfield_ro",
    "memory",
    "append",
];

pub fn parent(name: &str) -> &str {
    name.split_once('|').map(|(p, _)| p).unwrap_or(name)
}

pub fn always_allowed(name: &str) -> bool {
    ALWAYS_ALLOWED.contains(&name) || (parent(name) == "command")
}

pub fn never(name: &str) -> Option<&'static str> {
    NEVER.iter().find(|(n, _)| *n == name).map(|(_, why)| *why)
}

/// What the lists above say about one command, worked out once per command table entry
/// (`CommandInfo::builtin`) instead of searching the lists for every command an agent sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub never: Option<&'static str>,
    pub always_allowed: bool,
    pub default_refused: bool,
}

impl Facts {
    pub fn of(name: &str, categories: super::commands::Categories) -> Facts {
        let dangerous = categories.intersects(
            super::commands::Categories::ADMIN | super::commands::Categories::DANGEROUS,
        );
        Facts {
            never: never(name),
            always_allowed: always_allowed(name),
            default_refused: default_refused(name, dangerous),
        }
    }
}

/// Refused unless named: the list above, and anything Redis tags `@admin` or `@dangerous`
/// (SORT's risky forms are judged by their arguments instead).
pub fn default_refused(name: &str, admin_or_dangerous: bool) -> bool {
    if always_allowed(name) || name == "sort" || name == "sort_ro" {
        return false;
    }
    DEFAULT_REFUSED.contains(&name) || DEFAULT_REFUSED.contains(&parent(name)) || admin_or_dangerous
}

pub fn mask_refused(name: &str) -> bool {
    MASK_REFUSED.contains(&parent(name))
}

/// The rule named when a command would change or lock out the upstream login.
pub const VAULT_LOGIN_RULE: &str = "builtin: vault-login";
/// The rule named when a command would make the upstream unavailable to every other agent.
pub const AVAILABILITY_RULE: &str = "builtin: availability";
/// The rule named when a command would act on other agents' connections.
pub const OWN_CONNECTIONS_RULE: &str = "builtin: own-connections";

/// `CONFIG SET` parameters that hold or guard the upstream login.
const LOGIN_SETTINGS: [&str; 4] = ["requirepass", "masterauth", "masteruser", "aclfile"];

/// `CONFIG SET` parameters (or prefixes, ending in `-`) that change how or whether the server
/// accepts and keeps connections: one agent changing them can lock every other agent out.
const CONNECTION_SETTINGS: [&str; 21] = [
    "maxclients",
    // Every other agent's writes fail past them: `maxmemory 1` (OOM), `min-replicas-to-write 1`
    // with no replica (NOREPLICAS), a lag bound no replica meets (a live review). A smaller
    // query buffer or bulk length makes Redis close the shared connections that carry a large
    // value of another agent's.
    "maxmemory",
    "min-replicas-to-write",
    "min-replicas-max-lag",
    "client-query-buffer-limit",
    "proto-max-bulk-len",
    // Redis evicts the connections using the most memory past it: the shared connections,
    // which carry every session's replies (a live review had them evicted with 200kb).
    "maxmemory-clients",
    "bind",
    "bind-source-addr",
    "port",
    "tls-",
    "unixsocket",
    "unixsocketperm",
    "protected-mode",
    "timeout",
    "client-output-buffer-limit",
    "enable-protected-configs",
    "enable-debug-command",
    "enable-module-command",
    "dir",
    "dbfilename",
];

fn lower(a: &[u8]) -> String {
    String::from_utf8_lossy(a).to_ascii_lowercase()
}

fn availability(reason: impl Into<String>) -> crate::refusal::Refusal {
    crate::refusal::Refusal::permission(AVAILABILITY_RULE, reason)
}

fn vault_login(reason: impl Into<String>) -> crate::refusal::Refusal {
    crate::refusal::Refusal::permission(VAULT_LOGIN_RULE, reason)
}

/// Built-in protections of the upstream and its login, for every agent (passthrough included):
/// `name` is the command as the command table names it (`config|set`), `args` the whole
/// command, `login_user` the ACL user tollgate logs in as (`None` while unknown: every user
/// counts as the login). The user's name never appears in a refusal.
pub fn protect_upstream(
    name: &str,
    args: &[bytes::Bytes],
    login_user: Option<&str>,
) -> Result<(), crate::refusal::Refusal> {
    let is_login = |user: &[u8]| match login_user {
        Some(login) => login.as_bytes() == user,
        None => true,
    };
    match name {
        "config|set" => {
            // The login's protection is named first, wherever its parameter comes.
            for param in args.iter().skip(2).step_by(2) {
                let p = lower(param);
                if LOGIN_SETTINGS.contains(&p.as_str()) {
                    return Err(vault_login(format!(
                        "CONFIG SET {p} would change the upstream login tollgate uses"
                    )));
                }
            }
            for param in args.iter().skip(2).step_by(2) {
                let p = lower(param);
                let hit = CONNECTION_SETTINGS.iter().any(|s| {
                    if s.ends_with('-') {
                        p.starts_with(s)
                    } else {
                        p == *s
                    }
                });
                if hit {
                    return Err(availability(format!(
                        "CONFIG SET {p} changes how the server accepts and serves every agent's connections"
                    )));
                }
            }
            Ok(())
        }
        "acl|setuser" if args.get(2).is_some_and(|u| is_login(u)) => Err(vault_login(
            "ACL SETUSER of the user tollgate logs in as is refused",
        )),
        "acl|deluser" if args.iter().skip(2).any(|u| is_login(u)) => Err(vault_login(
            "ACL DELUSER of the user tollgate logs in as is refused",
        )),
        "acl|load" => Err(vault_login(
            "ACL LOAD replaces every user, the one tollgate logs in as included",
        )),
        "shutdown" => Err(availability(
            "SHUTDOWN would stop the upstream for every agent",
        )),
        "debug" => Err(availability(
            "DEBUG can block, crash or reload the whole upstream",
        )),
        "client|pause" => Err(availability(
            "CLIENT PAUSE pauses every client of the upstream",
        )),
        "failover" => Err(availability(
            "FAILOVER turns the upstream into a replica for every agent",
        )),
        "replicaof" | "slaveof" => {
            let no_one = args.len() == 3
                && args[1].eq_ignore_ascii_case(b"no")
                && args[2].eq_ignore_ascii_case(b"one");
            if no_one {
                Ok(())
            } else {
                Err(availability(
                    "REPLICAOF turns the upstream into a read-only replica for every agent",
                ))
            }
        }
        // Two 10,000-byte values took Redis 0.4 s and a 400 MB table (it allows up to 512 MB),
        // during which it served nobody else; tollgate cannot know the lengths beforehand.
        "lcs" => Err(availability(
            "LCS takes time and memory that grow with the product of the two values' lengths, while the upstream serves nobody else",
        )),
        "module|load" | "module|loadex" | "module|unload" => Err(availability(
            "loading or unloading modules changes the upstream for every agent",
        )),
        "slowlog|reset" => Err(crate::refusal::Refusal::permission(
            OWN_CONNECTIONS_RULE,
            "SLOWLOG RESET clears every client's entries, not only this agent's",
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod protect_tests {
    use super::*;

    fn check(line: &str) -> Option<String> {
        let args: Vec<bytes::Bytes> = line
            .split(' ')
            .map(|a| bytes::Bytes::copy_from_slice(a.as_bytes()))
            .collect();
        let name = match args[0].to_ascii_lowercase().as_slice() {
            b"config" | b"acl" | b"client" | b"module" => format!(
                "{}|{}",
                lower(&args[0]),
                lower(args.get(1).map(|a| &a[..]).unwrap_or(b""))
            ),
            _ => lower(&args[0]),
        };
        protect_upstream(&name, &args, Some("default"))
            .err()
            .map(|r| r.rule)
    }

    #[test]
    fn the_login_and_the_server_are_protected() {
        for (line, rule) in [
            ("CONFIG SET requirepass x", Some(VAULT_LOGIN_RULE)),
            (
                "config set maxmemory 10mb MASTERAUTH x",
                Some(VAULT_LOGIN_RULE),
            ),
            ("CONFIG SET aclfile /tmp/x", Some(VAULT_LOGIN_RULE)),
            ("ACL SETUSER default off", Some(VAULT_LOGIN_RULE)),
            ("ACL SETUSER default resetpass", Some(VAULT_LOGIN_RULE)),
            ("ACL DELUSER someone default", Some(VAULT_LOGIN_RULE)),
            ("ACL LOAD", Some(VAULT_LOGIN_RULE)),
            ("CONFIG SET maxclients 1", Some(AVAILABILITY_RULE)),
            ("CONFIG SET timeout 1", Some(AVAILABILITY_RULE)),
            (
                "CONFIG SET maxmemory-clients 200kb",
                Some(AVAILABILITY_RULE),
            ),
            (
                "config set maxmemory 1gb MAXMEMORY-CLIENTS 1%",
                Some(AVAILABILITY_RULE),
            ),
            ("CONFIG SET tls-auth-clients yes", Some(AVAILABILITY_RULE)),
            ("SHUTDOWN NOSAVE", Some(AVAILABILITY_RULE)),
            ("DEBUG SLEEP 10", Some(AVAILABILITY_RULE)),
            ("LCS cache:a cache:b LEN", Some(AVAILABILITY_RULE)),
            ("CLIENT PAUSE 10000", Some(AVAILABILITY_RULE)),
            ("REPLICAOF 10.0.0.1 6379", Some(AVAILABILITY_RULE)),
            ("MODULE LOAD /tmp/x.so", Some(AVAILABILITY_RULE)),
            ("REPLICAOF NO ONE", None),
            ("CONFIG SET maxmemory 100mb", Some(AVAILABILITY_RULE)),
            (
                "CONFIG SET min-replicas-to-write 1",
                Some(AVAILABILITY_RULE),
            ),
            ("CONFIG SET MIN-REPLICAS-MAX-LAG 0", Some(AVAILABILITY_RULE)),
            (
                "CONFIG SET client-query-buffer-limit 1mb",
                Some(AVAILABILITY_RULE),
            ),
            ("CONFIG SET proto-max-bulk-len 1mb", Some(AVAILABILITY_RULE)),
            ("CONFIG SET maxmemory-policy allkeys-lru", None),
            ("CONFIG SET tlsx 1", None),
            ("ACL SETUSER someone on >pw ~* +@all", None),
            ("ACL DELUSER someone", None),
            ("GET x", None),
        ] {
            assert_eq!(check(line).as_deref(), rule, "{line}");
        }
    }
}
