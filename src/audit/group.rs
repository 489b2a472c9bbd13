//! Group commit: whoever needs records on disk and finds no write in flight becomes the leader
//! and writes everything queued (its own records and every other session's) with one
//! `write(2)`; callers that arrive while a write is in flight wait for it and, if their records
//! were not in it, lead the next one. The append lock is never held during a write.
//!
//! Waiting works for both kinds of caller: async tasks park on a `Notify`, threads (the sync
//! API) on a `Condvar`; the leader wakes only the kinds that wait.

use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

use metrics::Counter;
use tracing::{error, warn};

use super::export::Exports;
use super::queue::{Queue, Status};
use super::writer::{Rotation, Writer};
use super::AuditError;

/// Counters of the write side (handles taken once: nothing is looked up per write).
pub struct Counters {
    pub writes: std::sync::atomic::AtomicU64,
    pub records: std::sync::atomic::AtomicU64,
    /// What `records_lost` counted, readable without a metrics recorder (tests, stats).
    pub lost: std::sync::atomic::AtomicU64,
    write_failures: Counter,
    records_lost: Counter,
    rotations: Counter,
    rotation_failures: Counter,
}

impl Counters {
    pub fn new() -> Counters {
        Counters {
            writes: Default::default(),
            records: Default::default(),
            lost: Default::default(),
            write_failures: metrics::counter!("tollgate_audit_write_failures_total"),
            records_lost: metrics::counter!("tollgate_audit_records_lost_total"),
            rotations: metrics::counter!("tollgate_audit_rotations_total", "result" => "ok"),
            rotation_failures: metrics::counter!("tollgate_audit_rotations_total", "result" => "error"),
        }
    }
}

/// Leads without gathering after a gathering yield found no other session.
const GATHER_BACKOFF: u32 = 63;

pub struct Shared {
    pub path: std::path::PathBuf,
    pub queue: Mutex<Queue>,
    pub writer: Mutex<Writer>,
    /// Threads waiting for a write to finish.
    pub written: Condvar,
    /// Tasks waiting for a write to finish.
    pub notify: tokio::sync::Notify,
    pub exports: OnceLock<Exports>,
    /// Told about every file a rotation closed (compression and retention).
    pub closed_tx: OnceLock<tokio::sync::mpsc::UnboundedSender<Rotation>>,
    pub counters: Counters,
}

