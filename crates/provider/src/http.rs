//! The HTTP plumbing every client shares: a checked base URL, the bearer key, one call with a whole-call timeout,
//! and the classification of what went wrong. The API key never reaches a log or an error message.
//!
//! Calls go out on hyper's pooled client (`hyper-util`), with rustls and Mozilla's roots for https:// and ALPN
//! choosing HTTP/2 or HTTP/1.1. reqwest wraps that same client and, per request, parses the URL three times, copies
//! the header map twice and runs its redirect and retry layers: in `just bench` the submitter and the poller spent
//! 93–98 µs per task with it and 76–88 µs without. When the environment names an HTTP(S) proxy for the provider's URL
//! (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, minus `NO_PROXY`, as curl reads them), calls go through reqwest
//! instead, which speaks proxies.

use std::time::{Duration, Instant};

use gantry_telemetry::KeyValue;
use gantry_telemetry::{context, metrics};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use reqwest::{
    header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER},
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
    route: Route,
    /// The base URL, parsed once: a call's URL is this one with its path set (the host is not parsed again).
    base: reqwest::Url,
    /// Host and port of the base URL (`server.address`, `server.port`).
    host: std::sync::Arc<str>,
    port: u16,
    /// `Bearer <key>`, marked sensitive (HTTP/2 never adds it to its header compression table).
    authorization: HeaderValue,
    /// Limit for one whole call, connect to last byte.
    timeout: Duration,
}

/// How a call leaves.
#[derive(Debug, Clone)]
enum Route {
    /// Straight to the provider.
    Direct(std::sync::Arc<DirectClient>),
    /// Through the proxy the environment names for the provider's URL.
    Proxied(reqwest::Client),
}

type DirectClient =
    hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, SmallFrames>;

/// Whether `proxies` (the environment's, in [`HttpApi::new`]: the variables reqwest and curl read) route `base`
/// through a proxy.
fn proxied(proxies: &hyper_util::client::proxy::matcher::Matcher, base: &http::Uri) -> bool {
    proxies.intercept(base).is_some()
}

