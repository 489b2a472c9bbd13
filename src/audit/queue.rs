//! The append side of the log: records waiting to be chained and written, numbered as they
//! arrive, and what became of every number (written, lost in a failed write, or pending).
//!
//! This is all the append lock protects: taking a number and pushing the record's fields is a
//! few dozen nanoseconds; hashing and writing happen in the writer, outside this lock.

use std::collections::VecDeque;
use std::sync::Arc;

use super::chain::{line_len, LostKinds, SystemRecord};

/// A record waiting for the writer; its number is `Queue::first_seq` + its index.
#[derive(Debug)]
pub enum Entry {
    /// An event's fields, serialised before the lock was taken and copied into the queue's
    /// `data` at `start..start + len` (one buffer for the batch: no allocation per record,
    /// and none freed by the writer's thread for another thread's arena).
    Record { start: usize, len: usize },
    /// Close the active file here; the next file starts with a link record. With
    /// `switch: false` only the link is written (a new, empty file continuing a closed one).
    Rotate { switch: bool },
    /// Stands in for records `from..=` its own number that a failed write lost (`kinds`: what
    /// they were). With `rotate`, a rotation was lost with them and is done first.
    Lost {
        from: u64,
        error: Arc<str>,
        rotate: bool,
        kinds: LostKinds,
    },
    /// Any other record of the log's own.
    System(SystemRecord),
}

impl Entry {
    /// Whether writing this entry starts by closing the active file.
    pub fn switches(&self) -> bool {
        matches!(
            self,
            Entry::Rotate { switch: true } | Entry::Lost { rotate: true, .. }
        )
    }
}

/// What a failed write lost: numbers `from..=to` (records of `kinds`), and with `rotate` a
/// rotation.
#[derive(Debug)]
pub struct Lost {
    pub from: u64,
    pub to: u64,
    pub error: Arc<str>,
    pub rotate: bool,
    pub kinds: LostKinds,
    /// How many of them this failure lost first: a stand-in record that failed again reaches
    /// back over numbers an earlier failure already lost (and counted).
    pub fresh: u64,
}

/// When the queue cuts a file: after this many records or bytes (checked as records arrive).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub max_records: Option<u64>,
    pub max_bytes: Option<u64>,
}

/// What became of a record number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Written,
    Lost(Arc<str>),
    Pending,
}

/// Failed ranges remembered for waiters; older ones are forgotten (and then treated as lost:
/// a waiter that old fails closed rather than being told a guess).
const LOST_MEMORY: usize = 256;

#[derive(Debug, Default)]
pub struct LostRanges {
    ranges: VecDeque<(u64, u64, Arc<str>)>,
    forgotten_to: u64,
}

impl LostRanges {
    pub fn add(&mut self, from: u64, to: u64, error: Arc<str>) {
        if self.ranges.len() == LOST_MEMORY {
            if let Some((_, to, _)) = self.ranges.pop_front() {
                self.forgotten_to = to;
            }
        }
        self.ranges.push_back((from, to, error));
    }

    /// Whether a failed write still remembered lost record `seq` (forgotten ones are not
    /// counted: unlike [`Queue::status`], a caller here must not guess "lost").
    pub fn holds(&self, seq: u64) -> bool {
        self.ranges
            .iter()
            .any(|(from, to, _)| (*from..=*to).contains(&seq))
    }

    fn find(&self, seq: u64) -> Option<Arc<str>> {
        if seq <= self.forgotten_to {
            return Some("an older audit write failed".into());
        }
        self.ranges
            .iter()
            .rev()
            .find(|(from, to, _)| (*from..=*to).contains(&seq))
            .map(|(_, _, e)| e.clone())
    }
}

#[derive(Debug)]
pub struct Queue {
    pub next_seq: u64,
    /// The number of `entries[0]`.
    pub first_seq: u64,
    pub entries: Vec<Entry>,
    /// The fields of the queued records, back to back (see `Entry::Record`).
    pub data: Vec<u8>,
    /// Empty vectors kept for the next batch.
    pub spare: Vec<Entry>,
    pub spare_data: Vec<u8>,
    /// Bytes the queued entries will take as lines (about: log records are estimated).
    pub bytes: usize,
    /// A writer is in flight (it took everything up to `first_seq - 1`).
    pub writing: bool,
    /// An async caller will lead the next write after gathering (see `group::Shared::commit`).
    pub claimed: bool,
    /// Async commits that arrived since the last write took the queue.
    pub arrivals: u32,
    /// Leads left to do without gathering (nobody was there to gather last time).
    pub gather_skip: u32,
    /// Every number up to this one has been written or lost.
    pub settled: u64,
    pub lost: LostRanges,
    pub sync_waiters: u32,
    /// Records and bytes of the file being filled, counting queued entries.
    pub file_records: u64,
    pub file_bytes: u64,
    pub limits: Limits,
    /// Set when the log can no longer be trusted to write (a rotation that could not be undone).
    pub broken: Option<Arc<str>>,
    /// Failed writes so far, and the last one's error.
    pub failures: u64,
    pub last_error: Option<Arc<str>>,
}

