//! Audit exports from a gateway of the test's own (a copy of the demo's files, the demo's
//! upstreams): syslog over TLS and plain TCP to local receivers that parse the RFC 5424 frames,
//! the webhook to a local HTTP server that checks the HMAC signature, and the webhook's
//! receiver down: statements keep flowing, an export_gap record is written, metrics move, and
//! delivery resumes when the receiver comes back.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::tls::{copy_demo, plain_client, start_gateway};
use support::{harness, AdminAs};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpListener;

const WEBHOOK_KEY: &str = "test-webhook-key-0123456789";

type Received = Arc<Mutex<Vec<String>>>;

/// Reads octet-counted syslog frames (`LEN SP MSG`) from one connection.
async fn read_frames<R: tokio::io::AsyncRead + Unpin>(stream: R, into: Received) {
    let mut r = BufReader::new(stream);
    loop {
        let mut len = Vec::new();
        if r.read_until(b' ', &mut len).await.unwrap_or(0) == 0 {
            return;
        }
        let Ok(n) = String::from_utf8_lossy(&len).trim().parse::<usize>() else {
            return;
        };
        let mut msg = vec![0u8; n];
        if r.read_exact(&mut msg).await.is_err() {
            return;
        }
        into.lock().unwrap().push(String::from_utf8(msg).unwrap());
    }
}

/// A syslog receiver on 127.0.0.1 (TLS with the demo's certificate when `tls`).
async fn syslog_receiver(tls: Option<Arc<rustls::ServerConfig>>) -> (u16, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let got: Received = Default::default();
    let into = got.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let into = into.clone();
            match &tls {
                Some(cfg) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(cfg.clone());
                    tokio::spawn(async move {
                        if let Ok(s) = acceptor.accept(tcp).await {
                            read_frames(s, into).await;
                        }
                    });
                }
                None => {
                    tokio::spawn(read_frames(tcp, into));
                }
            }
        }
    });
    (port, got)
}

