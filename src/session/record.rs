//! Audit records about a session: one place builds the event every record starts from, and
//! one place writes session-level records (logins refused, sessions opened).

use tracing::warn;

use super::Core;
use crate::audit::{AuditEvent, Decision, EventKind, Protocol};

/// Who and where, as every record of a session states it.
pub(super) struct Who<'a> {
    pub protocol: Protocol,
    pub session: u64,
    pub agent: &'a str,
    pub upstream: Option<&'a str>,
    pub client_addr: &'a str,
}

impl Who<'_> {
    pub(super) fn event(&self, kind: EventKind, decision: Decision) -> AuditEvent {
        AuditEvent {
            kind,
            agent: self.agent.into(),
            protocol: self.protocol,
            upstream: self.upstream.map(Into::into),
            session: self.session,
            client_addr: Some(self.client_addr.into()),
            decision,
            ..AuditEvent::default()
        }
    }
}

/// A session-level record, written durably (best effort: a login is not a statement).
pub(super) fn session_record(
    core: &Core,
    who: &Who<'_>,
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
