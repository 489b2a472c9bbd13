//! Tests of the log as a whole: chaining, resuming, group commit, rotation and verification.

use std::path::Path;

use super::*;

fn event(stmt: &str) -> AuditEvent {
    AuditEvent {
        agent: "analyst".into(),
        protocol: Protocol::Postgres,
        upstream: Some("shop".into()),
        session: 7,
        client_addr: Some("127.0.0.1:5555".into()),
        statement: Some(stmt.into()),
        decision: Decision::Allowed,
        ..AuditEvent::default()
    }
}

fn verify_dir(dir: &Path) -> VerifyReport {
    verify(&files::list_dir(dir).unwrap(), &VerifyOptions::default()).unwrap()
}

fn verify_path(path: &Path) -> VerifyReport {
    verify(
        &[files::LogFile::new(path.to_path_buf(), None)],
        &VerifyOptions::default(),
    )
    .unwrap()
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn appends_chain_and_resume_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path).unwrap();
    assert_eq!(log.append(&event("SELECT 1")).unwrap(), 1);
    assert_eq!(log.append(&event("SELECT 2")).unwrap(), 2);
    drop(log);
    let log = AuditLog::open(&path).unwrap();
    assert_eq!(log.append(&event("SELECT 3")).unwrap(), 3);
    let report = verify_path(&path);
    assert_eq!(report.records, 3);
    assert!(report.problem.is_none(), "{report:?}");
    let first = &lines(&path)[0];
    assert_eq!(first["prev_hash"], GENESIS_HASH);
    assert_eq!(first["decision"], "allowed");
    assert_eq!(first["statement"], "SELECT 1");
    assert_eq!(log.head().unwrap().0, 3);
    assert_eq!(report.head.unwrap().1, log.head().unwrap().1);
}

#[test]
fn verify_finds_an_edited_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path).unwrap();
    for i in 0..5 {
        log.append(&event(&format!("SELECT {i}"))).unwrap();
    }
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("SELECT 2", "SELECT 9");
    std::fs::write(&path, text).unwrap();
    let p = verify_path(&path).problem.unwrap();
    assert_eq!(p.line, 3);
    assert_eq!(p.message, "hash mismatch: the record was altered (seq 3)");
}

#[test]
fn verify_finds_a_deleted_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path).unwrap();
    for i in 0..4 {
        log.append(&event(&format!("SELECT {i}"))).unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, l)| l)
        .collect();
    std::fs::write(&path, kept.join("\n") + "\n").unwrap();
    let p = verify_path(&path).problem.unwrap();
    assert_eq!(p.line, 2);
    assert_eq!(
        p.message,
        "expected seq 2, found 3 (records 2..2 are missing)"
    );
}

/// A file ending with an incomplete line (the machine stopped during a write: the log does not
/// fsync) is cut back to its last complete record at start, and a `tail_cut` record says what
/// was cut; the chain goes on and verifies. (tollgate refused to start, and moving the file
/// aside started a chain that no longer linked to the old one: a live review.) A last
/// complete line that is not a valid record is still refused.
#[test]
fn a_torn_tail_is_cut_back_recorded_and_the_chain_goes_on() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path).unwrap();
    log.append(&event("SELECT 1")).unwrap();
    log.append(&event("SELECT 2")).unwrap();
    drop(log);
    let torn =
        b"{\"seq\":3,\"ts\":\"2026-12-07T10:00:00.000000Z\",\"kind\":\"decision\",\"agent\":\"wri";
    let append = |bytes: &[u8]| {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(bytes).unwrap();
    };
    append(torn);
    let log = AuditLog::open(&path).unwrap();
    log.append(&event("SELECT 3")).unwrap();
    drop(log);
    let recs = lines(&path);
    assert_eq!(recs.len(), 4, "{recs:?}");
    assert_eq!(recs[2]["kind"], "tail_cut");
    assert_eq!(recs[2]["seq"], 3);
    assert_eq!(recs[2]["cut_seq"], 3);
    assert_eq!(recs[2]["cut_bytes"], torn.len());
    assert!(recs[2]["cut_line"].as_str().unwrap().ends_with("\"wri"));
    assert_eq!(recs[3]["statement"], "SELECT 3");
    let report = verify_path(&path);
    assert!(report.problem.is_none(), "{:?}", report.problem);
    assert!(
        report.notes.iter().any(|n| n.contains("incomplete line")),
        "{:?}",
        report.notes
    );

    // A last record that only lacks its newline is kept, the newline added.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    AuditLog::open(&path)
        .unwrap()
        .append(&event("SELECT 4"))
        .unwrap();
    let recs = lines(&path);
    assert_eq!(recs.len(), 5, "{recs:?}");
    assert_eq!(recs[3]["statement"], "SELECT 3");
    assert_eq!(recs[4]["statement"], "SELECT 4");
    assert!(verify_path(&path).problem.is_none());

    // A file holding nothing but a torn line starts the chain afresh.
    let only = dir.path().join("only.log");
    std::fs::write(&only, &torn[..20]).unwrap();
    AuditLog::open(&only).unwrap().append(&event("x")).unwrap();
    let recs = lines(&only);
    assert_eq!(recs[0]["kind"], "tail_cut");
    assert_eq!(recs[0]["seq"], 1);
    assert!(verify_path(&only).problem.is_none());

    // A complete last line that is not a record is not cut: refused, for an operator to see.
    append(b"{\"seq\":5,\"not\":\"a record\"}\n");
    assert!(matches!(
        AuditLog::open(&path),
        Err(AuditError::BrokenTail { .. })
    ));
}

