//! Admin actions in the audit chain. Each action that changes state or reaches an upstream
//! (reload, audit rotation, connector test) writes an `admin` record before it runs — fail
//! closed: an action the log cannot record is not done (503) — and one with its outcome after,
//! linked by `ref_seq`. Records name the admin token and the caller's address, never the token.

use std::net::SocketAddr;

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
        Ok(Client(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
        ))
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
