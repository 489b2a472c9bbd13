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
    // The server's users and auth state, beyond the user and role commands above.
    (
        "_mergeAuthzCollections",
        "replaces the server's users and roles (mongorestore's command; the vaulted upstream user is untouchable)",
    ),
    (
        "authSchemaUpgrade",
        "rewrites every user record of the server (the vaulted upstream user is untouchable)",
    ),
    // Availability: what stops, blocks or reconfigures the server for every agent.
    ("setUserWriteBlockMode", "blocks writes for every agent"),
    (
        "setQuerySettings",
        "changes (or rejects) other agents' queries",
    ),
    (
        "removeQuerySettings",
        "changes other agents' queries",
    ),
    ("rotateCertificates", "changes the server's TLS for every agent"),
    ("setAuditConfig", "changes the server's auditing for every agent"),
    ("clearLog", "erases the server's log for every agent"),
    ("setFreeMonitoring", "changes the server for every agent"),
    ("setChangeStreamState", "changes the server for every agent"),
    (
        "startRecordingTraffic",
        "would record other agents' commands",
    ),
    (
        "stopRecordingTraffic",
        "would record other agents' commands",
    ),
    ("reIndex", "blocks the database for every agent"),
    ("repairDatabase", "blocks the server for every agent"),
    ("resync", "changes the replica set for every agent"),
    (
        "internalRenameIfOptionsAndIndexesMatch",
        "an internal command: renames collections around their checks",
    ),
    // Copies of a database or collection from anywhere (older servers).
    ("copydb", "copies a database around its policy"),
    ("copydbgetnonce", "copies a database around its policy"),
    ("copydbsaslstart", "copies a database around its policy"),
    ("clone", "copies a database around its policy"),
    ("cloneCollection", "copies a collection around its policy"),
    // Sharded clusters (refused above too: shardCollection, addShard, moveChunk, ...).
    ("balancerStart", "changes the cluster for every agent"),
    ("balancerStop", "changes the cluster for every agent"),
    (
        "configureCollectionBalancing",
        "changes the cluster for every agent",
    ),
    ("setAllowMigrations", "changes the cluster for every agent"),
    ("reshardCollection", "changes the cluster for every agent"),
    ("abortReshardCollection", "changes the cluster for every agent"),
    ("commitReshardCollection", "changes the cluster for every agent"),
    ("refineCollectionShardKey", "changes the cluster for every agent"),
    ("unshardCollection", "changes the cluster for every agent"),
    ("moveCollection", "changes the cluster for every agent"),
    ("moveRange", "changes the cluster for every agent"),
    ("split", "changes the cluster for every agent"),
    ("mergeChunks", "changes the cluster for every agent"),
    ("mergeAllChunksOnShard", "changes the cluster for every agent"),
    ("addShardToZone", "changes the cluster for every agent"),
    ("removeShardFromZone", "changes the cluster for every agent"),
    ("updateZoneKeyRange", "changes the cluster for every agent"),
    ("clearJumboFlag", "changes the cluster for every agent"),
    ("flushRouterConfig", "changes the cluster for every agent"),
    ("cleanupOrphaned", "changes the cluster for every agent"),
    (
        "transitionToDedicatedConfigServer",
        "changes the cluster for every agent",
    ),
    (
        "transitionFromDedicatedConfigServer",
        "changes the cluster for every agent",
    ),
];

/// Why a command is refused by its name's shape rather than by the list: `_` starts the
/// server's internal commands (between its own nodes and tools: `_mergeAuthzCollections`,
/// `_configsvr*`, `_shardsvr*`, `_killOperations`, ...), and `replSet` every replica-set
/// command but the two that only read its state.
fn never_by_shape(name: &str) -> Option<&'static str> {
    if name.starts_with('_') {
        return Some("an internal command of the server (between its own nodes and tools)");
    }
    if name.starts_with("replSet") && !matches!(name, "replSetGetStatus" | "replSetGetConfig") {
        return Some("changes the replica set for every agent");
    }
    None
}

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
    NEVER
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, why)| *why)
        .or_else(|| never_by_shape(name))
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
