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

/// Runs `step` now and then every `period` until `shutdown`. Steps never overlap; a slow
/// step delays the next one rather than piling up.
pub async fn every<F, Fut>(
    period: std::time::Duration,
    shutdown: &tokio_util::sync::CancellationToken,
    mut step: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => step().await,
        }
    }
}

/// Waits for the tasks of `in_flight` to finish, at most `grace`; the rest are aborted (their stream messages
/// stay pending and are taken over by another process).
pub async fn drain<T: 'static>(in_flight: &mut tokio::task::JoinSet<T>, grace: std::time::Duration) {
    let all = async { while in_flight.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, all).await.is_err() {
        tracing::warn!(
            left = in_flight.len(),
            "shutdown grace period over; handing back the work in flight"
        );
        in_flight.abort_all();
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
