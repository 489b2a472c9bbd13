//! The tools, as each agent sees them: only those its policy gives it an upstream for, each with
//! its JSON schema and `readOnlyHint`/`destructiveHint` read off the agent's rules (hints only:
//! every call is still judged by the policy engine, never by these).

use std::sync::Arc;

use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde_json::json;

use crate::config::UpstreamKind;
use crate::policy::rules::{Op, StatementClass, UpstreamRules};
use crate::policy::Engine;

/// An upstream as the MCP door knows it.
#[derive(Debug, Clone)]
pub struct UpstreamEntry {
    pub name: String,
    pub kind: UpstreamKind,
    pub description: Option<String>,
}

/// What one agent may reach, for listing and defaults.
#[derive(Debug, Default)]
pub struct AgentReach {
    pub sql: Vec<String>,
    pub redis: Vec<String>,
    /// MongoDB upstreams (the `find`/`aggregate` tools only read, whatever the rules allow).
    pub mongo: Vec<String>,
    /// Some SQL upstream lets it write (or run anything: passthrough, shadow-only).
    pub sql_writes: bool,
    pub redis_writes: bool,
}

/// The upstreams `agent` may use (as `may_connect` says), by kind.
pub fn reach(engine: &Engine, agent: &str, upstreams: &[UpstreamEntry]) -> AgentReach {
    let mut out = AgentReach::default();
    let policy = engine.agent_policy(agent);
    for u in upstreams {
        if engine.may_connect(agent, &u.name).is_err() {
            continue;
        }
        let enforced = policy
            .as_ref()
            .and_then(|p| p.enforced.as_ref())
            .map(|m| m.get(&u.name));
        match u.kind {
            UpstreamKind::Postgres => {
                out.sql.push(u.name.clone());
                out.sql_writes |= match enforced {
                    // Only shadow files apply: nothing is enforced.
                    None => true,
                    Some(rules) => rules.and_then(UpstreamRules::sql).is_some_and(|r| {
                        r.passthrough
                            || r.tables.iter().any(|t| {
                                Op::ALL
                                    .iter()
                                    .any(|o| *o != Op::Select && t.allow.contains(*o))
                            })
                            || [
                                StatementClass::Ddl,
                                StatementClass::Dcl,
                                StatementClass::Copy,
                                StatementClass::Do,
                                StatementClass::Call,
                                StatementClass::Maintenance,
                            ]
                            .iter()
                            .any(|c| r.classes.contains(*c))
                    }),
                };
            }
            UpstreamKind::Redis => {
                out.redis.push(u.name.clone());
                out.redis_writes |= match enforced {
                    None => true,
                    Some(rules) => rules
                        .and_then(UpstreamRules::redis)
                        .is_some_and(|r| r.passthrough || !r.write_keys.is_empty()),
                };
            }
            UpstreamKind::Mongodb => out.mongo.push(u.name.clone()),
        }
    }
    out
}

fn schema(v: serde_json::Value) -> Arc<JsonObject> {
    match v {
        serde_json::Value::Object(m) => Arc::new(m),
        _ => Arc::new(JsonObject::new()),
    }
}

fn read_only() -> ToolAnnotations {
    ToolAnnotations::new()
        .read_only(true)
        .destructive(false)
        .idempotent(true)
        .open_world(false)
}

fn writes(may_write: bool) -> ToolAnnotations {
    ToolAnnotations::new()
        .read_only(!may_write)
        .destructive(may_write)
        .idempotent(!may_write)
        .open_world(false)
}

fn upstream_arg(kind: &str, names: &[String]) -> serde_json::Value {
    let mut d = json!({
        "type": "string",
        "description": format!("The {kind} upstream (see list_upstreams); may be left out when there is only one"),
    });
    if !names.is_empty() {
        d["enum"] = json!(names);
    }
    d
}

