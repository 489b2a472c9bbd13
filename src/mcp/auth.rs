//! Who is calling: every HTTP request to the MCP endpoint carries `Authorization: Bearer
//! AGENT:TOKEN`, checked by the session core against the agent's stored verifier (constant time,
//! a mock verifier for unknown names, failures recorded and counted). Anything else gets 401 with
//! a JSON-RPC error. The header is taken off the request before the MCP service sees it, so no
//! later log line or extension can carry the token. An authenticated POST's body is kept for the
//! tools that read their arguments in the order written (`ordered`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::{debug, Instrument};

use super::cancel::{cancelled_id, CallId, CallsInFlight};
use super::listener::McpPeer;
use super::ordered::RawBody;
use crate::audit::Protocol;
use crate::session::{Accepted, Core, PreauthSlot, Verified};

/// The authenticated caller of one HTTP request, for the tools (request extensions).
#[derive(Clone)]
pub struct Caller {
    /// The request as the core accepted it: its id, span and live count last as long as this.
    pub accepted: Arc<Accepted>,
    pub verified: Verified,
    /// The request came over TLS.
    pub encrypted: bool,
}

impl Caller {
    pub fn agent(&self) -> &Arc<str> {
        self.verified.agent()
    }
}

/// Longest `Authorization` value looked at (an agent name and a token are far shorter).
const MAX_HEADER: usize = 512;
/// Largest request body read: the MCP service's own limit (rmcp's default, 4 MiB).
const MAX_BODY: usize = 4 << 20;

/// A body holding more JSON values than this is refused before it is parsed. A parsed value
/// costs far more than its bytes (`[]` is 2 bytes and about 100 once parsed; the body is parsed
/// up to three times, by the screen here, the MCP service and the tool), and parsing runs on
/// the async worker every door shares: a review's 4 MiB of `[],` took 260 MB and stalled every
/// other agent's PostgreSQL and Redis statements for seconds. A tool call needs a few hundred.
const MAX_JSON_VALUES: usize = 100_000;

/// What one JSON value of a body is counted as in the held budget while the request runs (its
/// parsed copies): with the body's own bytes, what the agent's requests may hold together is
/// bounded by `limits.max_held_client_bytes` and the agent's share of it.
const PARSED_VALUE_BYTES: usize = 256;

/// `Bearer AGENT:TOKEN` → (agent, token). The scheme is case-insensitive; the name ends at the
/// first `:` (agent names have none).
pub fn parse_bearer(value: &[u8]) -> Option<(&[u8], &[u8])> {
    if value.len() > MAX_HEADER || value.len() < 7 {
        return None;
    }
    let (scheme, rest) = value.split_at(7);
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let rest = rest.trim_ascii();
    let colon = rest.iter().position(|&b| b == b':')?;
    let (agent, token) = (&rest[..colon], &rest[colon + 1..]);
    (!agent.is_empty() && !token.is_empty()).then_some((agent, token))
}