/// The certificate authorities a provider's https:// certificate must chain to: Mozilla's (as with reqwest's
/// `rustls-tls`).
fn mozilla_roots() -> rustls::RootCertStore {
    rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// The pooled client for direct calls: plain http:// (HTTP/2 from the first byte with `h2c`, else HTTP/1.1) and
/// https:// trusting `roots`, HTTP/2 when the server offers it in ALPN.
fn direct_client(h2c: bool, roots: rustls::RootCertStore) -> std::result::Result<DirectClient, String> {
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|error| format!("tls: {error}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    // Requests are small and answers wanted at once (reqwest's default too).
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .http2_only(h2c)
            .build(connector),
    )
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
        let proxies = hyper_util::client::proxy::matcher::Matcher::from_system();
        Self::with_network(
            provider,
            base_url,
            api_key,
            timeout,
            h2c,
            &proxies,
            mozilla_roots(),
        )
    }

    /// [`Self::new`] with the proxy settings and the trusted roots given rather than the environment's and
    /// Mozilla's.
    fn with_network(
        provider: &'static str,
        base_url: &str,
        api_key: SecretString,
        timeout: Duration,
        h2c: bool,
        proxies: &hyper_util::client::proxy::matcher::Matcher,
        roots: rustls::RootCertStore,
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
        let mut authorization = HeaderValue::from_str(&format!("Bearer {}", api_key.expose_secret()))
            // Say nothing about the key itself.
            .map_err(|_| invalid("api key is not a valid header value".to_owned()))?;
        authorization.set_sensitive(true);
        let uri: http::Uri = base_url
            .parse()
            .map_err(|error| invalid(format!("base url: {error}")))?;
        let route = if proxied(proxies, &uri) {
            let mut builder = reqwest::Client::builder().timeout(timeout);
            if h2c {
                builder = builder.http2_prior_knowledge();
            }
            Route::Proxied(
                builder
                    .build()
                    .map_err(|error| invalid(format!("http client: {error}")))?,
            )
        } else {
            Route::Direct(std::sync::Arc::new(
                direct_client(h2c, roots).map_err(|error| invalid(format!("http client: {error}")))?,
            ))
        };
        let host = std::sync::Arc::from(parsed.host_str().unwrap_or_default());
        let port = parsed.port_or_known_default().unwrap_or(0);
        Ok(Self {
            provider,
            route,
            base: parsed,
            host,
            port,
            authorization,
            timeout,
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
        let traceparent = context::traceparent(&tracing::Span::current());
        let client = match &self.route {
            Route::Direct(client) => client,
            Route::Proxied(client) => return self.send_proxied(client, method, url, body, traceparent).await,
        };
        let mut request = http::Request::builder()
            .method(method)
            .uri(url.as_str())
            .header(AUTHORIZATION, self.authorization.clone());
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        let body = match body {
            Some(body) => {
                request = request.header(CONTENT_TYPE, "application/json");
                SmallFrames(Bytes::from(body))
            }
            None => SmallFrames(Bytes::new()),
        };
        let request = request.body(body).map_err(Transport::Request)?;
        let call = async {
            let response = client.request(request).await.map_err(Transport::Send)?;
            let status = response.status().as_u16();
            let retry_after = retry_after(response.headers());
            let body = response.into_body().collect().await.map_err(Transport::Body)?;
            Ok((status, retry_after, body.to_bytes().to_vec()))
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or(Err(Transport::TimedOut(self.timeout)))
    }

    /// [`Self::send`] through the environment's proxy, with reqwest (whose own timeout covers the whole call).
    async fn send_proxied(
        &self,
        client: &reqwest::Client,
        method: Method,
        url: reqwest::Url,
        body: Option<Vec<u8>>,
        traceparent: Option<String>,
    ) -> Result<(u16, Option<String>, Vec<u8>), Transport> {
        let mut request = client
            .request(method, url)
            .header(AUTHORIZATION, self.authorization.clone());
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(reqwest::Body::wrap(SmallFrames(Bytes::from(body))));
        }
        let response = request.send().await.map_err(Transport::Proxied)?;
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let bytes = response.bytes().await.map_err(Transport::Proxied)?;
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

/// `Retry-After`, when the answer has one as text.
fn retry_after(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// A failure to send the request or read the answer (timeout, refused connection, reset, bad TLS).
#[derive(Debug)]
enum Transport {
    /// The whole call took longer than its limit.
    TimedOut(Duration),
    /// The request could not be made (a path that is no valid URI).
    Request(http::Error),
    /// Connecting, sending, or reading the answer's head failed.
    Send(hyper_util::client::legacy::Error),
    /// Reading the answer's body failed.
    Body(hyper::Error),
    /// Any failure of a call through a proxy.
    Proxied(reqwest::Error),
}

impl Transport {
    fn is_timeout(&self) -> bool {
        match self {
            Self::TimedOut(_) => true,
            Self::Proxied(error) => error.is_timeout(),
            _ => false,
        }
    }

    fn is_connect(&self) -> bool {
        match self {
            Self::Send(error) => error.is_connect(),
            Self::Proxied(error) => error.is_connect(),
            _ => false,
        }
    }

    /// The `error.type` of the failure.
    fn kind(&self) -> String {
        if self.is_timeout() {
            "timeout"
        } else if self.is_connect() {
            "connect"
        } else {
            "transport"
        }
        .to_owned()
    }

    /// Transient: worth another try.
    fn into_error(self) -> ProviderError {
        let kind = if self.is_timeout() {
            "timed out"
        } else if self.is_connect() {
            "connection failed"
        } else {
            "transport error"
        };
        let (mut message, mut source): (String, Option<&dyn std::error::Error>) = match &self {
            Self::TimedOut(limit) => (format!("{kind}: no whole answer within {limit:?}"), None),
            Self::Request(error) => (format!("{kind}: {error}"), std::error::Error::source(error)),
            Self::Send(error) => (format!("{kind}: {error}"), std::error::Error::source(error)),
            Self::Body(error) => (format!("{kind}: {error}"), std::error::Error::source(error)),
            Self::Proxied(error) => (format!("{kind}: {error}"), std::error::Error::source(error)),
        };
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
    use hyper_util::client::proxy::matcher::Matcher;

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

    /// A client of `base` with `key`, the proxy settings and the roots given, 5 s per call.
    fn api_with(
        base: &str,
        key: &str,
        h2c: bool,
        proxies: &Matcher,
        roots: rustls::RootCertStore,
    ) -> HttpApi {
        HttpApi::with_network(
            "test",
            base,
            SecretString::from(key),
            Duration::from_secs(5),
            h2c,
            proxies,
            roots,
        )
        .expect("valid config")
    }

    /// Proxy settings as the environment would give them: https:// through a proxy, except `*.internal.test`.
    fn https_proxy() -> Matcher {
        Matcher::builder()
            .https("http://proxy.test:3128")
            .no("internal.test")
            .build()
    }

    #[test]
    fn calls_go_through_a_proxy_only_where_the_environment_names_one() {
        let proxies = https_proxy();
        let route = |base: &str| api_with(base, "k", false, &proxies, mozilla_roots()).route;
        assert!(matches!(route("https://api.grsai.com"), Route::Proxied(_)));
        assert!(matches!(
            route("https://ark.internal.test/api/v3"),
            Route::Direct(_)
        ));
        assert!(
            matches!(route("http://127.0.0.1:8080"), Route::Direct(_)),
            "no proxy for http://"
        );
    }

    #[tokio::test]
    async fn direct_and_proxied_calls_get_the_same_answers() {
        let sim = gantry_sim::spawn(gantry_sim::SimConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            ..gantry_sim::SimConfig::default()
        })
        .await
        .expect("simulator");
        // Settings that name a proxy for the simulator's http:// URL make the client take reqwest's road; reqwest
        // reads the real environment, which names none here, so it goes straight to the simulator too.
        let everything = Matcher::builder().all("http://proxy.test:3128").build();
        let none = Matcher::builder().build();
        for (proxies, h2c, expected) in [
            (&none, false, "direct"),
            (&none, true, "direct"),
            (&everything, false, "reqwest"),
            (&everything, true, "reqwest"),
        ] {
            let api = api_with(&sim.base_url(), sim.api_key(), h2c, proxies, mozilla_roots());
            let road = match api.route {
                Route::Direct(_) => "direct",
                Route::Proxied(_) => "reqwest",
            };
            assert_eq!(road, expected);
            let via = format!("{road}, h2c {h2c}");
            let created = api
                .post(
                    "create",
                    "/v1/video/veo",
                    &serde_json::json!({"model": "veo3.1-fast", "prompt": "a cat", "aspectRatio": "16:9"}),
                )
                .await
                .unwrap_or_else(|e| panic!("{via}: {e}"));
            let created: serde_json::Value = serde_json::from_slice(&created).expect("json");
            assert_eq!(created["code"], 0, "{via}: {created}");
            let id = created["data"]["id"].as_str().expect("an id");
            let status = api
                .post("status", "/v1/draw/result", &serde_json::json!({ "id": id }))
                .await
                .unwrap_or_else(|e| panic!("{via}: {e}"));
            let status: serde_json::Value = serde_json::from_slice(&status).expect("json");
            assert_eq!(status["data"]["id"], id, "{via}: {status}");
            // A wrong key comes back as the provider's 401, classified, on either road.
            let wrong = api_with(&sim.base_url(), "nope", h2c, proxies, mozilla_roots());
            let error = wrong
                .post("status", "/v1/draw/result", &serde_json::json!({ "id": id }))
                .await;
            assert!(
                matches!(error, Err(ProviderError::Rejected { status: 401, .. })),
                "{via}: {error:?}"
            );
        }
        assert_eq!(sim.stats().creates, 4);
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        use axum::{http::StatusCode, routing::post, Router};
        let followed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = followed.clone();
        let app = Router::new()
            .route(
                "/v1/draw/result",
                post(|| async { (StatusCode::MOVED_PERMANENTLY, [("location", "/elsewhere")]) }),
            )
            .route(
                "/elsewhere",
                post(move || async move {
                    seen.store(true, std::sync::atomic::Ordering::SeqCst);
                    "{}"
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let api = api(&base, "k").expect("valid config");
        let error = api
            .post("status", "/v1/draw/result", &serde_json::json!({ "id": "x" }))
            .await
            .expect_err("a 301 is no answer");
        assert!(
            matches!(&error, ProviderError::Transient(message) if message.starts_with("http 301")),
            "{error:?}"
        );
        assert!(!followed.load(std::sync::atomic::Ordering::SeqCst));
    }

    /// An https:// server on loopback with the test CA's certificate that offers `alpn` and answers every request
    /// with `{}`; returns its base URL and the HTTP versions it served.
    async fn tls_server(
        certs: &gantry_testkit::TestCerts,
        alpn: &[&[u8]],
    ) -> (String, std::sync::Arc<std::sync::Mutex<Vec<http::Version>>>) {
        use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_file_iter(certs.server_cert())
            .expect("server certificate")
            .collect::<std::result::Result<Vec<_>, _>>()
            .expect("server certificate");
        let key = PrivateKeyDer::from_pem_file(certs.server_key()).expect("server key");
        let mut config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!(
            "https://localhost:{}",
            listener.local_addr().expect("address").port()
        );
        let versions = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = versions.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, seen) = (acceptor.clone(), seen.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service =
                        hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                            seen.lock().expect("lock").push(request.version());
                            async {
                                Ok::<_, std::convert::Infallible>(http::Response::new(
                                    http_body_util::Full::new(Bytes::from_static(b"{}")),
                                ))
                            }
                        });
                    let _ =
                        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                            .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                            .await;
                });
            }
        });
        (base, versions)
    }

    #[tokio::test]
    async fn https_calls_check_the_certificate_and_negotiate_http2() {
        use rustls::pki_types::pem::PemObject;
        let certs = gantry_testkit::TestCerts::generate().expect("test certificates");
        let mut test_ca = rustls::RootCertStore::empty();
        let ca = rustls::pki_types::CertificateDer::from_pem_file(certs.ca()).expect("CA certificate");
        test_ca.add(ca).expect("CA certificate");
        let none = Matcher::builder().build();
        let client = |base: &str, roots: rustls::RootCertStore| api_with(base, "k", false, &none, roots);
        let call = |api: HttpApi| async move {
            api.post("status", "/v1/draw/result", &serde_json::json!({ "id": "x" }))
                .await
        };
        for (alpn, expected) in [
            (&[&b"h2"[..], &b"http/1.1"[..]][..], http::Version::HTTP_2),
            (&[&b"http/1.1"[..]][..], http::Version::HTTP_11),
        ] {
            let (base, versions) = tls_server(&certs, alpn).await;
            let answer = call(client(&base, test_ca.clone()))
                .await
                .expect("an https answer");
            assert_eq!(answer, b"{}");
            assert_eq!(versions.lock().expect("lock").as_slice(), [expected]);
            // Mozilla's roots do not know the test CA: the handshake fails, and nothing is sent.
            let error = call(client(&base, mozilla_roots()))
                .await
                .expect_err("an unknown issuer");
            assert!(
                matches!(&error, ProviderError::Transient(message)
                    if message.starts_with("connection failed") && message.contains("UnknownIssuer")),
                "{error:?}"
            );
            assert_eq!(versions.lock().expect("lock").len(), 1);
        }
    }
}
