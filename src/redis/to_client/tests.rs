//! The reply side's pairing, fed upstream frames by hand: tollgate's own replies in order, pub/sub
//! confirmations and messages relayed without consuming an entry, masks applied, EXECABORT, and
//! outcome records for errors only (the default).

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use bytes::Bytes;

use super::ToClient;
use crate::audit::Protocol;
use crate::policy::redis::{MaskPlan, Strategy};
use crate::redis::pubsub::SubKind;
use crate::redis::relay::{Entry, Kind};
use crate::session::testing::TestCore;
use crate::session::{Judged, Session};

const TOKEN: &str = "tg_redis_test";
const POLICY: &str = r#"agents = ["analyst"]
[[redis]]
upstream = "cache"
commands = ["@read", "@pubsub"]
read_keys = ["cache:*"]
channels = ["news.*"]
"#;

struct Rig {
    t: TestCore,
    _accepted: crate::session::Accepted,
    session: Session,
    to: ToClient,
}

fn rig(resp3: bool) -> Rig {
    let t = TestCore::new(&[("analyst", TOKEN)], &[("analyst.toml", POLICY)]);
    let (accepted, session) = t.session(Protocol::Redis, "analyst", TOKEN, "cache");
    let to = ToClient::new(
        session.context().clone(),
        resp3,
        Arc::new(AtomicUsize::new(0)),
    );
    Rig {
        t,
        _accepted: accepted,
        session,
        to,
    }
}

impl Rig {
    fn entry(&self, kind: Kind) -> Entry {
        let ticket = self
            .session
            .decide_deferred(Judged::allowed("CMD".into()), None)
            .unwrap();
        Entry {
            kind,
            ticket: Some(ticket),
        }
    }

    fn feed(&mut self, frame: &str) {
        assert!(!self.to.on_frame(Bytes::copy_from_slice(frame.as_bytes())));
    }

    fn out(&mut self) -> String {
        String::from_utf8_lossy(&self.to.take_out()).into_owned()
    }
}

#[test]
fn tollgates_own_replies_keep_their_place_in_the_order() {
    let mut r = rig(false);
    let first = r.entry(Kind::Reply(MaskPlan::None));
    r.to.push(first);
    r.to.push(Entry::local(Bytes::from_static(
        b"-NOPERM tollgate: no (rule: r)\r\n",
    )));
    let third = r.entry(Kind::Reply(MaskPlan::None));
    r.to.push(third);
    r.feed("+OK\r\n");
    r.feed(":1\r\n");
    assert_eq!(r.out(), "+OK\r\n-NOPERM tollgate: no (rule: r)\r\n:1\r\n");
    assert_eq!(r.to.owed_entries(), 0);
}

#[test]
fn pubsub_confirmations_and_messages_do_not_consume_other_replies() {
    let mut r = rig(false);
    let sub = r.entry(Kind::Subscribe {
        remaining: Some(2),
        kind: SubKind::Channel,
    });
    r.to.push(sub);
    let ping = r.entry(Kind::Reply(MaskPlan::None));
    r.to.push(ping);
    let confirm_a = "*3\r\n$9\r\nsubscribe\r\n$6\r\nnews.a\r\n:1\r\n";
    let message = "*3\r\n$7\r\nmessage\r\n$6\r\nnews.a\r\n$2\r\nhi\r\n";
    let confirm_b = "*3\r\n$9\r\nsubscribe\r\n$6\r\nnews.b\r\n:2\r\n";
    let pong = "*2\r\n$4\r\npong\r\n$0\r\n\r\n";
    r.feed(confirm_a);
    r.feed(message);
    assert_eq!(r.to.owed_entries(), 2, "a message consumes nothing");
    r.feed(confirm_b);
    assert_eq!(
        r.to.owed_entries(),
        1,
        "SUBSCRIBE answered by its two confirmations"
    );
    r.feed(pong);
    assert_eq!(r.to.owed_entries(), 0);
    assert_eq!(r.out(), format!("{confirm_a}{message}{confirm_b}{pong}"));
}

#[test]
fn a_masked_reply_is_rewritten_and_an_error_reply_recorded() {
    let mut r = rig(false);
    let masked = r.entry(Kind::Reply(MaskPlan::Value(Strategy::Redact)));
    r.to.push(masked);
    let failing = r.entry(Kind::Reply(MaskPlan::None));
    r.to.push(failing);
    r.feed("$5\r\nhello\r\n");
    r.feed("-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
    let out = r.out();
    assert!(out.starts_with("$10\r\n[REDACTED]\r\n"), "{out}");
    let outcomes: Vec<_> =
        r.t.records()
            .into_iter()
            .filter(|x| x["kind"] == "outcome")
            .collect();
    assert_eq!(outcomes.len(), 1, "only the error has an outcome record");
    assert_eq!(outcomes[0]["decision"], "error");
    assert!(outcomes[0]["error"]
        .as_str()
        .unwrap()
        .starts_with("WRONGTYPE"));
}

#[test]
fn a_poisoned_transaction_is_answered_execabort() {
    let mut r = rig(false);
    let exec = r.entry(Kind::ExecAbort);
    r.to.push(exec);
    // The upstream answers the DISCARD sent in EXEC's place.
    r.feed("+OK\r\n");
    assert_eq!(
        r.out(),
        "-EXECABORT Transaction discarded because of previous errors.\r\n"
    );
}

#[test]
fn resp3_pushes_are_relayed_as_they_come() {
    let mut r = rig(true);
    let get = r.entry(Kind::Reply(MaskPlan::None));
    r.to.push(get);
    let push = ">3\r\n$7\r\nmessage\r\n$6\r\nnews.a\r\n$2\r\nhi\r\n";
    r.feed(push);
    assert_eq!(r.to.owed_entries(), 1);
    r.feed("$1\r\nv\r\n");
    assert_eq!(r.out(), format!("{push}$1\r\nv\r\n"));
}
