//! The reply side fed upstream replies by hand: tollgate's own replies in order, `responseTo`
//! checked, cursors remembered with their mask plan (a getMore's batch masked like the first),
//! the `max_rows` cut (batch truncated, cursor reported closed, the upstream cursor killed), and
//! outcome records with document counts.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use bson::{doc, Bson, Document};
use tokio::sync::mpsc;

use super::ToClient;
use crate::audit::Protocol;
use crate::mongo::op_msg::{tests::frame, OpMsg};
use crate::mongo::relay::{
    ByteCap, Entry, Expect, Kind, RelayError, RowLimit, SharedCursors, Track,
};
use crate::policy::limits::RowLimitMode;
use crate::policy::mask::MaskStrategy;
use crate::policy::mongo::{MaskedField, ReplyPlan};
use crate::session::testing::TestCore;
use crate::session::{Judged, Session};

const TOKEN: &str = "tg_mongo_test";
const POLICY: &str = r#"agents = ["analyst"]
[[mongo]]
upstream = "mongo"
[[mongo.collection]]
name = "shop.*"
allow = ["read"]
"#;

struct Rig {
    t: TestCore,
    _accepted: crate::session::Accepted,
    session: Session,
    to: ToClient,
    cursors: SharedCursors,
    kills: mpsc::UnboundedReceiver<(i64, String)>,
}

fn rig() -> Rig {
    let t = TestCore::new(&[("analyst", TOKEN)], &[("analyst.toml", POLICY)]);
    let (accepted, session) = t.session(Protocol::Mongo, "analyst", TOKEN, "mongo");
    let cursors = SharedCursors::default();
    let (kill, kills) = mpsc::unbounded_channel();
    let to = ToClient::new(
        session.context().clone(),
        cursors.clone(),
        kill,
        Arc::new(AtomicUsize::new(0)),
    );
    Rig {
        t,
        _accepted: accepted,
        session,
        to,
        cursors,
        kills,
    }
}

fn email_mask() -> ReplyPlan {
    ReplyPlan::Documents(vec![MaskedField {
        path: "email".into(),
        strategy: MaskStrategy::Email,
        rule: "r".into(),
    }])
}

impl Rig {
    /// A forwarded command's entry (with its decision record).
    fn expect(&mut self, request_id: i32, plan: ReplyPlan, track: Track, limit: Option<u64>) {
        self.expect_with(request_id, plan, track, limit, None);
    }

    /// [`Rig::expect`] with a `max_result_bytes` cap too.
    fn expect_with(
        &mut self,
        request_id: i32,
        plan: ReplyPlan,
        track: Track,
        limit: Option<u64>,
        bytes: Option<ByteCap>,
    ) {
        let ticket = self
            .session
            .decide(Judged::allowed(format!("request {request_id}")), None)
            .unwrap();
        self.to.push(Entry {
            request_id,
            kind: Kind::Reply(Box::new(Expect {
                plan,
                rules: None,
                track,
                namespace: "shop.customers".into(),
                limit: limit.map(|max| RowLimit {
                    max,
                    mode: RowLimitMode::Truncate,
                    rule: "analyst: limits".into(),
                }),
                bytes,
                origin: Default::default(),
            })),
            ticket: Some(ticket),
        });
    }

    fn reply(&mut self, response_to: i32, body: Document) -> Result<(), RelayError> {
        let bytes = OpMsg::reply(response_to, 900, &body).encode(false);
        self.to.on_reply(frame(&bytes).unwrap())
    }

    /// What the client received, as (responseTo, body) pairs.
    fn written(&mut self) -> Vec<(i32, Document)> {
        let out = self.to.take_out();
        let mut buf = bytes::BytesMut::from(&out[..]);
        let mut v = Vec::new();
        while let Some(m) =
            crate::mongo::MessageReader::<&[u8]>::split_message(&mut buf, 1 << 26).unwrap()
        {
            let op = OpMsg::parse(&m).unwrap();
            v.push((op.response_to, op.body_document().unwrap()));
        }
        v
    }
}

fn batch(d: &Document) -> &Vec<Bson> {
    let c = d.get_document("cursor").unwrap();
    c.get_array("firstBatch")
        .or_else(|_| c.get_array("nextBatch"))
        .unwrap()
}

