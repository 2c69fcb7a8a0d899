//! The HTTP plumbing every client shares: a checked base URL, the bearer key, one call with a whole-call timeout,
//! and the classification of what went wrong. The API key never reaches a log or an error message.

use std::time::{Duration, Instant};

use gantry_telemetry::KeyValue;
use gantry_telemetry::{context, metrics};

use bytes::Bytes;
use reqwest::{
    header::{CONTENT_TYPE, RETRY_AFTER},
    Method,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use tracing::Instrument;

use crate::{classify, ProviderError, Result};

/// A provider's HTTP endpoint with its key; cheap to clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub(crate) struct HttpApi {
    provider: &'static str,
    http: reqwest::Client,
    /// The base URL, parsed once: a call's URL is this one with its path set (the host is not parsed again).
    base: reqwest::Url,
    /// Host and port of the base URL (`server.address`, `server.port`).
    host: std::sync::Arc<str>,
    port: u16,
    api_key: SecretString,
}

impl HttpApi {
    /// An endpoint at `base_url` (a trailing slash is ignored) for `provider` (used in messages). With `h2c`, every
    /// request goes as HTTP/2 from the first byte, with no upgrade or negotiation (see [`crate::GrsaiConfig::h2c`]);
    /// otherwise an https:// endpoint that offers HTTP/2 in its TLS handshake (ALPN) gets HTTP/2 and any other
    /// HTTP/1.1.
    ///
    /// Fails with [`ProviderError::Rejected`] and status 0 (no request was sent) when the base URL does not parse or
    /// is not http(s), the key cannot be sent as a header, or the HTTP client cannot be built.
    pub(crate) fn new(
        provider: &'static str,
        base_url: &str,
        api_key: SecretString,
        timeout: Duration,
        h2c: bool,
    ) -> Result<Self> {
        let invalid = |message: String| ProviderError::Rejected {
            status: 0,
            message: format!("invalid {provider} config: {message}"),
        };
        let base_url = base_url.trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&base_url).map_err(|error| invalid(format!("base url: {error}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(invalid(format!("base url scheme {:?}", parsed.scheme())));
        }
        let header = format!("Bearer {}", api_key.expose_secret());
        if reqwest::header::HeaderValue::from_str(&header).is_err() {
            // Say nothing about the key itself.
            return Err(invalid("api key is not a valid header value".to_owned()));
        }
        let mut builder = reqwest::Client::builder().timeout(timeout);
        if h2c {
            builder = builder.http2_prior_knowledge();
        }
        let http = builder
            .build()
            .map_err(|error| invalid(format!("http client: {error}")))?;
        let host = std::sync::Arc::from(parsed.host_str().unwrap_or_default());
        let port = parsed.port_or_known_default().unwrap_or(0);
        Ok(Self {
            provider,
            http,
            base: parsed,
            host,
            port,
            api_key,
        })
    }

    /// The base URL, without a trailing slash.
    #[cfg(test)]
    pub(crate) fn base_url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// Sends `method path` (with `body` as JSON, if any) and returns the body of a 2xx answer; other answers become
    /// classified errors. `operation` (`create`, `status`, `cancel`) names the call in its span and metrics: an
    /// OpenTelemetry HTTP client span, `http.client.request.duration` and `gantry.provider.in_flight`.
    async fn call(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        let url = self.url(path);
        let span = tracing::info_span!(
            "provider request",
            otel.name = %method,
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            http.request.method = %method,
            http.response.status_code = tracing::field::Empty,
            error.r#type = tracing::field::Empty,
            server.address = %self.host,
            server.port = self.port,
            url.full = %url,
            provider = self.provider,
            gantry.provider.operation = operation,
        );
        let started = Instant::now();
        let in_flight = InFlight::start(self.provider);
        let answer = self
            .send(method.clone(), url, body)
            .instrument(span.clone())
            .await;
        drop(in_flight);
        let status = match &answer {
            Ok((status, _, _)) => Some(*status),
            Err(_) => None,
        };
        let error_type = match (&answer, status) {
            (Err(e), _) => Some(e.kind()),
            (_, Some(code)) if code >= 400 => Some(code.to_string()),
            _ => None,
        };
        if let Some(code) = status {
            span.record("http.response.status_code", code);
        }
        if let Some(error_type) = &error_type {
            span.record("error.type", error_type.as_str());
            span.record("otel.status_code", "ERROR");
        }
        let mut attributes = vec![
            KeyValue::new("http.request.method", method_name(&method)),
            KeyValue::new("server.address", std::sync::Arc::clone(&self.host)),
            KeyValue::new("gantry.provider", self.provider),
            KeyValue::new("gantry.provider.operation", operation),
            KeyValue::new("gantry.status_class", metrics::status_class(status)),
        ];
        if let Some(code) = status {
            attributes.push(KeyValue::new("http.response.status_code", i64::from(code)));
        }
        if let Some(error_type) = error_type {
            attributes.push(KeyValue::new("error.type", error_type));
        }
        metrics::metrics()
            .http_client_duration
            .record(started.elapsed().as_secs_f64(), &attributes);

        let (status, retry_after, bytes) = answer.map_err(Transport::into_error)?;
        span.in_scope(|| {
            tracing::debug!(
                provider = self.provider,
                http.status = status,
                body.len = bytes.len(),
                "provider answered"
            )
        });
        if (200..300).contains(&status) {
            Ok(bytes)
        } else {
            Err(classify::http_error(status, retry_after.as_deref(), &bytes))
        }
    }

    /// The base URL with `path` (absolute, maybe with a query) after the base's own path.
    fn url(&self, path: &str) -> reqwest::Url {
        let (path, query) = path.split_once('?').map_or((path, None), |(p, q)| (p, Some(q)));
        let mut url = self.base.clone();
        url.set_path(&format!("{}{path}", self.base.path().trim_end_matches('/')));
        url.set_query(query);
        url
    }

    /// One request and its whole answer: status, `Retry-After`, body. The current span's trace context goes
    /// along in `traceparent`.
    async fn send(
        &self,
        method: Method,
        url: reqwest::Url,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Option<String>, Vec<u8>), Transport> {
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(self.api_key.expose_secret());
        if let Some(traceparent) = context::traceparent(&tracing::Span::current()) {
            request = request.header("traceparent", traceparent);
        }
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(reqwest::Body::wrap(SmallFrames(Bytes::from(body))));
        }
        let response = request.send().await.map_err(Transport)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let bytes = response.bytes().await.map_err(Transport)?;
        Ok((status, retry_after, bytes.to_vec()))
    }

