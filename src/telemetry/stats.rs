//! Counters per (agent, upstream, door): what sessions count on the hot path (one relaxed atomic add
//! per statement), read by `/api/v1/stats` and written into Prometheus series at scrape time.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use crate::audit::{Decision, Protocol};

/// Every decision, in the order of [`PairStats::statements`].
pub const DECISIONS: [Decision; 6] = [
    Decision::Allowed,
    Decision::Masked,
    Decision::Rewritten,
    Decision::Blocked,
    Decision::WouldBlock,
    Decision::Error,
];

fn slot(d: Decision) -> usize {
    match d {
        Decision::Allowed => 0,
        Decision::Masked => 1,
        Decision::Rewritten => 2,
        Decision::Blocked => 3,
        Decision::WouldBlock => 4,
        Decision::Error => 5,
    }
}

/// One agent's counters on one upstream through one door.
#[derive(Debug, Default)]
pub struct PairStats {
    pub protocol: Protocol,
    pub connections_open: AtomicI64,
    pub connections_total: AtomicU64,
    /// Decision records by [`DECISIONS`] order.
    pub statements: [AtomicU64; 6],
    pub rate_limited: AtomicU64,
    /// Statements that ended with an error from the upstream.
    pub errors: AtomicU64,
}

impl PairStats {
    pub fn statement(&self, decision: Decision) {
        self.statements[slot(decision)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self, decision: Decision) -> u64 {
        self.statements[slot(decision)].load(Ordering::Relaxed)
    }

    /// Marks a session open; the guard marks it closed when dropped.
    pub fn open_session(self: &Arc<Self>) -> OpenSession {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
        OpenSession(self.clone())
    }
}

/// Held by a session for its life.
#[derive(Debug)]
pub struct OpenSession(Arc<PairStats>);

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// (agent, upstream, door): each door counts apart, as its series are labelled by `protocol`
/// (keyed by agent and upstream only, every door's statements went under the label of the door
/// that counted first: a review).
type Pair = (Arc<str>, Arc<str>, Protocol);

/// All pairs seen since start. Agents come from the agents file and upstreams from the config,
/// so the map is bounded by the files and the doors (entries of removed agents stay until
/// restart).
#[derive(Debug, Default)]
pub struct Stats {
    pairs: DashMap<Pair, Arc<PairStats>>,
}

impl Stats {
    /// The counters of `agent` on `upstream` through `protocol`'s door (created on first use;
    /// sessions keep the `Arc`).
    pub fn pair(
        &self,
        agent: &Arc<str>,
        upstream: &Arc<str>,
        protocol: Protocol,
    ) -> Arc<PairStats> {
        let key = (agent.clone(), upstream.clone(), protocol);
        if let Some(p) = self.pairs.get(&key) {
            return p.clone();
        }
        self.pairs
            .entry(key)
            .or_insert_with(|| {
                Arc::new(PairStats {
                    protocol,
                    ..PairStats::default()
                })
            })
            .clone()
    }

    /// (agent, upstream, counters), sorted by agent, upstream, then door.
    pub fn snapshot(&self) -> Vec<(Arc<str>, Arc<str>, Arc<PairStats>)> {
        let mut v: Vec<_> = self
            .pairs
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        v.sort_by(|a, b| {
            (&a.0 .0, &a.0 .1, a.0 .2.as_str()).cmp(&(&b.0 .0, &b.0 .1, b.0 .2.as_str()))
        });
        v.into_iter()
            .map(|((agent, upstream, _), p)| (agent, upstream, p))
            .collect()
    }

    /// Writes every pair's counters into the metrics recorder (at scrape time).
    pub fn export(&self) {
        for (agent, upstream, p) in self.snapshot() {
            let labels = |extra: Option<(&'static str, &'static str)>| {
                let mut l = vec![
                    metrics::Label::new("agent", agent.to_string()),
                    metrics::Label::new("upstream", upstream.to_string()),
                    metrics::Label::new("protocol", p.protocol.as_str()),
                ];
                if let Some((k, v)) = extra {
                    l.push(metrics::Label::new(k, v));
                }
                l
            };
            for d in DECISIONS {
                metrics::counter!(
                    "tollgate_statements_total",
                    labels(Some(("decision", d.as_str())))
                )
                .absolute(p.count(d));
            }
            metrics::gauge!("tollgate_agent_connections", labels(None))
                .set(p.connections_open.load(Ordering::Relaxed) as f64);
            metrics::counter!("tollgate_agent_connections_total", labels(None))
                .absolute(p.connections_total.load(Ordering::Relaxed));
            metrics::counter!("tollgate_rate_limit_hits_total", labels(None))
                .absolute(p.rate_limited.load(Ordering::Relaxed));
            metrics::counter!("tollgate_statement_errors_total", labels(None))
                .absolute(p.errors.load(Ordering::Relaxed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_shared_and_sessions_counted() {
        let stats = Stats::default();
        let (a, u): (Arc<str>, Arc<str>) = ("analyst".into(), "shop".into());
        let p = stats.pair(&a, &u, Protocol::Postgres);
        assert!(Arc::ptr_eq(&p, &stats.pair(&a, &u, Protocol::Postgres)));
        {
            let _s = p.open_session();
            assert_eq!(p.connections_open.load(Ordering::Relaxed), 1);
        }
        assert_eq!(p.connections_open.load(Ordering::Relaxed), 0);
        assert_eq!(p.connections_total.load(Ordering::Relaxed), 1);
        p.statement(Decision::Blocked);
        p.statement(Decision::Blocked);
        assert_eq!(p.count(Decision::Blocked), 2);
        assert_eq!(p.count(Decision::Allowed), 0);
        assert_eq!(stats.snapshot().len(), 1);
        // Another door on the same pair counts apart, under its own label.
        let m = stats.pair(&a, &u, Protocol::Mcp);
        assert!(!Arc::ptr_eq(&p, &m));
        assert_eq!(m.protocol, Protocol::Mcp);
        assert_eq!(m.count(Decision::Blocked), 0);
        assert_eq!(stats.snapshot().len(), 2);
    }
}
