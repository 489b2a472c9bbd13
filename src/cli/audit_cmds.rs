//! `tollgate audit verify | tail | head`: check the chain across rotated files, read records as
//! people do, print the chain head for anchoring elsewhere.

use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::audit::files::{self, LogFile, Naming};
use crate::audit::read::{self, Judgement, RecordFilter};
use crate::audit::{verify, VerifyOptions};

/// Exit codes of `verify`, for cron jobs: intact, broken, could not check.
pub const EXIT_OK: i32 = 0;
pub const EXIT_BROKEN: i32 = 1;
pub const EXIT_UNCHECKED: i32 = 2;

/// The log's files for a path: a folder (the one log in it), the active file (with the closed
/// files beside it), or, without a path, `[audit] file` of the config.
fn log_files(path: Option<&Path>, config: &Path) -> Result<Vec<LogFile>, String> {
    let active = match path {
        Some(p) if p.is_dir() => return files::list_dir(p),
        Some(p) => p.to_path_buf(),
        None => {
            crate::config::Config::load(config)
                .map_err(|e| e.to_string())?
                .audit
                .file
        }
    };
    let naming = Naming::for_active(&active);
    let list = files::list(&naming).map_err(|e| format!("{}: {e}", naming.dir.display()))?;
    if list.is_empty() {
        return Err(format!("{}: no such audit log", active.display()));
    }
    Ok(list)
}

pub struct VerifyArgs {
    pub paths: Vec<PathBuf>,
    pub quick: bool,
    pub last: u64,
    pub from_genesis: bool,
}

/// `tollgate audit verify DIR | FILE...`: 0 intact, 1 broken (the first problem is printed),
/// 2 nothing could be checked.
pub fn verify_cmd(args: VerifyArgs) -> i32 {
    // A folder holds the whole log: its active file must be there too.
    let mut active_name = None;
    let files = match args.paths.as_slice() {
        [one] if one.is_dir() => match files::list_dir(one) {
            Ok(f) => {
                active_name = files::active_name_of(&f);
                f
            }
            Err(e) => {
                eprintln!("tollgate: {e}");
                return EXIT_UNCHECKED;
            }
        },
        paths => {
            if let Some(dir) = paths.iter().find(|p| p.is_dir()) {
                eprintln!(
                    "tollgate: {}: a folder must be the only path given",
                    dir.display()
                );
                return EXIT_UNCHECKED;
            }
            files::order_given(paths)
        }
    };
    let opts = VerifyOptions {
        quick: args.quick.then_some(args.last),
        from_genesis: args.from_genesis,
        active_name,
    };
    let report = match verify(&files, &opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tollgate: {e}");
            return EXIT_UNCHECKED;
        }
    };
    for note in &report.notes {
        say!("note: {note}");
    }
    if let Some(p) = &report.problem {
        say!("BROKEN: {p}");
        say!(
            "checked {} record(s) in {} file(s) before the problem",
            report.records,
            report.files
        );
        return EXIT_BROKEN;
    }
    let range = match (report.first_seq, &report.head) {
        (Some(a), Some((b, _))) => format!(" (seq {a}..{b})"),
        _ => String::new(),
    };
    let mode = if args.quick {
        format!(
            ", quick: joins and the last {} record(s) checked",
            args.last
        )
    } else {
        String::new()
    };
    say!(
        "ok: {} file(s), {} record(s){range}, hash chain intact{mode}",
        report.files,
        report.records
    );
    if let Some((seq, hash)) = &report.head {
        say!("head: seq {seq} hash {hash}");
    }
    EXIT_OK
}

/// `tollgate audit head`: the last record's number and hash (to anchor the chain elsewhere).
pub fn head_cmd(path: Option<&Path>, config: &Path) -> Result<i32, String> {
    let files = log_files(path, config)?;
    for f in files.iter().rev() {
        let last = crate::audit::read::tail_lines_of(f).map_err(|e| format!("{}: {e}", f.name))?;
        if let Some(line) = last {
            let rec =
                crate::audit::verify::parse_line(&line).map_err(|e| format!("{}: {e}", f.name))?;
            say!(
                "seq {} hash {} file {}",
                rec.seq,
                String::from_utf8_lossy(&rec.hash),
                f.name
            );
            return Ok(0);
        }
    }
    Err("the log holds no records".into())
}

pub struct TailArgs {
    pub path: Option<PathBuf>,
    pub config: PathBuf,
    pub lines: usize,
    pub follow: bool,
    pub filter: RecordFilter,
    pub json: bool,
}

