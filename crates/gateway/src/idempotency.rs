//! `Idempotency-Key` on the requests that change things (`POST /v1/batches`, and the two cancels), with Stripe's
//! semantics. The records live in Redis (`gantry_core::store::Store::idempotency_begin` and its module doc).
//!
//! A handler takes an [`Idempotency`] (the validated header, the method and the path) and runs its work through
//! it. Without a key the work simply runs. With one, per tenant and endpoint:
//! - the first request runs, and its answer (status, body, content type and `Location`) is kept for
//!   `gateway.idempotency_ttl_secs`: a retry of the same request (same method, path and body bytes) gets it back
//!   with `Idempotent-Replayed: true`; a different request under the same key is 422 `idempotency_key_reused`;
//! - a retry while the first is still running is 409 `conflict` with `Retry-After: 1`;
//! - a 5xx answer is not kept: the record is dropped, so the client may simply retry; neither is an answer over
//!   64 KiB (none of Gantry's comes close), so a stored answer is bounded;
//! - if the first attempt dies (its lease, `gateway.idempotency_lease_ms`, runs out), a retry takes the request
//!   over with the id the first attempt chose (a create reuses its batch id, so the tenant pays once).

use std::future::Future;

use axum::{
    body::Body,
    extract::FromRequestParts,
    http::{header, request::Parts, HeaderName, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
};
use gantry_core::{
    model::now_ms,
    store::{IdempotencyBegin, IdempotencyLease, IdempotentRequest, StoredAnswer},
};

use crate::{
    error::{ApiError, ApiResult},
    AppState,
};

/// The request header.
pub(crate) const KEY_HEADER: &str = "idempotency-key";
/// Set on a replayed answer.
pub(crate) const REPLAYED_HEADER: &str = "idempotent-replayed";
/// The longest key accepted.
const MAX_KEY_LEN: usize = 255;
/// The headers of an answer kept with it (`x-trace-id` is each response's own).
const KEPT_HEADERS: [HeaderName; 2] = [header::CONTENT_TYPE, header::LOCATION];

/// A request's `Idempotency-Key` (if any, validated: 400 otherwise), with the method and path it is scoped to.
pub(crate) struct Idempotency {
    key: Option<String>,
    method: Method,
    path: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Idempotency {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let mut values = parts.headers.get_all(KEY_HEADER).iter();
        let key = match (values.next(), values.next()) {
            (None, _) => None,
            (Some(value), None) => Some(parse_key(value)?),
            (Some(_), Some(_)) => {
                return Err(ApiError::BadRequest(
                    "send at most one Idempotency-Key header".into(),
                ))
            }
        };
        Ok(Self {
            key,
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
        })
    }
}

/// A valid key is 1 to 255 visible ASCII characters.
fn parse_key(value: &HeaderValue) -> ApiResult<String> {
    let bytes = value.as_bytes();
    let valid = (1..=MAX_KEY_LEN).contains(&bytes.len()) && bytes.iter().all(u8::is_ascii_graphic);
    match value.to_str() {
        Ok(key) if valid => Ok(key.to_owned()),
        _ => Err(ApiError::BadRequest(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"
        ))),
    }
}

impl Idempotency {
    /// Answers with `work`'s result, running it at most once per key (see the module doc).
    pub(crate) async fn run<T, Fut>(
        self,
        state: &AppState,
        tenant: &str,
        body: &[u8],
        work: impl FnOnce() -> Fut,
    ) -> ApiResult<Response>
    where
        Fut: Future<Output = ApiResult<T>>,
        T: IntoResponse,
    {
        self.run_creating(state, tenant, body, String::new(), |_| work())
            .await
    }

