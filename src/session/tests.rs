//! The session core on a real engine and audit log, no sockets: admission (TLS requirement,
//! policy, connection caps shared by every protocol), decisions, rate refusals, outcomes and
//! the one "abandoned" record shape.

use std::time::Duration;

use serde_json::Value;

use super::testing::TestCore;
use super::{Judged, OutcomeError, ReauthError};
use crate::audit::Decision;
use crate::audit::Protocol;
use crate::config::LimitsConfig;
use crate::refusal::{Refusal, RefusalClass};

const TOKEN: &str = "tg_test_token";

const POLICIES: &[(&str, &str)] = &[
    (
        "analyst.toml",
        r#"agents = ["analyst"]
[limits]
max_connections = 2
statements_per_minute = 60
burst = 2
[[postgres]]
upstream = "shop"
[[postgres.table]]
name = "orders"
allow = ["select"]
[[redis]]
upstream = "cache"
commands = ["@read"]
read_keys = ["cache:*"]
"#,
    ),
    (
        "tls.toml",
        r#"agents = ["secure"]
require_tls = true
[[postgres]]
upstream = "shop"
profile = "passthrough"
"#,
    ),
    (
        "shadow.toml",
        r#"agents = ["shadowed"]
enforce = false
require_tls = true
[[postgres]]
upstream = "shop"
profile = "passthrough"
"#,
    ),
];

fn agents() -> Vec<(&'static str, &'static str)> {
    vec![
        ("analyst", TOKEN),
        ("secure", TOKEN),
        ("shadowed", TOKEN),
        ("nobody", TOKEN),
    ]
}

fn core() -> TestCore {
    TestCore::new(&agents(), POLICIES)
}

fn last(records: &[Value]) -> &Value {
    records.last().expect("a record")
}

#[test]
fn a_connection_cap_holds_across_protocols_with_one_wording() {
    let t = core();
    let (_a, pg) = t.session(Protocol::Postgres, "analyst", TOKEN, "shop");
    let (_b, redis) = t.session(Protocol::Redis, "analyst", TOKEN, "cache");
    for protocol in [Protocol::Postgres, Protocol::Redis] {
        let accepted = t.accept(protocol);
        let verified = accepted.verify_token(b"analyst", TOKEN.as_bytes()).unwrap();
        let upstream = if protocol == Protocol::Redis {
            "cache"
        } else {
            "shop"
        };
        let refusal = accepted
            .admit(&verified, upstream, false)
            .err()
            .expect("over the cap");
        assert_eq!(refusal.class, RefusalClass::TooManyConnections);
        assert_eq!(refusal.rule, "analyst: limits");
        assert_eq!(
            refusal.message(),
            "tollgate: too many connections: agent already has 2 connections, the most its policy allows (rule: analyst: limits)"
        );
        let rec = t.records();
        let rec = last(&rec);
        assert_eq!(rec["kind"], "session");
        assert_eq!(rec["decision"], "blocked");
        assert_eq!(rec["protocol"], protocol.as_str());
        assert_eq!(rec["rule"], "analyst: limits");
    }
    drop(pg);
    let accepted = t.accept(Protocol::Redis);
    let verified = accepted.verify_token(b"analyst", TOKEN.as_bytes()).unwrap();
    assert!(
        accepted.admit(&verified, "cache", false).is_ok(),
        "a slot was freed"
    );
    drop(redis);
}

#[test]
fn the_gateway_wide_cap_counts_every_protocol() {
    let limits = LimitsConfig {
        max_client_connections: Some(1),
        ..LimitsConfig::default()
    };
    let t = TestCore::with_limits(&agents(), POLICIES, limits);
    let (_a, _redis) = t.session(Protocol::Redis, "analyst", TOKEN, "cache");
    let accepted = t.accept(Protocol::Postgres);
    let verified = accepted.verify_token(b"secure", TOKEN.as_bytes()).unwrap();
    let refusal = accepted
        .admit(&verified, "shop", true)
        .err()
        .expect("over the total");
    assert_eq!(refusal.rule, "tollgate.toml: limits.max_client_connections");
    assert_eq!(refusal.class.sqlstate(), "53300");
}

