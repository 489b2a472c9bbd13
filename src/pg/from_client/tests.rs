//! The client side's policy hook, fed frontend messages by hand: what is forwarded, what is
//! substituted, what the reply side is told to expect, and what the audit log records.

use std::sync::Arc;

use bytes::BytesMut;

use super::{on_frame, State, Words, REFUSED_SQL, STATEMENT_WORDS};
use crate::pg::frontend as fe;
use crate::pg::pending::{Expect, Pending};
use crate::pg::statement::PgSession;
use crate::pg::testing::*;
use crate::session::testing::TestCore;

struct Rig {
    t: TestCore,
    _accepted: crate::session::Accepted,
    pg: Arc<PgSession>,
    pending: Pending,
    state: State,
    out: BytesMut,
}

fn rig() -> Rig {
    let t = core();
    let (accepted, pg) = session(&t);
    let pending = Pending::default();
    let state = State::new(pg.agent().clone(), &pending);
    Rig {
        t,
        _accepted: accepted,
        pg,
        pending,
        state,
        out: BytesMut::new(),
    }
}

impl Rig {
    fn send(&mut self, f: crate::pg::frame::Frame) {
        on_frame(&self.pg, &self.pending, &mut self.state, f, &mut self.out).expect("no fatal");
    }

    fn forwarded(&mut self) -> Vec<(u8, Vec<u8>)> {
        let out = self.out.split();
        messages(&out)
    }

    fn expected(&self) -> Vec<Expect> {
        self.pending.drain()
    }

    fn decisions(&self) -> Vec<serde_json::Value> {
        self.t
            .records()
            .into_iter()
            .filter(|r| r["kind"] == "decision")
            .collect()
    }
}

fn query_text(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len() - 1]).into_owned()
}

#[test]
fn an_allowed_query_is_forwarded_as_received_and_recorded() {
    let mut r = rig();
    r.send(query("SELECT id FROM orders"));
    let fwd = r.forwarded();
    assert_eq!(fwd.len(), 1);
    assert_eq!(query_text(&fwd[0].1), "SELECT id FROM orders");
    let exp = r.expected();
    assert!(matches!(
        &exp[..],
        [Expect::Simple {
            ticket: Some(_),
            refusal: None,
            ..
        }]
    ));
    let d = r.decisions();
    assert_eq!(d[0]["decision"], "allowed");
    assert_eq!(d[0]["statement"], "SELECT id FROM orders");
}

#[test]
fn a_refused_query_is_replaced_by_one_the_upstream_rejects() {
    let mut r = rig();
    r.send(query("SELECT api_key FROM secrets"));
    let fwd = r.forwarded();
    assert_eq!(query_text(&fwd[0].1), REFUSED_SQL);
    let exp = r.expected();
    let [Expect::Simple {
        ticket: None,
        refusal: Some(refusal),
        ..
    }] = &exp[..]
    else {
        panic!("{exp:?}");
    };
    assert_eq!(refusal.code, "42501");
    assert!(
        refusal.message.ends_with("(rule: default-deny)"),
        "{}",
        refusal.message
    );
    let d = r.decisions();
    assert_eq!(d[0]["decision"], "blocked");
    assert_eq!(d[0]["rule"], "default-deny");
    assert_eq!(d[0]["sqlstate"], "42501");
}

