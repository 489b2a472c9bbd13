//! `GET /api/v1/audit?agent=&decision=&since=&before=&limit=`: recent audit records, newest
//! first, across the active file and the rotated ones (read backwards from the end, so a large
//! log costs only the records returned). Paging: pass the response's `next_before` as `before`.

use axum::extract::Query;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Viewer;
use super::error::{bad_query, ApiError};
use super::State;
use crate::audit::read::{self, AnswerBudget, RecordFilter, DECISIONS};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// What one answer may hold (see [`AnswerBudget`]): 8 MiB of records, 64 KiB of a statement.
const BUDGET: AnswerBudget = AnswerBudget {
    max_bytes: 8 << 20,
    max_statement: 64 << 10,
};

/// Audit queries read at once; more wait their turn. Each holds up to about twice its answer in
/// memory while it is built, so this bounds what viewers can make the gateway hold.
static READERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

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
    records: RecordFilter,
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
            Some(s) => Some(read::parse_time(s).ok_or_else(|| {
                ApiError::BadRequest(
                    "since must be an RFC 3339 time, e.g. 2026-11-23T12:00:00Z".into(),
                )
            })?),
        };
        let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(ApiError::BadRequest(format!(
                "limit must be 1..={MAX_LIMIT}"
            )));
        }
        Ok(Filter {
            records: RecordFilter {
                agent: q.agent,
                decision: q.decision,
                since,
                before: q.before,
            },
            limit,
        })
    }
}

pub async fn audit(
    _: Viewer,
    axum::extract::State(state): axum::extract::State<State>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(bad_query)?;
    let filter = Filter::from_query(q)?;
    let log = state.gw.core.audit.clone();
    let turn = READERS
        .acquire()
        .await
        .map_err(|e| ApiError::Internal(format!("audit read failed: {e}")))?;
    let found = tokio::task::spawn_blocking(move || {
        // Held by the scan itself: a client that hangs up drops this handler, not the scan, and
        // its turn must not free up while the scan still runs (a re-review ran ten at once).
        let _turn = turn;
        // Queued records first, so the answer is current.
        let _ = log.flush();
        let files = log.files()?;
        scan(&files, &filter)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("audit read failed: {e}")))?
    .map_err(|e| ApiError::Internal(format!("audit log cannot be read: {e}")))?;
    Ok(Json(found))
}

/// Reads the log's files backwards, newest first, until `limit` records matched.
fn scan(files: &[crate::audit::files::LogFile], filter: &Filter) -> std::io::Result<Value> {
    let (records, more) = read::query(files, &filter.records, filter.limit, BUDGET)?;
    let next_before = if more {
        records.last().and_then(|r| r["seq"].as_u64())
    } else {
        None
    };
    Ok(json!({"records": records, "next_before": next_before}))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records 1..=10 spread over a compressed closed file, a plain closed file and the active one.
    fn rotated_log(dir: &std::path::Path) -> Vec<crate::audit::files::LogFile> {
        use std::io::Write;
        let record = |seq: u64| {
            let agent = if seq.is_multiple_of(2) {
                "analyst"
            } else {
                "writer"
            };
            let decision = if seq.is_multiple_of(3) {
                "blocked"
            } else {
                "allowed"
            };
            format!(
                "{{\"seq\":{seq},\"ts\":\"2026-11-23T12:00:{seq:02}.000000Z\",\"agent\":\"{agent}\",\"decision\":\"{decision}\"}}\n"
            )
        };
        let text = |r: std::ops::RangeInclusive<u64>| r.map(record).collect::<String>();
        let gz = std::fs::File::create(dir.join("a.log.000000000001.gz")).unwrap();
        let mut enc = flate2::write::GzEncoder::new(gz, flate2::Compression::fast());
        enc.write_all(text(1..=4).as_bytes()).unwrap();
        enc.finish().unwrap();
        std::fs::write(dir.join("a.log.000000000005"), text(5..=7)).unwrap();
        std::fs::write(dir.join("a.log"), text(8..=10)).unwrap();
        crate::audit::files::list_dir(dir).unwrap()
    }

    #[test]
    fn filters_and_pages_across_rotated_files() {
        let dir = tempfile::tempdir().unwrap();
        let files = rotated_log(dir.path());
        assert_eq!(files.len(), 3);
        let q = |agent: Option<&str>, since: Option<&str>, before, limit| {
            let f = Filter::from_query(AuditQuery {
                agent: agent.map(str::to_owned),
                decision: None,
                since: since.map(str::to_owned),
                before,
                limit: Some(limit),
            })
            .unwrap();
            scan(&files, &f).unwrap()
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
        // A small budget ends a page early (one record at least) and cuts long statements.
        let tight = AnswerBudget {
            max_bytes: 150,
            max_statement: 4,
        };
        let (recs, more) = read::query(&files, &RecordFilter::default(), 10, tight).unwrap();
        assert!(more && (1..10).contains(&recs.len()), "{}", recs.len());
        let tiny = AnswerBudget {
            max_bytes: 1,
            max_statement: 4,
        };
        let (recs, more) = read::query(&files, &RecordFilter::default(), 10, tiny).unwrap();
        assert!(more && recs.len() == 1);
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
