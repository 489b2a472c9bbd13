//! `POST /api/v1/audit/rotate` (admin): close the active audit file now and start the next one,
//! which links to it (the same as SIGUSR1). Answers what was closed, and the chain head (taken
//! before the outcome record is written). Recorded in the audit chain before and after.

use axum::Json;
use serde_json::{json, Value};

use super::actions::{self, Client};
use super::auth::Admin;
use super::error::ApiError;
use super::State;

pub async fn rotate(
    Admin(caller): Admin,
    client: Client,
    axum::extract::State(state): axum::extract::State<State>,
) -> Result<Json<Value>, ApiError> {
    tracing::info!(admin = %caller.name, "audit rotation requested through the admin API");
    let recorded = actions::start(&state, &caller, &client, "audit_rotate", None).await?;
    let log = state.gw.core.audit.clone();
    let done = tokio::task::spawn_blocking(move || {
        let rotated = log.rotate()?;
        Ok::<_, crate::audit::AuditError>((rotated, log.head()?))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("audit rotation failed: {e}")))
    .and_then(|r| r.map_err(|e| ApiError::Unavailable(e.to_string())));
    recorded
        .finish(match &done {
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        })
        .await;
    let (rotated, head) = done?;
    let head = json!({"seq": head.0, "hash": head.1});
    Ok(Json(match rotated {
        Some(r) => json!({
            "rotated": true,
            "closed_file": r.closed.file_name().map(|n| n.to_string_lossy().into_owned()),
            "first_seq": r.first_seq,
            "last_seq": r.last_seq,
            "link_seq": r.link_seq,
            "head": head,
        }),
        None => json!({
            "rotated": false,
            "reason": "the active file holds no records yet",
            "head": head,
        }),
    }))
}
