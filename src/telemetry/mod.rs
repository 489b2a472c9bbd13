//! Metrics: the Prometheus recorder (installed once per process by `serve` and the demo), the
//! per-agent counters sessions keep, the latency histograms, and what `/metrics` renders.
//!
//! Hot-path rule: a statement never looks a metric up by name. Sessions hold an
//! `Arc<PairStats>` (plain atomics, also read by `/api/v1/stats`) and `Histogram` handles taken
//! once; labelled Prometheus series for those counters are written from the atomics at scrape
//! time ([`render`]). Labels carry agent, upstream and rule ids from the configuration and policy
//! files only: never statement text, never secrets, so cardinality is bounded by the files.

mod stats;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::audit::Protocol;
pub use crate::policy::engine::CacheCounts;
pub use stats::{OpenSession, PairStats, Stats, DECISIONS};

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Gateway overhead per statement: from the client's message to forwarding it (policy, audit).
pub const OVERHEAD_SECONDS: &str = "tollgate_gateway_overhead_seconds";
/// Upstream time per statement: from forwarding it to its last reply message.
pub const UPSTREAM_SECONDS: &str = "tollgate_upstream_duration_seconds";

const OVERHEAD_BUCKETS: [f64; 12] = [
    2e-6, 5e-6, 10e-6, 20e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 5e-3, 25e-3, 0.1,
];
const UPSTREAM_BUCKETS: [f64; 14] = [
    100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 0.1, 0.25, 1.0, 5.0, 30.0,
];

/// Installs the Prometheus recorder as the process's metrics recorder. Idempotent: the first
/// call installs it, later calls return the same handle. `None` if another recorder was
/// installed first (metrics then go there, and `/metrics` answers 503).
pub fn install_prometheus() -> Option<PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(OVERHEAD_SECONDS.into()), &OVERHEAD_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(UPSTREAM_SECONDS.into()),
                        &UPSTREAM_BUCKETS,
                    )
                })
                .map(|b| b.build_recorder());
            let recorder = match recorder {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: bad histogram buckets");
                    return None;
                }
            };
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    describe();
                    start_at_zero();
                    spawn_upkeep(handle.clone());
                    Some(handle)
                }
                Err(_) => {
                    tracing::warn!("metrics: another recorder is installed; /metrics is off");
                    None
                }
            }
        })
        .clone()
}

/// Histogram samples are buffered until drained: drain them every few seconds even when nobody
/// scrapes, so memory stays flat.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("tollgate-metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_secs(5));
            handle.run_upkeep();
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "metrics: cannot start the upkeep thread");
    }
}

/// The installed Prometheus handle, if `install_prometheus` ran.
pub fn prometheus() -> Option<PrometheusHandle> {
    PROMETHEUS.get().cloned().flatten()
}

/// The counters an operator alerts on, and whose series do not depend on the config, exist
/// from the start at 0. A series that appears only at its first increment is invisible to
/// `increase()`/`rate()` for that increment: an alert on the first lost audit record or the first
/// failed reload would never fire.
const STARTS_AT_ZERO: &[(&str, &[(&str, &str)])] = &[
    ("tollgate_audit_records_lost_total", &[]),
    ("tollgate_audit_write_failures_total", &[]),
    ("tollgate_unanalysable_statements_total", &[]),
    ("tollgate_schema_load_errors_total", &[]),
    ("tollgate_redis_desync_total", &[]),
    ("tollgate_idle_in_transaction_timeouts_total", &[]),
    ("tollgate_login_records_folded_total", &[]),
    ("tollgate_mcp_cursors_abandoned_total", &[]),
    ("tollgate_policy_reloads_total", &[("result", "ok")]),
    ("tollgate_policy_reloads_total", &[("result", "error")]),
    ("tollgate_vault_reloads_total", &[("result", "ok")]),
    ("tollgate_vault_reloads_total", &[("result", "error")]),
    ("tollgate_admin_tokens_reloads_total", &[("result", "ok")]),
    (
        "tollgate_admin_tokens_reloads_total",
        &[("result", "error")],
    ),
    ("tollgate_tls_reloads_total", &[("result", "ok")]),
    ("tollgate_tls_reloads_total", &[("result", "error")]),
    ("tollgate_audit_rotations_total", &[("result", "ok")]),
    ("tollgate_audit_rotations_total", &[("result", "error")]),
    ("tollgate_cancel_requests_total", &[("result", "forwarded")]),
    ("tollgate_cancel_requests_total", &[("result", "no_server")]),
    (
        "tollgate_cancel_requests_total",
        &[("result", "unknown_key")],
    ),
];

