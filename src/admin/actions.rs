//! Admin actions in the audit chain. Each action that changes state or reaches an upstream
//! (reload, audit rotation, connector test) writes an `admin` record before it runs — fail
//! closed: an action the log cannot record is not done (503) — and one with its outcome after,
//! linked by `ref_seq`. Records name the admin token and the caller's address, never the token.
//! Refused requests (no valid token; a viewer's token on an admin action) are recorded too, at
//! most one record a second ([`refused`]), so a flood of wrong tokens cannot flood the log.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use super::error::ApiError;
use super::tokens::Caller;
use super::State;
use crate::audit::{AdminAction, AuditLog, SystemRecord};

/// The address the request came from, when the listener knows it.
#[derive(Debug, Clone, Default)]
pub struct Client(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Client::of(parts))
    }
}

impl Client {
    fn of(parts: &Parts) -> Client {
        Client(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
        )
    }
}

/// An action recorded as started; [`Recorded::finish`] records its outcome.
pub struct Recorded {
    log: AuditLog,
    started: u64,
    base: AdminAction,
}

/// Records that `caller` starts `action` (on `target`); refuses the action if the record cannot
/// be written.
pub async fn start(
    state: &State,
    caller: &Caller,
    client: &Client,
    action: &'static str,
    target: Option<&str>,
) -> Result<Recorded, ApiError> {
    let log = state.gw.core.audit.clone();
    let base = AdminAction {
        ref_seq: None,
        admin: caller.name.clone(),
        client_addr: client.0.map(|a| a.to_string()),
        action: action.to_string(),
        target: target.map(str::to_string),
        outcome: "started".into(),
        error: None,
    };
    let started = log
        .append_system(SystemRecord::Admin(base.clone()))
        .await
        .map_err(|e| {
            tracing::error!(admin = %caller.name, action, error = %e, "admin action refused: the audit log cannot record it");
            ApiError::Unavailable(format!(
                "the audit log cannot record this action, so it was not done: {e}"
            ))
        })?;
    Ok(Recorded { log, started, base })
}

impl Recorded {
    /// Records the outcome: `Ok` or the reason it failed (tollgate's words, no secrets).
    pub async fn finish(self, outcome: Result<(), String>) {
        let (word, error) = match outcome {
            Ok(()) => ("ok", None),
            Err(e) => ("failed", Some(e)),
        };
        let action = self.base.action.clone();
        let record = AdminAction {
            ref_seq: Some(self.started),
            outcome: word.into(),
            error,
            ..self.base
        };
        if let Err(e) = self.log.append_system(SystemRecord::Admin(record)).await {
            // The action is done and its start is in the chain: say so where operators look.
            tracing::error!(%action, error = %e, "the outcome of an admin action could not be recorded");
        }
    }
}

/// How often a refused request is recorded; those in between are counted into the next record.
const REFUSALS_EVERY: Duration = Duration::from_secs(1);

/// When the last refusal was recorded, and how many were refused since without a record.
#[derive(Default)]
pub struct Refusals {
    last: Option<Instant>,
    folded: u64,
}

/// Records a refused request to `parts`' path: `admin` is the token's name when it was valid
/// (a viewer's), `None` for no valid token; `why` in tollgate's words. Best effort: the
/// request is refused whether or not the record is written.
pub async fn refused(state: &State, parts: &Parts, admin: Option<&str>, why: &str) {
    let folded = {
        let mut r = state.refusals.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if r.last
            .is_some_and(|l| now.duration_since(l) < REFUSALS_EVERY)
        {
            r.folded += 1;
            return;
        }
        r.last = Some(now);
        std::mem::take(&mut r.folded)
    };
    let error = match folded {
        0 => why.to_string(),
        n => format!("{why}; {n} more refused since the previous record, not recorded one by one"),
    };
    let record = AdminAction {
        ref_seq: None,
        admin: admin.unwrap_or("(no valid token)").to_string(),
        client_addr: Client::of(parts).0.map(|a| a.to_string()),
        action: if admin.is_some() {
            "authorize"
        } else {
            "authenticate"
        }
        .to_string(),
        target: Some(parts.uri.path().chars().take(200).collect()),
        outcome: "refused".into(),
        error: Some(error),
    };
    if let Err(e) = state
        .gw
        .core
        .audit
        .append_system(SystemRecord::Admin(record))
        .await
    {
        tracing::error!(error = %e, "a refused admin request could not be recorded");
    }
}
