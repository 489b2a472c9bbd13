//! The OpenAPI 3 document of the admin API, served at `/api/v1/openapi.json` (written by hand:
//! a test checks that every routed path and method is described).

use axum::Json;
use serde_json::{json, Value};

pub async fn serve() -> Json<Value> {
    Json(document())
}

fn error_responses(auth: bool) -> Value {
    let mut r = json!({
        "400": {"$ref": "#/components/responses/Error"},
        "404": {"$ref": "#/components/responses/Error"},
    });
    if auth {
        r["401"] = json!({"$ref": "#/components/responses/Error"});
        r["403"] = json!({"$ref": "#/components/responses/Error"});
        // A token not seen before waits its turn to be checked; 429 when it could not.
        r["429"] = json!({"$ref": "#/components/responses/Error"});
    }
    r
}

fn op(summary: &str, role: Option<&str>, params: Value, ok: Value) -> Value {
    let mut responses = error_responses(role.is_some());
    responses["200"] = ok;
    if role == Some("admin") {
        // An admin action the audit log cannot record is not done.
        responses["503"] = json!({"$ref": "#/components/responses/Error"});
    }
    let mut v = json!({
        "summary": summary,
        "parameters": params,
        "responses": responses,
    });
    match role {
        Some(r) => {
            v["security"] = json!([{"bearer": []}]);
            v["x-required-role"] = json!(r);
        }
        None => v["security"] = json!([]),
    }
    v
}

fn json_ok(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn path_id(what: &str) -> Value {
    json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}, "description": what})
}

fn query(name: &str, ty: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "schema": {"type": ty}, "description": description})
}

