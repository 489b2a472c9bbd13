//! The audit log: append-only JSON lines, one record per statement decision and outcome, hash-chained.
//!
//! Each line is `{...fields..., "prev_hash": H(n-1), "hash": H(n)}` where `H(n)` is the SHA-256 of
//! the line up to (not including) `,"hash"` closed with `}`. A line is written with one `write(2)`
//! before the statement is forwarded, so a crash of tollgate cannot leave a forwarded statement
//! unrecorded; if the write fails the statement is not run (the caller refuses it).
//!
//! Outcome records (`append_deferred`) are chained at once but written together with the next
//! durable record, or by `flush` (the gateway calls it every 100 ms): one write per statement
//! instead of two. A crash can lose an outcome, never a decision.

mod record;
mod verify;

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

pub use record::{AuditEvent, Decision, EventKind, Protocol};
pub use verify::{verify_file, VerifyReport};

/// The hash that precedes the first record of a log.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit log {path}: last record is unreadable ({reason}); refusing to extend a broken chain (move the file aside or run `tollgate audit verify`)")]
    BrokenTail { path: PathBuf, reason: String },
    #[error("audit log is unavailable after an earlier write failure")]
    Poisoned,
}

struct ChainState {
    file: File,
    /// Length of the file up to the last complete record; a failed write is truncated back to it.
    len: u64,
    seq: u64,
    prev_hash: String,
    /// Chained lines not yet written (deferred outcome records), oldest first.
    pending: Vec<u8>,
}

/// Deferred lines are written anyway once this many bytes wait.
const PENDING_LIMIT: usize = 64 * 1024;

/// The shared, thread-safe writer. Appends are serialised; each is one line, one write.
pub struct AuditLog {
    path: PathBuf,
    state: Mutex<ChainState>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .finish()
    }
}

impl AuditLog {
    /// Opens (or creates, 0600) the log and resumes its chain from the last record.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| AuditError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let (seq, prev_hash, len) = resume_chain(&mut file).map_err(|reason| match reason {
            Resume::Io(e) => io(e),
            Resume::Broken(reason) => AuditError::BrokenTail {
                path: path.to_path_buf(),
                reason,
            },
        })?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            state: Mutex::new(ChainState {
                file,
                len,
                seq,
                prev_hash,
                pending: Vec::new(),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record durably (with any deferred ones before it) and returns its sequence
    /// number. On failure nothing partial remains and the record is not part of the chain.
    pub fn append(&self, event: &AuditEvent) -> Result<u64, AuditError> {
        let fields = event.fields_json();
        let mut state = self.state.lock().map_err(|_| AuditError::Poisoned)?;
        let (seq, hash, line) = chain_line(&state, &fields);
        let mut buf = std::mem::take(&mut state.pending);
        let deferred = buf.len();
        buf.extend_from_slice(&line);
        if let Err(e) = write_all_or_cut(&mut state, &buf) {
            buf.truncate(deferred);
            state.pending = buf;
            return Err(AuditError::Io {
                path: self.path.clone(),
                source: e,
            });
        }
        state.seq = seq;
        state.prev_hash = hash;
        buf.clear();
        state.pending = buf;
        Ok(seq)
    }

    /// Chains a record now and writes it with the next durable record or flush.
    pub fn append_deferred(&self, event: &AuditEvent) -> Result<u64, AuditError> {
        let fields = event.fields_json();
        let mut state = self.state.lock().map_err(|_| AuditError::Poisoned)?;
        let (seq, hash, line) = chain_line(&state, &fields);
        state.pending.extend_from_slice(&line);
        state.seq = seq;
        state.prev_hash = hash;
        if state.pending.len() >= PENDING_LIMIT {
            self.flush_locked(&mut state)?;
        }
        Ok(seq)
    }

    /// Writes deferred records, if any.
    pub fn flush(&self) -> Result<(), AuditError> {
        let mut state = self.state.lock().map_err(|_| AuditError::Poisoned)?;
        self.flush_locked(&mut state)
    }

    fn flush_locked(&self, state: &mut ChainState) -> Result<(), AuditError> {
        if state.pending.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut state.pending);
        match write_all_or_cut(state, &buf) {
            Ok(()) => Ok(()),
            Err(e) => {
                state.pending = buf;
                Err(AuditError::Io {
                    path: self.path.clone(),
                    source: e,
                })
            }
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// The next line of the chain for `event`: (seq, hash, line). The state is not changed.
/// `fields` is the event's [`AuditEvent::fields_json`], serialised before the lock was taken.
fn chain_line(state: &ChainState, fields: &[u8]) -> (u64, String, Vec<u8>) {
    use std::io::Write as _;
    let seq = state.seq + 1;
    let mut line = Vec::with_capacity(fields.len() + 192);
    let _ = write!(line, "{{\"seq\":{seq},");
    line.extend_from_slice(fields);
    line.extend_from_slice(b",\"prev_hash\":\"");
    line.extend_from_slice(state.prev_hash.as_bytes());
    line.extend_from_slice(b"\"}");
    let digest = Sha256::digest(&line);
    line.pop();
    let mut hex = [0u8; 64];
    hex_lower(&digest, &mut hex);
    line.extend_from_slice(b",\"hash\":\"");
    line.extend_from_slice(&hex);
    line.extend_from_slice(b"\"}\n");
    let hash = std::str::from_utf8(&hex).expect("hex digits").to_owned();
    (seq, hash, line)
}

fn hex_lower(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 15)];
    }
}

