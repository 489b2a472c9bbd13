//! The audit log: append-only JSON lines, one record per statement decision and outcome,
//! hash-chained across rotated files.
//!
//! Each line is `{"seq":N,...fields...,"prev_hash":H(N-1),"hash":H(N)}` where `H(N)` is the
//! SHA-256 of the line up to (not including) `,"hash"` closed with `}` (see `chain`). A
//! statement is forwarded only once its decision record is on disk, so a crash of tollgate
//! cannot leave a forwarded statement unrecorded; if the write fails the statement is refused.
//!
//! Writing is group-committed (`group`): records are numbered and queued under a short lock,
//! and whoever needs them on disk writes everything queued — every session's — with one
//! `write(2)`. Two APIs share it:
//! - async: [`AuditLog::append_deferred`] then [`AuditLog::commit`] (or [`AuditLog::append_commit`]):
//!   the task waits for the write without blocking its worker thread while another task writes;
//! - sync: [`AuditLog::append`] (durable), [`AuditLog::append_deferred`] + [`AuditLog::flush`].
//!
//! Rotation (`[audit.rotate]`, SIGUSR1, the admin API) closes the active file between writes;
//! the next file's first record names it and chains to its last hash. `verify` checks it all.

mod background;
mod chain;
pub mod export;
pub mod files;
mod group;
mod json;
mod maintain;
mod queue;
pub mod read;
mod record;
pub mod sql_text;
pub mod terminal;
pub mod verify;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, OnceLock};

pub use background::{spawn_background, BackgroundError};
pub use chain::{AdminAction, SystemRecord};
pub use read::DECISIONS;
pub use record::{AuditEvent, Decision, EventKind, Protocol};
pub use verify::{verify, Problem, VerifyOptions, VerifyReport};
pub use writer::Rotation;

use group::{Counters, Shared};
use queue::{Limits, Queue};

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
    #[error("audit log {path}: write failed ({error}); the statement was not recorded")]
    WriteFailed { path: PathBuf, error: String },
    #[error("audit log is unavailable after an earlier write failure")]
    Poisoned,
    #[error("audit log {path}: another tollgate is writing it (its lock {lock} is held); two writers would fork the chain")]
    InUse { path: PathBuf, lock: PathBuf },
    #[error("audit log {path}: rotation failed ({error})")]
    RotationFailed { path: PathBuf, error: String },
    #[error("{0}")]
    Background(#[from] BackgroundError),
}

/// How the log writes: rotation limits (the rest of `[audit.rotate]` is the background's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub max_records: Option<u64>,
    pub max_bytes: Option<u64>,
}

impl LogOptions {
    pub fn from_config(c: &crate::config::AuditConfig) -> LogOptions {
        LogOptions {
            max_records: c.rotate.max_records,
            max_bytes: c.rotate.max_bytes,
        }
    }
}

/// Writes and record counts since the log was opened (benchmarks, tests, stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    pub writes: u64,
    pub records: u64,
    /// Records lost to failed writes (`tollgate_audit_records_lost_total`).
    pub lost: u64,
}

/// The shared, thread-safe log. Cloning gives another handle to the same log.
#[derive(Clone)]
pub struct AuditLog {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.shared.path)
            .finish()
    }
}