pub fn document() -> Value {
    let obj = json!({"type": "object"});
    let arr = json!({"type": "array", "items": {"type": "object"}});
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "tollgate admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Connectors, schemas, agents, audit, stats and reload of a tollgate gateway. GET endpoints need a viewer or admin token, POST endpoints an admin token (Authorization: Bearer <token>, created with `tollgate admin-token add NAME --role viewer|admin`). /healthz, /readyz and this document are open. Errors are {\"error\": {\"code\", \"message\"}}."
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"}}}}},
                "TestResult": {"type": "object", "required": ["success", "message", "latency_ms"], "properties": {
                    "success": {"type": "boolean"},
                    "message": {"type": "string", "description": "never contains credentials"},
                    "latency_ms": {"type": "integer"},
                    "server_version": {"type": "string", "nullable": true}}},
                "Connector": {"type": "object", "properties": {
                    "id": {"type": "string"}, "type": {"type": "string", "enum": ["postgres", "redis"]},
                    "host": {"type": "string"}, "port": {"type": "integer"},
                    "database": {"type": "string"}, "search_path": {"type": "array", "items": {"type": "string"}},
                    "user": {"type": "string", "description": "vault reference, never the value"},
                    "password": {"type": "string", "description": "vault reference, never the value"},
                    "status": {"type": "string", "enum": ["untested", "ok", "failing"]},
                    "last_test": {"type": "object", "nullable": true}}},
                "Schema": {"type": "object", "properties": {
                    "connector": {"type": "string"}, "agent": {"type": "string"}, "loaded_at": {"type": "string"},
                    "tables": {"type": "array", "items": {"type": "object", "properties": {
                        "schema": {"type": "string"}, "name": {"type": "string"},
                        "operations": {"type": "array", "items": {"type": "string"}},
                        "columns": {"type": "array", "items": {"type": "object", "properties": {
                            "name": {"type": "string"}, "type": {"type": "string"},
                            "masked": {"type": "boolean"}, "mask": {"type": "string", "nullable": true}}}}}}}}},
                "Rotation": {"type": "object", "required": ["rotated", "head"], "properties": {
                    "rotated": {"type": "boolean"},
                    "closed_file": {"type": "string", "description": "name of the closed file, e.g. audit.log.000000000001"},
                    "first_seq": {"type": "integer"}, "last_seq": {"type": "integer"},
                    "link_seq": {"type": "integer", "description": "seq of the new file's first record, which names the closed file"},
                    "reason": {"type": "string"},
                    "head": {"type": "object", "properties": {"seq": {"type": "integer"}, "hash": {"type": "string"}}}}},
                "AuditPage": {"type": "object", "properties": {
                    "records": {"type": "array", "items": {"type": "object"}},
                    "next_before": {"type": "integer", "nullable": true}}}
            },
            "responses": {
                "Error": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        },
        "paths": {
            "/healthz": {"get": op("Liveness: the process serves HTTP", None, json!([]), json_ok("alive", obj.clone()))},
            "/readyz": {"get": {
                "summary": "Readiness: 200 when every connector answered a probe (login included) and the gateway is not shutting down, else 503",
                "security": [],
                "responses": {"200": json_ok("ready", obj.clone()), "503": json_ok("not ready", obj.clone())}}},
            "/metrics": {"get": {
                "summary": "Prometheus text exposition",
                "security": [{"bearer": []}], "x-required-role": "viewer",
                "responses": {
                    "200": {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
                    "401": {"$ref": "#/components/responses/Error"},
                    "429": {"$ref": "#/components/responses/Error"}}}},
            "/api/v1/openapi.json": {"get": op("This document", None, json!([]), json_ok("OpenAPI 3 document", obj.clone()))},
            "/api/v1/connectors/types": {"get": op("The connector types tollgate speaks and their config fields", Some("viewer"), json!([]), json_ok("types", arr.clone()))},
            "/api/v1/connectors": {"get": op("Configured connectors without secrets, with the last test", Some("viewer"),
                json!([query("connector_type", "string", "postgres or redis")]),
                json_ok("connectors", json!({"type": "array", "items": {"$ref": "#/components/schemas/Connector"}})))},
            "/api/v1/connectors/{id}": {"get": op("One connector", Some("viewer"), json!([path_id("connector id")]),
                json_ok("connector", json!({"$ref": "#/components/schemas/Connector"})))},
            "/api/v1/connectors/{id}/test": {"post": op("Log in to the connector with the vaulted credentials and read its version", Some("admin"),
                json!([path_id("connector id")]), json_ok("probe result (success may be false)", json!({"$ref": "#/components/schemas/TestResult"})))},
            "/api/v1/connectors/{id}/schema": {"get": op("Tables and columns from the connector's catalog (PostgreSQL); with agent, only what that agent may use, masked columns marked", Some("viewer"),
                json!([path_id("connector id"), query("agent", "string", "agent name"), query("refresh", "boolean", "read the catalog again")]),
                json_ok("schema", json!({"$ref": "#/components/schemas/Schema"})))},
            "/api/v1/agents": {"get": op("Agents, their groups, connectors and limits (never tokens)", Some("viewer"), json!([]), json_ok("agents", arr.clone()))},
            "/api/v1/agents/{id}/connectors": {"get": op("The connectors an agent's policy reaches, with effective permissions and limits", Some("viewer"),
                json!([path_id("agent name")]), json_ok("permissions", obj.clone()))},
            "/api/v1/audit": {"get": op("Audit records, newest first; at most 8 MiB per answer (it pages on early), statements over 64 KiB cut (statement_bytes: their length)", Some("viewer"),
                json!([query("agent", "string", "agent name"),
                       query("decision", "string", "allowed, masked, rewritten, blocked, would_block or error"),
                       query("since", "string", "RFC 3339 time: records at or after it"),
                       query("before", "integer", "records with seq below this (next_before of the previous page)"),
                       query("limit", "integer", "1..1000, default 100")]),
                json_ok("a page of records", json!({"$ref": "#/components/schemas/AuditPage"})))},
            "/api/v1/audit/rotate": {"post": op("Close the active audit file now; the next file links to it (as SIGUSR1 does). rotated is false when the active file holds no records yet", Some("admin"),
                json!([]), json_ok("what was closed, and the chain head", json!({"$ref": "#/components/schemas/Rotation"})))},
            "/api/v1/stats": {"get": op("Counters per agent and per connector since start", Some("viewer"), json!([]), json_ok("stats", obj.clone()))},
            "/api/v1/reload": {"post": {
                "summary": "Reload policies, agents, the vault and the admin tokens; a part that fails keeps its running version",
                "security": [{"bearer": []}], "x-required-role": "admin",
                "responses": {
                    "200": json_ok("reloaded", obj.clone()),
                    "422": json_ok("some part kept its running version; errors listed", obj.clone()),
                    "401": {"$ref": "#/components/responses/Error"},
                    "403": {"$ref": "#/components/responses/Error"},
                    "429": {"$ref": "#/components/responses/Error"},
                    "503": {"$ref": "#/components/responses/Error"}}}}
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_route_is_documented() {
        let doc = super::document();
        for (method, path) in super::super::ROUTES {
            assert!(
                doc["paths"][path][method].is_object(),
                "{method} {path} is not in the OpenAPI document"
            );
        }
        let documented: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum();
        assert_eq!(
            documented,
            super::super::ROUTES.len(),
            "the document describes a route that is not served"
        );
    }
}
