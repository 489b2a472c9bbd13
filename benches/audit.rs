//! The audit writer's cost per record: `append` alone (one durable record, one write), and the
//! statement path's two shapes under concurrency on a 2-worker runtime (as the gateway runs):
//! the sync `append` per statement (one write each, a lock shared by the workers) against
//! `append_deferred` + `commit` (group commit: one write for everything queued).
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

/// (case, tasks) → (writes, records), summed over every measured iteration.
static WRITES: Mutex<Vec<(String, usize, u64, u64)>> = Mutex::new(Vec::new());

fn note(case: &str, tasks: usize, before: tollgate::audit::WriteStats, log: &AuditLog) {
    let after = log.write_stats();
    let mut w = WRITES.lock().unwrap();
    match w.iter_mut().find(|(c, t, _, _)| c == case && *t == tasks) {
        Some(e) => {
            e.2 += after.writes - before.writes;
            e.3 += after.records - before.records;
        }
        None => w.push((
            case.into(),
            tasks,
            after.writes - before.writes,
            after.records - before.records,
        )),
    }
}

fn append_alone(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&dir.path().join("audit.log")).unwrap();
    let mut g = c.benchmark_group("audit_append");
    g.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    g.bench_function("append (durable, one write)", |b| {
        b.iter_custom(|iters| {
            let before = log.write_stats();
            let t = Instant::now();
            for _ in 0..iters {
                i += 1;
                log.append(&event(i)).unwrap();
            }
            let took = t.elapsed();
            note("append alone", 1, before, &log);
            took
        })
    });
    g.bench_function("append_deferred (queue only, flushed every 64)", |b| {
        b.iter_custom(|iters| {
            let before = log.write_stats();
            let t = Instant::now();
            for k in 0..iters {
                i += 1;
                log.append_deferred(&event(i)).unwrap();
                if k % 64 == 63 {
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

/// `records` statements spread over `tasks` tasks on a 2-worker runtime.
/// How each statement reaches the disk.
#[derive(Clone, Copy)]
enum Shape {
    /// `append`: one durable record per statement (the PostgreSQL path today).
    Sync,
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
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&dir.path().join("audit.log")).unwrap();
    let mut g = c.benchmark_group("audit_concurrent");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(4));
    for tasks in [1usize, 4, 16] {
        for (name, shape) in [
            ("append (sync, per statement)", Shape::Sync),
            ("append_deferred + commit", Shape::Commit),
            ("append_deferred + commit_eager", Shape::Eager),
        ] {
            g.bench_with_input(BenchmarkId::new(name, tasks), &tasks, |b, &tasks| {
                b.iter_custom(|iters| {
                    let before = log.write_stats();
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
    println!("\nwrites per record (all measured iterations):");
    for (case, tasks, writes, records) in WRITES.lock().unwrap().iter() {
        if *records > 0 {
            println!(
                "  {case:<32} tasks {tasks:>2}: {:.3} ({writes} writes / {records} records)",
                *writes as f64 / *records as f64
            );
        }
    }
}
