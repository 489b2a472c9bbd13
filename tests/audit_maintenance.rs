//! A gateway of the test's own (a copy of the demo's files) rotating its audit log every
//! second, compressing closed files and keeping two of them: the background work the gateway
//! starts, end to end. What retention removed is recorded in the chain, so the log still
//! verifies from its oldest kept file; a file removed by anyone else does not.

mod support;

use std::time::{Duration, Instant};

use support::harness;
use support::tls::{copy_demo, plain_client, start_gateway};
use tollgate::audit::files::list_dir;
use tollgate::audit::{verify, VerifyOptions};

#[test]
fn time_rotation_compression_and_retention_keep_a_verifiable_chain() {
    harness().runtime.block_on(async {
        // The demo's own rotation (by size) gives way to this one.
        let dir = copy_demo(|c| {
            let (before, after) = c.split_once("\n[audit.rotate]").unwrap();
            let rest = after.find("\n[").map_or("", |i| &after[i..]);
            format!(
                "{before}{rest}\n[audit.rotate]\ninterval = \"1s\"\ncompress = true\nretain = 2\n"
            )
        });
        let gw = start_gateway(dir.path()).await;
        let client = plain_client(&gw, "analyst").await;
        let start = Instant::now();
        let mut sent = 0;
        while start.elapsed() < Duration::from_millis(5500) {
            client
                .simple_query(&format!("SELECT {sent}"))
                .await
                .unwrap();
            sent += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        gw.gateway.core.audit.flush().unwrap();
        // Compression and retention run in the background after each rotation.
        let deadline = Instant::now() + Duration::from_secs(10);
        let files = loop {
            let files = list_dir(dir.path()).unwrap();
            let closed: Vec<_> = files.iter().filter(|f| f.named_seq.is_some()).collect();
            if closed.len() == 2 && closed.iter().all(|f| f.compressed) {
                break files;
            }
            assert!(Instant::now() < deadline, "{files:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let opts = VerifyOptions {
            active_name: Some("audit.log".into()),
            ..VerifyOptions::default()
        };
        let report = verify(&files, &opts).unwrap();
        assert_eq!(report.problem, None, "{report:?}");
        assert!(
            report
                .notes
                .iter()
                .any(|n| n.contains("which retention removed (recorded in the chain)")),
            "{:?}",
            report.notes
        );
        assert!(
            report.retained.len() >= 2,
            "at least 4 rotations in 5.5 s: {:?}",
            report.retained
        );
        // The statements of the kept files are all there, in order, once.
        let mut last = None;
        for f in &files {
            for line in String::from_utf8(f.read_all().unwrap()).unwrap().lines() {
                let rec: serde_json::Value = serde_json::from_str(line).unwrap();
                if rec["kind"] != "decision" {
                    continue;
                }
                if let Some(n) = rec["statement"]
                    .as_str()
                    .and_then(|s| s.strip_prefix("SELECT "))
                {
                    let n: u64 = n.parse().unwrap();
                    if let Some(l) = last {
                        assert_eq!(n, l + 1, "statements in order, each once");
                    }
                    last = Some(n);
                }
            }
        }
        assert_eq!(last, Some(sent - 1));
        // A kept file removed by someone else is not excused by retention.
        std::fs::remove_file(&files[0].path).unwrap();
        let report = verify(&list_dir(dir.path()).unwrap(), &opts).unwrap();
        let p = report.problem.expect("a removed file is a problem");
        assert!(
            p.message
                .contains("which is missing and was not removed by retention"),
            "{p}"
        );
        gw.shutdown();
    });
}
