//! Which fields each command may carry: the decision reads only the fields it knows, so any
//! other field would reach the server unjudged (a `query` a server honours on `find`, a future
//! field that takes a filter, `rawData` reading time-series buckets unmasked). For restricted
//! agents a command may carry only the fields listed here, each one either judged by `decide`
//! or harmless; anything else is refused (rule `builtin: unknown-field`). Names are matched
//! exactly, as the server does (`Filter` is not `filter`).
//!
//! Passthrough agents may send any field, except on a collection with masks or row filters:
//! there a field the policy does not know could read around them, so the lists apply too (with
//! the fields only passthrough may send, `PASSTHROUGH_ONLY`, added).

use bson::Bson;

use super::command::{Command, MALFORMED_RULE};
use super::rules::MongoRules;
use crate::refusal::{Refusal, RefusalClass};

/// A field no list names.
pub const UNKNOWN_FIELD_RULE: &str = "builtin: unknown-field";
/// A field only a passthrough profile may send.
pub const PASSTHROUGH_FIELD_RULE: &str = "builtin: passthrough-field";

/// Fields drivers add to any command; none of them changes what is read or written: the
/// database (`$db`, checked), the logical session and transaction, cluster time gossip, read
/// preference, read and write concerns (when and how durably, not what), the Stable API
/// version, a comment (only echoed in server logs), and `maxTimeMS` (capped where it matters).
pub const GENERIC: &[&str] = &[
    "$db",
    "lsid",
    "txnNumber",
    "autocommit",
    "startTransaction",
    "$clusterTime",
    "$readPreference",
    "readConcern",
    "writeConcern",
    "apiVersion",
    "apiStrict",
    "apiDeprecationErrors",
    "comment",
    "maxTimeMS",
];

/// Known fields that restricted agents may not send, with the reason shown.
pub const PASSTHROUGH_ONLY: &[(&str, &str)] = &[
    (
        "bypassDocumentValidation",
        "it skips the collection's validator, which the policy cannot vouch for",
    ),
    (
        "noCursorTimeout",
        "a cursor that never times out holds server resources for every agent",
    ),
    (
        "storageEngine",
        "raw storage engine configuration is not judged",
    ),
    (
        "indexOptionDefaults",
        "raw storage engine configuration is not judged",
    ),
];

const FIND: &[&str] = &[
    "filter", // judged: a query (options::read_options)
    "sort",   // judged: keys
    "projection",
    "hint",      // judged: keys; by name only without masks
    "max",       // judged: keys
    "min",       // judged: keys
    "let",       // judged: expressions
    "returnKey", // refused on collections with masks (index keys are raw values)
    "showRecordId",
    "skip",
    "limit",
    "batchSize",
    "singleBatch",
    "tailable",
    "awaitData",
    "allowPartialResults",
    "collation", // comparisons only of fields a predicate or sort may use
    "allowDiskUse",
];
const FIND_AND_MODIFY: &[&str] = &[
    "query",
    "sort",
    "remove",
    "update",
    "new",
    "fields",
    "upsert",
    "collation",
    "arrayFilters",
    "hint",
    "let",
];