#[test]
fn connections_waiting_to_authenticate_are_capped_until_admitted_or_gone() {
    let limits = LimitsConfig {
        max_preauth_connections: 2,
        ..LimitsConfig::default()
    };
    let t = TestCore::with_limits(&agents(), POLICIES, limits);
    let peer = "127.0.0.1:5".parse().unwrap();
    let first = t.core.try_accept(Protocol::Postgres, peer).unwrap();
    let second = t.core.try_accept(Protocol::Redis, peer).unwrap();
    let refusal = t
        .core
        .try_accept(Protocol::Postgres, peer)
        .err()
        .expect("a third connection waiting to authenticate");
    assert_eq!(
        refusal.rule,
        "tollgate.toml: limits.max_preauth_connections"
    );
    assert_eq!(refusal.class.sqlstate(), "53300");
    assert!(refusal.message().contains("waiting to authenticate"));
    // Admission frees the slot (and a failed admission does not).
    let verified = first.verify_token(b"secure", TOKEN.as_bytes()).unwrap();
    let _session = first.admit(&verified, "shop", true).unwrap();
    assert_eq!(t.core.preauth_connections(), 1);
    let third = t.core.try_accept(Protocol::Postgres, peer).unwrap();
    assert!(t.core.try_accept(Protocol::Postgres, peer).is_err());
    // A connection that ends before admission frees its slot; an admitted one was counted once.
    drop(second);
    drop(third);
    drop(first);
    assert_eq!(t.core.preauth_connections(), 0);
    assert!(t.core.try_accept(Protocol::Redis, peer).is_ok());
}

/// An address that fills the count with connections that never log in keeps out only itself:
/// a connection from another address takes the place of its oldest, whose session is ended
/// (`serve` returns). Before, every login from anywhere was refused while it held them.
#[tokio::test]
async fn a_flooding_address_gives_its_oldest_place_to_another_address() {
    let limits = LimitsConfig {
        max_preauth_connections: 3,
        ..LimitsConfig::default()
    };
    let t = TestCore::with_limits(&agents(), POLICIES, limits);
    let flood = "10.0.0.1:5".parse().unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        let a = t.core.try_accept(Protocol::Postgres, flood).unwrap();
        // Sessions that wait for ever, as a silent client's would.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(a.serve(|_a| async move {
            let _tx = tx;
            std::future::pending::<Result<(), String>>().await
        }));
        held.push((served, rx));
    }
    assert!(
        t.core.try_accept(Protocol::Redis, flood).is_err(),
        "its own: refused"
    );
    let honest = "10.0.0.2:7".parse().unwrap();
    let admitted = t
        .core
        .try_accept(Protocol::Redis, honest)
        .expect("another address");
    assert_eq!(t.core.preauth_connections(), 3);
    // The flood's first session ended (its future dropped); the others wait on.
    let (first, rx) = held.remove(0);
    tokio::time::timeout(std::time::Duration::from_secs(5), first)
        .await
        .expect("the evicted session ends")
        .unwrap();
    assert!(rx.await.is_err(), "its session future was dropped");
    assert!(held.iter().all(|(h, _)| !h.is_finished()));
    let verified = admitted.verify_token(b"secure", TOKEN.as_bytes()).unwrap();
    assert!(admitted.admit(&verified, "shop", true).is_ok());
}

#[test]
fn http_connections_share_the_preauth_cap_until_released() {
    let limits = LimitsConfig {
        max_preauth_connections: 2,
        ..LimitsConfig::default()
    };
    let t = TestCore::with_limits(&agents(), POLICIES, limits);
    let peer = "127.0.0.1:5".parse().unwrap();
    let http = t.core.try_preauth("mcp", peer).unwrap();
    let session = t.core.try_accept(Protocol::Postgres, peer).unwrap();
    assert!(http.held());
    // Both places taken: an HTTP connection and a session are refused alike.
    let refusal = t.core.try_preauth("admin", peer).expect_err("over the cap");
    assert_eq!(
        refusal.rule,
        "tollgate.toml: limits.max_preauth_connections"
    );
    assert!(t.core.try_accept(Protocol::Redis, peer).is_err());
    // A request on the connection authenticated: its place is free, once (a second release and
    // the drop change nothing).
    http.release();
    http.release();
    assert!(!http.held());
    assert_eq!(t.core.preauth_connections(), 1);
    let other = t.core.try_preauth("admin", peer).unwrap();
    drop(http);
    assert_eq!(t.core.preauth_connections(), 2);
    // A connection that ends unauthenticated gives its place back.
    drop(other);
    drop(session);
    assert_eq!(t.core.preauth_connections(), 0);
}

