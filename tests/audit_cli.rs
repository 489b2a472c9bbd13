//! `tollgate audit verify | tail | head` as a binary, on logs written and rotated by the real
//! writer: every way of breaking a rotated chain is reported with its exact message.

use std::path::{Path, PathBuf};
use std::process::Command;

use tollgate::audit::{AuditEvent, AuditLog, Decision, LogOptions, Protocol};

fn tollgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = tollgate().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn event(i: usize) -> AuditEvent {
    AuditEvent {
        agent: if i.is_multiple_of(2) {
            "analyst"
        } else {
            "writer"
        }
        .into(),
        protocol: Protocol::Postgres,
        upstream: Some("shop".into()),
        session: 1,
        client_addr: Some("127.0.0.1:5000".into()),
        statement: Some(format!("SELECT {i}")),
        decision: if i.is_multiple_of(3) {
            Decision::Blocked
        } else {
            Decision::Allowed
        },
        rule: i
            .is_multiple_of(3)
            .then(|| "policies/analyst.toml: default deny".to_string()),
        ..AuditEvent::default()
    }
}

/// 18 statements, a file every 5 records (links included): audit.log.000000000001 (seq 1-5),
/// …006 (6-10), …011 (11-15), …016 (16-20) and audit.log (21-22). Seq 6, 11, 16 and 21 are
/// the links.
fn rotated_log() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open_with(
        &dir.path().join("audit.log"),
        LogOptions {
            max_records: Some(5),
            max_bytes: None,
        },
    )
    .unwrap();
    for i in 1..=18 {
        log.append(&event(i)).unwrap();
    }
    dir
}

fn verify_dir(dir: &Path) -> (i32, String) {
    let (code, out, err) = run(&["audit", "verify", dir.to_str().unwrap()]);
    (code, format!("{out}{err}"))
}

fn file(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("audit.log.{seq:012}"))
}

