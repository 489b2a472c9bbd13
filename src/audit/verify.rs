//! `tollgate audit verify`: recompute every record's hash, check every link of the chain —
//! including the joins between rotated files — and report the first problem precisely.
//!
//! Full mode reads every record. Quick mode checks each file's first and last records (so every
//! join between files) and the last N records of the newest file.

use std::io::BufRead;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::chain::{
    hex_lower, HexHash, GENESIS, KIND_EXPORT_GAP, KIND_LOST, KIND_RETENTION, KIND_ROTATION_FAILED,
};
use super::files::LogFile;

/// The chain members of one line, after its own hash was checked.
#[derive(Debug, Clone)]
pub struct ChainFields {
    pub seq: u64,
    pub prev_hash: HexHash,
    pub hash: HexHash,
    pub kind: Option<String>,
    pub prev_file: Option<String>,
    pub lost_from: Option<u64>,
    pub lost_to: Option<u64>,
    pub error: Option<String>,
    pub exporter: Option<String>,
    pub dropped: Option<u64>,
    pub removed_file: Option<String>,
}

#[derive(Deserialize)]
struct Members {
    seq: Option<u64>,
    prev_hash: Option<String>,
    kind: Option<String>,
    prev_file: Option<String>,
    lost_from: Option<u64>,
    lost_to: Option<u64>,
    error: Option<String>,
    exporter: Option<String>,
    dropped: Option<u64>,
    removed_file: Option<String>,
}

fn hex64(s: &str) -> Option<HexHash> {
    let b = s.as_bytes();
    (b.len() == 64
        && b.iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)))
    .then(|| b.try_into().expect("64 bytes"))
}

/// Checks one line's own hash and extracts its chain members.
pub fn parse_line(line: &[u8]) -> Result<ChainFields, String> {
    const MARK: &[u8] = b",\"hash\":\"";
    let at = memchr::memmem::rfind(line, MARK).ok_or("no hash field")?;
    let hash = line[at + MARK.len()..]
        .strip_suffix(b"\"}")
        .ok_or("the hash is not the last field")?;
    let hash = std::str::from_utf8(hash)
        .ok()
        .and_then(hex64)
        .ok_or("malformed hash")?;
    let mut hasher = Sha256::new();
    hasher.update(&line[..at]);
    hasher.update(b"}");
    let mut computed = [0u8; 64];
    hex_lower(&hasher.finalize(), &mut computed);
    if computed != hash {
        return Err("hash mismatch: the record was altered".into());
    }
    let m: Members = serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
    let prev_hash = m
        .prev_hash
        .as_deref()
        .and_then(hex64)
        .ok_or("no prev_hash")?;
    Ok(ChainFields {
        seq: m.seq.ok_or("no seq")?,
        prev_hash,
        hash,
        kind: m.kind,
        prev_file: m.prev_file,
        lost_from: m.lost_from,
        lost_to: m.lost_to,
        error: m.error,
        exporter: m.exporter,
        dropped: m.dropped,
        removed_file: m.removed_file,
    })
}

/// How to verify.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Check only the joins between files and the last N records.
    pub quick: Option<u64>,
    /// The chain must start at the first record ever written (no file before the first one
    /// given, e.g. removed by retention).
    pub from_genesis: bool,
    /// The name of the log's active file when a folder is checked: it must be there, last.
    pub active_name: Option<String>,
}

/// The first problem found: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    /// 1-based line number in the (decompressed) file; 0 for the file as a whole.
    pub line: u64,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{} line {}: {}", self.file, self.line, self.message)
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub files: usize,
    /// Records read (up to the problem, if any).
    pub records: u64,
    pub first_seq: Option<u64>,
    /// The chain head: the last record checked, as (seq, hash).
    pub head: Option<(u64, String)>,
    pub problem: Option<Problem>,
    /// Things an auditor should know that are not breaks (lost records, export gaps, a chain
    /// that continues a file not given).
    pub notes: Vec<String>,
    /// Files retention recorded deleting (`retention` records seen).
    pub retained: Vec<String>,
    /// The first file given continues one that is not here: (that file, the one it names).
    unexplained_start: Option<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
