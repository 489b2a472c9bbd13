//! The write side of the log: chains a batch of queued entries into lines and writes them, one
//! `write(2)` per file it touches, cutting the file where the queue asked (rotation). Only one
//! writer runs at a time (the group-commit leader), so nothing here is contended.
//!
//! A failed write is cut back to the last complete record, so the file always ends with a
//! whole line and the chain stays verifiable; the caller learns which numbers were lost.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::chain::{render, HexHash, LostKinds, SystemRecord, GENESIS};
use super::files::{self, Naming};
use super::queue::{Entry, Lost};
use super::AuditError;

/// The file being written.
#[derive(Debug)]
struct Active {
    /// Number of its first record (`None` while empty).
    first_seq: Option<u64>,
    records: u64,
    /// The closed file this one continues (named by its first record).
    prev_name: Option<String>,
    /// When its first record was written (time-based rotation).
    opened: SystemTime,
}

/// A file closed by a rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The number of the next file's link record.
    pub link_seq: u64,
    pub closed: PathBuf,
    pub first_seq: u64,
    pub last_seq: u64,
}

/// Why a batch was not (wholly) written.
#[derive(Debug)]
pub struct Failure {
    /// Everything up to here was written.
    pub written_upto: u64,
    /// What was lost (with `rotate`, a rotation was lost with the records: the stand-in
    /// record does it).
    pub lost: Lost,
    /// The file can no longer be written safely (a rotation could not be undone).
    pub broken: bool,
}

pub struct Writer {
    naming: Naming,
    path: PathBuf,
    file: File,
    len: u64,
    /// Hash and number of the last record written.
    hash: HexHash,
    last_seq: u64,
    active: Active,
    buf: Vec<u8>,
    /// Recent rotations, newest last (for `AuditLog::rotate` to report).
    rotations: VecDeque<Rotation>,
    /// Held while the log is open: one writer per log (`lock_log`).
    _lock: File,
}

