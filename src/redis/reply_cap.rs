//! `max_result_bytes` on the Redis listener: the command side publishes the agent's current cap
//! (it holds the policy view), the reply side reads it for each reply. A reply larger than the
//! cap is not relayed (RESP has no way to cut one and keep it well formed): it is read and
//! dropped as it arrives, and the agent gets tollgate's refusal in its place.

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use std::sync::Arc;

use super::reply;
use crate::policy::limits::Limits;
use crate::refusal::{Refusal, RefusalClass};

/// The cap (bytes, the rule that set it), shared by the two halves of one session.
#[derive(Debug, Default)]
pub struct ReplyCap(ArcSwapOption<(u64, String)>);

impl ReplyCap {
    /// Publishes `limits`' cap when it differs from the one published (a reload changed it).
    pub fn update(&self, limits: &Limits) {
        let current = self.0.load();
        if current.as_deref() != limits.max_result_bytes.as_ref() {
            self.0.store(limits.max_result_bytes.clone().map(Arc::new));
        }
    }

    /// The cap in force, if any.
    pub fn get(&self) -> Option<u64> {
        self.0.load().as_ref().map(|c| c.0)
    }

    /// The refusal sent instead of a reply of more than the cap.
    pub fn refusal(&self) -> Bytes {
        let cap = self.0.load_full();
        let (max, rule) = cap.as_deref().cloned().unwrap_or_default();
        metrics::counter!("tollgate_result_bytes_limit_hits_total", "protocol" => "redis")
            .increment(1);
        reply::refusal(
            &Refusal::new(
                RefusalClass::TooLarge,
                rule,
                format!("the reply is larger than {max} bytes, the most the policy allows; it was not returned"),
            )
            .with_instead("ask for less at a time (GETRANGE, LRANGE/ZRANGE with a range, SCAN/HSCAN with COUNT)"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_follows_the_limits_and_the_refusal_names_its_rule() {
        let cap = ReplyCap::default();
        let mut limits = Limits::default();
        cap.update(&limits);
        assert_eq!(cap.get(), None);
        limits.max_result_bytes = Some((1024, "writer: limits".into()));
        cap.update(&limits);
        assert_eq!(cap.get(), Some(1024));
        let r = cap.refusal();
        let text = String::from_utf8_lossy(&r);
        assert!(
            text.starts_with("-ERR tollgate: the reply is larger than 1024 bytes")
                && text.contains("(rule: writer: limits); hint: ask for less"),
            "{text}"
        );
        limits.max_result_bytes = None;
        cap.update(&limits);
        assert_eq!(cap.get(), None);
    }
}