#[test]
fn tls_requirement_is_enforced_or_only_recorded_in_shadow_mode() {
    let t = core();
    let accepted = t.accept(Protocol::Postgres);
    let secure = accepted.verify_token(b"secure", TOKEN.as_bytes()).unwrap();
    let refusal = accepted
        .admit(&secure, "shop", false)
        .err()
        .expect("plain refused");
    assert_eq!(refusal.class, RefusalClass::TlsRequired);
    assert_eq!(refusal.rule, "tls: require_tls");
    assert!(accepted.admit(&secure, "shop", true).is_ok());
    let shadowed = accepted
        .verify_token(b"shadowed", TOKEN.as_bytes())
        .unwrap();
    assert!(accepted.admit(&shadowed, "shop", false).is_ok());
    let rec = t.records();
    assert!(rec.iter().any(|r| r["agent"] == "shadowed"
        && r["decision"] == "would_block"
        && r["rule"] == "shadow: require_tls"));
}

#[test]
fn an_agent_without_a_policy_for_the_upstream_is_refused() {
    let t = core();
    let accepted = t.accept(Protocol::Redis);
    let v = accepted.verify_token(b"nobody", TOKEN.as_bytes()).unwrap();
    let r = accepted.admit(&v, "cache", false).err().unwrap();
    assert_eq!(r.class, RefusalClass::Permission);
    assert_eq!(r.rule, "default-deny");
}

#[test]
fn wrong_tokens_and_unknown_agents_fail_alike_and_are_recorded() {
    let t = core();
    let accepted = t.accept(Protocol::Redis);
    assert!(accepted.verify_token(b"analyst", b"wrong").is_none());
    assert!(accepted.verify_token(b"ghost", TOKEN.as_bytes()).is_none());
    assert!(accepted.verify_token(&[b'x'; 500], b"t").is_none());
    // A token typed where the name goes (arguments swapped), or `agent:token` pasted whole.
    assert!(accepted
        .verify_token(TOKEN.as_bytes(), b"analyst")
        .is_none());
    let pasted = format!("analyst:{TOKEN}");
    assert!(accepted.verify_token(pasted.as_bytes(), b"x").is_none());
    let rec = t.records();
    let failed: Vec<_> = rec
        .iter()
        .filter(|r| r["reason"] == "authentication failed")
        .collect();
    assert_eq!(failed.len(), 5);
    assert!(failed
        .iter()
        .all(|r| r["rule"] == "builtin: authentication"));
    // An agent's name as given; any other only as a short hash, the same for the same text.
    assert_eq!(failed[0]["agent"], "analyst");
    let names: Vec<&str> = failed[1..]
        .iter()
        .map(|r| r["agent"].as_str().unwrap())
        .collect();
    for name in &names {
        assert!(
            name.starts_with("(unknown #") && name.len() == "(unknown #12345678)".len(),
            "{name}"
        );
    }
    assert_ne!(names[0], names[1]);
    assert!(accepted.verify_token(b"ghost", b"again").is_none());
    assert_eq!(last(&t.records())["agent"], names[0]);
    let text = t
        .records()
        .iter()
        .map(|r| r.to_string())
        .collect::<String>();
    assert!(
        !text.contains("wrong") && !text.contains(TOKEN) && !text.contains("ghost"),
        "no token, and no name that is not an agent's, recorded"
    );
}

#[test]
fn the_client_leaving_early_is_recorded_the_same_on_every_protocol() {
    let t = core();
    let mut shapes = Vec::new();
    for (protocol, upstream) in [(Protocol::Postgres, "shop"), (Protocol::Redis, "cache")] {
        let (_a, s) = t.session(protocol, "analyst", TOKEN, upstream);
        let ticket = s
            .decide(Judged::allowed("SELECT 1".into()), None)
            .expect("decided");
        let seq = ticket.seq();
        s.context().abandoned(ticket);
        let rec = t.records();
        let r = last(&rec).clone();
        assert_eq!(r["ref_seq"], seq);
        let mut shape: Vec<(String, Value)> = r
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "ts" | "seq" | "ref_seq" | "hash" | "prev_hash" | "session" | "duration_us"
                )
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        shape.retain(|(k, _)| k != "protocol" && k != "upstream");
        shapes.push(shape);
        assert_eq!(r["decision"], "allowed");
        assert_eq!(r["kind"], "outcome");
        assert_eq!(
            r["reason"],
            "outcome unknown: the session ended before the reply"
        );
        assert_eq!(
            s.stats().errors.load(std::sync::atomic::Ordering::Relaxed),
            0
        );
    }
    assert_eq!(shapes[0], shapes[1]);
}

