//! The Grsai handlers: create a Sora or Veo task, report a task's state.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Bytes,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde::de::DeserializeOwned;

use super::{admit::api_error, parse};
use crate::{
    state::{NewTask, Sim},
    task::{wants_reject, Api},
    wire::{Created, DrawResultRequest, Envelope, SoraCreate, TaskData, VeoCreate},
};

/// `code` Grsai answers for an unknown task id.
const NOT_FOUND: i64 = -22;

pub(super) async fn create_sora(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    create(&sim, &body, SoraCreate::validate)
}

pub(super) async fn create_veo(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    create(&sim, &body, VeoCreate::validate)
}

/// Parses and validates a create call, then stores the task.
fn create<T: DeserializeOwned>(
    sim: &Arc<Sim>,
    body: &[u8],
    validate: fn(T) -> Result<NewTask, String>,
) -> Response {
    sim.count_create();
    let task = match parse(body).and_then(validate) {
        Ok(task) => task,
        Err(message) => return bad_request(message),
    };
    if wants_reject(&task.prompt) {
        return bad_request("simulated rejection".to_owned());
    }
    let model = task.model.clone();
    let id = sim.create(task);
    tracing::debug!(task.id = %id, %model, "simulated grsai task created");
    Json(Envelope::success(Created { id })).into_response()
}

pub(super) async fn draw_result(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let request: DrawResultRequest = match parse(&body) {
        Ok(request) => request,
        Err(message) => return bad_request(message),
    };
    let _guard = sim.enter_poll(&request.id);
    let latency = sim.config().poll_latency_ms;
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    match sim.poll(&request.id, Api::Grsai) {
        Some(task) => Json(Envelope::success(TaskData::new(
            &task.id,
            task.phase,
            sim.base_url(),
        )))
        .into_response(),
        None => Json(Envelope::error(NOT_FOUND, "task not found")).into_response(),
    }
}

fn bad_request(message: String) -> Response {
    tracing::debug!(%message, "grsai request refused");
    api_error(Api::Grsai, StatusCode::BAD_REQUEST, "", message)
}
