//! The client side fed messages by hand on an in-memory session core: what is forwarded as
//! received and what is answered by tollgate, own-cursor checks, `endSessions` scoping,
//! `exhaustAllowed` cleared, `hello` answered locally, refusals of fire-and-forget writes, and the
//! agent's rate shared with its sessions on other protocols.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use bson::spec::BinarySubtype;
use bson::{doc, Binary, Document};

use super::{FromClient, Step};
use crate::audit::Protocol;
use crate::mongo::hello::UpstreamFacts;
use crate::mongo::lsids::{ConnectionSessions, LogicalSessions, FOREIGN_SESSION_RULE};
use crate::mongo::op_msg::{tests::frame, OpMsg, EXHAUST_ALLOWED, MORE_TO_COME};
use crate::mongo::relay::{Entry, Kind, Relay, SharedCursors, Track};
use crate::policy::mongo::{MongoPolicy, ReplyPlan};
use crate::session::testing::TestCore;
use crate::session::Judged;

const TOKEN: &str = "tg_mongo_test";
const POLICY: &str = r#"agents = ["analyst"]
[limits]
statements_per_minute = 60
burst = 3
[[redis]]
upstream = "cache"
commands = ["@read"]
read_keys = ["*"]
[[mongo]]
upstream = "mongo"
[[mongo.collection]]
name = "shop.orders"
allow = ["read"]
[[mongo.collection]]
name = "shop.customers"
allow = ["read"]
mask = { email = "email" }
"#;

struct Rig {
    t: TestCore,
    _accepted: crate::session::Accepted,
    from: FromClient,
    cursors: SharedCursors,
    lsids: Arc<LogicalSessions>,
}

fn rig() -> Rig {
    let t = TestCore::new(&[("analyst", TOKEN)], &[("analyst.toml", POLICY)]);
    let (accepted, session) = t.session(Protocol::Mongo, "analyst", TOKEN, "mongo");
    let cursors = SharedCursors::default();
    let lsids = Arc::new(LogicalSessions::default());
    let relay = Relay {
        policy: MongoPolicy::new(session.agent().clone(), session.upstream().clone()),
        session,
        facts: UpstreamFacts::from_hello(&doc! { "maxWireVersion": 21 }).unwrap(),
        connection_id: 7,
        lsids: lsids.clone(),
        cursors: cursors.clone(),
    };
    let from = FromClient::new(relay, cursors.clone(), Arc::new(AtomicUsize::new(0)));
    Rig {
        t,
        _accepted: accepted,
        from,
        cursors,
        lsids,
    }
}

/// A cursor's origin under the policy in force (no reload since).
fn current(r: &Rig) -> crate::mongo::cursors::Origin {
    crate::mongo::cursors::Origin {
        version: r.t.core.policy.version(),
        command: None,
        bytes: 0,
    }
}

fn msg(id: i32, flags: u32, body: Document) -> crate::mongo::Message {
    let mut m = OpMsg::reply(0, id, &body);
    m.flags = flags;
    frame(&m.encode(false)).unwrap()
}

/// The reply tollgate queued itself, decoded.
fn answered(step: &Step) -> Document {
    let Step::Answer(entries) = step else {
        panic!("forwarded, not answered")
    };
    let Kind::Local(bytes) = &entries[0].kind else {
        panic!("not a local reply")
    };
    let m = frame(bytes).unwrap();
    OpMsg::parse(&m).unwrap().body_document().unwrap()
}

fn forwarded(step: Step) -> (Entry, Vec<u8>) {
    match step {
        Step::Forward(Some(e), bytes) => (e, bytes),
        _ => panic!("not forwarded"),
    }
}

fn lsid(byte: u8) -> Document {
    doc! { "id": Binary { subtype: BinarySubtype::Uuid, bytes: vec![byte; 16] } }
}

