//! The provider boundary: what Gantry asks of a remote video generator, and its clients: Grsai ([`GrsaiClient`]) and
//! Seedance on BytePlus ModelArk ([`SeedanceClient`]).
//!
//! Services know the [`Provider`] trait only. Errors are classified as types ([`ProviderError`]) so that the
//! retry policy never matches on strings; every client shares one HTTP classification. Callback bodies are read with
//! [`parse_grsai_callback`] and [`parse_seedance_callback`], which map exactly like the status calls.

use std::time::Duration;

use async_trait::async_trait;

mod classify;
mod grsai;
mod http;
mod seedance;

pub use grsai::{parse_grsai_callback, GrsaiClient, GrsaiConfig};
pub use seedance::{parse_seedance_callback, SeedanceClient, SeedanceConfig};

/// A model Gantry can generate with, by its canonical name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Model {
    #[serde(rename = "sora-2")]
    Sora2,
    #[serde(rename = "veo3.1-fast")]
    Veo31Fast,
    #[serde(rename = "veo3.1-pro")]
    Veo31Pro,
}

impl Model {
    /// Parses a canonical name or one of the aliases the old app used (`veo-flash`, `veo-pro`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "sora-2" => Some(Self::Sora2),
            "veo3.1-fast" | "veo-flash" => Some(Self::Veo31Fast),
            "veo3.1-pro" | "veo-pro" => Some(Self::Veo31Pro),
            _ => None,
        }
    }

    /// The canonical name, as the provider expects it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sora2 => "sora-2",
            Self::Veo31Fast => "veo3.1-fast",
            Self::Veo31Pro => "veo3.1-pro",
        }
    }
}

impl std::fmt::Display for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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

/// Why a remote task failed, in Gantry's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCode {
    InputModeration,
    OutputModeration,
    ProviderError,
    Timeout,
    Rejected,
}

impl FailureCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InputModeration => "input_moderation",
            Self::OutputModeration => "output_moderation",
            Self::ProviderError => "provider_error",
            Self::Timeout => "timeout",
            Self::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "input_moderation" => Self::InputModeration,
            "output_moderation" => Self::OutputModeration,
            "provider_error" => Self::ProviderError,
            "timeout" => Self::Timeout,
            "rejected" => Self::Rejected,
            _ => return None,
        })
    }
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
    /// A short stable name for logs and metrics, e.g. `grsai`.
    fn name(&self) -> &'static str;

    /// Creates the remote task and returns its id.
    async fn create(&self, request: &CreateRequest) -> Result<String>;

    /// Asks for the state of a remote task.
    async fn status(&self, remote_id: &str) -> Result<RemoteStatus>;

    /// Cancels a remote task where the provider supports it; `Ok(false)` where it does not.
    async fn cancel(&self, remote_id: &str) -> Result<bool> {
        let _ = remote_id;
        Ok(false)
    }
}