#[error("{file}: {source}")]
pub struct VerifyError {
    pub file: String,
    pub source: std::io::Error,
}

/// The last record of a file already checked, for the join with the next one.
struct End {
    name: String,
    link_name: String,
    seq: u64,
    hash: HexHash,
}

/// Verifies `files` in the order given (see `files::list`, `files::order_given`).
pub fn verify(files: &[LogFile], opts: &VerifyOptions) -> Result<VerifyReport, VerifyError> {
    let mut report = VerifyReport {
        files: files.len(),
        ..VerifyReport::default()
    };
    let mut prev: Option<End> = None;
    for (i, file) in files.iter().enumerate() {
        let last_file = i + 1 == files.len();
        let io = |source| VerifyError {
            file: file.name.clone(),
            source,
        };
        let lines = match opts.quick {
            None => Lines::All(file.reader().map_err(io)?),
            Some(n) => Lines::Quick(quick_lines(file, if last_file { n } else { 1 }).map_err(io)?),
        };
        let mut check = FileCheck {
            file,
            prev: prev.as_ref(),
            report: &mut report,
            opts,
            line_no: 0,
            last: None,
        };
        let end = check.run(lines).map_err(io)?;
        if report.problem.is_some() {
            return Ok(report);
        }
        if let Some(end) = end {
            prev = Some(end);
        }
    }
    finish(&mut report, files, prev.as_ref(), opts);
    Ok(report)
}

/// Checks that need the whole set: a start explained by retention, the active file present.
fn finish(report: &mut VerifyReport, files: &[LogFile], last: Option<&End>, opts: &VerifyOptions) {
    if let Some((file, link)) = report.unexplained_start.take() {
        if report.retained.contains(&link) {
            report.notes.push(format!(
                "the chain starts in {file}, continuing from \"{link}\", which retention removed (recorded in the chain)"
            ));
        } else if opts.quick.is_some() {
            report.notes.push(format!(
                "the chain starts in {file}, continuing from \"{link}\", which is not here (quick mode does not look for the retention record)"
            ));
        } else {
            report.problem = Some(Problem {
                file,
                line: 1,
                message: format!(
                    "continues from \"{link}\", which is missing and was not removed by retention: the beginning of the log was deleted (if older files were archived elsewhere, verify them together)"
                ),
            });
            return;
        }
    }
    if let Some(active) = &opts.active_name {
        let last_file = files.last().map(|f| f.name.as_str());
        if last_file != Some(active.as_str()) {
            let end = last
                .map(|e| format!(": the chain ends in {} at seq {}; records written after it may have been removed", e.name, e.seq))
                .unwrap_or_default();
            report.problem = Some(Problem {
                file: active.clone(),
                line: 0,
                message: format!("the active file is missing{end}"),
            });
        }
    }
}

/// Where a file's lines come from: all of them, or (quick) the first and the last few with
/// their line numbers.
enum Lines {
    All(Box<dyn BufRead + Send>),
    Quick(QuickLines),
}

struct QuickLines {
    /// (line number, bytes with their '\n' if they had one)
    first: Option<(u64, Vec<u8>)>,
    last: Vec<(u64, Vec<u8>)>,
}

/// The first line and the last `n` lines of a file (streams compressed files; reads only the
/// ends of plain ones).
fn quick_lines(file: &LogFile, n: u64) -> std::io::Result<QuickLines> {
    let n = n.max(1) as usize;
    let mut reader = file.reader()?;
    let mut first = Vec::new();
    if reader.read_until(b'\n', &mut first)? == 0 {
        return Ok(QuickLines {
            first: None,
            last: Vec::new(),
        });
    }
    let mut ring: std::collections::VecDeque<(u64, Vec<u8>)> = Default::default();
    let mut no = 1u64;
    if file.compressed {
        loop {
            let mut line = Vec::new();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            no += 1;
            if ring.len() == n {
                ring.pop_front();
            }
            ring.push_back((no, line));
        }
    } else {
        drop(reader);
        let total = super::read::count_lines(&file.path)?;
        let tail = super::read::tail_lines(&file.path, n)?;
        let start = total + 1 - tail.len() as u64;
        for (k, line) in tail.into_iter().enumerate() {
            let no = start + k as u64;
            if no > 1 {
                ring.push_back((no, line));
            }
        }
    }
    Ok(QuickLines {
        first: Some((1, first)),
        last: ring.into(),
    })
}

