//! Probing a connector: log in with the vaulted credentials and ask for the server version.
//! Messages are built here from the failure's kind, never from server or driver text, so they
//! cannot carry credentials or the upstream login name.

use std::time::{Duration, Instant};

use crate::gateway::Gateway;
use serde::Serialize;

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

/// Probes connector `name` (which must exist) within `timeout`, through its door.
pub async fn probe(gw: &Gateway, name: &str, timeout: Duration) -> ProbeResult {
    let started = Instant::now();
    let outcome = match gw.door_for(name) {
        Some(door) => tokio::time::timeout(timeout, door.probe(name, timeout)).await,
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

#[cfg(test)]
mod tests {
    #[test]
    fn probe_record_time_is_rfc3339() {
        let t = super::now_rfc3339();
        assert!(t.ends_with('Z') && t.contains('T'), "{t}");
    }
}