/// The middleware in front of the MCP service.
pub async fn require_agent(
    State((core, calls)): State<(Arc<Core>, Arc<CallsInFlight>)>,
    mut req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<McpPeer>>()
        .map(|c| c.0)
        .unwrap_or(McpPeer {
            addr: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            encrypted: false,
        });
    // The connection's place in the pre-authentication count, until a request on it
    // authenticates (`http_serve`). While it holds one, this request is already counted.
    let slot = req.extensions().get::<Arc<PreauthSlot>>().cloned();
    let accepted = if slot.as_ref().is_some_and(|s| s.held()) {
        core.accept(Protocol::Mcp, peer.addr)
    } else {
        match core.try_accept(Protocol::Mcp, peer.addr) {
            Ok(a) => a,
            // Too many connections waiting to authenticate (on every door): 503, read nothing
            // more.
            Err(refusal) => {
                return json_rpc_error(StatusCode::SERVICE_UNAVAILABLE, &refusal.message())
            }
        }
    };
    let span = accepted.span();
    // Off the request for good: whatever the MCP service logs or keeps never holds the token.
    // Authorization is a single-valued header: with two, a proxy in front that reads the last
    // and tollgate the first would disagree on who calls.
    let headers = req.headers().get_all(AUTHORIZATION).iter().count();
    let header = req.headers_mut().remove(AUTHORIZATION);
    let verified = match header.as_ref().and_then(|h| parse_bearer(h.as_bytes())) {
        _ if headers > 1 => {
            accepted.auth_failed(
                b"",
                "authentication failed: more than one Authorization header",
            );
            None
        }
        Some((agent, token)) => accepted.verify_token(agent, token),
        None => {
            accepted.auth_failed(b"", "authentication failed: no AGENT:TOKEN bearer");
            None
        }
    };
    let Some(verified) = verified else {
        return unauthorized();
    };
    // Until its body has arrived the request keeps a place in the pre-authentication count:
    // its connection's (a first request), or one of its own (a later request on a keep-alive
    // connection, let in by `try_accept` above).
    let own_place = (!slot.as_ref().is_some_and(|s| s.held())).then(|| core.preauth_place());
    // The body of a POST, kept for the tools that read their arguments in the order written
    // (`ordered`); only once the bearer checked out, and no larger than the MCP service reads.
    // While the request runs it is counted like a wire message being received
    // (`limits.max_held_client_bytes`, and the agent's share). It must arrive within the
    // login's deadline (`limits.auth_timeout_ms` from the headers), and until it has the
    // request keeps its place in the pre-authentication count: a body sent a byte at a time
    // cannot keep a connection, and with it a descriptor, for ever.
    let mut held = crate::ratelimit::Held::of(&core.held, verified.agent());
    // The JSON values of the body, counted once (the held budget, then `screen`).
    let mut counted = 0;
    let mut req = if req.method() == Method::POST {
        let (parts, body) = req.into_parts();
        let read = tokio::time::timeout_at(accepted.deadline, read_body(body, &mut held)).await;
        let Ok(read) = read else {
            return json_rpc_error(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "tollgate: the request body did not arrive within {} ms of its headers (limits.auth_timeout_ms)",
                    core.limits.auth_timeout_ms
                ),
            );
        };
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(BodyRefused::Held(e)) => {
                return json_rpc_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
            }
            Err(BodyRefused::Unreadable) => {
                return json_rpc_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "tollgate: the request body is larger than 4 MiB or could not be read",
                )
            }
        };
        // What parsing it will hold, counted before anything parses it.
        let values = json_values(&bytes);
        if values <= MAX_JSON_VALUES {
            if let Err(e) = held.track(bytes.len() + values * PARSED_VALUE_BYTES) {
                return json_rpc_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
            }
        }
        let mut req = Request::from_parts(parts, Body::from(bytes.clone()));
        req.extensions_mut().insert(RawBody(bytes));
        counted = values;
        req
    } else {
        req
    };
    if let Some(slot) = slot {
        slot.release();
    }
    drop(own_place);
    // What the MCP service refuses before any tool is called (a body that is not JSON, a
    // tools/call whose params have the wrong shape) is a refused request like any other:
    // paced and recorded (`Accepted::refuse_request`), answered here. After the places above
    // are given back: the agent did authenticate.
    let screened = req
        .extensions()
        .get::<RawBody>()
        .map_or(Screened::Pass, |raw| screen(&raw.0, counted));
    match screened {
        Screened::Malformed(Malformed { code, why, id }) => {
            core.pace_refusals_of(verified.agent(), Protocol::Mcp).await;
            accepted.refuse_request(
                verified.agent(),
                None,
                "-- mcp: a malformed request".to_string(),
                why,
            );
            let body = serde_json::json!({
                "jsonrpc": "2.0",
                "id": id,
                "error": { "code": code, "message": format!("tollgate: {why}") }
            });
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
        // The service answers the notification (202); the call it names, if it is this
        // agent's and still running, stops here.
        Screened::Cancel(id) => {
            let n = calls.cancel(verified.agent(), &id);
            debug!(cancelled = n, "notifications/cancelled");
        }
        Screened::Pass => {}
    }
    req.extensions_mut().insert(Arc::new(HeldBody(held)));
    req.extensions_mut().insert(Caller {
        accepted: Arc::new(accepted),
        verified,
        encrypted: peer.encrypted,
    });
    next.run(req).instrument(span).await
}