impl Shared {
    pub fn lock(&self) -> Result<MutexGuard<'_, Queue>, AuditError> {
        self.queue.lock().map_err(|_| AuditError::Poisoned)
    }

    /// Counts records that will never be written.
    fn count_lost(&self, records: u64) {
        self.counters.records_lost.increment(records);
        self.counters
            .lost
            .fetch_add(records, std::sync::atomic::Ordering::Relaxed);
    }

    fn lost(&self, error: std::sync::Arc<str>) -> AuditError {
        AuditError::WriteFailed {
            path: self.path.clone(),
            error: error.to_string(),
        }
    }

    /// Writes everything queued; the caller holds the queue and no write is in flight.
    /// Returns the queue again (locked), with the outcome settled and waiters woken.
    pub fn lead<'a>(
        &'a self,
        mut q: MutexGuard<'a, Queue>,
    ) -> Result<MutexGuard<'a, Queue>, AuditError> {
        debug_assert!(!q.writing);
        if q.broken.is_some() {
            // The file cannot be trusted any more (see `Queue::broken`): nothing is written,
            // and what is queued is dropped (its waiters fail on the broken status).
            let dropped = q.discard();
            self.count_lost(dropped);
            return Ok(q);
        }
        if q.entries.is_empty() {
            return Ok(q);
        }
        let (first, entries, data) = q.take();
        drop(q);
        let mut in_flight = InFlight(Some(self));
        let mut closed = Vec::new();
        let outcome = {
            let mut w = self.writer.lock().map_err(|_| AuditError::Poisoned)?;
            let exports = self.exports.get();
            let counters = &self.counters;
            let mut sink = |bytes: &[u8], from: u64, to: u64| {
                counters
                    .writes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                counters
                    .records
                    .fetch_add(to - from + 1, std::sync::atomic::Ordering::Relaxed);
                if let Some(x) = exports {
                    x.offer(bytes, from, to);
                }
            };
            let outcome = w.write_batch(first, &entries, &data, &mut sink, &mut closed);
            (outcome, w.file_size())
        };
        for r in closed {
            match r {
                Ok(r) => {
                    self.counters.rotations.increment(1);
                    if let Some(tx) = self.closed_tx.get() {
                        let _ = tx.send(r);
                    }
                }
                Err(e) => {
                    self.counters.rotation_failures.increment(1);
                    warn!(path = %self.path.display(), error = %e, "audit rotation failed; the file goes on");
                }
            }
        }
        let mut q = self.lock()?;
        q.writing = false;
        in_flight.0 = None;
        // The batch's vectors are reused for the next one (no allocation per write).
        q.recycle(entries, data);
        match outcome {
            (Ok(last), _) => q.settled = last,
            (Err(f), file) => {
                let lost = f.lost;
                self.counters.write_failures.increment(1);
                // Each record once: `lost.from..=lost.to` also spans what a failed stand-in
                // record stood for, counted when its own write failed.
                self.count_lost(lost.fresh);
                error!(
                    path = %self.path.display(),
                    error = %lost.error,
                    lost_from = lost.from,
                    lost_to = lost.to,
                    decisions = lost.kinds.decisions,
                    outcomes = lost.kinds.outcomes,
                    "audit write failed: the statements whose decision records were in it are refused; lost outcomes belong to statements that ran"
                );
                q.settled = f.written_upto;
                if f.broken {
                    q.failures += 1;
                    q.last_error = Some(lost.error.clone());
                    let to = q.next_seq - 1;
                    q.lost.add(lost.from, to, lost.error.clone());
                    q.broken = Some(lost.error);
                    // Queued behind the failed batch: never written either.
                    let dropped = q.discard();
                    self.count_lost(dropped);
                } else {
                    q.fail(lost, file);
                }
            }
        }
        if q.sync_waiters > 0 {
            self.written.notify_all();
        }
        self.notify.notify_waiters();
        Ok(q)
    }

    /// Blocks the thread until `seq` is written (leading writes as needed).
    pub fn commit_sync(&self, seq: u64) -> Result<(), AuditError> {
        self.commit_sync_locked(self.lock()?, seq)
    }

    /// `commit_sync` for a caller that holds the queue already (one lock for append + commit).
    pub fn commit_sync_locked<'a>(
        &'a self,
        mut q: MutexGuard<'a, Queue>,
        seq: u64,
    ) -> Result<(), AuditError> {
        loop {
            match q.status(seq) {
                Status::Written => return Ok(()),
                Status::Lost(e) => return Err(self.lost(e)),
                Status::Pending => {}
            }
            if !q.writing {
                q = self.lead(q)?;
                continue;
            }
            q.sync_waiters += 1;
            q = self.written.wait(q).map_err(|_| AuditError::Poisoned)?;
            q.sync_waiters -= 1;
        }
    }

    /// Resolves once `seq` is written; fails if it was lost. Never holds the lock across an
    /// await. With `gather`, a caller that would lead first yields once (claiming the lead, so
    /// callers arriving meanwhile wait for it): the other sessions ready on its worker thread
    /// queue their records too, and one write carries them all. When a gathering yield found
    /// nobody to gather (one session), the next `GATHER_BACKOFF` leads skip it: a lone session
    /// does not pay the yield on every statement.
    pub async fn commit(&self, seq: u64, gather: bool) -> Result<(), AuditError> {
        let mut arrived = false;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            let claimed = {
                let mut q = self.lock()?;
                loop {
                    match q.status(seq) {
                        Status::Written => return Ok(()),
                        Status::Lost(e) => return Err(self.lost(e)),
                        Status::Pending => {}
                    }
                    if !arrived {
                        q.arrivals += 1;
                        arrived = true;
                    }
                    if q.writing || q.claimed {
                        // Registered before the lock is released: the wake-up cannot be missed.
                        notified.as_mut().enable();
                        break false;
                    }
                    if gather && q.gather_skip == 0 {
                        q.claimed = true;
                        break true;
                    }
                    if gather {
                        q.gather_skip -= 1;
                    }
                    q = self.lead(q)?;
                }
            };
            if !claimed {
                notified.await;
                continue;
            }
            let claim = Claim(Some(self));
            tokio::task::yield_now().await;
            let mut q = claim.release()?;
            if q.writing {
                // A thread (the sync API) leads meanwhile; wait for it like any follower.
                drop(q);
                self.notify.notify_waiters();
                continue;
            }
            match q.status(seq) {
                Status::Pending => {
                    if q.arrivals <= 1 {
                        q.gather_skip = GATHER_BACKOFF;
                    }
                    drop(self.lead(q)?)
                }
                _ => {
                    drop(q);
                    self.notify.notify_waiters();
                }
            }
        }
    }

    /// Writes everything queued before this call (the periodic flush and `flush()`); fails if a
    /// write failed meanwhile (the records it lost are replaced by a record saying so, written
    /// by the next write).
    pub fn flush_sync(&self) -> Result<(), AuditError> {
        let mut q = self.lock()?;
        let target = q.next_seq - 1;
        let failures = q.failures;
        loop {
            if q.failures != failures {
                let e = q
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "write failed".into());
                return Err(self.lost(e));
            }
            if let Some(e) = &q.broken {
                return Err(self.lost(e.clone()));
            }
            let done = q.entries.is_empty() || q.first_seq > target;
            if !q.writing && done {
                return Ok(());
            }
            if !q.writing {
                q = self.lead(q)?;
                continue;
            }
            q.sync_waiters += 1;
            q = self.written.wait(q).map_err(|_| AuditError::Poisoned)?;
            q.sync_waiters -= 1;
        }
    }

    /// Called by `Claim` when the claimer goes away without leading (its task was dropped).
    fn unclaim(&self) {
        if let Ok(mut q) = self.queue.lock() {
            q.claimed = false;
        }
        self.notify.notify_waiters();
    }

    pub fn warn_if_broken(&self) {
        if let Ok(q) = self.queue.lock() {
            if let Some(e) = &q.broken {
                warn!(error = %e, "the audit log is broken: every statement is refused until restart");
            }
        }
    }
}

/// The claim to lead the next write, held across the gathering yield; released by `release`,
/// or on drop (a cancelled commit) so that the followers do not wait forever.
struct Claim<'a>(Option<&'a Shared>);

impl<'a> Claim<'a> {
    fn release(mut self) -> Result<MutexGuard<'a, Queue>, AuditError> {
        let shared = self.0.take().expect("released once");
        let mut q = shared.lock()?;
        q.claimed = false;
        Ok(q)
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            shared.unclaim();
        }
    }
}

/// A write in flight: if the leader leaves `lead` without settling it (a panic, a poisoned
/// lock), the log is marked broken and every waiter is woken to fail, rather than waiting for
/// a write that will never finish.
struct InFlight<'a>(Option<&'a Shared>);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let Some(shared) = self.0.take() else {
            return;
        };
        let mut q = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.writing = false;
        q.broken = Some("an internal error interrupted an audit write".into());
        drop(q);
        shared.written.notify_all();
        shared.notify.notify_waiters();
    }
}