#[test]
fn allowed_commands_go_out_as_received_refusals_are_answered() {
    let mut r = rig();
    let m = msg(
        1,
        0,
        doc! { "find": "orders", "filter": { "_id": 1 }, "$db": "shop" },
    );
    let (entry, bytes) = forwarded(r.from.message(m.clone()));
    assert_eq!(
        bytes,
        m.raw.to_vec(),
        "nothing to rewrite: the bytes received"
    );
    assert_eq!(entry.request_id, 1);
    assert!(matches!(&entry.kind, Kind::Reply(e) if e.track == Track::Open));
    let step = r
        .from
        .message(msg(2, 0, doc! { "find": "secrets", "$db": "shop" }));
    let d = answered(&step);
    assert_eq!(d.get_i32("code").unwrap(), 13);
    assert_eq!(
        d.get_str("errmsg").unwrap(),
        "tollgate: no rule allows find on shop.secrets (rule: default-deny)"
    );
    // A masked read is recorded as masked; the refusal as blocked.
    let (e, _) = forwarded(
        r.from
            .message(msg(3, 0, doc! { "find": "customers", "$db": "shop" })),
    );
    assert!(matches!(&e.kind, Kind::Reply(x) if matches!(x.plan, ReplyPlan::Documents(_))));
    let decisions: Vec<String> =
        r.t.records()
            .iter()
            .filter(|v| v["kind"] == "decision")
            .map(|v| v["decision"].as_str().unwrap().to_string())
            .collect();
    assert_eq!(decisions, ["allowed", "blocked", "masked"]);
}

#[test]
fn only_own_cursors_may_be_continued() {
    let mut r = rig();
    let get_more = |id: i32| {
        msg(
            id,
            0,
            doc! { "getMore": 42i64, "collection": "orders", "$db": "shop" },
        )
    };
    let d = answered(&r.from.message(get_more(1)));
    assert!(
        d.get_str("errmsg")
            .unwrap()
            .ends_with("(rule: builtin: foreign-cursor)"),
        "{d:?}"
    );
    // As the server answers a cursor it does not have: drivers raise CursorNotFound.
    assert_eq!(d.get_i32("code").ok(), Some(43), "{d:?}");
    assert_eq!(d.get_str("codeName").ok(), Some("CursorNotFound"), "{d:?}");
    r.cursors
        .lock()
        .unwrap()
        .open(42, "shop.orders", &ReplyPlan::None, 0, current(&r));
    let (e, _) = forwarded(r.from.message(get_more(2)));
    assert!(matches!(&e.kind, Kind::Reply(x) if x.track == Track::GetMore(42)));
    // The same id on another namespace is not the same cursor.
    let d = answered(&r.from.message(msg(
        3,
        0,
        doc! { "getMore": 42i64, "collection": "customers", "$db": "shop" },
    )));
    assert!(d
        .get_str("errmsg")
        .unwrap()
        .contains("belongs to shop.orders"));
}

#[test]
fn end_sessions_ends_only_this_connections_sessions() {
    let mut r = rig();
    forwarded(r.from.message(msg(
        1,
        0,
        doc! { "find": "orders", "lsid": lsid(1), "$db": "shop" },
    )));
    let (_, bytes) = forwarded(r.from.message(msg(
        2,
        0,
        doc! { "endSessions": [lsid(1), lsid(2)], "$db": "admin" },
    )));
    let sent = OpMsg::parse(&frame(&bytes).unwrap())
        .unwrap()
        .body_document()
        .unwrap();
    assert_eq!(sent.get_array("endSessions").unwrap().len(), 1, "{sent:?}");
    let d = answered(
        &r.from
            .message(msg(3, 0, doc! { "endSessions": [lsid(2)], "$db": "admin" })),
    );
    assert_eq!(d.get_f64("ok").unwrap(), 1.0, "answered by tollgate: {d:?}");
}

/// Every agent reaches the upstream as the same vaulted user, and a server ties a logical
/// session (and its transaction) to the user only: a session id another agent uses is refused
/// in any command, so neither its transaction nor an `endSessions` (after a `ping` naming it, as
/// a review found) can reach it. The agent's own connections share their sessions.
#[test]
fn another_agents_logical_session_cannot_be_used_or_ended() {
    let mut r = rig();
    let mut writers = ConnectionSessions::new(r.lsids.clone(), "writer".into());
    writers.use_session([9; 16]).unwrap();
    for (i, body) in [
        doc! { "ping": 1, "lsid": lsid(9), "$db": "admin" },
        doc! { "find": "orders", "lsid": lsid(9), "txnNumber": 1i64, "autocommit": false, "$db": "shop" },
        doc! { "abortTransaction": 1, "lsid": lsid(9), "txnNumber": 1i64, "autocommit": false, "$db": "admin" },
    ]
    .into_iter()
    .enumerate()
    {
        let d = answered(&r.from.message(msg(i as i32 + 1, 0, body)));
        assert!(
            d.get_str("errmsg")
                .unwrap()
                .ends_with(&format!("(rule: {FOREIGN_SESSION_RULE})")),
            "{d:?}"
        );
    }
    // Not this connection's: nothing to end upstream.
    let d = answered(
        &r.from
            .message(msg(9, 0, doc! { "endSessions": [lsid(9)], "$db": "admin" })),
    );
    assert_eq!(d.get_f64("ok").unwrap(), 1.0);
    // Another connection of the same agent shares its sessions.
    forwarded(r.from.message(msg(
        10,
        0,
        doc! { "find": "orders", "lsid": lsid(3), "$db": "shop" },
    )));
    let mut same = ConnectionSessions::new(r.lsids.clone(), "analyst".into());
    same.use_session([3; 16]).unwrap();
    // The other agent's connections gone, the server still keeps its session: still refused.
    drop(writers);
    let d = answered(&r.from.message(msg(
        11,
        0,
        doc! { "ping": 1, "lsid": lsid(9), "$db": "admin" },
    )));
    assert!(d.get_str("errmsg").unwrap().contains(FOREIGN_SESSION_RULE));
    // A session id of another shape than a UUID is not taken (nor kept, whatever its size).
    let big = doc! { "id": Binary { subtype: BinarySubtype::Generic, bytes: vec![1; 1 << 20] } };
    let d = answered(
        &r.from
            .message(msg(12, 0, doc! { "ping": 1, "lsid": big, "$db": "admin" })),
    );
    assert!(
        d.get_str("errmsg")
            .unwrap()
            .contains("builtin: malformed-command"),
        "{d:?}"
    );
}