/// A webhook receiver on `listener`: keeps the records of every batch whose signature checks.
fn webhook_receiver(listener: TcpListener) -> (Received, Arc<Mutex<u32>>) {
    use axum::http::{HeaderMap, StatusCode};
    let got: Received = Default::default();
    let bad: Arc<Mutex<u32>> = Default::default();
    let (into, bad2) = (got.clone(), bad.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let (into, bad) = (into.clone(), bad2.clone());
            async move {
                let h = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string()
                };
                let ts: u64 = h("x-tollgate-timestamp").parse().unwrap_or(0);
                let expected =
                    tollgate::audit::export::webhook::sign(WEBHOOK_KEY.as_bytes(), ts, &body);
                if h("x-tollgate-signature") != expected || h("content-type") != "application/json"
                {
                    *bad.lock().unwrap() += 1;
                    return StatusCode::UNAUTHORIZED;
                }
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(v["source"], "tollgate");
                for r in v["records"].as_array().unwrap() {
                    into.lock().unwrap().push(r.to_string());
                }
                StatusCode::NO_CONTENT
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (got, bad)
}

/// A copy of the demo with `audit` appended to its config and the webhook key in its vault.
fn gateway_dir(audit: &str) -> tempfile::TempDir {
    let dir = copy_demo(|c| format!("{c}\n{audit}\n"));
    let key = tollgate::vault::MasterKey::load(Some(&dir.path().join("master.key"))).unwrap();
    let mut vault = tollgate::vault::Vault::open(&dir.path().join("vault.json"), key).unwrap();
    vault.set("webhook_key", WEBHOOK_KEY).unwrap();
    dir
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn log_lines(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("audit.log"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn syslog_over_tls_gets_every_record_and_the_webhook_the_refusals() {
    harness().runtime.block_on(async {
        let demo_tls = tollgate::tls::ServerTls::load(
            &harness().env.dir.join("tls/server.crt"),
            &harness().env.dir.join("tls/server.key"),
        )
        .unwrap();
        let (syslog_port, syslog) = syslog_receiver(Some(demo_tls.redis.clone())).await;
        let hook = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hook_port = hook.local_addr().unwrap().port();
        let (hooked, bad) = webhook_receiver(hook);
        let dir = gateway_dir(&format!(
            r#"[audit.syslog]
address = "127.0.0.1:{syslog_port}"
tls = "verify-full"
ca_file = "tls/ca.crt"
hostname = "gw-test"

[audit.webhook]
url = "http://127.0.0.1:{hook_port}/hook"
secret = "vault:webhook_key"
decisions = ["blocked"]
batch_wait_ms = 50
max_per_minute = 600
"#
        ));
        let gw = start_gateway(dir.path()).await;
        let client = plain_client(&gw, "analyst").await;
        client
            .simple_query("SELECT count(*) FROM orders")
            .await
            .unwrap();
        assert!(client.simple_query("SELECT * FROM secrets").await.is_err());
        client.simple_query("SELECT 1").await.unwrap();
        drop(client);
        gw.gateway.core.audit.flush().unwrap();
        let lines = log_lines(dir.path());
        assert!(lines.len() >= 5, "{lines:?}");
        // Every record reaches syslog, as written (hash included), after an RFC 5424 header.
        wait_for("syslog messages", || {
            syslog.lock().unwrap().len() >= lines.len()
        })
        .await;
        let got = syslog.lock().unwrap().clone();
        for line in &lines {
            let msg = got
                .iter()
                .find(|m| m.ends_with(line.as_str()))
                .unwrap_or_else(|| panic!("not sent to syslog: {line}"));
            let rec: serde_json::Value = serde_json::from_str(line).unwrap();
            // local0 (16): warning for refusals, notice for shadow refusals, errors and the
            // gateway's start and stop, else info.
            let pri = match (rec["decision"].as_str(), rec["kind"].as_str()) {
                (Some("blocked"), _) => "<132>1 ",
                (Some("would_block") | Some("error"), _) => "<133>1 ",
                (_, Some("start") | Some("stop")) => "<133>1 ",
                _ => "<134>1 ",
            };
            let head = format!(
                "{pri}{} gw-test tollgate {} {} [tollgate@32473 seq=\"{}\"",
                rec["ts"].as_str().unwrap(),
                std::process::id(),
                rec["kind"].as_str().unwrap(),
                rec["seq"]
            );
            assert!(
                msg.starts_with(&head),
                "{msg}\nexpected to start with {head}"
            );
        }
        // The webhook gets the refusal only, signed.
        wait_for("the webhook", || !hooked.lock().unwrap().is_empty()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let hooked = hooked.lock().unwrap().clone();
        assert_eq!(hooked.len(), 1, "{hooked:?}");
        let rec: serde_json::Value = serde_json::from_str(&hooked[0]).unwrap();
        assert_eq!(
            (rec["decision"].as_str(), rec["statement"].as_str()),
            (Some("blocked"), Some("SELECT * FROM secrets"))
        );
        assert!(
            lines
                .iter()
                .any(|l| serde_json::from_str::<serde_json::Value>(l).unwrap() == rec),
            "the webhook record is the log's record (hash included): {}",
            hooked[0]
        );
        assert_eq!(*bad.lock().unwrap(), 0);
        // A drained stop: the stop record, written last, reaches syslog before drain returns.
        gw.drain(Duration::from_secs(2)).await;
        let stop = log_lines(dir.path()).pop().unwrap();
        assert!(stop.contains(r#""kind":"stop""#), "{stop}");
        wait_for("the stop record at syslog", || {
            syslog.lock().unwrap().iter().any(|m| m.ends_with(&stop))
        })
        .await;
    });
}

#[test]
fn a_receiver_down_costs_the_export_not_the_statements() {
    harness().runtime.block_on(async {
        let (syslog_port, syslog) = syslog_receiver(None).await;
        // A port with nothing listening (yet).
        let hook_port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let dir = gateway_dir(&format!(
            r#"[audit.syslog]
address = "127.0.0.1:{syslog_port}"
tls = "disable"

[audit.webhook]
url = "http://127.0.0.1:{hook_port}/hook"
secret = "vault:webhook_key"
decisions = ["allowed", "blocked"]
batch_max = 5
batch_wait_ms = 10
max_per_minute = 6000
queue = 3
"#
        ));
        let gw = start_gateway(dir.path()).await;
        let client = plain_client(&gw, "analyst").await;
        for i in 0..60 {
            // Statements keep flowing while the export cannot deliver.
            client.simple_query(&format!("SELECT {i}")).await.unwrap();
        }
        wait_for("an export_gap record", || {
            let _ = gw.gateway.core.audit.flush();
            log_lines(dir.path())
                .iter()
                .any(|l| l.contains(r#""kind":"export_gap","exporter":"webhook""#))
        })
        .await;
        let admin = format!("http://{}", gw.admin_addr.unwrap());
        let (status, metrics) =
            support::admin_request(&admin, "get", "/metrics", AdminAs::Viewer).await;
        assert_eq!(status, 200);
        let metrics = metrics.as_str().unwrap().to_string();
        let value = |name: &str| support::metric(&metrics, name).unwrap_or(0.0);
        assert!(
            value("tollgate_audit_export_dropped_total{exporter=\"webhook\"}") > 0.0,
            "{metrics}"
        );
        assert!(
            value("tollgate_audit_export_errors_total{exporter=\"webhook\"}") > 0.0,
            "{metrics}"
        );
        // The syslog receiver, up all along, has every record (the gap record included).
        gw.gateway.core.audit.flush().unwrap();
        let lines = log_lines(dir.path());
        wait_for("syslog to catch up", || {
            syslog.lock().unwrap().len() >= lines.len()
        })
        .await;
        // The receiver comes back: delivery resumes, the gap record reaches it.
        let listener = TcpListener::bind(("127.0.0.1", hook_port)).await.unwrap();
        let (hooked, _) = webhook_receiver(listener);
        client.simple_query("SELECT 'after'").await.unwrap();
        wait_for("the gap record at the webhook", || {
            hooked
                .lock()
                .unwrap()
                .iter()
                .any(|r| r.contains(r#""kind":"export_gap""#))
        })
        .await;
        let report = tollgate::audit::verify(
            &tollgate::audit::files::list_dir(dir.path()).unwrap(),
            &Default::default(),
        )
        .unwrap();
        assert_eq!(report.problem, None);
        assert!(
            report
                .notes
                .iter()
                .any(|n| n.contains("exporter webhook dropped")),
            "{:?}",
            report.notes
        );
        gw.shutdown();
    });
}

/// A second signal also cuts short the wait for the exporters at a stop (it waited up to 5 s
/// for a receiver that never answers: left open by the review that added the wait).
#[test]
fn a_second_signal_does_not_wait_for_the_exporters() {
    harness().runtime.block_on(async {
        // A webhook receiver that takes the connection and never answers.
        let hook = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hook_port = hook.local_addr().unwrap().port();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let held = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = hook.accept().await {
                held.lock().unwrap().push(tcp);
            }
        });
        let dir = gateway_dir(&format!(
            r#"[audit.webhook]
url = "http://127.0.0.1:{hook_port}/hook"
secret = "vault:webhook_key"
decisions = ["blocked"]
batch_wait_ms = 10
"#
        ));
        let gw = start_gateway(dir.path()).await;
        let client = plain_client(&gw, "analyst").await;
        assert!(client.simple_query("SELECT * FROM secrets").await.is_err());
        drop(client);
        wait_for("the webhook's connection", || {
            !accepted.lock().unwrap().is_empty()
        })
        .await;
        let started = Instant::now();
        let forced = gw
            .drain_or_hurry(
                Duration::from_secs(2),
                tokio::time::sleep(Duration::from_millis(300)),
            )
            .await;
        assert_eq!(forced, 0);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "waited {:?} for the exporters after a second signal",
            started.elapsed()
        );
        // The local log has the stop record all the same.
        let last = log_lines(dir.path()).pop().unwrap();
        assert!(last.contains(r#""kind":"stop""#), "{last}");
    });
}
