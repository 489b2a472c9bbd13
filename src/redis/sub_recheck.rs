//! Subscriptions after a reload. A SUBSCRIBE is judged when it is sent; the upstream then
//! delivers the channel's messages for as long as the subscription lasts, so a reload that
//! withdrew the channel (or pub/sub) from the agent left it receiving them. The reply half
//! judges the session's subscriptions again at the first message after a reload, as if each
//! were subscribed now, and ends the session when one is no longer allowed. The same holds for
//! the other commands whose effect lasts and streams to the client: MONITOR and CLIENT
//! TRACKING (its invalidations name keys), kept as they were sent ("standing" commands).

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::pubsub::{SubKind, Subscriptions};
use crate::policy::redis::{CommandTable, RedisPolicy};
use crate::policy::Engine;
use crate::refusal::Refusal;

/// The session's agent as the command half last set it (an AUTH may change it).
pub type SharedAgent = Arc<Mutex<Arc<str>>>;

/// The commands in force on the session whose effect streams to the client (MONITOR, CLIENT
/// TRACKING ON ...), as the command half sent them: judged again after a reload.
#[derive(Debug, Clone, Default)]
pub struct Standing(Arc<Mutex<Vec<Vec<Bytes>>>>);

impl Standing {
    /// Notes a forwarded command: MONITOR and CLIENT TRACKING ON stand, TRACKING OFF and RESET
    /// take theirs away.
    pub fn note(&self, args: &[Bytes]) {
        // Every forwarded command passes here: the few that matter are told by their first
        // word before anything is locked or allocated.
        let first = args.first().map_or(&b""[..], |a| &a[..]);
        let concerned = [&b"monitor"[..], b"client", b"reset"]
            .iter()
            .any(|w| first.eq_ignore_ascii_case(w));
        if !concerned {
            return;
        }
        let word = |i: usize| args.get(i).map(|a| a.to_ascii_lowercase());
        let mut list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let tracking = |a: &Vec<Bytes>| {
            a.first().is_some_and(|w| w.eq_ignore_ascii_case(b"client"))
                && a.get(1)
                    .is_some_and(|w| w.eq_ignore_ascii_case(b"tracking"))
        };
        match (word(0).as_deref(), word(1).as_deref(), word(2).as_deref()) {
            (Some(b"monitor"), _, _) => list.push(args.to_vec()),
            (Some(b"client"), Some(b"tracking"), Some(b"on")) => {
                list.retain(|a| !tracking(a));
                list.push(args.to_vec());
            }
            (Some(b"client"), Some(b"tracking"), Some(b"off")) => list.retain(|a| !tracking(a)),
            (Some(b"reset"), _, _) => list.clear(),
            _ => {}
        }
    }

    fn each(&self) -> Vec<Vec<Bytes>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

pub struct SubsRecheck {
    policy: RedisPolicy,
    table: Arc<CommandTable>,
    agent: SharedAgent,
    /// The policy version, and the agent, the subscriptions were last judged under.
    version: u64,
    judged_for: Arc<str>,
    standing: Standing,
}

impl SubsRecheck {
    pub fn new(
        agent: Arc<str>,
        upstream: Arc<str>,
        table: Arc<CommandTable>,
        version: u64,
    ) -> SubsRecheck {
        SubsRecheck {
            policy: RedisPolicy::new(agent.clone(), upstream),
            table,
            agent: Arc::new(Mutex::new(agent.clone())),
            version,
            judged_for: agent,
            standing: Standing::default(),
        }
    }

    /// The handle the command half notes standing commands in.
    pub fn standing(&self) -> Standing {
        self.standing.clone()
    }

    /// The handle the command half updates when the session's agent changes.
    pub fn agent(&self) -> SharedAgent {
        self.agent.clone()
    }

    /// The agent the session runs as now.
    pub fn current_agent(&self) -> Arc<str> {
        self.agent.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// `args` judged now, under the current policy and the session's current agent: the refusal
    /// if it is not allowed.
    pub fn judge_now(&mut self, engine: &Engine, args: &[Bytes]) -> Option<Refusal> {
        self.policy.set_agent(self.current_agent());
        self.refusal(engine, args)
    }

    /// `args` judged under the current policy for the agent last set: the refusal, if any.
    fn refusal(&mut self, engine: &Engine, args: &[Bytes]) -> Option<Refusal> {
        let verdict = self.policy.check(engine, &self.table, args);
        (!verdict.runs()).then(|| {
            verdict.denial.unwrap_or_else(|| {
                Refusal::permission(crate::policy::decide::DEFAULT_DENY, "not allowed")
            })
        })
    }

    /// When the policy (or the session's agent: an AUTH as another) changed since the last
    /// look: the refusal of the first subscription the current policy would not allow (`None`:
    /// all still allowed, or no change).
    pub fn stale(&mut self, engine: &Engine, subs: &Subscriptions) -> Option<Refusal> {
        let now = engine.version();
        let agent = self.current_agent();
        if now == self.version && agent == self.judged_for {
            return None;
        }
        // Read before judging: a reload meanwhile is looked at with the next message.
        self.version = now;
        self.judged_for = agent.clone();
        self.policy.set_agent(agent);
        let subscriptions = subs.each().map(|(kind, name)| {
            let word: &'static [u8] = match kind {
                SubKind::Channel => b"subscribe",
                SubKind::Pattern => b"psubscribe",
                SubKind::Shard => b"ssubscribe",
            };
            vec![Bytes::from_static(word), name.clone()]
        });
        let standing = self.standing.each();
        subscriptions
            .chain(standing)
            .find_map(|args| self.refusal(engine, &args))
    }
}
