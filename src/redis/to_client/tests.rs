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
use crate::redis::relay::{Entry, Kind, OwnFilter};
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
    /// Upstream connection 7 at 127.0.0.1:5007 is the analyst's; 8 at :5008 another agent's.
    _own: Vec<crate::redis::clients::ClientEntry>,
}

fn rig(resp3: bool) -> Rig {
    let t = TestCore::new(&[("analyst", TOKEN)], &[("analyst.toml", POLICY)]);
    let (accepted, session) = t.session(Protocol::Redis, "analyst", TOKEN, "cache");
    let clients: Arc<crate::redis::clients::UpstreamClients> = Default::default();
    let own = vec![
        clients.register(7, "127.0.0.1:5007".into(), "analyst".into()),
        clients.register(8, "127.0.0.1:5008".into(), "writer".into()),
    ];
    let to = ToClient::new(
        session.context().clone(),
        resp3,
        Arc::new(AtomicUsize::new(0)),
        clients,
    );
    Rig {
        t,
        _accepted: accepted,
        session,
        to,
        _own: own,
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
    let exec = r.entry(Kind::ExecAbort(crate::redis::reply::QUEUED_ABORT));
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

fn own(filter: OwnFilter) -> Kind {
    Kind::Own {
        filter,
        agent: "analyst".into(),
    }
}

#[test]
fn reset_returns_to_resp2_and_the_relogin_reply_is_never_shown() {
    let mut r = rig(true);
    let reset = r.entry(Kind::Reset);
    r.to.push(reset);
    r.to.push(Entry {
        kind: Kind::Relogin,
        ticket: None,
    });
    let get = r.entry(Kind::Reply(MaskPlan::None));
    r.to.push(get);
    r.feed("+RESET\r\n");
    r.feed("+OK\r\n");
    r.feed("$1\r\nv\r\n");
    assert_eq!(r.out(), "+RESET\r\n$1\r\nv\r\n");
    // A failed login after RESET ends the session with an error.
    r.to.push(Entry {
        kind: Kind::Relogin,
        ticket: None,
    });
    assert!(r.to.on_frame(Bytes::from_static(b"-WRONGPASS invalid\r\n")));
    assert!(r
        .out()
        .contains("tollgate: the upstream refused tollgate's login after RESET"));
}

#[test]
fn client_kill_parts_are_summed_and_lists_filtered() {
    let mut r = rig(false);
    let kill = r.entry(Kind::KillParts {
        left: 2,
        killed: 0,
        old_style: false,
        error: None,
    });
    r.to.push(kill);
    let list = r.entry(own(OwnFilter::ClientList));
    r.to.push(list);
    r.feed(":1\r\n");
    assert_eq!(r.out(), "", "the sum waits for every part");
    r.feed(":0\r\n");
    let lines =
        "id=7 addr=127.0.0.1:5007 cmd=client|list\nid=8 addr=127.0.0.1:5008 cmd=get secret\n";
    r.feed(&format!("${}\r\n{lines}\r\n", lines.len()));
    let mine = "id=7 addr=127.0.0.1:5007 cmd=client|list\n";
    assert_eq!(r.out(), format!(":1\r\n${}\r\n{mine}\r\n", mine.len()));
    assert_eq!(r.to.owed_entries(), 0);
}

#[test]
fn monitor_relays_own_lines_only() {
    let mut r = rig(false);
    let monitor = r.entry(own(OwnFilter::Monitor));
    r.to.push(monitor);
    r.feed("+OK\r\n");
    let mine = "+1700000000.000001 [0 127.0.0.1:5007] \"get\" \"k\"\r\n";
    let theirs = "+1700000000.000002 [0 127.0.0.1:5008] \"set\" \"secret\" \"v\"\r\n";
    let script = "+1700000000.000003 [0 lua] \"get\" \"x\"\r\n";
    r.feed(mine);
    r.feed(theirs);
    r.feed(script);
    assert_eq!(r.out(), format!("+OK\r\n{mine}"));
    // A RESET ends monitor mode.
    let reset = r.entry(Kind::Reset);
    r.to.push(reset);
    r.feed("+RESET\r\n");
    let ping = r.entry(Kind::Reply(MaskPlan::None));
    r.to.push(ping);
    r.feed(theirs);
    assert_eq!(r.out(), format!("+RESET\r\n{theirs}"));
}

#[test]
fn slowlog_shows_own_entries_and_counts_them() {
    let mut r = rig(false);
    let entry = |id: u8, addr: &str| {
        format!(
            "*6\r\n:{id}\r\n:1700000000\r\n:15000\r\n*1\r\n$4\r\nkeys\r\n${}\r\n{addr}\r\n$0\r\n\r\n",
            addr.len()
        )
    };
    let all = format!(
        "*2\r\n{}{}",
        entry(2, "127.0.0.1:5008"),
        entry(1, "127.0.0.1:5007")
    );
    let get = r.entry(own(OwnFilter::SlowlogGet(10)));
    r.to.push(get);
    let len = r.entry(own(OwnFilter::SlowlogLen));
    r.to.push(len);
    r.feed(&all);
    r.feed(&all);
    assert_eq!(
        r.out(),
        format!("*1\r\n{}:1\r\n", entry(1, "127.0.0.1:5007"))
    );
}

#[test]
fn replies_taken_from_a_shared_inbox_go_after_the_own_replies_sent_before_them() {
    use crate::redis::shared::inbox::{Inbox, Piece};
    // The batch [refusal, GET] reaches the channel, and the GET's reply the inbox, both after
    // the reply half last looked at the channel: the refusal must still come first.
    let mut r = rig(false);
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let get = r.entry(Kind::Reply(MaskPlan::None));
    tx.try_send(vec![
        Entry::local(Bytes::from_static(b"-NOPERM refused\r\n")),
        get,
    ])
    .unwrap();
    let inbox = Inbox::default();
    inbox.expect(1);
    inbox.deliver([Piece::Whole(Bytes::from_static(b"$1\r\nv\r\n"))]);
    assert!(!r.to.answer_shared(&inbox, &mut rx).unwrap());
    assert_eq!(&r.to.take_out()[..], b"-NOPERM refused\r\n$1\r\nv\r\n");
    assert_eq!(r.to.owed_entries(), 0);
}

#[test]
fn a_large_reply_in_pieces_is_relayed_as_it_comes_or_masked_whole() {
    use crate::redis::shared::inbox::{Inbox, Piece};
    let mut r = rig(false);
    let (_tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Entry>>(4);
    let inbox = Inbox::default();
    // Unmasked: the head is relayed at once, the tail completes the entry.
    let e = r.entry(Kind::Reply(MaskPlan::None));
    r.to.push(e);
    inbox.expect(1);
    inbox.deliver([Piece::Head(Bytes::from_static(b"$6\r\nabc"))]);
    r.to.answer_shared(&inbox, &mut rx).unwrap();
    assert_eq!(
        &r.to.take_out()[..],
        b"$6\r\nabc",
        "the head waits for nothing"
    );
    assert_eq!(r.to.owed_entries(), 1);
    inbox.deliver([Piece::Tail(Bytes::from_static(b"def\r\n"))]);
    r.to.answer_shared(&inbox, &mut rx).unwrap();
    assert_eq!(&r.to.take_out()[..], b"def\r\n");
    assert_eq!(r.to.owed_entries(), 0);
    // Masked: nothing leaves until the reply is whole, then the mask applies to all of it.
    let plan = MaskPlan::Value(Strategy::Redact);
    let e = r.entry(Kind::Reply(plan));
    r.to.push(e);
    inbox.expect(1);
    inbox.deliver([Piece::Head(Bytes::from_static(b"$6\r\nsec"))]);
    r.to.answer_shared(&inbox, &mut rx).unwrap();
    assert!(
        r.to.take_out().is_empty(),
        "a masked reply went out in part"
    );
    inbox.deliver([Piece::Tail(Bytes::from_static(b"ret\r\n"))]);
    r.to.answer_shared(&inbox, &mut rx).unwrap();
    let out = r.to.take_out();
    assert!(!out.windows(6).any(|w| w == b"secret"), "{out:?}");
    assert_eq!(r.to.owed_entries(), 0);
}

/// Feeds `frames` until the reply half ends the session; returns what it produced and whether
/// it ended.
fn feed_until_closed(r: &mut Rig, frames: &[&str]) -> (String, bool) {
    let mut out = String::new();
    for f in frames {
        if r.to.on_frame(Bytes::copy_from_slice(f.as_bytes())) {
            out.push_str(&r.out());
            return (out, true);
        }
        out.push_str(&r.out());
    }
    (out, false)
}

/// Review F1, replayed against the entries tollgate owed before the fix (SUBSCRIBE queued in
/// MULTI): Redis answered EXEC with `*1` and one more confirmation, and every later reply was
/// paired with the command before it, the HGET reply landing where nothing was owed. The reply
/// half now ends the session at the first reply that does not fit, and relays nothing of it.
#[test]
fn a_reply_that_fits_no_command_ends_the_session_unrelayed() {
    let mut r = rig(false);
    let email = MaskPlan::Value(Strategy::Email);
    for kind in [
        Kind::Reply(MaskPlan::None),  // MULTI
        Kind::Queued(MaskPlan::None), // SUBSCRIBE news.a news.b
        Kind::Exec,
        Kind::Reply(MaskPlan::None), // PING
        Kind::Subscribe {
            remaining: Some(2),
            kind: SubKind::Channel,
        }, // UNSUBSCRIBE news.a news.b
        Kind::Reply(email),          // HGET session:31 email
        Kind::Reply(MaskPlan::None), // GET cache:1
    ] {
        let e = r.entry(kind);
        r.to.push(e);
    }
    let (out, closed) = feed_until_closed(
        &mut r,
        &[
            "+OK\r\n",
            "+QUEUED\r\n",
            "*1\r\n*3\r\n$9\r\nsubscribe\r\n$6\r\nnews.a\r\n:1\r\n",
            "*3\r\n$9\r\nsubscribe\r\n$6\r\nnews.b\r\n:2\r\n",
            "*2\r\n$4\r\npong\r\n$0\r\n\r\n",
            "*3\r\n$11\r\nunsubscribe\r\n$6\r\nnews.a\r\n:1\r\n",
            "*3\r\n$11\r\nunsubscribe\r\n$6\r\nnews.b\r\n:0\r\n",
            "$18\r\nuser31@example.com\r\n",
            "$14\r\ncached value 1\r\n",
        ],
    );
    assert!(closed, "the session must end: {out}");
    assert!(!out.contains("user31@"), "{out}");
    // Nothing more is relayed once the pairing is lost.
    assert!(r
        .to
        .on_frame(Bytes::from_static(b"$18\r\nuser31@example.com\r\n")));
    assert!(!r.out().contains("user31@"));
}

/// A reply with nothing owed is never relayed, even alone.
#[test]
fn a_reply_nobody_waits_for_is_not_relayed() {
    let mut r = rig(false);
    assert!(r
        .to
        .on_frame(Bytes::from_static(b"$18\r\nuser31@example.com\r\n")));
    assert_eq!(r.out(), "");
    assert!(matches!(
        r.to.ending(),
        Err(crate::redis::relay::RelayError::Desync)
    ));
}

/// The replies each kind of entry can get: a value where +QUEUED was due (the upstream is not in
/// the transaction tollgate thinks it is), +QUEUED where a value was due, HELLO answered
/// +QUEUED (review F2: the RESP2/3 switch must not happen), EXEC with a count that is not the
/// number of queued commands, a failed RESET, and +PONG where a confirmation was due.
#[test]
fn replies_that_do_not_fit_their_command_end_the_session() {
    let email = || MaskPlan::Value(Strategy::Email);
    let cases: Vec<(bool, Vec<Kind>, Vec<&str>)> = vec![
        (
            false,
            vec![Kind::Queued(email())],
            vec!["$18\r\nuser31@example.com\r\n"],
        ),
        (false, vec![Kind::Reply(email())], vec!["+QUEUED\r\n"]),
        (false, vec![Kind::Hello(Some(3))], vec!["+QUEUED\r\n"]),
        (true, vec![Kind::Hello(Some(2))], vec!["+QUEUED\r\n"]),
        (
            false,
            vec![Kind::Queued(email()), Kind::Exec],
            vec!["+QUEUED\r\n", "*2\r\n*0\r\n$18\r\nuser31@example.com\r\n"],
        ),
        (
            false,
            vec![Kind::Queued(MaskPlan::None), Kind::Exec],
            vec!["+QUEUED\r\n", "*0\r\n"],
        ),
        (false, vec![Kind::Reset], vec!["-NOPERM no\r\n"]),
        (
            false,
            vec![Kind::Subscribe {
                remaining: Some(2),
                kind: SubKind::Channel,
            }],
            vec!["+PONG\r\n"],
        ),
    ];
    for (resp3, kinds, frames) in cases {
        let mut r = rig(resp3);
        let shown = format!("{kinds:?}");
        for k in kinds {
            let e = r.entry(k);
            r.to.push(e);
        }
        let (out, closed) = feed_until_closed(&mut r, &frames);
        assert!(closed, "{shown}: {out}");
        assert!(!out.contains("user31@"), "{shown}: {out}");
        assert_eq!(r.to.resp3, resp3, "{shown}: the protocol did not switch");
    }
    // And the replies that do fit.
    let mut r = rig(false);
    for k in [
        Kind::Queued(email()),
        Kind::Queued(MaskPlan::None),
        Kind::Exec,
        Kind::Hello(Some(3)),
    ] {
        let e = r.entry(k);
        r.to.push(e);
    }
    r.feed("+QUEUED\r\n");
    r.feed("-ERR unknown command\r\n");
    r.feed("*1\r\n$18\r\nuser31@example.com\r\n");
    r.feed("%1\r\n$5\r\nproto\r\n:3\r\n");
    let out = r.out();
    assert!(
        out.contains("***@example.com") && !out.contains("user31@"),
        "{out}"
    );
    assert!(r.to.resp3);
}

/// The reviewer's suspicion: UNSUBSCRIBE without arguments while the upstream holds
/// subscriptions tollgate never saw is answered with more confirmations than tollgate counts.
/// The one too many is no reply to the HGET after it: the session ends there, before the HGET's
/// value could go out in the GET's place, unmasked.
#[test]
fn a_confirmation_where_a_reply_is_due_ends_the_session() {
    let mut r = rig(false);
    for kind in [
        Kind::Subscribe {
            remaining: None,
            kind: SubKind::Channel,
        },
        Kind::Reply(MaskPlan::Value(Strategy::Email)),
        Kind::Reply(MaskPlan::None),
    ] {
        let e = r.entry(kind);
        r.to.push(e);
    }
    let (out, closed) = feed_until_closed(
        &mut r,
        &[
            "*3\r\n$11\r\nunsubscribe\r\n$6\r\nnews.a\r\n:1\r\n",
            "*3\r\n$11\r\nunsubscribe\r\n$6\r\nnews.b\r\n:0\r\n",
            "$18\r\nuser31@example.com\r\n",
            "$14\r\ncached value 1\r\n",
        ],
    );
    assert!(closed, "{out}");
    assert!(!out.contains("user31@") && !out.contains("news.b"), "{out}");
}