#[test]
fn deferred_records_ride_with_the_next_durable_one_in_chain_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path).unwrap();
    assert_eq!(log.append(&event("SELECT 1")).unwrap(), 1);
    assert_eq!(log.append_deferred(&event("outcome 1")).unwrap(), 2);
    assert_eq!(lines(&path).len(), 1, "deferred: not yet written");
    assert_eq!(log.append(&event("SELECT 2")).unwrap(), 3);
    assert_eq!(lines(&path).len(), 3);
    log.append_deferred(&event("outcome 2")).unwrap();
    log.flush().unwrap();
    assert_eq!(
        log.write_stats(),
        WriteStats {
            writes: 3,
            records: 4,
            lost: 0,
        }
    );
    drop(log);
    let report = verify_path(&path);
    assert_eq!((report.records, report.problem), (4, None));
}

#[test]
fn write_failure_is_an_error_not_a_silent_drop() {
    // /dev/full accepts the open and fails every write with ENOSPC: a full disk.
    let log = match AuditLog::open(Path::new("/dev/full")) {
        Ok(l) => l,
        Err(e) => panic!("/dev/full should open: {e}"),
    };
    let err = log.append(&event("SELECT 1")).unwrap_err();
    assert!(matches!(err, AuditError::WriteFailed { .. }), "{err}");
    assert!(err.to_string().contains("No space left on device"), "{err}");
    // The next record fails too (the disk is still full), and so does flush.
    assert!(log.append(&event("SELECT 2")).is_err());
    assert!(log.flush().is_err());
}

