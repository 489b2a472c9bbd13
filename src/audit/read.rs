//! Reading records back, across rotated files: newest first (the admin API's query, `tail`),
//! or in order from a point (`tail --since`, `--follow`); and the filter both use.

use std::io::{BufRead, Read, Seek, SeekFrom};
use std::path::Path;

use serde_json::Value;

use super::files::LogFile;

/// Lines of a plain file from the last to the first (without their '\n'), read in 64 KiB
/// blocks from the end, so the newest records cost only what is returned.
pub struct ReverseLines {
    file: std::fs::File,
    /// Bytes before `pos` are unread.
    pos: u64,
    /// Read but not yet returned: everything after the last line break seen.
    tail: Vec<u8>,
    done: bool,
}

const BLOCK: u64 = 64 * 1024;

impl ReverseLines {
    pub fn open(path: &Path) -> std::io::Result<ReverseLines> {
        let file = std::fs::File::open(path)?;
        let pos = file.metadata()?.len();
        Ok(ReverseLines {
            file,
            pos,
            tail: Vec::new(),
            done: false,
        })
    }
}

impl Iterator for ReverseLines {
    type Item = std::io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            // A complete line sits after the last '\n' of `tail` (ignoring a trailing one).
            let end = if self.tail.last() == Some(&b'\n') {
                self.tail.len() - 1
            } else {
                self.tail.len()
            };
            if let Some(nl) = memchr::memrchr(b'\n', &self.tail[..end]) {
                let line = self.tail[nl + 1..end].to_vec();
                self.tail.truncate(nl + 1);
                if line.is_empty() {
                    continue;
                }
                return Some(Ok(line));
            }
            if self.pos == 0 {
                self.done = true;
                let line = self.tail[..end].to_vec();
                return (!line.is_empty()).then_some(Ok(line));
            }
            let start = self.pos.saturating_sub(BLOCK);
            let mut block = vec![0u8; (self.pos - start) as usize];
            let read = self
                .file
                .seek(SeekFrom::Start(start))
                .and_then(|_| self.file.read_exact(&mut block));
            if let Err(e) = read {
                self.done = true;
                return Some(Err(e));
            }
            block.extend_from_slice(&self.tail);
            self.tail = block;
            self.pos = start;
        }
    }
}

pub fn count_lines(path: &Path) -> std::io::Result<u64> {
    let mut reader = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let mut n = 0u64;
    let mut last = b'\n';
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            // A last line without '\n' is a line too.
            return Ok(n + u64::from(last != b'\n'));
        }
        n += memchr::memchr_iter(b'\n', buf).count() as u64;
        last = buf[buf.len() - 1];
        let used = buf.len();
        reader.consume(used);
    }
}

/// The last `n` lines of a plain file, oldest first, each with its '\n' (a last line without one
/// is returned as it is: the caller sees the file was cut).
pub fn tail_lines(path: &Path, n: usize) -> std::io::Result<Vec<Vec<u8>>> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut start = len;
    let mut bytes = Vec::new();
    loop {
        let newlines = memchr::memchr_iter(b'\n', &bytes).count();
        // n lines need n line breaks before the last line's (when it has one), plus one more to
        // know where the oldest starts.
        if start == 0 || newlines > n {
            break;
        }
        let from = start.saturating_sub(BLOCK);
        let mut block = vec![0u8; (start - from) as usize];
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(&mut block)?;
        block.extend_from_slice(&bytes);
        bytes = block;
        start = from;
    }
    let mut lines: Vec<Vec<u8>> = bytes
        .split_inclusive(|b| *b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // a partial line: its start lies before what was read
    }
    let keep = lines.len().saturating_sub(n);
    Ok(lines.split_off(keep))
}

/// The last complete line of a (possibly compressed) file, without its '\n'.
pub fn tail_lines_of(file: &LogFile) -> std::io::Result<Option<Vec<u8>>> {
    if !file.compressed {
        let mut last = tail_lines(&file.path, 1)?;
        return Ok(last
            .pop()
            .and_then(|mut l| (l.pop() == Some(b'\n')).then_some(l)));
    }
    let mut reader = file.reader()?;
    let (mut last, mut line) = (Vec::new(), Vec::new());
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        std::mem::swap(&mut last, &mut line);
    }
    Ok((last.pop() == Some(b'\n')).then_some(last))
}

