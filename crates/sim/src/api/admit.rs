//! What every API request goes through before its handler: the in-flight count, the injected faults, the key check.
//!
//! Order per request: count it in flight (and in the one-second arrival window), refuse it with 429 if
//! `max_concurrency` requests were already in flight, wait the drawn extra latency, then draw one fault (429, 5xx,
//! hang-then-504, malformed 200) or check the key and pass it on to the handler. Faulted requests never reach the
//! handler, so a faulted create creates nothing. It is one middleware, not two: each layer costs every request a
//! boxed future.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{header, HeaderValue, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    Json,
};

use crate::{
    faults::Fault,
    seedance::ErrorBody,
    state::{Counter, Sim},
    task::Api,
    wire::Envelope,
};

/// A body that starts like a JSON answer and stops short.
const MALFORMED: &str = r#"{"code":0,"msg":"success","data":{"id":"#;

/// Counts the request in flight, then applies the faults; see the module documentation for the order.
pub(super) async fn admit(State(sim): State<Arc<Sim>>, request: Request, next: Next) -> Response {
    let api = Api::of_path(request.uri().path());
    let (_guard, in_flight) = sim.enter_request(request.version() == axum::http::Version::HTTP_2);
    let (limit, retry_after) = {
        let faults = sim.faults();
        (faults.config().max_concurrency, faults.config().retry_after_secs)
    };
    if limit.is_some_and(|limit| in_flight > limit) {
        tracing::debug!(in_flight, "over the concurrency limit");
        return rate_limited(&sim, api, retry_after);
    }
    let latency = sim.faults().latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let (fault, retry_after, hang) = {
        let mut faults = sim.faults();
        let fault = faults.draw();
        let config = faults.config();
        (fault, config.retry_after_secs, config.timeout_hang_ms)
    };
    let Some(fault) = fault else {
        return match refuse_without_key(&sim, &request) {
            Some(refused) => refused,
            None => next.run(request).await,
        };
    };
    tracing::debug!(path = %request.uri().path(), ?fault, "injecting a fault");
    match fault {
        Fault::RateLimited => rate_limited(&sim, api, retry_after),
        Fault::ServerError(status) => {
            sim.bump(Counter::ServerError);
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let code = match status {
                StatusCode::BAD_GATEWAY => "BadGateway",
                StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
                _ => "InternalServiceError",
            };
            api_error(api, status, code, "simulated server error")
        }
        Fault::Timeout => {
            sim.bump(Counter::Timeout);
            tokio::select! {
                () = tokio::time::sleep(std::time::Duration::from_millis(hang)) => {}
                () = sim.shutdown().cancelled() => {}
            }
            api_error(
                api,
                StatusCode::GATEWAY_TIMEOUT,
                "GatewayTimeout",
                "simulated timeout",
            )
        }
        Fault::Malformed => {
            sim.bump(Counter::Malformed);
            ([(header::CONTENT_TYPE, "application/json")], MALFORMED).into_response()
        }
    }
}

/// A 401 unless the request carries `Authorization: Bearer <api_key>`.
fn refuse_without_key(sim: &Sim, request: &Request) -> Option<Response> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    if presented == Some(sim.config().api_key.as_str()) {
        return None;
    }
    tracing::debug!(path = %request.uri().path(), "request without a valid api key");
    let api = Api::of_path(request.uri().path());
    Some(api_error(
        api,
        StatusCode::UNAUTHORIZED,
        "AuthenticationError",
        "unauthorized",
    ))
}

/// A 429, with `Retry-After` when configured.
fn rate_limited(sim: &Sim, api: Api, retry_after: Option<u64>) -> Response {
    sim.bump(Counter::RateLimited);
    let mut response = api_error(
        api,
        StatusCode::TOO_MANY_REQUESTS,
        "RateLimitExceeded",
        "simulated rate limit",
    );
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// An error answer in `api`'s shape; `code` is Seedance's error code (Grsai answers `code: -1`).
pub(super) fn api_error(
    api: Api,
    status: StatusCode,
    code: &'static str,
    message: impl Into<String>,
) -> Response {
    match api {
        Api::Grsai => (status, Json(Envelope::error(-1, message))).into_response(),
        Api::Seedance => (status, Json(ErrorBody::new(code, message))).into_response(),
    }
}
