//! A GCRA rate limiter (the "virtual scheduling" form of a token bucket): one 64-bit
//! theoretical arrival time per agent, updated with compare-and-swap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::policy::limits::{Limits, Rate};

/// Refused: over the rate. `retry_after` is when one more statement would be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limit of {per_minute} statements per minute exceeded; retry in {} ms", retry_after.as_millis())]
pub struct RateExceeded {
    pub per_minute: u32,
    pub retry_after: Duration,
}

/// One agent's bucket. The state is the theoretical arrival time (TAT) in nanoseconds since a
/// process-wide epoch: a statement at `now` is accepted if `TAT - now <= burst * interval`, and
/// then moves TAT one interval later.
#[derive(Debug, Default)]
pub struct Bucket {
    tat: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Bucket {
    /// Charges one statement under the agent's limits: `None` when it has no rate or is within
    /// it; otherwise why it is refused and the rule that set the rate. Both front ends use this.
    pub fn over_rate<'a>(&self, limits: &'a Limits) -> Option<(RateExceeded, &'a str)> {
        let (rate, rule) = limits.rate.as_ref()?;
        let exceeded = self.take(*rate).err()?;
        Some((exceeded, rule))
    }

    /// Takes one statement from the bucket at the current time.
    pub fn take(&self, rate: Rate) -> Result<(), RateExceeded> {
        self.take_at(rate, Instant::now())
    }

    pub fn take_at(&self, rate: Rate, at: Instant) -> Result<(), RateExceeded> {
        let now = nanos(at.saturating_duration_since(epoch()));
        let interval = nanos(rate.interval());
        let tolerance = interval.saturating_mul(u64::from(rate.burst));
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let start = tat.max(now);
            if start - now > tolerance {
                return Err(RateExceeded {
                    per_minute: rate.per_minute,
                    retry_after: Duration::from_nanos(start - now - tolerance),
                });
            }
            match self.tat.compare_exchange_weak(
                tat,
                start + interval,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => tat = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_burst_plus_one_then_refuses_until_an_interval_passes() {
        let b = Bucket::default();
        let rate = Rate {
            per_minute: 60,
            burst: 4,
        };
        let t0 = Instant::now() + Duration::from_secs(1);
        for i in 0..5 {
            assert!(b.take_at(rate, t0).is_ok(), "statement {i}");
        }
        let err = b.take_at(rate, t0).unwrap_err();
        assert!(err.retry_after <= Duration::from_secs(1), "{err}");
        assert!(b.take_at(rate, t0 + Duration::from_millis(999)).is_err());
        assert!(b.take_at(rate, t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn concurrent_takers_never_exceed_the_budget() {
        let b = std::sync::Arc::new(Bucket::default());
        let rate = Rate {
            per_minute: 1,
            burst: 99,
        };
        let at = Instant::now() + Duration::from_secs(1);
        let ok: usize = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || (0..100).filter(|_| b.take_at(rate, at).is_ok()).count())
            })
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(ok, 100);
    }
}
