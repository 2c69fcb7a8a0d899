//! A trace id for every request: taken from an incoming W3C `traceparent` when there is one, else new. It is
//! returned in `x-trace-id`, carried by error bodies, and recorded on the request's span.

use axum::{extract::Request, http::HeaderValue, middleware::Next, response::Response};
use rand::RngCore;
use tracing::Instrument;

tokio::task_local! {
    static TRACE_ID: String;
}

/// The trace id of the request being served (empty outside a request).
pub(crate) fn current() -> String {
    TRACE_ID.try_with(Clone::clone).unwrap_or_default()
}

/// The trace id inside a `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`).
fn from_traceparent(value: &str) -> Option<String> {
    let mut parts = value.split('-');
    let (_version, trace_id) = (parts.next()?, parts.next()?);
    let valid = trace_id.len() == 32
        && trace_id.bytes().all(|b| b.is_ascii_hexdigit())
        && trace_id.bytes().any(|b| b != b'0');
    valid.then(|| trace_id.to_ascii_lowercase())
}

pub(crate) async fn trace_id(request: Request, next: Next) -> Response {
    let trace_id = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(from_traceparent)
        .unwrap_or_else(|| {
            let mut bytes = [0u8; 16];
            rand::rng().fill_bytes(&mut bytes);
            hex::encode(bytes)
        });
    let span = tracing::info_span!(
        "request",
        trace_id = %trace_id,
        method = %request.method(),
        path = %request.uri().path(),
        status = tracing::field::Empty,
    );
    let header = HeaderValue::from_str(&trace_id).ok();
    let mut response = TRACE_ID
        .scope(trace_id, next.run(request))
        .instrument(span.clone())
        .await;
    span.record("status", response.status().as_u16());
    if let Some(header) = header {
        response.headers_mut().insert("x-trace-id", header);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_trace_ids_are_honoured() {
        let id = from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(id.as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(
            from_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(from_traceparent("garbage"), None);
    }
}
