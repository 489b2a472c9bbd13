//! The outcome record of a tool call's statement, written whatever happens to the call: finished
//! with rows or an error, or dropped mid-statement (the client went away), in which case the
//! statement gets the core's "abandoned" record, as on the wire.

use std::sync::Arc;

use crate::session::{OutcomeError, SessionContext, Ticket};

pub struct Pending {
    ctx: Arc<SessionContext>,
    ticket: Option<Ticket>,
}

impl Pending {
    pub fn new(ctx: &Arc<SessionContext>, ticket: Ticket) -> Pending {
        Pending {
            ctx: ctx.clone(),
            ticket: Some(ticket),
        }
    }

    pub fn finish(mut self, rows: Option<u64>, error: Option<OutcomeError>) {
        if let Some(t) = self.ticket.take() {
            self.ctx.outcome(t, rows, error);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            self.ctx.abandoned(t);
        }
    }
}