#[test]
fn decisions_outcomes_and_rate_refusals_are_recorded() {
    let t = core();
    let (_a, s) = t.session(Protocol::Postgres, "analyst", TOKEN, "shop");
    let policy = t.core.policy.agent_policy("analyst").unwrap();
    let limits = &policy.limits;
    // The burst (2) passes, the third at once is over the rate.
    let t1 = s
        .decide(Judged::allowed("SELECT 1".into()), Some(limits))
        .unwrap();
    let t2 = s
        .decide(Judged::allowed("SELECT 2".into()), Some(limits))
        .unwrap();
    let t3 = s
        .decide(Judged::allowed("SELECT 3".into()), Some(limits))
        .unwrap();
    let over = s
        .decide(Judged::allowed("SELECT 4".into()), Some(limits))
        .expect_err("over the rate");
    assert_eq!(over.class, RefusalClass::RateLimited);
    assert!(over.retry_after.unwrap() > Duration::ZERO);
    assert!(over.hint().unwrap().starts_with("retry after "));
    s.context().outcome(t1, Some(5), None);
    s.context().outcome(
        t2,
        None,
        Some(OutcomeError {
            code: Some("22012".into()),
            message: "division by zero".into(),
        }),
    );
    drop(t3);
    let rec = t.records();
    let blocked = rec
        .iter()
        .find(|r| r["statement"] == "SELECT 4")
        .expect("the refusal is recorded");
    assert_eq!(blocked["decision"], "blocked");
    assert_eq!(blocked["sqlstate"], "53400");
    assert_eq!(blocked["rule"], "analyst: limits");
    let outcomes: Vec<_> = rec.iter().filter(|r| r["kind"] == "outcome").collect();
    assert_eq!(outcomes[0]["rows"], 5);
    assert_eq!(outcomes[1]["decision"], "error");
    assert_eq!(outcomes[1]["sqlstate"], "22012");
    assert_eq!(
        s.stats().errors.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

/// The records a session chained reach the disk at its commit (before the front end forwards
/// anything); a commit that cannot write refuses with the audit wording, and what was chained
/// is not committed by a later commit either.
#[tokio::test]
async fn chained_records_are_written_at_commit_and_a_failed_commit_refuses() {
    let t = core();
    let (_a, s) = t.session(Protocol::Postgres, "analyst", TOKEN, "shop");
    let on_disk = || std::fs::read_to_string(t.dir.path().join("audit.log")).unwrap();
    s.decide_deferred(Judged::allowed("SELECT 10".into()), None)
        .unwrap();
    s.refuse_deferred(
        "DELETE FROM orders".into(),
        crate::refusal::Refusal::permission("analyst: orders", "no deletes"),
    );
    assert!(!on_disk().contains("SELECT 10"), "only chained so far");
    s.commit().await.expect("the log is writable");
    let written = on_disk();
    assert!(written.contains("SELECT 10") && written.contains("DELETE FROM orders"));
    s.commit().await.expect("nothing due: nothing to wait for");

    let full = TestCore::with_audit_file(&agents(), POLICIES, std::path::Path::new("/dev/full"));
    let (_a, s) = full.session(Protocol::Redis, "analyst", TOKEN, "cache");
    s.decide_deferred(Judged::allowed("GET cache:1".into()), None)
        .unwrap();
    let refused = s.commit().await.expect_err("the disk is full");
    assert_eq!(refused.class, RefusalClass::AuditUnavailable);
    assert_eq!(refused.rule, "builtin: audit");
}

/// A statement refused because its decision record could not be written never ran: when its
/// session ends with it unanswered, no "outcome unknown" record may say otherwise (lost too, it
/// was counted by `audit verify` as an outcome: "those statements ran"; a review).
#[tokio::test]
async fn statements_of_a_failed_commit_get_no_outcome_unknown_record() {
    let full = TestCore::with_audit_file(&agents(), POLICIES, std::path::Path::new("/dev/full"));
    // How far the numbers move from one decision to the next over a failed commit...
    let gap = |abandon: bool| {
        let (_a, s) = full.session(Protocol::Postgres, "analyst", TOKEN, "shop");
        async move {
            let first = s
                .decide_deferred(Judged::allowed("SELECT 1".into()), None)
                .unwrap();
            let seq = first.seq();
            s.commit().await.expect_err("the disk is full");
            if abandon {
                s.context().abandoned(first);
            }
            let next = s
                .decide_deferred(Judged::allowed("SELECT 2".into()), None)
                .unwrap();
            next.seq() - seq
        }
    };
    // ...is the same whether the session ends with the statement pending or not.
    assert_eq!(gap(true).await, gap(false).await);
}

#[test]
fn redis_successes_get_no_outcome_record_by_default_but_errors_do() {
    let t = core();
    let (_a, s) = t.session(Protocol::Redis, "analyst", TOKEN, "cache");
    let ok = s
        .decide_deferred(Judged::allowed("GET cache:1".into()), None)
        .unwrap();
    let bad = s
        .decide_deferred(Judged::allowed("GET cache:2".into()), None)
        .unwrap();
    s.context().outcome(ok, None, None);
    s.context().outcome(
        bad,
        None,
        Some(OutcomeError {
            code: None,
            message: "WRONGTYPE".into(),
        }),
    );
    let rec = t.records();
    let outcomes: Vec<_> = rec.iter().filter(|r| r["kind"] == "outcome").collect();
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0]["error"], "WRONGTYPE");
}

