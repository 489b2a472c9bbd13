//! What the client is waiting for, in order: one entry per forwarded message that gets a reply.
//!
//! The client-side loop pushes an entry before it forwards a message; the upstream-side loop
//! pops entries as the replies arrive. That ordering lets tollgate put its own refusals in the
//! right place of the reply stream and finish each statement's audit record with its outcome.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::backend::PgErrorFields;

/// The audit record a running statement will complete.
#[derive(Debug, Clone)]
pub struct AuditTicket {
    pub seq: u64,
    pub started: Instant,
    pub would_block: bool,
}

#[derive(Debug)]
pub enum Expect {
    /// A simple Query (or a refused FunctionCall): replies up to ReadyForQuery.
    Simple {
        ticket: Option<AuditTicket>,
        refusal: Option<PgErrorFields>,
        rows: u64,
        error: Option<(String, String)>,
    },
    /// Parse → ParseComplete (or the substitute whose error becomes `refusal`).
    Parse {
        refusal: Option<PgErrorFields>,
    },
    Bind,
    Describe,
    Close,
    /// Execute → CommandComplete / EmptyQueryResponse / PortalSuspended.
    Execute {
        ticket: Option<AuditTicket>,
    },
    Sync,
    /// The client ended a COPY FROM STDIN (CopyDone/CopyFail): Syncs queued before this marker
    /// reached the server while it was in copy-in mode, which ignores them (no ReadyForQuery).
    CopyEnd,
}

/// Most replies a session may owe before tollgate stops reading from its client.
pub const MAX_PENDING: usize = 4096;

/// Shared between the two halves of a session.
#[derive(Debug, Clone, Default)]
pub struct Pending {
    queue: Arc<Mutex<VecDeque<Expect>>>,
    /// Signalled when replies are consumed, so a client that pipelines without reading waits.
    drained: Arc<tokio::sync::Notify>,
}

impl Pending {
    pub fn push(&self, e: Expect) {
        self.queue.lock().expect("pending queue").push_back(e);
    }

    /// Runs `f` on the queue; the lock is held only for the call.
    pub fn with<T>(&self, f: impl FnOnce(&mut VecDeque<Expect>) -> T) -> T {
        f(&mut self.queue.lock().expect("pending queue"))
    }

    pub fn len(&self) -> usize {
        self.queue.lock().expect("pending queue").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Called by the reply side after it consumed entries.
    pub fn notify_drained(&self) {
        self.drained.notify_one();
    }

    /// Waits until fewer than `MAX_PENDING` replies are owed (backpressure on the client).
    pub async fn wait_for_room(&self) {
        while self.len() >= MAX_PENDING {
            self.drained.notified().await;
        }
    }

    pub fn drain(&self) -> Vec<Expect> {
        self.queue
            .lock()
            .expect("pending queue")
            .drain(..)
            .collect()
    }
}