#[test]
fn records_lost_to_writes_failing_in_a_row_are_counted_once_each() {
    // Every write fails (a full disk): each retry carries the stand-in record of the numbers
    // lost before, which must not count them again (an operations review read 268 in
    // `tollgate_audit_records_lost_total` for 14 records lost).
    let log = AuditLog::open(Path::new("/dev/full")).unwrap();
    for i in 1..=5u64 {
        assert!(log.append(&event(&format!("SELECT {i}"))).is_err());
        assert_eq!(log.write_stats().lost, i, "after {i} failed writes");
    }
    // A batch of several records, behind the stand-in: each new one counted once.
    for i in 0..3 {
        log.append_deferred(&event(&format!("outcome {i}")))
            .unwrap();
    }
    assert!(log.flush().is_err());
    let stats = log.write_stats();
    assert_eq!((stats.lost, stats.records), (8, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_are_coalesced_and_all_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path).unwrap();
    let mut tasks = Vec::new();
    for t in 0..16 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..200 {
                let seq = log
                    .append_deferred(&event(&format!("task {t} stmt {i}")))
                    .unwrap();
                log.commit(seq).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = log.write_stats();
    assert_eq!(stats.records, 3200);
    assert!(stats.writes <= stats.records);
    let report = verify_path(&path);
    assert_eq!((report.records, report.problem), (3200, None));
    // Every task's statements are there, each once.
    let all = lines(&path);
    for t in 0..16 {
        let n = all
            .iter()
            .filter(|r| {
                r["statement"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("task {t} "))
            })
            .count();
        assert_eq!(n, 200);
    }
}

#[test]
fn rotates_every_n_records_and_the_chain_spans_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let opts = LogOptions {
        max_records: Some(4),
        max_bytes: None,
    };
    let log = AuditLog::open_with(&path, opts).unwrap();
    for i in 0..10 {
        log.append(&event(&format!("SELECT {i}"))).unwrap();
    }
    drop(log);
    let names: Vec<String> = files::list_dir(dir.path())
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    // 4 records per file, the link record of each new file included.
    assert_eq!(
        names,
        [
            "audit.log.000000000001",
            "audit.log.000000000005",
            "audit.log.000000000009",
            "audit.log"
        ]
    );
    let second = lines(&dir.path().join("audit.log.000000000005"));
    assert_eq!(second[0]["kind"], "rotation");
    assert_eq!(second[0]["prev_file"], "audit.log.000000000001");
    let first = lines(&dir.path().join("audit.log.000000000001"));
    assert_eq!(second[0]["prev_hash"], first[3]["hash"]);
    let report = verify_dir(dir.path());
    assert_eq!(report.problem, None);
    assert_eq!((report.files, report.records), (4, 13));
    // Reopening continues in the active file.
    let log = AuditLog::open_with(&path, opts).unwrap();
    assert_eq!(log.append(&event("after")).unwrap(), 14);
    drop(log);
    assert_eq!(verify_dir(dir.path()).problem, None);
}

#[test]
fn rotation_on_demand_reports_the_closed_file_and_skips_an_empty_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path).unwrap();
    assert_eq!(log.rotate().unwrap(), None, "nothing to close yet");
    log.append(&event("SELECT 1")).unwrap();
    log.append_deferred(&event("outcome 1")).unwrap();
    let r = log.rotate().unwrap().unwrap();
    assert_eq!(r.closed, dir.path().join("audit.log.000000000001"));
    assert_eq!((r.first_seq, r.last_seq, r.link_seq), (1, 2, 3));
    assert_eq!(lines(&path).len(), 1, "the new file holds its link record");
    assert_eq!(verify_dir(dir.path()).problem, None);
}

#[test]
fn a_missing_active_file_is_started_again_with_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path).unwrap();
    log.append(&event("SELECT 1")).unwrap();
    log.rotate().unwrap().unwrap();
    log.append(&event("SELECT 2")).unwrap();
    drop(log);
    // A crash between closing a file and starting the next: only closed files remain.
    std::fs::rename(&path, dir.path().join("audit.log.000000000002")).unwrap();
    let log = AuditLog::open(&path).unwrap();
    assert_eq!(log.append(&event("SELECT 3")).unwrap(), 5);
    drop(log);
    let active = lines(&path);
    assert_eq!(active[0]["kind"], "rotation");
    assert_eq!(active[0]["prev_file"], "audit.log.000000000002");
    assert_eq!(verify_dir(dir.path()).problem, None);
}

#[test]
fn a_rotation_that_cannot_close_the_file_is_recorded_and_the_file_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path).unwrap();
    log.append(&event("SELECT 1")).unwrap();
    // Something already holds the name the file would be closed under.
    std::fs::write(dir.path().join("audit.log.000000000001"), "not ours").unwrap();
    let err = log.rotate().unwrap_err();
    assert!(matches!(err, AuditError::RotationFailed { .. }), "{err}");
    log.append(&event("SELECT 2")).unwrap();
    let active = lines(&path);
    assert_eq!(active.len(), 3);
    assert_eq!(active[1]["kind"], "rotation_failed");
    assert_eq!(active[1]["error"], "audit.log.000000000001 already exists");
    std::fs::remove_file(dir.path().join("audit.log.000000000001")).unwrap();
    let report = verify_path(&path);
    assert_eq!(report.problem, None);
    assert!(
        report.notes[0].contains("a rotation failed"),
        "{:?}",
        report.notes
    );
}

#[test]
fn rotation_by_age_rotates_only_an_old_enough_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&dir.path().join("audit.log")).unwrap();
    log.append(&event("SELECT 1")).unwrap();
    let hour = std::time::Duration::from_secs(3600);
    assert_eq!(log.rotate_if_older(hour).unwrap(), None);
    let r = log
        .rotate_if_older(std::time::Duration::ZERO)
        .unwrap()
        .unwrap();
    assert_eq!(r.first_seq, 1);
    // The new file's age counts from its own first record.
    assert_eq!(log.rotate_if_older(hour).unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_dropped_while_gathering_does_not_stall_the_others() {
    use futures_util::FutureExt;
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&dir.path().join("audit.log")).unwrap();
    let seq = log.append_deferred(&event("SELECT 1")).unwrap();
    // Polled once: it claims the lead and yields; dropped there (a cancelled statement).
    assert!(log.commit(seq).now_or_never().is_none());
    let seq2 = log.append_deferred(&event("SELECT 2")).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), log.commit(seq2))
        .await
        .expect("the claim was released")
        .unwrap();
    // The dropped commit's record was written with the next one.
    log.commit(seq).await.unwrap();
    assert_eq!(
        log.write_stats(),
        WriteStats {
            writes: 1,
            records: 2,
            lost: 0,
        }
    );
}

