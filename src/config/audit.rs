//! `[audit]`: the log file, what records hold, rotation, and the exports (syslog, webhook).

use std::path::PathBuf;

use serde::Deserialize;

use crate::tls::UpstreamTlsMode;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    pub file: PathBuf,
    /// Replace literals in recorded statements with `$n` placeholders (PostgreSQL's own normaliser).
    #[serde(default)]
    pub redact_literals: bool,
    /// Which Redis commands get an outcome record besides their decision record: `errors`
    /// (default: only commands the upstream answered with an error, or whose reply never came)
    /// or `all` (every command, with its duration). Decisions are always recorded.
    #[serde(default)]
    pub redis_outcomes: RedisOutcomes,
    /// `[audit.rotate]`: when the active file is closed and a new one continues the chain.
    #[serde(default)]
    pub rotate: RotateConfig,
    /// `[audit.syslog]`: every record to a syslog receiver (RFC 5424 over TCP or TLS).
    #[serde(default)]
    pub syslog: Option<SyslogConfig>,
    /// `[audit.webhook]`: chosen records (e.g. refusals) POSTed in signed batches.
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisOutcomes {
    #[default]
    Errors,
    All,
}

/// Rotation: by size, by record count, by age, whichever comes first; plus on demand (SIGUSR1,
/// `POST /api/v1/audit/rotate`). Off unless one limit is set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateConfig {
    /// Close the file once it holds this many bytes.
    pub max_bytes: Option<u64>,
    /// Close the file once it holds this many records (the link record included).
    pub max_records: Option<u64>,
    /// Close the file once its first record is this old: `90s`, `30m`, `12h`, `1d`.
    pub interval: Option<String>,
    /// Compress closed files with gzip (`audit.log.000000001001.gz`).
    #[serde(default)]
    pub compress: bool,
    /// Keep at most this many closed files; older ones are deleted (the chain then starts at
    /// the oldest kept file, which names the one before it).
    pub retain: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// `host:port` of the receiver (TCP; octet-counted frames, RFC 6587 / RFC 5425).
    pub address: String,
    /// `disable` (plain TCP), `require` or `verify-full` (TLS, RFC 5425); default as for upstreams:
    /// plain for loopback, `verify-full` otherwise.
    pub tls: Option<UpstreamTlsMode>,
    pub ca_file: Option<PathBuf>,
    /// Syslog facility: `kern`..`local7` (default `local0`).
    #[serde(default = "default_facility")]
    pub facility: String,
    /// HOSTNAME field (default: this machine's host name).
    pub hostname: Option<String>,
    /// Records waiting for the receiver at most; beyond that they are dropped from the export
    /// (never from the log) and a gap record says so.
    #[serde(default = "default_queue")]
    pub queue: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL the batches are POSTed to.
    pub url: String,
    /// `vault:NAME` of the HMAC-SHA256 key that signs each batch (`X-Tollgate-Signature`).
    pub secret: String,
    /// Decisions that are sent (default: `blocked`). Records the log writes about itself (lost
    /// records, failed rotations, export gaps) are always sent.
    #[serde(default = "default_decisions")]
    pub decisions: Vec<String>,
    /// Only records whose rule matches one of these globs (default: any rule).
    #[serde(default)]
    pub rules: Vec<String>,
    /// Most records per POST.
    #[serde(default = "default_batch_max")]
    pub batch_max: usize,
    /// How long the first record of a batch waits for more.
    #[serde(default = "default_batch_wait_ms")]
    pub batch_wait_ms: u64,
    /// Most POSTs per minute (retries included).
    #[serde(default = "default_max_per_minute")]
    pub max_per_minute: u32,
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// PEM trust anchors for an `https://` URL (default: the system CA bundle).
    pub ca_file: Option<PathBuf>,
}

fn default_facility() -> String {
    "local0".into()
}
fn default_queue() -> usize {
    10_000
}
fn default_decisions() -> Vec<String> {
    vec!["blocked".into()]
}
fn default_batch_max() -> usize {
    100
}
fn default_batch_wait_ms() -> u64 {
    1_000
}
fn default_max_per_minute() -> u32 {
    60
}

