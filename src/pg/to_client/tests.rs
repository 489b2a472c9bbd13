//! The reply side's state machine, fed backend messages by hand: pairing with what the client
//! waits for, refusals swapped in, "not executed" after an error in a batch, COPY markers, row
//! limits, and FATALs never hidden.

use crate::policy::sql::cursors::CursorUse;
use std::sync::Arc;

use bytes::BytesMut;

use super::{on_frame, ReplyState};
use crate::pg::backend::{self as msg, PgErrorFields};
use crate::pg::cancel::CancelTarget;
use crate::pg::pending::{Expect, Pending};
use crate::pg::statement::PgSession;
use crate::pg::testing::*;
use crate::policy::limits::Limits;
use crate::policy::{Outcome, Verdict};
use crate::session::testing::TestCore;

struct Rig {
    t: TestCore,
    _accepted: crate::session::Accepted,
    pg: Arc<PgSession>,
    pending: Pending,
    state: ReplyState,
    out: BytesMut,
}

fn rig() -> Rig {
    rig_with(core())
}

fn rig_with(t: TestCore) -> Rig {
    let (accepted, pg) = session(&t);
    let cancel = CancelTarget {
        addr: "127.0.0.1:9".parse().unwrap(),
        pid: 1,
        secret: 2,
        tls: None,
    };
    let route = crate::pg::cancel::CancelRoute::default();
    route.store(Some(std::sync::Arc::new(cancel)));
    let state = ReplyState::new(&pg, std::sync::Arc::new(route), None);
    Rig {
        t,
        _accepted: accepted,
        pg,
        pending: Pending::default(),
        state,
        out: BytesMut::new(),
    }
}

impl Rig {
    fn feed(&mut self, f: crate::pg::frame::Frame) {
        on_frame(&self.pg, &self.pending, &mut self.state, f, &mut self.out);
    }

    /// A decided statement's ticket, as the client side would have it.
    fn ticket(&self, sql: &str) -> crate::session::Ticket {
        let allowed = Verdict {
            outcome: Outcome::Allow,
            denial: None,
            effects: Vec::new(),
            rewrite: None,
            leaves_state: false,
            sets_local: false,
            clears_state: false,
            statements: 1,
        };
        self.pg
            .decide(sql, &allowed, &Limits::default())
            .expect("decided")
    }

    fn sent(&mut self) -> Vec<(u8, Vec<u8>)> {
        let out = self.out.split();
        messages(&out)
    }

    fn outcomes(&self) -> Vec<serde_json::Value> {
        self.t
            .records()
            .into_iter()
            .filter(|r| r["kind"] == "outcome")
            .collect()
    }
}

fn refusal() -> PgErrorFields {
    PgErrorFields::error("42501", "tollgate: no (rule: default-deny)")
}

#[test]
fn tollgates_own_answer_takes_the_place_of_the_empty_querys_reply() {
    let mut r = rig();
    r.pending.push(Expect::Simple {
        ticket: None,
        refusal: None,
        rows: 0,
        error: None,
        cursors: Default::default(),
        prepares: Default::default(),
        answer: Some(msg::command_complete("DEALLOCATE")),
        positions: None,
    });
    r.feed(bare(msg::EMPTY_QUERY));
    r.feed(ready(b'T'));
    let sent = r.sent();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].0, msg::COMMAND_COMPLETE);
    assert_eq!(&sent[0].1[..], b"DEALLOCATE\0");
    // The server's status, whatever it is.
    assert_eq!(
        (sent[1].0, &sent[1].1[..]),
        (msg::READY_FOR_QUERY, &b"T"[..])
    );
    assert!(r.pending.is_empty());
}

#[test]
fn a_refused_simple_query_shows_tollgates_error_in_place_of_the_upstreams() {
    let mut r = rig();
    r.pending.push(Expect::Simple {
        ticket: None,
        refusal: Some(refusal()),
        rows: 0,
        error: None,
        cursors: Default::default(),
        prepares: Default::default(),
        answer: None,
        positions: None,
    });
    // The substitute statement's syntax error, then ReadyForQuery.
    r.feed(server_error(
        "42601",
        "syntax error at or near \"TOLLGATE\"",
    ));
    r.feed(ready(b'I'));
    let sent = r.sent();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].0, msg::ERROR_RESPONSE);
    assert_eq!(msg::error_field(&sent[0].1, b'C').as_deref(), Some("42501"));
    assert_eq!(
        msg::error_field(&sent[0].1, b'M').as_deref(),
        Some("tollgate: no (rule: default-deny)")
    );
    assert_eq!(sent[1].0, msg::READY_FOR_QUERY);
    assert!(r.pending.is_empty());
}