/// Why a request body was not taken.
enum BodyRefused {
    /// Larger than [`MAX_BODY`], or the connection failed while it arrived.
    Unreadable,
    /// It does not fit in what client messages being received may hold.
    Held(crate::ratelimit::HeldExhausted),
}

/// The body, counted in `held` as it arrives: a body that would not fit stops being read.
async fn read_body(
    mut body: Body,
    held: &mut crate::ratelimit::Held,
) -> Result<bytes::Bytes, BodyRefused> {
    use http_body_util::BodyExt;
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyRefused::Unreadable)?;
        let Ok(chunk) = frame.into_data() else {
            continue; // trailers
        };
        let len = buf.len() + chunk.len();
        if len > MAX_BODY {
            return Err(BodyRefused::Unreadable);
        }
        held.track(len).map_err(BodyRefused::Held)?;
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// A request body's place in the held budget, given back when the request is done with (the
/// request's extensions are dropped).
struct HeldBody(#[allow(dead_code)] crate::ratelimit::Held);

/// 401 with a JSON-RPC error body (no request id: the request was not read).
fn unauthorized() -> Response {
    let mut resp = json_rpc_error(
        StatusCode::UNAUTHORIZED,
        "tollgate: authentication failed: send Authorization: Bearer AGENT:TOKEN with the agent's token",
    );
    resp.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"tollgate\""),
    );
    resp
}

/// An HTTP error whose body is a JSON-RPC error (no request id: the request was not read).
fn json_rpc_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json_rpc_body(message))).into_response()
}

/// Why the MCP service would refuse a request before calling a tool.
#[derive(Debug, PartialEq)]
struct Malformed {
    /// The JSON-RPC error code.
    code: i32,
    why: &'static str,
    /// The request's `id`, if it has a usable one (a string or a number).
    id: serde_json::Value,
}

/// What the middleware makes of a POST body before the MCP service reads it.
enum Screened {
    /// The service would refuse it before calling a tool.
    Malformed(Malformed),
    /// A `notifications/cancelled` naming this call id.
    Cancel(CallId),
    Pass,
}

/// A POST body, parsed once: one the MCP service would refuse before calling a tool (a body
/// that is not JSON, -32700; a `tools/call` whose `params` are not an object with a string
/// `name` and, if any, object `arguments`, -32602), a cancellation, or the service's. `values`:
/// its JSON values as `json_values` counted them.
fn screen(body: &[u8], values: usize) -> Screened {
    let invalid = |why| {
        Screened::Malformed(Malformed {
            code: -32600,
            why,
            id: serde_json::Value::Null,
        })
    };
    if values > MAX_JSON_VALUES {
        return invalid("the request holds more than 100000 JSON values");
    }
    // Read as `ordered::Json`, which refuses a key named twice in any object: serde_json keeps
    // the last of a repeated key, and the MCP service refused such bodies with a 415 or a
    // "method not found" of its own, unrecorded (a live review's duplicate `params` asked for
    // `secrets` first). Which of two values counts is not for a reader to guess. (Its only
    // error that is not a syntax error is the repeated key.)
    let value = match serde_json::from_slice::<super::ordered::Json>(body) {
        Ok(json) => json.into_value(),
        Err(e) if e.is_data() => return invalid("a JSON object of the request names a key twice"),
        // Valid JSON nested deeper than the reader goes (128 levels): said so, not "not JSON".
        Err(e) if e.to_string().starts_with("recursion limit exceeded") => {
            return invalid("the request nests JSON more than 128 levels deep")
        }
        Err(_) => {
            return Screened::Malformed(Malformed {
                code: -32700,
                why: "the request body is not valid JSON",
                id: serde_json::Value::Null,
            })
        }
    };
    let message = match &value {
        serde_json::Value::Object(m) => m,
        // The MCP service answers these with 415 and a line of text; a JSON-RPC client expects
        // a JSON-RPC error (batches left MCP in its 2025-06-18 revision).
        serde_json::Value::Array(_) => {
            return invalid("JSON-RPC batches are not supported: send one message per request")
        }
        _ => return invalid("the request is not a JSON-RPC message (an object)"),
    };
    if let Some(why) = invalid_envelope(message) {
        return invalid(why);
    }
    if let Some(id) = cancelled_id(message) {
        return Screened::Cancel(id);
    }
    match malformed_call(message) {
        Some(m) => Screened::Malformed(m),
        None => Screened::Pass,
    }
}

