//! The client side's judging, fed commands by hand: what is forwarded, what tollgate answers
//! itself (in order), MULTI poisoned by a refusal, QUIT, AUTH, and the rate limit.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::FromClient;
use crate::audit::Protocol;
use crate::policy::redis::RedisPolicy;
use crate::redis::command::{encode_command, Command};
use crate::redis::relay::{Entry, Kind, Relay};
use crate::session::testing::TestCore;

const TOKEN: &str = "tg_redis_test";
const POLICY: &str = r#"agents = ["analyst"]
[limits]
statements_per_minute = 60
burst = 5
[[redis]]
upstream = "cache"
commands = ["@read", "@transaction", "@connection"]
read_keys = ["cache:*"]
"#;

const PASSTHROUGH: &str = r#"agents = ["trusted"]
[[redis]]
upstream = "cache"
profile = "passthrough"
"#;

struct Rig {
    t: TestCore,
    _accepted: crate::session::Accepted,
    from: FromClient,
    entries: Vec<Entry>,
    out: BytesMut,
    target: Arc<crate::redis::upstream::RedisTarget>,
    _own: Vec<crate::redis::clients::ClientEntry>,
}

fn rig() -> Rig {
    rig_as("analyst", POLICY)
}

/// A session of `agent` whose own upstream connections are 7 (this one) and 9; connection 8 is
/// another agent's.
fn rig_as(agent: &str, policy: &str) -> Rig {
    let file = format!("{agent}.toml");
    rig_on(
        TestCore::new(&[(agent, TOKEN)], &[(file.as_str(), policy)]),
        agent,
    )
}

/// The same, with the audit log on a full disk: every commit fails.
fn rig_on_a_full_disk(agent: &str, policy: &str) -> Rig {
    let file = format!("{agent}.toml");
    rig_on(
        TestCore::with_audit_file(
            &[(agent, TOKEN)],
            &[(file.as_str(), policy)],
            std::path::Path::new("/dev/full"),
        ),
        agent,
    )
}

fn rig_on(t: TestCore, agent: &str) -> Rig {
    let (accepted, session) = t.session(Protocol::Redis, agent, TOKEN, "cache");
    let target = crate::redis::upstream::RedisTarget::for_tests();
    let clients = &target.clients;
    let own = vec![
        clients.register(9, "127.0.0.1:5009".into(), agent.into()),
        clients.register(8, "127.0.0.1:5008".into(), "someone_else".into()),
    ];
    let relay = Relay {
        policy: RedisPolicy::new(session.agent().clone(), session.upstream().clone()),
        session,
        table: TestCore::redis_command_table(),
        resp3: false,
        target: target.clone(),
        client: Some(clients.register(7, "127.0.0.1:5007".into(), agent.into())),
    };
    Rig {
        t,
        _accepted: accepted,
        from: FromClient::new(relay, Arc::new(AtomicUsize::new(0))),
        entries: Vec::new(),
        out: BytesMut::new(),
        target,
        _own: own,
    }
}

impl Rig {
    /// Sends one command (space-separated words); true if the session ends after it.
    fn send(&mut self, line: &str) -> bool {
        let args: Vec<Bytes> = line
            .split(' ')
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect();
        let cmd = Command {
            raw: encode_command(&args),
            args,
        };
        self.from.command(cmd, &mut self.entries, &mut self.out)
    }

    fn forwarded(&mut self) -> String {
        String::from_utf8_lossy(&self.out.split()).into_owned()
    }

