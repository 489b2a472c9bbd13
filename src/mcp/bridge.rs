//! `tollgate mcp-stdio`: a bridge for MCP clients that only launch local processes. It reads
//! JSON-RPC messages from stdin (one per line), POSTs each to the gateway's MCP endpoint with the
//! agent's bearer (read from a file, never printed), and writes every message of the answer
//! (JSON or server-sent events) to stdout, one per line. Logs go to stderr; stdout carries
//! protocol only.

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::http::{header, Method, Request, StatusCode, Uri};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::tls::{UpstreamTls, UpstreamTlsMode};

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("--url: {0}")]
    Url(String),
    #[error("--token-file {path}: {message}")]
    Token { path: String, message: String },
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Where the gateway is and how to reach it.
struct Endpoint {
    uri: Uri,
    host: String,
    port: u16,
    tls: Option<UpstreamTls>,
    /// `Bearer AGENT:TOKEN`.
    bearer: String,
}

/// What the server told the bridge to send back (session id, negotiated protocol version).
#[derive(Default)]
struct Negotiated {
    session: Option<String>,
    version: Option<String>,
}

/// Largest answer the bridge buffers.
const MAX_ANSWER: usize = 64 << 20;

/// Reads the token file: `AGENT:TOKEN` (what `TOLLGATE_MCP_<AGENT>_TOKEN` holds), whitespace
/// around it ignored.
pub fn read_bearer(path: &Path) -> Result<String, BridgeError> {
    let fail = |message: String| BridgeError::Token {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let value = text.trim();
    if crate::mcp::parse_bearer(format!("Bearer {value}").as_bytes()).is_none() {
        return Err(fail("expected one line AGENT:TOKEN".into()));
    }
    Ok(format!("Bearer {value}"))
}

fn endpoint(url: &str, bearer: String, ca_file: Option<&Path>) -> Result<Endpoint, BridgeError> {
    let uri: Uri = url.parse().map_err(|e| BridgeError::Url(format!("{e}")))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => {
            return Err(BridgeError::Url(
                "must start with http:// or https://".into(),
            ))
        }
    };
    let host = uri
        .host()
        .ok_or_else(|| BridgeError::Url("no host".into()))?
        .to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tls = if https {
        UpstreamTls::build(UpstreamTlsMode::VerifyFull, &host, ca_file, None)?
    } else {
        None
    };
    Ok(Endpoint {
        uri,
        host,
        port,
        tls,
        bearer,
    })
}

/// Runs the bridge until stdin ends.
pub async fn run(url: &str, token_file: &Path, ca_file: Option<&Path>) -> Result<(), BridgeError> {
    let ep = Arc::new(endpoint(url, read_bearer(token_file)?, ca_file)?);
    let negotiated = Arc::new(Mutex::new(Negotiated::default()));
    let (out_tx, mut out_rx) = mpsc::channel::<String>(64);
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(line) = out_rx.recv().await {
            if stdout.write_all(line.as_bytes()).await.is_err()
                || stdout.write_all(b"\n").await.is_err()
                || stdout.flush().await.is_err()
            {
                return;
            }
        }
    });
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        let (ep, negotiated, out) = (ep.clone(), negotiated.clone(), out_tx.clone());
        let message = line;
        let is_init = serde_json::from_str::<Value>(&message)
            .ok()
            .is_some_and(|v| v["method"] == "initialize");
        let task = async move {
            for reply in forward(&ep, &negotiated, message).await {
                let _ = out.send(reply).await;
            }
        };
        if is_init {
            // Everything after initialize needs what its answer negotiates.
            task.await;
        } else {
            tasks.spawn(task);
        }
    }
    while tasks.join_next().await.is_some() {}
    drop(out_tx);
    let _ = writer.await;
    Ok(())
}

/// POSTs one message; the messages to write back (none for a notification).
async fn forward(ep: &Endpoint, negotiated: &Mutex<Negotiated>, message: String) -> Vec<String> {
    let id = serde_json::from_str::<Value>(&message)
        .ok()
        .and_then(|v| v.get("id").cloned());
    match post(ep, negotiated, message).await {
        Ok((status, content_type, body)) => {
            let replies = if content_type.starts_with("text/event-stream") {
                sse_data(&body)
            } else if body.is_empty() {
                Vec::new()
            } else {
                vec![String::from_utf8_lossy(&body).trim().to_string()]
            };
            if status.is_success() {
                remember(negotiated, &replies);
                return replies;
            }
            // An HTTP error: answered as a JSON-RPC error of the request it failed.
            let message = replies
                .first()
                .and_then(|r| serde_json::from_str::<Value>(r).ok())
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| format!("the gateway answered HTTP {status}"));
            error_reply(id, -32001, &message)
        }
        Err(e) => {
            tracing::warn!(error = %e, "mcp-stdio: the gateway could not be reached");
            error_reply(id, -32603, &format!("tollgate mcp-stdio: {e}"))
        }
    }
}

