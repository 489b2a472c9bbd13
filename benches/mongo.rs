//! MongoDB hot path: framing + OP_MSG parse + strict BSON + the command model + the decision,
//! for a find by _id, an aggregation with a masked $lookup, and reply masking of a 100-document
//! batch.

use bson::{doc, Bson, Document};
use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tollgate::mongo::mask_reply::mask_reply;
use tollgate::mongo::op_msg::OpMsg;
use tollgate::mongo::wire::{MessageReader, MAX_MESSAGE_BYTES};
use tollgate::policy::mongo::{decide, Command, DecideLimits, MongoRules};

fn rules() -> MongoRules {
    #[derive(serde::Deserialize)]
    struct Only {
        mongo: Vec<tollgate::policy::mongo::file::MongoBlock>,
    }
    let text = r#"
[[mongo]]
upstream = "mongo"
[[mongo.collection]]
name = "shop.orders"
allow = ["read"]
[[mongo.collection]]
name = "shop.customers"
allow = ["read"]
mask = { email = "email", phone = "partial:4", ssn = "redact" }
"#;
    let only: Only = toml::from_str(text).unwrap();
    let mut r = MongoRules::default();
    tollgate::policy::mongo::compile::merge(&mut r, "analyst", &only.mongo[0]);
    r
}

fn message(body: &Document) -> Vec<u8> {
    OpMsg::reply(0, 1, body).encode(false)
}

fn judge(bytes: &[u8], rules: &MongoRules) -> bool {
    let mut buf = BytesMut::from(bytes);
    let msg = MessageReader::<&[u8]>::split_message(&mut buf, MAX_MESSAGE_BYTES)
        .unwrap()
        .unwrap();
    let m = OpMsg::parse(&msg).unwrap();
    let cmd = Command::new(m.body_document().unwrap(), m.sequence_documents().unwrap()).unwrap();
    decide(rules, &cmd, &DecideLimits::default()).is_ok()
}

fn bench(c: &mut Criterion) {
    let r = rules();
    let find = message(&doc! {
        "find": "orders", "filter": { "_id": 4711 }, "limit": 1, "singleBatch": true,
        "lsid": { "id": bson::Binary { subtype: bson::spec::BinarySubtype::Uuid, bytes: vec![1; 16] } },
        "$db": "shop",
    });
    assert!(judge(&find, &r));
    c.bench_function("mongo/find_by_id (frame+parse+validate+decide)", |b| {
        b.iter(|| judge(black_box(&find), &r))
    });
    let agg = message(&doc! {
        "aggregate": "orders",
        "pipeline": [
            { "$match": { "amount": { "$gt": 100 } } },
            { "$lookup": { "from": "customers", "localField": "customer_id", "foreignField": "_id", "as": "c" } },
            { "$unwind": "$c" },
            { "$group": { "_id": "$c.region", "total": { "$sum": "$amount" }, "n": { "$sum": 1 } } },
            { "$sort": { "total": -1 } },
            { "$limit": 10 },
        ],
        "cursor": {}, "$db": "shop",
    });
    assert!(judge(&agg, &r));
    c.bench_function(
        "mongo/aggregate_lookup_group (frame+parse+validate+decide)",
        |b| b.iter(|| judge(black_box(&agg), &r)),
    );
    let batch: Vec<Bson> = (0..100)
        .map(|i| {
            Bson::Document(doc! {
                "_id": i, "name": "Ann Example", "email": format!("ann{i}@example.com"),
                "phone": "+1-555-201-1234", "ssn": "901-22-3333", "region": "EU",
            })
        })
        .collect();
    let reply =
        doc! { "cursor": { "id": 0i64, "ns": "shop.customers", "firstBatch": batch }, "ok": 1.0 };
    let plan = decide(
        &r,
        &Command::new(doc! { "find": "customers", "$db": "shop" }, vec![]).unwrap(),
        &DecideLimits::default(),
    )
    .unwrap()
    .reply;
    c.bench_function("mongo/mask_100_documents", |b| {
        b.iter(|| {
            let mut d = reply.clone();
            mask_reply(&mut d, &plan, &r, "key");
            black_box(d)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
