//! Commands judged before any policy file: refused for every agent (passthrough included)
//! because they alter the vaulted upstream user or other users, change the server for everyone,
//! show other agents' activity (all agents share tollgate's upstream login), or would replace
//! the upstream login of the relayed connection; and the housekeeping commands every driver
//! sends, allowed to any agent with a `[[mongo]]` block.

pub const BUILTIN_RULE: &str = "builtin: admin-command";

/// Refused always, with the reason shown to the agent.
pub const NEVER: &[(&str, &str)] = &[
    ("createUser", "users are managed outside tollgate"),
    (
        "updateUser",
        "users are managed outside tollgate (and the vaulted upstream user is untouchable)",
    ),
    (
        "dropUser",
        "users are managed outside tollgate (and the vaulted upstream user is untouchable)",
    ),
    (
        "dropAllUsersFromDatabase",
        "users are managed outside tollgate",
    ),
    ("grantRolesToUser", "roles are managed outside tollgate"),
    ("revokeRolesFromUser", "roles are managed outside tollgate"),
    ("createRole", "roles are managed outside tollgate"),
    ("updateRole", "roles are managed outside tollgate"),
    ("dropRole", "roles are managed outside tollgate"),
    (
        "dropAllRolesFromDatabase",
        "roles are managed outside tollgate",
    ),
    ("grantRolesToRole", "roles are managed outside tollgate"),
    ("revokeRolesFromRole", "roles are managed outside tollgate"),
    (
        "grantPrivilegesToRole",
        "roles are managed outside tollgate",
    ),
    (
        "revokePrivilegesFromRole",
        "roles are managed outside tollgate",
    ),
    ("usersInfo", "user records are not shown through tollgate"),
    ("rolesInfo", "role records are not shown through tollgate"),
    ("invalidateUserCache", "changes authentication for everyone"),
    ("authenticate", "the upstream login belongs to tollgate"),
    ("saslStart", "the upstream login belongs to tollgate"),
    ("saslContinue", "the upstream login belongs to tollgate"),
    ("logout", "the upstream login belongs to tollgate"),
    ("getnonce", "the upstream login belongs to tollgate"),
    ("eval", "server-side JavaScript with full access"),
    ("$eval", "server-side JavaScript with full access"),
    (
        "applyOps",
        "applies raw oplog entries, bypassing every check",
    ),
    ("doTxn", "applies raw oplog entries, bypassing every check"),
    ("shutdown", "stops the server for every agent"),
    ("setParameter", "changes the server for every agent"),
    ("setClusterParameter", "changes the server for every agent"),
    (
        "setFeatureCompatibilityVersion",
        "changes the server for every agent",
    ),
    ("setDefaultRWConcern", "changes the server for every agent"),
    (
        "setProfilingLevel",
        "the profiler would record other agents' commands",
    ),
    (
        "profile",
        "the profiler would record other agents' commands",
    ),
    ("getLog", "the server log shows other agents' commands"),
    (
        "currentOp",
        "shows other agents' commands (they share tollgate's upstream login)",
    ),
    (
        "killOp",
        "could stop other agents' commands (they share tollgate's upstream login)",
    ),
    ("killSessions", "could end other agents' sessions"),
    ("killAllSessions", "could end other agents' sessions"),
    (
        "killAllSessionsByPattern",
        "could end other agents' sessions",
    ),
    ("dropConnections", "drops other agents' connections"),
    ("fsync", "locks the server for every agent"),
    ("fsyncUnlock", "locks the server for every agent"),
    ("logRotate", "changes the server for every agent"),
    ("compact", "blocks the server for every agent"),
    ("replSetReconfig", "changes the replica set for every agent"),
    ("replSetStepDown", "changes the replica set for every agent"),
    ("replSetInitiate", "changes the replica set for every agent"),
    ("replSetFreeze", "changes the replica set for every agent"),
    (
        "replSetMaintenance",
        "changes the replica set for every agent",
    ),
    (
        "replSetResizeOplog",
        "changes the replica set for every agent",
    ),
    (
        "configureFailPoint",
        "a test command that breaks the server for everyone",
    ),
    ("sleep", "a test command that blocks the server"),
    ("godinsert", "a test command that bypasses checks"),
    (
        "cloneCollectionAsCapped",
        "copies a collection around its policy",
    ),
    ("getCmdLineOpts", "shows the server's configuration"),
    ("shardCollection", "changes the cluster for every agent"),
    ("addShard", "changes the cluster for every agent"),
    ("removeShard", "changes the cluster for every agent"),
    ("movePrimary", "changes the cluster for every agent"),
    ("moveChunk", "changes the cluster for every agent"),
    ("enableSharding", "changes the cluster for every agent"),
    (
        "bulkWrite",
        "cross-namespace bulk writes are not judged yet; use insert/update/delete",
    ),
];

/// Allowed to any agent with a `[[mongo]]` block for the upstream: handshakes, sessions,
/// transactions, and cheap server facts that reveal no data.
pub const HOUSEKEEPING: &[&str] = &[
    "hello",
    "isMaster",
    "ismaster",
    "ping",
    "buildInfo",
    "buildinfo",
    "endSessions",
    "refreshSessions",
    "startSession",
    "commitTransaction",
    "abortTransaction",
    "getLastError",
    "whatsmyuri",
    "getFreeMonitoringStatus",
];

/// Every command tollgate knows by name, so that a known name in another case (`FIND`,
/// `Find`) is refused rather than judged as an unknown command.
pub const KNOWN: &[&str] = &[
    "find",
    "aggregate",
    "count",
    "distinct",
    "insert",
    "update",
    "delete",
    "findAndModify",
    "findandmodify",
    "getMore",
    "killCursors",
    "listCollections",
    "listDatabases",
    "listIndexes",
    "create",
    "drop",
    "dropDatabase",
    "collMod",
    "renameCollection",
    "createIndexes",
    "dropIndexes",
    "explain",
    "collStats",
    "dbStats",
    "mapReduce",
    "connectionStatus",
    "hostInfo",
    "serverStatus",
    "getParameter",
    "top",
    "lockInfo",
    "validate",
    "dataSize",
    "listCommands",
    "features",
    "getDefaultRWConcern",
    "atlasVersion",
    "createSearchIndexes",
    "dropSearchIndex",
    "updateSearchIndex",
];

pub fn never(name: &str) -> Option<&'static str> {
    NEVER.iter().find(|(n, _)| *n == name).map(|(_, why)| *why)
}

/// A known command name sent in another case (`FIND`, `dropuser`): refused as ambiguous.
pub fn unusual_case(name: &str) -> Option<&'static str> {
    let all = || {
        NEVER
            .iter()
            .map(|(n, _)| *n)
            .chain(HOUSEKEEPING.iter().copied())
            .chain(KNOWN.iter().copied())
    };
    if all().any(|n| n == name) {
        return None;
    }
    all().find(|n| n.eq_ignore_ascii_case(name))
}
