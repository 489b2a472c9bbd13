//! Request authentication: `Authorization: Bearer <admin token>` checked against the gateway's
//! admin tokens. Extractors: [`Viewer`] (viewer or admin) and [`Admin`] (admin only).
//!
//! A token seen before costs one SHA-256 (passed or failed, `tokens::Known`); a new one costs
//! PBKDF2 over every stored verifier, so those checks run one at a time ([`CHECKS_AT_ONCE`]) off
//! the async workers: a flood of made-up tokens costs the gateway at most that much CPU, and a
//! request that cannot start its check within [`CHECK_WAIT`] gets 429. Every failure is counted
//! in `tollgate_auth_failures_total{protocol="admin"}` and recorded in the audit chain (at most
//! one record a second, `actions::refused`); the presented token is never logged.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;
use super::tokens::{Caller, Known, Role};
use super::State;
use crate::session::PreauthSlot;

/// PBKDF2 checks of new tokens running at once.
pub const CHECKS_AT_ONCE: usize = 1;
/// How long a request waits for its turn to check a new token.
pub const CHECK_WAIT: Duration = Duration::from_secs(1);

/// A caller with at least the viewer role.
#[derive(Debug)]
pub struct Viewer(#[allow(dead_code)] pub Caller);

/// A caller with the admin role.
#[derive(Debug)]
pub struct Admin(pub Caller);

/// The bearer token of the one Authorization header (none with two: a proxy in front that reads
/// the last and tollgate the first would disagree on who calls).
fn bearer(parts: &Parts) -> Option<&str> {
    let mut values = parts.headers.get_all(AUTHORIZATION).iter();
    let value = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None;
    }
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn failed() -> ApiError {
    metrics::counter!("tollgate_auth_failures_total", "protocol" => "admin").increment(1);
    ApiError::Unauthorized
}

/// The caller `parts` authenticates as; a refusal is recorded in the audit chain.
async fn caller(parts: &Parts, state: &State) -> Result<Caller, ApiError> {
    let found = check_token(parts, state).await;
    match &found {
        Err(ApiError::Unauthorized) => {
            super::actions::refused(state, parts, None, "no valid admin token").await;
        }
        // The connection has authenticated: it no longer waits to (`http_serve`).
        Ok(_) => {
            if let Some(slot) = parts.extensions.get::<Arc<PreauthSlot>>() {
                slot.release();
            }
        }
        Err(_) => {}
    }
    found
}

async fn check_token(parts: &Parts, state: &State) -> Result<Caller, ApiError> {
    let token = bearer(parts).ok_or_else(failed)?;
    if token.is_empty() || token.len() > 256 {
        return Err(failed());
    }
    let tokens = state.gw.admin_tokens.load_full();
    match tokens.known(token) {
        Known::Valid(c) => return Ok(c),
        Known::Refused => return Err(failed()),
        Known::Unknown => {}
    }
    let turn = take_turn(&state.token_checks, CHECK_WAIT).await?;
    // PBKDF2 per verifier: off the async workers, one check at a time (the turn ends with the
    // check, even if this request is dropped meanwhile). The same token may have been checked
    // while this request waited: `verify` answers that from its hash.
    let token = token.to_owned();
    let tokens = Arc::clone(&tokens);
    let found = tokio::task::spawn_blocking(move || {
        let found = tokens.verify(&token);
        drop(turn);
        found
    })
    .await
    .map_err(|e| ApiError::Internal(format!("token check failed: {e}")))?;
    found.ok_or_else(failed)
}

/// A turn to run a full token check, waiting at most `wait` for it (429 otherwise).
async fn take_turn(
    turns: &Arc<Semaphore>,
    wait: Duration,
) -> Result<OwnedSemaphorePermit, ApiError> {
    match tokio::time::timeout(wait, Arc::clone(turns).acquire_owned()).await {
        Ok(Ok(turn)) => Ok(turn),
        _ => {
            metrics::counter!("tollgate_auth_throttled_total", "protocol" => "admin").increment(1);
            Err(ApiError::TooManyRequests(
                "too many admin token checks at once; retry in a second".into(),
            ))
        }
    }
}

impl FromRequestParts<State> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, ApiError> {
        caller(parts, state).await.map(Viewer)
    }
}

impl FromRequestParts<State> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, ApiError> {
        let c = caller(parts, state).await?;
        if c.role < Role::Admin {
            let why = "the token's role is viewer; this needs admin";
            super::actions::refused(state, parts, Some(&c.name), why).await;
            return Err(ApiError::Forbidden);
        }
        Ok(Admin(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_check_waits_its_turn_and_gives_up_with_429() {
        let turns = Arc::new(Semaphore::new(CHECKS_AT_ONCE));
        let held = take_turn(&turns, CHECK_WAIT).await.unwrap();
        let started = std::time::Instant::now();
        let e = take_turn(&turns, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(matches!(e, ApiError::TooManyRequests(_)), "{e:?}");
        assert!(started.elapsed() >= Duration::from_millis(50));
        // A turn given back (the check ended) goes to the next waiter.
        let waiter = tokio::spawn({
            let turns = Arc::clone(&turns);
            async move { take_turn(&turns, CHECK_WAIT).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(held);
        assert!(waiter.await.unwrap());
    }
}
