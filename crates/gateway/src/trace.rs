//! Every request gets a server span and is measured. The span continues an incoming W3C `traceparent` (from the
//! web app) when there is one, else starts a trace; its trace id is returned in `x-trace-id`, carried by error
//! bodies, and (through the span's `traceparent`) stored with a batch created by the request. Each request is
//! recorded in `http.server.request.duration` by method, route template and status.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request},
    http::HeaderValue,
    middleware::Next,
    response::Response,
};
use gantry_telemetry::{context, metrics::metrics, KeyValue};
use rand::RngCore;
use tracing::Instrument;

tokio::task_local! {
    static TRACE_ID: String;
}

/// The trace id of the request being served (empty outside a request).
pub(crate) fn current() -> String {
    TRACE_ID.try_with(Clone::clone).unwrap_or_default()
}

pub(crate) async fn trace_id(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let incoming = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let span = tracing::info_span!(
        "request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = %route,
        url.path = %request.uri().path(),
        http.response.status_code = tracing::field::Empty,
    );
    context::set_parent(&span, incoming.as_deref());
    // Without telemetry installed (in-process tests) the span has no context: keep the incoming trace id, or
    // make one up, so responses still carry one.
    let trace_id = context::trace_id(&span)
        .or_else(|| {
            incoming
                .as_deref()
                .and_then(context::parse)
                .map(|ids| ids.trace_id().to_string())
        })
        .unwrap_or_else(|| {
            let mut bytes = [0u8; 16];
            rand::rng().fill_bytes(&mut bytes);
            hex::encode(bytes)
        });
    let header = HeaderValue::from_str(&trace_id).ok();
    let active = [KeyValue::new("http.request.method", method.clone())];
    metrics().http_server_active.add(1, &active);
    let mut response = TRACE_ID
        .scope(trace_id, next.run(request))
        .instrument(span.clone())
        .await;
    metrics().http_server_active.add(-1, &active);
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    metrics().http_server_duration.record(
        started.elapsed().as_secs_f64(),
        &[
            KeyValue::new("http.request.method", method),
            KeyValue::new("http.route", route),
            KeyValue::new("http.response.status_code", i64::from(status)),
        ],
    );
    if let Some(header) = header {
        response.headers_mut().insert("x-trace-id", header);
    }
    response
}
