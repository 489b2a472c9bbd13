//! One file's records checked in order: each line's own hash, the links between lines, the
//! file's first record against its name and the file before it, and what to tell the auditor.

use std::io::BufRead;

use super::{parse_line, ChainFields, End, Lines, Problem, VerifyOptions, VerifyReport};
use crate::audit::chain::{
    HexHash, LostKinds, GENESIS, KIND_EXPORT_GAP, KIND_LOST, KIND_RETENTION, KIND_ROTATION_FAILED,
    KIND_TAIL_CUT,
};
use crate::audit::files::LogFile;

pub(super) struct FileCheck<'a> {
    pub file: &'a LogFile,
    /// The last record of the file before this one.
    pub prev: Option<&'a End>,
    pub report: &'a mut VerifyReport,
    pub opts: &'a VerifyOptions,
    pub line_no: u64,
    /// The last record accepted in this file: (seq, hash).
    pub last: Option<(u64, HexHash)>,
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
    pub fn run(&mut self, lines: Lines) -> std::io::Result<Option<End>> {
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
                let seq = crate::audit::chain::line_seq(line)
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
                "{file}: records {}..{} were lost to a failed write ({}): {}",
                rec.lost_from.unwrap_or(rec.seq),
                rec.seq,
                rec.error.as_deref().unwrap_or("unknown error"),
                lost_what(rec.lost_kinds.as_ref())
            )),
            Some(KIND_TAIL_CUT) => self.report.notes.push(format!(
                "{file}: seq {}: at a start the file ended with an incomplete line ({} bytes{}; the machine stopped during a write), cut back to the last complete record: a statement whose decision record was cut may have run, and later records of that write are missing",
                rec.seq,
                rec.cut_bytes.unwrap_or(0),
                rec.cut_seq.map(|s| format!(", seq {s}")).unwrap_or_default()
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

/// What the records a `lost` record stands for were, and what that means for what they record.
fn lost_what(kinds: Option<&LostKinds>) -> String {
    let Some(k) = kinds else {
        // Written before the kinds were counted: true whichever they were.
        return "a statement whose decision record was among them was refused and did not run; \
            one whose outcome record was among them had run (its decision record is in the log), \
            only its outcome details are missing; session records are best effort (the login \
            went ahead or was refused as decided)"
            .into();
    };
    let mut parts = Vec::new();
    if k.decisions > 0 {
        parts.push(format!(
            "{} decision record(s): those statements were refused and did not run",
            k.decisions
        ));
    }
    if k.outcomes > 0 {
        parts.push(format!(
            "{} outcome record(s): those statements ran (their decision records are in the log); only their outcome details (rows, duration, error) are missing",
            k.outcomes
        ));
    }
    if k.sessions > 0 {
        parts.push(format!(
            "{} session record(s): logins and refused connections, which went ahead or were refused as decided",
            k.sessions
        ));
    }
    if k.other > 0 {
        parts.push(format!(
            "{} other record(s): admin actions (one whose `started` record was lost was not done, one whose second record was lost was done) and the log's own records",
            k.other
        ));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_record_says_what_became_of_each_kind() {
        let k = LostKinds {
            decisions: 2,
            outcomes: 1,
            sessions: 0,
            other: 0,
        };
        assert_eq!(
            lost_what(Some(&k)),
            "2 decision record(s): those statements were refused and did not run; 1 outcome record(s): those statements ran (their decision records are in the log); only their outcome details (rows, duration, error) are missing"
        );
        // A log written before the kinds were counted: worded to be true of either.
        let old = lost_what(None);
        assert!(old.contains("decision record was among them was refused and did not run"));
        assert!(old.contains("outcome record was among them had run"));
        assert!(!old.contains("their statements were refused"));
    }
}
