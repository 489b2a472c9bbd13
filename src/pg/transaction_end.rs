//! COMMIT and ROLLBACK take no rate token inside a transaction. PostgreSQL never refuses them,
//! and drivers and pools send them on their own (psycopg and SQLAlchemy roll back a connection
//! before it goes back to the pool): refused over the rate, the transaction stayed open on a
//! server connection that transaction pooling shares, until the client retried or the
//! idle-in-transaction timeout. Only inside a transaction, so they cannot be sent for free to
//! write audit records: the BEGIN before each was charged.

use crate::policy::limits::Limits;

/// `limits` without the rate when `text` is a lone COMMIT or ROLLBACK (or ROLLBACK TO
/// SAVEPOINT) sent while the session is in a transaction block (`tx_status` `T` or `E`).
pub fn limits_for<'a>(
    limits: &'a Limits,
    text: &str,
    tx_status: u8,
    spare: &'a mut Option<Limits>,
) -> &'a Limits {
    if limits.rate.is_none() || tx_status == b'I' || !ends_transaction(text) {
        return limits;
    }
    spare.insert(Limits {
        rate: None,
        ..limits.clone()
    })
}

/// A single `COMMIT` / `END` / `ROLLBACK` / `ABORT` (with `WORK` or `TRANSACTION`), or
/// `ROLLBACK [WORK|TRANSACTION] TO [SAVEPOINT] name`, as drivers send them: one statement, no
/// comment, plain words.
fn ends_transaction(text: &str) -> bool {
    let text = text.trim().trim_end_matches(';').trim_end();
    if text.contains(';') || text.contains("--") || text.contains("/*") || text.len() > 200 {
        return false;
    }
    let words: Vec<String> = text
        .split_whitespace()
        .map(str::to_ascii_lowercase)
        .collect();
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    let Some((&first, rest)) = w.split_first() else {
        return false;
    };
    if !matches!(first, "commit" | "end" | "rollback" | "abort") {
        return false;
    }
    let mut rest = rest;
    if let ["work" | "transaction", tail @ ..] = rest {
        rest = tail;
    }
    match rest {
        [] => true,
        ["to", tail @ ..] if first == "rollback" => {
            let name = match tail {
                ["savepoint", name] | [name] => name,
                _ => return false,
            };
            let mut chars = name.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::ends_transaction;

    #[test]
    fn only_a_lone_transaction_end_is_one() {
        for yes in [
            "COMMIT",
            "commit;",
            "ROLLBACK",
            " rollback work ",
            "END TRANSACTION",
            "ABORT",
            "ROLLBACK TO SAVEPOINT sa_savepoint_1",
            "rollback to s1",
            "ROLLBACK TRANSACTION TO SAVEPOINT _x$1",
        ] {
            assert!(ends_transaction(yes), "{yes}");
        }
        for no in [
            "BEGIN",
            "SELECT 1",
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
