//! Property tests of the decoder and the decision: whatever bytes arrive, framing, OP_MSG
//! parsing, BSON validation, the command model and the policy give an answer (a message, a
//! decision or an error) and never panic.

use bson::doc;
use bytes::BytesMut;
use proptest::prelude::*;

use super::op_msg::{encode_document, OpMsg, Sequence};
use super::op_query;
use super::wire::{MessageReader, MAX_MESSAGE_BYTES};
use crate::policy::mongo::{decide, Command, DecideLimits, MongoRules};

/// Frames, parses and judges `bytes`; returns how far it got.
fn run(bytes: &[u8], rules: &MongoRules) -> u8 {
    let mut buf = BytesMut::from(bytes);
    let Ok(Some(msg)) = MessageReader::<&[u8]>::split_message(&mut buf, MAX_MESSAGE_BYTES) else {
        return 0;
    };
    if msg.header.op_code == super::OpCode::Query {
        return if op_query::parse_handshake(&msg).is_ok() {
            2
        } else {
            1
        };
    }
    let Ok(parsed) = OpMsg::parse(&msg) else {
        return 1;
    };
    let (Ok(body), Ok(seqs)) = (parsed.body_document(), parsed.sequence_documents()) else {
        return 2;
    };
    let Ok(cmd) = Command::new(body, seqs) else {
        return 3;
    };
    match decide(rules, &cmd, &DecideLimits::default()) {
        Ok(_) => 5,
        Err(_) => 4,
    }
}

fn rules() -> MongoRules {
    use crate::policy::glob::Glob;
    use crate::policy::mask::MaskStrategy;
    use crate::policy::mongo::rules::{CollectionMatcher, OpSet};
    MongoRules {
        collections: vec![CollectionMatcher {
            glob: Glob::new("shop.*"),
            allow: OpSet::parse_word("*").unwrap(),
            deny: OpSet::default(),
            rule: "r".into(),
            masks: vec![("email".into(), MaskStrategy::Email)],
            row_filter: Some(doc! { "region": "EU" }),
        }],
        ..MongoRules::default()
    }
}

fn valid_message(seed: u8) -> Vec<u8> {
    let body = match seed % 4 {
        0 => doc! { "find": "orders", "filter": { "a": { "$gt": 1 } }, "$db": "shop" },
        1 => {
            doc! { "aggregate": "orders", "pipeline": [ { "$lookup": { "from": "customers", "pipeline": [ { "$match": { "x": 1 } } ], "as": "c" } }, { "$group": { "_id": "$k" } } ], "cursor": {}, "$db": "shop" }
        }
        2 => {
            doc! { "update": "orders", "updates": [ { "q": {}, "u": [ { "$set": { "a": "$b" } } ] } ], "$db": "shop" }
        }
        _ => doc! { "insert": "orders", "$db": "shop" },
    };
    let sequences = if seed % 4 == 3 {
        vec![Sequence {
            identifier: "documents".into(),
            documents: vec![encode_document(&doc! { "_id": 1, "email": "a@b.c" }).into()],
        }]
    } else {
        Vec::new()
    };
    OpMsg {
        request_id: 1,
        response_to: 0,
        flags: 0,
        body: encode_document(&body).into(),
        sequences,
    }
    .encode(seed.is_multiple_of(2))
}

/// 2,000 cases per property in the suite; `TOLLGATE_FUZZ_CASES` sets another count for the long
/// runs in docs/reliability.md, as for the other fuzz targets.
fn cases() -> u32 {
    std::env::var("TOLLGATE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(cases()) })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        run(&bytes, &rules());
    }

    #[test]
    fn mutated_valid_messages_never_panic(seed in any::<u8>(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6)) {
        let mut bytes = valid_message(seed);
        let clean = run(&bytes, &rules());
        prop_assert!(clean >= 4, "an unmutated message gets a decision");
        for (at, b) in flips {
            let n = bytes.len();
            bytes[at % n] = b;
        }
        run(&bytes, &rules());
    }

    #[test]
    fn truncations_never_panic(seed in any::<u8>(), cut in any::<usize>()) {
        let bytes = valid_message(seed);
        let cut = cut % bytes.len();
        let mut short = bytes[..cut].to_vec();
        if short.len() >= 4 {
            let len = short.len() as i32;
            short[..4].copy_from_slice(&len.to_le_bytes());
        }
        run(&short, &rules());
    }
}