#[test]
fn an_intact_rotated_log_verifies() {
    let dir = rotated_log();
    let (code, out) = verify_dir(dir.path());
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ok: 5 file(s), 22 record(s) (seq 1..22), hash chain intact"),
        "{out}"
    );
    assert!(out.contains("head: seq 22 hash "), "{out}");
    // Quick mode, and files named one by one in any order.
    let (code, out, _) = run(&[
        "audit",
        "verify",
        "--quick",
        "--last",
        "2",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("quick: joins and the last 2 record(s) checked"),
        "{out}"
    );
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    names.sort();
    names.reverse();
    let mut args = vec!["audit", "verify"];
    args.extend(names.iter().map(String::as_str));
    let (code, out, _) = run(&args);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_deleted_middle_file_is_named() {
    let dir = rotated_log();
    std::fs::remove_file(file(dir.path(), 6)).unwrap();
    let (code, out) = verify_dir(dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(
        "BROKEN: audit.log.000000000011 line 1: continues from \"audit.log.000000000006\", which is missing: records 6..10 are not here (the file before this one is audit.log.000000000001, ending at seq 5)"
    ), "{out}");
    // Quick mode sees the joins too.
    let (code, out, _) = run(&["audit", "verify", "--quick", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("audit.log.000000000011 line 1: continues from"),
        "{out}"
    );
}

#[test]
fn a_deleted_first_or_active_file_is_named() {
    let dir = rotated_log();
    std::fs::remove_file(file(dir.path(), 1)).unwrap();
    let (code, out) = verify_dir(dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(
        "BROKEN: audit.log.000000000006 line 1: continues from \"audit.log.000000000001\", which is missing and was not removed by retention: the beginning of the log was deleted"
    ), "{out}");
    // Named one by one, files may start mid-chain: the caller chose where to start.
    let later: Vec<String> = [6u64, 11, 16]
        .iter()
        .map(|s| file(dir.path(), *s).display().to_string())
        .chain([dir.path().join("audit.log").display().to_string()])
        .collect();
    let mut args = vec!["audit", "verify"];
    args.extend(later.iter().map(String::as_str));
    let (code, out, _) = run(&args);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("note: the chain starts in audit.log.000000000006, continuing from \"audit.log.000000000001\", which was not given"), "{out}");
    let (code, out, _) = run(&[&args[..], &["--from-genesis"]].concat());
    assert_eq!(code, 1, "{out}");
    let dir = rotated_log();
    std::fs::remove_file(dir.path().join("audit.log")).unwrap();
    let (code, out) = verify_dir(dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(
        "BROKEN: audit.log: the active file is missing: the chain ends in audit.log.000000000016 at seq 20; records written after it may have been removed"
    ), "{out}");
}

#[test]
fn a_truncated_file_is_named() {
    // Cut inside the last line.
    let dir = rotated_log();
    let path = file(dir.path(), 11);
    let text = std::fs::read(&path).unwrap();
    std::fs::write(&path, &text[..text.len() - 10]).unwrap();
    let (code, out) = verify_dir(dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(
        "BROKEN: audit.log.000000000011 line 5: the last line is incomplete: the file was truncated"
    ), "{out}");
    // Cut at a record boundary: the next file's link shows the missing end.
    let dir = rotated_log();
    let path = file(dir.path(), 11);
    let text = std::fs::read_to_string(&path).unwrap();
    let kept: Vec<&str> = text.lines().take(3).collect();
    std::fs::write(&path, kept.join("\n") + "\n").unwrap();
    let (code, out) = verify_dir(dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(
        "BROKEN: audit.log.000000000016 line 1: records 14..15 are missing: audit.log.000000000011 ends at seq 13, but this file continues it from seq 15 (the end of audit.log.000000000011 was cut off)"
    ), "{out}");
}

#[test]
fn an_edited_record_is_named_even_when_its_own_hash_is_redone() {
    let dir = rotated_log();
    let path = file(dir.path(), 11);
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replacen("SELECT 11", "SELECT 99", 1);
    assert_ne!(edited, text);
    std::fs::write(&path, &edited).unwrap();
    let (code, out) = verify_dir(dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "BROKEN: audit.log.000000000011 line 3: hash mismatch: the record was altered (seq 13)"
        ),
        "{out}"
    );
    // An editor who recomputes that line's hash breaks the next link instead.
    let mut lines: Vec<String> = edited.lines().map(str::to_string).collect();
    lines[2] = rehash(&lines[2]);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let (code, out) = verify_dir(dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(
        "BROKEN: audit.log.000000000011 line 4: seq 14: prev_hash does not match the previous record (a record is missing or reordered)"
    ), "{out}");
}

/// The line with its `hash` recomputed over the edited text.
fn rehash(line: &str) -> String {
    use sha2::{Digest, Sha256};
    let at = line.rfind(",\"hash\":\"").unwrap();
    let body = format!("{}}}", &line[..at]);
    format!(
        "{},\"hash\":\"{}\"}}",
        &line[..at],
        hex::encode(Sha256::digest(body.as_bytes()))
    )
}

#[test]
fn swapped_files_are_named() {
    let dir = rotated_log();
    let (a, b) = (file(dir.path(), 6), file(dir.path(), 11));
    let tmp = dir.path().join("swap.tmp");
    std::fs::rename(&a, &tmp).unwrap();
    std::fs::rename(&b, &a).unwrap();
    std::fs::rename(&tmp, &b).unwrap();
    let (code, out) = verify_dir(dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(
        "BROKEN: audit.log.000000000006 line 1: the file name says it starts at seq 6 but its first record is seq 11: files are out of order (renamed or swapped)"
    ), "{out}");
}