#[test]
fn a_fatal_is_never_dressed_up_as_a_refusal() {
    let mut r = rig();
    r.pending.push(Expect::Simple {
        ticket: None,
        refusal: Some(refusal()),
        rows: 0,
        error: None,
        cursors: Default::default(),
        prepares: Default::default(),
        answer: None,
        positions: None,
    });
    r.feed(server_fatal(
        "57P01",
        "terminating connection due to administrator command",
    ));
    let sent = r.sent();
    assert_eq!(msg::error_field(&sent[0].1, b'C').as_deref(), Some("57P01"));
}

/// `pg_terminate_backend(pg_backend_pid())`: the statement's outcome is the server's FATAL (no
/// ReadyForQuery follows), and the reply side knows the server is going away.
#[test]
fn a_fatal_completes_its_statement_and_marks_the_server_gone() {
    let mut r = rig();
    let ticket = r.ticket("SELECT pg_terminate_backend(pg_backend_pid())");
    r.pending.push(Expect::Simple {
        ticket: Some(ticket),
        refusal: None,
        rows: 0,
        error: None,
        cursors: Default::default(),
        prepares: Default::default(),
        answer: None,
        positions: None,
    });
    assert!(!r.state.server_fatal);
    r.feed(server_fatal(
        "57P01",
        "terminating connection due to administrator command",
    ));
    assert!(r.state.server_fatal);
    assert!(r.pending.is_empty());
    let outcomes = r.outcomes();
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(outcomes[0]["sqlstate"], "57P01", "{outcomes:?}");
}

#[test]
fn after_an_error_in_a_batch_the_rest_up_to_sync_is_not_executed() {
    let mut r = rig();
    let first = r.ticket("SELECT 1/0");
    let second = r.ticket("SELECT 2");
    r.pending.push(Expect::Parse {
        refusal: None,
        server_name: None,
        named: None,
        positions: None,

        started: std::time::Instant::now(),
    });
    r.pending.push(Expect::Bind {
        portal: "".into(),
        statement: None,
        server_name: None,
    });
    r.pending.push(Expect::Execute {
        ticket: Some(first),
        portal: "".into(),
        cursor: None,
        prepares: Default::default(),
    });
    r.pending.push(Expect::Execute {
        ticket: Some(second),
        portal: "".into(),
        cursor: None,
        prepares: Default::default(),
    });
    r.pending.push(Expect::Sync);
    r.feed(bare(msg::PARSE_COMPLETE));
    r.feed(bare(msg::BIND_COMPLETE));
    r.feed(server_error("22012", "division by zero"));
    assert_eq!(r.pending.len(), 1, "only the Sync is left");
    r.feed(ready(b'I'));
    assert!(r.pending.is_empty());
    let outcomes = r.outcomes();
    assert_eq!(outcomes.len(), 2);
    assert_eq!(outcomes[0]["decision"], "error");
    assert_eq!(outcomes[0]["sqlstate"], "22012");
    assert_eq!(outcomes[0]["error"], "division by zero");
    assert_eq!(
        outcomes[1]["error"],
        "not executed: an earlier message in the same batch failed"
    );
    // The upstream's own error reaches the client untouched.
    let sent = r.sent();
    assert!(sent
        .iter()
        .any(|(t, b)| *t == msg::ERROR_RESPONSE
            && msg::error_field(b, b'C').as_deref() == Some("22012")));
}

