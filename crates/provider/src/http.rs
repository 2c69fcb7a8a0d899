//! The HTTP plumbing every client shares: a checked base URL, the bearer key, one call with a whole-call timeout,
//! and the classification of what went wrong. The API key never reaches a log or an error message.

use std::time::Duration;

use reqwest::{
    header::{CONTENT_TYPE, RETRY_AFTER},
    Method,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use crate::{classify, ProviderError, Result};

/// A provider's HTTP endpoint with its key; cheap to clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub(crate) struct HttpApi {
    provider: &'static str,
    http: reqwest::Client,
    base_url: String,
    api_key: SecretString,
}

impl HttpApi {
    /// An endpoint at `base_url` (a trailing slash is ignored) for `provider` (used in messages).
    ///
    /// Fails with [`ProviderError::Rejected`] and status 0 (no request was sent) when the base URL does not parse or
    /// is not http(s), the key cannot be sent as a header, or the HTTP client cannot be built.
    pub(crate) fn new(
        provider: &'static str,
        base_url: &str,
        api_key: SecretString,
        timeout: Duration,
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
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|error| invalid(format!("http client: {error}")))?;
        Ok(Self {
            provider,
            http,
            base_url,
            api_key,
        })
    }

    /// The base URL, without a trailing slash.
    #[cfg(test)]
    pub(crate) fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Sends `method path` (with `body` as JSON, if any) and returns the body of a 2xx answer; other answers become
    /// classified errors.
    async fn call(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Vec<u8>> {
        let url = format!("{}{path}", self.base_url);
        let mut request = self
            .http
            .request(method, &url)
            .bearer_auth(self.api_key.expose_secret());
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let bytes = response.bytes().await.map_err(transport_error)?;
        tracing::debug!(
            provider = self.provider,
            http.status = status.as_u16(),
            body.len = bytes.len(),
            "provider answered"
        );
        if status.is_success() {
            Ok(bytes.to_vec())
        } else {
            Err(classify::http_error(
                status.as_u16(),
                retry_after.as_deref(),
                &bytes,
            ))
        }
    }

    /// `POST path` with `body` as JSON.
    pub(crate) async fn post(&self, path: &str, body: &(impl Serialize + Sync)) -> Result<Vec<u8>> {
        let body = serde_json::to_vec(body).map_err(|error| ProviderError::Rejected {
            status: 0,
            message: format!("{} request body: {error}", self.provider),
        })?;
        self.call(Method::POST, path, Some(body)).await
    }

    /// `GET path`.
    pub(crate) async fn get(&self, path: &str) -> Result<Vec<u8>> {
        self.call(Method::GET, path, None).await
    }

    /// `DELETE path`.
    pub(crate) async fn delete(&self, path: &str) -> Result<Vec<u8>> {
        self.call(Method::DELETE, path, None).await
    }
}

/// A failure to send the request or read the answer (timeout, refused connection, reset, bad TLS): transient.
fn transport_error(error: reqwest::Error) -> ProviderError {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn api(base_url: &str, key: &str) -> Result<HttpApi> {
        HttpApi::new("test", base_url, SecretString::from(key), Duration::from_secs(1))
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
