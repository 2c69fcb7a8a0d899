//! The Grsai client: [`Provider`] over Grsai's HTTP API.
//!
//! Creates go to `POST /v1/video/sora-video` or `POST /v1/video/veo`, status calls to `POST /v1/draw/result`, all with
//! `Authorization: Bearer <key>`. Building bodies lives in `wire`, turning answers into results or classified errors
//! in `classify`; the HTTP plumbing is shared with the other clients (`crate::http`). Grsai has no cancel call.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;
use tracing::instrument;

use crate::{http::HttpApi, CreateRequest, Model, Provider, ProviderName, RemoteStatus, Result};

mod classify;
mod wire;

pub use classify::parse_grsai_callback;
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
    /// Speak HTTP/2 without negotiating it (h2c, "prior knowledge") to a plain http:// endpoint that supports it,
    /// such as `gantry sim`: every call shares a few multiplexed connections, far fewer system calls per request
    /// than one HTTP/1.1 connection per call in flight. Leave it off for an endpoint that may only speak HTTP/1.1
    /// (its calls would fail); an https:// endpoint negotiates HTTP/2 on its own when it offers it.
    pub h2c: bool,
}

/// A Grsai client; cheap to clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub struct GrsaiClient {
    api: HttpApi,
}

impl GrsaiClient {
    /// A client for `config`.
    ///
    /// Fails with [`crate::ProviderError::Rejected`] and status 0 (no request was sent) when the base URL does not
    /// parse, the key cannot be sent as a header, or the HTTP client cannot be built.
    pub fn new(config: GrsaiConfig) -> Result<Self> {
        let api = HttpApi::new(
            ProviderName::Grsai.as_str(),
            &config.base_url,
            config.api_key,
            config.timeout,
            config.h2c,
        )?;
        Ok(Self { api })
    }
}

#[async_trait]
impl Provider for GrsaiClient {
    fn name(&self) -> ProviderName {
        ProviderName::Grsai
    }

    fn callback_status(&self, body: &[u8]) -> Option<RemoteStatus> {
        parse_grsai_callback(body).ok().map(|(_, status)| status)
    }

    /// Sora-2 on Grsai has no first-frame input: the previous shot's last frame goes in as its reference image.
    fn start_from_frame(&self, request: &mut CreateRequest, frame: String) {
        match request.model {
            Model::Sora2 => request.reference_image_urls = vec![frame],
            Model::Veo31Fast | Model::Veo31Pro => request.first_frame_url = Some(frame),
        }
    }

    #[instrument(skip_all, fields(provider = %ProviderName::Grsai, model = %request.model))]
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
        let result = match self.api.post("create", body.path(), &body).await {
            Ok(answer) => classify::created_id(&answer),
            Err(error) => Err(error),
        };
        match &result {
            Ok(id) => tracing::debug!(remote.id = %id, "grsai task created"),
            Err(error) => tracing::debug!(%error, "grsai create failed"),
        }
        result
    }

    #[instrument(skip_all, fields(provider = %ProviderName::Grsai, remote.id = %remote_id))]
    async fn status(&self, remote_id: &str) -> Result<RemoteStatus> {
        let result = match self
            .api
            .post("status", "/v1/draw/result", &StatusBody { id: remote_id })
            .await
        {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProviderError;

    fn config(base_url: &str, key: &str) -> GrsaiConfig {
        GrsaiConfig {
            base_url: base_url.to_owned(),
            api_key: SecretString::from(key),
            timeout: Duration::from_secs(1),
            h2c: false,
        }
    }

    #[test]
    fn config_is_checked_without_leaking_the_key() {
        let client = GrsaiClient::new(config("http://grsai.test/", "k")).expect("valid config");
        assert_eq!(client.api.base_url(), "http://grsai.test");
        assert!(!format!("{client:?}").contains("Bearer k"));
        assert!(matches!(
            GrsaiClient::new(config("not a url", "k")),
            Err(ProviderError::Rejected { status: 0, message }) if message.starts_with("invalid grsai config")
        ));
        let error =
            GrsaiClient::new(config("http://grsai.test", "secret\nkey")).expect_err("bad key refused");
        assert!(!error.to_string().contains("secret"));
    }
}