/// `tollgate audit tail`: the last records (or all since a time), then new ones as they come.
pub fn tail_cmd(args: TailArgs) -> Result<i32, String> {
    let files = log_files(args.path.as_deref(), &args.config)?;
    let out = std::io::stdout();
    let mut out = out.lock();
    let mut last_seq = 0u64;
    let print = |rec: &serde_json::Value, line: &[u8], out: &mut dyn Write| -> Result<(), String> {
        let text = if args.json {
            let line = String::from_utf8_lossy(line);
            crate::audit::terminal::json_escaped(&line).into_owned()
        } else {
            human(rec)
        };
        writeln!(out, "{text}").unwrap_or_else(|e| super::stdout_failed(e));
        Ok(())
    };
    if args.filter.since.is_some() {
        for line in forward_since(&files, &args.filter)? {
            let line = line.map_err(|e| e.to_string())?;
            let Ok(rec) = serde_json::from_slice::<serde_json::Value>(&line) else {
                continue;
            };
            last_seq = last_seq.max(rec["seq"].as_u64().unwrap_or(0));
            let ts_ok = rec["ts"]
                .as_str()
                .and_then(read::parse_time)
                .zip(args.filter.since)
                .is_some_and(|(t, s)| t >= s);
            if ts_ok && args.filter.judge(&rec) == Judgement::Keep {
                print(&rec, &line, &mut out)?;
            }
        }
    } else {
        let mut picked = Vec::new();
        for line in read::newest_first(&files) {
            let line = line.map_err(|e| e.to_string())?;
            let Ok(rec) = serde_json::from_slice::<serde_json::Value>(&line) else {
                continue;
            };
            last_seq = last_seq.max(rec["seq"].as_u64().unwrap_or(0));
            if picked.len() == args.lines {
                break;
            }
            if args.filter.judge(&rec) == Judgement::Keep {
                picked.push((rec, line));
            }
        }
        for (rec, line) in picked.iter().rev() {
            print(rec, line, &mut out)?;
        }
    }
    out.flush().unwrap_or_else(|e| super::stdout_failed(e));
    if !args.follow {
        return Ok(0);
    }
    let active = files
        .last()
        .filter(|f| f.named_seq.is_none())
        .map(|f| f.path.clone())
        .ok_or("--follow needs the log's active file")?;
    follow(&active, last_seq, &mut |rec, line| {
        if args.filter.judge(rec) == Judgement::Keep {
            print(rec, line, &mut out)?;
            out.flush().unwrap_or_else(|e| super::stdout_failed(e));
        }
        Ok(())
    })
}

/// Lines from the file that holds `since` onwards (files before it are skipped by their first
/// record's time).
fn forward_since<'a>(
    files: &'a [LogFile],
    filter: &RecordFilter,
) -> Result<impl Iterator<Item = std::io::Result<Vec<u8>>> + 'a, String> {
    let since = filter.since.expect("called with since");
    let mut start = 0;
    for (i, f) in files.iter().enumerate() {
        let mut first = Vec::new();
        f.reader()
            .and_then(|mut r| r.read_until(b'\n', &mut first))
            .map_err(|e| format!("{}: {e}", f.name))?;
        let ts = crate::audit::read::line_time(&first);
        if ts.is_some_and(|t| t <= since) {
            start = i;
        }
    }
    Ok(files[start..]
        .iter()
        .flat_map(|f| -> Box<dyn Iterator<Item = _>> {
            match f.reader() {
                Ok(r) => Box::new(r.split(b'\n')),
                Err(e) => Box::new(std::iter::once(Err(e))),
            }
        }))
}

/// Called with each record (parsed, and as written).
type Emit<'a> = dyn FnMut(&serde_json::Value, &[u8]) -> Result<(), String> + 'a;