    /// `POST path` with `body` as JSON.
    pub(crate) async fn post(
        &self,
        operation: &'static str,
        path: &str,
        body: &(impl Serialize + Sync),
    ) -> Result<Vec<u8>> {
        let body = serde_json::to_vec(body).map_err(|error| ProviderError::Rejected {
            status: 0,
            message: format!("{} request body: {error}", self.provider),
        })?;
        self.call(operation, Method::POST, path, Some(body)).await
    }

    /// `GET path`.
    pub(crate) async fn get(&self, operation: &'static str, path: &str) -> Result<Vec<u8>> {
        self.call(operation, Method::GET, path, None).await
    }

    /// `DELETE path`.
    pub(crate) async fn delete(&self, operation: &'static str, path: &str) -> Result<Vec<u8>> {
        self.call(operation, Method::DELETE, path, None).await
    }
}

/// The largest DATA frame h2 copies into its write buffer when the connection has vectored writes, as TCP
/// connections do: it sends a frame of 256 bytes or more in a `writev` of its own (h2 0.4's `CHAIN_THRESHOLD`).
const BUFFERED_FRAME: usize = 255;

/// A request body of known length (hyper sends it as `content-length`) handed to hyper in frames of at most
/// [`BUFFERED_FRAME`] bytes. A create's JSON is about 300 bytes: in one frame it made every create a `writev` of
/// its own, and the submitter wrote more often than it sent requests; in small frames, the requests of a burst leave
/// together (each loopback write costs the sender the receiver's TCP path as well).
struct SmallFrames(Bytes);

