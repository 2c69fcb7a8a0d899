//! The Seedance handlers: create a task, report its state, cancel it.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};

use super::{admit::api_error, parse};
use crate::{
    seedance::{Created, SeedanceCreate, TaskBody},
    state::Sim,
    task::{wants_reject, Api},
};

/// Error code of a refused create.
const INVALID: &str = "InvalidParameter";

/// Error code of an unknown task.
const NOT_FOUND: &str = "ResourceNotFound";

pub(super) async fn create(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    sim.count_create();
    let task = match parse::<SeedanceCreate>(&body).and_then(SeedanceCreate::validate) {
        Ok(task) => task,
        Err(message) => return invalid(message),
    };
    if wants_reject(&task.prompt) {
        return invalid("simulated rejection".to_owned());
    }
    let model = task.model.clone();
    let id = sim.create(task);
    tracing::debug!(task.id = %id, %model, "simulated seedance task created");
    Json(Created { id }).into_response()
}

pub(super) async fn status(State(sim): State<Arc<Sim>>, Path(id): Path<String>) -> Response {
    let _guard = sim.enter_poll(&id);
    let latency = sim.config().poll_latency_ms;
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    match sim.poll(&id, Api::Seedance) {
        Some(task) => Json(TaskBody::new(&task, sim.base_url())).into_response(),
        None => not_found(&id),
    }
}

/// Cancels a queued or running task. BytePlus deletes the record of a task that has already ended; the simulator
/// keeps it for its stats and answers the same `{}`.
pub(super) async fn cancel(State(sim): State<Arc<Sim>>, Path(id): Path<String>) -> Response {
    match sim.cancel(&id, Api::Seedance) {
        Some(Ok(())) => tracing::debug!(task.id = %id, "simulated seedance task cancelled"),
        Some(Err(phase)) => tracing::debug!(task.id = %id, ?phase, "cancel of a task that has ended"),
        None => return not_found(&id),
    }
    Json(serde_json::Map::new()).into_response()
}

fn invalid(message: String) -> Response {
    tracing::debug!(%message, "seedance create refused");
    api_error(Api::Seedance, StatusCode::BAD_REQUEST, INVALID, message)
}

fn not_found(id: &str) -> Response {
    api_error(
        Api::Seedance,
        StatusCode::NOT_FOUND,
        NOT_FOUND,
        format!("task {id} not found"),
    )
}