/// Prints records numbered above `after` as they are written to `active`, across rotations
/// (the closed file is read to its end, then the new active file from its start).
fn follow(active: &Path, mut after: u64, emit: &mut Emit<'_>) -> Result<i32, String> {
    let open = |p: &Path| std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()));
    let mut file = open(active)?;
    let mut partial = Vec::new();
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut chunk).map_err(|e| e.to_string())?;
        if n > 0 {
            partial.extend_from_slice(&chunk[..n]);
            let end = memchr::memrchr(b'\n', &partial).map_or(0, |i| i + 1);
            for line in partial[..end]
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
            {
                let seq = crate::audit::read::line_seq(line).unwrap_or(0);
                if seq <= after {
                    continue;
                }
                after = seq;
                if let Ok(rec) = serde_json::from_slice::<serde_json::Value>(line) {
                    emit(&rec, line)?;
                }
            }
            partial.drain(..end);
            continue;
        }
        // At the end: a rotation replaced the active file once everything of the old one was read.
        let now = std::fs::metadata(active).map(|m| m.ino()).ok();
        let ours = file.metadata().map(|m| m.ino()).ok();
        if now.is_some() && now != ours {
            file = open(active)?;
            file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
            partial.clear();
            continue;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// One record as a line for people. The text in it is the agent's (statement, names, errors):
/// whatever would steer the terminal is escaped, so no record can erase or forge another line.
fn human(rec: &serde_json::Value) -> String {
    crate::audit::terminal::escaped(&human_raw(rec)).into_owned()
}

fn human_raw(rec: &serde_json::Value) -> String {
    let s = |k: &str| rec[k].as_str().unwrap_or("");
    let seq = rec["seq"].as_u64().unwrap_or(0);
    let kind = s("kind");
    match kind {
        "decision" | "outcome" | "session" => {
            let mut line = format!(
                "{} #{seq} {:<10} {}/{} {:<11}",
                s("ts"),
                s("agent"),
                s("protocol"),
                rec["upstream"].as_str().unwrap_or("-"),
                s("decision")
            );
            let what = match kind {
                "outcome" => {
                    let mut o = format!("outcome of #{}", rec["ref_seq"].as_u64().unwrap_or(0));
                    if let Some(r) = rec["rows"].as_u64() {
                        o.push_str(&format!(", {r} rows"));
                    }
                    if let Some(d) = rec["duration_us"].as_u64() {
                        o.push_str(&format!(", {d} µs"));
                    }
                    if let Some(e) = rec["error"].as_str() {
                        o.push_str(&format!(", error: {e}"));
                    }
                    o
                }
                "session" => format!("session: {}", s("reason")),
                _ => s("statement").replace('\n', " "),
            };
            line.push(' ');
            line.push_str(&what);
            if let Some(rule) = rec["rule"].as_str() {
                line.push_str(&format!("  [rule: {rule}]"));
            }
            line
        }
        other => {
            let mut details = serde_json::Map::new();
            if let Some(obj) = rec.as_object() {
                for (k, v) in obj {
                    if !matches!(k.as_str(), "seq" | "ts" | "kind" | "prev_hash" | "hash") {
                        details.insert(k.clone(), v.clone());
                    }
                }
            }
            format!(
                "{} #{seq} -- {other} {}",
                s("ts"),
                serde_json::Value::Object(details)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_as_lines_for_people() {
        let rec = serde_json::json!({"seq": 12, "ts": "2026-12-05T10:00:00.000000Z", "kind": "decision",
            "agent": "analyst", "protocol": "postgres", "upstream": "shop", "decision": "blocked",
            "statement": "SELECT *\nFROM secrets", "rule": "policies/analyst.toml: default deny"});
        assert_eq!(
            human(&rec),
            "2026-12-05T10:00:00.000000Z #12 analyst    postgres/shop blocked     SELECT * FROM secrets  [rule: policies/analyst.toml: default deny]"
        );
        let lost = serde_json::json!({"seq": 9, "ts": "t", "kind": "lost", "lost_from": 5, "lost_to": 9,
            "error": "disk full", "prev_hash": "x", "hash": "y"});
        assert_eq!(
            human(&lost),
            r#"t #9 -- lost {"error":"disk full","lost_from":5,"lost_to":9}"#
        );
    }

    /// A statement that returns the cursor, erases the line and prints a record of its own
    /// must show as one line holding those characters, not as the forged record.
    #[test]
    fn agent_text_cannot_steer_the_terminal() {
        let forged = "delete from orders where id = 11 --\r\x1b[2K2026-12-05T22:13:00.000000Z  #999 trusted  postgres/shop allowed  select 1";
        let rec = serde_json::json!({"seq": 12, "ts": "2026-12-05T10:00:00.000000Z", "kind": "decision",
            "agent": "ana\u{9b}2Klyst", "protocol": "postgres", "upstream": "shop\x07", "decision": "allowed",
            "statement": forged, "rule": "r\u{2028}x"});
        let shown = human(&rec);
        assert_eq!(
            shown,
            r"2026-12-05T10:00:00.000000Z #12 ana\u{9b}2Klyst postgres/shop\u{7} allowed     delete from orders where id = 11 --\r\u{1b}[2K2026-12-05T22:13:00.000000Z  #999 trusted  postgres/shop allowed  select 1  [rule: r\u{2028}x]"
        );
        let session = serde_json::json!({"seq": 3, "ts": "t", "kind": "session", "agent": "a",
            "protocol": "redis", "decision": "blocked", "reason": "bad login \u{1b}]0;title\x07"});
        assert_eq!(
            human(&session),
            r"t #3 a          redis/- blocked     session: bad login \u{1b}]0;title\u{7}"
        );
        let outcome = serde_json::json!({"seq": 4, "ts": "t", "kind": "outcome", "ref_seq": 3,
            "agent": "a", "protocol": "postgres", "upstream": "shop", "decision": "error",
            "error": "boom\r\x1b[1A\u{85}"});
        assert_eq!(
            human(&outcome),
            r"t #4 a          postgres/shop error       outcome of #3, error: boom\r\u{1b}[1A\u{85}"
        );
        // Records of other kinds are shown as JSON: C0 is escaped by JSON, DEL and C1 here.
        let admin =
            serde_json::json!({"seq": 5, "ts": "t", "kind": "admin", "error": "x\u{9b}\x7f\x1b"});
        assert_eq!(
            human(&admin),
            r#"t #5 -- admin {"error":"x\u{9b}\u{7f}\u001b"}"#
        );
        for s in [shown, human(&session), human(&outcome), human(&admin)] {
            assert!(!s.chars().any(crate::audit::terminal::steers), "{s:?}");
        }
    }
}
