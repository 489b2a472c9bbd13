//! Syslog export: every record as one RFC 5424 message, octet-counted over TCP (RFC 6587) or
//! TLS (RFC 5425). The message body is the record's JSON line as written, hash included, so a
//! SIEM's copy can be checked against the chain.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};

use super::{record_gap, Item, Sink};
use crate::audit::chain::line_kind;
use crate::audit::group::Shared;
use crate::audit::json::{member_str, member_u64};
use crate::config::{split_host_port, SyslogConfig, FACILITIES};
use crate::tls::{NetStream, UpstreamTls, UpstreamTlsMode};

/// The structured-data ID of tollgate's parameters (32473 is the enterprise number RFC 5612
/// reserves for documentation; a deployment that has its own can filter on `tollgate@`).
const SD_ID: &str = "tollgate@32473";

/// What every message of this gateway shares.
#[derive(Debug, Clone)]
pub struct Header {
    pub facility: u8,
    pub hostname: String,
    pub procid: u32,
}

impl Header {
    pub fn new(config: &SyslogConfig) -> Header {
        let facility = FACILITIES
            .iter()
            .position(|f| *f == config.facility)
            .unwrap_or(16) as u8;
        let hostname = config.hostname.clone().unwrap_or_else(local_hostname);
        Header {
            facility,
            hostname: printable(&hostname, 255),
            procid: std::process::id(),
        }
    }
}

fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "-".into())
}

/// RFC 5424 header fields are printable US-ASCII without spaces, of bounded length.
fn printable(s: &str, max: usize) -> String {
    let v: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if v.is_empty() {
        "-".into()
    } else {
        v
    }
}

/// Severity by what the record says: refusals are warnings, shadow refusals and the gateway's
/// start and stop notices, the log's own alarms errors, everything else informational.
fn severity(line: &[u8]) -> u8 {
    match line_kind(line) {
        Some(b"lost")
        | Some(b"rotation_failed")
        | Some(b"export_gap")
        | Some(b"tail_cut")
        | Some(b"file_replaced") => 3,
        // A gateway's start or stop: rare, and what an operator reads the rest by.
        Some(b"start") | Some(b"stop") => 5,
        _ => match member_str(line, "decision").as_deref() {
            Some("blocked") => 4,
            Some("would_block") | Some("error") => 5,
            _ => 6,
        },
    }
}

/// `"`, `\` and `]` are escaped in SD parameter values (RFC 5424 6.3.3).
fn sd_value(out: &mut Vec<u8>, v: &str) {
    for c in v.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push(b'\\');
        }
        let mut b = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
    }
}

/// One record line (without '\n') as an octet-counted RFC 5424 message.
pub fn frame(header: &Header, line: &[u8], out: &mut Vec<u8>) {
    let mut msg = Vec::with_capacity(line.len() + 200);
    let pri = u32::from(header.facility) * 8 + u32::from(severity(line));
    let ts = member_str(line, "ts").unwrap_or_else(|| "-".into());
    let kind = line_kind(line)
        .map(|k| printable(&String::from_utf8_lossy(k), 32))
        .unwrap_or_else(|| "-".into());
    msg.extend_from_slice(
        format!(
            "<{pri}>1 {ts} {} tollgate {} {kind} [{SD_ID}",
            header.hostname, header.procid
        )
        .as_bytes(),
    );
    if let Some(seq) = crate::audit::chain::line_seq(line) {
        msg.extend_from_slice(format!(" seq=\"{seq}\"").as_bytes());
    }
    for name in ["agent", "decision", "rule"] {
        if let Some(v) = member_str(line, name) {
            msg.extend_from_slice(format!(" {name}=\"").as_bytes());
            sd_value(&mut msg, &v);
            msg.push(b'"');
        }
    }
    if let Some(r) = member_u64(line, "ref_seq") {
        msg.extend_from_slice(format!(" ref_seq=\"{r}\"").as_bytes());
    }
    msg.extend_from_slice(b"] ");
    msg.extend_from_slice(line);
    out.extend_from_slice(format!("{} ", msg.len()).as_bytes());
    out.extend_from_slice(&msg);
}

/// Where and how to connect.
pub struct Target {
    pub host: String,
    pub port: u16,
    pub tls: Option<UpstreamTls>,
}

impl Target {
    pub fn new(config: &SyslogConfig) -> Result<Target, String> {
        let (host, port) = split_host_port(&config.address)?;
        let mode = config
            .tls
            .unwrap_or_else(|| UpstreamTlsMode::default_for(&host));
        let tls = UpstreamTls::build(mode, &host, config.ca_file.as_deref(), None)
            .map_err(|e| format!("audit.syslog: {e}"))?;
        Ok(Target { host, port, tls })
    }

    async fn connect(&self) -> std::io::Result<NetStream> {
        let tcp = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(NetStream::Plain(tcp)),
            Some(tls) => {
                let s = tls
                    .connector()
                    .connect(tls.server_name.clone(), tcp)
                    .await?;
                Ok(NetStream::from(s))
            }
        }
    }
}