#[test]
fn after_a_refused_parse_everything_up_to_sync_is_dropped() {
    let mut r = rig();
    r.send(parse("s1", "DELETE FROM orders"));
    r.send(bind("", "s1"));
    r.send(execute("", 0));
    r.send(parse("s2", "SELECT 2"));
    r.send(query("SELECT 1"));
    r.send(bare(fe::SYNC));
    let fwd = r.forwarded();
    let tags: Vec<u8> = fwd.iter().map(|(t, _)| *t).collect();
    assert_eq!(tags, b"PS", "the substitute Parse, then Sync");
    let exp = r.expected();
    assert!(matches!(
        &exp[..],
        [
            Expect::Parse {
                refusal: Some(_),
                ..
            },
            Expect::Sync
        ]
    ));
    // What was skipped is recorded, nothing of it having run (review: it had no record).
    let skipped: Vec<String> = r
        .decisions()
        .iter()
        .filter(|d| d["reason"] == "not executed: an earlier message in the same batch was refused")
        .map(|d| format!("{} {}", d["decision"], d["statement"]))
        .collect();
    assert_eq!(
        skipped,
        ["\"blocked\" \"SELECT 2\"", "\"blocked\" \"SELECT 1\""]
    );
    // Skipping ends at Sync: the next batch is judged again.
    r.send(query("SELECT id FROM orders"));
    assert_eq!(r.forwarded()[0].0, fe::QUERY);
}

#[test]
fn a_parsed_statement_is_recorded_when_executed_and_reusing_its_name_is_refused() {
    let mut r = rig();
    r.send(parse("s1", "SELECT id FROM orders WHERE id = $1"));
    r.send(bind("p", "s1"));
    r.send(execute("p", 0));
    r.send(bare(fe::SYNC));
    assert_eq!(r.forwarded().len(), 4);
    let exp = r.expected();
    assert!(matches!(
        &exp[..],
        [
            Expect::Parse {
                refusal: None,
                server_name: None,
                ..
            },
            Expect::Bind { .. },
            Expect::Execute {
                ticket: Some(_),
                ..
            },
            Expect::Sync
        ]
    ));
    let d = r.decisions();
    assert_eq!(d.len(), 1, "one record, at Execute");
    assert_eq!(d[0]["statement"], "SELECT id FROM orders WHERE id = $1");
    r.send(parse("s1", "SELECT 1"));
    let exp = r.expected();
    let [Expect::Parse {
        refusal: Some(refusal),
        ..
    }] = &exp[..]
    else {
        panic!("{exp:?}");
    };
    assert_eq!(refusal.code, "42P05");
}

#[test]
fn text_that_is_not_utf8_is_refused_and_recorded() {
    let mut r = rig();
    r.send(frame(crate::pg::backend::raw_message(
        fe::QUERY,
        b"SELECT '\xff'\0",
    )));
    let exp = r.expected();
    let [Expect::Simple {
        refusal: Some(refusal),
        ..
    }] = &exp[..]
    else {
        panic!("{exp:?}");
    };
    assert_eq!(refusal.code, "22021");
    let d = r.decisions();
    assert_eq!(d[0]["rule"], "builtin: encoding");
}

#[test]
fn fast_path_function_calls_are_refused() {
    let mut r = rig();
    r.send(frame(crate::pg::backend::raw_message(
        fe::FUNCTION_CALL,
        &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0],
    )));
    let fwd = r.forwarded();
    assert_eq!(query_text(&fwd[0].1), REFUSED_SQL);
    assert_eq!(r.decisions()[0]["rule"], "builtin: fastpath");
}