/// Why `message` is not a JSON-RPC 2.0 request, notification or response, if it is not (the MCP
/// service would answer 415 with a line of text).
fn invalid_envelope(message: &serde_json::Map<String, serde_json::Value>) -> Option<&'static str> {
    if message.get("jsonrpc").and_then(|v| v.as_str()) != Some("2.0") {
        return Some("not a JSON-RPC 2.0 message: \"jsonrpc\" must be \"2.0\"");
    }
    // The MCP service takes ids that fit in an i64 (2^63 was its 415).
    if message
        .get("id")
        .is_some_and(|id| !(id.is_string() || id.is_i64()))
    {
        return Some("a JSON-RPC id must be a string or an integer of at most 64 bits (signed)");
    }
    let response = message.contains_key("result") || message.contains_key("error");
    match message.get("method") {
        Some(_) if response => Some("a JSON-RPC message is a request or a response, not both"),
        // A tools/call sent as a notification was answered 202 and dropped, unrecorded.
        Some(m)
            if m.as_str().is_some_and(|m| !m.starts_with("notifications/"))
                && !message.contains_key("id") =>
        {
            Some("a JSON-RPC request needs an id (only notifications/* go without one)")
        }
        Some(m) if m.is_string() => None,
        Some(_) => Some("a JSON-RPC method must be a string"),
        None if response => None,
        None => Some("a JSON-RPC request needs a method"),
    }
}

/// How many JSON values `body` may hold, without parsing it: one, plus every `,` `[` and `{`
/// outside strings (every value after the first follows one of them; empty containers count
/// twice). Counts past [`MAX_JSON_VALUES`] stop early.
fn json_values(body: &[u8]) -> usize {
    let mut values = 1;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b',' | b'[' | b'{' => {
                values += 1;
                if values > MAX_JSON_VALUES {
                    return values;
                }
            }
            _ => {}
        }
    }
    values
}

#[cfg(test)]
fn malformed_request(body: &[u8]) -> Option<Malformed> {
    match screen(body, json_values(body)) {
        Screened::Malformed(m) => Some(m),
        _ => None,
    }
}

/// A `tools/call` whose params the service would refuse.
fn malformed_call(message: &serde_json::Map<String, serde_json::Value>) -> Option<Malformed> {
    if message.get("method").and_then(|m| m.as_str()) != Some("tools/call") {
        return None;
    }
    let well_formed = message
        .get("params")
        .and_then(|p| p.as_object())
        .is_some_and(|p| {
            p.get("name").is_some_and(|n| n.is_string())
                && p.get("arguments")
                    .is_none_or(|a| a.is_object() || a.is_null())
        });
    (!well_formed).then(|| Malformed {
        code: -32602,
        why: "tools/call params must be an object with a string name and object arguments",
        id: message
            .get("id")
            .filter(|id| id.is_string() || id.is_number())
            .cloned()
            .unwrap_or(serde_json::Value::Null),
    })
}

