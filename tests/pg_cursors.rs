//! `max_rows` holds per SQL cursor across FETCHes (each a statement of its own), in the simple
//! and the extended protocol, for cursors that end with their transaction and WITH HOLD cursors
//! that outlive it: the analyst (1000 rows) reads at most 1000 rows from one cursor.

mod support;

use support::{connect, harness};
use tokio_postgres::SimpleQueryMessage;

fn rows(messages: &[SimpleQueryMessage]) -> usize {
    messages
        .iter()
        .filter(|m| matches!(m, SimpleQueryMessage::Row(_)))
        .count()
}

#[test]
fn fetches_from_one_cursor_count_together() {
    harness().runtime.block_on(async {
        let c = connect("analyst").await;
        c.batch_execute("BEGIN; DECLARE c CURSOR FOR SELECT id FROM orders ORDER BY id")
            .await
            .unwrap();
        let first = rows(&c.simple_query("FETCH 800 FROM c").await.unwrap());
        let second = rows(&c.simple_query("FETCH 800 FROM c").await.unwrap());
        let third = rows(&c.simple_query("FETCH 800 FROM c").await.unwrap());
        assert_eq!((first, second, third), (800, 200, 0));
        // MOVE returns no rows; moving back and fetching again still counts.
        c.batch_execute("MOVE BACKWARD ALL IN c").await.ok();
        c.batch_execute("COMMIT").await.unwrap();
        // A new transaction, a new cursor of the same name: a fresh count. The extended
        // protocol (a prepared FETCH) counts the same way.
        c.batch_execute("BEGIN; DECLARE c CURSOR FOR SELECT id FROM orders ORDER BY id")
            .await
            .unwrap();
        let fetch = c.prepare("FETCH 600 FROM c").await.unwrap();
        let a = c.query(&fetch, &[]).await.unwrap().len();
        let b = c.query(&fetch, &[]).await.unwrap().len();
        assert_eq!((a, b), (600, 400));
        c.batch_execute("COMMIT").await.unwrap();
    });
}

#[test]
fn a_with_hold_cursor_keeps_its_count_past_its_transaction() {
    harness().runtime.block_on(async {
        let c = connect("analyst").await;
        c.batch_execute(
            "BEGIN; DECLARE h CURSOR WITH HOLD FOR SELECT id FROM orders ORDER BY id; COMMIT",
        )
        .await
        .unwrap();
        let first = rows(&c.simple_query("FETCH 700 FROM h").await.unwrap());
        let second = rows(&c.simple_query("FETCH 700 FROM h").await.unwrap());
        assert_eq!((first, second), (700, 300));
        c.batch_execute("CLOSE h").await.unwrap();
        // Closed and declared again: counted from zero.
        c.batch_execute(
            "BEGIN; DECLARE h CURSOR WITH HOLD FOR SELECT id FROM orders ORDER BY id; COMMIT",
        )
        .await
        .unwrap();
        let again = rows(&c.simple_query("FETCH 900 FROM h").await.unwrap());
        assert_eq!(again, 900);
        c.batch_execute("CLOSE h").await.unwrap();
    });
}

/// DISCARD PLANS, SEQUENCES and TEMP close no cursor: sent between FETCHes they do not start
/// the cursor's count again (only DISCARD ALL, which closes every cursor, does). Whether the
/// analyst may run DISCARD at all is its policy's business; its rows never pass the limit.
#[test]
fn a_discard_that_closes_no_cursor_does_not_reset_its_count() {
    harness().runtime.block_on(async {
        let c = connect("analyst").await;
        c.batch_execute("BEGIN; DECLARE d CURSOR FOR SELECT id FROM orders ORDER BY id")
            .await
            .unwrap();
        let mut read = rows(&c.simple_query("FETCH 800 FROM d").await.unwrap());
        for discard in ["DISCARD PLANS", "DISCARD SEQUENCES", "DISCARD TEMP"] {
            // Refused or run, it must not free the cursor's rows.
            let _ = c.batch_execute(discard).await;
            if let Ok(m) = c.simple_query("FETCH 800 FROM d").await {
                read += rows(&m);
            }
        }
        assert!(read <= 1000, "read {read} rows through one cursor");
        c.batch_execute("ROLLBACK").await.ok();
    });
}

/// Raw extended-protocol messages (tokio-postgres names its own portals).
fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    support::message(tag, body)
}

fn execute(portal: &str, max: i32) -> Vec<u8> {
    let mut b = format!("{portal}\0").into_bytes();
    b.extend_from_slice(&max.to_be_bytes());
    msg(b'E', &b)
}