/// An agent allowed the signal functions by its policy: the process ids its statements name are
/// checked against whose session shows them, literals at Query, parameters at Bind.
#[test]
fn backend_signals_reach_only_the_agents_own_sessions() {
    const SIGNALS: &str = r#"agents = ["analyst"]
[[postgres]]
upstream = "shop"
functions = ["pg_cancel_backend", "pg_terminate_backend"]
"#;
    let t = TestCore::new(&[("analyst", TOKEN)], &[("analyst.toml", SIGNALS)]);
    let (accepted, pg) = session(&t);
    let registry = Arc::new(crate::pg::cancel::CancelRegistry::default());
    let owner = |agent: &str, server_process| crate::policy::backends::BackendOwner {
        agent: agent.into(),
        upstream: "shop".into(),
        server_process,
    };
    let slot = || Arc::new(crate::pg::cancel::CancelRoute::default());
    let (own, _, _own_guard) = registry.register(Some(4242), slot(), owner("analyst", true));
    let (other, _, _other_guard) = registry.register(Some(4343), slot(), owner("writer", true));
    let (pooled, _, _pooled_guard) = registry.register(None, slot(), owner("analyst", false));
    let pending = Pending::default();
    let mut state = State::new(pg.agent().clone(), &pending);
    state.facts.checks_signal_targets = true;
    state.backends = Some(registry.clone());
    let mut r = Rig {
        t,
        _accepted: accepted,
        pg,
        pending,
        state,
        out: BytesMut::new(),
    };
    let refused_with = |r: &mut Rig| -> Option<String> {
        let exp = r.expected();
        r.forwarded();
        exp.into_iter().find_map(|e| match e {
            Expect::Simple {
                refusal: Some(f), ..
            }
            | Expect::Parse {
                refusal: Some(f), ..
            } => Some(f.message),
            _ => None,
        })
    };
    // Literals: at Query.
    r.send(query(&format!("SELECT pg_terminate_backend({own})")));
    assert_eq!(refused_with(&mut r), None);
    for pid in [other, pooled, 999] {
        r.send(query(&format!("SELECT pg_cancel_backend({pid})")));
        let m = refused_with(&mut r).unwrap_or_else(|| panic!("{pid} not refused"));
        let rule = if pid == pooled {
            "builtin: transaction-pooling"
        } else {
            "builtin: own-backend"
        };
        assert!(m.ends_with(&format!("(rule: {rule})")), "{pid}: {m}");
        assert!(!m.contains("writer"), "{m}");
    }
    // Parameters: at Bind.
    let bind_pid = |pid: i32| {
        let mut body = BytesMut::new();
        use bytes::BufMut;
        body.put_slice(b"\0s\0");
        body.put_i16(1);
        body.put_i16(1);
        body.put_i16(1);
        body.put_i32(4);
        body.put_i32(pid);
        body.put_i16(0);
        frame(crate::pg::backend::raw_message(b'B', &body))
    };
    r.send(parse("s", "SELECT pg_terminate_backend($1)"));
    r.send(bind_pid(own));
    r.send(execute("", 0));
    r.send(bare(fe::SYNC));
    assert_eq!(refused_with(&mut r), None);
    r.send(bind_pid(other));
    r.send(execute("", 0));
    r.send(bare(fe::SYNC));
    let m = refused_with(&mut r).expect("a foreign parameter is refused");
    assert!(m.ends_with("(rule: builtin: own-backend)"), "{m}");
    let blocked: Vec<_> = r
        .decisions()
        .into_iter()
        .filter(|d| d["decision"] == "blocked")
        .collect();
    assert_eq!(blocked.len(), 4, "{blocked:?}");
}

/// The refusal each queued entry carries (in order), `None` for an entry that was forwarded.
fn refusals(exp: &[Expect]) -> Vec<Option<(String, String)>> {
    exp.iter()
        .filter_map(|e| match e {
            Expect::Simple { refusal, .. } | Expect::Parse { refusal, .. } => Some(
                refusal
                    .as_ref()
                    .map(|f| (f.code.to_string(), f.message.clone())),
            ),
            _ => None,
        })
        .collect()
}

/// The reply half saw `n` CommandComplete `PREPARE`s of the first queued entry, and the rest of
/// its replies: the queue is emptied (what went unconfirmed failed).
fn server_answered(r: &mut Rig, n: usize) {
    r.pending.with(|q| {
        for _ in 0..n {
            match q.front_mut() {
                Some(Expect::Simple { prepares, .. } | Expect::Execute { prepares, .. }) => {
                    prepares.confirm_next()
                }
                other => panic!("{other:?}"),
            }
        }
    });
    r.expected();
    r.forwarded();
}

