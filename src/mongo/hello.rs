//! `hello` / `isMaster` answered by tollgate itself: a standalone server (no `hosts`, no
//! `setName`, no `me`), so drivers never discover and bypass to the real servers behind it.
//! Limits and wire versions are the intersection of what tollgate understands and what the
//! upstream said in its own `hello`.

use bson::{doc, Bson, Document};

use super::wire::{MAX_BSON_OBJECT_BYTES, MAX_MESSAGE_BYTES};

/// OP_MSG arrived with wire version 6 (MongoDB 3.6): tollgate speaks nothing older.
pub const MIN_WIRE_VERSION: i32 = 6;
/// MongoDB 8.0. Commands of later versions are not known to the policy, so drivers are told
/// not to use them.
pub const MAX_WIRE_VERSION: i32 = 25;
const MAX_WRITE_BATCH: i32 = 100_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HelloError {
    #[error("the upstream's hello reply has no {0}")]
    Missing(&'static str),
    #[error("the upstream speaks wire versions {min}..={max}; tollgate needs a server within {MIN_WIRE_VERSION}..={MAX_WIRE_VERSION} (MongoDB 3.6 to 8.0)")]
    NoCommonWireVersion { min: i32, max: i32 },
}

/// What tollgate takes from the upstream's `hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamFacts {
    pub min_wire_version: i32,
    pub max_wire_version: i32,
    pub max_bson_object_size: i32,
    pub max_message_size_bytes: i32,
    pub max_write_batch_size: i32,
    /// Without it the server does not support sessions (nor transactions).
    pub logical_session_timeout_minutes: Option<i32>,
}

fn number(d: &Document, key: &str) -> Option<i64> {
    match d.get(key)? {
        Bson::Int32(v) => Some((*v).into()),
        Bson::Int64(v) => Some(*v),
        Bson::Double(v) if v.fract() == 0.0 && v.abs() < 1e15 => Some(*v as i64),
        _ => None,
    }
}

fn clamp_i32(v: i64) -> i32 {
    v.clamp(i32::MIN.into(), i32::MAX.into()) as i32
}

impl UpstreamFacts {
    /// Reads the upstream's `hello` reply and intersects it with what tollgate supports.
    pub fn from_hello(reply: &Document) -> Result<UpstreamFacts, HelloError> {
        let up_min = number(reply, "minWireVersion").unwrap_or(0);
        let up_max =
            number(reply, "maxWireVersion").ok_or(HelloError::Missing("maxWireVersion"))?;
        let min = clamp_i32(up_min.max(MIN_WIRE_VERSION.into()));
        let max = clamp_i32(up_max.min(MAX_WIRE_VERSION.into()));
        if min > max {
            return Err(HelloError::NoCommonWireVersion {
                min: clamp_i32(up_min),
                max: clamp_i32(up_max),
            });
        }
        let limit = |key: &str, ours: i64| -> i32 {
            clamp_i32(
                number(reply, key)
                    .filter(|v| *v > 0)
                    .unwrap_or(ours)
                    .min(ours),
            )
        };
        Ok(UpstreamFacts {
            min_wire_version: min,
            max_wire_version: max,
            max_bson_object_size: limit("maxBsonObjectSize", MAX_BSON_OBJECT_BYTES as i64),
            max_message_size_bytes: limit("maxMessageSizeBytes", MAX_MESSAGE_BYTES as i64),
            max_write_batch_size: limit("maxWriteBatchSize", MAX_WRITE_BATCH.into()),
            logical_session_timeout_minutes: number(reply, "logicalSessionTimeoutMinutes")
                .map(clamp_i32),
        })
    }
}

/// Is this command a handshake (`hello`, `isMaster`, `ismaster`)?
pub fn is_hello(name: &str) -> bool {
    matches!(name, "hello" | "isMaster" | "ismaster")
}