/// Sends `msgs`, reads to ReadyForQuery: (DataRows, SQLSTATE of the first error).
async fn exchange(s: &mut tokio::net::TcpStream, msgs: &[Vec<u8>]) -> (usize, Option<String>) {
    use tokio::io::AsyncWriteExt;
    s.write_all(&msgs.concat()).await.unwrap();
    let (mut data, mut code) = (0, None);
    loop {
        let (tag, body) = support::read_message(s).await;
        match tag {
            b'D' => data += 1,
            b'E' if code.is_none() => code = support::error_field(&body, b'C'),
            b'Z' => return (data, code),
            _ => {}
        }
    }
}

/// A SQL cursor is a portal and a protocol portal can be FETCHed by SQL: reading one portal both
/// ways counts its rows once, against the analyst's 1000 (a reviewer read 2000 from one portal
/// by Execute then FETCH, and from one cursor by FETCH then Execute). An Execute of a portal the
/// session never bound or declared is refused as the server would.
#[test]
fn execute_and_fetch_of_one_portal_count_together() {
    harness().runtime.block_on(async {
        let mut s = support::raw_login("analyst").await;
        let q = |sql: &str| msg(b'Q', format!("{sql}\0").as_bytes());
        let sync = msg(b'S', b"");
        assert_eq!(exchange(&mut s, &[q("BEGIN")]).await, (0, None));
        // Execute first (truncated at 1000, the portal left open), then FETCH from it.
        let parse = msg(b'P', b"\0SELECT id FROM orders ORDER BY id\0\0\0");
        let bind = msg(b'B', b"p1\0\0\0\0\0\0\0\0");
        let (first, code) = exchange(&mut s, &[parse, bind, execute("p1", 0), sync.clone()]).await;
        assert_eq!((first, code), (1000, None));
        let (more, code) = exchange(&mut s, &[q("FETCH 1000 FROM p1")]).await;
        assert_eq!((more, code), (0, None), "FETCH after Execute");
        // FETCH first, then Execute of the cursor's portal.
        let declare = q("DECLARE c CURSOR FOR SELECT id FROM orders ORDER BY id");
        assert_eq!(exchange(&mut s, &[declare]).await, (0, None));
        let (first, _) = exchange(&mut s, &[q("FETCH 1000 FROM c")]).await;
        assert_eq!(first, 1000);
        let (more, code) = exchange(&mut s, &[execute("c", 0), sync.clone()]).await;
        assert_eq!((more, code), (0, None), "Execute after FETCH");
        // A portal nobody bound or declared here.
        let (none, code) = exchange(&mut s, &[execute("nobody", 0), sync.clone()]).await;
        assert_eq!((none, code.as_deref()), (0, Some("34000")));
        exchange(&mut s, &[q("ROLLBACK")]).await;
    });
}

/// PostgreSQL keeps a portal's name to its first 63 bytes: a protocol portal named with 64 and
/// a FETCH naming its first 63 read one server portal, and count as one (a review read 2000
/// rows from it, Execute then FETCH, when the two names were counted apart).
#[test]
fn names_that_the_server_cuts_to_one_portal_count_as_one() {
    harness().runtime.block_on(async {
        let mut s = support::raw_login("analyst").await;
        let q = |sql: &str| msg(b'Q', format!("{sql}\0").as_bytes());
        let sync = msg(b'S', b"");
        let p63 = "p".repeat(63);
        let long = format!("{p63}X");
        assert_eq!(exchange(&mut s, &[q("BEGIN")]).await, (0, None));
        let parse = msg(b'P', b"\0SELECT id FROM orders ORDER BY id\0\0\0");
        let bind = msg(b'B', format!("{long}\0\0\0\0\0\0\0\0").as_bytes());
        let (first, code) = exchange(&mut s, &[parse, bind, execute(&long, 0), sync.clone()]).await;
        assert_eq!((first, code), (1000, None));
        let (more, code) =
            exchange(&mut s, &[q(&format!("FETCH FORWARD ALL FROM \"{p63}\""))]).await;
        assert_eq!((more, code), (0, None), "FETCH of the first 63 bytes");
        let (more, _) = exchange(&mut s, &[execute(&format!("{p63}Y"), 0), sync.clone()]).await;
        assert_eq!(
            more, 0,
            "Execute of another name with the same first 63 bytes"
        );
        exchange(&mut s, &[q("ROLLBACK")]).await;
    });
}
