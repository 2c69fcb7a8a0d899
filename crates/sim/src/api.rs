//! The simulator's HTTP routes: the Grsai API under `/v1`, test controls under `/sim`, placeholder result files.
//!
//! The `/v1` routes sit behind two middlewares: the outer one counts the request in flight (for
//! `max_concurrent_requests`), the inner one checks the bearer key. Bodies are read as bytes and parsed here so that
//! every error answer has the Grsai shape `{code:-1,msg}`.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Bytes,
    extract::{Path, Request, State},
    http::{header, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::de::DeserializeOwned;

use crate::{
    state::{wants_reject, NewTask, Sim},
    wire::{Created, DrawResultRequest, Envelope, SoraCreate, TaskData, VeoCreate},
};

/// A few bytes standing in for a video or an image.
const PLACEHOLDER: &[u8] = b"gantry-sim placeholder\n";

/// The simulator's router over `sim`.
pub(crate) fn router(sim: Arc<Sim>) -> Router {
    let api = Router::new()
        .route("/v1/video/sora-video", post(create_sora))
        .route("/v1/video/veo", post(create_veo))
        .route("/v1/draw/result", post(draw_result))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&sim), require_key))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&sim), track_in_flight));
    Router::new()
        .merge(api)
        .route("/sim/stats", get(stats))
        .route("/sim/reset", post(reset))
        .route("/videos/{file}", get(video))
        .route("/frames/{file}", get(frame))
        .with_state(sim)
}

/// Holds the request in the in-flight count while inner layers and the handler run.
async fn track_in_flight(State(sim): State<Arc<Sim>>, request: Request, next: Next) -> Response {
    let _guard = sim.enter_request();
    next.run(request).await
}

/// Answers 401 unless the request carries `Authorization: Bearer <api_key>`.
async fn require_key(State(sim): State<Arc<Sim>>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    if presented != Some(sim.config().api_key.as_str()) {
        tracing::debug!(path = %request.uri().path(), "request without a valid api key");
        return (
            StatusCode::UNAUTHORIZED,
            Json(Envelope::error(-1, "unauthorized")),
        )
            .into_response();
    }
    next.run(request).await
}

async fn create_sora(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    create(&sim, &body, SoraCreate::validate)
}

async fn create_veo(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    create(&sim, &body, VeoCreate::validate)
}

/// Parses and validates a create call, then stores the task.
fn create<T: DeserializeOwned>(
    sim: &Sim,
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
    tracing::debug!(task.id = %id, %model, "simulated task created");
    Json(Envelope::success(Created { id })).into_response()
}

async fn draw_result(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let request: DrawResultRequest = match parse(&body) {
        Ok(request) => request,
        Err(message) => return bad_request(message),
    };
    let _guard = sim.enter_poll(&request.id);
    let latency = sim.config().poll_latency_ms;
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    match sim.poll(&request.id) {
        Some(phase) => Json(Envelope::success(TaskData::new(
            &request.id,
            phase,
            sim.base_url(),
        )))
        .into_response(),
        None => Json(Envelope::error(-22, "task not found")).into_response(),
    }
}

async fn stats(State(sim): State<Arc<Sim>>) -> Response {
    Json(sim.stats()).into_response()
}

async fn reset(State(sim): State<Arc<Sim>>) -> StatusCode {
    sim.reset();
    tracing::debug!("simulator reset");
    StatusCode::NO_CONTENT
}

async fn video(State(sim): State<Arc<Sim>>, Path(file): Path<String>) -> Response {
    placeholder(&sim, &file, ".mp4", "video/mp4")
}

async fn frame(State(sim): State<Arc<Sim>>, Path(file): Path<String>) -> Response {
    placeholder(&sim, &file, "-last.jpg", "image/jpeg")
}

/// Serves the placeholder for `<id><suffix>` if task `id` has succeeded.
fn placeholder(sim: &Sim, file: &str, suffix: &str, content_type: &'static str) -> Response {
    match file.strip_suffix(suffix) {
        Some(id) if sim.has_result(id) => {
            ([(header::CONTENT_TYPE, content_type)], PLACEHOLDER).into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|error| format!("invalid request body: {error}"))
}

fn bad_request(message: String) -> Response {
    tracing::debug!(%message, "create refused");
    (StatusCode::BAD_REQUEST, Json(Envelope::error(-1, message))).into_response()
}
