//! The admin API for a tenant's API keys: issue (optionally expiring), list (with last use), revoke. A revoked or
//! expired key is refused by every gateway at the next request.

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, Path, State},
    http::StatusCode,
    Json,
};
use gantry_core::{
    model::{now_ms, rfc3339},
    store::ApiKeyInfo,
    validate::FieldError,
};
use serde_json::{json, Value};

use super::batches::json_body;
use crate::{
    auth::Admin,
    error::{ApiError, ApiResult},
    AppState,
};

/// The longest lifetime a key may be given (ten years), in seconds.
const MAX_EXPIRES_IN_SECS: u64 = 10 * 365 * 24 * 3600;

fn view(key: &ApiKeyInfo) -> Value {
    json!({
        "id": key.id,
        "object": "api_key",
        "created_at": rfc3339(key.created_at),
        "expires_at": key.expires_at.map(rfc3339),
        "last_used_at": key.last_used_at.map(rfc3339),
    })
}

/// `POST /admin/v1/tenants/{id}/keys {"expires_in_secs"?}` → 201 with the key (shown only here).
pub(crate) async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    Path(tenant_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let body = json_body(body, state.config.gateway.max_body_bytes)?;
    let expires_in = match body.get("expires_in_secs") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|s| (1..=MAX_EXPIRES_IN_SECS).contains(s))
                .ok_or_else(|| {
                    ApiError::Validation(vec![FieldError {
                        pointer: "/expires_in_secs".into(),
                        message: format!("must be a whole number of seconds from 1 to {MAX_EXPIRES_IN_SECS}"),
                    }])
                })?,
        ),
    };
    let expires_at = expires_in.map(|s| now_ms() + s * 1000);
    let (key, api_key) = state
        .store
        .create_api_key(&tenant_id, expires_at)
        .await?
        .ok_or(ApiError::NotFound)?;
    tracing::info!(tenant.id = %tenant_id, key.id = %key.id, "api key issued");
    let mut answer = view(&key);
    answer["api_key"] = json!(api_key);
    Ok((StatusCode::CREATED, Json(answer)))
}

/// `GET /admin/v1/tenants/{id}/keys` → the tenant's keys, oldest first (never the keys themselves).
pub(crate) async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    Path(tenant_id): Path<String>,
) -> ApiResult<Json<Value>> {
    if !gantry_core::ids::is_tenant_id(&tenant_id) {
        return Err(ApiError::NotFound);
    }
    let keys = state.store.list_api_keys(&tenant_id).await?;
    Ok(Json(json!({
        "object": "list",
        "data": keys.iter().map(view).collect::<Vec<_>>(),
    })))
}

/// `DELETE /admin/v1/tenants/{id}/keys/{key_id}` → 204; the key is refused from now on.
pub(crate) async fn revoke(
    State(state): State<AppState>,
    _admin: Admin,
    Path((tenant_id, key_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    if !gantry_core::ids::is_tenant_id(&tenant_id) || !state.store.revoke_api_key(&tenant_id, &key_id).await?
    {
        return Err(ApiError::NotFound);
    }
    tracing::info!(tenant.id = %tenant_id, key.id = %key_id, "api key revoked");
    Ok(StatusCode::NO_CONTENT)
}