#[test]
fn removing_or_editing_any_single_file_fails() {
    let names: Vec<String> = {
        let dir = rotated_log();
        let mut n: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            // The writer's lock (`.audit.log.lock`) is not one of the log's files.
            .filter(|n| !n.starts_with('.'))
            .collect();
        n.sort();
        n
    };
    assert_eq!(names.len(), 5);
    for name in &names {
        let dir = rotated_log();
        std::fs::remove_file(dir.path().join(name)).unwrap();
        let (code, out) = verify_dir(dir.path());
        assert_eq!(code, 1, "removed {name}: {out}");
        assert!(out.contains("BROKEN: "), "{out}");

        let dir = rotated_log();
        let path = dir.path().join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        // One character of the last record's text changes.
        let at = text.trim_end().rfind("\"ts\":\"2").unwrap() + 7;
        let mut bytes = text.into_bytes();
        bytes[at] = if bytes[at] == b'1' { b'2' } else { b'1' };
        std::fs::write(&path, bytes).unwrap();
        let (code, out) = verify_dir(dir.path());
        assert_eq!(code, 1, "edited {name}: {out}");
        assert!(
            out.contains("hash mismatch: the record was altered"),
            "{out}"
        );
    }
}

#[test]
fn compressed_closed_files_verify_and_are_read() {
    use std::io::Write;
    let dir = rotated_log();
    for seq in [1u64, 6] {
        let plain = file(dir.path(), seq);
        let gz = std::fs::File::create(format!("{}.gz", plain.display())).unwrap();
        let mut enc = flate2::write::GzEncoder::new(gz, flate2::Compression::default());
        enc.write_all(&std::fs::read(&plain).unwrap()).unwrap();
        enc.finish().unwrap();
        std::fs::remove_file(&plain).unwrap();
    }
    let (code, out) = verify_dir(dir.path());
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = run(&["audit", "verify", "--quick", dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    // Two bytes of a compressed file overwritten: a broken chain (exit 1, the file named), not
    // input that could not be checked (exit 2, which a cron job would not take for tampering).
    {
        let damaged = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let p = entry.unwrap().path();
            std::fs::copy(&p, damaged.path().join(p.file_name().unwrap())).unwrap();
        }
        let gz = damaged.path().join(format!(
            "{}.gz",
            file(damaged.path(), 1)
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
        ));
        let mut bytes = std::fs::read(&gz).unwrap();
        let mid = 12; // inside the deflate data, right after the gzip header
        bytes[mid] ^= 0xff;
        bytes[mid + 1] ^= 0xff;
        std::fs::write(&gz, bytes).unwrap();
        let (code, out) = verify_dir(damaged.path());
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("BROKEN: ") && out.contains(".gz"), "{out}");
    }
    // tail reads across plain and compressed files.
    let (code, out, err) = run(&[
        "audit",
        "tail",
        dir.path().join("audit.log").to_str().unwrap(),
        "--agent",
        "analyst",
        "--decision",
        "blocked",
        "-n",
        "3",
    ]);
    assert_eq!(code, 0, "{err}");
    let shown: Vec<&str> = out.lines().collect();
    assert_eq!(shown.len(), 3, "{out}");
    // Statements 6, 12 and 18 (analyst and blocked), oldest first.
    for (line, stmt) in shown.iter().zip(["SELECT 6", "SELECT 12", "SELECT 18"]) {
        assert!(
            line.contains(" analyst ")
                && line.contains(stmt)
                && line.contains("[rule: policies/analyst.toml: default deny]"),
            "{line}"
        );
    }
}

