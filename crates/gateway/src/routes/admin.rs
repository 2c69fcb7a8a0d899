//! The admin API: provisioning tenants and granting credits (admin token required).

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, Path, State},
    http::StatusCode,
    Json,
};
use gantry_core::{
    store::{Grant, MAX_GRANT},
    validate::FieldError,
};
use serde_json::{json, Value};

use super::batches::json_body;
use crate::{
    auth::Admin,
    error::{ApiError, ApiResult},
    AppState,
};

fn field(pointer: &str, message: &str) -> FieldError {
    FieldError {
        pointer: pointer.into(),
        message: message.into(),
    }
}

/// `POST /admin/v1/tenants {"name","credits"}` → 201 `{"tenant_id","api_key"}`; the key is shown only here.
pub(crate) async fn create_tenant(
    State(state): State<AppState>,
    _admin: Admin,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let body = json_body(body, state.config.gateway.max_body_bytes)?;
    let mut errors = Vec::new();
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .map(str::trim)
        .unwrap_or_default()
        .to_owned();
    if name.is_empty() || name.chars().count() > 200 {
        errors.push(field("/name", "is required, 1 to 200 characters"));
    }
    let credits = match body.get("credits") {
        None | Some(Value::Null) => Some(0),
        Some(v) => v.as_u64().filter(|c| *c <= MAX_GRANT),
    };
    if credits.is_none() {
        errors.push(field(
            "/credits",
            &format!("must be a whole number of credits from 0 to {MAX_GRANT}"),
        ));
    }
    let (false, Some(credits)) = (!errors.is_empty(), credits) else {
        return Err(ApiError::Validation(errors));
    };
    let (tenant_id, api_key) = state.store.create_tenant(&name, credits).await?;
    tracing::info!(tenant.id = %tenant_id, credits, "tenant created");
    Ok((
        StatusCode::CREATED,
        Json(json!({"tenant_id": tenant_id, "name": name, "api_key": api_key})),
    ))
}

/// `POST /admin/v1/tenants/{id}/credits {"amount","reason"}` → the new balance.
pub(crate) async fn grant(
    State(state): State<AppState>,
    _admin: Admin,
    Path(tenant_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let body = json_body(body, state.config.gateway.max_body_bytes)?;
    let amount = body
        .get("amount")
        .and_then(Value::as_u64)
        .filter(|a| (1..=MAX_GRANT).contains(a));
    let reason = body
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or("grant")
        .to_owned();
    let Some(amount) = amount else {
        return Err(ApiError::Validation(vec![field(
            "/amount",
            &format!("must be a whole number of credits from 1 to {MAX_GRANT}"),
        )]));
    };
    let balance = match state.store.grant(&tenant_id, amount, &reason).await? {
        Grant::Granted { balance } => balance,
        Grant::NoTenant => return Err(ApiError::NotFound),
        Grant::TooMuch => {
            return Err(ApiError::Conflict(format!(
                "tenant {tenant_id} cannot hold that many credits"
            )))
        }
    };
    tracing::info!(tenant.id = %tenant_id, amount, "credits granted");
    Ok(Json(json!({"tenant_id": tenant_id, "balance": balance})))
}
