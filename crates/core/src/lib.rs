//! Gantry's shared core: domain types and state machines, configuration, validation and pricing, stream
//! message formats, and the Redis store with its Lua scripts.

pub mod config;
pub mod consumer;
pub mod ids;
pub mod keys;
pub mod messages;
pub mod model;
pub mod store;
pub mod validate;

pub use config::Config;
pub use store::{Store, StoreError};

use std::sync::Arc;

use gantry_provider::{GrsaiClient, GrsaiConfig, Provider};

impl Store {
    /// Connects to the Redis of `config` (`redis.url` must be set).
    pub async fn from_config(config: &Config) -> Result<Self, StartError> {
        let url = config.redis.url.as_ref().ok_or(StartError::NoRedisUrl)?;
        Ok(Self::connect(url.expose(), &config.redis.key_prefix, config.redis.partitions).await?)
    }
}

/// The provider client `config` asks for.
pub fn provider_from_config(config: &Config) -> Result<Arc<dyn Provider>, StartError> {
    let grsai = &config.provider.grsai;
    let client = GrsaiClient::new(GrsaiConfig {
        base_url: grsai.base_url.clone(),
        api_key: grsai.api_key.expose().to_owned().into(),
        timeout: config.grsai_timeout(),
    })
    .map_err(|e| StartError::Provider(e.to_string()))?;
    Ok(Arc::new(client))
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