#[tokio::test]
async fn waiting_for_a_record_never_appended_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&dir.path().join("audit.log")).unwrap();
    let seq = log.append(&event("SELECT 1")).unwrap();
    let err = log.commit(seq + 5).await.unwrap_err();
    assert!(err.to_string().contains("never appended"), "{err}");
    log.commit(seq).await.unwrap();
}

#[tokio::test]
async fn admin_records_are_chained_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path).unwrap();
    log.append(&event("SELECT 1")).unwrap();
    let action = |ref_seq, outcome: &str| {
        SystemRecord::Admin(AdminAction {
            ref_seq,
            admin: "ops".into(),
            client_addr: Some("127.0.0.1:40000".into()),
            action: "audit_rotate".into(),
            target: None,
            outcome: outcome.into(),
            error: None,
        })
    };
    let started = log.append_system(action(None, "started")).await.unwrap();
    assert_eq!(started, 2);
    log.rotate().unwrap().expect("a file to close");
    let done = log
        .append_system(action(Some(started), "ok"))
        .await
        .unwrap();
    assert_eq!(done, 4, "after the rotation link");
    let report = verify_dir(dir.path());
    assert!(report.problem.is_none(), "{report:?}");
    assert_eq!(report.records, 4);
    let active = lines(&path);
    assert_eq!(active[1]["kind"], "admin");
    assert_eq!(active[1]["ref_seq"], 2);
    assert_eq!(
        (&active[1]["admin"], &active[1]["outcome"]),
        (&"ops".into(), &"ok".into())
    );
}

/// The active file removed or moved while open: records went on into the unlinked file, and
/// after a restart a new chain began with nothing to say so (a live review). Now a new file is
/// opened under the name, starting with a `file_replaced` record that continues the chain; the
/// folder no longer verifies as complete (its records before are missing), which is the point.
#[test]
fn an_active_file_removed_while_open_is_replaced_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path).unwrap();
    log.append(&event("SELECT 1")).unwrap();
    assert_eq!(log.check_file().unwrap(), None, "nothing happened yet");
    log.append(&event("SELECT 2")).unwrap();
    let aside = tempfile::tempdir().unwrap();
    let moved = aside.path().join("elsewhere.log");
    std::fs::rename(&path, &moved).unwrap();
    log.append(&event("SELECT 3")).unwrap();
    assert_eq!(log.check_file().unwrap(), Some(3));
    log.append(&event("SELECT 4")).unwrap();
    let recs = lines(&path);
    assert_eq!(recs[0]["kind"], "file_replaced", "{recs:?}");
    assert_eq!(recs[0]["seq"], 4);
    assert_eq!(recs[0]["written_upto"], 3);
    assert_eq!(recs[1]["statement"], "SELECT 4");
    // The chain goes on from the moved file's last record.
    let old = lines(&moved);
    assert_eq!(recs[0]["prev_hash"], old[2]["hash"]);
    assert!(verify_dir(dir.path()).problem.is_some());
    // Removed outright: the same.
    std::fs::remove_file(&path).unwrap();
    assert_eq!(log.check_file().unwrap(), Some(5));
    assert_eq!(lines(&path)[0]["kind"], "file_replaced");
}

/// One writer per log: a second gateway on the same config chained its records onto the
/// first's and the two forked the chain (a live review). Its open fails, naming the lock; the
/// lock goes with the first writer.
#[test]
fn a_second_writer_of_one_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let first = AuditLog::open(&path).unwrap();
    first.append(&event("SELECT 1")).unwrap();
    let Err(e) = AuditLog::open(&path) else {
        panic!("a second writer of one log was let in");
    };
    assert!(matches!(e, AuditError::InUse { .. }), "{e}");
    assert!(
        e.to_string().contains("another tollgate is writing it"),
        "{e}"
    );
    drop(first);
    AuditLog::open(&path)
        .unwrap()
        .append(&event("SELECT 2"))
        .unwrap();
    // The lock file is not one of the log's files.
    assert!(verify_dir(dir.path()).problem.is_none());
}
