//! A small pool of long-lived threads with large stacks on which parsing and analysis run.
//!
//! Why: `pg_query::parse` decodes libpg_query's protobuf output with prost, which recurses once
//! per tree level with large frames (measured: about 36 KiB per level in debug builds, several
//! KiB in release). libpg_query itself stops at 2 MiB of C stack ("stack depth limit
//! exceeded"), but a tree it accepts can still need about 26 MiB of Rust stack to decode in a
//! debug build (16 MiB in release): a crafted statement of a few hundred bytes would overflow a
//! tokio worker's 2 MiB stack and abort the whole gateway. Threads are reused because spawning
//! a thread with a large stack costs more than parsing a typical statement.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};

/// Stack size of each analysis thread: about ten times the worst case measured at
/// libpg_query's own depth limit. Only the touched part is ever backed by memory.
const STACK_SIZE: usize = 256 << 20;

/// Upper bound on the number of analysis threads.
const MAX_THREADS: usize = 8;

type Job = Box<dyn FnOnce() + Send + 'static>;

static POOL: OnceLock<Option<Sender<Job>>> = OnceLock::new();

/// Start the pool: one thread per available core (at least 2, at most `MAX_THREADS`).
/// Returns None when not even one thread could be started.
fn start_pool() -> Option<Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    let wanted = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, MAX_THREADS);
    let mut started = 0;
    for i in 0..wanted {
        let rx = Arc::clone(&rx);
        let spawned = std::thread::Builder::new()
            .name(format!("tollgate-sql-{i}"))
            .stack_size(STACK_SIZE)
            .spawn(move || worker(&rx));
        if spawned.is_ok() {
            started += 1;
        }
    }
    (started > 0).then_some(tx)
}

/// Run jobs until the channel closes (it never does: the sender lives in a static).
fn worker(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let guard = match rx.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            guard.recv()
        };
        match job {
            // A panicking job drops its reply sender, which the caller sees as a failure; the
            // thread itself survives for the next job.
            Ok(job) => {
                let _ = catch_unwind(AssertUnwindSafe(job));
            }
            Err(_) => return,
        }
    }
}

/// Run `f` on an analysis thread and wait for its result. None if the pool could not be
/// started or `f` panicked: callers must treat that as a refusal.
pub(super) fn run_with_large_stack<T, F>(f: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let pool = POOL.get_or_init(start_pool).as_ref()?;
    let (reply_tx, reply_rx) = mpsc::sync_channel::<T>(1);
    let job: Job = Box::new(move || {
        let _ = reply_tx.send(f());
    });
    pool.send(job).ok()?;
    reply_rx.recv().ok()
}

#[cfg(test)]
mod tests {
    use super::run_with_large_stack;

    #[test]
    fn runs_and_returns() {
        assert_eq!(run_with_large_stack(|| 40 + 2), Some(42));
    }

    #[test]
    fn a_panicking_job_is_reported_and_the_pool_survives() {
        let r: Option<u8> = run_with_large_stack(|| panic!("boom"));
        assert_eq!(r, None);
        assert_eq!(run_with_large_stack(|| 7), Some(7));
    }

    #[test]
    fn deep_recursion_fits() {
        // 64 MiB of stack in 4 KiB frames would overflow any default thread stack.
        fn depth(n: u32) -> u32 {
            let pad = std::hint::black_box([0u8; 4096]);
            if n == 0 {
                u32::from(pad[0])
            } else {
                depth(n - 1) + 1
            }
        }
        assert_eq!(run_with_large_stack(|| depth(16_000)), Some(16_000));
    }
}
