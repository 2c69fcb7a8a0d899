//! Batches: create (validate, freeze credits, queue), read, list.

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, Path, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use gantry_core::{
    ids,
    model::{now_ms, BatchView},
    store::Reservation,
    validate::{validate_batch, Limits},
};

use gantry_telemetry::{context, metrics::metrics};

use super::{list_object, PageQuery};
use crate::{
    auth::Tenant,
    error::{ApiError, ApiResult},
    idempotency::Idempotency,
    AppState,
};

/// The request body, or 413 when it is over `limit` bytes (400 when it could not be read).
pub(crate) fn body_bytes(body: Result<Bytes, BytesRejection>, limit: usize) -> ApiResult<Bytes> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(limit)
        } else {
            ApiError::BadRequest(rejection.body_text())
        }
    })
}

/// Turns a request body into JSON, with 413 for an oversized body and 400 for anything unparsable.
pub(crate) fn json_body(body: Result<Bytes, BytesRejection>, limit: usize) -> ApiResult<serde_json::Value> {
    parse_json(&body_bytes(body, limit)?)
}

fn parse_json(bytes: &[u8]) -> ApiResult<serde_json::Value> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))
}

/// `POST /v1/batches`: 202 with the batch; nothing is written unless the whole batch is valid and paid for. With
/// an `Idempotency-Key`, a retry gets the first answer back; one that takes over from a dead first attempt reuses
/// its batch id, so the batch is paid for once.
pub(crate) async fn create(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    idempotency: Idempotency,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body = body_bytes(body, state.config.gateway.max_body_bytes)?;
    idempotency
        .run_creating(&state, &tenant, &body, ids::new_batch_id(), |batch_id| {
            accept(&state, &tenant, &body, batch_id)
        })
        .await
}

/// Validates and prices a batch, freezes its cost and writes it as `batch_id`; each step is idempotent per batch
/// id, so running it again for the same id charges nothing more.
async fn accept(state: &AppState, tenant: &str, body: &[u8], batch_id: String) -> ApiResult<Response> {
    let gateway = &state.config.gateway;
    let body = parse_json(body)?;
    let limits = Limits {
        max_tasks: gateway.max_tasks_per_batch,
    };
    let batch = validate_batch(&body, &limits, &state.config.prices).map_err(ApiError::Validation)?;
    let cost = batch.cost();
    let now = now_ms();
    match state.store.reserve(tenant, &batch_id, cost, now).await? {
        Reservation::Reserved { .. } => {}
        Reservation::InsufficientCredits { balance } => {
            return Err(ApiError::InsufficientCredits {
                needed: cost,
                balance,
            });
        }
        Reservation::Closed => {
            // A takeover of an idempotent request whose first attempt wrote the batch, which has settled since:
            // the answer is that batch. Without a batch, the reservation was released and the id is spent.
            return match state.store.tenant_batch(tenant, &batch_id).await? {
                Some(view) => Ok(accepted(view)),
                None => Err(ApiError::Conflict(format!(
                    "batch {batch_id} was already settled or released"
                ))),
            };
        }
    }
    // The batch's trace: its tasks' submits, polls, callbacks and settlement are children of this request.
    let traceparent = context::traceparent(&tracing::Span::current());
    let created = state
        .store
        .create_batch(tenant, &batch_id, &batch, now, traceparent.as_deref())
        .await?;
    let view = if created {
        metrics().credits_frozen.add(cost, &[]);
        // The answer is what was just written (no read back); workers may have moved it on already.
        BatchView::queued(&batch_id, tenant, &batch, now)
    } else {
        // Written by an earlier attempt of this request: the answer is the batch as it is now.
        state
            .store
            .batch(&batch_id)
            .await?
            .ok_or_else(|| ApiError::Internal("batch vanished".into()))?
    };
    tracing::info!(batch.id = %batch_id, tasks = batch.tasks.len(), cost, "batch accepted");
    Ok(accepted(view))
}

/// 202 with the batch and its `Location`.
fn accepted(view: BatchView) -> Response {
    let location = format!("/v1/batches/{}", view.id);
    (StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(view)).into_response()
}

/// `GET /v1/batches/{id}`.
pub(crate) async fn get(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> ApiResult<Json<BatchView>> {
    Ok(Json(
        state
            .store
            .tenant_batch(&tenant, &id)
            .await?
            .ok_or(ApiError::NotFound)?,
    ))
}

/// `GET /v1/batches?limit=&after=`: newest first.
pub(crate) async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    super::ApiQuery(query): super::ApiQuery<PageQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let page = state
        .store
        .list_batches(&tenant, query.limit()?, query.after.as_deref())
        .await?;
    Ok(Json(list_object(page.data, page.has_more, |b| &b.id)))
}