#[test]
fn a_login_inside_a_session_moves_the_connection_slot() {
    let t = core();
    let (_a, mut s) = t.session(Protocol::Redis, "analyst", TOKEN, "cache");
    let (_b, _other) = t.session(Protocol::Redis, "analyst", TOKEN, "cache");
    assert!(matches!(
        s.reauthenticate(b"analyst", b"nope", |_| Ok(())),
        Err(ReauthError::WrongPass)
    ));
    assert_eq!(&**s.agent(), "analyst");
    // `nobody` has no policy for the upstream: refused, the session stays the analyst's.
    assert!(matches!(
        s.reauthenticate(b"nobody", TOKEN.as_bytes(), |_| Ok(())),
        Err(ReauthError::Refused(_))
    ));
    assert_eq!(&**s.agent(), "analyst");
    assert_eq!(t.core.limiter.connections_of("analyst"), 2);
    // The failed one names the rule, as a failed first login does (it had none: a review).
    let rec = t.records();
    let failed: Vec<_> = rec
        .iter()
        .filter(|r| r["reason"] == "authentication failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["rule"], "builtin: authentication");
}

/// Every kind of refusal record counts towards the pace: `refuse`, and the blocked notes a front
/// end writes for messages skipped after a refusal (review: a refused Parse followed by a
/// million skipped ones was one charge and a million records).
#[tokio::test]
async fn refusals_and_blocked_notes_are_paced_per_agent() {
    let limits = LimitsConfig {
        refusals_per_second: 10,
        refusal_burst: 2,
        ..LimitsConfig::default()
    };
    let t = TestCore::with_limits(&agents(), POLICIES, limits);
    let (_a, s) = t.session(Protocol::Postgres, "analyst", TOKEN, "shop");
    let (_b, other) = t.session(Protocol::Redis, "analyst", TOKEN, "cache");
    let refusal = || Refusal::new(RefusalClass::Permission, "r", "no");
    s.refuse("x".into(), refusal());
    s.note("skipped".into(), Decision::Blocked, None);
    assert!(!s.must_pace(), "two fit the burst");
    assert!(s.pace_deadline().is_none());
    s.note("skipped".into(), Decision::Blocked, None);
    assert!(s.must_pace(), "a third finds the agent at its pace");
    // The agent's other sessions share the bucket: their next refusal waits too.
    other.refuse_deferred("y".into(), refusal());
    assert!(other.must_pace());
    let until = s.pace_deadline().expect("a wait is due");
    let wait = until - tokio::time::Instant::now();
    assert!(
        wait > std::time::Duration::from_millis(50)
            && wait <= std::time::Duration::from_millis(200),
        "{wait:?}"
    );
    assert!(!s.must_pace(), "taking the deadline clears the flag");
    // Allowed statements and local replies are not refusals.
    s.note("QUIT".into(), Decision::Allowed, None);
    assert!(!s.must_pace());
}

/// Failed logins have no agent to pace. Each known agent's name has its own bucket of records,
/// every other name one shared bucket; beyond it failures are counted, and the periodic flush
/// writes one summary per name. A flood under junk names does not hide attempts on a real
/// agent, and no failure goes uncounted.
#[test]
fn failed_logins_are_recorded_within_their_names_bucket_and_summed_up_beyond_it() {
    use super::login_records::{AGENT_BURST, OTHERS_BURST};
    let t = core();
    let a = t.accept(Protocol::Mcp);
    let junk = OTHERS_BURST as usize + 300;
    for i in 0..junk {
        a.auth_failed(format!("junk{i}").as_bytes(), "authentication failed");
    }
    // The flood used up the shared bucket, not analyst's.
    let tries = AGENT_BURST as usize + 5;
    for _ in 0..tries {
        a.auth_failed(b"analyst", "authentication failed");
    }
    let failed = |records: &[Value], analyst: bool| -> Vec<Value> {
        records
            .iter()
            .filter(|r| r["kind"] == "session" && r["decision"] == "blocked")
            .filter(|r| (r["agent"] == "analyst") == analyst)
            .cloned()
            .collect()
    };
    let records = t.records();
    let on_analyst = failed(&records, true);
    let on_junk = failed(&records, false);
    assert!(
        (AGENT_BURST as usize..=AGENT_BURST as usize + 1).contains(&on_analyst.len()),
        "{} of analyst's {tries} failures recorded one by one",
        on_analyst.len()
    );
    assert!(
        on_junk.len() <= OTHERS_BURST as usize + 2,
        "{} junk records",
        on_junk.len()
    );
    // The summaries account for the rest, one per name (the shared one for junk names).
    t.core.flush_login_records();
    let records = t.records();
    let summed = |records: Vec<Value>| -> usize {
        records
            .iter()
            .map(|r| {
                let reason = r["reason"].as_str().unwrap_or_default();
                match reason.split_once("; ") {
                    Some((_, rest)) => rest.split(' ').next().unwrap().parse::<usize>().unwrap(),
                    None => 1,
                }
            })
            .sum()
    };
    let on_analyst = failed(&records, true);
    assert_eq!(summed(on_analyst.clone()), tries, "{on_analyst:?}");
    let summary = on_analyst.last().unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        summary.contains(
            "failed logins under this agent's name over mcp from 1 address were counted, not recorded one by one"
        ),
        "{summary}"
    );
    assert_eq!(summed(failed(&records, false)), junk);
    // Nothing is left to sum up.
    let before = t.records().len();
    t.core.flush_login_records();
    assert_eq!(t.records().len(), before);

    // Another door has buckets of its own: its failures are not credited to MCP's.
    let r = t.accept(Protocol::Redis);
    for _ in 0..tries {
        r.auth_failed(b"analyst", "authentication failed");
    }
    t.core.flush_login_records();
    let records = t.records();
    let redis: Vec<Value> = failed(&records, true)
        .into_iter()
        .filter(|r| r["protocol"] == "redis")
        .collect();
    assert_eq!(summed(redis.clone()), tries, "{redis:?}");
    assert!(redis.last().unwrap()["reason"]
        .as_str()
        .unwrap()
        .contains("over redis from 1 address"));
}

