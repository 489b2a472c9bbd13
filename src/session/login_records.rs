//! Records of failed logins and of connections refused at login. Such a record has no
//! agent to pace, and an unauthenticated client can retry as fast as it connects (or, on MCP, as
//! fast as it sends requests on one keep-alive connection): a record and a `write(2)` each
//! would let it write the audit log as fast as the disk takes it, and rotate older records out
//! of retention. So each name has a bucket of records per door: a known agent's name its own
//! (at most [`AGENT_BURST`] at once and [`AGENT_PER_SECOND`] a second), every other name
//! (unknown ones, shown hashed) one shared bucket ([`OTHERS_BURST`], [`OTHERS_PER_SECOND`]).
//! Beyond its bucket a failure is still refused and counted (`tollgate_auth_failures_total`,
//! `tollgate_login_records_folded_total`); once a second ([`LoginRecords::flush`]) each name
//! and door with failures not recorded gets one summary record saying how many and from how
//! many addresses, with the last one's address and session. A flood under junk names therefore
//! cannot hide attempts against a real agent (those have their own bucket), a flood on one door
//! is not credited to another, and none is lost from the count.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use super::record::{session_record_coded, Who};
use super::Core;
use crate::audit::{Decision, Protocol};
use crate::policy::limits::Rate;
use crate::ratelimit::Bucket;

/// Records a known agent's name gets at once, then per second.
pub const AGENT_BURST: u32 = 20;
pub const AGENT_PER_SECOND: u32 = 2;
/// Records every other name gets, together, at once, then per second.
pub const OTHERS_BURST: u32 = 200;
pub const OTHERS_PER_SECOND: u32 = 20;

/// What the record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoginEvent {
    /// A wrong token, an unknown agent, a name no agent can have.
    Failed,
    /// A connection refused at its login: by policy before it (a listener that requires TLS, a
    /// replication or protected startup setting), or after it for naming no upstream.
    Refused,
}

/// Why a login failed or was refused, as its record says it.
pub(super) struct LoginWhy<'a> {
    pub rule: Option<&'a str>,
    pub reason: &'a str,
    /// The code the client was answered (PostgreSQL's SQLSTATE), if the door has them.
    pub sqlstate: Option<&'static str>,
}

/// The bucket of a known agent's name (`true`) or of every other name: at once, then a second.
fn limits(known_agent: bool) -> (u32, u32) {
    if known_agent {
        (AGENT_BURST, AGENT_PER_SECOND)
    } else {
        (OTHERS_BURST, OTHERS_PER_SECOND)
    }
}

/// Distinct addresses a summary counts one by one; beyond, "more than".
const ADDRESSES: usize = 100;

/// Failures of one name not recorded one by one since its last summary.
struct Folded {
    count: u64,
    /// The addresses they came from (at most [`ADDRESSES`] kept).
    addresses: HashSet<Arc<str>>,
    /// The last of them: its door, session and address go into the summary.
    last: Who,
    rule: Option<String>,
    reason: String,
    /// The code the client was answered (PostgreSQL's SQLSTATE), if the door has them.
    sqlstate: Option<&'static str>,
}

#[derive(Default)]
struct Slot {
    bucket: Bucket,
    folded: Mutex<Option<Folded>>,
}

/// Whose bucket: the event, the door and the name (`None`: every name that is not a known
/// agent's).
type SlotKey = (LoginEvent, Protocol, Option<Arc<str>>);

/// The buckets, by [`SlotKey`]. Bounded by the agents ever configured.
#[derive(Default)]
pub struct LoginRecords {
    slots: Mutex<HashMap<SlotKey, Arc<Slot>>>,
}

impl std::fmt::Debug for LoginRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRecords").finish_non_exhaustive()
    }
}

impl LoginRecords {
    /// Records the failure (`who` names the login as `login_name` shows it; `agent` is that
    /// name when it is a known agent's), or counts it for its name's next summary.
    pub(super) fn record(
        &self,
        core: &Core,
        event: LoginEvent,
        agent: Option<Arc<str>>,
        who: &Who,
        why: LoginWhy<'_>,
    ) {
        let LoginWhy {
            rule,
            reason,
            sqlstate,
        } = why;
        let (burst, per_second) = limits(agent.is_some());
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots
                .entry((event, who.protocol, agent))
                .or_default()
                .clone()
        };
        let rate = Rate {
            per_minute: per_second * 60,
            burst,
        };
        if slot.bucket.take(rate).is_ok() {
            session_record_coded(core, who, Decision::Blocked, rule, reason, sqlstate);
            return;
        }
        metrics::counter!("tollgate_login_records_folded_total").increment(1);
        let mut folded = slot.folded.lock().unwrap_or_else(|e| e.into_inner());
        let (count, mut addresses) = folded
            .take()
            .map_or((0, HashSet::new()), |f| (f.count, f.addresses));
        if addresses.len() < ADDRESSES {
            addresses.insert(who.client_addr.clone());
        }
        *folded = Some(Folded {
            count: count + 1,
            addresses,
            last: who.clone(),
            rule: rule.map(str::to_string),
            reason: reason.to_string(),
            sqlstate,
        });
    }

    /// One summary record for each name with failures not recorded one by one since its last
    /// summary (the gateway calls this every second, and at shutdown).
    pub(super) fn flush(&self, core: &Core) {
        let slots: Vec<(SlotKey, Arc<Slot>)> = {
            let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        for ((event, protocol, agent), slot) in slots {
            let Some(f) = slot.folded.lock().unwrap_or_else(|e| e.into_inner()).take() else {
                continue;
            };
            let what = match event {
                LoginEvent::Failed => "failed logins",
                LoginEvent::Refused => "connections refused at login",
            };
            let under = match agent {
                Some(_) => "under this agent's name",
                None => "under names that are no agent's",
            };
            let (burst, per_second) = limits(agent.is_some());
            let from = match f.addresses.len() {
                n if n >= ADDRESSES => format!("more than {ADDRESSES} addresses"),
                1 => "1 address".to_string(),
                n => format!("{n} addresses"),
            };
            let reason = format!(
                "{}; {} {what} {under} over {} from {from} were counted, not recorded one by one (more than {burst} at once or {per_second} a second); this record shows the last of them",
                f.reason,
                f.count,
                protocol.as_str()
            );
            session_record_coded(
                core,
                &f.last,
                Decision::Blocked,
                f.rule.as_deref(),
                &reason,
                f.sqlstate,
            );
        }
    }
}