/// Takes the log's lock, `.NAME.lock` beside it (a dot file: not one of the log's files for
/// `audit verify`), held until the writer goes. A second gateway started on the same config
/// chained its records onto the first's and the two forked the chain (a live review).
fn lock_log(naming: &Naming, path: &Path) -> Result<File, AuditError> {
    let name = path
        .file_name()
        .map_or_else(|| "audit.log".into(), |n| n.to_string_lossy().into_owned());
    let lock = naming.dir.join(format!(".{name}.lock"));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock)
        .map_err(|source| AuditError::Io {
            path: lock.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(AuditError::InUse {
            path: path.to_path_buf(),
            lock,
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(AuditError::Io { path: lock, source }),
    }
}

/// What opening a log found.
pub struct Resumed {
    pub writer: Writer,
    pub last_seq: u64,
    /// The active file is new and continues a closed one: its first record must be a link.
    pub needs_link: bool,
    pub file_records: u64,
    pub file_bytes: u64,
    /// The active file ended with an incomplete line, cut away: what to record about it.
    pub tail_cut: Option<SystemRecord>,
}

enum SwitchError {
    /// The rotation did not happen; the active file goes on.
    Kept(std::io::Error),
    /// The active file was moved and could not be put back.
    Broken(String),
}

fn create_new(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

impl Writer {
    /// Opens (or creates, 0600) the active file and resumes the chain: from its last record, or,
    /// when it is empty, from the newest closed file (the new file then starts with a link).
    pub fn open(path: &Path) -> Result<Resumed, AuditError> {
        let io = |source| AuditError::Io {
            path: path.to_path_buf(),
            source,
        };
        let broken = |reason: String| AuditError::BrokenTail {
            path: path.to_path_buf(),
            reason,
        };
        let naming = Naming::for_active(path);
        std::fs::create_dir_all(&naming.dir).map_err(io)?;
        let lock = lock_log(&naming, path)?;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let tail_cut = cut_torn_tail(&mut file, path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let now = SystemTime::now();
        let mut active = Active {
            first_seq: None,
            records: 0,
            prev_name: None,
            opened: now,
        };
        let (last_seq, hash, needs_link) = if len > 0 {
            let last = tail_line(&mut file)
                .map_err(io)?
                .ok_or_else(|| broken("the last line is incomplete".into()))?;
            let rec = super::verify::parse_line(&last).map_err(broken)?;
            let first = head_line(&mut file).map_err(io)?;
            active.first_seq = super::chain::line_seq(&first);
            active.prev_name = super::json::member_str(&first, "prev_file");
            active.opened = super::json::member_str(&first, "ts")
                .and_then(|t| parse_ts(&t))
                .unwrap_or(now);
            active.records = count_lines(&mut file).map_err(io)?;
            (rec.seq, rec.hash, false)
        } else {
            match files::list(&naming)
                .map_err(io)?
                .into_iter()
                .rfind(|f| f.named_seq.is_some())
            {
                Some(prev) => {
                    let last = super::read::tail_lines_of(&prev)
                        .map_err(|e| AuditError::Io {
                            path: prev.path.clone(),
                            source: e,
                        })?
                        .ok_or_else(|| {
                            broken(format!("{} ends with an incomplete line", prev.name))
                        })?;
                    let rec = super::verify::parse_line(&last).map_err(broken)?;
                    active.prev_name = Some(prev.link_name().to_string());
                    (rec.seq, rec.hash, true)
                }
                None => (0, GENESIS, false),
            }
        };
        let file_records = active.records;
        Ok(Resumed {
            writer: Writer {
                naming,
                path: path.to_path_buf(),
                file,
                len,
                hash,
                last_seq,
                active,
                buf: Vec::with_capacity(64 * 1024),
                rotations: VecDeque::new(),
                _lock: lock,
            },
            last_seq,
            needs_link,
            file_records,
            file_bytes: len,
            tail_cut,
        })
    }

    /// Whether the active file's name no longer leads to the file this writer has open: it was
    /// removed or moved while open (by hand, or by a logrotate not told about tollgate), and the
    /// records written since went where nobody will look for them.
    pub fn replaced(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(open) = self.file.metadata() else {
            return false;
        };
        match std::fs::metadata(&self.path) {
            Ok(now) => (now.dev(), now.ino()) != (open.dev(), open.ino()),
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        }
    }

    /// Opens a new active file at the name, the chain going on (its first record continues the
    /// last one written to the file that was removed or moved). Fails when something else now
    /// has the name: tollgate does not write into a file it did not make.
    pub fn reopen(&mut self) -> std::io::Result<()> {
        self.file = create_new(&self.path)?;
        self.len = 0;
        self.active = Active {
            first_seq: None,
            records: 0,
            prev_name: None,
            opened: SystemTime::now(),
        };
        Ok(())
    }

    pub fn head(&self) -> (u64, HexHash) {
        (self.last_seq, self.hash)
    }

    /// Records and bytes in the active file.
    pub fn file_size(&self) -> (u64, u64) {
        (self.active.records, self.len)
    }

    pub fn opened(&self) -> SystemTime {
        self.active.opened
    }

    pub fn rotation_at(&self, link_seq: u64) -> Option<Rotation> {
        self.rotations
            .iter()
            .find(|r| r.link_seq == link_seq)
            .cloned()
    }

    /// Chains and writes `entries` (numbered from `first_seq`, records' fields in `data`); each
    /// written stretch of lines is handed to `sink` with its first and last numbers. Returns the
    /// last number written, or what was lost. `rotations` collects the files rotations closed, and why others failed.
    pub fn write_batch(
        &mut self,
        first_seq: u64,
        entries: &[Entry],
        data: &[u8],
        sink: &mut dyn FnMut(&[u8], u64, u64),
        rotations: &mut Vec<Result<Rotation, String>>,
    ) -> Result<u64, Failure> {
        let now = SystemTime::now();
        let last = first_seq + entries.len() as u64 - 1;
        self.buf.clear();
        let mut head = self.hash;
        let mut seg_first = first_seq;
        // What a failure of the stretch in `buf` loses from (a stand-in record reaches back).
        let mut seg_from = first_seq;
        let mut lines = 0u64;
        let mut rotation_error = None;
        for (i, entry) in entries.iter().enumerate() {
            let seq = first_seq + i as u64;
            if entry.switches() && self.active.records + lines > 0 {
                if let Err(e) = self.flush(&head, seg_first, lines, sink) {
                    let rotate = entries[i..].iter().any(Entry::switches);
                    let from = (seg_from, &entries[(seg_first - first_seq) as usize..]);
                    return Err(self.failure(e.to_string(), from, last, rotate, data));
                }
                (seg_first, seg_from, lines) = (seq, seq, 0);
                match self.switch(seq, now) {
                    Ok(r) => {
                        self.rotations.push_back(r.clone());
                        if self.rotations.len() > 16 {
                            self.rotations.pop_front();
                        }
                        rotations.push(Ok(r));
                    }
                    Err(SwitchError::Kept(e)) => {
                        rotations.push(Err(e.to_string()));
                        rotation_error = Some(e.to_string());
                    }
                    Err(SwitchError::Broken(e)) => {
                        // A stand-in record here reaches back to the numbers it stood for.
                        let from = match entry {
                            Entry::Lost { from, .. } => *from,
                            _ => seq,
                        };
                        let mut f = self.failure(e, (from, &entries[i..]), last, false, data);
                        f.broken = true;
                        return Err(f);
                    }
                }
            }
            let prev_file = if self.active.records + lines == 0 {
                self.active.prev_name.as_deref()
            } else {
                None
            };
            let system;
            let fields: &[u8] = match entry {
                Entry::Record { start, len } => &data[*start..*start + *len],
                Entry::Rotate { .. } => {
                    let rec = match rotation_error.take() {
                        Some(error) => SystemRecord::RotationFailed { error },
                        None => SystemRecord::Rotation,
                    };
                    system = rec.fields(now, prev_file);
                    &system
                }
                Entry::Lost {
                    from, error, kinds, ..
                } => {
                    if lines == 0 {
                        seg_from = *from;
                    }
                    let rec = SystemRecord::Lost {
                        from: *from,
                        to: seq,
                        error: error.to_string(),
                        kinds: *kinds,
                    };
                    system = rec.fields(now, prev_file);
                    &system
                }
                Entry::System(rec) => {
                    system = rec.fields(now, prev_file);
                    &system
                }
            };
            head = render(&mut self.buf, seq, fields, &head);
            lines += 1;
        }
        if let Err(e) = self.flush(&head, seg_first, lines, sink) {
            let from = (seg_from, &entries[(seg_first - first_seq) as usize..]);
            return Err(self.failure(e.to_string(), from, last, false, data));
        }
        Ok(last)
    }

    /// The failure that lost numbers `from.0..=to`: the records of `from.1` (the batch's entries
    /// from the first one not written; a stand-in record among them reaches back to `from.0`).
    fn failure(
        &self,
        error: String,
        from: (u64, &[Entry]),
        to: u64,
        rotate: bool,
        data: &[u8],
    ) -> Failure {
        let mut kinds = LostKinds::default();
        let mut fresh = 0;
        for entry in from.1 {
            fresh += u64::from(!matches!(entry, Entry::Lost { .. }));
            match entry {
                Entry::Record { start, len } => kinds.count_fields(&data[*start..*start + *len]),
                // The records it stood in for, and the number it took (one of theirs).
                Entry::Lost { kinds: k, .. } => kinds.add(k),
                Entry::Rotate { .. } | Entry::System(_) => kinds.other += 1,
            }
        }
        debug_assert_eq!(kinds.total(), to - from.0 + 1, "{kinds:?}");
        Failure {
            written_upto: self.last_seq,
            lost: Lost {
                from: from.0,
                to,
                error: error.into(),
                rotate,
                kinds,
                fresh,
            },
            broken: false,
        }
    }

    /// Writes `buf` (`lines` lines from `first`) with one `write(2)`; on failure the file is cut
    /// back to its last complete record.
    fn flush(
        &mut self,
        head: &HexHash,
        first: u64,
        lines: u64,
        sink: &mut dyn FnMut(&[u8], u64, u64),
    ) -> std::io::Result<()> {
        if lines == 0 {
            return Ok(());
        }
        if let Err(e) = self.file.write_all(&self.buf) {
            let _ = self.file.set_len(self.len);
            self.buf.clear();
            return Err(e);
        }
        self.len += self.buf.len() as u64;
        let last = first + lines - 1;
        self.hash = *head;
        self.last_seq = last;
        if self.active.records == 0 {
            self.active.first_seq = Some(first);
            self.active.opened = SystemTime::now();
        }
        self.active.records += lines;
        sink(&self.buf, first, last);
        self.buf.clear();
        Ok(())
    }

    /// Closes the active file under its closed name and opens a new, empty one.
    fn switch(&mut self, link_seq: u64, now: SystemTime) -> Result<Rotation, SwitchError> {
        let first_seq = self.active.first_seq.unwrap_or(self.last_seq);
        let name = self.naming.closed_name(first_seq);
        let closed = self.naming.dir.join(&name);
        let gz = self.naming.dir.join(format!("{name}.gz"));
        if closed.exists() || gz.exists() {
            return Err(SwitchError::Kept(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{name} already exists"),
            )));
        }
        std::fs::rename(&self.path, &closed).map_err(SwitchError::Kept)?;
        match create_new(&self.path) {
            Ok(file) => {
                self.file = file;
                self.len = 0;
                self.active = Active {
                    first_seq: None,
                    records: 0,
                    prev_name: Some(name),
                    opened: now,
                };
                Ok(Rotation {
                    link_seq,
                    closed,
                    first_seq,
                    last_seq: self.last_seq,
                })
            }
            // The old handle still writes the old file: put its name back and go on with it.
            Err(e) => match std::fs::rename(&closed, &self.path) {
                Ok(()) => Err(SwitchError::Kept(e)),
                Err(back) => Err(SwitchError::Broken(format!(
                    "rotation failed ({e}) and {} could not be renamed back to {} ({back})",
                    closed.display(),
                    self.path.display()
                ))),
            },
        }
    }
}

/// The last line of a file if it is complete (`None` when the file ends mid-line).
/// A file that does not end with a newline ends with a line whose write the machine did not
/// finish (the log does not fsync; tollgate's own failed writes are cut back at once): cut back
/// to the end of the last complete line, which is then where the chain resumes, and say what
/// was cut. A cut longer than any line (1 MiB) is left for `audit verify` and an operator.
fn cut_torn_tail(file: &mut File, path: &Path) -> std::io::Result<Option<SystemRecord>> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    let tail_len = len.min(1 << 20);
    file.seek(SeekFrom::Start(len - tail_len))?;
    let mut tail = Vec::with_capacity(tail_len as usize);
    (&mut *file).take(tail_len).read_to_end(&mut tail)?;
    if tail.last() == Some(&b'\n') {
        return Ok(None);
    }
    let keep_in_tail = match memchr::memrchr(b'\n', &tail) {
        Some(i) => i + 1,
        None if tail_len == len => 0,
        None => return Ok(None),
    };
    let cut = &tail[keep_in_tail..];
    // A whole record that only lacks its newline (the write stopped after its last byte) is
    // kept: its hash checks out, so it is what was written; the newline is added.
    if super::verify::parse_line(cut).is_ok() {
        file.write_all(b"\n")?;
        tracing::warn!(
            path = %path.display(),
            "audit log: the last record lacked its newline; added"
        );
        return Ok(None);
    }
    let record = SystemRecord::TailCut {
        bytes: cut.len() as u64,
        seq: super::chain::line_seq(cut),
        line: String::from_utf8_lossy(&cut[..cut.len().min(4096)]).into_owned(),
    };
    file.set_len(len - cut.len() as u64)?;
    tracing::warn!(
        path = %path.display(),
        bytes = cut.len(),
        "audit log: the last line was incomplete (a write the machine did not finish); cut back to the last complete record, and a tail_cut record says so"
    );
    Ok(Some(record))
}

fn tail_line(file: &mut File) -> std::io::Result<Option<Vec<u8>>> {
    let len = file.metadata()?.len();
    // Lines are far shorter than this (statements are cut at 64 KiB).
    let tail_len = len.min(1 << 20);
    file.seek(SeekFrom::Start(len - tail_len))?;
    let mut tail = Vec::with_capacity(tail_len as usize);
    file.take(tail_len).read_to_end(&mut tail)?;
    Ok(last_complete_line(&tail))
}

fn last_complete_line(bytes: &[u8]) -> Option<Vec<u8>> {
    let body = bytes.strip_suffix(b"\n")?;
    let start = memchr::memrchr(b'\n', body).map_or(0, |i| i + 1);
    Some(body[start..].to_vec())
}

fn head_line(file: &mut File) -> std::io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(0))?;
    let mut line = Vec::new();
    std::io::BufReader::new(&mut *file).read_until(b'\n', &mut line)?;
    Ok(line)
}

fn count_lines(file: &mut File) -> std::io::Result<u64> {
    file.seek(SeekFrom::Start(0))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, &mut *file);
    let mut n = 0u64;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(n);
        }
        n += memchr::memchr_iter(b'\n', buf).count() as u64;
        let used = buf.len();
        reader.consume(used);
    }
}

fn parse_ts(ts: &str) -> Option<SystemTime> {
    let t = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).ok()?;
    Some(SystemTime::from(t))
}