#[test]
fn local_replies_keep_their_place_and_response_to_is_checked() {
    let mut r = rig();
    r.to.push(Entry {
        request_id: 1,
        kind: Kind::Local(
            OpMsg::reply(1, 0, &doc! { "ok": 0.0, "errmsg": "refused" }).encode(false),
        ),
        ticket: None,
    });
    r.expect(2, ReplyPlan::None, Track::Open, None);
    r.to.push(Entry {
        request_id: 3,
        kind: Kind::Local(OpMsg::reply(3, 0, &doc! { "ok": 1.0 }).encode(false)),
        ticket: None,
    });
    let ids: Vec<i32> = r.written().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, [1], "the upstream's reply is owed before request 3's");
    r.reply(2, doc! { "n": 1, "ok": 1.0 }).unwrap();
    let ids: Vec<i32> = r.written().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, [2, 3]);
    r.expect(4, ReplyPlan::None, Track::Open, None);
    assert!(matches!(
        r.reply(5, doc! { "ok": 1.0 }),
        Err(RelayError::UpstreamProtocol(_))
    ));
}

#[test]
fn cursors_are_remembered_and_get_more_batches_are_masked_like_the_first() {
    let mut r = rig();
    r.expect(1, email_mask(), Track::Open, None);
    r.reply(1, doc! { "cursor": { "id": 77i64, "ns": "shop.customers", "firstBatch": [ { "_id": 1, "email": "ann@example.org" } ] }, "ok": 1.0 })
        .unwrap();
    let (_, first) = r.written().remove(0);
    assert_eq!(
        batch(&first)[0]
            .as_document()
            .unwrap()
            .get_str("email")
            .unwrap(),
        "***@example.org"
    );
    assert!(r
        .cursors
        .lock()
        .unwrap()
        .check(77, "shop.customers")
        .is_ok());
    // The getMore's own plan is None: the cursor's plan applies.
    r.expect(2, ReplyPlan::None, Track::GetMore(77), None);
    r.reply(2, doc! { "cursor": { "id": 0i64, "ns": "shop.customers", "nextBatch": [ { "_id": 2, "email": "bob@example.net" } ] }, "ok": 1.0 })
        .unwrap();
    let (_, next) = r.written().remove(0);
    assert_eq!(
        batch(&next)[0]
            .as_document()
            .unwrap()
            .get_str("email")
            .unwrap(),
        "***@example.net"
    );
    assert!(r.cursors.lock().unwrap().is_empty(), "exhausted: forgotten");
    let outcomes: Vec<_> =
        r.t.records()
            .into_iter()
            .filter(|v| v["kind"] == "outcome")
            .map(|v| v["rows"].clone())
            .collect();
    assert_eq!(outcomes, [serde_json::json!(1), serde_json::json!(1)]);
}

#[test]
fn a_cursor_is_cut_at_max_rows_and_the_upstream_cursor_killed() {
    let mut r = rig();
    let docs = |from: i32, n: i32| -> Vec<Bson> {
        (from..from + n)
            .map(|i| Bson::Document(doc! { "_id": i }))
            .collect()
    };
    r.expect(1, ReplyPlan::None, Track::Open, Some(5));
    r.reply(
        1,
        doc! { "cursor": { "id": 9i64, "ns": "shop.orders", "firstBatch": docs(0, 3) }, "ok": 1.0 },
    )
    .unwrap();
    assert_eq!(
        batch(&r.written()[0].1).len(),
        3,
        "under the cap: untouched"
    );
    r.expect(2, ReplyPlan::None, Track::GetMore(9), Some(5));
    r.reply(
        2,
        doc! { "cursor": { "id": 9i64, "ns": "shop.orders", "nextBatch": docs(3, 4) }, "ok": 1.0 },
    )
    .unwrap();
    let (_, cut) = r.written().remove(0);
    assert_eq!(batch(&cut).len(), 2, "3 + 2 = the cap of 5");
    assert_eq!(
        cut.get_document("cursor").unwrap().get_i64("id").unwrap(),
        0
    );
    assert!(cut
        .get_str("tollgateNotice")
        .unwrap()
        .contains("truncated at 5 documents (rule: analyst: limits)"));
    assert_eq!(r.kills.try_recv().unwrap(), (9, "shop.orders".to_string()));
    assert!(r.cursors.lock().unwrap().is_empty());
}

