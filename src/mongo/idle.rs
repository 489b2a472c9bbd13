//! Logged-in upstream connections kept between MCP tool calls. A login is a TCP connect, `hello`
//! and a SCRAM exchange whose PBKDF2 costs milliseconds; a `find` by `_id` costs well under one.
//! So a call borrows an idle connection when one is there and gives it back when it ended clean
//! (its reply read whole, no cursor left open). Only the MCP tools use these: a wire session
//! keeps its own connection for its whole life (cursors, sessions and transactions live on it).
//!
//! A connection is reused only with the credentials it logged in with (a vault reload swaps
//! them: older connections are dropped at the next borrow), for at most `MAX_IDLE_FOR` idle,
//! and at most `MAX_IDLE` wait per upstream. The commands borrowed connections carry leave no
//! state on them: no logical sessions (`lsid`), no transactions, cursors exhausted or killed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::door::MongoUpstream;
use super::upstream::{MongoConnection, MongoCredentials, UpstreamError};

/// Idle connections kept per upstream.
pub const MAX_IDLE: usize = 4;
/// How long one may wait unused (servers and firewalls close idle connections).
pub const MAX_IDLE_FOR: Duration = Duration::from_secs(60);

/// A connection lent to one call.
pub struct Lent {
    pub conn: MongoConnection,
    login: Arc<MongoCredentials>,
    /// It was idle before (a failure on it may only mean it went stale).
    pub reused: bool,
}

/// The idle connections of one upstream.
#[derive(Default)]
pub struct Idle {
    slots: Mutex<Vec<(Instant, Lent)>>,
}

impl Idle {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Instant, Lent)>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many are idle now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl MongoUpstream {
    /// An idle connection logged in with the current credentials, or a new one.
    pub async fn lend(&self, timeout: Duration) -> Result<Lent, UpstreamError> {
        let login = self.credentials.load_full();
        let reused = {
            let mut slots = self.idle.lock();
            // The most recently used first: the least likely to have gone stale.
            slots.retain(|(since, l)| {
                since.elapsed() < MAX_IDLE_FOR && Arc::ptr_eq(&l.login, &login)
            });
            slots.pop().map(|(_, l)| l)
        };
        match reused {
            Some(mut l) => {
                l.reused = true;
                Ok(l)
            }
            None => self.lend_new(timeout).await,
        }
    }

    /// A new connection (the idle ones are not looked at).
    pub async fn lend_new(&self, timeout: Duration) -> Result<Lent, UpstreamError> {
        let login = self.credentials.load_full();
        let conn = self.connect_with(&login, timeout).await?;
        Ok(Lent {
            conn,
            login,
            reused: false,
        })
    }

    /// Takes back a connection whose call ended clean (reply read whole, no cursor open).
    pub fn give_back(&self, mut lent: Lent) {
        if !Arc::ptr_eq(&lent.login, &self.credentials.load()) {
            return;
        }
        lent.reused = false;
        let mut slots = self.idle.lock();
        if slots.len() < MAX_IDLE {
            slots.push((Instant::now(), lent));
        }
    }

    /// Connections idle now (tests, metrics).
    pub fn idle_connections(&self) -> usize {
        self.idle.len()
    }
}
