//! Webhook export for alerts: chosen records POSTed as JSON batches, rate-limited, each signed
//! with HMAC-SHA256 so the receiver can check it came from this gateway.
//!
//! Body: `{"source":"tollgate","records":[<record>, ...]}` with each record exactly as in the log.
//! Headers: `X-Tollgate-Timestamp: <unix seconds>` and
//! `X-Tollgate-Signature: sha256=<hex HMAC-SHA256(key, "<timestamp>.<body>")>`.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tracing::warn;

use super::{record_gap, Sink};
use crate::audit::group::Shared;
use crate::config::WebhookConfig;
use crate::tls::{NetStream, UpstreamTls, UpstreamTlsMode};

pub const SIGNATURE_HEADER: &str = "x-tollgate-signature";
pub const TIMESTAMP_HEADER: &str = "x-tollgate-timestamp";

/// `sha256=<hex>` over `"<timestamp>.<body>"`.
pub fn sign(key: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The batch body for record lines (each a JSON object, without '\n').
pub fn body<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = b"{\"source\":\"tollgate\",\"records\":[".to_vec();
    for (i, line) in lines.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(line);
    }
    out.extend_from_slice(b"]}");
    out
}

/// Where the batches go.
pub struct Target {
    host: String,
    port: u16,
    /// `host[:port]` as the Host header says it.
    authority: String,
    path: String,
    tls: Option<UpstreamTls>,
}

impl Target {
    pub fn new(config: &WebhookConfig) -> Result<Target, String> {
        let uri: axum::http::Uri = config
            .url
            .parse()
            .map_err(|e| format!("audit.webhook.url: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err("audit.webhook.url must start with http:// or https://".into()),
        };
        let authority = uri
            .authority()
            .ok_or("audit.webhook.url has no host")?
            .clone();
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            UpstreamTls::build(
                UpstreamTlsMode::VerifyFull,
                &host,
                config.ca_file.as_deref(),
                Some(b"http/1.1"),
            )
            .map_err(|e| format!("audit.webhook: {e}"))?
        } else {
            None
        };
        Ok(Target {
            host,
            port,
            authority: authority.as_str().to_string(),
            path: uri
                .path_and_query()
                .map_or("/".to_string(), |p| p.as_str().to_string()),
            tls,
        })
    }

    /// POSTs one signed batch; `Ok` with the status when the receiver answered 2xx.
    pub async fn post(&self, key: &[u8], body: Vec<u8>) -> Result<u16, String> {
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let stream = match &self.tls {
                None => NetStream::Plain(tcp),
                Some(tls) => NetStream::from(
                    tls.connector()
                        .connect(tls.server_name.clone(), tcp)
                        .await
                        .map_err(|e| format!("TLS: {e}"))?,
                ),
            };
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(|e| format!("HTTP: {e}"))?;
            let driver = tokio::spawn(conn);
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let request = axum::http::Request::post(&self.path)
                .header(axum::http::header::HOST, &self.authority)
                .header(axum::http::header::CONTENT_TYPE, "application/json")
                .header(
                    axum::http::header::USER_AGENT,
                    concat!("tollgate/", env!("CARGO_PKG_VERSION")),
                )
                .header(TIMESTAMP_HEADER, ts.to_string())
                .header(SIGNATURE_HEADER, sign(key, ts, &body))
                .body(http_body_util::Full::new(Bytes::from(body)))
                .map_err(|e| format!("request: {e}"))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("HTTP: {e}"));
            driver.abort();
            let status = response?.status();
            if status.is_success() {
                Ok(status.as_u16())
            } else {
                Err(format!("the receiver answered {status}"))
            }
        };
        tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .unwrap_or_else(|_| Err("timed out".into()))
    }
}

/// How batches are made and paced.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    pub batch_max: usize,
    pub batch_wait: Duration,
    /// At least this long between two POSTs (retries included).
    pub min_gap: Duration,
}

impl Pacing {
    pub fn new(config: &WebhookConfig) -> Pacing {
        Pacing {
            batch_max: config.batch_max,
            batch_wait: Duration::from_millis(config.batch_wait_ms),
            min_gap: Duration::from_secs(60) / config.max_per_minute.max(1),
        }
    }
}

