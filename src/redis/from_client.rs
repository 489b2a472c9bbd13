//! Client → upstream: parses every complete command of a read (a batch of up to `MAX_BATCH`),
//! judges each (`RedisPolicy::check`), has the session core record the decisions (chained, then
//! one audit write for the batch before anything is forwarded), hands the batch's entries to the
//! reply half in one message, and forwards the allowed commands' bytes. MULTI bookkeeping: a
//! refused command inside a transaction poisons it, and its EXEC is sent as DISCARD.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::warn;

use super::audit::statement;
use super::auth::{parse_hello, upstream_hello, HelloError};
use super::command::{encode_command, Command};
use super::pubsub::SubKind;
use super::reader::ClientReader;
use super::relay::{Entry, Kind, Relay, RelayError, MAX_BATCH};
use super::reply;
use crate::audit::Decision;
use crate::policy::redis::{CommandTable, MaskPlan, RedisPolicy};
use crate::policy::Outcome;
use crate::session::{audit_unavailable, Judged, ReauthError, Session};

pub(super) struct FromClient {
    session: Session,
    table: Arc<CommandTable>,
    policy: RedisPolicy,
    in_multi: bool,
    multi_dirty: bool,
    /// Entries handed to the reply side and not yet written to the client.
    owed: Arc<AtomicUsize>,
}

fn lower_name(c: &Command) -> Vec<u8> {
    c.args[0].to_ascii_lowercase()
}

impl FromClient {
    pub fn new(relay: Relay, owed: Arc<AtomicUsize>) -> FromClient {
        FromClient {
            session: relay.session,
            table: relay.table,
            policy: relay.policy,
            in_multi: false,
            multi_dirty: false,
            owed,
        }
    }

