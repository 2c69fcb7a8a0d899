//! `POST /v1/provider/callbacks/{provider}/{task_id}?token=…`: provider webhooks.
//!
//! Providers do not sign callbacks, so the URL carries Gantry's own HMAC token (see `gantry_core::callback`),
//! checked in constant time; a bad token is 401 and changes nothing. The answer is immediate; the result is then
//! confirmed with one status call to the provider before it counts, and applied through the same state-checked,
//! attempt-fenced transition as the poller's, so duplicated, reordered and late callbacks change nothing.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, PoisonError},
};

use axum::{
    body::Bytes,
    extract::rejection::BytesRejection,
    extract::{Path, State},
    http::StatusCode,
};
use gantry_core::{callback, domain::TaskStatus, model::now_ms, store::TaskRow};
use gantry_provider::{outcome, Provider, ProviderName, RemoteStatus};
use gantry_telemetry::{context, metrics::metrics, KeyValue};
use serde::Deserialize;
use tracing::Instrument;

use crate::{
    error::{ApiError, ApiResult},
    AppState,
};

#[derive(Debug, Deserialize)]
pub(crate) struct TokenQuery {
    token: Option<String>,
}

pub(crate) async fn receive(
    State(state): State<AppState>,
    Path((provider, task_id)): Path<(String, String)>,
    super::ApiQuery(query): super::ApiQuery<TokenQuery>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<StatusCode> {
    let body = super::batches::body_bytes(body, state.config.gateway.max_body_bytes)?;
    let secret = state
        .config
        .provider
        .callback_secret
        .as_ref()
        .ok_or(ApiError::NotFound)?;
    let provider_name = ProviderName::parse(&provider).ok_or(ApiError::NotFound)?;
    let provider = state.providers.get(provider_name).ok_or(ApiError::NotFound)?;
    let token = query.token.as_deref().unwrap_or_default();
    let Some(attempt) = callback::verify(secret.expose(), &task_id, token) else {
        count_webhook(provider_name, "rejected");
        return Err(ApiError::Unauthorized);
    };
    let target = state.store.task_row(&task_id).await?.ok_or(ApiError::NotFound)?;
    if target.attempt != attempt
        || target.provider != Some(provider_name)
        || target.status != TaskStatus::Running
    {
        tracing::info!(task.id = %task_id, attempt, "stale or late callback ignored");
        count_webhook(provider_name, "ignored");
        return Ok(StatusCode::OK);
    }
    // Progress-only callbacks are not worth a status call; terminal or unreadable ones are.
    if matches!(
        provider.callback_status(&body),
        Some(RemoteStatus::Running { .. } | RemoteStatus::Pending)
    ) {
        count_webhook(provider_name, "ignored");
        return Ok(StatusCode::OK);
    }
    // One confirmation per task at a time, and a bounded number in all: replayed callbacks cost nothing more.
    let Some(confirmation) = state.confirmations.begin(&task_id) else {
        count_webhook(provider_name, "ignored");
        return Ok(StatusCode::ACCEPTED);
    };
    count_webhook(provider_name, "applied");
    // The confirmation joins the task's trace (a child of the request that created the batch), linked to the
    // provider's callback request that prompted it.
    let span = tracing::info_span!(
        "callback",
        task.id = %task_id,
        batch.id = %target.batch_id,
        tenant.id = %target.tenant_id,
        model = %target.model,
        provider = provider_name.as_str(),
        attempt,
    );
    if context::set_parent(&span, target.traceparent.as_deref()) {
        if let Some(request) = context::traceparent(&tracing::Span::current()) {
            context::add_link(&span, &request);
        }
    }
    tokio::spawn(
        async move {
            confirm(&state, provider, &task_id, target, attempt).await;
            drop(confirmation);
        }
        .instrument(span),
    );
    Ok(StatusCode::ACCEPTED)
}

/// Asks the provider for the task's state and, when it has ended, finishes the task through the same
/// state-checked, attempt-fenced transition as the poller's. Failures are left to the polls.
async fn confirm(
    state: &AppState,
    provider: Arc<dyn Provider>,
    task_id: &str,
    target: TaskRow,
    attempt: u32,
) {
    let outcome = match provider.status(&target.remote_id).await {
        Ok(status) => outcome::terminal_outcome(status),
        Err(e) => return tracing::warn!(error = %e, "confirming a callback failed; polling will catch up"),
    };
    let Some(outcome) = outcome else {
        return tracing::info!("callback not confirmed: the task is still running");
    };
    match state
        .store
        .finish_task(task_id, Some(attempt), &outcome, now_ms())
        .await
    {
        Ok(applied) => tracing::info!(applied, "callback confirmed"),
        Err(e) => tracing::warn!(error = %e, "applying a callback failed; polling will catch up"),
    }
}

/// Counts a callback in `gantry.webhooks` by provider and outcome (`applied`: confirmed with the provider;
/// `ignored`: stale, late or progress only; `rejected`: bad token).
fn count_webhook(provider: ProviderName, outcome: &'static str) {
    metrics().webhooks.add(
        1,
        &[
            KeyValue::new("gantry.provider", provider.as_str()),
            KeyValue::new("gantry.webhook.outcome", outcome),
        ],
    );
}

/// The callback confirmations in flight: at most one per task, and at most [`MAX_CONFIRMATIONS`] in all, so a
/// flood of valid (replayed) callbacks cannot pile up status calls waiting for provider permits.
#[derive(Default)]
pub(crate) struct Confirmations {
    in_flight: Mutex<HashSet<String>>,
}

/// Confirmations in flight at once, per gateway process; past it a callback is acknowledged and left to the polls.
const MAX_CONFIRMATIONS: usize = 64;

impl Confirmations {
    /// Starts confirming `task_id`, or `None` when it is already being confirmed or too many are.
    fn begin(self: &Arc<Self>, task_id: &str) -> Option<Confirming> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
        if in_flight.len() >= MAX_CONFIRMATIONS || !in_flight.insert(task_id.to_owned()) {
            return None;
        }
        Some(Confirming {
            confirmations: self.clone(),
            task_id: task_id.to_owned(),
        })
    }
}

/// One confirmation in flight; dropping it ends it.
pub(crate) struct Confirming {
    confirmations: Arc<Confirmations>,
    task_id: String,
}

impl Drop for Confirming {
    fn drop(&mut self) {
        self.confirmations
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.task_id);
    }
}
