//! Audit records of a Redis session: the command as recorded (name, subcommand, key and channel
//! names; every other argument replaced by `?`, so values never reach the log), decisions and
//! outcomes.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tracing::warn;

use crate::audit::{AuditEvent, Decision, EventKind};
use crate::config::RedisOutcomes;
use crate::gateway::Gateway;
use crate::policy::redis::FoundKey;

const MAX_NAME: usize = 128;
const MAX_STATEMENT: usize = 4096;

fn push_lossy(out: &mut String, b: &[u8]) {
    // Fast path (most names): short printable ASCII is copied as it is.
    if b.len() <= MAX_NAME && b.iter().all(|c| (0x20..0x7f).contains(c)) {
        out.push_str(std::str::from_utf8(b).expect("ASCII"));
        return;
    }
    let s = String::from_utf8_lossy(b);
    out.extend(
        s.chars()
            .take(MAX_NAME)
            .map(|c| if c.is_control() { '?' } else { c }),
    );
}

/// `SET cache:1 ?`, `CLIENT SETNAME ?`, `SUBSCRIBE news.a`: names kept, values redacted.
pub fn statement(args: &[Bytes], keys: &[FoundKey], subcommand: bool) -> String {
    let mut out = String::new();
    let Some(name) = args.first() else {
        return out;
    };
    push_lossy(&mut out, &name.to_ascii_uppercase());
    let lname = name.to_ascii_lowercase();
    let channels = matches!(
        &lname[..],
        b"subscribe"
            | b"psubscribe"
            | b"ssubscribe"
            | b"unsubscribe"
            | b"punsubscribe"
            | b"sunsubscribe"
    );
    for (i, a) in args.iter().enumerate().skip(1) {
        if out.len() > MAX_STATEMENT {
            out.push_str(" ...");
            break;
        }
        out.push(' ');
        let shown = channels
            || keys.iter().any(|k| k.index == i)
            || (i == 1 && (subcommand || matches!(&lname[..], b"publish" | b"spublish")));
        if i == 1 && subcommand {
            push_lossy(&mut out, &a.to_ascii_uppercase());
        } else if shown {
            push_lossy(&mut out, a);
        } else {
            out.push('?');
        }
    }
    out
}

/// Identifies a forwarded command's decision record, for its outcome record.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    pub seq: u64,
    pub started: Instant,
    pub would_block: bool,
}

/// Who the records are about.
pub struct SessionAudit {
    pub gw: Arc<Gateway>,
    pub id: u64,
    pub upstream: Arc<str>,
    pub client_addr: String,
}

impl SessionAudit {
    pub fn event(&self, agent: &str, kind: EventKind, decision: Decision) -> AuditEvent {
        AuditEvent {
            kind,
            agent: agent.to_string(),
            protocol: crate::audit::Protocol::Redis,
            upstream: Some(self.upstream.to_string()),
            session: self.id,
            client_addr: Some(self.client_addr.clone()),
            decision,
            ..AuditEvent::default()
        }
    }

    /// A session-level record, written durably.
    pub fn session(&self, agent: &str, decision: Decision, reason: &str) {
        let mut ev = self.event(agent, EventKind::Session, decision);
        ev.reason = Some(reason.to_string());
        if let Err(e) = self.gw.audit.append(&ev) {
            warn!(error = %e, "audit write failed for a session record");
        }
    }

    /// Chains a decision record; it reaches the disk with the batch's flush, before forwarding.
    pub fn decision(&self, ev: &AuditEvent) -> Result<u64, crate::audit::AuditError> {
        self.gw.audit.append_deferred(ev)
    }

    pub fn outcome(&self, agent: &Arc<str>, ticket: Ticket, error: Option<String>) {
        let took = ticket.started.elapsed();
        self.gw.latency.redis_upstream.record(took);
        if error.is_some() {
            self.gw
                .stats
                .pair(agent, &self.upstream, crate::audit::Protocol::Redis)
                .errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        } else if self.gw.config.audit.redis_outcomes == RedisOutcomes::Errors {
            // A successful command's decision record says all there is to say unless the
            // operator asked for durations: one record per command halves the audit cost.
            return;
        }
        let decision = match (&error, ticket.would_block) {
            (Some(_), _) => Decision::Error,
            (None, true) => Decision::WouldBlock,
            (None, false) => Decision::Allowed,
        };
        let mut ev = self.event(agent, EventKind::Outcome, decision);
        ev.ref_seq = Some(ticket.seq);
        ev.duration_us = Some(took.as_micros() as u64);
        ev.error = error;
        if let Err(e) = self.gw.audit.append_deferred(&ev) {
            warn!(error = %e, "audit outcome write failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::redis::FoundKey;

    fn args(s: &str) -> Vec<Bytes> {
        s.split(' ')
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect()
    }

    #[test]
    fn values_are_never_recorded() {
        let key = |i| FoundKey {
            index: i,
            access: Default::default(),
        };
        assert_eq!(
            statement(&args("set cache:1 secret"), &[key(1)], false),
            "SET cache:1 ?"
        );
        assert_eq!(statement(&args("AUTH analyst tok"), &[], false), "AUTH ? ?");
        assert_eq!(
            statement(&args("client setname x"), &[], true),
            "CLIENT SETNAME ?"
        );
        assert_eq!(
            statement(&args("subscribe a b"), &[], false),
            "SUBSCRIBE a b"
        );
        assert_eq!(
            statement(&args("publish news hello"), &[], false),
            "PUBLISH news ?"
        );
    }
}
