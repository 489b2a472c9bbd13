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
