//! Records of failed logins, gateway-wide. A failed login is an audit record with no agent to
//! pace: an unauthenticated client that retries as fast as it can (a new connection per try,
//! or an MCP keep-alive connection sending request after request with a wrong bearer token)
//! would otherwise write the audit log as fast as the disk takes it, and could rotate older
//! records out of retention. Beyond a burst of [`BURST`] and [`PER_SECOND`] records a second,
//! failed logins are counted instead, and the next one recorded says how many were folded
//! since the previous record (as the admin API does for its refusals). Every failure is still
//! refused and counted in `tollgate_auth_failures_total`.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::policy::limits::Rate;
use crate::ratelimit::Bucket;

/// Failed logins recorded one by one at once, before the steady rate applies.
pub const BURST: u32 = 200;
/// Failed logins recorded one by one per second, steadily.
pub const PER_SECOND: u32 = 20;

#[derive(Debug, Default)]
pub struct LoginRecords {
    bucket: Bucket,
    folded: AtomicU64,
}

impl LoginRecords {
    /// The reason a failed login is recorded with, or `None` when it is folded into the next
    /// record instead (counted in `tollgate_login_records_folded_total`).
    pub fn reason(&self, why: &str) -> Option<String> {
        let rate = Rate {
            per_minute: PER_SECOND * 60,
            burst: BURST,
        };
        if self.bucket.take(rate).is_err() {
            self.folded.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("tollgate_login_records_folded_total").increment(1);
            return None;
        }
        Some(match self.folded.swap(0, Ordering::Relaxed) {
            0 => why.to_string(),
            n => format!(
                "{why}; {n} more failed logins since the previous record, not recorded one by one"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beyond_the_burst_failures_are_folded_into_the_next_record() {
        let records = LoginRecords::default();
        for _ in 0..BURST {
            assert_eq!(records.reason("wrong").as_deref(), Some("wrong"));
        }
        // Folded since the last record: the next record names that many.
        let mut folded = 0;
        for _ in 0..500 {
            match records.reason("wrong") {
                None => folded += 1,
                Some(_) => folded = 0,
            }
        }
        assert!(folded >= 400, "{folded} folded");
        std::thread::sleep(std::time::Duration::from_millis(
            1000 / u64::from(PER_SECOND) + 20,
        ));
        let next = records.reason("wrong").expect("the rate allows one again");
        assert_eq!(
            next,
            format!("wrong; {folded} more failed logins since the previous record, not recorded one by one")
        );
        // The count starts again from there.
        let after = records.reason("wrong");
        assert!(
            after.is_none() || after.as_deref() == Some("wrong"),
            "{after:?}"
        );
    }
}