/// The tools `reach` allows, in a stable order.
pub fn tools_for(reach: &AgentReach) -> Vec<Tool> {
    let mut tools = vec![Tool::new(
        "list_upstreams",
        "The databases (upstreams) you may use through tollgate: name, kind and description.",
        schema(json!({"type": "object", "properties": {}, "additionalProperties": false})),
    )
    .with_annotations(read_only())];
    if !reach.sql.is_empty() {
        let up = upstream_arg("PostgreSQL", &reach.sql);
        tools.push(Tool::new(
            "list_tables",
            "Tables of a PostgreSQL upstream you may use: the operations allowed on each, masked columns and row filters marked.",
            schema(json!({"type": "object", "properties": {"upstream": up}, "additionalProperties": false})),
        ).with_annotations(read_only()));
        tools.push(Tool::new(
            "describe_table",
            "Columns and types of one table you may use, masked columns marked with their mask.",
            schema(json!({"type": "object", "properties": {
                "upstream": up,
                "table": {"type": "string", "description": "schema.table, or a table of schema public"},
            }, "required": ["table"], "additionalProperties": false})),
        ).with_annotations(read_only()));
        let what = if reach.sql_writes {
            "Runs one SQL statement"
        } else {
            "Runs one read-only SQL query"
        };
        tools.push(Tool::new(
            "query",
            format!("{what} on a PostgreSQL upstream under your policy (masking, row filters and row limits apply) and returns the rows as JSON. One statement per call, in a transaction of its own; pass values as params ($1, $2, ...) rather than in the text."),
            schema(json!({"type": "object", "properties": {
                "upstream": up,
                "sql": {"type": "string", "description": "One SQL statement"},
                "params": {"type": "array", "description": "Values for $1, $2, ... (strings, numbers, booleans or null)",
                           "items": {"type": ["string", "number", "boolean", "null"]}},
                "max_rows": {"type": "integer", "minimum": 0, "description": "Return at most this many rows (cannot raise the policy's limit)"},
            }, "required": ["sql"], "additionalProperties": false})),
        ).with_annotations(writes(reach.sql_writes)));
        tools.push(Tool::new(
            "explain",
            "Dry run: whether your policy allows a SQL statement, the rule that decides, the tables and functions it uses and the statement as masking rewrites it. Runs nothing.",
            schema(json!({"type": "object", "properties": {
                "upstream": up,
                "sql": {"type": "string"},
            }, "required": ["sql"], "additionalProperties": false})),
        ).with_annotations(read_only()));
    }
    if !reach.redis.is_empty() {
        let up = upstream_arg("Redis", &reach.redis);
        tools.push(Tool::new(
            "list_keys",
            "Keys of a Redis upstream matching a pattern you may read (SCAN ... MATCH pattern).",
            schema(json!({"type": "object", "properties": {
                "upstream": up,
                "pattern": {"type": "string", "description": "A glob such as cache:*"},
                "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "description": "At most this many keys (default 100)"},
            }, "required": ["pattern"], "additionalProperties": false})),
        ).with_annotations(read_only()));
        tools.push(Tool::new(
            "redis",
            "Runs one Redis command under your policy (masked values stay masked), written as for redis-cli: GET cache:1, HGETALL \"session:1\".",
            schema(json!({"type": "object", "properties": {
                "upstream": up,
                "command": {"type": "string", "description": "The command and its arguments, redis-cli style"},
            }, "required": ["command"], "additionalProperties": false})),
        ).with_annotations(writes(reach.redis_writes)));
    }
    if !reach.mongo.is_empty() {
        let up = upstream_arg("MongoDB", &reach.mongo);
        let namespace = json!({
            "database": {"type": "string", "description": "The database, e.g. shop (see list_collections)"},
            "collection": {"type": "string", "description": "The collection, e.g. orders"},
        });
        let max_rows = json!({"type": "integer", "minimum": 0, "description": "Return at most this many documents (cannot raise the policy's limit)"});
        let document = |what: &str| json!({"type": "object", "description": what});
        let mut find = json!({"type": "object", "properties": {
            "upstream": up,
            "filter": document("A query filter in MongoDB Extended JSON (relaxed or canonical), e.g. {\"amount\": {\"$gt\": 100}}"),
            "projection": document("Fields to return, e.g. {\"name\": 1, \"region\": 1}"),
            "sort": document("Sort specification in key order, e.g. {\"region\": 1, \"amount\": -1}"),
            "limit": {"type": "integer", "minimum": 0, "description": "At most this many documents (0: no limit)"},
            "skip": {"type": "integer", "minimum": 0},
            "max_rows": max_rows,
        }, "required": ["database", "collection"], "additionalProperties": false});
        let mut aggregate = json!({"type": "object", "properties": {
            "upstream": up,
            "pipeline": {"type": "array", "items": {"type": "object"},
                         "description": "Aggregation stages in MongoDB Extended JSON, e.g. [{\"$match\": {}}, {\"$group\": {\"_id\": \"$region\", \"n\": {\"$sum\": 1}}}]"},
            "max_rows": max_rows,
        }, "required": ["database", "collection", "pipeline"], "additionalProperties": false});
        for t in [&mut find, &mut aggregate] {
            if let (Some(props), Some(ns)) =
                (t["properties"].as_object_mut(), namespace.as_object())
            {
                props.extend(ns.clone());
            }
        }
        tools.push(Tool::new(
            "list_collections",
            "Collections of a MongoDB upstream you may read: the operations allowed on each, the fields seen in a sample of its documents with masked fields marked, row filters named.",
            schema(json!({"type": "object", "properties": {
                "upstream": up,
                "database": {"type": "string", "description": "Only this database"},
            }, "additionalProperties": false})),
        ).with_annotations(read_only()));
        tools.push(Tool::new(
            "find",
            "Runs a find on a MongoDB collection under your policy (masked fields stay masked, row filters and row limits apply) and returns the documents as relaxed Extended JSON.",
            schema(find),
        ).with_annotations(read_only()));
        tools.push(Tool::new(
            "aggregate",
            "Runs an aggregation pipeline on a MongoDB collection under your policy (masking, row filters and row limits apply); read-only: $out and $merge are refused. Returns the documents as relaxed Extended JSON.",
            schema(aggregate),
        ).with_annotations(read_only()));
    }
    tools
}