/// A SQL PREPARE makes its name the session's only once the server confirmed it: not when it is
/// allowed (the server may refuse it: the name exists already on a shared connection), and not
/// when a protocol Parse of its text was merely parsed.
#[test]
fn a_prepared_name_is_executable_only_once_the_server_confirmed_its_prepare() {
    let mut r = rig();
    r.send(query("PREPARE p AS SELECT id FROM orders"));
    assert_eq!(refusals(&r.expected()), vec![None]);
    r.send(query("EXECUTE p"));
    let exp = r.expected();
    let refused = refusals(&exp);
    assert!(
        matches!(&refused[..], [Some((_, m))] if m.contains("builtin: unchecked-execute")),
        "before the server's answer: {refused:?}"
    );
    // The server refused the PREPARE (42P05: another session's statement of that name).
    r.send(query("PREPARE p AS SELECT id FROM orders"));
    r.forwarded();
    r.expected(); // the entry goes without a CommandComplete PREPARE
    r.send(query("EXECUTE p"));
    assert!(
        refusals(&r.expected())[0].is_some(),
        "refused PREPARE, no name"
    );
    // Confirmed: executable.
    r.send(query("PREPARE p AS SELECT id FROM orders"));
    server_answered(&mut r, 1);
    r.send(query("EXECUTE p"));
    assert_eq!(refusals(&r.expected()), vec![None]);
    // A Parse of a PREPARE that is never executed prepares nothing.
    r.send(parse("", "PREPARE q AS SELECT id FROM orders"));
    r.send(bare(fe::SYNC));
    r.expected();
    r.send(query("EXECUTE q"));
    assert!(
        refusals(&r.expected())[0].is_some(),
        "parsed only: {:?}",
        r.decisions()
    );
    // Executed through the protocol and confirmed: executable.
    r.send(parse("", "PREPARE q AS SELECT id FROM orders"));
    r.send(bind("", ""));
    r.send(execute("", 0));
    r.send(bare(fe::SYNC));
    r.pending
        .with(|q| q.retain(|e| matches!(e, Expect::Execute { .. })));
    server_answered(&mut r, 1);
    r.send(query("EXECUTE q"));
    assert_eq!(refusals(&r.expected()), vec![None]);
}

/// A PREPARE of a name the session has (confirmed, in flight, or a protocol statement's) is
/// refused as the server would, in its words, and recorded.
#[test]
fn preparing_a_name_the_session_has_is_refused_like_a_duplicate_parse() {
    let mut r = rig();
    r.send(query("PREPARE p AS SELECT id FROM orders"));
    r.send(query("PREPARE p AS SELECT 1"));
    let refused = refusals(&r.expected());
    assert!(
        matches!(&refused[..], [None, Some((c, _))] if c == "42P05"),
        "taken while in flight: {refused:?}"
    );
    r.send(query("PREPARE p2 AS SELECT 1; PREPARE p2 AS SELECT 2"));
    let refused = refusals(&r.expected());
    assert_eq!(
        refused,
        vec![Some((
            "42P05".to_string(),
            "prepared statement \"p2\" already exists".to_string()
        ))]
    );
    r.send(query("PREPARE p AS SELECT 1"));
    server_answered(&mut r, 1);
    for sql in [
        "PREPARE p AS SELECT 2",
        "DEALLOCATE x; PREPARE p AS SELECT 2",
    ] {
        r.send(query(sql));
        assert_eq!(
            refusals(&r.expected())[0].as_ref().map(|f| &*f.0),
            Some("42P05"),
            "{sql}"
        );
    }
    r.send(parse("p", "SELECT 1"));
    r.send(bare(fe::SYNC));
    assert_eq!(
        refusals(&r.expected())[0].as_ref().map(|f| &*f.0),
        Some("42P05")
    );
    r.send(parse("s1", "SELECT 1"));
    r.send(bare(fe::SYNC));
    r.expected();
    r.send(query("PREPARE s1 AS SELECT 1"));
    assert_eq!(
        refusals(&r.expected())[0].as_ref().map(|f| &*f.0),
        Some("42P05")
    );
    // Deallocated first in the same string: allowed.
    r.send(query("DEALLOCATE p; PREPARE p AS SELECT 3"));
    assert_eq!(refusals(&r.expected()), vec![None]);
    let blocked = r
        .decisions()
        .into_iter()
        .filter(|d| d["decision"] == "blocked")
        .count();
    assert_eq!(blocked, 6, "each refusal is recorded");
}