/// A JSON-RPC error answering no request in particular.
pub(super) fn json_rpc_body(message: &str) -> serde_json::Value {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": { "code": -32001, "message": message }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_calls_the_service_would_refuse_are_told_apart() {
        let call = |params: &str| {
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{params}}}"#)
        };
        for bad in [
            call(r#"{"name":"query","arguments":"x"}"#),
            call(r#"{"name":"query","arguments":[1]}"#),
            call(r#"{"name":123}"#),
            call(r#"{"arguments":{}}"#),
            call(r#""query""#),
        ] {
            assert_eq!(
                malformed_request(bad.as_bytes()).map(|m| m.code),
                Some(-32602),
                "{bad}"
            );
        }
        assert_eq!(
            malformed_request(b"{\"jsonrpc\":").map(|m| m.code),
            Some(-32700)
        );
        for fine in [
            call(r#"{"name":"query","arguments":{"sql":"SELECT 1"}}"#),
            call(r#"{"name":"list_upstreams"}"#),
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#.to_string(),
            r#"{"jsonrpc":"2.0","id":"a","method":"tools/list"}"#.to_string(),
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_string(),
            r#"{"jsonrpc":"2.0","id":1,"result":{}}"#.to_string(),
        ] {
            assert_eq!(malformed_request(fine.as_bytes()), None, "{fine}");
        }
        // Not JSON-RPC messages: -32600, not the MCP service's 415 (wire review).
        for invalid in [
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
            "[]",
            r#""x""#,
            "7",
            r#"{"id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":7}"#,
            r#"{"jsonrpc":"2.0","id":1}"#,
            r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","result":{}}"#,
            // Found by a live review: each was the MCP service's, unrecorded.
            r#"{"jsonrpc":"2.0","id":9223372036854775808,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"query","arguments":{"sql":"select * from secrets"}},"params":{"name":"query","arguments":{"sql":"select 1"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"query","name":"x","arguments":{}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"query","arguments":{"sql":"a","sql":"b"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"query","arguments":{"x":[{"k":1,"k\u0000":2,"k":3}]}}}"#,
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"query","arguments":{"sql":"select 1"}}}"#,
        ] {
            assert_eq!(
                malformed_request(invalid.as_bytes()).map(|m| m.code),
                Some(-32600),
                "{invalid}"
            );
        }
        let id_of = |body: &[u8]| malformed_request(body).map(|m| m.id);
        assert_eq!(id_of(call("1").as_bytes()), Some(serde_json::json!(1)));
        assert_eq!(id_of(b"nope"), Some(serde_json::Value::Null));
    }

    /// A repeated key is found among many, in any object of the request.
    #[test]
    fn a_key_named_twice_among_many_is_refused() {
        let keys: String = (0..20_000).map(|i| format!(r#""k{i}":{i},"#)).collect();
        let call = |extra: &str| {
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"query","arguments":{{{keys}{extra}}}}}}}"#
            )
        };
        assert_eq!(
            malformed_request(call(r#""sql":"select 1""#).as_bytes()),
            None
        );
        assert_eq!(
            malformed_request(call(r#""k19999":0"#).as_bytes()).map(|m| m.code),
            Some(-32600)
        );
    }

    /// A body of many small values is refused before it is parsed (the MCP review's 4 MiB of
    /// `[],` held 260 MB once parsed, and stalled every door while it was).
    #[test]
    fn bodies_of_too_many_values_are_refused_unparsed() {
        let many = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"query","arguments":{{"sql":"select 1","x":[{}[]]}}}}}}"#,
            "[],".repeat(MAX_JSON_VALUES)
        );
        let refused = malformed_request(many.as_bytes()).expect("refused");
        assert_eq!(refused.code, -32600);
        assert!(
            refused.why.contains("100000 JSON values"),
            "{}",
            refused.why
        );
        // Brackets and commas inside strings are text, not values.
        let text = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"query","arguments":{{"sql":"select '{}\"'"}}}}}}"#,
            "[],{".repeat(MAX_JSON_VALUES)
        );
        assert!(json_values(text.as_bytes()) < 10);
        assert_eq!(malformed_request(text.as_bytes()), None);
        assert_eq!(json_values(br#"[1,[2,{"a":3}]]"#), 6);
    }

    #[test]
    fn bearers_name_the_agent_before_the_first_colon() {
        let ok: &[(&str, (&str, &str))] = &[
            ("Bearer analyst:tg_abc", ("analyst", "tg_abc")),
            ("bearer analyst:tg_abc ", ("analyst", "tg_abc")),
            ("BEARER a.b-c:x:y", ("a.b-c", "x:y")),
        ];
        for (header, (agent, token)) in ok {
            let (a, t) = parse_bearer(header.as_bytes()).unwrap();
            assert_eq!((a, t), (agent.as_bytes(), token.as_bytes()), "{header}");
        }
        for bad in [
            "",
            "Bearer",
            "Bearer ",
            "Bearer tg_abc",
            "Bearer :tg_abc",
            "Bearer analyst:",
            "Basic YW5hbHlzdDp4",
            "Beareranalyst:x",
        ] {
            assert!(parse_bearer(bad.as_bytes()).is_none(), "{bad:?}");
        }
        let long = format!("Bearer analyst:{}", "x".repeat(600));
        assert!(parse_bearer(long.as_bytes()).is_none());
    }
}