#[test]
fn a_refused_parse_swaps_in_tollgates_error_and_skips_to_sync() {
    let mut r = rig();
    r.pending.push(Expect::Parse {
        refusal: Some(refusal()),
        server_name: None,
        named: None,
        positions: None,

        started: std::time::Instant::now(),
    });
    r.pending.push(Expect::Sync);
    r.feed(server_error(
        "42601",
        "syntax error at or near \"TOLLGATE\"",
    ));
    r.feed(ready(b'I'));
    let sent = r.sent();
    assert_eq!(msg::error_field(&sent[0].1, b'C').as_deref(), Some("42501"));
    assert!(r.pending.is_empty());
}

#[test]
fn syncs_the_server_ignored_during_copy_in_are_dropped() {
    let mut r = rig();
    let copy = r.ticket("COPY orders FROM STDIN");
    // tokio-postgres: Parse, Bind, Execute, Sync (ignored in copy-in), data, CopyDone, Sync.
    r.pending.push(Expect::Parse {
        refusal: None,
        server_name: None,
        named: None,
        positions: None,

        started: std::time::Instant::now(),
    });
    r.pending.push(Expect::Bind {
        portal: "".into(),
        statement: None,
        server_name: None,
    });
    r.pending.push(Expect::Execute {
        ticket: Some(copy),
        portal: "".into(),
        cursor: None,
        prepares: Default::default(),
    });
    r.pending.push(Expect::Sync);
    r.pending.push(Expect::CopyEnd);
    r.pending.push(Expect::Sync);
    r.feed(bare(msg::PARSE_COMPLETE));
    r.feed(bare(msg::BIND_COMPLETE));
    r.feed(frame(msg::raw_message(msg::COPY_IN_RESPONSE, &[0, 0, 0])));
    r.feed(complete("COPY 3"));
    assert_eq!(r.pending.len(), 1, "the Sync after CopyDone is still owed");
    r.feed(ready(b'I'));
    assert!(r.pending.is_empty());
    let outcomes = r.outcomes();
    assert_eq!(outcomes[0]["rows"], 3);
    assert_eq!(outcomes[0]["decision"], "allowed");
}

#[test]
fn rows_are_counted_into_the_outcome_record() {
    let mut r = rig();
    let t = r.ticket("SELECT * FROM orders");
    r.pending.push(Expect::Simple {
        ticket: Some(t),
        refusal: None,
        rows: 0,
        error: None,
        cursors: Default::default(),
        prepares: Default::default(),
        answer: None,
        positions: None,
    });
    for v in ["a", "b"] {
        r.feed(data_row(v));
    }
    r.feed(complete("SELECT 2"));
    r.feed(ready(b'T'));
    assert_eq!(r.pending.tx_status(), b'T');
    assert_eq!(r.outcomes()[0]["rows"], 2);
    let tags: Vec<u8> = r.sent().iter().map(|(t, _)| *t).collect();
    assert_eq!(tags, b"DDCZ");
}

/// Review: an Execute with a row count (asyncpg's fetchval, JDBC fetchSize, cursors) ended by
/// PortalSuspended had `rows: null`; each batch's outcome now says its rows.
#[test]
fn a_suspended_portal_s_outcome_counts_the_rows_of_its_execute() {
    let mut r = rig();
    r.pending.set_tx_status(b'T');
    for batch in [&["a", "b", "c"][..], &["d", "e"]] {
        let ticket = r.ticket("SELECT * FROM orders");
        r.pending.push(Expect::Execute {
            ticket: Some(ticket),
            portal: "p".into(),
            cursor: None,
            prepares: Default::default(),
        });
        for v in batch {
            r.feed(data_row(v));
        }
        r.feed(bare(msg::PORTAL_SUSPENDED));
    }
    let rows: Vec<serde_json::Value> = r.outcomes().iter().map(|o| o["rows"].clone()).collect();
    assert_eq!(rows, vec![serde_json::json!(3), serde_json::json!(2)]);
}

