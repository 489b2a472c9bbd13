//! A GCRA rate limiter (the "virtual scheduling" form of a token bucket): one 64-bit
//! theoretical arrival time per agent, updated with compare-and-swap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::policy::limits::{Limits, Rate};

/// Refused: over the rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RateExceeded {
    /// Not now: `retry_after` is when the statements would be accepted.
    #[error("rate limit of {per_minute} statements per minute exceeded; retry in {} ms", retry_after.as_millis())]
    Later {
        per_minute: u32,
        retry_after: Duration,
    },
    /// Never: one request holds more statements than the bucket can ever hold at once.
    #[error("a request of {statements} statements needs {statements} of the rate's tokens, more than the {most} it ever holds (rate limit of {per_minute} statements per minute, burst {burst}); send at most {most} statements at once")]
    TooMany {
        per_minute: u32,
        burst: u32,
        statements: u32,
        most: u32,
    },
}

impl RateExceeded {
    /// When the same request would be accepted, if ever.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RateExceeded::Later { retry_after, .. } => Some(*retry_after),
            RateExceeded::TooMany { .. } => None,
        }
    }
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
    /// Charges `statements` statements (one request: a Query holding several, say) under the
    /// agent's limits, all or none: `None` when it has no rate or is within it; otherwise why
    /// it is refused and the rule that set the rate. Every front end uses this.
    pub fn over_rate<'a>(
        &self,
        limits: &'a Limits,
        statements: u32,
    ) -> Option<(RateExceeded, &'a str)> {
        let (rate, rule) = limits.rate.as_ref()?;
        let exceeded = self.take_n(*rate, statements).err()?;
        Some((exceeded, rule))
    }

    /// Takes one statement from the bucket at the current time.
    pub fn take(&self, rate: Rate) -> Result<(), RateExceeded> {
        self.take_at(rate, Instant::now())
    }

    /// Takes `n` statements at the current time, all or none.
    pub fn take_n(&self, rate: Rate, n: u32) -> Result<(), RateExceeded> {
        self.take_n_at(rate, n, Instant::now())
    }

    pub fn take_at(&self, rate: Rate, at: Instant) -> Result<(), RateExceeded> {
        self.take_n_at(rate, 1, at)
    }

    /// `n` statements at once are accepted if the last of them would be: `TAT + (n - 1) *
    /// interval - now <= burst * interval`; TAT then moves `n` intervals later. More than
    /// `burst + 1` never fit. `n = 0` takes nothing.
    pub fn take_n_at(&self, rate: Rate, n: u32, at: Instant) -> Result<(), RateExceeded> {
        if n == 0 {
            return Ok(());
        }
        let most = rate.burst.saturating_add(1);
        if n > most {
            return Err(RateExceeded::TooMany {
                per_minute: rate.per_minute,
                burst: rate.burst,
                statements: n,
                most,
            });
        }
        let now = nanos(at.saturating_duration_since(epoch()));
        let interval = nanos(rate.interval());
        let tolerance = interval.saturating_mul(u64::from(rate.burst));
        let before_last = interval.saturating_mul(u64::from(n - 1));
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let start = tat.max(now);
            let last = start.saturating_add(before_last);
            if last - now > tolerance {
                return Err(RateExceeded::Later {
                    per_minute: rate.per_minute,
                    retry_after: Duration::from_nanos(last - now - tolerance),
                });
            }
            match self.tat.compare_exchange_weak(
                tat,
                last.saturating_add(interval),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => tat = actual,
            }
        }
    }

    /// Counts one event that has already happened (a refusal): TAT moves one interval past
    /// `max(TAT, now)`, even beyond the tolerance; [`Bucket::ahead`] then says by how much.
    pub fn charge(&self, rate: Rate) {
        self.charge_at(rate, Instant::now())
    }

    pub fn charge_at(&self, rate: Rate, at: Instant) {
        let now = nanos(at.saturating_duration_since(epoch()));
        let interval = nanos(rate.interval());
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |tat| {
                Some(tat.max(now).saturating_add(interval))
            });
    }

    /// How long until one more event would fit the rate (`None`: it would now).
    pub fn ahead(&self, rate: Rate) -> Option<Duration> {
        self.ahead_at(rate, Instant::now())
    }

    pub fn ahead_at(&self, rate: Rate, at: Instant) -> Option<Duration> {
        let tat = self.tat.load(Ordering::Acquire);
        let now = nanos(at.saturating_duration_since(epoch()));
        let tolerance = nanos(rate.interval()).saturating_mul(u64::from(rate.burst));
        let over = tat.saturating_sub(now).saturating_sub(tolerance);
        (over > 0).then(|| Duration::from_nanos(over))
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
        assert!(
            err.retry_after()
                .is_some_and(|d| d <= Duration::from_secs(1)),
            "{err}"
        );
        assert!(b.take_at(rate, t0 + Duration::from_millis(999)).is_err());
        assert!(b.take_at(rate, t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn several_statements_at_once_take_a_token_each_all_or_none() {
        let rate = Rate {
            per_minute: 60,
            burst: 4,
        };
        let t0 = Instant::now() + Duration::from_secs(1);
        let b = Bucket::default();
        assert!(b.take_n_at(rate, 3, t0).is_ok());
        // Two left: three are refused as a whole, and take nothing.
        let err = b.take_n_at(rate, 3, t0).unwrap_err();
        assert_eq!(err.retry_after(), Some(Duration::from_secs(1)), "{err}");
        assert!(b.take_n_at(rate, 2, t0).is_ok());
        assert!(b.take_at(rate, t0).is_err());
        assert!(b.take_n_at(rate, 0, t0).is_ok());
        // More than burst + 1 never fit, however long one waits.
        let fresh = Bucket::default();
        let err = fresh.take_n_at(rate, 6, t0).unwrap_err();
        assert_eq!(err.retry_after(), None);
        assert!(err.to_string().contains("at most 5 statements"), "{err}");
        assert!(fresh.take_n_at(rate, 5, t0).is_ok(), "nothing was taken");
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

    #[test]
    fn charged_events_run_ahead_of_the_rate_and_say_how_far() {
        let rate = Rate {
            per_minute: 600, // one every 100 ms
            burst: 2,
        };
        let t0 = Instant::now() + Duration::from_secs(1);
        let b = Bucket::default();
        assert_eq!(b.ahead_at(rate, t0), None, "nothing charged");
        for _ in 0..2 {
            b.charge_at(rate, t0);
        }
        // Two at once fit, and a third would: one at the rate and a burst of two.
        assert_eq!(b.ahead_at(rate, t0), None);
        b.charge_at(rate, t0);
        // Three: a fourth would wait 100 ms.
        assert_eq!(b.ahead_at(rate, t0), Some(Duration::from_millis(100)));
        for _ in 0..5 {
            b.charge_at(rate, t0);
        }
        // Eight at once: one more would wait 600 ms, less as time passes.
        assert_eq!(b.ahead_at(rate, t0), Some(Duration::from_millis(600)));
        assert_eq!(
            b.ahead_at(rate, t0 + Duration::from_millis(200)),
            Some(Duration::from_millis(400))
        );
        assert_eq!(b.ahead_at(rate, t0 + Duration::from_millis(600)), None);
        // A charge after a quiet spell starts from then, not from the old debt.
        let later = t0 + Duration::from_secs(10);
        b.charge_at(rate, later);
        assert_eq!(b.ahead_at(rate, later), None);
    }
}
