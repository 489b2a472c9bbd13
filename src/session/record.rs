//! Audit records about a session: one place builds the event every record starts from, and
//! one place writes session-level records (logins refused, sessions opened).

use std::sync::Arc;

use tracing::warn;

use super::Core;
use crate::audit::{AuditEvent, Decision, EventKind, Protocol};

/// Who and where, as every record of a session states it. The names are shared with the
/// session and with every record (no copy per record: a statement writes two).
#[derive(Clone)]
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
    session_record_coded(core, who, decision, rule, reason, None);
}

/// [`session_record`] with the SQLSTATE the client was answered.
pub(super) fn session_record_coded(
    core: &Core,
    who: &Who,
    decision: Decision,
    rule: Option<&str>,
    reason: &str,
    sqlstate: Option<&str>,
) {
    let mut ev = who.event(EventKind::Session, decision);
    ev.rule = rule.map(str::to_string);
    ev.reason = Some(reason.to_string());
    ev.sqlstate = sqlstate.map(str::to_string);
    if let Err(e) = core.audit.append(&ev) {
        warn!(error = %e, "audit write failed for a session record");
    }
}

/// The name a refused or failed login is recorded under: an agent's name as given; any other
/// only as a short hash (`(unknown #1a2b3c4d)`, the same for the same text, so repeated tries
/// can be told apart), because what a client puts where the name goes may be a secret: a token
/// typed into the user field, or `agent:token` pasted whole, went into the log as it was.
pub fn login_name(core: &Core, user: &[u8]) -> String {
    shown_login(user, known_agent(core, user).is_some())
}

/// `user` when it names one of the gateway's agents.
pub(super) fn known_agent(core: &Core, user: &[u8]) -> Option<Arc<str>> {
    std::str::from_utf8(user)
        .ok()
        .filter(|name| core.agents.load().get(name).is_some())
        .map(Arc::from)
}

/// [`login_name`] for a `user` already looked up (`known`: an agent's name).
pub(super) fn shown_login(user: &[u8], known: bool) -> String {
    if known || user.is_empty() {
        return shown_name(user);
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(user);
    format!("(unknown #{})", hex::encode(&digest[..4]))
}

/// A name as recorded before it is known to be an agent's: bounded, so a huge name cannot
/// inflate the audit log, with control and invisible formatting characters shown as `?` (a
/// right-to-left override made `exe.png` read as `gnp.exe` in a terminal: a review).
pub fn shown_name(user: &[u8]) -> String {
    String::from_utf8_lossy(user)
        .chars()
        .take(64)
        .map(|c| {
            if c.is_control() || invisible(c) {
                '?'
            } else {
                c
            }
        })
        .collect()
}

/// Unicode format characters that change how text around them is shown without showing
/// themselves: bidirectional overrides and isolates, zero-width characters, the soft hyphen.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}