/// Every decision record counts once under its decision, the notes of what a front end answers
/// or skips itself too (they were left out: the metrics fell short of the log; a review).
#[test]
fn notes_count_like_every_decision_record() {
    let t = core();
    let (_a, s) = t.session(Protocol::Redis, "analyst", TOKEN, "cache");
    s.note("QUIT".into(), Decision::Allowed, None);
    s.note("skipped".into(), Decision::Blocked, None);
    s.note_with_code("not run".into(), Decision::Error, None, Some("57014"));
    assert_eq!(s.stats().count(Decision::Allowed), 1);
    assert_eq!(s.stats().count(Decision::Blocked), 1);
    assert_eq!(s.stats().count(Decision::Error), 1);
}

/// Names recorded before they are known are bounded and show no character that changes how the
/// text around it reads (a right-to-left override recorded whole: a review).
#[test]
fn shown_names_hide_control_and_invisible_format_characters() {
    use crate::session::record::shown_name;
    assert_eq!(shown_name("\u{202E}gnp.exe".as_bytes()), "?gnp.exe");
    assert_eq!(
        shown_name("a\u{200B}b\u{2066}c\u{FEFF}".as_bytes()),
        "a?b?c?"
    );
    assert_eq!(shown_name(b"line\nbreak"), "line?break");
    assert_eq!(shown_name("caf\u{e9}".as_bytes()), "caf\u{e9}");
    assert_eq!(shown_name(&[b'x'; 100]).len(), 64);
}
