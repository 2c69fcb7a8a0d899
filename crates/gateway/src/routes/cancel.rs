//! Cancelling a task or a whole batch.
//!
//! A cancelled task is terminal at once, whatever it was doing: queued tasks never reach the provider, and a
//! running task's late result is ignored (the finish transition refuses a terminal task). Where the provider
//! supports it (Seedance), the remote task is cancelled too. Cancelled tasks are refunded at settlement: Gantry
//! never charges for a result it discarded. A finished task or batch answers 409.

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, Path, State},
    http::StatusCode,
    response::Response,
    Json,
};
use gantry_core::{
    domain::TaskStatus,
    ids,
    model::{now_ms, BatchView, TaskView},
    store::{CancelBatch, Outcome},
};

use super::batches::body_bytes;
use crate::{
    auth::Tenant,
    error::{ApiError, ApiResult},
    idempotency::Idempotency,
    AppState,
};

/// `POST /v1/tasks/{id}/cancel` → 200 with the cancelled task (a retry with the same `Idempotency-Key` gets
/// that answer again, where a plain retry would get 409).
pub(crate) async fn task(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    idempotency: Idempotency,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body = body_bytes(body, state.config.gateway.max_body_bytes)?;
    idempotency
        .run(&state, &tenant, &body, || cancel_task(&state, &tenant, &id))
        .await
}

async fn cancel_task(state: &AppState, tenant: &str, id: &str) -> ApiResult<Json<TaskView>> {
    let task = state
        .store
        .tenant_task(tenant, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if task.status.is_terminal() || !cancel_one(state, id).await? {
        return Err(ApiError::Conflict(format!("task {id} has already finished")));
    }
    Ok(Json(state.store.task(id).await?.ok_or(ApiError::NotFound)?))
}

/// `POST /v1/batches/{id}/cancel` → 202 with the batch, `cancelling` until its settlement makes it `cancelled`
/// (replayed for a retry with the same `Idempotency-Key`).
pub(crate) async fn batch(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    idempotency: Idempotency,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body = body_bytes(body, state.config.gateway.max_body_bytes)?;
    idempotency
        .run(&state, &tenant, &body, || cancel_batch(&state, &tenant, &id))
        .await
}

async fn cancel_batch(state: &AppState, tenant: &str, id: &str) -> ApiResult<(StatusCode, Json<BatchView>)> {
    let batch = state
        .store
        .tenant_batch(tenant, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    match state.store.cancel_batch(id).await? {
        CancelBatch::Cancelling => {}
        CancelBatch::Refused(status) => {
            return Err(ApiError::Conflict(format!(
                "batch {id} is {status} and can no longer be cancelled"
            )))
        }
        CancelBatch::Missing => return Err(ApiError::NotFound),
    }
    let total = usize::try_from(batch.request_counts.total).unwrap_or(0);
    let mut cancelled = 0;
    for index in 0..total {
        if cancel_one(state, &ids::task_id(id, index)).await? {
            cancelled += 1;
        }
    }
    tracing::info!(batch.id = %id, cancelled, "batch cancelled");
    let view = state.store.batch(id).await?.ok_or(ApiError::NotFound)?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}

/// Cancels one task if it is not terminal yet; false when it already was.
async fn cancel_one(state: &AppState, task_id: &str) -> ApiResult<bool> {
    let Some(target) = state.store.task_row(task_id).await? else {
        return Ok(false);
    };
    if !state
        .store
        .finish_task(task_id, None, &Outcome::cancelled_by_client(), now_ms())
        .await?
    {
        return Ok(false);
    }
    let provider = match target.status {
        TaskStatus::Running if !target.remote_id.is_empty() => {
            target.provider.and_then(|p| state.providers.get(p))
        }
        _ => None,
    };
    if let Some(provider) = provider.filter(|p| p.can_cancel()) {
        let (remote_id, task_id) = (target.remote_id, task_id.to_owned());
        // Best effort, after the answer: the task is cancelled for Gantry either way.
        tokio::spawn(async move {
            match provider.cancel(&remote_id).await {
                Ok(true) => tracing::info!(task.id = %task_id, "remote task cancelled"),
                Ok(false) => {
                    tracing::debug!(task.id = %task_id, "provider cannot cancel; its result will be ignored")
                }
                Err(e) => tracing::warn!(task.id = %task_id, error = %e, "remote cancel failed"),
            }
        });
    }
    Ok(true)
}
