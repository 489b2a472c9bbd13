//! The audit writer's cost per record: `append` alone (one durable record, one write), and the
//! statement path's two shapes under concurrency on a 2-worker runtime (as the gateway runs):
//! the sync `append` per statement and `append_deferred` + `flush` (one write each, a lock
//! shared by the workers) against `append_deferred` + `commit` (group commit: one write for
//! everything queued), with and without gathering (`commit_eager`).
//! Each task yields between records, as a session does while its statement travels.
//!
//! Besides criterion's times, prints writes per record for each case (from `write_stats`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use tollgate::audit::{AuditEvent, AuditLog, Decision, Protocol};

fn event(i: u64) -> AuditEvent {
    AuditEvent {
        agent: "writer".into(),
        protocol: Protocol::Postgres,
        upstream: Some("shop".into()),
        session: 7 + i % 16,
        client_addr: Some("127.0.0.1:50000".into()),
        statement: Some(format!(
            "SELECT amount FROM orders WHERE id = {}",
            1 + i % 20_000
        )),
        decision: Decision::Allowed,
        ..AuditEvent::default()
    }
}

/// Per (case, tasks): writes, records and CPU time (user + system, all threads), summed over
/// every measured iteration. CPU per record is steadier than wall time on a shared machine.
struct Tally {
    case: String,
    tasks: usize,
    writes: u64,
    records: u64,
    cpu: Duration,
}

static TALLY: Mutex<Vec<Tally>> = Mutex::new(Vec::new());

/// This process's CPU time so far, from /proc/self/stat (utime + stime, in 1/100 s).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// What one measurement started from.
struct Mark {
    stats: tollgate::audit::WriteStats,
    cpu: Duration,
}

fn mark(log: &AuditLog) -> Mark {
    Mark {
        stats: log.write_stats(),
        cpu: cpu_time(),
    }
}

fn note(case: &str, tasks: usize, before: Mark, log: &AuditLog) {
    let after = log.write_stats();
    let cpu = cpu_time() - before.cpu;
    let mut w = TALLY.lock().unwrap();
    let i = match w.iter().position(|t| t.case == case && t.tasks == tasks) {
        Some(i) => i,
        None => {
            w.push(Tally {
                case: case.into(),
                tasks,
                writes: 0,
                records: 0,
                cpu: Duration::ZERO,
            });
            w.len() - 1
        }
    };
    w[i].writes += after.writes - before.stats.writes;
    w[i].records += after.records - before.stats.records;
    w[i].cpu += cpu;
}

/// A log in a fresh folder, removed (with the folder) when dropped: measurements write
/// millions of records, which must not pile up on a shared disk.
fn fresh_log() -> (tempfile::TempDir, AuditLog) {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&dir.path().join("audit.log")).unwrap();
    (dir, log)
}

fn append_alone(c: &mut Criterion) {
    let mut g = c.benchmark_group("audit_append");
    g.throughput(Throughput::Elements(1));
    g.bench_function("append (durable, one write)", |b| {
        b.iter_custom(|iters| {
            let (_dir, log) = fresh_log();
            let before = mark(&log);
            let t = Instant::now();
            for i in 0..iters {
                log.append(&event(i)).unwrap();
            }
            let took = t.elapsed();
            note("append alone", 1, before, &log);
            took
        })
    });
    g.bench_function("append_deferred (queue only, flushed every 64)", |b| {
        b.iter_custom(|iters| {
            let (_dir, log) = fresh_log();
            let before = mark(&log);
            let t = Instant::now();
            for i in 0..iters {
                log.append_deferred(&event(i)).unwrap();
                if i % 64 == 63 {
                    log.flush().unwrap();
                }
            }
            log.flush().unwrap();
            let took = t.elapsed();
            note("append_deferred + flush/64", 1, before, &log);
            took
        })
    });
    g.finish();
}

/// How each statement reaches the disk.
#[derive(Clone, Copy)]
enum Shape {
    /// `append`: one durable record per statement (the PostgreSQL path today).
    Sync,
    /// `append_deferred` + `flush` (the Redis path today, here with one command per batch).
    Flush,
    /// `append_deferred` + `commit` (group commit, gathering the worker's ready sessions).
    Commit,
    /// `append_deferred` + `commit_eager` (group commit without gathering).
    Eager,
}

fn run_tasks(
    rt: &tokio::runtime::Runtime,
    log: &AuditLog,
    tasks: usize,
    records: u64,
    shape: Shape,
) -> Duration {
    let per_task = records.div_ceil(tasks as u64);
    rt.block_on(async {
        let t = Instant::now();
        let mut handles = Vec::with_capacity(tasks);
        for k in 0..tasks {
            let log = log.clone();
            handles.push(tokio::spawn(async move {
                for i in 0..per_task {
                    let ev = event(k as u64 * per_task + i);
                    match shape {
                        Shape::Sync => {
                            log.append(&ev).unwrap();
                        }
                        Shape::Flush => {
                            log.append_deferred(&ev).unwrap();
                            log.flush().unwrap();
                        }
                        Shape::Commit => {
                            let seq = log.append_deferred(&ev).unwrap();
                            log.commit(seq).await.unwrap();
                        }
                        Shape::Eager => {
                            let seq = log.append_deferred(&ev).unwrap();
                            log.commit_eager(seq).await.unwrap();
                        }
                    }
                    // A session waits for the network between statements.
                    tokio::task::yield_now().await;
                }
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        t.elapsed()
    })
}

fn concurrent(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("audit_concurrent");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(4));
    for tasks in [1usize, 4, 16] {
        for (name, shape) in [
            ("append (sync, per statement)", Shape::Sync),
            ("append_deferred + flush (sync)", Shape::Flush),
            ("append_deferred + commit", Shape::Commit),
            ("append_deferred + commit_eager", Shape::Eager),
        ] {
            g.bench_with_input(BenchmarkId::new(name, tasks), &tasks, |b, &tasks| {
                b.iter_custom(|iters| {
                    let (_dir, log) = fresh_log();
                    let before = mark(&log);
                    let took = run_tasks(&rt, &log, tasks, iters.max(tasks as u64), shape);
                    note(name, tasks, before, &log);
                    // Per record: criterion divides by iters.
                    took.mul_f64(iters as f64 / iters.max(tasks as u64) as f64)
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, append_alone, concurrent);

fn main() {
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
    println!("\nper record, over all measured iterations (CPU: user + system, all threads):");
    for t in TALLY.lock().unwrap().iter().filter(|t| t.records > 0) {
        println!(
            "  {:<32} tasks {:>2}: {:.3} writes, {:>5.0} ns CPU ({} writes / {} records)",
            t.case,
            t.tasks,
            t.writes as f64 / t.records as f64,
            t.cpu.as_nanos() as f64 / t.records as f64,
            t.writes,
            t.records
        );
    }
}
