//! Gantry's shared core: the domain vocabulary (`domain`) and API objects (`model`), configuration, validation
//! and pricing, stream message formats, the Redis store with its Lua scripts, recovery of stranded work, retention
//! of finished work (`retention`), and the consumer-service runner the workers share (`service`).

pub mod acks;
pub mod callback;
pub mod coalesce;
pub mod config;
pub mod consumer;
pub mod domain;
pub mod ids;
pub mod keys;
pub mod messages;
pub mod model;
pub mod recovery;
pub mod retention;
pub mod schedule;
pub mod service;
pub mod store;
pub mod validate;

pub use config::Config;
pub use store::{Store, StoreError};

impl Store {
    /// Connects to the Redis of `config` (`redis.url` must be set).
    pub async fn from_config(config: &Config) -> Result<Self, StartError> {
        let url = config.redis.url.as_ref().ok_or(StartError::NoRedisUrl)?;
        let redis = &config.redis;
        let tls = redis
            .tls_certificates()
            .map_err(|error| StartError::RedisTls(error.to_string()))?;
        Ok(Self::connect_tls(redis.mode, url.expose(), tls, &redis.key_prefix, redis.partitions).await?)
    }

    /// Like [`Store::from_config`], but while Redis is unreachable it keeps trying (with a growing pause, logged),
    /// so a service started before Redis, or during an outage, comes up when Redis does. Gives up on `shutdown`.
    pub async fn connect_when_ready(
        config: &Config,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Result<Self, StartError> {
        let mut pause = std::time::Duration::from_millis(200);
        loop {
            match Self::from_config(config).await {
                Ok(store) => return Ok(store),
                Err(StartError::Redis(e)) => {
                    tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "redis unreachable; waiting");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Err(StartError::Redis(e)),
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(std::time::Duration::from_secs(5));
                }
                Err(other) => return Err(other),
            }
        }
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
    #[error("{0}")]
    RedisTls(String),
    #[error("cannot build the provider client: {0}")]
    Provider(String),
}