/// Each command's fields besides its name and `GENERIC`. A command missing here is refused to
/// restricted agents before anything else is read.
const COMMANDS: &[(&str, &[&str])] = &[
    ("find", FIND),
    (
        "aggregate",
        &[
            "pipeline",
            "explain",
            "cursor",
            "hint",
            "let",
            "collation",
            "allowDiskUse",
        ],
    ),
    ("count", &["query", "hint", "limit", "skip", "collation"]),
    ("distinct", &["key", "query", "hint", "collation"]),
    ("insert", &["documents", "ordered"]),
    ("update", &["updates", "ordered", "let"]),
    ("delete", &["deletes", "ordered", "let"]),
    ("findAndModify", FIND_AND_MODIFY),
    ("findandmodify", FIND_AND_MODIFY),
    ("getMore", &["collection", "batchSize"]),
    ("killCursors", &["cursors"]),
    (
        "listCollections",
        &["filter", "nameOnly", "authorizedCollections", "cursor"],
    ),
    (
        "listDatabases",
        &["filter", "nameOnly", "authorizedDatabases"],
    ),
    ("listIndexes", &["cursor"]),
    (
        "create",
        &[
            "capped",
            "size",
            "max",
            "validator",
            "validationLevel",
            "validationAction",
            "viewOn",
            "pipeline",
            "collation",
            "timeseries",
            "expireAfterSeconds",
            "clusteredIndex",
            "changeStreamPreAndPostImages",
            "idIndex",
        ],
    ),
    (
        "collMod",
        &[
            "index",
            "validator",
            "validationLevel",
            "validationAction",
            "viewOn",
            "pipeline",
            "expireAfterSeconds",
            "changeStreamPreAndPostImages",
            "timeseries",
            "cappedSize",
            "cappedMax",
        ],
    ),
    ("drop", &[]),
    ("createIndexes", &["indexes", "commitQuorum"]),
    ("dropIndexes", &["index"]),
    ("createSearchIndexes", &["indexes"]),
    ("dropSearchIndex", &["id", "name"]),
    ("updateSearchIndex", &["id", "name", "definition"]),
    ("renameCollection", &["to", "dropTarget"]),
    ("explain", &["verbosity"]),
    ("collStats", &["scale"]),
    ("dbStats", &["scale", "freeStorage"]),
    (
        "mapReduce",
        &[
            "map",
            "reduce",
            "finalize",
            "out",
            "query",
            "sort",
            "limit",
            "scope",
            "jsMode",
            "verbose",
            "collation",
        ],
    ),
    // Housekeeping (tollgate answers hello itself; the login fields of a handshake are not
    // among these: the upstream login belongs to tollgate).
    ("hello", HELLO),
    ("isMaster", HELLO),
    ("ismaster", HELLO),
    ("ping", &[]),
    ("buildInfo", &[]),
    ("buildinfo", &[]),
    ("endSessions", &[]),
    ("refreshSessions", &[]),
    ("startSession", &[]),
    ("commitTransaction", &["recoveryToken"]),
    ("abortTransaction", &["recoveryToken"]),
    ("getLastError", &["w", "j", "wtimeout", "fsync"]),
    ("whatsmyuri", &[]),
    ("getFreeMonitoringStatus", &[]),
];
const HELLO: &[&str] = &[
    "helloOk",
    "client",
    "compression",
    "loadBalanced",
    "topologyVersion",
    "maxAwaitTimeMS",
];

/// Fields of one update statement (`updates`): `q`, `u`, `sort` and `hint` judged, `c` judged
/// as `let` is, `arrayFilters` refused where masks apply.
pub const UPDATE_STATEMENT: &[&str] = &[
    "q",
    "u",
    "c",
    "upsert",
    "multi",
    "collation",
    "arrayFilters",
    "hint",
    "sort",
];
/// Fields of one delete statement (`deletes`): `q` and `hint` judged.
pub const DELETE_STATEMENT: &[&str] = &["q", "limit", "collation", "hint"];
/// The `cursor` document of aggregate, listCollections and listIndexes.
pub const CURSOR: &[&str] = &["batchSize"];
/// One index of createIndexes: `partialFilterExpression` judged, and the keys of a unique,
/// sparse or TTL index.
pub const INDEX_SPEC: &[&str] = &[
    "key",
    "name",
    "unique",
    "partialFilterExpression",
    "sparse",
    "expireAfterSeconds",
    "hidden",
    "collation",
    "weights",
    "default_language",
    "language_override",
    "textIndexVersion",
    "2dsphereIndexVersion",
    "bits",
    "min",
    "max",
    "wildcardProjection",
    "prepareUnique",
    "background",
    "v",
];
/// One index of createSearchIndexes.
pub const SEARCH_INDEX_SPEC: &[&str] = &["name", "type", "definition"];

/// Every command with a list of fields.
pub fn commands() -> impl Iterator<Item = &'static str> {
    COMMANDS.iter().map(|(n, _)| *n)
}

