//! COMMIT and ROLLBACK take no rate token inside a transaction. PostgreSQL never refuses them,
//! and drivers and pools send them on their own (psycopg and SQLAlchemy roll back a connection
//! before it goes back to the pool): refused over the rate, the transaction stayed open on a
//! server connection that transaction pooling shares, until the client retried or the
//! idle-in-transaction timeout. Only inside a transaction, and only after a statement that was
//! charged (the BEGIN, at least): sent without end, in a pipeline whose transaction status is
//! not known yet, at most every other one is free.

use crate::policy::limits::Limits;

/// A session's right to one free transaction end, earned by a statement that was not free.
#[derive(Debug, Default)]
pub struct FreeEnds {
    earned: bool,
}

impl FreeEnds {
    /// `limits` without the rate when `text` is a lone COMMIT or ROLLBACK sent while the session
    /// is in a transaction block (`tx_status` `T` or `E`) and a charged statement came since the
    /// last free one. Not ROLLBACK TO SAVEPOINT: the transaction goes on, and it could be sent
    /// without end for free (the re-review ran 1,500 in 0.4 s).
    pub fn limits_for<'a>(
        &mut self,
        limits: &'a Limits,
        text: &str,
        tx_status: u8,
        spare: &'a mut Option<Limits>,
    ) -> &'a Limits {
        let free =
            limits.rate.is_some() && tx_status != b'I' && self.earned && ends_transaction(text);
        self.earned = !free;
        if !free {
            return limits;
        }
        spare.insert(Limits {
            rate: None,
            ..limits.clone()
        })
    }
}

/// A single `COMMIT` / `END` / `ROLLBACK` / `ABORT` (with `WORK` or `TRANSACTION`), as drivers
/// send them: one statement, no comment, plain words.
fn ends_transaction(text: &str) -> bool {
    let text = text.trim().trim_end_matches(';').trim_end();
    if text.len() > 40 {
        return false;
    }
    // Word by word, without allocating: this runs for statements inside transactions.
    let is = |word: Option<&str>, any: &[&str]| {
        word.is_some_and(|w| any.iter().any(|a| w.eq_ignore_ascii_case(a)))
    };
    let mut words = text.split_whitespace();
    if !is(words.next(), &["commit", "end", "rollback", "abort"]) {
        return false;
    }
    match words.next() {
        None => true,
        second => is(second, &["work", "transaction"]) && words.next().is_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_every_other_transaction_end_is_free() {
        let mut limits = Limits::default();
        let rate = crate::policy::limits::Rate {
            per_minute: 60,
            burst: 6,
        };
        limits.rate = Some((rate, "r".into()));
        let mut ends = FreeEnds::default();
        let mut free = |text: &str, status: u8| {
            let mut spare = None;
            ends.limits_for(&limits, text, status, &mut spare)
                .rate
                .is_none()
        };
        assert!(!free("BEGIN", b'I'));
        assert!(free("ROLLBACK", b'T'));
        // Pipelined behind it, the status not known yet: charged, then free again at most.
        assert!(!free("ROLLBACK", b'T'));
        assert!(free("COMMIT", b'T'));
        assert!(!free("COMMIT", b'T'));
        assert!(!free("SELECT 1", b'T'));
        assert!(!free("ROLLBACK TO SAVEPOINT s", b'E'));
        assert!(free("ROLLBACK", b'E'));
        assert!(!free("SELECT 1", b'I'));
        assert!(!free("ROLLBACK", b'I'), "outside a transaction");
    }

    #[test]
    fn only_a_lone_transaction_end_is_one() {
        for yes in [
            "COMMIT",
            "commit;",
            "ROLLBACK",
            " rollback work ",
            "END TRANSACTION",
            "ABORT",
        ] {
            assert!(ends_transaction(yes), "{yes}");
        }
        for no in [
            "BEGIN",
            "SELECT 1",
            "ROLLBACK TO SAVEPOINT sa_savepoint_1",
            "rollback to s1",
            "ROLLBACK TRANSACTION TO SAVEPOINT _x$1",
            "COMMIT; SELECT 1",
            "ROLLBACK; DELETE FROM orders",
            "COMMIT AND CHAIN",
            "ROLLBACK TO SAVEPOINT \"x\"",
            "ROLLBACK TO SAVEPOINT a b",
            "COMMIT PREPARED 'x'",
            "ROLLBACK PREPARED 'x'",
            "/* x */ COMMIT",
            "COMMIT -- x",
            "RELEASE SAVEPOINT a",
            "",
        ] {
            assert!(!ends_transaction(no), "{no}");
        }
    }
}
