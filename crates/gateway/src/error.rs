//! One error type for the whole API, mapped to RFC 9457 `application/problem+json` in one place. Internal
//! details are logged with the trace id and never sent to the client.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use gantry_core::{validate::FieldError, StoreError};
use serde_json::json;

use crate::trace;

/// Everything a handler can fail with.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// Malformed request (bad JSON, bad query parameter).
    BadRequest(String),
    Unauthorized,
    NotFound,
    /// The resource is in a state that forbids the request.
    Conflict(String),
    PayloadTooLarge(usize),
    Validation(Vec<FieldError>),
    InsufficientCredits {
        needed: u64,
        balance: i64,
    },
    /// The `Idempotency-Key` was used before for a different request (method, path or body).
    IdempotencyKeyReused,
    /// A request with the same `Idempotency-Key` is still being processed.
    IdempotencyInProgress,
    /// The tenant already has this many live event streams open on this gateway.
    TooManyStreams(usize),
    /// The tenant is over its request rate (`gateway.tenant_rate_per_sec`, bursts of `limit`).
    RateLimited {
        retry_after_ms: u64,
        limit: u32,
    },
    Unavailable,
    /// The gateway's own limits refused the request (too many at once, or it took too long).
    Busy(&'static str),
    Internal(String),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request", "Invalid request"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found", "Not found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            Self::PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Payload too large",
            ),
            Self::Validation(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "Validation failed",
            ),
            Self::InsufficientCredits { .. } => (
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_credits",
                "Insufficient credits",
            ),
            Self::IdempotencyKeyReused => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "Idempotency key reused",
            ),
            Self::IdempotencyInProgress => (StatusCode::CONFLICT, "conflict", "Conflict"),
            Self::RateLimited { .. } | Self::TooManyStreams(_) => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limited", "Too many requests")
            }
            Self::Unavailable | Self::Busy(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::BadRequest(detail) => detail.clone(),
            Self::Unauthorized => {
                "a valid API key is required (Authorization: Bearer <key>, or x-api-key: <key>)".into()
            }
            Self::NotFound => "no such resource".into(),
            Self::Conflict(detail) => detail.clone(),
            Self::PayloadTooLarge(limit) => format!("the request body is larger than {limit} bytes"),
            Self::Validation(errors) => format!("the request has {} invalid field(s)", errors.len()),
            Self::InsufficientCredits { needed, balance } => {
                format!("the batch costs {needed} credits but the balance is {balance}")
            }
            Self::IdempotencyKeyReused => {
                "this Idempotency-Key was already used for a different request; use a new key".into()
            }
            Self::IdempotencyInProgress => {
                "a request with this Idempotency-Key is still being processed; retry later".into()
            }
            Self::RateLimited { retry_after_ms, .. } => format!(
                "too many requests from this tenant; retry in {} s",
                retry_after_secs(*retry_after_ms)
            ),
            Self::TooManyStreams(max) => {
                format!("at most {max} live event streams per tenant may be open at once; close one first")
            }
            Self::Unavailable => "a backing service is unreachable; retry later".into(),
            Self::Busy(detail) => (*detail).into(),
            Self::Internal(_) => "an internal error occurred; quote the trace id when reporting it".into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Redis(e) if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() => {
                tracing::error!(error = %e, "redis unreachable");
                Self::Unavailable
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, title) = self.parts();
        let retry_soon = matches!(
            self,
            Self::Unavailable | Self::Busy(_) | Self::IdempotencyInProgress | Self::TooManyStreams(_)
        );
        let trace_id = trace::current();
        if let Self::Internal(detail) = &self {
            tracing::error!(trace_id, detail, "internal error");
        }
        let mut body = json!({
            "type": format!("https://gantry.dev/problems/{code}"),
            "title": title,
            "status": status.as_u16(),
            "detail": self.detail(),
            "code": code,
            "trace_id": trace_id,
        });
        if let Self::Validation(errors) = &self {
            body["errors"] = json!(errors);
        }
        let mut response = (status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if retry_soon {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Self::RateLimited {
            retry_after_ms,
            limit,
        } = self
        {
            let wait = retry_after_secs(retry_after_ms);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(wait));
            headers.insert("ratelimit-limit", HeaderValue::from(limit));
            headers.insert("ratelimit-remaining", HeaderValue::from_static("0"));
            headers.insert("ratelimit-reset", HeaderValue::from(wait));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// A wait in whole seconds for `Retry-After`, rounded up, at least 1.
fn retry_after_secs(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}