/// A receiver never sends anything: if the connection is readable, it was closed.
async fn closed(stream: &mut NetStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::ZERO, stream.read(&mut byte)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// Sends the queue's items until `shutdown`, then what is still queued; reconnects with
/// backoff, resending the item that failed (a receiver may see a record twice, never a hole
/// without a gap record).
pub async fn run(
    sink: Arc<Sink>,
    target: Target,
    header: Header,
    log: Weak<Shared>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut conn: Option<NetStream> = None;
    let mut pending: Option<Item> = None;
    let mut backoff = Duration::from_millis(200);
    let mut buf = Vec::new();
    // Once the gateway stops: send what is queued (its `stop` record last), then end; a
    // receiver that cannot be reached then is not waited for.
    let mut stopping = *shutdown.borrow();
    loop {
        if !stopping {
            // (Not once stopping: the `stop` record is the run's last in the log.)
            record_gap(&log, &sink);
        }
        let item = match pending.take() {
            Some(i) => i,
            None if stopping => match sink.pop() {
                Some(i) => i,
                None => return,
            },
            None => {
                tokio::select! {
                    i = sink.next(Duration::from_secs(1)) => match i { Some(i) => i, None => continue },
                    _ = shutdown.changed() => {
                        stopping = true;
                        continue;
                    }
                }
            }
        };
        if conn.is_none() {
            match target.connect().await {
                Ok(c) => {
                    info!(host = %target.host, port = target.port, "syslog export connected");
                    conn = Some(c);
                    backoff = Duration::from_millis(200);
                }
                Err(e) => {
                    sink.errors.increment(1);
                    if stopping {
                        given_up(&sink, &target, item.records);
                        return;
                    }
                    warn!(host = %target.host, port = target.port, error = %e, "syslog export cannot connect; retrying");
                    pending = Some(item);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => stopping = true,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            }
        }
        let stream = conn.as_mut().expect("connected above");
        buf.clear();
        for line in item.lines() {
            frame(&header, line, &mut buf);
        }
        let sent = !closed(stream).await
            && stream.write_all(&buf).await.is_ok()
            && stream.flush().await.is_ok();
        if sent {
            sink.sent.increment(item.records as u64);
        } else {
            sink.errors.increment(1);
            if stopping {
                given_up(&sink, &target, item.records);
                return;
            }
            warn!(host = %target.host, "syslog export connection lost; reconnecting");
            conn = None;
            pending = Some(item);
        }
    }
}

/// The gateway is stopping and the receiver cannot take the rest: said once, in the log.
fn given_up(sink: &Sink, target: &Target, held: usize) {
    warn!(
        host = %target.host,
        unsent = held + sink.queued(),
        "syslog export stopped with records not sent: the receiver is unreachable (the audit log has them)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::export::Select;

    fn header() -> Header {
        Header {
            facility: 16,
            hostname: "gw1".into(),
            procid: 42,
        }
    }

    /// The gateway's `stop` record is queued just before the shutdown signal: it must still
    /// be sent (the exporter returned at the signal, with the record in its queue: a review).
    #[tokio::test]
    async fn what_is_queued_at_shutdown_is_sent_before_the_exporter_ends() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut all = Vec::new();
            s.read_to_end(&mut all).await.unwrap();
            all
        });
        let sink = Sink::new("syslog", Select::Everything, 100);
        sink.offer(
            b"{\"seq\":1,\"kind\":\"session\"}\n{\"seq\":2,\"kind\":\"stop\"}\n",
            1,
            2,
        );
        let (tx, rx) = tokio::sync::watch::channel(true);
        let target = Target {
            host: "127.0.0.1".into(),
            port,
            tls: None,
        };
        tokio::time::timeout(
            Duration::from_secs(5),
            run(sink.clone(), target, header(), Weak::new(), rx),
        )
        .await
        .expect("the exporter ends once its queue is sent");
        drop(tx);
        let got = tokio::time::timeout(Duration::from_secs(5), received)
            .await
            .expect("the exporter connected and sent")
            .unwrap();
        let got = String::from_utf8(got).unwrap();
        assert!(got.contains(r#"{"seq":2,"kind":"stop"}"#), "{got:?}");
        assert_eq!(sink.queued(), 0);
    }

    /// Stopping with an unreachable receiver ends at once: no retry loop holds the exit.
    #[tokio::test]
    async fn an_unreachable_receiver_at_shutdown_is_not_waited_for() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let sink = Sink::new("syslog", Select::Everything, 100);
        sink.offer(b"{\"seq\":1,\"kind\":\"stop\"}\n", 1, 1);
        let (_tx, rx) = tokio::sync::watch::channel(true);
        let target = Target {
            host: "127.0.0.1".into(),
            port,
            tls: None,
        };
        tokio::time::timeout(
            Duration::from_secs(2),
            run(sink, target, header(), Weak::new(), rx),
        )
        .await
        .expect("gave up at once");
    }

    #[test]
    fn a_record_becomes_an_octet_counted_rfc5424_message() {
        let header = header();
        let line = br#"{"seq":7,"ts":"2026-12-05T10:11:12.123456Z","kind":"decision","agent":"ana]lyst","protocol":"postgres","decision":"blocked","rule":"r \"x\"","prev_hash":"0","hash":"1"}"#;
        let mut out = Vec::new();
        frame(&header, line, &mut out);
        let text = String::from_utf8(out).unwrap();
        let (len, msg) = text.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), msg.len());
        let expected_head = format!(
            "<132>1 2026-12-05T10:11:12.123456Z gw1 tollgate 42 decision [{SD_ID} seq=\"7\" agent=\"ana\\]lyst\" decision=\"blocked\" rule=\"r \\\"x\\\"\"] {{"
        );
        assert!(msg.starts_with(&expected_head), "{msg}");
        assert!(msg.ends_with(std::str::from_utf8(line).unwrap()));
        assert_eq!(severity(b"{\"seq\":1,\"ts\":\"t\",\"kind\":\"lost\"}"), 3);
    }
}
