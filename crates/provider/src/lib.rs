//! The provider boundary: what Gantry asks of a remote video generator, and its clients: Grsai ([`GrsaiClient`]) and
//! Seedance on BytePlus ModelArk ([`SeedanceClient`]).
//!
//! Services know the [`Provider`] trait and the [`Providers`] registry only: how each provider differs (its API,
//! its callbacks, whether it can cancel, how a chained shot starts from the previous one's last frame) lives in its
//! client here. Errors are classified as types ([`ProviderError`]) so that the retry policy never matches on
//! strings; every client shares one HTTP classification. What an answer means for a task is decided in
//! [`outcome`]. Adding a provider means a client module, an arm in `registry::client`, a [`ProviderName`] and
//! a config section.

use std::time::Duration;

use async_trait::async_trait;
pub use gantry_core::domain::{FailureCode, Model, ProviderName};

mod classify;
mod grsai;
mod http;
mod limited;
pub mod outcome;
mod registry;
mod seedance;

pub use grsai::{parse_grsai_callback, GrsaiClient, GrsaiConfig};
pub use registry::Providers;
pub use seedance::{parse_seedance_callback, SeedanceClient, SeedanceConfig};

/// One generation request, already validated by the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRequest {
    pub model: Model,
    pub prompt: String,
    /// `9:16` or `16:9`.
    pub aspect_ratio: String,
    /// Seconds; Sora only.
    pub duration: Option<u32>,
    pub reference_image_urls: Vec<String>,
    pub first_frame_url: Option<String>,
    pub last_frame_url: Option<String>,
    /// Where the provider should call back; `None` means polling mode (`webHook: "-1"`).
    pub webhook_url: Option<String>,
}

/// The state of a remote task as the provider reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteStatus {
    /// The provider does not know the task yet (Grsai code -22); not a failure, ask again later.
    Pending,
    Running {
        /// 0..=100.
        progress: u8,
    },
    Succeeded {
        video_url: String,
        /// The last frame, when the provider returns one (chain mode hands it to the next shot).
        last_frame_url: Option<String>,
    },
    Failed {
        code: FailureCode,
        message: String,
    },
}

/// A failed call to the provider, classified for the retry policy.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider refused the request for good (400/401/403/404, or a `code != 0` answer to a create).
    #[error("provider rejected the request (status {status}): {message}")]
    Rejected { status: u16, message: String },
    /// 429: wait, then try again.
    #[error("provider rate limited the request")]
    RateLimited { retry_after: Option<Duration> },
    /// 5xx, timeouts, connection errors, malformed bodies: worth retrying with backoff.
    #[error("transient provider failure: {0}")]
    Transient(String),
}

impl ProviderError {
    /// Whether trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Rejected { .. })
    }
}

pub type Result<T, E = ProviderError> = std::result::Result<T, E>;

/// A remote video generator.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Which provider this is (logs, metrics, limits, callback URLs).
    fn name(&self) -> ProviderName;

    /// Creates the remote task and returns its id.
    async fn create(&self, request: &CreateRequest) -> Result<String>;

    /// Asks for the state of a remote task.
    async fn status(&self, remote_id: &str) -> Result<RemoteStatus>;

    /// Whether [`Provider::cancel`] can stop a remote task.
    fn can_cancel(&self) -> bool {
        false
    }

    /// Cancels a remote task where the provider supports it; `Ok(false)` where it does not.
    async fn cancel(&self, remote_id: &str) -> Result<bool> {
        let _ = remote_id;
        Ok(false)
    }

    /// What a webhook body of this provider says about its task; `None` when it cannot be read. A callback is
    /// only a hint (its news is confirmed with a status call), so this decides whether one is worth confirming.
    fn callback_status(&self, body: &[u8]) -> Option<RemoteStatus> {
        let _ = body;
        None
    }

    /// The chain hand-off: makes `request` start from `frame`, the previous shot's last frame. By default the frame
    /// is the first frame of the new shot.
    fn start_from_frame(&self, request: &mut CreateRequest, frame: String) {
        request.first_frame_url = Some(frame);
    }
}
