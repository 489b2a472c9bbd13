//! Audit records about a session: one place builds the event every record starts from, and
//! one place writes session-level records (logins refused, sessions opened).

use std::sync::Arc;

use tracing::warn;

use super::Core;
use crate::audit::{AuditEvent, Decision, EventKind, Protocol};

/// Who and where, as every record of a session states it. The names are shared with the
/// session and with every record (no copy per record: a statement writes two).
pub(super) struct Who {
    pub protocol: Protocol,
    pub session: u64,
    pub agent: Arc<str>,
    pub upstream: Option<Arc<str>>,
    pub client_addr: Arc<str>,
}

impl Who {
    pub(super) fn event(&self, kind: EventKind, decision: Decision) -> AuditEvent {
        AuditEvent {
            kind,
            agent: self.agent.clone(),
            protocol: self.protocol,
            upstream: self.upstream.clone(),
            session: self.session,
            client_addr: Some(self.client_addr.clone()),
            decision,
            ..AuditEvent::default()
        }
    }
}

/// A session-level record, written durably (best effort: a login is not a statement).
pub(super) fn session_record(
    core: &Core,
    who: &Who,
    decision: Decision,
    rule: Option<&str>,
    reason: &str,
) {
    let mut ev = who.event(EventKind::Session, decision);
    ev.rule = rule.map(str::to_string);
    ev.reason = Some(reason.to_string());
    if let Err(e) = core.audit.append(&ev) {
        warn!(error = %e, "audit write failed for a session record");
    }
}

/// A name as recorded before it is known to be an agent's: bounded, so a huge name cannot
/// inflate the audit log, with control characters shown as `?`.
pub fn shown_name(user: &[u8]) -> String {
    String::from_utf8_lossy(user)
        .chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}