/// Syslog facility codes (RFC 5424 table 1).
pub const FACILITIES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

/// `90s`, `30m`, `12h`, `1d` (a whole number and a unit).
pub fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("\"{s}\": expected a number and a unit (s, m, h, d), e.g. \"1d\""))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("\"{s}\": the unit must be s, m, h or d")),
    };
    if secs == 0 {
        return Err(format!("\"{s}\": must be longer than zero"));
    }
    Ok(std::time::Duration::from_secs(secs))
}

impl AuditConfig {
    /// Checks what serde cannot; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        let r = &self.rotate;
        if let Some(i) = &r.interval {
            parse_interval(i).map_err(|e| format!("audit.rotate.interval: {e}"))?;
        }
        if r.max_bytes == Some(0) || r.max_records == Some(0) {
            return Err("audit.rotate: max_bytes and max_records must be above zero".into());
        }
        if r.retain.is_some() && !self.rotates() {
            return Err("audit.rotate.retain is set but nothing rotates the log: set max_bytes, max_records or interval".into());
        }
        if let Some(s) = &self.syslog {
            if !FACILITIES.contains(&s.facility.as_str()) {
                return Err(format!(
                    "audit.syslog.facility: \"{}\" is not one of {}",
                    s.facility,
                    FACILITIES.join(", ")
                ));
            }
            split_host_port(&s.address).map_err(|e| format!("audit.syslog.address: {e}"))?;
            if s.queue == 0 {
                return Err("audit.syslog.queue must be above zero".into());
            }
        }
        if let Some(w) = &self.webhook {
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                return Err("audit.webhook.url must start with http:// or https://".into());
            }
            if !w.secret.starts_with("vault:") {
                return Err("audit.webhook.secret must be a vault reference (\"vault:NAME\"), never the key itself".into());
            }
            for d in &w.decisions {
                if !crate::audit::DECISIONS.contains(&d.as_str()) {
                    return Err(format!(
                        "audit.webhook.decisions: unknown decision \"{d}\" (known: {})",
                        crate::audit::DECISIONS.join(", ")
                    ));
                }
            }
            if w.batch_max == 0 || w.max_per_minute == 0 || w.queue == 0 {
                return Err(
                    "audit.webhook: batch_max, max_per_minute and queue must be above zero".into(),
                );
            }
        }
        Ok(())
    }

    /// Whether any limit closes files automatically.
    pub fn rotates(&self) -> bool {
        let r = &self.rotate;
        r.max_bytes.is_some() || r.max_records.is_some() || r.interval.is_some()
    }

    pub fn resolve_paths(&mut self, join: impl Fn(&mut PathBuf)) {
        join(&mut self.file);
        if let Some(s) = self.syslog.as_mut() {
            if let Some(ca) = s.ca_file.as_mut() {
                join(ca);
            }
        }
        if let Some(w) = self.webhook.as_mut() {
            if let Some(ca) = w.ca_file.as_mut() {
                join(ca);
            }
        }
    }
}

/// `host:port`, `[v6]:port` → (host, port).
pub fn split_host_port(address: &str) -> Result<(String, u16), String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("\"{address}\": expected host:port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("\"{address}\": the port must be a number"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("\"{address}\": no host"));
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_interval("30m").unwrap().as_secs(), 1800);
        assert_eq!(parse_interval("1d").unwrap().as_secs(), 86_400);
        assert!(parse_interval("0h").is_err());
        assert!(parse_interval("1w").unwrap_err().contains("unit"));
        assert!(parse_interval("h").is_err());
    }

    #[test]
    fn host_ports() {
        assert_eq!(split_host_port("siem:6514").unwrap(), ("siem".into(), 6514));
        assert_eq!(split_host_port("[::1]:514").unwrap(), ("::1".into(), 514));
        assert!(split_host_port("siem").is_err());
        assert!(split_host_port(":514").is_err());
    }
}