    pub async fn run<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
        &mut self,
        mut client: ClientReader<R>,
        mut up: W,
        tx: mpsc::Sender<Vec<Entry>>,
    ) -> Result<(), RelayError> {
        let mut entries = Vec::new();
        let mut out = BytesMut::new();
        loop {
            let mut closing = false;
            let mut need_read = false;
            while entries.len() < MAX_BATCH {
                match client.next_command() {
                    Ok(Some(cmd)) => {
                        if self.command(cmd, &mut entries, &mut out) {
                            closing = true;
                            break;
                        }
                    }
                    Ok(None) => {
                        need_read = true;
                        break;
                    }
                    Err(e) => {
                        entries.push(Entry::local(reply::error("ERR", &e.to_string())));
                        entries.push(Entry {
                            kind: Kind::Close,
                            ticket: None,
                        });
                        closing = true;
                        break;
                    }
                }
            }
            if !entries.is_empty() {
                // Decisions reach the audit log (one write for the batch) before anything runs.
                if !out.is_empty() {
                    self.flush_decisions(&mut entries, &mut out);
                }
                self.owed.fetch_add(entries.len(), Ordering::SeqCst);
                let batch = std::mem::replace(&mut entries, Vec::with_capacity(16));
                if tx.send(batch).await.is_err() {
                    return Ok(());
                }
                if !out.is_empty() {
                    up.write_all(&out).await.map_err(RelayError::Upstream)?;
                    out.clear();
                }
            }
            if closing {
                // Wait for the other half to write everything up to the Close entry.
                std::future::pending::<()>().await;
            }
            if need_read && !client.fill().await.map_err(RelayError::Client)? {
                return Ok(());
            }
        }
    }

    /// Writes the batch's chained decision records. If the log cannot be written nothing is
    /// forwarded: every command of the batch is answered with the audit refusal instead.
    fn flush_decisions(&self, entries: &mut [Entry], out: &mut BytesMut) {
        if let Err(e) = self.session.core().audit.flush() {
            warn!(error = %e, "audit write failed: refusing the batch");
            out.clear();
            let refused = reply::refusal(&audit_unavailable());
            for e in entries.iter_mut() {
                if !matches!(e.kind, Kind::Local(_) | Kind::Close) {
                    e.kind = Kind::Local(refused.clone());
                    e.ticket = None;
                }
            }
        }
    }

    /// Judges one command; true when the session ends after it (QUIT).
    pub(super) fn command(
        &mut self,
        cmd: Command,
        entries: &mut Vec<Entry>,
        out: &mut BytesMut,
    ) -> bool {
        let started = Instant::now();
        let end = self.judge(cmd, entries, out);
        self.session.context().record_overhead(started);
        end
    }

    fn judge(&mut self, cmd: Command, entries: &mut Vec<Entry>, out: &mut BytesMut) -> bool {
        let name = lower_name(&cmd);
        match &name[..] {
            b"quit" => {
                self.session
                    .note(statement(&cmd.args, &[], false), Decision::Allowed, None);
                entries.push(Entry::local(Bytes::from_static(reply::OK)));
                entries.push(Entry {
                    kind: Kind::Close,
                    ticket: None,
                });
                return true;
            }
            b"auth" => {
                let (user, token) = match cmd.args.len() {
                    2 => (Bytes::from_static(b"default"), cmd.args[1].clone()),
                    3 => (cmd.args[1].clone(), cmd.args[2].clone()),
                    _ => {
                        entries.push(Entry::local(reply::error(
                            "ERR",
                            "wrong number of arguments for 'auth' command",
                        )));
                        return false;
                    }
                };
                let answer = match self.reauth(&user, &token) {
                    Ok(()) => Bytes::from_static(reply::OK),
                    Err(e) => e,
                };
                entries.push(Entry::local(answer));
                return false;
            }
            b"hello" => {
                let h = match parse_hello(&cmd.args) {
                    Ok(h) => h,
                    Err(HelloError::NoProto) => {
                        entries.push(Entry::local(Bytes::from_static(reply::NOPROTO)));
                        return false;
                    }
                    Err(HelloError::Syntax(m)) => {
                        entries.push(Entry::local(reply::error("ERR", &m)));
                        return false;
                    }
                };
                if let Some((u, t)) = &h.auth {
                    if let Err(e) = self.reauth(u, t) {
                        entries.push(Entry::local(e));
                        return false;
                    }
                }
                let args = upstream_hello(&h);
                let fwd = Command {
                    raw: encode_command(&args),
                    args,
                };
                self.forward(fwd, Kind::Hello(h.proto), entries, out);
                return false;
            }
            _ => {}
        }
        let core = self.session.core().clone();
        let verdict = self.policy.check(&core.policy, &self.table, &cmd.args);
        let subcommand = self.has_subcommand(&cmd);
        if !verdict.runs() {
            let refusal = verdict.denial.clone().expect("a refusal has a reason");
            // The refusal may have come before the keys were placed: find them for the record.
            let mut keys = Vec::new();
            if let Ok(info) = self.table.lookup(&cmd.args) {
                let _ = crate::policy::redis::keys::find_keys(info, &cmd.args, &mut keys);
            }
            let shown = statement(&cmd.args, &keys, subcommand);
            let refusal = self.session.refuse_deferred(shown, refusal);
            self.poison_multi();
            entries.push(Entry::local(reply::refusal(&refusal)));
            return false;
        }
        let decision = match verdict.outcome {
            Outcome::WouldBlock => Decision::WouldBlock,
            _ if !verdict.mask.is_none() => Decision::Masked,
            _ if verdict.rewritten.is_some() => Decision::Rewritten,
            _ => Decision::Allowed,
        };
        let mut capped_by = None;
        let cmd = match verdict.rewritten {
            Some((args, rule)) => {
                capped_by = Some(rule);
                Command {
                    raw: encode_command(&args),
                    args,
                }
            }
            None => cmd,
        };
        let (rule, reason) = match (&verdict.denial, capped_by) {
            (Some(d), _) => (Some(d.rule.clone()), Some(d.reason.clone())),
            (None, Some(rule)) => (
                Some(rule),
                Some("blocking timeout capped to the statement timeout".into()),
            ),
            (None, None) => (None, None),
        };
        let judged = Judged {
            statement: statement(&cmd.args, &verdict.keys, subcommand),
            decision,
            rule,
            reason,
        };
        // The agent's statement rate is shared with its sessions on every protocol.
        match self
            .session
            .decide_deferred(judged, Some(self.policy.limits()))
        {
            Ok(ticket) => {
                let (kind, cmd) = self.kind_of(&name, cmd, verdict.mask);
                entries.push(Entry {
                    kind,
                    ticket: Some(ticket),
                });
                out.extend_from_slice(&cmd.raw);
            }
            Err(refusal) => {
                self.poison_multi();
                entries.push(Entry::local(reply::refusal(&refusal)));
            }
        }
        false
    }

    /// A command refused inside MULTI: the transaction's EXEC will be answered EXECABORT.
    fn poison_multi(&mut self) {
        if self.in_multi {
            self.multi_dirty = true;
        }
    }

    /// A command tollgate rewrote itself (HELLO without its AUTH part): recorded, forwarded.
    fn forward(&self, cmd: Command, kind: Kind, entries: &mut Vec<Entry>, out: &mut BytesMut) {
        let judged = Judged::allowed(statement(&cmd.args, &[], false));
        match self.session.decide_deferred(judged, None) {
            Ok(ticket) => {
                entries.push(Entry {
                    kind,
                    ticket: Some(ticket),
                });
                out.extend_from_slice(&cmd.raw);
            }
            Err(refusal) => entries.push(Entry::local(reply::refusal(&refusal))),
        }
    }

    fn has_subcommand(&self, cmd: &Command) -> bool {
        self.table
            .lookup(&cmd.args)
            .is_ok_and(|i| i.name.contains('|'))
    }

    /// MULTI/EXEC/DISCARD and pub/sub bookkeeping; EXEC of a poisoned transaction becomes DISCARD.
    fn kind_of(&mut self, name: &[u8], cmd: Command, plan: MaskPlan) -> (Kind, Command) {
        match name {
            b"multi" => {
                if !self.in_multi {
                    self.in_multi = true;
                    self.multi_dirty = false;
                }
                (Kind::Reply(MaskPlan::None), cmd)
            }
            b"exec" if self.in_multi => {
                self.in_multi = false;
                if self.multi_dirty {
                    let args = vec![Bytes::from_static(b"DISCARD")];
                    let raw = encode_command(&args);
                    (Kind::ExecAbort, Command { args, raw })
                } else {
                    (Kind::Exec, cmd)
                }
            }
            b"discard" => {
                self.in_multi = false;
                (Kind::Discard, cmd)
            }
            _ if self.in_multi => (Kind::Queued(plan), cmd),
            _ => match SubKind::of_word(name) {
                Some((kind, _)) => {
                    let n = cmd.args.len() - 1;
                    (
                        Kind::Subscribe {
                            remaining: (n > 0).then_some(n),
                            kind,
                        },
                        cmd,
                    )
                }
                None => (Kind::Reply(plan), cmd),
            },
        }
    }

    /// AUTH (or HELLO AUTH) inside a session: switches the agent on success. `Err` is the reply.
    fn reauth(&mut self, user: &[u8], token: &[u8]) -> Result<(), Bytes> {
        match self.session.reauthenticate(user, token) {
            Ok(()) => {
                self.policy.set_agent(self.session.agent().clone());
                Ok(())
            }
            Err(ReauthError::WrongPass) => Err(Bytes::from_static(reply::WRONGPASS)),
            Err(ReauthError::Refused(r)) => Err(reply::refusal(&r)),
        }
    }
}

#[cfg(test)]
mod tests;
