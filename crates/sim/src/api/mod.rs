//! The simulator's HTTP routes: the Grsai API under `/v1`, the Seedance API under `/api/v3`, test controls under
//! `/sim`, placeholder result files.
//!
//! The API routes sit behind one middleware (see [`admit`]): it counts the request in flight, injects faults, then
//! checks the bearer key. Bodies are read as bytes and parsed by the handlers so that every
//! error answer has its API's shape: Grsai `{code:-1,msg}`, Seedance `{error:{code,message}}`.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{header, StatusCode},
    middleware,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::{de::DeserializeOwned, Serialize};

use crate::{state::Sim, FaultConfig};

mod admit;
mod grsai;
mod seedance;

/// A few bytes standing in for a video or an image.
const PLACEHOLDER: &[u8] = b"gantry-sim placeholder\n";

/// Seedance's task collection.
const SEEDANCE_TASKS: &str = "/api/v3/contents/generations/tasks";

/// The simulator's router over `sim`.
pub(crate) fn router(sim: Arc<Sim>) -> Router {
    let api = Router::new()
        .route("/v1/video/sora-video", post(grsai::create_sora))
        .route("/v1/video/veo", post(grsai::create_veo))
        .route("/v1/draw/result", post(grsai::draw_result))
        .route(SEEDANCE_TASKS, post(seedance::create))
        .route(
            &format!("{SEEDANCE_TASKS}/{{id}}"),
            get(seedance::status).delete(seedance::cancel),
        )
        .route_layer(middleware::from_fn_with_state(Arc::clone(&sim), admit::admit));
    Router::new()
        .merge(api)
        .route("/sim/stats", get(stats))
        .route("/sim/reset", post(reset))
        .route("/sim/config", get(faults).post(set_faults))
        .route("/videos/{file}", get(video))
        .route("/frames/{file}", get(frame))
        .with_state(sim)
}

/// The error body of the `/sim` controls.
#[derive(Debug, Serialize)]
struct ControlError {
    error: String,
}

async fn stats(State(sim): State<Arc<Sim>>) -> Response {
    Json(sim.stats()).into_response()
}

async fn reset(State(sim): State<Arc<Sim>>) -> StatusCode {
    sim.reset();
    tracing::debug!("simulator reset");
    StatusCode::NO_CONTENT
}

async fn faults(State(sim): State<Arc<Sim>>) -> Json<FaultConfig> {
    Json(sim.faults().config().clone())
}

/// Replaces the faults with the posted [`FaultConfig`] (absent fields take their defaults).
async fn set_faults(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let config = parse::<FaultConfig>(&body).and_then(|config| config.validate().map(|()| config));
    match config {
        Ok(config) => {
            tracing::info!(?config, "simulator faults replaced");
            sim.set_faults(config);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(error) => (StatusCode::BAD_REQUEST, Json(ControlError { error })).into_response(),
    }
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
