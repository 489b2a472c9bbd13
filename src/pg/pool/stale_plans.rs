//! Statements whose server-side plan went stale. A prepared statement's result columns are fixed
//! when it is prepared: after `ALTER TABLE` changes them, every Bind of it fails with `0A000
//! cached plan must not change result type` until it is prepared again. Drivers do that
//! themselves (asyncpg drops its cache and prepares the text anew), but under transaction
//! pooling tollgate shares one server statement per text (`tg_<hash>`) between sessions and
//! answers a Parse of a text the connection holds itself: the driver's new Parse never reached
//! the server, and the statement failed for every agent until the connection closed. So a 0A000
//! at the Bind of a tollgate-named statement marks its name stale here, for every connection of
//! the upstream's pool (the name is a hash of the upstream and the text: the same text there is
//! stale on every connection); a connection
//! that prepared it before that is made to close and prepare it again at its next use.
//!
//! A refusal is not the only sign: a copy prepared anew where a connection lacked it has the
//! new columns and is never refused, while a session that parsed before the change was
//! described the old ones (asyncpg decoded int8 rows as float8, silently: a live review). So
//! before a Bind runs a copy prepared for it anew, the copy is described first and compared
//! with what the session's client was described (`pg::from_client::describe_before_bind`); one
//! that differs marks the name too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The latest mark (0: none ever). A statement prepared at or after it cannot be stale, so the
/// common case reads one atomic and takes no lock.
static LATEST: AtomicU64 = AtomicU64::new(0);
static MARKED: Mutex<Option<HashMap<Arc<str>, u64>>> = Mutex::new(None);

/// Most names remembered; beyond it the oldest half is forgotten (a forgotten name that is still
/// stale somewhere fails one Bind more and is marked again).
const MAX_MARKED: usize = 4096;

/// The mark a statement prepared now carries.
pub fn now() -> u64 {
    LATEST.load(Ordering::Acquire)
}

/// `name`'s plan was refused as stale: every copy prepared before now is.
pub fn mark(name: &Arc<str>) {
    let mut marked = MARKED.lock().unwrap_or_else(|e| e.into_inner());
    let map = marked.get_or_insert_with(HashMap::new);
    let at = LATEST.fetch_add(1, Ordering::AcqRel) + 1;
    map.insert(name.clone(), at);
    if map.len() > MAX_MARKED {
        let mut ages: Vec<u64> = map.values().copied().collect();
        ages.sort_unstable();
        let cut = ages[ages.len() / 2];
        map.retain(|_, m| *m > cut);
    }
    metrics::counter!("tollgate_pool_stale_plans_total").increment(1);
    tracing::debug!(statement = %name, "a server refused a pooled statement's stale plan: it is prepared again at its next use");
}

/// Whether a copy of `name` prepared at mark `prepared_at` is stale.
pub fn is_stale(name: &str, prepared_at: u64) -> bool {
    if prepared_at >= now() {
        return false;
    }
    marked_at(name).is_some_and(|m| m > prepared_at)
}

/// Whether `name` was ever marked (and is still remembered): a Parse of it is sent after a
/// Close, as the server may hold a stale copy tollgate no longer counts as prepared there.
pub fn was_marked(name: &str) -> bool {
    now() > 0 && marked_at(name).is_some()
}

fn marked_at(name: &str) -> Option<u64> {
    let marked = MARKED.lock().unwrap_or_else(|e| e.into_inner());
    marked.as_ref()?.get(name).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_prepared_before_the_mark_is_stale_and_one_prepared_after_is_not() {
        let name: Arc<str> = "tg_stale_plans_unit_test".into();
        let before = now();
        assert!(!is_stale(&name, before));
        mark(&name);
        assert!(is_stale(&name, before));
        assert!(!is_stale(&name, now()));
        assert!(was_marked(&name));
        assert!(!is_stale("tg_never_marked_unit_test", before));
    }
}
