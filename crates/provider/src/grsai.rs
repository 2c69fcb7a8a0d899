//! The Grsai client: [`Provider`] over Grsai's HTTP API.
//!
//! Creates go to `POST /v1/video/sora-video` or `POST /v1/video/veo`, status calls to `POST /v1/draw/result`, all with
//! `Authorization: Bearer <key>`. Building bodies lives in `wire`, turning answers into results or classified errors
//! in `classify`; this module only moves bytes. The API key never reaches a log or an error message.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::RETRY_AFTER;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use tracing::instrument;

use crate::{CreateRequest, Provider, ProviderError, RemoteStatus, Result};

mod classify;
mod wire;

use wire::{CreateBody, StatusBody};

/// How to reach Grsai.
#[derive(Debug, Clone)]
pub struct GrsaiConfig {
    /// Scheme, host and optional path prefix, e.g. `https://api.grsai.com`; a trailing slash is ignored.
    pub base_url: String,
    /// The bearer key.
    pub api_key: SecretString,
    /// Limit for one whole HTTP call, connect to last byte.
    pub timeout: Duration,
}

/// A Grsai client; cheap to clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub struct GrsaiClient {
    http: reqwest::Client,
    base_url: String,
    api_key: SecretString,
}

impl GrsaiClient {
    /// A client for `config`.
    ///
    /// Fails with [`ProviderError::Rejected`] and status 0 (no request was sent) when the base URL does not parse,
    /// the key cannot be sent as a header, or the HTTP client cannot be built.
    pub fn new(config: GrsaiConfig) -> Result<Self> {
        let base_url = config.base_url.trim_end_matches('/').to_owned();
        let parsed =
            reqwest::Url::parse(&base_url).map_err(|error| invalid_config(format!("base url: {error}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(invalid_config(format!("base url scheme {:?}", parsed.scheme())));
        }
        let header = format!("Bearer {}", config.api_key.expose_secret());
        if reqwest::header::HeaderValue::from_str(&header).is_err() {
            // Say nothing about the key itself.
            return Err(invalid_config("api key is not a valid header value".to_owned()));
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|error| invalid_config(format!("http client: {error}")))?;
        Ok(Self {
            http,
            base_url,
            api_key: config.api_key,
        })
    }

    /// Posts `body` as JSON to `path` and returns the body of a 2xx answer; other answers become classified errors.
    async fn post(&self, path: &str, body: &impl Serialize) -> Result<Vec<u8>> {
        let url = format!("{}{path}", self.base_url);
        let response = self
            .http
            .post(&url)
            .bearer_auth(self.api_key.expose_secret())
            .json(body)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let bytes = response.bytes().await.map_err(transport_error)?;
        tracing::debug!(
            http.status = status.as_u16(),
            body.len = bytes.len(),
            "grsai answered"
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
}

#[async_trait]
impl Provider for GrsaiClient {
    fn name(&self) -> &'static str {
        "grsai"
    }

    #[instrument(skip_all, fields(provider = "grsai", model = %request.model))]
    async fn create(&self, request: &CreateRequest) -> Result<String> {
        let body = CreateBody::new(request);
        if request.reference_image_urls.len() > wire::MAX_VEO_REFERENCES && matches!(body, CreateBody::Veo(_))
        {
            tracing::warn!(
                references = request.reference_image_urls.len(),
                kept = wire::MAX_VEO_REFERENCES,
                "too many reference images for veo, extra ones dropped"
            );
        }
        tracing::debug!(
            path = body.path(),
            polling = request.webhook_url.is_none(),
            "creating grsai task"
        );
        let result = match self.post(body.path(), &body).await {
            Ok(answer) => classify::created_id(&answer),
            Err(error) => Err(error),
        };
        match &result {
            Ok(id) => tracing::debug!(remote.id = %id, "grsai task created"),
            Err(error) => tracing::debug!(%error, "grsai create failed"),
        }
        result
    }

    #[instrument(skip_all, fields(provider = "grsai", remote.id = %remote_id))]
    async fn status(&self, remote_id: &str) -> Result<RemoteStatus> {
        let result = match self.post("/v1/draw/result", &StatusBody { id: remote_id }).await {
            Ok(answer) => classify::remote_status(&answer),
            Err(error) => Err(error),
        };
        match &result {
            Ok(status) => tracing::debug!(?status, "grsai task status"),
            Err(error) => tracing::debug!(%error, "grsai status failed"),
        }
        result
    }
}

fn invalid_config(message: String) -> ProviderError {
    ProviderError::Rejected {
        status: 0,
        message: format!("invalid grsai config: {message}"),
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

    fn config(base_url: &str, key: &str) -> GrsaiConfig {
        GrsaiConfig {
            base_url: base_url.to_owned(),
            api_key: SecretString::from(key),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn config_is_checked_without_leaking_the_key() {
        let client = GrsaiClient::new(config("http://grsai.test/", "k")).expect("valid config");
        assert_eq!(client.base_url, "http://grsai.test");
        assert!(!format!("{client:?}").contains("Bearer k"));
        assert!(matches!(
            GrsaiClient::new(config("not a url", "k")),
            Err(ProviderError::Rejected { status: 0, .. })
        ));
        assert!(matches!(
            GrsaiClient::new(config("ftp://grsai.test", "k")),
            Err(ProviderError::Rejected { status: 0, .. })
        ));
        let error =
            GrsaiClient::new(config("http://grsai.test", "secret\nkey")).expect_err("bad key refused");
        assert!(!error.to_string().contains("secret"));
    }
}