/// The tools `list_upstreams` names for an upstream of `kind`.
pub fn tool_names(kind: UpstreamKind) -> &'static [&'static str] {
    match kind {
        UpstreamKind::Postgres => &["list_tables", "describe_table", "query", "explain"],
        UpstreamKind::Redis => &["list_keys", "redis"],
        UpstreamKind::Mongodb => &["list_collections", "find", "aggregate"],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(reach: &AgentReach) -> Vec<String> {
        tools_for(reach)
            .iter()
            .map(|t| t.name.to_string())
            .collect()
    }

    #[test]
    fn an_agent_gets_the_tools_of_the_kinds_it_may_reach_with_honest_hints() {
        let none = AgentReach::default();
        assert_eq!(names(&none), ["list_upstreams"]);
        let reader = AgentReach {
            sql: vec!["shop".into()],
            redis: vec!["cache".into()],
            ..AgentReach::default()
        };
        assert_eq!(
            names(&reader),
            [
                "list_upstreams",
                "list_tables",
                "describe_table",
                "query",
                "explain",
                "list_keys",
                "redis"
            ]
        );
        let tools = tools_for(&reader);
        let query = tools.iter().find(|t| t.name == "query").unwrap();
        let a = query.annotations.as_ref().unwrap();
        assert_eq!(
            (a.read_only_hint, a.destructive_hint),
            (Some(true), Some(false))
        );
        assert_eq!(
            query.input_schema["properties"]["upstream"]["enum"],
            json!(["shop"])
        );
        let writer = AgentReach {
            sql: vec!["shop".into()],
            sql_writes: true,
            ..AgentReach::default()
        };
        let tools = tools_for(&writer);
        let a = tools
            .iter()
            .find(|t| t.name == "query")
            .unwrap()
            .annotations
            .clone()
            .unwrap();
        assert_eq!(
            (a.read_only_hint, a.destructive_hint),
            (Some(false), Some(true))
        );
        assert!(!names(&writer).contains(&"redis".to_string()));
        let mongo = AgentReach {
            mongo: vec!["mongo".into()],
            ..AgentReach::default()
        };
        assert_eq!(
            names(&mongo),
            ["list_upstreams", "list_collections", "find", "aggregate"]
        );
        for t in tools_for(&mongo) {
            let a = t.annotations.clone().unwrap();
            assert_eq!(
                (a.read_only_hint, a.destructive_hint),
                (Some(true), Some(false)),
                "{}",
                t.name
            );
            let listed = tool_names(UpstreamKind::Mongodb).contains(&t.name.as_ref());
            assert!(t.name == "list_upstreams" || listed, "{}", t.name);
        }
        let find = tools_for(&mongo)
            .into_iter()
            .find(|t| t.name == "find")
            .unwrap();
        assert_eq!(
            find.input_schema["required"],
            json!(["database", "collection"])
        );
        assert!(find.input_schema["properties"]["database"].is_object());
    }
}