impl http_body::Body for SmallFrames {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<http_body::Frame<Bytes>, Self::Error>>> {
        let rest = &mut self.0;
        std::task::Poll::Ready((!rest.is_empty()).then(|| {
            let frame = rest.split_to(rest.len().min(BUFFERED_FRAME));
            Ok(http_body::Frame::data(frame))
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.0.len() as u64)
    }
}

/// The method as a static string (the methods the clients use; any other is named "_OTHER", as semantic
/// conventions say).
fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        _ => "_OTHER",
    }
}

/// A failure to send the request or read the answer (timeout, refused connection, reset, bad TLS).
#[derive(Debug)]
struct Transport(reqwest::Error);

impl Transport {
    /// The `error.type` of the failure.
    fn kind(&self) -> String {
        if self.0.is_timeout() {
            "timeout"
        } else if self.0.is_connect() {
            "connect"
        } else {
            "transport"
        }
        .to_owned()
    }

    /// Transient: worth another try.
    fn into_error(self) -> ProviderError {
        let error = self.0;
        let kind = if error.is_timeout() {
            "timed out"
        } else if error.is_connect() {
            "connection failed"
        } else {
            "transport error"
        };
        let mut message = format!("{kind}: {error}");
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        ProviderError::Transient(message)
    }
}

/// Counts a request in `gantry.provider.in_flight` while it lives.
struct InFlight(&'static str);

impl InFlight {
    fn start(provider: &'static str) -> Self {
        metrics::metrics()
            .provider_in_flight
            .add(1, &[KeyValue::new("gantry.provider", provider)]);
        Self(provider)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::metrics()
            .provider_in_flight
            .add(-1, &[KeyValue::new("gantry.provider", self.0)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(base_url: &str, key: &str) -> Result<HttpApi> {
        HttpApi::new(
            "test",
            base_url,
            SecretString::from(key),
            Duration::from_secs(1),
            false,
        )
    }

    #[test]
    fn a_body_goes_whole_in_frames_h2_buffers_and_says_its_length() {
        use http_body::Body as _;
        let json: Vec<u8> = (0..700u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut body = SmallFrames(Bytes::from(json.clone()));
        assert_eq!(body.size_hint().exact(), Some(700));
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut sent = Vec::new();
        let mut frames = Vec::new();
        while let std::task::Poll::Ready(Some(frame)) = std::pin::Pin::new(&mut body).poll_frame(&mut cx) {
            let data = frame.expect("infallible").into_data().expect("a data frame");
            frames.push(data.len());
            sent.extend_from_slice(&data);
        }
        assert_eq!(frames, [255, 255, 190]);
        assert_eq!(sent, json);
        assert!(body.is_end_stream());
    }

    #[test]
    fn a_call_url_is_the_base_with_the_path_after_its_own() {
        let root = api("http://provider.test/", "k").expect("valid config");
        assert_eq!(
            root.url("/v1/draw/result").as_str(),
            "http://provider.test/v1/draw/result"
        );
        let nested = api("https://proxy.test:8443/grsai/", "k").expect("valid config");
        assert_eq!(
            nested.url("/v1/tasks/abc?verbose=1").as_str(),
            "https://proxy.test:8443/grsai/v1/tasks/abc?verbose=1"
        );
    }

    #[test]
    fn config_is_checked_without_leaking_the_key() {
        let api_ok = api("http://provider.test/", "k").expect("valid config");
        assert_eq!(api_ok.base_url(), "http://provider.test");
        assert!(!format!("{api_ok:?}").contains("Bearer k"));
        assert!(matches!(
            api("not a url", "k"),
            Err(ProviderError::Rejected { status: 0, .. })
        ));
        assert!(matches!(
            api("ftp://provider.test", "k"),
            Err(ProviderError::Rejected { status: 0, .. })
        ));
        let error = api("http://provider.test", "secret\nkey").expect_err("bad key refused");
        assert!(!error.to_string().contains("secret"));
    }
}