/// The largest fields buffer kept for reuse between batches.
const MAX_SPARE_DATA: usize = 4 << 20;

/// Bytes assumed for a record of the log's own when counting towards `max_bytes`.
const SYSTEM_LINE_ESTIMATE: usize = 260;

impl Queue {
    pub fn new(last_seq: u64, limits: Limits, file_records: u64, file_bytes: u64) -> Queue {
        Queue {
            next_seq: last_seq + 1,
            first_seq: last_seq + 1,
            entries: Vec::new(),
            data: Vec::new(),
            spare: Vec::new(),
            spare_data: Vec::new(),
            bytes: 0,
            writing: false,
            claimed: false,
            arrivals: 0,
            gather_skip: 0,
            settled: last_seq,
            lost: LostRanges::default(),
            sync_waiters: 0,
            file_records,
            file_bytes,
            limits,
            broken: None,
            failures: 0,
            last_error: None,
        }
    }

    /// Queues an event's fields; returns its number. Cuts the file after it when a limit is met.
    pub fn push_record(&mut self, fields: &[u8]) -> u64 {
        let seq = self.next_seq;
        let len = line_len(seq, fields.len());
        let start = self.data.len();
        self.data.extend_from_slice(fields);
        self.push(
            Entry::Record {
                start,
                len: fields.len(),
            },
            len,
        );
        if self.due() {
            self.push_rotate();
        }
        seq
    }

    pub fn push_system(&mut self, record: SystemRecord) -> u64 {
        let seq = self.next_seq;
        self.push(Entry::System(record), SYSTEM_LINE_ESTIMATE);
        seq
    }

    /// Cuts the file here (its link record is the next file's first). Returns the link's number,
    /// or `None` when the file holds nothing yet.
    pub fn push_rotate(&mut self) -> Option<u64> {
        if self.file_records == 0 {
            return None;
        }
        let seq = self.next_seq;
        self.push(Entry::Rotate { switch: true }, SYSTEM_LINE_ESTIMATE);
        self.file_records = 1;
        self.file_bytes = SYSTEM_LINE_ESTIMATE as u64;
        Some(seq)
    }

    /// Queues the link record of a new, empty file that continues a closed one (at open).
    pub fn push_link(&mut self) -> u64 {
        let seq = self.next_seq;
        self.push(Entry::Rotate { switch: false }, SYSTEM_LINE_ESTIMATE);
        seq
    }

    fn push(&mut self, entry: Entry, len: usize) {
        self.next_seq += 1;
        self.entries.push(entry);
        self.bytes += len;
        self.file_records += 1;
        self.file_bytes += len as u64;
    }

    fn due(&self) -> bool {
        self.limits
            .max_records
            .is_some_and(|m| self.file_records >= m)
            || self.limits.max_bytes.is_some_and(|m| self.file_bytes >= m)
    }

    pub fn status(&self, seq: u64) -> Status {
        if seq >= self.next_seq {
            // Never handed out: waiting for it would wait forever.
            return Status::Lost(format!("record {seq} was never appended").into());
        }
        if let Some(e) = self.lost.find(seq) {
            return Status::Lost(e);
        }
        if seq <= self.settled {
            return Status::Written;
        }
        match &self.broken {
            Some(e) => Status::Lost(e.clone()),
            None => Status::Pending,
        }
    }

    /// Takes everything queued for a writer: (first number, entries, their fields).
    pub fn take(&mut self) -> (u64, Vec<Entry>, Vec<u8>) {
        let first = self.first_seq;
        let spare = std::mem::take(&mut self.spare);
        let entries = std::mem::replace(&mut self.entries, spare);
        let spare = std::mem::take(&mut self.spare_data);
        let data = std::mem::replace(&mut self.data, spare);
        self.first_seq = self.next_seq;
        self.bytes = 0;
        self.writing = true;
        self.arrivals = 0;
        (first, entries, data)
    }

    /// Drops everything queued (the log is broken: nothing more is written). Returns how many
    /// records were dropped (a stand-in for records lost earlier is not one of them: those were
    /// counted when their own write failed).
    pub fn discard(&mut self) -> u64 {
        let dropped = self
            .entries
            .iter()
            .filter(|e| !matches!(e, Entry::Lost { .. }))
            .count() as u64;
        self.entries.clear();
        self.data.clear();
        self.bytes = 0;
        self.first_seq = self.next_seq;
        dropped
    }

