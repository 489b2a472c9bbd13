//! Request authentication: `Authorization: Bearer <admin token>` checked against the gateway's
//! admin tokens. Extractors: [`Viewer`] (viewer or admin) and [`Admin`] (admin only).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::error::ApiError;
use super::tokens::{Caller, Role};
use super::State;

/// A caller with at least the viewer role.
#[derive(Debug)]
pub struct Viewer(#[allow(dead_code)] pub Caller);

/// A caller with the admin role.
#[derive(Debug)]
pub struct Admin(pub Caller);

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn caller(parts: &Parts, state: &State) -> Result<Caller, ApiError> {
    let token = bearer(parts).ok_or(ApiError::Unauthorized)?;
    if token.is_empty() || token.len() > 256 {
        return Err(ApiError::Unauthorized);
    }
    let tokens = state.gw.admin_tokens.load_full();
    if let Some(c) = tokens.cached(token) {
        return Ok(c);
    }
    // PBKDF2 per verifier: off the async workers.
    let token = token.to_owned();
    let tokens = Arc::clone(&tokens);
    tokio::task::spawn_blocking(move || tokens.verify(&token))
        .await
        .map_err(|e| ApiError::Internal(format!("token check failed: {e}")))?
        .ok_or(ApiError::Unauthorized)
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
            return Err(ApiError::Forbidden);
        }
        Ok(Admin(c))
    }
}
