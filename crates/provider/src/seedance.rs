//! The Seedance client: [`Provider`] over BytePlus ModelArk's video generation API.
//!
//! Creates go to `POST /api/v3/contents/generations/tasks`, status calls to `GET .../tasks/{id}`, cancels to
//! `DELETE .../tasks/{id}`, all with `Authorization: Bearer <key>`. The ModelArk model id comes from the config, not
//! from the request's [`crate::Model`]. Building bodies lives in `wire`, turning answers into results in `classify`;
//! the HTTP plumbing and the error classification are shared with the other clients.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;
use tracing::instrument;

use crate::{http::HttpApi, CreateRequest, Provider, ProviderError, ProviderName, RemoteStatus, Result};

mod classify;
mod wire;

pub use classify::parse_seedance_callback;
use wire::CreateBody;

/// The task collection, relative to the base URL.
const TASKS: &str = "/api/v3/contents/generations/tasks";

/// How to reach Seedance.
#[derive(Debug, Clone)]
pub struct SeedanceConfig {
    /// Scheme and host, e.g. `https://ark.ap-southeast.bytepluses.com`; a trailing slash is ignored.
    pub base_url: String,
    /// The bearer key (an Ark API key).
    pub api_key: SecretString,
    /// Limit for one whole HTTP call, connect to last byte.
    pub timeout: Duration,
    /// Speak HTTP/2 without negotiating it (h2c, "prior knowledge") to a plain http:// endpoint that supports it,
    /// such as `gantry sim`: every call shares a few multiplexed connections, far fewer system calls per request
    /// than one HTTP/1.1 connection per call in flight. Leave it off for an endpoint that may only speak HTTP/1.1
    /// (its calls would fail); an https:// endpoint negotiates HTTP/2 on its own when it offers it.
    pub h2c: bool,
    /// The ModelArk model id to send, e.g. `seedance-1-0-pro-250528`.
    pub model: String,
}

/// A Seedance client; cheap to clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub struct SeedanceClient {
    api: HttpApi,
    model: String,
}

impl SeedanceClient {
    /// A client for `config`.
    ///
    /// Fails with [`ProviderError::Rejected`] and status 0 (no request was sent) when the model id is empty, the
    /// base URL does not parse, the key cannot be sent as a header, or the HTTP client cannot be built.
    pub fn new(config: SeedanceConfig) -> Result<Self> {
        let model = config.model.trim().to_owned();
        if model.is_empty() {
            return Err(ProviderError::Rejected {
                status: 0,
                message: "invalid seedance config: model is empty".to_owned(),
            });
        }
        let api = HttpApi::new(
            ProviderName::Seedance.as_str(),
            &config.base_url,
            config.api_key,
            config.timeout,
            config.h2c,
        )?;
        Ok(Self { api, model })
    }

    fn task_path(remote_id: &str) -> String {
        format!("{TASKS}/{}", encode_segment(remote_id))
    }
}

#[async_trait]
impl Provider for SeedanceClient {
    fn name(&self) -> ProviderName {
        ProviderName::Seedance
    }

    fn can_cancel(&self) -> bool {
        true
    }

    fn callback_status(&self, body: &[u8]) -> Option<RemoteStatus> {
        parse_seedance_callback(body).ok().map(|(_, status)| status)
    }

    #[instrument(skip_all, fields(provider = %ProviderName::Seedance, model = %self.model))]
    async fn create(&self, request: &CreateRequest) -> Result<String> {
        if !request.reference_image_urls.is_empty() || request.last_frame_url.is_some() {
            tracing::debug!(
                references = request.reference_image_urls.len(),
                last_frame = request.last_frame_url.is_some(),
                "seedance takes no reference images or last frame, left out"
            );
        }
        let body = CreateBody::new(&self.model, request);
        tracing::debug!(polling = request.webhook_url.is_none(), "creating seedance task");
        let result = match self.api.post("create", TASKS, &body).await {
            Ok(answer) => classify::created_id(&answer),
            Err(error) => Err(error),
        };
        match &result {
            Ok(id) => tracing::debug!(remote.id = %id, "seedance task created"),
            Err(error) => tracing::debug!(%error, "seedance create failed"),
        }
        result
    }

    #[instrument(skip_all, fields(provider = %ProviderName::Seedance, remote.id = %remote_id))]
    async fn status(&self, remote_id: &str) -> Result<RemoteStatus> {
        let result = match self.api.get("status", &Self::task_path(remote_id)).await {
            Ok(answer) => classify::remote_status(&answer),
            Err(error) => Err(error),
        };
        match &result {
            Ok(status) => tracing::debug!(?status, "seedance task status"),
            Err(error) => tracing::debug!(%error, "seedance status failed"),
        }
        result
    }

    /// Cancels a queued task (BytePlus refuses to stop a running one; the simulator accepts both).
    #[instrument(skip_all, fields(provider = %ProviderName::Seedance, remote.id = %remote_id))]
    async fn cancel(&self, remote_id: &str) -> Result<bool> {
        let result = self.api.delete("cancel", &Self::task_path(remote_id)).await;
        match &result {
            Ok(_) => tracing::debug!("seedance task cancelled"),
            Err(error) => tracing::debug!(%error, "seedance cancel failed"),
        }
        result.map(|_| true)
    }
}

/// `segment` percent-encoded for use as one path segment (task ids are plain, but they come from the network).
fn encode_segment(segment: &str) -> String {
    let mut encoded = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(model: &str) -> SeedanceConfig {
        SeedanceConfig {
            base_url: "http://ark.test/".to_owned(),
            api_key: SecretString::from("k"),
            timeout: Duration::from_secs(1),
            h2c: false,
            model: model.to_owned(),
        }
    }

    #[test]
    fn config_needs_a_model() {
        let client = SeedanceClient::new(config("seedance-1-0-pro-250528")).expect("valid config");
        assert_eq!(client.name(), ProviderName::Seedance);
        assert!(matches!(
            SeedanceClient::new(config("  ")),
            Err(ProviderError::Rejected { status: 0, .. })
        ));
    }

    #[test]
    fn task_ids_are_one_path_segment() {
        assert_eq!(
            SeedanceClient::task_path("cgt-2025_1.a~"),
            "/api/v3/contents/generations/tasks/cgt-2025_1.a~"
        );
        assert_eq!(encode_segment("a/b?c d"), "a%2Fb%3Fc%20d");
    }
}