fn start_at_zero() {
    for (name, labels) in STARTS_AT_ZERO {
        let labels: Vec<metrics::Label> = labels
            .iter()
            .map(|(k, v)| metrics::Label::new(*k, *v))
            .collect();
        // `increment(0)` registers the series without disturbing a count already taken.
        metrics::counter!(*name, labels).increment(0);
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "tollgate_statements_total",
        "Statements and Redis commands judged, by agent, upstream, protocol and decision"
    );
    describe_counter!(
        "tollgate_refusals_total",
        "Refused statements by protocol and rule id"
    );
    describe_gauge!(
        "tollgate_agent_connections",
        "Open authenticated client sessions by agent, upstream and protocol"
    );
    describe_counter!(
        "tollgate_agent_connections_total",
        "Authenticated client sessions opened, by agent, upstream and protocol"
    );
    describe_gauge!(
        "tollgate_client_connections",
        "Open client connections by protocol (authenticated or not)"
    );
    describe_gauge!(
        "tollgate_upstream_connections",
        "Open upstream connections by upstream"
    );
    describe_counter!(
        "tollgate_upstream_errors_total",
        "Upstream connection failures and lost connections, by upstream"
    );
    describe_counter!(
        "tollgate_rate_limit_hits_total",
        "Statements refused by an agent's rate limit, by agent, upstream and protocol"
    );
    describe_counter!(
        "tollgate_policy_reloads_total",
        "Policy reloads by result (ok, error)"
    );
    describe_counter!(
        "tollgate_vault_reloads_total",
        "Vault reloads by result (ok, error)"
    );
    describe_counter!(
        "tollgate_admin_tokens_reloads_total",
        "Admin tokens file reloads by result (ok, error: kept the running tokens)"
    );
    describe_counter!(
        "tollgate_audit_write_failures_total",
        "Audit log writes that failed (the statements were not run)"
    );
    describe_counter!(
        "tollgate_decision_cache_total",
        "Policy decision cache lookups by result (hit, shape_hit, miss)"
    );
    describe_gauge!(
        "tollgate_decision_cache_hit_ratio",
        "Share of policy decisions answered from the cache since start"
    );
    describe_histogram!(
        OVERHEAD_SECONDS,
        Unit::Seconds,
        "Time tollgate spends on a statement before forwarding it (policy, masking, audit)"
    );
    describe_histogram!(
        UPSTREAM_SECONDS,
        Unit::Seconds,
        "Time from forwarding a statement to the upstream's last reply message"
    );
}

/// Increments a gauge now and decrements it when dropped (open connections).
pub struct GaugeGuard(metrics::Gauge);

impl GaugeGuard {
    pub fn new(gauge: metrics::Gauge) -> GaugeGuard {
        gauge.increment(1.0);
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

impl std::fmt::Debug for GaugeGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GaugeGuard")
    }
}

/// A refusal, by the rule id that decided it (ids come from policy files or are built in;
/// capped in length so a label can never grow without bound).
pub fn refusal(protocol: Protocol, rule: &str) {
    let rule: String = rule.chars().take(160).collect();
    metrics::counter!("tollgate_refusals_total", "protocol" => protocol.as_str(), "rule" => rule)
        .increment(1);
}

/// The open-connections gauge of one upstream, held for a connection's life.
pub fn upstream_connection(upstream: &str) -> GaugeGuard {
    GaugeGuard::new(
        metrics::gauge!("tollgate_upstream_connections", "upstream" => upstream.to_owned()),
    )
}

/// One protocol's latency histograms, taken once (labels are static) and kept by its sessions.
#[derive(Clone)]
pub struct ProtocolLatency {
    /// From the client's message to forwarding it (policy, audit).
    pub overhead: metrics::Histogram,
    /// From forwarding a statement to its last reply message.
    pub upstream: metrics::Histogram,
}

/// Latency histograms of every protocol.
#[derive(Clone)]
pub struct Latency {
    by_protocol: Vec<(Protocol, ProtocolLatency)>,
}

impl Latency {
    /// Handles on the recorder installed now (no-ops if none is).
    pub fn register() -> Latency {
        Latency {
            by_protocol: Protocol::ALL
                .iter()
                .map(|p| {
                    let name = p.as_str();
                    let l = ProtocolLatency {
                        overhead: metrics::histogram!(OVERHEAD_SECONDS, "protocol" => name),
                        upstream: metrics::histogram!(UPSTREAM_SECONDS, "protocol" => name),
                    };
                    (*p, l)
                })
                .collect(),
        }
    }

    pub fn of(&self, protocol: Protocol) -> &ProtocolLatency {
        &self
            .by_protocol
            .iter()
            .find(|(p, _)| *p == protocol)
            .expect("every protocol is registered")
            .1
    }
}

impl std::fmt::Debug for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Latency")
    }
}

/// Writes the upstream pools' figures into the recorder (at scrape time).
pub fn export_pools(pools: &[crate::doors::PoolView]) {
    for p in pools {
        let labels = [
            ("upstream", p.upstream.clone()),
            ("mode", p.mode.to_string()),
        ];
        metrics::gauge!("tollgate_pool_size", &labels).set(f64::from(p.size));
        metrics::gauge!("tollgate_pool_connections_open", &labels).set(f64::from(p.open));
        metrics::gauge!("tollgate_pool_connections_idle", &labels).set(p.idle as f64);
        metrics::gauge!("tollgate_pool_waiting", &labels).set(p.waiting as f64);
        for (name, n) in [
            ("tollgate_pool_checkouts_total", p.checkouts),
            ("tollgate_pool_waits_total", p.waits),
            ("tollgate_pool_opened_total", p.opened),
            ("tollgate_pool_closed_total", p.closed),
            ("tollgate_pool_resets_total", p.resets),
        ] {
            metrics::counter!(name, &labels).absolute(n);
        }
    }
}

/// The Prometheus text: the per-agent counters and cache figures are written into the
/// recorder from their atomics first, so every scrape sees current values.
pub fn render(stats: &Stats, cache: CacheCounts) -> Option<String> {
    let handle = prometheus()?;
    stats.export();
    for (result, n) in [
        ("hit", cache.hits),
        ("shape_hit", cache.shape_hits),
        ("miss", cache.misses),
    ] {
        metrics::counter!("tollgate_decision_cache_total", "result" => result).absolute(n);
    }
    metrics::gauge!("tollgate_decision_cache_hit_ratio").set(cache.hit_ratio());
    Some(handle.render())
}
