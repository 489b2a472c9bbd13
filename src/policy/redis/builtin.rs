//! Protections that do not depend on the policy files: commands refused unless a policy names
//! them, commands refused always (they would break the relay), commands always allowed.

/// Always allowed (connection housekeeping every client library does on its own).
pub const ALWAYS_ALLOWED: [&str; 17] = [
    "ping",
    "echo",
    "quit",
    "hello",
    "auth",
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

/// Refused even under `passthrough`: they change how replies pair with commands, replace the
/// upstream login, or turn the connection into something else.
pub const NEVER: [(&str, &str); 8] = [
    (
        "config|get",
        "CONFIG GET can reveal the upstream password (requirepass, masterauth)",
    ),
    (
        "monitor",
        "MONITOR streams every client's commands and breaks reply pairing",
    ),
    ("reset", "RESET would log the upstream connection out"),
    ("client|reply", "CLIENT REPLY breaks reply pairing"),
    ("sync", "replication streams are not relayed"),
    ("psync", "replication streams are not relayed"),
    ("replconf", "replication streams are not relayed"),
    (
        "client|kill",
        "CLIENT KILL reaches other clients' connections",
    ),
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

/// Refused on masked keys even though they return no value directly: they reveal its bytes,
/// length or encoding another way.
pub const MASK_REFUSED: [&str; 16] = [
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
