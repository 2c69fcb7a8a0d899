//! Tasks: one by id, or the tasks of a batch by index.

use axum::{
    extract::{Path, State},
    Json,
};
use gantry_core::model::{TaskStatus, TaskView};

use super::{list_object, PageQuery};
use crate::{
    auth::Tenant,
    error::{ApiError, ApiResult},
    AppState,
};

/// `GET /v1/tasks/{id}`.
pub(crate) async fn get(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> ApiResult<Json<TaskView>> {
    Ok(Json(
        state
            .store
            .tenant_task(&tenant, &id)
            .await?
            .ok_or(ApiError::NotFound)?,
    ))
}

/// `GET /v1/batches/{id}/tasks?status=&limit=&after=`: by index.
pub(crate) async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    super::ApiQuery(query): super::ApiQuery<PageQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let limit = query.limit()?;
    let status = match query.status.as_deref() {
        None => None,
        Some(raw) => Some(TaskStatus::parse(raw).ok_or_else(|| {
            ApiError::BadRequest(
                "status must be one of queued, submitting, running, succeeded, failed, cancelled".into(),
            )
        })?),
    };
    let batch = state
        .store
        .tenant_batch(&tenant, &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let page = state
        .store
        .list_tasks(&batch, status, limit, query.after.as_deref())
        .await?;
    Ok(Json(list_object(page.data, page.has_more, |t| &t.id)))
}
