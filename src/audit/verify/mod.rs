//! `tollgate audit verify`: recompute every record's hash, check every link of the chain —
//! including the joins between rotated files — and report the first problem precisely.
//!
//! Full mode reads every record. Quick mode checks each file's first and last records (so every
//! join between files) and the last N records of the newest file.

mod check;
mod line;

use std::io::BufRead;

use super::chain::HexHash;
use super::files::LogFile;
use check::FileCheck;
pub use line::{parse_line, ChainFields};

/// How to verify.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Check only the joins between files and the last N records.
    pub quick: Option<u64>,
    /// The chain must start at the first record ever written (no file before the first one
    /// given, e.g. removed by retention).
    pub from_genesis: bool,
    /// The name of the log's active file when a whole folder is checked: it must be there,
    /// last, and the oldest file must start the chain or follow a file retention removed.
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

/// A read error that says the file's bytes are wrong (a compressed file altered or cut), not
/// that it could not be opened or read.
fn is_damaged(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{InvalidData, InvalidInput, UnexpectedEof};
    matches!(e.kind(), InvalidData | InvalidInput | UnexpectedEof)
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
        let end = match check.run(lines) {
            Ok(end) => end,
            // Bytes that do not decompress (or stop short) are an altered or cut file, a break
            // of the chain like an edited line, not input that could not be checked.
            Err(e) if is_damaged(&e) => {
                report.problem = Some(Problem {
                    file: file.name.clone(),
                    line: 0,
                    message: format!(
                        "the file cannot be read to its end ({e}): it was altered or cut"
                    ),
                });
                return Ok(report);
            }
            Err(e) => return Err(io(e)),
        };
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
        } else if opts.active_name.is_none() {
            // Files named one by one: the caller chose where to start.
            report.notes.push(format!(
                "the chain starts in {file}, continuing from \"{link}\", which was not given: the files before it were not checked"
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
