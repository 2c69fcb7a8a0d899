//! A tenant's credits.

use axum::{extract::State, Json};
use serde_json::{json, Value};

use super::{list_object, PageQuery};
use crate::{
    auth::Tenant,
    error::{ApiError, ApiResult},
    AppState,
};

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

/// `GET /v1/credits/ledger?batch_id=&limit=&after=`: the caller's credit movements, newest first.
pub(crate) async fn ledger(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    super::ApiQuery(query): super::ApiQuery<PageQuery>,
) -> ApiResult<Json<Value>> {
    let limit = query.limit()?;
    let after = match query.after.as_deref() {
        None => None,
        Some(after) => Some(
            super::stream_id(after)
                .ok_or_else(|| ApiError::BadRequest("after must be the id of a ledger entry".into()))?,
        ),
    };
    let page = state
        .store
        .ledger_page(&tenant, query.batch_id.as_deref(), limit, after.as_deref())
        .await?;
    Ok(Json(list_object(page.data, page.has_more, |e| &e.id)))
}
