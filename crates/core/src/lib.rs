//! Gantry's shared core: domain types and state machines, configuration, validation and pricing, stream
//! message formats, and the Redis store with its Lua scripts.

pub mod callback;
pub mod config;
pub mod consumer;
pub mod ids;
pub mod keys;
pub mod messages;
pub mod model;
pub mod providers;
pub mod retry;
pub mod schedule;
pub mod store;
pub mod validate;

pub use config::Config;
pub use store::{Store, StoreError};

impl Store {
    /// Connects to the Redis of `config` (`redis.url` must be set).
    pub async fn from_config(config: &Config) -> Result<Self, StartError> {
        let url = config.redis.url.as_ref().ok_or(StartError::NoRedisUrl)?;
        Ok(Self::connect(url.expose(), &config.redis.key_prefix, config.redis.partitions).await?)
    }
}

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "configuration key `redis.url` is not set (GANTRY__REDIS__URL); `gantry dev` starts its own Redis"
    )]
    NoRedisUrl,
    #[error("cannot reach Redis: {0}")]
    Redis(#[from] StoreError),
    #[error("cannot build the provider client: {0}")]
    Provider(String),
}