    /// Like [`Self::run`], for work that creates something: it gets the id to create under, `new_id` unless it
    /// takes over from a dead first attempt, which chose the id that is handed over instead.
    pub(crate) async fn run_creating<T, Fut>(
        self,
        state: &AppState,
        tenant: &str,
        body: &[u8],
        new_id: String,
        work: impl FnOnce(String) -> Fut,
    ) -> ApiResult<Response>
    where
        Fut: Future<Output = ApiResult<T>>,
        T: IntoResponse,
    {
        let Some(key) = self.key else {
            return Ok(work(new_id).await.into_response());
        };
        let request = IdempotentRequest::new(tenant, self.method.as_str(), &self.path, &key, body);
        let gateway = &state.config.gateway;
        let ttl_ms = gateway.idempotency_ttl_secs.saturating_mul(1000);
        let begin = state
            .store
            .idempotency_begin(&request, &new_id, now_ms(), gateway.idempotency_lease_ms, ttl_ms)
            .await?;
        let lease = match begin {
            IdempotencyBegin::Run(lease) => lease,
            IdempotencyBegin::Replay(answer) => {
                tracing::info!(status = answer.status, "idempotent request replayed");
                return Ok(replay(answer));
            }
            IdempotencyBegin::Mismatch => return Err(ApiError::IdempotencyKeyReused),
            IdempotencyBegin::InProgress => return Err(ApiError::IdempotencyInProgress),
        };
        if lease.taken_over {
            tracing::warn!(resource = %lease.resource, "idempotent request taken over from an attempt whose lease ran out");
        }
        let response = work(lease.resource.clone()).await.into_response();
        Ok(record(state, &request, &lease, response, ttl_ms).await)
    }
}

/// The largest answer kept for replay. Gantry's own answers are far smaller (a batch, a task, a 422 with at most
/// `validate::MAX_ERRORS` violations); a larger one is sent but not kept, and a retry runs the request again.
const MAX_KEPT_ANSWER_BYTES: usize = 64 * 1024;

/// Keeps `response` as the request's answer (or, for a 5xx, drops the record) and returns it.
async fn record(
    state: &AppState,
    request: &IdempotentRequest,
    lease: &IdempotencyLease,
    response: Response,
    ttl_ms: u64,
) -> Response {
    let (parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(e) => {
            if let Err(e) = state.store.idempotency_release(request, lease).await {
                tracing::warn!(error = %e, "releasing an idempotency key failed");
            }
            return ApiError::Internal(format!("reading an answer to keep: {e}")).into_response();
        }
    };
    let outcome = if parts.status.is_server_error() || bytes.len() > MAX_KEPT_ANSWER_BYTES {
        // Not kept: the client may retry (a 5xx), and Redis does not hold an answer of any size.
        state.store.idempotency_release(request, lease).await
    } else {
        let answer = StoredAnswer {
            status: parts.status.as_u16(),
            headers: KEPT_HEADERS
                .iter()
                .filter_map(|name| {
                    let value = parts.headers.get(name)?.to_str().ok()?;
                    Some((name.as_str().to_owned(), value.to_owned()))
                })
                .collect(),
            body: bytes.to_vec(),
        };
        state
            .store
            .idempotency_finish(request, lease, &answer, ttl_ms)
            .await
    };
    match outcome {
        Ok(true) => {}
        Ok(false) => tracing::info!("idempotency key taken over meanwhile; its holder records the answer"),
        // The answer still goes out; a retry finds the record pending and takes it over after the lease.
        Err(e) => tracing::warn!(error = %e, "recording an idempotent answer failed"),
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// The kept answer, marked as a replay.
fn replay(answer: StoredAnswer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, answer.body).into_response();
    let headers = response.headers_mut();
    for (name, value) in answer.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            headers.insert(name, value);
        }
    }
    headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(value: &[u8]) -> Option<String> {
        parse_key(&HeaderValue::from_bytes(value).ok()?).ok()
    }

    #[test]
    fn keys_are_1_to_255_visible_ascii_characters() {
        assert_eq!(key(b"a").as_deref(), Some("a"));
        assert_eq!(
            key(b"order-42/retry_{1}:~!").as_deref(),
            Some("order-42/retry_{1}:~!")
        );
        assert!(key(&[b'k'; 255]).is_some());
        assert!(key(&[b'k'; 256]).is_none());
        assert!(key(b"").is_none());
        assert!(key(b"two words").is_none());
        assert!(key(b"tab\there").is_none());
        assert!(key("caf\u{e9}".as_bytes()).is_none());
        assert!(key(&[b'a', 0x7f]).is_none());
    }

    #[test]
    fn replays_carry_the_kept_headers_and_the_marker() {
        let response = replay(StoredAnswer {
            status: 202,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("location".into(), "/v1/batches/bat_1".into()),
            ],
            body: b"{}".to_vec(),
        });
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let headers = response.headers();
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(headers[header::LOCATION], "/v1/batches/bat_1");
        assert_eq!(headers[REPLAYED_HEADER], "true");
    }
}
