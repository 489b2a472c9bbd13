//! Exports of written records (syslog, webhook), never on a statement's path: the writer hands
//! each written stretch of lines to every exporter's bounded queue and moves on. A full queue
//! drops (counted in `tollgate_audit_export_dropped_total`), and the exporter's task then writes
//! an `export_gap` record into the log, which stays complete: it is the source of truth.

pub mod syslog;
pub mod webhook;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use metrics::Counter;
use tracing::warn;

use super::chain::{
    line_kind, line_seq, SystemRecord, KIND_EXPORT_GAP, KIND_LOST, KIND_ROTATION_FAILED,
};
use super::group::Shared;
use super::json::member_str;
use crate::policy::glob::Glob;

/// Records a full queue still takes when they are gap records.
const GAP_RESERVE: usize = 16;

/// Whole lines (each ending in '\n') waiting for one exporter.
#[derive(Debug, Clone)]
pub struct Item {
    pub lines: Bytes,
    pub records: usize,
}

impl Item {
    pub fn lines(&self) -> impl Iterator<Item = &[u8]> {
        self.lines
            .split_inclusive(|b| *b == b'\n')
            .map(|l| l.strip_suffix(b"\n").unwrap_or(l))
    }
}

/// Which records an exporter wants.
#[derive(Debug, Clone)]
pub enum Select {
    Everything,
    /// Records with one of these decisions and (when rules are given) a matching rule; and the
    /// log's own alarms (lost records, failed rotations, export gaps).
    Alerts {
        decisions: Vec<String>,
        rules: Vec<Glob>,
    },
}

impl Select {
    pub fn wants(&self, line: &[u8]) -> bool {
        let Select::Alerts { decisions, rules } = self else {
            return true;
        };
        let kind = line_kind(line).unwrap_or_default();
        if [KIND_LOST, KIND_ROTATION_FAILED, KIND_EXPORT_GAP]
            .iter()
            .any(|k| k.as_bytes() == kind)
        {
            return true;
        }
        let Some(decision) = member_str(line, "decision") else {
            return false;
        };
        if !decisions.contains(&decision) {
            return false;
        }
        rules.is_empty()
            || member_str(line, "rule").is_some_and(|r| rules.iter().any(|g| g.matches(&r)))
    }
}

/// What was dropped since the last gap record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops {
    pub records: u64,
    /// Dropped records that were not themselves gap records: only these call for a new gap
    /// record (else a receiver that stays down would get a gap record about gap records forever).
    pub news: u64,
    pub first_seq: u64,
    pub last_seq: u64,
}

struct State {
    items: VecDeque<Item>,
    records: usize,
    drops: Drops,
}

/// One exporter's bounded queue.
pub struct Sink {
    pub name: String,
    select: Select,
    capacity: usize,
    state: Mutex<State>,
    wake: tokio::sync::Notify,
    dropped: Counter,
    pub sent: Counter,
    pub errors: Counter,
}

impl Sink {
    pub fn new(name: &str, select: Select, capacity: usize) -> Arc<Sink> {
        let label = name.to_string();
        Arc::new(Sink {
            name: name.to_string(),
            select,
            capacity,
            state: Mutex::new(State {
                items: VecDeque::new(),
                records: 0,
                drops: Drops::default(),
            }),
            wake: tokio::sync::Notify::new(),
            dropped: metrics::counter!("tollgate_audit_export_dropped_total", "exporter" => label.clone()),
            sent: metrics::counter!("tollgate_audit_export_sent_total", "exporter" => label.clone()),
            errors: metrics::counter!("tollgate_audit_export_errors_total", "exporter" => label),
        })
    }

    /// Takes written lines `first..=last` (never blocks; drops when full).
    pub fn offer(&self, bytes: &[u8], first: u64, last: u64) {
        match self.select {
            Select::Everything => self.push(
                Bytes::copy_from_slice(bytes),
                (last - first + 1) as usize,
                first,
                last,
            ),
            Select::Alerts { .. } => {
                for line in bytes.split_inclusive(|b| *b == b'\n') {
                    if self.select.wants(line) {
                        let seq = line_seq(line).unwrap_or(first);
                        self.push(Bytes::copy_from_slice(line), 1, seq, seq);
                    }
                }
            }
        }
    }