/// tollgate's own names (`tg_` + a hash anyone can compute) are refused in SQL and in protocol
/// messages; a Close of one never reaches the server.
#[test]
fn statement_names_in_tollgates_namespace_are_refused() {
    let mut r = rig();
    let name = "tg_1cba37a088ebfb64a32cf4ca18ca69ce";
    for sql in [
        format!("PREPARE {name} AS SELECT 1"),
        format!("EXECUTE {name}"),
        format!("DEALLOCATE {name}"),
        "PREPARE \"TG_x\" AS SELECT 1".to_string(),
    ] {
        r.send(query(&sql));
        let refused = refusals(&r.expected());
        assert!(
            matches!(&refused[..], [Some((c, m))] if c == "42501" && m.ends_with("(rule: builtin: reserved-name)")),
            "{sql}: {refused:?}"
        );
        assert_eq!(query_text(&r.forwarded()[0].1), REFUSED_SQL);
    }
    r.send(parse(name, "SELECT 1"));
    r.send(bare(fe::SYNC));
    r.send(parse("", "SELECT 1"));
    r.send(bind("", name));
    r.send(bare(fe::SYNC));
    let exp = r.expected();
    let refused: Vec<_> = refusals(&exp).into_iter().flatten().collect();
    assert_eq!(refused.len(), 2, "{exp:?}");
    assert!(refused
        .iter()
        .all(|(_, m)| m.contains("builtin: reserved-name")));
    let fwd = r.forwarded();
    assert!(
        !fwd.iter()
            .any(|(_, b)| b.windows(name.len()).any(|w| w == name.as_bytes())),
        "the name never reaches the server"
    );
    let mut close = BytesMut::new();
    close.extend_from_slice(format!("S{name}\0").as_bytes());
    r.send(frame(crate::pg::backend::raw_message(fe::CLOSE, &close)));
    assert!(r.forwarded().is_empty());
    assert!(matches!(&r.expected()[..], [Expect::Synthetic(_)]));
}

/// The rate holds per statement: a Query holding several takes a token for each, all or none;
/// one the bucket cannot pay for is refused whole (nothing of it forwarded) and recorded.
#[test]
fn a_query_takes_a_rate_token_for_each_of_its_statements() {
    const RATED: &str = r#"agents = ["analyst"]
[limits]
statements_per_minute = 60
burst = 4
[[postgres]]
upstream = "shop"
[[postgres.table]]
name = "orders"
allow = ["select"]
"#;
    let t = TestCore::new(&[("analyst", TOKEN)], &[("analyst.toml", RATED)]);
    let (accepted, pg) = session(&t);
    let pending = Pending::default();
    let state = State::new(pg.agent().clone(), &pending);
    let mut r = Rig {
        t,
        _accepted: accepted,
        pg,
        pending,
        state,
        out: BytesMut::new(),
    };
    let many = |n: usize| vec!["SELECT id FROM orders"; n].join("; ");
    let outcome = |r: &mut Rig, sql: &str| {
        r.send(query(sql));
        let fwd = r.forwarded();
        let refused = refusals(&r.expected()).remove(0);
        (query_text(&fwd[0].1) == REFUSED_SQL, refused)
    };
    assert_eq!(outcome(&mut r, &many(3)), (false, None));
    // Two tokens left: three statements are refused as a whole, and take none.
    let (substituted, refused) = outcome(&mut r, &many(3));
    let (code, message) = refused.expect("refused");
    assert!(substituted);
    assert_eq!(code, "53400");
    assert!(message.contains("rate limit of 60"), "{message}");
    assert_eq!(outcome(&mut r, &many(2)), (false, None));
    // More than burst + 1 at once never fit.
    let t0 = outcome(&mut r, &many(6));
    let message = t0.1.expect("refused").1;
    assert!(message.contains("a request of 6 statements"), "{message}");
    let blocked: Vec<_> = r
        .decisions()
        .into_iter()
        .filter(|d| d["decision"] == "blocked")
        .collect();
    assert_eq!(blocked.len(), 2, "{blocked:?}");
    assert!(blocked.iter().all(|d| d["sqlstate"] == "53400"));
}

