//! The routes, one module per resource. `proto-docs/openapi.yaml` documents each of them; a test compares the
//! two lists.

mod admin;
mod api_keys;
mod batches;
mod callbacks;
mod cancel;
mod credits;
mod events;
mod health;
mod tasks;

pub(crate) use callbacks::Confirmations;

use axum::{
    routing::{delete, get, post},
    Router,
};
use serde::Deserialize;

use crate::{error::ApiError, AppState};

/// The public API: what tenants and providers call.
pub(crate) fn public_routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/v1/batches", post(batches::create).get(batches::list))
        .route("/v1/batches/{id}", get(batches::get))
        .route("/v1/batches/{id}/cancel", post(cancel::batch))
        .route("/v1/batches/{id}/tasks", get(tasks::list))
        .route("/v1/batches/{id}/events", get(events::stream))
        .route("/v1/tasks/{id}", get(tasks::get))
        .route("/v1/tasks/{id}/cancel", post(cancel::task))
        .route("/v1/credits", get(credits::get))
        .route("/v1/credits/ledger", get(credits::ledger))
        .route(
            "/v1/provider/callbacks/{provider}/{task_id}",
            post(callbacks::receive),
        )
}

/// The admin listener (`gateway.admin_listen`): the admin API and the Prometheus metrics, off the public port.
pub(crate) fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(gantry_telemetry::metrics_handler))
        .route("/admin/v1/tenants", post(admin::create_tenant))
        .route("/admin/v1/tenants/{id}/credits", post(admin::grant))
        .route(
            "/admin/v1/tenants/{id}/keys",
            post(api_keys::create).get(api_keys::list),
        )
        .route("/admin/v1/tenants/{id}/keys/{key_id}", delete(api_keys::revoke))
}

/// A query string parsed into `T`; one that does not parse is a 400 problem (axum's own rejection is plain text).
pub(crate) struct ApiQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(query)| Self(query))
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))
    }
}

/// `limit` and `after` of a list endpoint.
#[derive(Debug, Deserialize)]
pub(crate) struct PageQuery {
    limit: Option<String>,
    after: Option<String>,
    status: Option<String>,
    batch_id: Option<String>,
}

pub(crate) const DEFAULT_LIMIT: usize = 20;
pub(crate) const MAX_LIMIT: usize = 100;

impl PageQuery {
    fn limit(&self) -> Result<usize, ApiError> {
        match &self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(raw) => raw
                .parse::<usize>()
                .ok()
                .filter(|l| (1..=MAX_LIMIT).contains(l))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("limit must be a whole number from 1 to {MAX_LIMIT}"))
                }),
        }
    }
}

/// The list object every list endpoint returns.
pub(crate) fn list_object<T: serde::Serialize>(
    data: Vec<T>,
    has_more: bool,
    id: impl Fn(&T) -> &str,
) -> serde_json::Value {
    serde_json::json!({
        "object": "list",
        "first_id": data.first().map(&id),
        "last_id": data.last().map(&id),
        "has_more": has_more,
        "data": data,
    })
}

/// `v` in canonical form if it is a Redis stream entry id (`<ms>-<seq>`, both 64-bit), as used for `Last-Event-ID`
/// and ledger cursors; `None` for anything Redis would refuse.
pub(crate) fn stream_id(v: &str) -> Option<String> {
    gantry_core::ids::parse_stream_id(v).map(|(ms, seq)| format!("{ms}-{seq}"))
}
