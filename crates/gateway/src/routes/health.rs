//! Liveness and readiness.

use axum::{extract::State, http::StatusCode, Json};
use serde_json::{json, Value};

use crate::{error::ApiError, AppState};

/// The process is up.
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Redis answers; 503 otherwise, so a load balancer stops sending traffic.
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<(StatusCode, Json<Value>), ApiError> {
    match state.store.ping().await {
        Ok(()) => Ok((StatusCode::OK, Json(json!({"status": "ready"})))),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: redis does not answer");
            Err(ApiError::Unavailable)
        }
    }
}