/// An Execute of a portal this session neither bound nor DECLAREd is refused as the server
/// would (34000), before anything is sent: row limits count per portal tollgate knows of. A
/// cursor the session declared (a portal too) may be read by Execute; one without HOLD is gone
/// once the session is idle outside a transaction.
#[test]
fn only_portals_the_session_bound_or_declared_may_be_executed() {
    let mut r = rig();
    let refused_code = |r: &mut Rig| {
        let exp = r.expected();
        r.forwarded();
        exp.into_iter().find_map(|e| match e {
            Expect::Parse {
                refusal: Some(f), ..
            } => Some(f.code.to_string()),
            _ => None,
        })
    };
    r.send(execute("c", 0));
    r.send(bare(fe::SYNC));
    assert_eq!(refused_code(&mut r).as_deref(), Some("34000"));
    r.send(query("DECLARE c CURSOR FOR SELECT id FROM orders"));
    r.send(execute("c", 0));
    r.send(bare(fe::SYNC));
    assert_eq!(refused_code(&mut r), None, "a declared cursor is a portal");
    r.send(parse("", "SELECT id FROM orders"));
    r.send(bind("p", ""));
    r.send(execute("p", 0));
    r.send(bare(fe::SYNC));
    assert_eq!(refused_code(&mut r), None);
    // Idle outside a transaction (the last ReadyForQuery said I, nothing owed): c is gone.
    r.send(execute("c", 0));
    r.send(bare(fe::SYNC));
    assert_eq!(refused_code(&mut r).as_deref(), Some("34000"));
    let blocked = r
        .decisions()
        .into_iter()
        .filter(|d| d["decision"] == "blocked")
        .count();
    assert_eq!(blocked, 2);
}

#[test]
fn the_statement_words_bits_name_the_right_words() {
    use crate::policy::sql::cursors::WORDS as CURSOR_WORDS;
    let bit = |w: &str| 1u32 << STATEMENT_WORDS.iter().position(|x| *x == w).unwrap();
    let cursors = CURSOR_WORDS.iter().fold(0, |m, w| m | bit(w));
    assert_eq!(Words::CURSORS, cursors);
    assert_eq!(Words::DECLARE, bit("declare"));
    let encoding = ["encoding", "names", "reset", "discard", "set_config"]
        .iter()
        .fold(0, |m, w| m | bit(w));
    assert_eq!(Words::ENCODING, encoding);
    let w = Words::of("SELECT 1; DECLARE c CURSOR FOR SELECT 2; FETCH 5 FROM c");
    assert!(w.may_declare() && !w.may_change_encoding());
    assert_eq!(
        w.cursor_uses("SELECT 1; DECLARE c CURSOR FOR SELECT 2; FETCH 5 FROM c")
            .len(),
        3
    );
    let w = Words::of("SET client_encoding = 'LATIN1'");
    assert!(w.may_change_encoding() && !w.may_declare());
    assert!(
        Words::of("SELECT abalance FROM pgbench_accounts WHERE aid = $1")
            .cursor_uses("SELECT abalance FROM pgbench_accounts WHERE aid = $1")
            .is_empty()
    );
}
