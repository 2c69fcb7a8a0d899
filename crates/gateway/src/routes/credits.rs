//! A tenant's credits.

use axum::{extract::State, Json};
use serde_json::{json, Value};

use crate::{auth::Tenant, error::ApiResult, AppState};

/// `GET /v1/credits`: `{balance, frozen, charged}` of the caller.
pub(crate) async fn get(State(state): State<AppState>, Tenant(tenant): Tenant) -> ApiResult<Json<Value>> {
    let credits = state.store.credits(&tenant).await?;
    Ok(Json(json!({
        "object": "credits",
        "balance": credits.balance,
        "frozen": credits.frozen,
        "charged": credits.charged,
    })))
}
