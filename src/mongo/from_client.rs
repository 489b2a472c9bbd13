//! Client → upstream: each message is parsed strictly, judged (`MongoPolicy::check`: namespaces,
//! masks, row filters, `maxTimeMS`), recorded by the session core (rate bucket, decision record
//! written before anything is forwarded), and forwarded as received or as the policy rewrote
//! it; refusals become tollgate's own replies, queued in order. tollgate answers `hello` itself
//! (the upstream's topology stays hidden), checks that getMore/killCursors name this session's
//! cursors, keeps `endSessions` to the agent's own sessions, and clears
//! `exhaustAllowed` so that every request gets exactly one reply.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bson::{doc, Bson, Document};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::audit::{decision_record, statement};
use super::cursors::{Origin, RELOADED_CURSOR_RULE};
use super::hello::{hello_reply, is_hello, UpstreamFacts};
use super::lsids::{session_id, ConnectionSessions, NewUse};
use super::op_msg::{MsgError, OpMsg, CHECKSUM_PRESENT, EXHAUST_ALLOWED};
use super::relay::{
    ByteCap, Entry, Expect, Kind, Relay, RelayError, RowLimit, SharedCursors, Track,
};
use super::reply::{self, code};
use super::wire::{Message, MessageReader, OpCode, WireError};
use crate::audit::Decision;
use crate::policy::mongo::{Command, MongoPolicy, ReplyPlan};
use crate::refusal::{Refusal, RefusalClass};
use crate::session::Session;

/// Rule named when a message cannot be read as a command.
const WIRE_RULE: &str = "builtin: wire-protocol";

pub(super) struct FromClient {
    session: Session,
    policy: MongoPolicy,
    facts: UpstreamFacts,
    connection_id: i64,
    cursors: SharedCursors,
    /// Logical sessions this connection used (no other agent's): the only ones its
    /// `endSessions` may end.
    lsids: ConnectionSessions,
    /// Request ids of tollgate's own messages to the upstream (killCursors).
    next_internal: i32,
    owed: Arc<AtomicUsize>,
}

/// What one client message turns into.
enum Step {
    /// Queue this entry (if a reply is owed) and forward these bytes.
    Forward(Option<Entry>, Vec<u8>),
    /// Queue these entries only (tollgate answers, or nobody does).
    Answer(Vec<Entry>),
}

fn local(request_id: i32, body: &Document) -> Option<Entry> {
    Some(Entry {
        request_id,
        kind: Kind::Local(OpMsg::reply(request_id, 0, body).encode(false)),
        ticket: None,
    })
}

/// The server's answer to a killCursors of cursors it does not have: `ids` not found.
fn killed_none(ids: &[i64]) -> Document {
    reply::ok(bson::doc! {
        "cursorsKilled": [],
        "cursorsNotFound": ids.iter().map(|id| Bson::Int64(*id)).collect::<Vec<_>>(),
        "cursorsAlive": [],
        "cursorsUnknown": [],
    })
}

/// tollgate's answer to a request, unless its sender said it reads none (`moreToCome`).
fn answer_if(wants_reply: bool, request_id: i32, body: &Document) -> Step {
    Step::Answer(if wants_reply {
        local(request_id, body).into_iter().collect()
    } else {
        Vec::new()
    })
}

/// Answers `body`, then closes the connection.
fn close_with(request_id: i32, body: &Document) -> Step {
    let mut entries: Vec<Entry> = local(request_id, body).into_iter().collect();
    entries.push(Entry {
        request_id,
        kind: Kind::Close,
        ticket: None,
    });
    Step::Answer(entries)
}

/// The refusal for a message that is not a valid command.
fn malformed(e: &MsgError) -> Refusal {
    let class = match e {
        MsgError::Bson(_) => RefusalClass::Encoding,
        _ => RefusalClass::Syntax,
    };
    Refusal::new(class, WIRE_RULE, e.to_string())
}

impl FromClient {
    /// The session, as it stands now (the agent a Redis `AUTH` switched to, say).
    pub fn session(&self) -> &Session {
        &self.session
    }

    pub fn new(relay: Relay, cursors: SharedCursors, owed: Arc<AtomicUsize>) -> FromClient {
        let lsids = ConnectionSessions::new(relay.lsids, relay.session.agent().clone());
        FromClient {
            session: relay.session,
            policy: relay.policy,
            facts: relay.facts,
            connection_id: relay.connection_id,
            cursors,
            lsids,
            next_internal: i32::MIN,
            owed,
        }
    }