#[test]
fn a_portal_past_max_rows_is_cut_with_a_notice_and_a_normal_completion() {
    let limited = POLICY.replacen(
        "agents = [\"analyst\"]\n",
        "agents = [\"analyst\"]\n[limits]\nmax_rows = 2\n",
        1,
    );
    let t = TestCore::new(&[("analyst", TOKEN)], &[("analyst.toml", &limited)]);
    let mut r = rig_with(t);
    let ticket = r.ticket("SELECT * FROM orders");
    r.pending.push(Expect::Execute {
        ticket: Some(ticket),
        portal: "".into(),
        cursor: None,
        prepares: Default::default(),
    });
    r.pending.push(Expect::Sync);
    // Truncate mode asked the server for max_rows + 1 rows: it suspends the portal there.
    for v in ["a", "b", "c"] {
        r.feed(data_row(v));
    }
    r.feed(bare(msg::PORTAL_SUSPENDED));
    r.feed(ready(b'T'));
    let sent = r.sent();
    let tags: Vec<u8> = sent.iter().map(|(t, _)| *t).collect();
    assert_eq!(tags, b"DDNCZ", "two rows, a notice, a completion");
    assert_eq!(&sent[3].1[..], b"SELECT 2\0");
    assert_eq!(r.outcomes()[0]["rows"], 2);
}

/// The analyst with `max_rows = 2`, for the cursor tests.
fn rig_with_max_rows_2() -> Rig {
    let limited = POLICY.replacen(
        "agents = [\"analyst\"]\n",
        "agents = [\"analyst\"]\n[limits]\nmax_rows = 2\n",
        1,
    );
    rig_with(TestCore::new(
        &[("analyst", TOKEN)],
        &[("analyst.toml", &limited)],
    ))
}

/// A simple Query `sql` that uses a SQL cursor as `u` says, waiting for its reply.
fn push_simple_with_cursor(r: &mut Rig, sql: &str, u: crate::policy::sql::cursors::CursorUse) {
    let ticket = r.ticket(sql);
    r.pending.push(Expect::Simple {
        ticket: Some(ticket),
        refusal: None,
        rows: 0,
        error: None,
        cursors: crate::pg::cursor_rows::StatementCursors::new(vec![Some(u)]),
        prepares: Default::default(),
        answer: None,
        positions: None,
    });
}

#[test]
fn a_sql_cursor_counts_its_rows_across_fetches() {
    let mut r = rig_with_max_rows_2();
    let simple = push_simple_with_cursor;
    let fetch = || CursorUse::Fetch("c".into());
    simple(
        &mut r,
        "DECLARE c CURSOR FOR SELECT * FROM orders",
        CursorUse::Declare {
            name: "c".into(),
            hold: false,
        },
    );
    r.feed(complete("DECLARE CURSOR"));
    r.feed(ready(b'T'));
    simple(&mut r, "FETCH 1 FROM c", fetch());
    r.feed(data_row("a"));
    r.feed(complete("FETCH 1"));
    r.feed(ready(b'T'));
    // Inside a transaction the rest of a result past the limit is read and dropped.
    simple(&mut r, "FETCH 5 FROM c", fetch());
    for v in ["b", "c", "d"] {
        r.feed(data_row(v));
    }
    r.feed(complete("FETCH 3"));
    r.feed(ready(b'T'));
    simple(&mut r, "FETCH 5 FROM c", fetch());
    r.feed(data_row("e"));
    r.feed(complete("FETCH 1"));
    r.feed(ready(b'T'));
    let sent = r.sent();
    let tags: Vec<u8> = sent.iter().map(|(t, _)| *t).collect();
    assert_eq!(
        tags, b"CZDCZDNCZNCZ",
        "one row, then one more and the notice, then none"
    );
    assert_eq!(&sent[7].1[..], b"FETCH 1\0");
    assert_eq!(&sent[10].1[..], b"FETCH 0\0");
    // The cursor ends with its transaction: a new one with the same name starts at zero.
    r.feed(ready(b'I'));
    simple(&mut r, "FETCH 5 FROM c", fetch());
    r.feed(data_row("x"));
    r.feed(data_row("y"));
    r.feed(complete("FETCH 2"));
    let tags: Vec<u8> = r.sent().iter().map(|(t, _)| *t).collect();
    assert_eq!(tags, b"ZDDC");
}