/// The fields `name` takes besides `GENERIC`, if tollgate knows the command.
pub fn of(name: &str) -> Option<&'static [&'static str]> {
    COMMANDS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// Checks the fields of `cmd` (and of the documents nested in it that the decision reads)
/// against the lists. Restricted agents: always; passthrough agents: on a collection with
/// masks or row filters. A command with no list is left to `decide` (which refuses it to
/// restricted agents).
pub(super) fn check(rules: &MongoRules, cmd: &Command) -> Result<(), Refusal> {
    if rules.passthrough {
        let protected = cmd
            .namespace()
            .is_some_and(|ns| !rules.protection_of(&ns).is_empty());
        if !protected {
            return Ok(());
        }
    }
    let name = cmd.name.as_str();
    // OP_MSG document sequences carry the documents of insert, update and delete; the decision
    // reads no other (the server may merge any sequence into the command as a field).
    let expected = match name {
        "insert" => Some("documents"),
        "update" => Some("updates"),
        "delete" => Some("deletes"),
        _ => None,
    };
    if let Some((id, _)) = cmd
        .sequences
        .iter()
        .find(|(id, _)| Some(id.as_str()) != expected)
    {
        return Err(Refusal::syntax(
            MALFORMED_RULE,
            format!("document sequence \"{id}\" is not one {name} takes"),
        ));
    }
    let Some(own) = of(name) else {
        return Ok(());
    };
    for field in cmd.body.keys().skip(1) {
        known(rules, name, None, field, own)?;
    }
    let nested = |field: &str, what: &'static str, list: &[&str]| -> Result<(), Refusal> {
        for d in cmd.documents(field)? {
            for k in d.keys() {
                known(rules, name, Some(what), k, list)?;
            }
        }
        Ok(())
    };
    match name {
        "update" => nested("updates", "an update statement", UPDATE_STATEMENT)?,
        "delete" => nested("deletes", "a delete statement", DELETE_STATEMENT)?,
        "createIndexes" => nested("indexes", "an index", INDEX_SPEC)?,
        "createSearchIndexes" => nested("indexes", "a search index", SEARCH_INDEX_SPEC)?,
        _ => {}
    }
    if let Some(Bson::Document(c)) = cmd.body.get("cursor") {
        for k in c.keys() {
            known(rules, name, Some("cursor"), k, CURSOR)?;
        }
    }
    Ok(())
}

/// Is `field` one `name` takes (at the top, or inside `within`)?
fn known(
    rules: &MongoRules,
    name: &str,
    within: Option<&str>,
    field: &str,
    list: &[&str],
) -> Result<(), Refusal> {
    let top = within.is_none();
    if list.contains(&field) || (top && GENERIC.contains(&field)) {
        return Ok(());
    }
    let of_what = within.map(|w| format!(" of {w}")).unwrap_or_default();
    if let Some((_, why)) = PASSTHROUGH_ONLY.iter().find(|(f, _)| *f == field) {
        if rules.passthrough {
            return Ok(());
        }
        return Err(Refusal::permission(
            PASSTHROUGH_FIELD_RULE,
            format!("{name}: field \"{field}\"{of_what} is refused: {why}"),
        )
        .with_instead(format!("send {name} without {field}")));
    }
    let r = Refusal::new(
        RefusalClass::Unsupported,
        UNKNOWN_FIELD_RULE,
        format!(
            "{name}: field \"{field}\"{of_what} is not understood by the policy and is refused"
        ),
    );
    let generic: &[&str] = if top { GENERIC } else { &[] };
    let same_but_case = list
        .iter()
        .chain(generic)
        .find(|k| k.eq_ignore_ascii_case(field));
    Err(match (same_but_case, within) {
        (Some(k), _) => r.with_instead(format!("did you mean \"{k}\"?")),
        (None, None) if list.is_empty() => r.with_instead(format!(
            "{name} takes only the fields every command may carry: {}",
            GENERIC.join(", ")
        )),
        (None, None) => r.with_instead(format!("{name} takes: {}", list.join(", "))),
        (None, Some(w)) => r.with_instead(format!("fields of {w}: {}", list.join(", "))),
    })
}
