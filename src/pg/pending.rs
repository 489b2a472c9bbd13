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
}

/// Shared between the two halves of a session.
#[derive(Debug, Clone, Default)]
pub struct Pending {
    queue: Arc<Mutex<VecDeque<Expect>>>,
}

impl Pending {
    pub fn push(&self, e: Expect) {
        self.queue.lock().expect("pending queue").push_back(e);
    }

    /// Runs `f` on the queue; the lock is held only for the call.
    pub fn with<T>(&self, f: impl FnOnce(&mut VecDeque<Expect>) -> T) -> T {
        f(&mut self.queue.lock().expect("pending queue"))
    }

    pub fn drain(&self) -> Vec<Expect> {
        self.queue
            .lock()
            .expect("pending queue")
            .drain(..)
            .collect()
    }
}