struct FileCheck<'a> {
    file: &'a LogFile,
    prev: Option<&'a End>,
    report: &'a mut VerifyReport,
    opts: &'a VerifyOptions,
    line_no: u64,
    /// The last record accepted in this file: (seq, hash).
    last: Option<(u64, HexHash)>,
}

impl FileCheck<'_> {
    fn problem(&mut self, line: u64, message: String) {
        self.report.problem = Some(Problem {
            file: self.file.name.clone(),
            line,
            message,
        });
    }

    /// Checks the file; returns its last record for the next join (None when it is empty).
    fn run(&mut self, lines: Lines) -> std::io::Result<Option<End>> {
        match lines {
            Lines::All(mut reader) => {
                let mut line = Vec::with_capacity(1024);
                loop {
                    line.clear();
                    if reader.read_until(b'\n', &mut line)? == 0 {
                        break;
                    }
                    self.line_no += 1;
                    if !self.accept(&line, true) {
                        return Ok(None);
                    }
                }
            }
            Lines::Quick(q) => {
                let Some((_, first)) = q.first else {
                    return Ok(self.empty());
                };
                self.line_no = 1;
                if !self.accept(&first, true) {
                    return Ok(None);
                }
                // Only the stretch at the end is a chain; its first line is checked on its own.
                let mut contiguous = false;
                for (no, line) in q.last {
                    self.line_no = no;
                    if !self.accept(&line, contiguous || no == 2) {
                        return Ok(None);
                    }
                    contiguous = true;
                }
            }
        }
        if self.line_no == 0 {
            return Ok(self.empty());
        }
        Ok(self.last.map(|(seq, hash)| End {
            name: self.file.name.clone(),
            link_name: self.file.link_name().to_string(),
            seq,
            hash,
        }))
    }

    fn empty(&mut self) -> Option<End> {
        if self.file.named_seq.is_some() {
            self.problem(
                1,
                "the file is empty (a closed file always holds records)".into(),
            );
        } else {
            self.report
                .notes
                .push(format!("{} is empty", self.file.name));
        }
        None
    }

    /// Checks one line; `linked`: it must follow the previous accepted line of this file.
    fn accept(&mut self, raw: &[u8], linked: bool) -> bool {
        let n = self.line_no;
        let Some(line) = raw.strip_suffix(b"\n") else {
            self.problem(
                n,
                "the last line is incomplete: the file was truncated".into(),
            );
            return false;
        };
        let rec = match parse_line(line) {
            Ok(r) => r,
            Err(reason) => {
                let seq = super::chain::line_seq(line)
                    .map(|s| format!(" (seq {s})"))
                    .unwrap_or_default();
                self.problem(n, format!("{reason}{seq}"));
                return false;
            }
        };
        if let (Some(from), Some(to)) = (rec.lost_from, rec.lost_to) {
            if to != rec.seq || from > to {
                self.problem(n, format!("seq {}: a lost-records range {from}..{to} that does not end at its own number", rec.seq));
                return false;
            }
        }
        let start = rec.lost_from.unwrap_or(rec.seq);
        let ok = if n == 1 {
            self.check_first(&rec, start)
        } else if !linked {
            true
        } else {
            self.check_next(&rec, start)
        };
        if !ok {
            return false;
        }
        self.note(&rec);
        self.report.records += 1;
        self.report.first_seq.get_or_insert(rec.seq);
        self.report.head = Some((rec.seq, String::from_utf8_lossy(&rec.hash).into_owned()));
        self.last = Some((rec.seq, rec.hash));
        true
    }

    fn check_next(&mut self, rec: &ChainFields, start: u64) -> bool {
        let n = self.line_no;
        let Some((last_seq, last_hash)) = self.last else {
            return true;
        };
        if rec.prev_file.is_some() {
            self.problem(n, format!("seq {}: names a previous file but is not the first record of its file (files were joined)", rec.seq));
            return false;
        }
        let expected = last_seq + 1;
        if start != expected {
            let what = if start > expected {
                format!("records {expected}..{} are missing", start - 1)
            } else {
                "records are repeated or out of order".to_string()
            };
            self.problem(
                n,
                format!("expected seq {expected}, found {start} ({what})"),
            );
            return false;
        }
        if rec.prev_hash != last_hash {
            self.problem(n, format!("seq {}: prev_hash does not match the previous record (a record is missing or reordered)", rec.seq));
            return false;
        }
        true
    }

    /// The first record of a file: its name, and its join with the file before.
    fn check_first(&mut self, rec: &ChainFields, start: u64) -> bool {
        let file = self.file;
        if let Some(named) = file.named_seq {
            if named != rec.seq {
                self.problem(1, format!(
                    "the file name says it starts at seq {named} but its first record is seq {}: files are out of order (renamed or swapped)",
                    rec.seq
                ));
                return false;
            }
        }
        let Some(prev) = self.prev else {
            return self.check_chain_start(rec, start);
        };
        let expected = prev.seq + 1;
        let Some(link) = rec.prev_file.as_deref() else {
            self.problem(1, format!(
                "the first record (seq {}) does not name the file it continues (expected a link to \"{}\")",
                rec.seq, prev.link_name
            ));
            return false;
        };
        if link != prev.link_name {
            let msg = if start > expected {
                format!(
                    "continues from \"{link}\", which is missing: records {expected}..{} are not here (the file before this one is {}, ending at seq {})",
                    start - 1, prev.name, prev.seq
                )
            } else {
                format!(
                    "continues from \"{link}\", but the file before it is {}: files are out of order (renamed or swapped)",
                    prev.name
                )
            };
            self.problem(1, msg);
            return false;
        }
        if start != expected {
            let msg = if start > expected {
                format!(
                    "records {expected}..{} are missing: {} ends at seq {}, but this file continues it from seq {} (the end of {} was cut off)",
                    start - 1, prev.name, prev.seq, start - 1, prev.name
                )
            } else {
                format!(
                    "starts at seq {start}, but {} already reached seq {}: the files overlap",
                    prev.name, prev.seq
                )
            };
            self.problem(1, msg);
            return false;
        }
        if rec.prev_hash != prev.hash {
            self.problem(1, format!(
                "prev_hash does not match the last record of {} (seq {}): that record was replaced, or the files were swapped",
                prev.name, prev.seq
            ));
            return false;
        }
        true
    }

    /// The first record of the first file given.
    fn check_chain_start(&mut self, rec: &ChainFields, start: u64) -> bool {
        if let Some(link) = &rec.prev_file {
            if self.opts.from_genesis {
                self.problem(1, format!(
                    "the chain does not start here: seq {} continues from \"{link}\", which was not given",
                    rec.seq
                ));
                return false;
            }
            self.report.unexplained_start = Some((self.file.name.clone(), link.clone()));
            return true;
        }
        if start == 1 && rec.prev_hash == GENESIS {
            return true;
        }
        self.problem(1, format!(
            "the first record (seq {}) neither starts the chain nor names a file it continues: the beginning of the log was cut off",
            rec.seq
        ));
        false
    }

    fn note(&mut self, rec: &ChainFields) {
        let file = &self.file.name;
        match rec.kind.as_deref() {
            Some(KIND_LOST) => self.report.notes.push(format!(
                "{file}: records {}..{} were lost to a failed write ({}); their statements were refused",
                rec.lost_from.unwrap_or(rec.seq),
                rec.seq,
                rec.error.as_deref().unwrap_or("unknown error")
            )),
            Some(KIND_ROTATION_FAILED) => self.report.notes.push(format!(
                "{file}: seq {}: a rotation failed ({})",
                rec.seq,
                rec.error.as_deref().unwrap_or("unknown error")
            )),
            Some(KIND_RETENTION) => {
                if let Some(f) = &rec.removed_file {
                    self.report.retained.push(f.clone());
                }
            }
            Some(KIND_EXPORT_GAP) => self.report.notes.push(format!(
                "{file}: seq {}: exporter {} dropped {} record(s) (they are in this log)",
                rec.seq,
                rec.exporter.as_deref().unwrap_or("?"),
                rec.dropped.unwrap_or(0)
            )),
            _ => {}
        }
    }
}