pub use super::chain::line_seq;

/// The time of a record line.
pub fn line_time(line: &[u8]) -> Option<time::OffsetDateTime> {
    parse_time(&super::json::member_str(line, "ts")?)
}

/// Every line of the log's files, newest first (compressed files are read whole, then walked
/// backwards).
pub fn newest_first(files: &[LogFile]) -> impl Iterator<Item = std::io::Result<Vec<u8>>> + '_ {
    files
        .iter()
        .rev()
        .flat_map(|f| -> Box<dyn Iterator<Item = _>> {
            if f.compressed {
                match f.read_all() {
                    Ok(bytes) => {
                        let mut lines: Vec<Vec<u8>> = bytes
                            .split(|b| *b == b'\n')
                            .filter(|l| !l.is_empty())
                            .map(<[u8]>::to_vec)
                            .collect();
                        lines.reverse();
                        Box::new(lines.into_iter().map(Ok))
                    }
                    Err(e) => Box::new(std::iter::once(Err(e))),
                }
            } else {
                match ReverseLines::open(&f.path) {
                    Ok(r) => Box::new(r),
                    // Rotated away between listing and reading: its records are in the next file.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        Box::new(std::iter::empty())
                    }
                    Err(e) => Box::new(std::iter::once(Err(e))),
                }
            }
        })
}

/// The decisions a record can carry.
pub const DECISIONS: [&str; 6] = [
    "allowed",
    "masked",
    "rewritten",
    "blocked",
    "would_block",
    "error",
];

/// Which records a reader wants.
#[derive(Debug, Clone, Default)]
pub struct RecordFilter {
    pub agent: Option<String>,
    pub decision: Option<String>,
    /// Only records at or after this time.
    pub since: Option<time::OffsetDateTime>,
    /// Only records numbered below this.
    pub before: Option<u64>,
}

/// What a filter says of a record read newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    Keep,
    Skip,
    /// Older than `since`: nothing further back can match.
    Stop,
}