    pub async fn run<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
        &mut self,
        mut client: MessageReader<R>,
        mut up: W,
        tx: mpsc::Sender<Entry>,
        mut kill: mpsc::UnboundedReceiver<(i64, String)>,
    ) -> Result<(), RelayError> {
        loop {
            // An agent refused faster than `limits.refusals_per_second` waits here, its last
            // reply on its way.
            self.session.pace_refusals().await;
            let step = tokio::select! {
                Some((id, ns)) = kill.recv() => self.kill_cursor(id, &ns),
                next = client.next() => match next {
                    Ok(Some(msg)) => self.message(msg),
                    Ok(None) => return Ok(()),
                    Err(WireError::Io(e)) => {
                        return Err(RelayError::Client(std::io::Error::other(e)))
                    }
                    Err(e) => self.bad_frame(&mut client, e).await?,
                },
            };
            let (entries, bytes) = match step {
                Step::Forward(e, b) => (e.into_iter().collect::<Vec<_>>(), Some(b)),
                Step::Answer(e) => (e, None),
            };
            let closing = entries.iter().any(|e| matches!(e.kind, Kind::Close));
            for e in entries {
                self.owed.fetch_add(1, Ordering::SeqCst);
                if tx.send(e).await.is_err() {
                    return Ok(());
                }
            }
            if let Some(b) = bytes {
                up.write_all(&b).await.map_err(RelayError::Upstream)?;
            }
            if closing {
                // Wait for the other half to write everything up to the Close entry.
                std::future::pending::<()>().await;
            }
        }
    }

    /// A message that could not be framed: an oversized, compressed or removed-opcode message
    /// is skipped (its length is known) and refused, and the session goes on; anything else
    /// is a protocol error that closes the connection.
    async fn bad_frame<R: AsyncRead + Unpin>(
        &mut self,
        client: &mut MessageReader<R>,
        e: WireError,
    ) -> Result<Step, RelayError> {
        let request_id = client.front_request_id().unwrap_or(0);
        // Over the protocol's own maximum (`maxMessageSizeBytes`) the length is no message's:
        // answered and closed, as mongod closes, not read through (a header claiming 2 GiB
        // held the connection silent while tollgate waited for it: a review).
        let skippable = match &e {
            WireError::TooLarge { len, .. } => *len <= super::wire::MAX_MESSAGE_BYTES,
            WireError::Held(_)
            | WireError::Compressed
            | WireError::RemovedOpCode(_)
            | WireError::UnknownOpCode(_) => true,
            _ => false,
        };
        if let (true, Some(len)) = (skippable, client.front_length()) {
            let class = if matches!(e, WireError::TooLarge { .. } | WireError::Held(_)) {
                RefusalClass::TooLarge
            } else {
                RefusalClass::Unsupported
            };
            let refusal = self.session.refuse(
                format!("<{e}>"),
                Refusal::new(class, WIRE_RULE, e.to_string()),
            );
            client.discard(len).await.map_err(|e| match e {
                WireError::Io(m) => RelayError::Client(std::io::Error::other(m)),
                other => RelayError::Client(std::io::Error::other(other.to_string())),
            })?;
            return Ok(Step::Answer(
                local(request_id, &reply::refusal(&refusal))
                    .into_iter()
                    .collect(),
            ));
        }
        let r = Refusal::syntax(WIRE_RULE, e.to_string());
        self.session.refuse(format!("<{e}>"), r.clone());
        Ok(close_with(request_id, &reply::refusal(&r)))
    }

    fn message(&mut self, msg: Message) -> Step {
        let started = Instant::now();
        let step = match msg.header.op_code {
            OpCode::Msg => self.command(&msg),
            OpCode::Query => self.legacy_hello(&msg),
            _ => {
                let r = Refusal::syntax(WIRE_RULE, "clients send OP_MSG (or OP_QUERY hello)");
                self.session
                    .refuse("<OP_REPLY from a client>".into(), r.clone());
                close_with(msg.header.request_id, &reply::refusal(&r))
            }
        };
        self.session.context().record_overhead(started);
        step
    }

    /// A legacy `isMaster` inside a session (answered like the first one); any other OP_QUERY
    /// is a protocol error.
    fn legacy_hello(&mut self, msg: &Message) -> Step {
        match super::op_query::parse_handshake(msg) {
            Ok(h) => {
                let r = hello_reply(
                    &h.command,
                    &self.facts,
                    self.connection_id,
                    bson::DateTime::now(),
                    None,
                );
                Step::Answer(vec![Entry {
                    request_id: msg.header.request_id,
                    kind: Kind::Local(super::op_query::encode_reply(0, h.request_id, &r)),
                    ticket: None,
                }])
            }
            Err(e) => {
                let r = Refusal::syntax(WIRE_RULE, e.to_string());
                self.session.refuse("<OP_QUERY>".into(), r.clone());
                let body = doc! { "$err": r.message(), "code": code::PROTOCOL_ERROR.0, "ok": 0.0 };
                Step::Answer(vec![Entry {
                    request_id: msg.header.request_id,
                    kind: Kind::Local(super::op_query::encode_reply(
                        0,
                        msg.header.request_id,
                        &body,
                    )),
                    ticket: None,
                }])
            }
        }
    }

    /// Refuses: the blocked record, and the refusal as the reply (none when none is owed).
    fn refuse(&mut self, request_id: i32, wants_reply: bool, shown: String, r: Refusal) -> Step {
        let r = self.session.refuse(shown, r);
        answer_if(wants_reply, request_id, &reply::refusal(&r))
    }

    fn command(&mut self, msg: &Message) -> Step {
        let request_id = msg.header.request_id;
        // The flag bits are read before parsing: a message that fails to parse still says
        // whether its sender waits for a reply.
        let raw_flags = msg
            .body()
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0);
        let wants_reply = raw_flags & super::op_msg::MORE_TO_COME == 0;
        let parsed = OpMsg::parse(msg).and_then(|op| {
            let body = op.body_document()?;
            let seqs = op.sequence_documents()?;
            Ok((op, body, seqs))
        });
        let (op, body, seqs) = match parsed {
            Ok(x) => x,
            Err(e) => {
                return self.refuse(
                    request_id,
                    wants_reply,
                    "<malformed OP_MSG>".into(),
                    malformed(&e),
                )
            }
        };
        let first = body.keys().next().cloned().unwrap_or_default();
        let cmd = match Command::new(body, seqs) {
            Ok(c) => c,
            Err(r) => {
                let shown: String = first.chars().take(64).collect();
                return self.refuse(request_id, wants_reply, format!("{shown} <malformed>"), r);
            }
        };
        let shown = statement(&cmd);
        if is_hello(&cmd.name) {
            let r = hello_reply(
                &cmd.body,
                &self.facts,
                self.connection_id,
                bson::DateTime::now(),
                None,
            );
            self.session.note(shown, Decision::Allowed, None);
            return answer_if(wants_reply, request_id, &r);
        }
        let core = self.session.core().clone();
        // Read before the judgement: a reload in between makes a later getMore judge again.
        let version = core.policy.version();
        let verdict = self.policy.check(&core.policy, &cmd);
        if !verdict.runs() {
            let d = verdict.denial.expect("a refusal has a reason");
            return self.refuse(request_id, wants_reply, shown, d);
        }
        let judged = verdict.judged.expect("a verdict that runs has a judgement");
        let (plan, track) = match self
            .own_cursors(&cmd, &judged)
            .and_then(|x| self.cursor_still_allowed(&core.policy, &x.1).map(|()| x))
        {
            Ok(x) => x,
            Err(r) => return self.refuse(request_id, wants_reply, shown, r),
        };
        // Only a command that goes upstream keeps the session id it takes here: one refused
        // after this (its rate) or answered here gives it back.
        let new_use = match self.use_session(&cmd) {
            Ok(n) => n,
            Err(r) => return self.refuse(request_id, wants_reply, shown, r),
        };
        let mut rewritten = judged.rewritten;
        if let Track::Kill(own) = &track {
            let not_own: Vec<i64> = judged
                .cursors
                .iter()
                .copied()
                .filter(|id| !own.contains(id))
                .collect();
            if own.is_empty() {
                let answer = killed_none(&not_own);
                return self.answered_here(
                    new_use,
                    shown,
                    "none of these cursors is the agent's",
                    &answer,
                    (wants_reply, request_id),
                );
            }
            if !not_own.is_empty() {
                let mut c = rewritten.unwrap_or_else(|| cmd.clone());
                c.body.insert(
                    "cursors",
                    own.iter().map(|id| Bson::Int64(*id)).collect::<Vec<_>>(),
                );
                rewritten = Some(c);
            }
        }
        let mut ending = Vec::new();
        if cmd.name == "endSessions" {
            match self.scoped_end_sessions(&cmd, &mut ending) {
                Some(c) if c != cmd => rewritten = Some(c),
                Some(_) => {}
                None => {
                    // None of them is this connection's: nothing to end upstream.
                    let answer = reply::ok(Document::new());
                    return self.answered_here(
                        new_use,
                        shown,
                        "no session of this connection",
                        &answer,
                        (wants_reply, request_id),
                    );
                }
            }
        }
        let record = decision_record(
            shown,
            verdict.outcome,
            verdict.denial.as_ref(),
            judged.rule.clone(),
            &plan,
            rewritten.is_some(),
        );
        // The agent's statement rate is shared with its sessions on every protocol.
        let ticket = match self.session.decide(record, Some(self.policy.limits())) {
            Ok(t) => t,
            Err(refusal) => {
                if let Some(n) = new_use {
                    self.lsids.undo(n);
                }
                return answer_if(wants_reply, request_id, &reply::refusal(&refusal));
            }
        };
        // Forwarded: the server ends them, and their ids are nobody's.
        self.lsids.ended(&ending);
        let checksum = op.flags & CHECKSUM_PRESENT != 0;
        let bytes = match (&rewritten, op.flags & EXHAUST_ALLOWED != 0) {
            (None, false) => msg.raw.to_vec(),
            (Some(rw), _) => {
                let mut m = op.with_command(rw);
                m.flags &= !EXHAUST_ALLOWED;
                m.encode(checksum)
            }
            (None, true) => {
                let mut m = op.clone();
                m.flags &= !EXHAUST_ALLOWED;
                m.encode(checksum)
            }
        };
        let limit = match cmd.name.as_str() {
            "find" | "aggregate" | "getMore" => RowLimit::of(self.policy.limits()),
            _ => None,
        };
        // A cursor the reply opens keeps its command (if small), to be judged again after a
        // reload.
        let kept = matches!(track, Track::Open) && msg.raw.len() <= Origin::KEPT_BYTES;
        let origin = Origin {
            version,
            command: kept.then(|| Arc::new(cmd)),
            bytes: msg.raw.len(),
        };
        let entry = wants_reply.then(|| Entry {
            request_id,
            kind: Kind::Reply(Box::new(Expect {
                plan,
                rules: self.policy.rules(),
                track,
                namespace: judged.namespaces.first().cloned().unwrap_or_default(),
                limit,
                bytes: ByteCap::of(self.policy.limits()),
                origin,
            })),
            ticket: Some(ticket),
        });
        Step::Forward(entry, bytes)
    }

    /// A command tollgate answers itself, nothing of it going upstream: the session id it took
    /// is given back, and it is recorded as allowed with `why`.
    fn answered_here(
        &mut self,
        new_use: Option<NewUse>,
        shown: String,
        why: &str,
        answer: &Document,
        (wants_reply, request_id): (bool, i32),
    ) -> Step {
        if let Some(n) = new_use {
            self.lsids.undo(n);
        }
        self.session.note(shown, Decision::Allowed, Some(why));
        answer_if(wants_reply, request_id, answer)
    }

    /// getMore/killCursors: the cursors must be this session's (on the namespace named); a
    /// getMore's batches are masked with the plan of the command that opened the cursor.
    fn own_cursors(
        &self,
        cmd: &Command,
        judged: &crate::policy::mongo::Judged,
    ) -> Result<(ReplyPlan, Track), Refusal> {
        let cursors = self.cursors.lock().expect("cursor registry");
        let ns = judged.namespaces.first().map(String::as_str).unwrap_or("");
        match cmd.name.as_str() {
            "getMore" => {
                let id = judged.cursors.first().copied().unwrap_or(0);
                let c = cursors.check(id, ns)?;
                Ok((c.plan.clone(), Track::GetMore(id)))
            }
            // Only the agent's own are killed; the others are answered as the server answers
            // cursors it does not have (`killed_none`), not refused: a refusal left the
            // agent's own cursors of the same command open.
            "killCursors" => Ok((
                ReplyPlan::None,
                Track::Kill(
                    judged
                        .cursors
                        .iter()
                        .copied()
                        .filter(|id| cursors.check(*id, ns).is_ok())
                        .collect(),
                ),
            )),
            _ => Ok((judged.reply.clone(), Track::Open)),
        }
    }

    /// A getMore of a cursor opened under an older policy: its command is judged again, and the
    /// cursor is read on only if the current policy still allows it with the same reply plan
    /// (masks). The server goes on running what the old policy allowed: after a reload that
    /// withdrew a collection or added a mask, getMore went on returning its documents.
    fn cursor_still_allowed(
        &mut self,
        engine: &crate::policy::Engine,
        track: &Track,
    ) -> Result<(), Refusal> {
        let Track::GetMore(id) = track else {
            return Ok(());
        };
        let (origin, plan) = {
            let cursors = self.cursors.lock().expect("cursor registry");
            match cursors.get(*id) {
                Some(c) => (c.origin.clone(), c.plan.clone()),
                None => return Ok(()),
            }
        };
        if origin.version == engine.version() {
            return Ok(());
        }
        let changed = |rule: String, why: &str| {
            Refusal::permission(
                rule,
                format!(
                    "the policy changed since this cursor was opened: {why}; run the query again"
                ),
            )
        };
        let Some(command) = origin.command else {
            return Err(changed(
                RELOADED_CURSOR_RULE.to_string(),
                "its command was too large to judge again",
            ));
        };
        let verdict = self.policy.check(engine, &command);
        if !verdict.runs() {
            // Fail closed: a refusal without its reason still refuses.
            return Err(match verdict.denial {
                Some(d) => changed(d.rule.clone(), &d.message()),
                None => changed(RELOADED_CURSOR_RULE.to_string(), "it is no longer allowed"),
            });
        }
        match verdict.judged {
            Some(j) if j.reply == plan => Ok(()),
            Some(j) => Err(changed(
                j.rule.unwrap_or_else(|| RELOADED_CURSOR_RULE.to_string()),
                "its masking changed",
            )),
            None => Err(changed(
                RELOADED_CURSOR_RULE.to_string(),
                "it is no longer allowed",
            )),
        }
    }

    /// The command's logical session, if it names one, for this connection: refused if
    /// another agent uses it (`lsids`).
    fn use_session(&mut self, cmd: &Command) -> Result<Option<NewUse>, Refusal> {
        match cmd.body.get("lsid") {
            Some(lsid) => self.lsids.use_session(session_id(lsid)?),
            None => Ok(None),
        }
    }

    /// `endSessions` with only the agent's own sessions (`None`: none of them); their ids go to
    /// `ending`. (Scoped to this connection's, pymongo's close, which ends its whole pool's
    /// sessions on one connection, left the others reserved for 30 minutes: a review.)
    fn scoped_end_sessions(&self, cmd: &Command, ending: &mut Vec<[u8; 16]>) -> Option<Command> {
        let Some(Bson::Array(ids)) = cmd.body.get("endSessions") else {
            return None;
        };
        let ours: Vec<Bson> = ids
            .iter()
            .filter(|s| match session_id(s) {
                Ok(id) if self.lsids.is_agents(&id) => {
                    ending.push(id);
                    true
                }
                _ => false,
            })
            .cloned()
            .collect();
        if ours.is_empty() {
            return None;
        }
        if ours.len() == ids.len() {
            return Some(cmd.clone());
        }
        let mut c = cmd.clone();
        c.body.insert("endSessions", ours);
        Some(c)
    }

    /// Kills an upstream cursor the reply half cut short (its reply is dropped).
    fn kill_cursor(&mut self, id: i64, ns: &str) -> Step {
        let (db, coll) = ns.split_once('.').unwrap_or((ns, ""));
        let request_id = self.next_internal;
        self.next_internal = self.next_internal.wrapping_add(1);
        let body = doc! { "killCursors": coll, "cursors": [id], "$db": db };
        let bytes = OpMsg::reply(0, request_id, &body).encode(false);
        Step::Forward(
            Some(Entry {
                request_id,
                kind: Kind::Internal,
                ticket: None,
            }),
            bytes,
        )
    }
}

#[cfg(test)]
mod tests;