/// tollgate's reply to a `hello`/`isMaster` `request`. `speculative` is the reply to the
/// request's `speculativeAuthenticate` when tollgate took it up (absent = declined: the driver
/// then authenticates with `saslStart` as usual).
pub fn hello_reply(
    request: &Document,
    facts: &UpstreamFacts,
    connection_id: i64,
    now: bson::DateTime,
    speculative: Option<Document>,
) -> Document {
    let legacy = !request.contains_key("hello");
    let mut d = Document::new();
    if request.get_bool("helloOk").unwrap_or(false) || !legacy {
        d.insert("helloOk", true);
    }
    d.insert(
        if legacy {
            "ismaster"
        } else {
            "isWritablePrimary"
        },
        true,
    );
    d.insert("maxBsonObjectSize", facts.max_bson_object_size);
    d.insert("maxMessageSizeBytes", facts.max_message_size_bytes);
    d.insert("maxWriteBatchSize", facts.max_write_batch_size);
    d.insert("localTime", now);
    if let Some(m) = facts.logical_session_timeout_minutes {
        d.insert("logicalSessionTimeoutMinutes", m);
    }
    d.insert("connectionId", connection_id);
    d.insert("minWireVersion", facts.min_wire_version);
    d.insert("maxWireVersion", facts.max_wire_version);
    d.insert("readOnly", false);
    // SCRAM-SHA-256 is the only mechanism, for every user name (known or not: the answer
    // must not tell which agents exist).
    if request.contains_key("saslSupportedMechs") {
        d.insert("saslSupportedMechs", vec![Bson::from("SCRAM-SHA-256")]);
    }
    if let Some(s) = speculative {
        d.insert("speculativeAuthenticate", s);
    }
    d.insert("ok", 1.0);
    d
}

/// The `hello` tollgate sends upstream on a new connection (no compression, no speculative
/// authentication: the login that follows is explicit).
pub fn upstream_hello_command(app_name: &str) -> Document {
    doc! {
        "hello": 1,
        "helloOk": true,
        "client": {
            "application": { "name": app_name },
            "driver": { "name": "tollgate", "version": env!("CARGO_PKG_VERSION") },
            "os": { "type": std::env::consts::OS },
        },
        "$db": "admin",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secantus_hello() -> Document {
        doc! {
            "isWritablePrimary": true, "maxBsonObjectSize": 16777216, "maxMessageSizeBytes": 48000000,
            "maxWriteBatchSize": 100000, "logicalSessionTimeoutMinutes": 30, "connectionId": 2,
            "minWireVersion": 0, "maxWireVersion": 27, "readOnly": false, "ok": 1.0,
            "setName": "secantus", "hosts": ["127.0.0.1:27017"],
        }
    }

    #[test]
    fn wire_versions_are_intersected() {
        let f = UpstreamFacts::from_hello(&secantus_hello()).unwrap();
        assert_eq!((f.min_wire_version, f.max_wire_version), (6, 25));
        let old = doc! { "minWireVersion": 0, "maxWireVersion": 5 };
        assert_eq!(
            UpstreamFacts::from_hello(&old).unwrap_err(),
            HelloError::NoCommonWireVersion { min: 0, max: 5 }
        );
        let mongo7 =
            doc! { "minWireVersion": 0, "maxWireVersion": 21, "maxMessageSizeBytes": 1000 };
        let f = UpstreamFacts::from_hello(&mongo7).unwrap();
        assert_eq!(f.max_wire_version, 21);
        assert_eq!(f.max_message_size_bytes, 1000);
        assert_eq!(f.logical_session_timeout_minutes, None);
        assert!(UpstreamFacts::from_hello(&doc! {}).is_err());
    }

    #[test]
    fn the_reply_is_a_standalone_server() {
        let f = UpstreamFacts::from_hello(&secantus_hello()).unwrap();
        let now = bson::DateTime::from_millis(0);
        let r = hello_reply(
            &doc! { "hello": 1, "saslSupportedMechs": "shop.analyst" },
            &f,
            7,
            now,
            None,
        );
        for absent in [
            "hosts",
            "setName",
            "me",
            "primary",
            "msg",
            "compression",
            "speculativeAuthenticate",
            "topologyVersion",
        ] {
            assert!(!r.contains_key(absent), "{absent}");
        }
        assert_eq!(r.get_bool("isWritablePrimary").ok(), Some(true));
        assert_eq!(r.get_i32("maxWireVersion").ok(), Some(25));
        assert_eq!(r.get_i32("logicalSessionTimeoutMinutes").ok(), Some(30));
        assert_eq!(r.get_array("saslSupportedMechs").unwrap().len(), 1);
        let legacy = hello_reply(
            &doc! { "isMaster": 1 },
            &f,
            7,
            now,
            Some(doc! { "done": false }),
        );
        assert_eq!(legacy.get_bool("ismaster").ok(), Some(true));
        assert!(!legacy.contains_key("helloOk"));
        assert!(legacy.contains_key("speculativeAuthenticate"));
    }
}