    fn push(&self, lines: Bytes, records: usize, first: u64, last: u64) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        if st.records + records <= self.capacity {
            st.records += records;
            st.items.push_back(Item { lines, records });
            drop(st);
            self.wake.notify_one();
            return;
        }
        // Full: drop, except the log's gap records (within a small reserve), so that the
        // receiver learns what it missed once it catches up.
        let mut kept = Vec::new();
        let (mut kept_n, mut gaps) = (0usize, 0usize);
        for line in lines.split_inclusive(|b| *b == b'\n') {
            if line_kind(line) == Some(KIND_EXPORT_GAP.as_bytes()) {
                gaps += 1;
                if st.records + kept_n < self.capacity + GAP_RESERVE {
                    kept.extend_from_slice(line);
                    kept_n += 1;
                }
            }
        }
        let dropped = records - kept_n;
        if dropped > 0 {
            let d = &mut st.drops;
            if d.records == 0 {
                d.first_seq = first;
            }
            d.last_seq = last;
            d.records += dropped as u64;
            d.news += (records - gaps) as u64;
            self.dropped.increment(dropped as u64);
        }
        if kept_n > 0 {
            st.records += kept_n;
            st.items.push_back(Item {
                lines: Bytes::from(kept),
                records: kept_n,
            });
        }
        drop(st);
        if kept_n > 0 {
            self.wake.notify_one();
        }
    }

    /// The next item, waiting up to `wait` for one.
    pub async fn next(&self, wait: Duration) -> Option<Item> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(item) = self.pop() {
                return Some(item);
            }
            if tokio::time::timeout_at(deadline, self.wake.notified())
                .await
                .is_err()
            {
                return self.pop();
            }
        }
    }

    pub fn pop(&self) -> Option<Item> {
        let mut st = self.state.lock().ok()?;
        let item = st.items.pop_front()?;
        st.records -= item.records;
        Some(item)
    }

    /// Records waiting.
    pub fn queued(&self) -> usize {
        self.state.lock().map(|s| s.records).unwrap_or(0)
    }

    /// What was dropped since the last call, if anything new.
    pub fn take_drops(&self) -> Option<Drops> {
        let mut st = self.state.lock().ok()?;
        (st.drops.news > 0).then(|| std::mem::take(&mut st.drops))
    }
}

/// Every exporter's queue; the writer offers each written stretch to all of them.
pub struct Exports {
    pub sinks: Vec<Arc<Sink>>,
    /// The exporters' tasks, awaited at shutdown so that what was queued (the `stop` record
    /// last) is sent before the process ends.
    pub tasks: Mutex<Vec<(String, tokio::task::JoinHandle<()>)>>,
}

impl Exports {
    pub fn new(sinks: Vec<Arc<Sink>>) -> Exports {
        Exports {
            sinks,
            tasks: Mutex::new(Vec::new()),
        }
    }

    pub fn offer(&self, bytes: &[u8], first: u64, last: u64) {
        for s in &self.sinks {
            s.offer(bytes, first, last);
        }
    }

    /// Waits, up to `within` in all, for the exporters to send what they hold once the
    /// gateway's shutdown signal is set; an exporter still busy then is stopped and what it
    /// did not send is logged (the audit log has it).
    pub async fn finish(&self, within: Duration) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let until = tokio::time::Instant::now() + within;
        for (name, mut task) in tasks {
            if tokio::time::timeout_at(until, &mut task).await.is_err() {
                task.abort();
                let unsent = self
                    .sinks
                    .iter()
                    .find(|s| s.name == name)
                    .map_or(0, |s| s.queued());
                warn!(
                    exporter = %name,
                    unsent,
                    ?within,
                    "audit export stopped before sending everything (the log has the records)"
                );
            }
        }
    }
}