fn error_reply(id: Option<Value>, code: i64, message: &str) -> Vec<String> {
    match id {
        Some(id) => vec![
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
                .to_string(),
        ],
        None => Vec::new(),
    }
}

/// The protocol version an initialize answer negotiated (sent back as a header from then on).
fn remember(negotiated: &Mutex<Negotiated>, replies: &[String]) {
    for r in replies {
        if let Ok(v) = serde_json::from_str::<Value>(r) {
            if let Some(ver) = v["result"]["protocolVersion"].as_str() {
                negotiated.lock().unwrap_or_else(|e| e.into_inner()).version = Some(ver.into());
            }
        }
    }
}

/// The `data:` payloads of a server-sent event stream, one message per event.
fn sse_data(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    let mut out = Vec::new();
    for event in text.replace("\r\n", "\n").split("\n\n") {
        let data: Vec<&str> = event
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        if !data.is_empty() && !data.iter().all(|d| d.is_empty()) {
            out.push(data.join("\n"));
        }
    }
    out
}

async fn post(
    ep: &Endpoint,
    negotiated: &Mutex<Negotiated>,
    message: String,
) -> Result<(StatusCode, String, Bytes), String> {
    let tcp = TcpStream::connect((ep.host.as_str(), ep.port))
        .await
        .map_err(|e| format!("connect to {}:{}: {e}", ep.host, ep.port))?;
    let _ = tcp.set_nodelay(true);
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(ep.uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(header::HOST, ep.uri.authority().map_or("", |a| a.as_str()))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json, text/event-stream")
        .header(header::AUTHORIZATION, &ep.bearer);
    {
        let n = negotiated.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = &n.session {
            req = req.header("mcp-session-id", s);
        }
        if let Some(v) = &n.version {
            req = req.header("mcp-protocol-version", v);
        }
    }
    let mut auth = req
        .body(Full::new(Bytes::from(message)))
        .map_err(|e| e.to_string())?;
    if let Some(v) = auth.headers_mut().get_mut(header::AUTHORIZATION) {
        v.set_sensitive(true);
    }
    let response = match &ep.tls {
        Some(tls) => {
            let stream = tls
                .connector()
                .connect(tls.server_name.clone(), tcp)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            send(TokioIo::new(stream), auth).await?
        }
        None => send(TokioIo::new(tcp), auth).await?,
    };
    let (parts, body) = response.into_parts();
    if let Some(s) = parts
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
    {
        negotiated.lock().unwrap_or_else(|e| e.into_inner()).session = Some(s.to_string());
    }
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let limited = http_body_util::Limited::new(body, MAX_ANSWER);
    let bytes = limited
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok((parts.status, content_type, bytes))
}

async fn send<T>(
    io: TokioIo<T>,
    req: Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(req).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_streams_give_one_message_per_event() {
        let body = b"id: 1\nretry: 3000\ndata:\n\nevent: message\ndata: {\"a\":1}\n\r\ndata: {\"b\":\ndata: 2}\n\n";
        assert_eq!(
            sse_data(body),
            vec!["{\"a\":1}".to_string(), "{\"b\":\n2}".to_string()]
        );
    }

    #[test]
    fn the_token_file_holds_agent_colon_token() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "analyst:tg_abc\n").unwrap();
        assert_eq!(read_bearer(&p).unwrap(), "Bearer analyst:tg_abc");
        std::fs::write(&p, "tg_abc\n").unwrap();
        let e = read_bearer(&p).unwrap_err().to_string();
        assert!(e.contains("AGENT:TOKEN") && !e.contains("tg_abc"), "{e}");
        let e = endpoint("ftp://x/mcp", "Bearer a:b".into(), None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("http://"), "{e}");
    }

    #[test]
    fn http_errors_answer_the_request_that_failed() {
        let r = error_reply(Some(json!(7)), -32001, "no");
        let v: Value = serde_json::from_str(&r[0]).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["error"]["code"], -32001);
        assert!(
            error_reply(None, -32001, "no").is_empty(),
            "notifications get no answer"
        );
    }
}