pub fn parse_time(s: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

impl RecordFilter {
    pub fn judge(&self, rec: &Value) -> Judgement {
        if let Some(since) = self.since {
            if rec["ts"]
                .as_str()
                .and_then(parse_time)
                .is_some_and(|t| t < since)
            {
                return Judgement::Stop;
            }
        }
        let seq = rec["seq"].as_u64().unwrap_or(0);
        let keep = self.before.is_none_or(|b| seq < b)
            && self.agent.as_deref().is_none_or(|a| rec["agent"] == a)
            && self
                .decision
                .as_deref()
                .is_none_or(|d| rec["decision"] == d);
        if keep {
            Judgement::Keep
        } else {
            Judgement::Skip
        }
    }
}

/// Up to `limit` records matching `filter`, newest first; `true` when more would match.
pub fn query(
    files: &[LogFile],
    filter: &RecordFilter,
    limit: usize,
    budget: AnswerBudget,
) -> std::io::Result<(Vec<Value>, bool)> {
    let mut records = Vec::new();
    let mut bytes = 0;
    for line in newest_first(files) {
        let line = line?;
        let Ok(mut rec) = serde_json::from_slice::<Value>(&line) else {
            continue; // a torn last line while a write is in progress
        };
        match filter.judge(&rec) {
            Judgement::Stop => break,
            Judgement::Skip => {}
            Judgement::Keep if records.len() == limit => return Ok((records, true)),
            Judgement::Keep => {
                let kept = budget.cut_statement(&mut rec, line.len());
                if !records.is_empty() && bytes + kept > budget.max_bytes {
                    return Ok((records, true));
                }
                bytes += kept;
                records.push(rec);
            }
        }
    }
    Ok((records, false))
}

/// How much of the log one answer may hold. A statement is recorded whole (up to
/// `max_statement_bytes`, 64 MiB), so 1,000 records could be gigabytes: three concurrent viewer
/// queries of 1 MB statements once took the gateway from 38 MB to 2.7 GB (a live review).
#[derive(Debug, Clone, Copy)]
pub struct AnswerBudget {
    /// The records of one answer, in bytes as logged (statements as cut): past it the answer
    /// ends early and pages on (at least one record is always returned).
    pub max_bytes: usize,
    /// The most of one record's `statement` returned; a longer one is cut and the record says
    /// how long it was (`statement_bytes`). The log itself keeps it whole.
    pub max_statement: usize,
}

impl AnswerBudget {
    /// Cuts `rec`'s statement to `max_statement` bytes; returns the record's size as kept.
    fn cut_statement(&self, rec: &mut Value, logged: usize) -> usize {
        let Some(Value::String(s)) = rec.get_mut("statement") else {
            return logged;
        };
        if s.len() <= self.max_statement {
            return logged;
        }
        let full = s.len();
        let mut end = self.max_statement;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        // A new string: truncating keeps the whole allocation, so each cut record still held
        // its full statement (a re-review: 8 MB answers took 140 MB).
        *s = s[..end].to_owned();
        rec["statement_bytes"] = Value::from(full);
        logged.saturating_sub(full - end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_cuts_long_statements_at_a_character_and_says_how_long_they_were() {
        let budget = AnswerBudget {
            max_bytes: 1 << 20,
            max_statement: 5,
        };
        let mut rec = serde_json::json!({"seq": 1, "statement": "SELECT 'é' -- long"});
        let logged = rec.to_string().len();
        let kept = budget.cut_statement(&mut rec, logged);
        assert_eq!(rec["statement"], "SELEC");
        assert_eq!(rec["statement_bytes"], 19);
        // The cut string holds only what is kept, not the whole statement's allocation.
        let big = "x".repeat(1 << 20);
        let mut long = serde_json::json!({ "statement": big });
        budget.cut_statement(&mut long, (1 << 20) + 20);
        assert!(matches!(&long["statement"], Value::String(s) if s.capacity() < 1024));
        assert_eq!(kept, logged - 14);
        let mut rec = serde_json::json!({"statement": "SELECé"});
        budget.cut_statement(&mut rec, 10);
        assert_eq!(rec["statement"], "SELEC");
        let mut rec = serde_json::json!({"statement": "ABCDé"});
        budget.cut_statement(&mut rec, 10);
        assert_eq!(rec["statement"], "ABCD", "not inside the two bytes of é");
        let mut short = serde_json::json!({"statement": "SELEC"});
        assert_eq!(budget.cut_statement(&mut short, 7), 7);
        assert!(short.get("statement_bytes").is_none());
    }

    #[test]
    fn reverse_lines_across_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let lines: Vec<String> = (0..20_000)
            .map(|i| format!("line {i} {}", "x".repeat(i % 37)))
            .collect();
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let back: Vec<String> = ReverseLines::open(&path)
            .unwrap()
            .map(|l| String::from_utf8(l.unwrap()).unwrap())
            .collect();
        let mut expected = lines.clone();
        expected.reverse();
        assert_eq!(back, expected);
        assert_eq!(count_lines(&path).unwrap(), 20_000);
        let tail = tail_lines(&path, 3).unwrap();
        assert_eq!(
            tail,
            lines[19_997..]
                .iter()
                .map(|l| format!("{l}\n").into_bytes())
                .collect::<Vec<_>>()
        );
        assert_eq!(tail_lines(&path, 50_000).unwrap().len(), 20_000);
        std::fs::write(&path, "").unwrap();
        assert_eq!(ReverseLines::open(&path).unwrap().count(), 0);
        assert!(tail_lines(&path, 2).unwrap().is_empty());
        std::fs::write(&path, "only").unwrap();
        assert_eq!(ReverseLines::open(&path).unwrap().count(), 1);
        assert_eq!(count_lines(&path).unwrap(), 1);
        std::fs::write(&path, "a\nb\ncut").unwrap();
        assert_eq!(
            tail_lines(&path, 2).unwrap(),
            [b"b\n".to_vec(), b"cut".to_vec()]
        );
    }
}