#[test]
fn unusable_input_exits_2() {
    let (code, _, err) = run(&["audit", "verify", "/nonexistent/audit.log"]);
    assert_eq!(code, 2, "{err}");
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(&["audit", "verify", dir.path().to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("no audit log files here"), "{err}");
    // A gateway that has written nothing yet leaves an empty active file: said as such.
    std::fs::write(dir.path().join("audit.log"), "").unwrap();
    let (code, _, err) = run(&["audit", "verify", dir.path().to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no audit records yet (audit.log empty)"),
        "{err}"
    );
}

#[test]
fn tail_since_head_and_follow_across_a_rotation() {
    let dir = rotated_log();
    let active = dir.path().join("audit.log");
    let (code, out, err) = run(&[
        "audit",
        "tail",
        active.to_str().unwrap(),
        "--since",
        "2000-01-01T00:00:00Z",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().count(),
        22,
        "every record since then, links included"
    );
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(v["seq"], 1);
    let (code, out, _) = run(&["audit", "head", active.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("seq 22 hash ") && out.trim_end().ends_with("file audit.log"),
        "{out}"
    );
    let (code, _, err) = run(&[
        "audit",
        "tail",
        active.to_str().unwrap(),
        "--decision",
        "maybe",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown decision"), "{err}");

    // --follow prints new records, also after the file it follows is rotated away.
    let mut child = tollgate()
        .args([
            "audit",
            "tail",
            "--follow",
            "-n",
            "1",
            "--json",
            active.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let next = || {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("a line from tail --follow");
        serde_json::from_str::<serde_json::Value>(&line).unwrap()
    };
    assert_eq!(next()["seq"], 22);
    let log = AuditLog::open(&active).unwrap();
    log.append(&event(100)).unwrap();
    assert_eq!(next()["statement"], "SELECT 100");
    log.rotate().unwrap().unwrap();
    log.append(&event(101)).unwrap();
    assert_eq!(next()["kind"], "rotation");
    assert_eq!(next()["statement"], "SELECT 101");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// An agent's statement that would return the cursor, erase the line and print a forged record
/// reaches the operator's terminal escaped, in both of tail's modes.
#[test]
fn tail_never_prints_what_would_steer_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let active = dir.path().join("audit.log");
    let log = AuditLog::open(&active).unwrap();
    let forged = "2026-12-05T22:13:00.000000Z #999 trusted    postgres/shop allowed     select 1";
    let mut ev = event(1);
    ev.statement = Some(format!(
        "delete from orders where id = 11 --\r\x1b[2K{forged}"
    ));
    log.append(&ev).unwrap();
    ev.statement = Some(format!(
        "delete from orders where id = 12 --\u{9b}2K\u{85}{forged}"
    ));
    ev.agent = "ana\u{2028}lyst".into();
    log.append(&ev).unwrap();
    drop(log);
    let steers = |c: char| c != '\n' && tollgate::audit::terminal::steers(c);
    // The raw file too (operators `tail -f` it): the text is escaped in the JSON itself, its
    // chain verifies, and a JSON reader gets the statement back as the agent sent it.
    let raw = std::fs::read_to_string(&active).unwrap();
    assert!(!raw.chars().any(steers), "{raw:?}");
    assert!(raw.contains(r"--\u009b2K\u0085"), "{raw}");
    assert!(raw.contains(r#""agent":"ana\u2028lyst""#), "{raw}");
    let second: serde_json::Value = serde_json::from_str(raw.lines().nth(1).unwrap()).unwrap();
    assert_eq!(second["statement"], ev.statement.clone().unwrap());
    let (code, out, err) = run(&["audit", "verify", active.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    for json in [false, true] {
        let mut args = vec!["audit", "tail", active.to_str().unwrap()];
        if json {
            args.push("--json");
        }
        let (code, out, err) = run(&args);
        assert_eq!(code, 0, "{err}");
        assert!(!out.chars().any(steers), "json {json}: {out:?}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(!lines.iter().any(|l| l.starts_with(forged)), "{out}");
        if json {
            // The same records, with their text intact once parsed.
            let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
            assert_eq!(v["statement"], ev.statement.clone().unwrap());
            assert_eq!(v["agent"], "ana\u{2028}lyst");
        } else {
            assert!(
                lines[0].ends_with(&format!("id = 11 --\\r\\u{{1b}}[2K{forged}")),
                "{}",
                lines[0]
            );
            assert!(
                lines[1].contains(&format!("id = 12 --\\u{{9b}}2K\\u{{85}}{forged}")),
                "{}",
                lines[1]
            );
        }
    }
}