/// A SQL cursor is a portal: reading one portal by protocol Execute and then by SQL FETCH (or
/// the other way round) counts its rows once, against one `max_rows` (a reviewer read 2000 rows
/// with max_rows = 1000 by mixing the two).
#[test]
fn execute_and_fetch_of_one_portal_share_its_row_count() {
    let mut r = rig_with_max_rows_2();
    let simple = push_simple_with_cursor;
    let execute = |r: &mut Rig, portal: &str| {
        let ticket = r.ticket("SELECT * FROM orders");
        r.pending.push(Expect::Execute {
            ticket: Some(ticket),
            portal: portal.into(),
            cursor: None,
            prepares: Default::default(),
        });
    };
    r.pending.set_tx_status(b'T'); // inside the transaction the portals live in
                                   // Execute(p1) in truncate mode: max + 1 rows asked, two shown, the portal suspended.
    r.pending.push(Expect::Bind {
        portal: "p1".into(),
        statement: None,
        server_name: None,
    });
    r.feed(bare(msg::BIND_COMPLETE));
    execute(&mut r, "p1");
    for v in ["a", "b", "c"] {
        r.feed(data_row(v));
    }
    r.feed(bare(msg::PORTAL_SUSPENDED));
    // Then FETCH from the same portal by SQL: it goes on from the Execute's count.
    simple(&mut r, "FETCH 2 FROM p1", CursorUse::Fetch("p1".into()));
    r.feed(data_row("d"));
    r.feed(data_row("e"));
    r.feed(complete("FETCH 2"));
    r.feed(ready(b'T'));
    let sent = r.sent();
    let rows = sent.iter().filter(|(t, _)| *t == msg::DATA_ROW).count();
    assert_eq!(rows, 2, "{sent:?}");
    assert!(sent
        .iter()
        .any(|(t, b)| *t == msg::COMMAND_COMPLETE && &b[..] == b"FETCH 0\0"));
    // The other way round: a SQL cursor FETCHed to the limit, then read by protocol Execute.
    simple(
        &mut r,
        "DECLARE c CURSOR FOR SELECT * FROM orders",
        CursorUse::Declare {
            name: "c".into(),
            hold: false,
        },
    );
    r.feed(complete("DECLARE CURSOR"));
    r.feed(ready(b'T'));
    simple(&mut r, "FETCH 2 FROM c", CursorUse::Fetch("c".into()));
    r.feed(data_row("a"));
    r.feed(data_row("b"));
    r.feed(complete("FETCH 2"));
    r.feed(ready(b'T'));
    execute(&mut r, "c");
    for v in ["c", "d", "e"] {
        r.feed(data_row(v));
    }
    r.feed(bare(msg::PORTAL_SUSPENDED));
    let sent = r.sent();
    let rows = sent.iter().filter(|(t, _)| *t == msg::DATA_ROW).count();
    assert_eq!(rows, 2, "only the FETCH's rows: {sent:?}");
    assert!(sent
        .iter()
        .any(|(t, b)| *t == msg::COMMAND_COMPLETE && &b[..] == b"SELECT 0\0"));
    // A new Bind of a portal name starts its count again.
    r.pending.push(Expect::Bind {
        portal: "p1".into(),
        statement: None,
        server_name: None,
    });
    r.feed(bare(msg::BIND_COMPLETE));
    execute(&mut r, "p1");
    r.feed(data_row("x"));
    r.feed(complete("SELECT 1"));
    let rows = r.sent().iter().filter(|(t, _)| *t == msg::DATA_ROW).count();
    assert_eq!(rows, 1);
}

/// tollgate's own replies waiting on a client that does not read keep the session unsettled:
/// a drain closing it then would cut them (a live review).
#[tokio::test]
async fn own_replies_waiting_on_a_full_client_socket_keep_the_session_unsettled() {
    let pending = Pending::default();
    pending.push(Expect::Synthetic(msg::ready_for_query(b'I')));
    // A 4-byte pipe nobody reads: the 6-byte ReadyForQuery cannot all go.
    let (mut socket, _unread) = tokio::io::duplex(4);
    let mut client = super::ClientOut {
        socket: &mut socket,
        writes: crate::session::ClientWrites::new(0),
    };
    let mut out = BytesMut::new();
    let flush = super::flush_synthetic(&pending, &mut client, &mut out);
    tokio::pin!(flush);
    let waited = tokio::time::timeout(std::time::Duration::from_millis(50), &mut flush).await;
    assert!(waited.is_err(), "the write cannot finish");
    assert!(!pending.settled(), "settled while its reply is unwritten");
}