/// One `write(2)` of whole lines; on failure the file is cut back to its last complete record so
/// the chain stays verifiable once the disk recovers.
fn write_all_or_cut(state: &mut ChainState, buf: &[u8]) -> std::io::Result<()> {
    match state.file.write_all(buf) {
        Ok(()) => {
            state.len += buf.len() as u64;
            Ok(())
        }
        Err(e) => {
            let len = state.len;
            let _ = state.file.set_len(len);
            metrics::counter!("tollgate_audit_write_failures_total").increment(1);
            Err(e)
        }
    }
}

enum Resume {
    Io(std::io::Error),
    Broken(String),
}

/// Reads the last line of the file to continue its chain: (last seq, last hash, file length).
fn resume_chain(file: &mut File) -> Result<(u64, String, u64), Resume> {
    let len = file.metadata().map_err(Resume::Io)?.len();
    if len == 0 {
        return Ok((0, GENESIS_HASH.to_string(), 0));
    }
    // Scan backwards in chunks for the start of the last line.
    let tail_len = len.min(1 << 20);
    file.seek(SeekFrom::Start(len - tail_len))
        .map_err(Resume::Io)?;
    let mut reader = BufReader::new(&mut *file);
    let mut last = None;
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(Resume::Io)?;
        if n == 0 {
            break;
        }
        if !line.trim().is_empty() {
            last = Some(line.clone());
        }
    }
    let last = last.ok_or_else(|| Resume::Broken("no complete record at the end".into()))?;
    if !last.ends_with('\n') {
        return Err(Resume::Broken("the last line is incomplete".into()));
    }
    let rec = verify::parse_line(last.trim_end()).map_err(Resume::Broken)?;
    Ok((rec.seq, rec.hash, len))
}

#[cfg(test)]
mod tests {
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
        let report = verify_file(&path).unwrap();
        assert_eq!(report.records, 3);
        assert!(report.first_broken.is_none(), "{report:?}");
        let text = std::fs::read_to_string(&path).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["prev_hash"], GENESIS_HASH);
        assert_eq!(first["decision"], "allowed");
        assert_eq!(first["statement"], "SELECT 1");
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
        let report = verify_file(&path).unwrap();
        let broken = report.first_broken.unwrap();
        assert_eq!(broken.line, 3);
        assert!(broken.reason.contains("hash"), "{}", broken.reason);
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
        let broken = verify_file(&path).unwrap().first_broken.unwrap();
        assert_eq!(broken.line, 2);
    }

    #[test]
    fn refuses_to_extend_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        AuditLog::open(&path)
            .unwrap()
            .append(&event("SELECT 1"))
            .unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":2,\"ts\"").unwrap();
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
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().lines().count(),
            1,
            "deferred: not yet written"
        );
        assert_eq!(log.append(&event("SELECT 2")).unwrap(), 3);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
        log.append_deferred(&event("outcome 2")).unwrap();
        log.flush().unwrap();
        drop(log);
        let report = verify_file(&path).unwrap();
        assert_eq!((report.records, report.first_broken), (4, None));
    }

    #[test]
    fn write_failure_is_an_error_not_a_silent_drop() {
        // /dev/full accepts the open and fails every write with ENOSPC: a full disk.
        let log = match AuditLog::open(Path::new("/dev/full")) {
            Ok(l) => l,
            Err(_) => return, // not available in this sandbox
        };
        assert!(matches!(
            log.append(&event("SELECT 1")),
            Err(AuditError::Io { .. })
        ));
    }
}