#[test]
fn a_reply_that_cannot_be_masked_is_withheld() {
    let mut r = rig();
    r.expect(1, email_mask(), Track::Open, None);
    // A body the strict decoder refuses (a string that is not UTF-8) is never relayed raw.
    let mut body = vec![];
    let s = b"\xff\xfe";
    body.push(2u8);
    body.extend_from_slice(b"x\0");
    body.extend_from_slice(&((s.len() + 1) as i32).to_le_bytes());
    body.extend_from_slice(s);
    body.push(0);
    body.extend_from_slice(b"\x01ok\0");
    body.extend_from_slice(&1.0f64.to_le_bytes());
    let mut doc_bytes = ((body.len() + 5) as i32).to_le_bytes().to_vec();
    doc_bytes.extend_from_slice(&body);
    doc_bytes.push(0);
    let mut msg = Vec::new();
    let len = 16 + 5 + doc_bytes.len();
    msg.extend_from_slice(&(len as i32).to_le_bytes());
    msg.extend_from_slice(&900i32.to_le_bytes());
    msg.extend_from_slice(&1i32.to_le_bytes());
    msg.extend_from_slice(&2013i32.to_le_bytes());
    msg.extend_from_slice(&0u32.to_le_bytes());
    msg.push(0);
    msg.extend_from_slice(&doc_bytes);
    r.to.on_reply(frame(&msg).unwrap()).unwrap();
    let (id, d) = r.written().remove(0);
    assert_eq!(id, 1);
    assert_eq!(
        d.get_str("errmsg").unwrap(),
        "tollgate: the reply could not be masked"
    );
}

/// `max_result_bytes`: a batch whose reply passes it keeps the documents that fit (truncate
/// mode, the cursor closed and killed upstream), or is refused (refuse mode); a reply without a
/// batch over it is refused; a reply under it is untouched.
#[test]
fn replies_over_max_result_bytes_are_cut_or_refused() {
    let mut r = rig();
    let cap = |mode| ByteCap {
        max: 100,
        mode,
        rule: "analyst: limits".into(),
    };
    // Each document `{_id: i, s: "xxxxxxxxxx"}` is 32 bytes of BSON: 3 fit in 100.
    let docs = |n: i32| -> Vec<Bson> {
        (0..n)
            .map(|i| Bson::Document(doc! { "_id": i, "s": "xxxxxxxxxx" }))
            .collect()
    };
    r.expect_with(
        1,
        ReplyPlan::None,
        Track::Open,
        None,
        Some(cap(RowLimitMode::Truncate)),
    );
    r.reply(
        1,
        doc! { "cursor": { "id": 7i64, "ns": "shop.orders", "firstBatch": docs(5) }, "ok": 1.0 },
    )
    .unwrap();
    let (_, cut) = r.written().remove(0);
    assert_eq!(batch(&cut).len(), 3);
    assert_eq!(
        cut.get_document("cursor").unwrap().get_i64("id").unwrap(),
        0
    );
    assert!(cut
        .get_str("tollgateNotice")
        .unwrap()
        .contains("truncated to 3 documents, the first 100 bytes (rule: analyst: limits)"));
    assert_eq!(r.kills.try_recv().unwrap(), (7, "shop.orders".to_string()));

    r.expect_with(
        2,
        ReplyPlan::None,
        Track::Open,
        None,
        Some(cap(RowLimitMode::Refuse)),
    );
    r.reply(
        2,
        doc! { "cursor": { "id": 8i64, "ns": "shop.orders", "firstBatch": docs(5) }, "ok": 1.0 },
    )
    .unwrap();
    let (_, refused) = r.written().remove(0);
    assert_eq!(refused.get_f64("ok").ok(), Some(0.0));
    assert!(refused
        .get_str("errmsg")
        .unwrap()
        .contains("more than 100 bytes"));

    r.expect_with(
        3,
        ReplyPlan::None,
        Track::Kill(vec![]),
        None,
        Some(cap(RowLimitMode::Truncate)),
    );
    r.reply(3, doc! { "values": docs(5), "ok": 1.0 }).unwrap();
    let (_, refused) = r.written().remove(0);
    assert_eq!(
        refused.get_i32("code").ok(),
        Some(crate::refusal::RefusalClass::TooLarge.mongo_code().0)
    );

    r.expect_with(
        4,
        ReplyPlan::None,
        Track::Open,
        None,
        Some(cap(RowLimitMode::Truncate)),
    );
    r.reply(
        4,
        doc! { "cursor": { "id": 0i64, "ns": "shop.orders", "firstBatch": docs(1) }, "ok": 1.0 },
    )
    .unwrap();
    assert_eq!(
        batch(&r.written()[0].1).len(),
        1,
        "under the cap: untouched"
    );
}