    fn locals(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter_map(|e| match &e.kind {
                Kind::Local(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn allowed_commands_are_forwarded_and_refusals_answered_in_order() {
    let mut r = rig();
    assert!(!r.send("GET cache:1"));
    assert!(!r.send("GET admin:config"));
    assert!(!r.send("GET cache:2"));
    assert_eq!(
        r.forwarded(),
        "*2\r\n$3\r\nGET\r\n$7\r\ncache:1\r\n*2\r\n$3\r\nGET\r\n$7\r\ncache:2\r\n"
    );
    let kinds: Vec<&str> = r
        .entries
        .iter()
        .map(|e| match e.kind {
            Kind::Reply(_) => "reply",
            Kind::Local(_) => "local",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["reply", "local", "reply"]);
    assert_eq!(
        r.locals(),
        ["-NOPERM tollgate: no rule allows 'get' to read key 'admin:config' (rule: default-deny); \
          hint: allowed on \"cache\": commands @read, @transaction, @connection; read keys cache:*\r\n"]
    );
    r.t.core.audit.flush().unwrap();
    let blocked: Vec<_> =
        r.t.records()
            .into_iter()
            .filter(|x| x["decision"] == "blocked")
            .collect();
    assert_eq!(blocked[0]["statement"], "GET admin:config");
    assert_eq!(blocked[0]["error"], "NOPERM");
}

#[test]
fn a_refusal_inside_multi_turns_exec_into_discard() {
    let mut r = rig();
    r.send("MULTI");
    r.send("GET cache:1");
    r.send("GET admin:config");
    r.send("EXEC");
    let fwd = r.forwarded();
    assert!(fwd.ends_with("*1\r\n$7\r\nDISCARD\r\n"), "{fwd}");
    assert!(!fwd.contains("EXEC"), "{fwd}");
    assert!(matches!(r.entries.last().unwrap().kind, Kind::ExecAbort(_)));
}

#[test]
fn quit_ends_the_session_after_its_ok() {
    let mut r = rig();
    assert!(r.send("QUIT"));
    assert_eq!(r.locals(), ["+OK\r\n"]);
    assert!(matches!(r.entries.last().unwrap().kind, Kind::Close));
    assert!(r.forwarded().is_empty());
}

#[test]
fn auth_with_a_wrong_token_keeps_the_agent() {
    let mut r = rig();
    r.send("AUTH analyst wrong");
    assert_eq!(
        r.locals(),
        ["-WRONGPASS invalid username-password pair or user is disabled.\r\n"]
    );
    assert!(!r
        .t
        .records()
        .iter()
        .any(|x| x.to_string().contains("wrong")));
}

#[test]
fn over_the_rate_a_command_is_refused_with_the_wait() {
    let mut r = rig();
    for _ in 0..7 {
        r.send("GET cache:1");
    }
    let locals = r.locals();
    assert_eq!(
        locals.len(),
        1,
        "one at the rate and a burst of five pass, the seventh is refused"
    );
    assert!(
        locals[0].starts_with("-ERR tollgate: rate limit of 60 statements per minute exceeded"),
        "{}",
        locals[0]
    );
    assert!(locals[0].contains("(rule: analyst: limits)"));
}

fn kinds(r: &Rig) -> Vec<String> {
    r.entries
        .iter()
        .map(|e| match &e.kind {
            Kind::Reply(_) => "reply".to_string(),
            Kind::Local(b) => format!("local {}", String::from_utf8_lossy(b).trim_end()),
            Kind::Reset => "reset".into(),
            Kind::Relogin => "relogin".into(),
            Kind::KillParts { left, .. } => format!("kill x{left}"),
            Kind::Own { filter, .. } => format!("own {filter:?}"),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn reset_is_followed_by_the_vaulted_login() {
    let mut r = rig_as("trusted", PASSTHROUGH);
    r.send("RESET");
    assert_eq!(kinds(&r), ["reset", "relogin"]);
    let fwd = r.forwarded();
    assert_eq!(fwd, "*1\r\n$5\r\nRESET\r\n*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n");
    // The password is sent upstream, never recorded.
    r.t.core.audit.flush().unwrap();
    let records = r.t.records();
    assert!(records.iter().any(|x| x["statement"] == "RESET"));
    assert!(!records.iter().any(|x| x.to_string().contains("AUTH")));
}

/// The audit log cannot be written: nothing is forwarded and each command is refused once
/// (RESET's hidden login owes the client no second line).
#[tokio::test]
async fn a_failed_audit_commit_refuses_reset_with_one_line() {
    let mut r = rig_on_a_full_disk("trusted", PASSTHROUGH);
    let before = r.from.conn_state();
    // (GET first: after RESET the client is logged out, and a GET is answered NOAUTH locally.)
    r.send("GET cache:1");
    r.send("RESET");
    assert_eq!(kinds(&r), ["reply", "reset", "relogin"]);
    r.from.unsent = std::mem::take(&mut r.entries);
    r.from.commit_decisions(&mut r.out, before).await;
    r.entries = std::mem::take(&mut r.from.unsent);
    let refused = kinds(&r);
    assert_eq!(refused.len(), 2, "one line per command sent: {refused:?}");
    for k in &refused {
        assert!(
            k.starts_with("local -") && k.contains("the audit log cannot be written"),
            "{k}"
        );
    }
    assert!(r.forwarded().is_empty(), "nothing runs unrecorded");
}

#[test]
fn client_kill_and_slowlog_reach_own_connections_only() {
    let mut r = rig_as("trusted", PASSTHROUGH);
    // The reply to another connection's UNBLOCK is a whole RESP integer (it once ended in a
    // bare newline, and the client waited for the rest: a live review).
    r.send("CLIENT UNBLOCK 99999");
    assert!(
        matches!(&r.entries[0].kind, Kind::Local(b) if &b[..] == b":0\r\n"),
        "{:?}",
        r.entries[0].kind
    );
    r.entries.clear();
    r.send("CLIENT KILL ID 8");
    r.send("CLIENT KILL ID 9");
    r.send("CLIENT KILL TYPE normal SKIPME no");
    r.send("SLOWLOG GET 5");
    r.send("SLOWLOG RESET");
    r.send("CLIENT UNBLOCK 8");
    r.send("CLIENT LIST");
    r.send("MONITOR");
    assert_eq!(
        kinds(&r),
        [
            "local :0",
            "kill x1",
            "kill x2",
            "own SlowlogGet(5)",
            "local -NOPERM tollgate: SLOWLOG RESET clears every client's entries, not only this agent's (rule: builtin: own-connections); hint: agent has the passthrough profile on \"cache\": every command except tollgate's built-in protections",
            "local :0",
            "own ClientList",
            "own Monitor",
        ]
    );
    let fwd = r.forwarded();
    assert!(
        fwd.starts_with("*4\r\n$6\r\nCLIENT\r\n$4\r\nKILL\r\n$2\r\nID\r\n$1\r\n9\r\n"),
        "{fwd}"
    );
    assert!(
        fwd.contains("SKIPME\r\n$2\r\nno\r\n$2\r\nID\r\n$1\r\n7\r\n"),
        "{fwd}"
    );
    assert!(
        fwd.contains("$2\r\nID\r\n$1\r\n9\r\n*3\r\n$7\r\nSLOWLOG\r\n$3\r\nGET\r\n$2\r\n-1\r\n"),
        "{fwd}"
    );
    assert!(
        !fwd.contains("$1\r\n8\r\n"),
        "connection 8 is another agent's: {fwd}"
    );
    // Inside MULTI the reply could not be filtered: refused.
    r.entries.clear();
    r.send("MULTI");
    r.send("CLIENT LIST");
    assert!(
        kinds(&r)[1].contains("inside MULTI is refused"),
        "{:?}",
        kinds(&r)
    );
    // CLIENT TRACKING may redirect to an own connection only.
    r.entries.clear();
    r.send("DISCARD");
    r.send("CLIENT TRACKING ON REDIRECT 8");
    r.send("CLIENT TRACKING ON REDIRECT 9");
    let k = kinds(&r);
    assert!(
        k[1].contains("redirect only to one of this agent's own connections"),
        "{k:?}"
    );
    assert_eq!(k[2], "reply");
    // The registry follows the session's agent.
    assert_eq!(r.target.clients.ids_of("trusted"), vec![7, 9]);
}

#[test]
fn client_reply_off_and_skip_owe_no_replies() {
    let mut r = rig_as("trusted", PASSTHROUGH);
    r.send("CLIENT REPLY SKIP");
    r.send("GET a");
    r.send("GET b");
    assert_eq!(kinds(&r), ["reply"], "only GET b is answered");
    // A skipped command tollgate answers itself (a refusal) never reaches the upstream,
    // whose skip a PING then takes; the next command's reply is the client's.
    let _ = r.forwarded(); // taken: what follows is this case's
    r.entries.clear();
    r.send("CLIENT REPLY SKIP");
    r.send("SLOWLOG RESET"); // refused here (builtin: own-connections)
    r.send("GET f");
    assert_eq!(kinds(&r), ["reply"], "{:?}", kinds(&r));
    let fwd = r.forwarded();
    assert!(
        fwd.ends_with("*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nf\r\n"),
        "{fwd}"
    );
    r.entries.clear();
    r.send("CLIENT REPLY OFF");
    r.send("GET c");
    r.send("SET d 1");
    r.send("SUBSCRIBE news");
    r.send("CLIENT REPLY ON");
    r.send("GET e");
    assert_eq!(kinds(&r), ["reply", "reply"], "ON's +OK and GET e");
    let fwd = r.forwarded();
    assert!(
        fwd.contains("$3\r\nGET\r\n$1\r\nc\r\n"),
        "silenced commands still run: {fwd}"
    );
    assert!(
        !fwd.contains("SUBSCRIBE"),
        "a subscription while replies are off is refused: {fwd}"
    );
    // After a subscription CLIENT REPLY is refused (pub/sub confirmations must be paired).
    r.entries.clear();
    r.send("SUBSCRIBE news");
    r.send("CLIENT REPLY OFF");
    assert!(
        kinds(&r)[1].contains("CLIENT REPLY after SUBSCRIBE is refused"),
        "{:?}",
        kinds(&r)
    );
    // And MULTI (review: in RESP2 the server refuses it there and queues nothing, and the
    // replies after it were paired as queued: the session ended on the mismatch).
    r.entries.clear();
    r.send("MULTI");
    r.send("PING");
    assert!(
        kinds(&r)[0].contains("MULTI after SUBSCRIBE is refused"),
        "{:?}",
        kinds(&r)
    );
    assert!(
        !kinds(&r)[1].contains("Queued"),
        "nothing is paired as queued: {:?}",
        kinds(&r)
    );
    // RESET turns replies back on and answers (and logs the client out: NOAUTH is answered).
    r.entries.clear();
    r.send("RESET");
    r.send("CLIENT REPLY OFF");
    r.send("RESET");
    assert_eq!(
        kinds(&r),
        [
            "reset",
            "relogin",
            "local -NOAUTH Authentication required.",
            "reset",
            "relogin"
        ]
    );
}

#[test]
fn the_vaulted_login_and_the_server_are_protected_for_passthrough_too() {
    let mut r = rig_as("trusted", PASSTHROUGH);
    r.send("CONFIG SET requirepass x");
    r.send("ACL SETUSER default off");
    r.send("CONFIG SET maxclients 1");
    r.send("CONFIG GET maxclients");
    let k = kinds(&r);
    assert!(k[0].contains("(rule: builtin: vault-login)"), "{k:?}");
    assert!(k[1].contains("(rule: builtin: vault-login)"), "{k:?}");
    assert!(k[2].contains("(rule: builtin: availability)"), "{k:?}");
    assert_eq!(k[3], "reply");
    assert!(matches!(
        r.entries[3].kind,
        Kind::Reply(crate::policy::redis::MaskPlan::ConfigSecrets)
    ));
    assert!(!r.forwarded().contains("requirepass"));
}

/// Review F1/F2: inside MULTI, commands whose replies are not one per queued command in the
/// session's protocol (SUBSCRIBE and kin, HELLO) and AUTH (answered by tollgate at once) are
/// refused for every agent, never forwarded, and the transaction is discarded.
#[test]
fn subscribe_hello_and_auth_inside_multi_are_refused() {
    let mut r = rig_as("trusted", PASSTHROUGH);
    r.send("MULTI");
    for line in [
        "SUBSCRIBE news.a news.b",
        "psubscribe news.*",
        "SSUBSCRIBE news.a",
        "UNSUBSCRIBE",
        "PUNSUBSCRIBE news.*",
        "SUNSUBSCRIBE",
        "HELLO 3",
        "HELLO 2 AUTH trusted tg_redis_test",
        "AUTH trusted tg_redis_test",
    ] {
        r.entries.clear();
        r.send(line);
        let k = kinds(&r);
        let word = line.split(' ').next().unwrap().to_uppercase();
        assert_eq!(k.len(), 1, "{line}: {k:?}");
        assert!(
            k[0].starts_with(&format!(
                "local -ERR tollgate: {word} inside MULTI is refused"
            )) && k[0].contains("(rule: builtin: protocol)"),
            "{line}: {k:?}"
        );
    }
    r.entries.clear();
    r.send("EXEC");
    assert!(matches!(r.entries[0].kind, Kind::ExecAbort(_)));
    let fwd = r.forwarded();
    assert_eq!(fwd, "*1\r\n$5\r\nMULTI\r\n*1\r\n$7\r\nDISCARD\r\n", "{fwd}");
    // The tokens never reach the record.
    r.t.core.audit.flush().unwrap();
    let records = r.t.records();
    assert!(!records.iter().any(|x| x.to_string().contains(TOKEN)));
    assert!(records.iter().any(|x| x["statement"] == "AUTH ? ?"));
    // Outside MULTI they work as before.
    r.entries.clear();
    r.send("SUBSCRIBE news.a");
    r.send("HELLO 3");
    assert!(
        matches!(r.entries[0].kind, Kind::Subscribe { .. })
            && matches!(r.entries[1].kind, Kind::Hello(Some(3))),
        "{:?}",
        kinds(&r)
    );
}

/// A batch never forwarded (the audit log cannot be written) leaves the transaction state as
/// the upstream has it: a MULTI refused that way does not make later commands count as queued
/// (their replies would be relayed through the queued path, unmasked).
#[tokio::test]
async fn a_batch_never_forwarded_leaves_the_connection_state_as_it_was() {
    let mut r = rig_on_a_full_disk("trusted", PASSTHROUGH);
    let before = r.from.conn_state();
    r.send("MULTI");
    r.send("GET cache:1");
    assert!(r.from.in_multi);
    r.from.unsent = std::mem::take(&mut r.entries);
    r.from.commit_decisions(&mut r.out, before).await;
    assert!(!r.from.in_multi && !r.from.multi_dirty);
    assert!(r.forwarded().is_empty());
    // Replies switched off by a CLIENT REPLY that never reached the upstream are still on.
    let before = r.from.conn_state();
    r.send("CLIENT REPLY OFF");
    r.send("GET cache:1");
    assert!(r.from.reply_off);
    r.from.unsent = std::mem::take(&mut r.entries);
    r.from.commit_decisions(&mut r.out, before).await;
    assert!(!r.from.reply_off && !r.from.silence_next);
    assert!(r.forwarded().is_empty());
}
