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

struct Rig {
    t: TestCore,
    _accepted: crate::session::Accepted,
    from: FromClient,
    entries: Vec<Entry>,
    out: BytesMut,
}

fn rig() -> Rig {
    let t = TestCore::new(&[("analyst", TOKEN)], &[("analyst.toml", POLICY)]);
    let (accepted, session) = t.session(Protocol::Redis, "analyst", TOKEN, "cache");
    let relay = Relay {
        policy: RedisPolicy::new(session.agent().clone(), session.upstream().clone()),
        session,
        table: TestCore::redis_command_table(),
        resp3: false,
    };
    Rig {
        t,
        _accepted: accepted,
        from: FromClient::new(relay, Arc::new(AtomicUsize::new(0))),
        entries: Vec::new(),
        out: BytesMut::new(),
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
        ["-NOPERM tollgate: no rule allows 'get' to read key 'admin:config' (rule: default-deny)\r\n"]
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
    assert!(matches!(r.entries.last().unwrap().kind, Kind::ExecAbort));
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