impl AuditLog {
    /// Opens (or creates, 0600) the log without rotation limits and resumes its chain.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        AuditLog::open_with(path, LogOptions::default())
    }

    /// Opens the log as `[audit]` configures it.
    pub fn open_config(c: &crate::config::AuditConfig) -> Result<AuditLog, AuditError> {
        AuditLog::open_with(&c.file, LogOptions::from_config(c))
    }

    /// Opens (or creates, 0600) the log and resumes its chain from the last record (of the
    /// active file, or of the newest closed file when the active one is empty).
    pub fn open_with(path: &Path, options: LogOptions) -> Result<AuditLog, AuditError> {
        let resumed = writer::Writer::open(path)?;
        let limits = Limits {
            max_records: options.max_records,
            max_bytes: options.max_bytes,
        };
        let mut queue = Queue::new(
            resumed.last_seq,
            limits,
            resumed.file_records,
            resumed.file_bytes,
        );
        if resumed.needs_link {
            queue.push_link();
        }
        if let Some(cut) = resumed.tail_cut {
            queue.push_system(cut);
        }
        Ok(AuditLog {
            shared: Arc::new(Shared {
                path: path.to_path_buf(),
                queue: Mutex::new(queue),
                writer: Mutex::new(resumed.writer),
                written: Condvar::new(),
                notify: tokio::sync::Notify::new(),
                exports: OnceLock::new(),
                closed_tx: OnceLock::new(),
                counters: Counters::new(),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Appends one record durably (with everything queued before it) and returns its sequence
    /// number. Blocks the thread while it or another caller writes. On failure the record is
    /// not part of the chain (a record saying it was lost takes its place).
    pub fn append(&self, event: &AuditEvent) -> Result<u64, AuditError> {
        event.with_fields(|fields| {
            let mut q = self.shared.lock()?;
            let seq = q.push_record(fields);
            self.shared.commit_sync_locked(q, seq)?;
            Ok(seq)
        })
    }

    /// Numbers and queues a record; it is written by the next commit, append or flush (or by
    /// this call once a lot is queued). Never waits for a write in flight.
    pub fn append_deferred(&self, event: &AuditEvent) -> Result<u64, AuditError> {
        // Serialised before the lock: only numbering and copying happen under it.
        event.with_fields(|fields| {
            let mut q = self.shared.lock()?;
            let seq = q.push_record(fields);
            if q.bytes >= DEFERRED_LIMIT && !q.writing {
                drop(self.shared.lead(q)?);
            }
            Ok(seq)
        })
    }

    /// Resolves once record `seq` (and everything numbered before it) is written, coalescing
    /// with every other caller: one write for all. Fails if the write that carried it failed:
    /// the statement must not be forwarded.
    pub async fn commit(&self, seq: u64) -> Result<(), AuditError> {
        self.shared.commit(seq, true).await
    }

    /// `commit` without gathering: the caller writes at once when nothing is in flight
    /// (for comparison in benchmarks).
    #[doc(hidden)]
    pub async fn commit_eager(&self, seq: u64) -> Result<(), AuditError> {
        self.shared.commit(seq, false).await
    }

    /// `append_deferred` + `commit`: the record is on disk when this resolves.
    pub async fn append_commit(&self, event: &AuditEvent) -> Result<u64, AuditError> {
        let seq = self.append_deferred(event)?;
        self.shared.commit(seq, true).await?;
        Ok(seq)
    }

    /// Appends one of the records tollgate writes about itself rather than about a statement
    /// (an admin action) and resolves once it is written (with everything queued before it).
    pub async fn append_system(&self, record: SystemRecord) -> Result<u64, AuditError> {
        let seq = self.shared.lock()?.push_system(record);
        self.shared.commit(seq, true).await?;
        Ok(seq)
    }

    /// Whether the active file was removed or moved while open; if so, a new one is opened under
    /// the name with a `file_replaced` record first. `Some(n)`: records up to `n` went to the
    /// file that is gone. Blocks the thread (a stat of the name; called every second).
    pub fn check_file(&self) -> Result<Option<u64>, AuditError> {
        let upto = {
            let mut w = self
                .shared
                .writer
                .lock()
                .map_err(|_| AuditError::Poisoned)?;
            if !w.replaced() {
                return Ok(None);
            }
            w.reopen().map_err(|source| AuditError::Io {
                path: self.shared.path.clone(),
                source,
            })?;
            w.head().0
        };
        let seq = self
            .shared
            .lock()?
            .push_system(SystemRecord::FileReplaced { written_upto: upto });
        self.shared.commit_sync(seq)?;
        Ok(Some(upto))
    }

    /// Whether record `seq` was lost to a failed write (one of the last 256 failures). A
    /// statement is forwarded only once its decision record is written: one whose record was
    /// lost never ran.
    pub fn lost(&self, seq: u64) -> bool {
        self.shared.lock().is_ok_and(|q| q.lost.holds(seq))
    }

    /// Writes every record queued before this call. Blocks the thread.
    pub fn flush(&self) -> Result<(), AuditError> {
        self.shared.flush_sync()
    }

    /// At shutdown, once the shutdown signal is set: gives the exporters up to `within` to
    /// send what they hold (see [`export::Exports::finish`]).
    pub async fn finish_exports(&self, within: std::time::Duration) {
        if let Some(exports) = self.shared.exports.get() {
            exports.finish(within).await;
        }
    }

    /// Closes the active file now (SIGUSR1, the admin API): queues the cut and writes it.
    /// `Ok(None)` when the active file holds no records yet.
    pub fn rotate(&self) -> Result<Option<Rotation>, AuditError> {
        let link = {
            let mut q = self.shared.lock()?;
            match q.push_rotate() {
                Some(seq) => seq,
                None => return Ok(None),
            }
        };
        self.shared.commit_sync(link)?;
        let w = self
            .shared
            .writer
            .lock()
            .map_err(|_| AuditError::Poisoned)?;
        match w.rotation_at(link) {
            Some(r) => Ok(Some(r)),
            None => Err(AuditError::RotationFailed {
                path: self.shared.path.clone(),
                error: "the file could not be closed (see the rotation_failed record)".into(),
            }),
        }
    }

    /// Rotates when the active file's first record is older than `age` (time-based rotation).
    pub fn rotate_if_older(
        &self,
        age: std::time::Duration,
    ) -> Result<Option<Rotation>, AuditError> {
        let opened = self
            .shared
            .writer
            .lock()
            .map_err(|_| AuditError::Poisoned)?
            .opened();
        if opened.elapsed().unwrap_or_default() < age {
            return Ok(None);
        }
        self.rotate()
    }

    /// The last record written: (seq, hash). The chain head to anchor elsewhere.
    pub fn head(&self) -> Result<(u64, String), AuditError> {
        let w = self
            .shared
            .writer
            .lock()
            .map_err(|_| AuditError::Poisoned)?;
        let (seq, hash) = w.head();
        Ok((seq, String::from_utf8_lossy(&hash).into_owned()))
    }

    pub fn write_stats(&self) -> WriteStats {
        WriteStats {
            writes: self.shared.counters.writes.load(Ordering::Relaxed),
            records: self.shared.counters.records.load(Ordering::Relaxed),
            lost: self.shared.counters.lost.load(Ordering::Relaxed),
        }
    }

    /// The active file and the closed ones, in chain order.
    pub fn files(&self) -> std::io::Result<Vec<files::LogFile>> {
        files::list(&files::Naming::for_active(&self.shared.path))
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

/// Deferred records are written anyway once this many bytes wait.
const DEFERRED_LIMIT: usize = 256 * 1024;

impl Drop for AuditLog {
    fn drop(&mut self) {
        // The last handle writes what is still queued.
        if Arc::strong_count(&self.shared) == 1 {
            let _ = self.flush();
        }
    }
}

#[cfg(test)]
mod tests;
