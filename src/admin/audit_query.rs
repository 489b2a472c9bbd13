//! `GET /api/v1/audit?agent=&decision=&since=&before=&limit=`: recent audit records, newest
//! first, read backwards from the end of the JSON-lines log (so a large log costs only the
//! records returned). Paging: pass the response's `next_before` as `before`.

use std::io::{Read, Seek, SeekFrom};

use axum::extract::Query;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Viewer;
use super::error::{bad_query, ApiError};
use super::State;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
const DECISIONS: [&str; 6] = [
    "allowed",
    "masked",
    "rewritten",
    "blocked",
    "would_block",
    "error",
];

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    agent: Option<String>,
    decision: Option<String>,
    /// RFC 3339 time: only records at or after it.
    since: Option<String>,
    /// Only records with `seq` below this (the previous page's `next_before`).
    before: Option<u64>,
    limit: Option<usize>,
}

/// The filters, checked.
struct Filter {
    agent: Option<String>,
    decision: Option<String>,
    since: Option<time::OffsetDateTime>,
    before: Option<u64>,
    limit: usize,
}

impl Filter {
    fn from_query(q: AuditQuery) -> Result<Filter, ApiError> {
        if let Some(d) = &q.decision {
            if !DECISIONS.contains(&d.as_str()) {
                return Err(ApiError::BadRequest(format!(
                    "unknown decision (known: {})",
                    DECISIONS.join(", ")
                )));
            }
        }
        let since = match &q.since {
            None => None,
            Some(s) => Some(
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| {
                        ApiError::BadRequest(
                            "since must be an RFC 3339 time, e.g. 2026-11-23T12:00:00Z".into(),
                        )
                    })?,
            ),
        };
        let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(ApiError::BadRequest(format!(
                "limit must be 1..={MAX_LIMIT}"
            )));
        }
        Ok(Filter {
            agent: q.agent,
            decision: q.decision,
            since,
            before: q.before,
            limit,
        })
    }

    /// `Some(true)` keep, `Some(false)` skip, `None` stop (older than `since`).
    fn judge(&self, rec: &Value) -> Option<bool> {
        if let Some(since) = self.since {
            let ts = rec["ts"].as_str().and_then(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            });
            if ts.is_some_and(|t| t < since) {
                return None;
            }
        }
        let seq = rec["seq"].as_u64().unwrap_or(0);
        Some(
            self.before.map_or(true, |b| seq < b)
                && self.agent.as_deref().map_or(true, |a| rec["agent"] == a)
                && self
                    .decision
                    .as_deref()
                    .map_or(true, |d| rec["decision"] == d),
        )
    }
}

pub async fn audit(
    _: Viewer,
    axum::extract::State(state): axum::extract::State<State>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(bad_query)?;
    let filter = Filter::from_query(q)?;
    // Deferred outcome records first, so the answer is current.
    let _ = state.gw.core.audit.flush();
    let path = state.gw.core.audit.path().to_path_buf();
    let found = tokio::task::spawn_blocking(move || scan(&path, &filter))
        .await
        .map_err(|e| ApiError::Internal(format!("audit read failed: {e}")))?
        .map_err(|e| ApiError::Internal(format!("audit log cannot be read: {e}")))?;
    Ok(Json(found))
}

/// Reads the log backwards, newest first, until `limit` records matched.
fn scan(path: &std::path::Path, filter: &Filter) -> std::io::Result<Value> {
    let mut records = Vec::new();
    let mut more = false;
    for line in ReverseLines::open(path)? {
        let line = line?;
        let Ok(rec) = serde_json::from_slice::<Value>(&line) else {
            continue; // a torn last line while a write is in progress
        };
        match filter.judge(&rec) {
            None => break,
            Some(false) => {}
            Some(true) if records.len() == filter.limit => {
                more = true;
                break;
            }
            Some(true) => records.push(rec),
        }
    }
    let next_before = if more {
        records.last().and_then(|r| r["seq"].as_u64())
    } else {
        None
    };
    Ok(json!({"records": records, "next_before": next_before}))
}

/// Lines of a file from the last to the first, read in 64 KiB blocks from the end.
struct ReverseLines {
    file: std::fs::File,
    /// Bytes before `pos` are unread.
    pos: u64,
    /// Read but not yet returned: everything after the last line break seen.
    tail: Vec<u8>,
    done: bool,
}

const BLOCK: u64 = 64 * 1024;

impl ReverseLines {
    fn open(path: &std::path::Path) -> std::io::Result<ReverseLines> {
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
            if let Some(nl) = self.tail[..end].iter().rposition(|b| *b == b'\n') {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        std::fs::write(&path, "").unwrap();
        assert_eq!(ReverseLines::open(&path).unwrap().count(), 0);
        std::fs::write(&path, "only").unwrap();
        assert_eq!(ReverseLines::open(&path).unwrap().count(), 1);
    }

    #[test]
    fn filters_and_pages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut text = String::new();
        for seq in 1..=10u64 {
            let agent = if seq % 2 == 0 { "analyst" } else { "writer" };
            let decision = if seq % 3 == 0 { "blocked" } else { "allowed" };
            text.push_str(&format!(
                "{{\"seq\":{seq},\"ts\":\"2026-11-23T12:00:{seq:02}.000000Z\",\"agent\":\"{agent}\",\"decision\":\"{decision}\"}}\n"
            ));
        }
        std::fs::write(&path, text).unwrap();
        let q = |agent: Option<&str>, since: Option<&str>, before, limit| {
            let f = Filter::from_query(AuditQuery {
                agent: agent.map(str::to_owned),
                decision: None,
                since: since.map(str::to_owned),
                before,
                limit: Some(limit),
            })
            .unwrap();
            scan(&path, &f).unwrap()
        };
        let seqs = |v: &Value| -> Vec<u64> {
            v["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["seq"].as_u64().unwrap())
                .collect()
        };
        let page = q(Some("analyst"), None, None, 2);
        assert_eq!(seqs(&page), [10, 8]);
        assert_eq!(page["next_before"], json!(8));
        let page = q(Some("analyst"), None, Some(8), 10);
        assert_eq!(seqs(&page), [6, 4, 2]);
        assert_eq!(page["next_before"], Value::Null);
        let page = q(None, Some("2026-11-23T12:00:08Z"), None, 10);
        assert_eq!(seqs(&page), [10, 9, 8]);
        assert!(Filter::from_query(AuditQuery {
            agent: None,
            decision: Some("maybe".into()),
            since: None,
            before: None,
            limit: None
        })
        .is_err());
    }
}