    /// Gives back a written batch's vectors, emptied, for the next batch (a huge one's fields
    /// buffer is let go rather than kept).
    pub fn recycle(&mut self, mut entries: Vec<Entry>, mut data: Vec<u8>) {
        entries.clear();
        data.clear();
        if self.spare.capacity() < entries.capacity() {
            self.spare = entries;
        }
        if self.spare_data.capacity() < data.capacity() && data.capacity() <= MAX_SPARE_DATA {
            self.spare_data = data;
        }
    }

    /// After a failed write: numbers `from..=to` are lost; a record standing in for them takes
    /// number `to` at the head of the queue (the entries after it keep their numbers).
    /// `file_records`/`file_bytes` are what the file being filled really holds.
    pub fn fail(&mut self, lost: Lost, file: (u64, u64)) {
        let Lost {
            from,
            to,
            error,
            rotate,
            kinds,
            ..
        } = lost;
        self.failures += 1;
        self.last_error = Some(error.clone());
        self.lost.add(from, to, error.clone());
        debug_assert_eq!(self.first_seq, to + 1);
        self.first_seq = to;
        self.entries.insert(
            0,
            Entry::Lost {
                from,
                error,
                rotate,
                kinds,
            },
        );
        self.bytes += SYSTEM_LINE_ESTIMATE;
        let queued: u64 = self.entries.len() as u64;
        self.file_records = file.0 + queued;
        self.file_bytes = file.1 + self.bytes as u64;
        if rotate {
            self.file_records = queued;
            self.file_bytes = self.bytes as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_settle_as_written_or_lost() {
        let mut q = Queue::new(10, Limits::default(), 10, 1000);
        assert_eq!(q.push_record(b"a"), 11);
        assert_eq!(q.push_record(b"b"), 12);
        assert_eq!(q.status(10), Status::Written);
        assert_eq!(q.status(11), Status::Pending);
        let (first, entries, data) = q.take();
        assert_eq!((first, entries.len()), (11, 2));
        assert!(matches!(entries[1], Entry::Record { start: 1, len: 1 }));
        assert_eq!(data, b"ab");
        assert_eq!(q.push_record(b"c"), 13);
        q.writing = false;
        q.settled = 10;
        let kinds = LostKinds {
            decisions: 2,
            ..LostKinds::default()
        };
        let lost = Lost {
            from: 11,
            to: 12,
            error: "disk full".into(),
            rotate: false,
            kinds,
            fresh: 2,
        };
        q.fail(lost, (10, 1000));
        assert!(matches!(q.status(11), Status::Lost(_)));
        assert!(matches!(q.status(12), Status::Lost(_)));
        assert_eq!(q.status(13), Status::Pending);
        assert_eq!(
            q.first_seq, 12,
            "the stand-in record takes the last lost number"
        );
        assert!(matches!(q.entries[0], Entry::Lost { from: 11, kinds: k, .. } if k == kinds));
        assert_eq!(q.entries.len(), 2);
        // The log breaks for good: what is queued is dropped. Record 13 is lost now; the
        // stand-in's records were counted when their write failed.
        assert_eq!(q.discard(), 1);
        assert!(q.entries.is_empty());
        assert_eq!(q.discard(), 0);
    }

    #[test]
    fn a_file_is_cut_after_max_records_and_never_when_empty() {
        let limits = Limits {
            max_records: Some(3),
            max_bytes: None,
        };
        let mut q = Queue::new(0, limits, 0, 0);
        assert_eq!(q.push_rotate(), None, "nothing to close");
        for _ in 0..3 {
            q.push_record(b"x");
        }
        assert!(matches!(q.entries[3], Entry::Rotate { switch: true }));
        // The next file holds the link and two records, then is cut again.
        q.push_record(b"x");
        q.push_record(b"x");
        assert!(matches!(q.entries[6], Entry::Rotate { switch: true }));
        assert_eq!(q.next_seq, 8);
    }

    #[test]
    fn forgotten_failures_fail_closed() {
        let mut lost = LostRanges::default();
        for i in 0..(LOST_MEMORY as u64 + 1) {
            lost.add(i * 10, i * 10 + 1, "e".into());
        }
        assert!(lost.find(1).is_some(), "forgotten: treated as lost");
        assert!(lost.find(LOST_MEMORY as u64 * 10).is_some());
        assert!(lost.find(LOST_MEMORY as u64 * 10 + 5).is_none());
        // `holds` says only what it remembers (a statement is not taken for refused on a guess).
        assert!(!lost.holds(1));
        assert!(lost.holds(LOST_MEMORY as u64 * 10 + 1));
        assert!(!lost.holds(LOST_MEMORY as u64 * 10 + 5));
    }
}
