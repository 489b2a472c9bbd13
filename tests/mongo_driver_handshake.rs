//! A real driver (pymongo, from the test server's cached venv) against tollgate's MongoDB wire
//! pieces, before the session core exists: a minimal front end in this test runs
//! `mongo::login::LoginPhase` (legacy OP_QUERY and OP_MSG `hello`, standalone, intersected wire
//! versions; SCRAM-SHA-256 over saslStart/saslContinue or speculativeAuthenticate), then
//! answers commands with the policy's refusal or `{ok: 1}`. It checks that drivers accept what tollgate
//! writes: the handshake, the login, wrong tokens and unknown agents failing alike, and errors.

use std::process::Stdio;
use std::sync::Arc;

use bson::doc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tollgate::auth::ScramVerifier;
use tollgate::mongo::hello::{hello_reply, is_hello, UpstreamFacts};
use tollgate::mongo::login::{LoginOutcome, LoginPhase};
use tollgate::mongo::op_msg::OpMsg;
use tollgate::mongo::reply;
use tollgate::mongo::wire::{MessageReader, MAX_MESSAGE_BYTES, PRE_AUTH_MAX_BYTES};
use tollgate::policy::mongo::{decide, Command, DecideLimits, MongoRules};

const TOKEN: &str = "tg_0123456789abcdef";

struct Front {
    facts: UpstreamFacts,
    verifier: ScramVerifier,
    rules: MongoRules,
}

async fn serve(front: Arc<Front>, sock: tokio::net::TcpStream) {
    let (r, mut w) = sock.into_split();
    let mut reader = MessageReader::new(r, PRE_AUTH_MAX_BYTES);
    let mut login = LoginPhase::new(front.facts, 1);
    let mut agent: Option<String> = None;
    let lookup = |name: &str| (name == "analyst").then(|| front.verifier.clone());
    let mock = |name: &str| ScramVerifier::mock_for(name, &[7; 32]);
    while let Ok(Some(msg)) = reader.next().await {
        let now = bson::DateTime::from_millis(0);
        if agent.is_none() {
            match login.handle(&msg, now, lookup, mock) {
                LoginOutcome::Reply(bytes) | LoginOutcome::Failed { reply: bytes, .. } => {
                    w.write_all(&bytes).await.unwrap()
                }
                LoginOutcome::Authenticated {
                    agent: a, reply, ..
                } => {
                    agent = Some(a);
                    reader.set_limit(MAX_MESSAGE_BYTES);
                    w.write_all(&reply).await.unwrap();
                }
                LoginOutcome::Close(bytes) => {
                    w.write_all(&bytes).await.unwrap();
                    return;
                }
            }
            continue;
        }
        let m = OpMsg::parse(&msg).expect("valid OP_MSG");
        let body = m.body_document().unwrap();
        let name = body.keys().next().cloned().unwrap_or_default();
        let answer = if is_hello(&name) {
            hello_reply(&body, &front.facts, 1, now, None)
        } else {
            let cmd = Command::new(body.clone(), m.sequence_documents().unwrap());
            match cmd.and_then(|c| decide(&front.rules, &c, &DecideLimits::default())) {
                Ok(_) => reply::ok(doc! { "agent": agent.clone().unwrap() }),
                Err(refusal) => reply::refusal(&refusal),
            }
        };
        let out = OpMsg::reply(m.request_id, login.next_request_id(), &answer).encode(false);
        if !m.more_to_come() {
            w.write_all(&out).await.unwrap();
        }
    }
}

const SCRIPT: &str = r#"
import sys
from pymongo import MongoClient
from pymongo.errors import OperationFailure
port, token = sys.argv[1], sys.argv[2]
def client(user, pw):
    return MongoClient(f"mongodb://{user}:{pw}@127.0.0.1:{port}/shop?authMechanism=SCRAM-SHA-256&directConnection=true",
                       serverSelectionTimeoutMS=5000, connectTimeoutMS=5000)
c = client("analyst", token)
r = c.shop.command("ping")
assert r["ok"] == 1.0 and r["agent"] == "analyst", r
try:
    c.shop.command("find", "secrets")
    raise SystemExit("secrets were not refused")
except OperationFailure as e:
    assert e.code == 13, e.details
    assert "tollgate:" in str(e) and "(rule: default-deny)" in str(e), str(e)
    print("refused:", e.details["errmsg"])
topology = c.topology_description.topology_type_name
assert topology == "Single", topology
errors = []
for user, pw in [("analyst", "tg_wrong"), ("ghost", token)]:
    try:
        client(user, pw).shop.command("ping")
        raise SystemExit(f"{user} logged in with a wrong token")
    except OperationFailure as e:
        errors.append((e.code, str(e)))
assert errors[0] == errors[1], errors
assert errors[0][0] == 18, errors
print("ok", topology, errors[0])
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymongo_accepts_tollgates_handshake_login_and_refusals() {
    let launcher = tollgate::demo::mongo_server::ensure_installed()
        .await
        .expect("SecantusDB venv (brings pymongo)");
    let python = launcher.with_file_name("python3");
    let rules_text = "[[mongo]]\nupstream = \"mongo\"\n[[mongo.collection]]\nname = \"shop.orders\"\nallow = [\"read\"]\n";
    #[derive(serde::Deserialize)]
    struct Only {
        mongo: Vec<tollgate::policy::mongo::file::MongoBlock>,
    }
    let blocks: Only = toml::from_str(rules_text).unwrap();
    let mut rules = MongoRules::default();
    tollgate::policy::mongo::compile::merge(&mut rules, "analyst", &blocks.mongo[0]);
    let front = Arc::new(Front {
        facts: UpstreamFacts::from_hello(
            &doc! { "minWireVersion": 0, "maxWireVersion": 21, "logicalSessionTimeoutMinutes": 30 },
        )
        .unwrap(),
        verifier: ScramVerifier::derive(TOKEN.as_bytes()),
        rules,
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(serve(front.clone(), sock));
        }
    });
    let out = tokio::process::Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(port.to_string())
        .arg(TOKEN)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let text =
        String::from_utf8_lossy(&[out.stdout.clone(), out.stderr.clone()].concat()).into_owned();
    assert!(out.status.success(), "pymongo script failed:\n{text}");
    assert!(text.contains("ok Single (18,"), "{text}");
    assert!(!text.contains(TOKEN), "the token never comes back: {text}");
}