/// Writes an `export_gap` record into the log when `sink` dropped records. Called by each
/// exporter's task between sends (also while its receiver is down).
pub fn record_gap(log: &Weak<Shared>, sink: &Sink) {
    let Some(drops) = sink.take_drops() else {
        return;
    };
    warn!(
        exporter = %sink.name,
        dropped = drops.records,
        first_seq = drops.first_seq,
        last_seq = drops.last_seq,
        "audit export queue full: records dropped from the export (the log has them)"
    );
    let Some(shared) = log.upgrade() else {
        return;
    };
    let record = SystemRecord::ExportGap {
        exporter: sink.name.clone(),
        dropped: drops.records,
        first_seq: drops.first_seq,
        last_seq: drops.last_seq,
    };
    let pushed = shared.lock().map(|mut q| q.push_system(record));
    if pushed.is_err() {
        warn!(exporter = %sink.name, "the audit log is unavailable: no gap record written");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, kind: &str, decision: &str, rule: Option<&str>) -> Vec<u8> {
        let rule = rule.map_or("null".to_string(), |r| format!("\"{r}\""));
        format!("{{\"seq\":{seq},\"ts\":\"t\",\"kind\":\"{kind}\",\"agent\":\"a\",\"decision\":\"{decision}\",\"rule\":{rule},\"hash\":\"h\"}}\n").into_bytes()
    }

    #[test]
    fn alerts_pick_decisions_rules_and_alarms() {
        let s = Select::Alerts {
            decisions: vec!["blocked".into(), "would_block".into()],
            rules: vec![Glob::new("policies/analyst.toml*")],
        };
        assert!(s.wants(&line(
            1,
            "decision",
            "blocked",
            Some("policies/analyst.toml: table")
        )));
        assert!(!s.wants(&line(1, "decision", "blocked", Some("builtin: fastpath"))));
        assert!(!s.wants(&line(
            1,
            "decision",
            "allowed",
            Some("policies/analyst.toml")
        )));
        assert!(!s.wants(&line(1, "decision", "blocked", None)));
        assert!(s.wants(b"{\"seq\":9,\"ts\":\"t\",\"kind\":\"lost\",\"lost_from\":3}\n"));
        let any_rule = Select::Alerts {
            decisions: vec!["blocked".into()],
            rules: vec![],
        };
        assert!(any_rule.wants(&line(1, "decision", "blocked", None)));
    }

    #[test]
    fn a_full_queue_drops_and_counts_what_it_dropped() {
        let sink = Sink::new("test", Select::Everything, 3);
        let two = [
            line(1, "decision", "allowed", None),
            line(2, "decision", "allowed", None),
        ]
        .concat();
        sink.offer(&two, 1, 2);
        sink.offer(&two, 3, 4); // 2 + 2 > 3: dropped
        sink.offer(&line(5, "decision", "allowed", None), 5, 5);
        assert_eq!(sink.queued(), 3);
        let d = sink.take_drops().unwrap();
        let expected = Drops {
            records: 2,
            news: 2,
            first_seq: 3,
            last_seq: 4,
        };
        assert_eq!(d, expected);
        assert_eq!(sink.take_drops(), None);
        // A gap record gets in anyway (it tells the receiver what it missed), within a reserve.
        let gap = b"{\"seq\":6,\"ts\":\"t\",\"kind\":\"export_gap\",\"exporter\":\"test\"}\n";
        for seq in 0..GAP_RESERVE as u64 {
            sink.offer(gap, 6 + seq, 6 + seq);
        }
        assert_eq!(sink.queued(), 3 + GAP_RESERVE);
        assert_eq!(sink.take_drops(), None);
        // Beyond the reserve a gap record is dropped, and calls for no gap record of its own.
        sink.offer(gap, 99, 99);
        assert_eq!(sink.take_drops(), None);
        let first = sink.pop().unwrap();
        assert_eq!(first.records, 2);
        assert_eq!(first.lines().count(), 2);
    }
}
