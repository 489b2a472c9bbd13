//! Probing a connector: log in with the vaulted credentials and ask for the server version.
//! Messages are built here from the failure's kind, never from server or driver text, so they
//! cannot carry credentials or the upstream login name.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::config::UpstreamKind;
use crate::gateway::Gateway;

/// The answer of `POST /api/v1/connectors/{id}/test`.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    pub success: bool,
    pub message: String,
    pub latency_ms: u64,
    pub server_version: Option<String>,
}

/// A probe as remembered for the connector listing.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeRecord {
    /// RFC 3339, UTC.
    pub at: String,
    pub success: bool,
    pub latency_ms: u64,
    pub message: String,
}

impl ProbeRecord {
    pub fn of(r: &ProbeResult) -> ProbeRecord {
        ProbeRecord {
            at: now_rfc3339(),
            success: r.success,
            latency_ms: r.latency_ms,
            message: r.message.clone(),
        }
    }
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Probes connector `name` (which must exist) within `timeout`.
pub async fn probe(gw: &Gateway, name: &str, timeout: Duration) -> ProbeResult {
    let started = Instant::now();
    let kind = gw.config.upstreams.get(name).map(|u| u.kind);
    let outcome = match kind {
        Some(UpstreamKind::Postgres) => {
            tokio::time::timeout(timeout, probe_postgres(gw, name)).await
        }
        Some(UpstreamKind::Redis) => tokio::time::timeout(timeout, probe_redis(gw, name)).await,
        None => Ok(Err("no such connector".to_string())),
    };
    let latency_ms = started.elapsed().as_millis() as u64;
    match outcome {
        Ok(Ok(version)) => ProbeResult {
            success: true,
            message: "connected and logged in with the vaulted credentials".into(),
            latency_ms,
            server_version: Some(version),
        },
        Ok(Err(message)) => ProbeResult {
            success: false,
            message,
            latency_ms,
            server_version: None,
        },
        Err(_) => ProbeResult {
            success: false,
            message: format!(
                "the upstream did not answer within {} ms",
                timeout.as_millis()
            ),
            latency_ms,
            server_version: None,
        },
    }
}

async fn probe_postgres(gw: &Gateway, name: &str) -> Result<String, String> {
    let target = gw
        .upstreams
        .load()
        .get(name)
        .cloned()
        .ok_or("no such connector")?;
    let (client, driver) = crate::pg::schema_loader::side_connection(&target, "tollgate-probe")
        .await
        .map_err(|e| postgres_failure(&e, &target.host, target.port))?;
    let version = client
        .query_one("SHOW server_version", &[])
        .await
        .map_err(|e| postgres_failure(&e, &target.host, target.port))
        .map(|row| row.get::<_, String>(0));
    drop(client);
    let _ = driver.await;
    version
}

/// A message from the failure's class and SQLSTATE only.
fn postgres_failure(e: &tokio_postgres::Error, host: &str, port: u16) -> String {
    match e.code().map(|c| c.code()) {
        Some(code @ ("28P01" | "28000")) => {
            format!("the upstream refused tollgate's credentials (SQLSTATE {code})")
        }
        Some(code @ "3D000") => format!("the upstream database does not exist (SQLSTATE {code})"),
        Some(code) => format!("the upstream answered with an error (SQLSTATE {code})"),
        None => format!("cannot reach the upstream at {host}:{port}"),
    }
}

async fn probe_redis(gw: &Gateway, name: &str) -> Result<String, String> {
    use crate::redis::upstream::UpstreamError;
    let target = gw
        .redis_upstreams
        .get(name)
        .cloned()
        .ok_or("no such connector")?;
    let timeout = Duration::from_millis(gw.config.limits.upstream_connect_timeout_ms);
    let mut up = target.connect(timeout).await.map_err(|e| match e {
        UpstreamError::Connect(_) => {
            format!(
                "cannot reach the upstream at {}:{}",
                target.host, target.port
            )
        }
        UpstreamError::Timeout(t) => {
            format!("the upstream did not answer within {} ms", t.as_millis())
        }
        UpstreamError::LoginRefused(_) => "the upstream refused tollgate's credentials".into(),
        UpstreamError::Protocol(_) => "the upstream did not speak RESP as expected".into(),
        UpstreamError::Tls(_) => "the TLS handshake with the upstream failed".into(),
    })?;
    up.stream
        .write_all(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
        .await
        .map_err(|_| "the upstream closed the connection".to_string())?;
    let reply = crate::redis::upstream::read_one_reply(&mut up.stream)
        .await
        .map_err(|_| "the upstream did not answer INFO".to_string())?;
    let text = String::from_utf8_lossy(&reply);
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn probe_record_time_is_rfc3339() {
        let t = super::now_rfc3339();
        assert!(t.ends_with('Z') && t.contains('T'), "{t}");
    }
}