/// Sends batches until `shutdown`; a failed batch is retried (paced) until it goes through,
/// while new records wait in the queue (and are dropped, with a gap record, when it is full).
pub async fn run(
    sink: Arc<Sink>,
    target: Target,
    key: Vec<u8>,
    pacing: Pacing,
    log: Weak<Shared>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut batch: Vec<Bytes> = Vec::new();
    let mut last_post: Option<Instant> = None;
    let mut failures = 0u32;
    // Once the gateway stops: post what is queued (its `stop` record last, if selected), then
    // end; a receiver that fails then is not retried.
    let mut stopping = *shutdown.borrow();
    loop {
        if !stopping {
            // (Not once stopping: the `stop` record is the run's last in the log.)
            record_gap(&log, &sink);
        }
        if batch.is_empty() && stopping {
            while batch.len() < pacing.batch_max {
                match sink.pop() {
                    Some(i) => batch.extend(i.lines().map(Bytes::copy_from_slice)),
                    None => break,
                }
            }
            if batch.is_empty() {
                return;
            }
        } else if batch.is_empty() {
            // Wait for a first record, then up to `batch_wait` for more.
            tokio::select! {
                i = sink.next(Duration::from_secs(1)) => match i {
                    Some(i) => batch.extend(i.lines().map(Bytes::copy_from_slice)),
                    None => continue,
                },
                _ = shutdown.changed() => {
                    stopping = true;
                    continue;
                }
            }
            let until = tokio::time::Instant::now() + pacing.batch_wait;
            while batch.len() < pacing.batch_max {
                match sink
                    .next(until.saturating_duration_since(tokio::time::Instant::now()))
                    .await
                {
                    Some(i) => batch.extend(i.lines().map(Bytes::copy_from_slice)),
                    None => break,
                }
            }
        }
        let now = Instant::now();
        if let Some(wait) = last_post.map(|t| (t + pacing.min_gap).saturating_duration_since(now)) {
            if stopping {
                // The receiver's rate still holds; the gateway's wait for exporters is bounded.
                tokio::time::sleep(wait).await;
            } else {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => stopping = true,
                }
            }
        }
        let take = batch.len().min(pacing.batch_max);
        let body = body(batch[..take].iter().map(|b| &b[..]));
        last_post = Some(Instant::now());
        match target.post(&key, body).await {
            Ok(_) => {
                sink.sent.increment(take as u64);
                batch.drain(..take);
                failures = 0;
            }
            Err(e) => {
                sink.errors.increment(1);
                if stopping {
                    warn!(
                        host = %target.host,
                        error = %e,
                        unsent = batch.len() + sink.queued(),
                        "audit webhook stopped with records not sent (the audit log has them)"
                    );
                    return;
                }
                failures += 1;
                warn!(host = %target.host, error = %e, "audit webhook delivery failed; retrying");
                // Back off beyond the rate limit while the receiver stays down.
                let extra = Duration::from_millis(200) * 2u32.pow(failures.min(7));
                tokio::select! {
                    _ = tokio::time::sleep(extra.min(Duration::from_secs(5))) => {}
                    _ = shutdown.changed() => stopping = true,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_of_timestamp_and_body() {
        // RFC 4231 style check against an independent computation.
        let body = br#"{"source":"tollgate","records":[]}"#;
        let sig = sign(b"key", 1_700_000_000, body);
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key").unwrap();
        mac.update(b"1700000000.");
        mac.update(body);
        assert_eq!(
            sig,
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        );
        assert_ne!(sig, sign(b"key", 1_700_000_001, body));
    }

    #[test]
    fn body_wraps_records_as_they_are() {
        let lines: [&[u8]; 2] = [br#"{"seq":1}"#, br#"{"seq":2}"#];
        let b = body(lines.into_iter());
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["records"][1]["seq"], 2);
        assert_eq!(v["source"], "tollgate");
    }

    #[test]
    fn urls() {
        let cfg = |url: &str| WebhookConfig {
            url: url.into(),
            secret: "vault:k".into(),
            decisions: vec![],
            rules: vec![],
            batch_max: 1,
            batch_wait_ms: 1,
            max_per_minute: 60,
            queue: 1,
            ca_file: None,
        };
        let t = Target::new(&cfg("http://127.0.0.1:8080/hooks/tollgate?x=1")).unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 8080, "/hooks/tollgate?x=1")
        );
        assert_eq!(t.authority, "127.0.0.1:8080");
        let t = Target::new(&cfg("http://alerts.internal")).unwrap();
        assert_eq!((t.port, t.path.as_str()), (80, "/"));
        assert!(Target::new(&cfg("ftp://x")).is_err());
    }
}