/// A command refused on its way (another session's cursor, the agent's rate) never reached the
/// server: the session id it named stays free (a review took ids with refused getMores).
#[test]
fn a_refused_command_takes_no_session_id() {
    let mut r = rig();
    let d = answered(&r.from.message(msg(
        1,
        0,
        doc! { "getMore": 42i64, "collection": "orders", "lsid": lsid(20), "$db": "shop" },
    )));
    assert!(
        d.get_str("errmsg").unwrap().contains("foreign-cursor"),
        "{d:?}"
    );
    let mut writers = ConnectionSessions::new(r.lsids.clone(), "writer".into());
    writers.use_session([20; 16]).unwrap();
}

#[test]
fn exhaust_is_cleared_hello_is_local_fire_and_forget_refusals_get_no_reply() {
    let mut r = rig();
    r.cursors
        .lock()
        .unwrap()
        .open(5, "shop.orders", &ReplyPlan::None, 0, current(&r));
    let (_, bytes) = forwarded(r.from.message(msg(
        2,
        EXHAUST_ALLOWED,
        doc! { "getMore": 5i64, "collection": "orders", "$db": "shop" },
    )));
    let sent = OpMsg::parse(&frame(&bytes).unwrap()).unwrap();
    assert_eq!(sent.flags & EXHAUST_ALLOWED, 0);
    let d = answered(
        &r.from
            .message(msg(3, 0, doc! { "hello": 1, "$db": "admin" })),
    );
    assert!(d.get_bool("isWritablePrimary").unwrap());
    assert!(d.get("hosts").is_none() && d.get("setName").is_none());
    let step = r.from.message(msg(
        4,
        MORE_TO_COME,
        doc! { "insert": "orders", "documents": [ { "_id": 1 } ], "$db": "shop" },
    ));
    assert!(
        matches!(step, Step::Answer(ref e) if e.is_empty()),
        "no reply owed"
    );
    assert!(r.t.records().iter().any(|v| v["decision"] == "blocked"
        && v["statement"]
            .as_str()
            .unwrap()
            .starts_with("insert shop.orders")));
}

#[test]
fn the_rate_is_shared_with_the_agents_other_protocols() {
    let mut r = rig();
    // The burst spent on a Redis session of the same agent.
    let (_b, redis) = r.t.session(Protocol::Redis, "analyst", TOKEN, "cache");
    let limits =
        r.t.core
            .policy
            .agent_policy("analyst")
            .unwrap()
            .limits
            .clone();
    let spent = (0..10)
        .take_while(|_| {
            redis
                .decide(Judged::allowed("GET k".into()), Some(&limits))
                .is_ok()
        })
        .count();
    assert!((3..10).contains(&spent), "{spent}");
    let d = answered(
        &r.from
            .message(msg(1, 0, doc! { "find": "orders", "$db": "shop" })),
    );
    assert_eq!(d.get_i32("code").unwrap(), 462, "{d:?}");
    assert!(
        d.get_str("errmsg")
            .unwrap()
            .ends_with("(rule: analyst: limits)"),
        "{d:?}"
    );
    assert!(d
        .get_str("tollgateHint")
        .unwrap()
        .starts_with("retry after"));
}
