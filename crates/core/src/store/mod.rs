//! The Redis store: every read and every state transition of Gantry goes through here.
//!
//! Design (see `keys.rs` for the key table and `proto-docs/` for the message formats):
//! - Each state transition is one Lua script (`lua/*.lua`, loaded once, run with EVALSHA) that checks the
//!   current state first, so a duplicate or late message is a no-op, never a regression.
//! - A batch, its tasks and its partition's streams share a hash tag, so every script touches one cluster slot.
//!   Credits live under the tenant's tag; batch ↔ tenant moves are idempotent steps keyed by batch id: a
//!   reservation when the batch is accepted, a settlement when it is done.
//! - Streams are read through consumer groups and acknowledged after the effect is durable (`consumer.rs`).
//! - A request with an `Idempotency-Key` keeps a record under its tenant's tag: a lease while it runs, then its
//!   answer for replay (`idempotency.rs`).

mod api_keys;
mod audit;
mod batches;
mod dead_letters;
mod events;
pub(crate) mod fields;
mod idempotency;
mod limiter;
mod open_work;
mod polls;
pub(crate) mod row;
mod scripts;
mod stats;
mod tasks;
mod tenants;

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use self::{
    api_keys::{ApiKeyInfo, KeyOwner, LEGACY_KEY_ID},
    audit::Audit,
    batches::Page,
    dead_letters::DeadLetter,
    events::{BatchEvent, EventWatcher},
    idempotency::{fingerprint, IdempotencyBegin, IdempotencyLease, IdempotentRequest, StoredAnswer},
    limiter::{PermitGrant, PermitRequest, RateDecision},
    open_work::{OpenBatch, TaskLease},
    stats::{BatchFigures, ScheduleKind, StreamKind, StreamStats, TaskFigures},
    tasks::{CancelBatch, Claim, Finish, Outcome, SettlementInput, Started, TaskRow},
    tenants::{Credits, Grant, LedgerEntry, Reservation, Settlement, MAX_GRANT},
};
use crate::keys::Keys;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A handle on Gantry's Redis data; cheap to clone (one multiplexed, self-reconnecting connection).
#[derive(Clone)]
pub struct Store {
    client: redis::Client,
    conn: ConnectionManager,
    keys: Keys,
    scripts: std::sync::Arc<scripts::Scripts>,
}

impl Store {
    /// Connects to `url`; keys start with `prefix` and batches spread over `partitions`.
    pub async fn connect(url: &str, prefix: &str, partitions: u32) -> Result<Self> {
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new_with_config(client.clone(), Self::manager_config(None)).await?;
        Ok(Self {
            client,
            conn,
            keys: Keys::new(prefix, partitions),
            scripts: std::sync::Arc::new(scripts::Scripts::load()),
        })
    }

    fn manager_config(response_timeout: Option<Duration>) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(response_timeout.unwrap_or(Duration::from_secs(5))))
            .set_max_delay(Duration::from_secs(2))
    }

    /// A connection of its own, for blocking reads (`XREADGROUP BLOCK`) that must not stall the shared one.
    pub(crate) async fn blocking_connection(&self, longest_block: Duration) -> Result<ConnectionManager> {
        let config = Self::manager_config(Some(longest_block + Duration::from_secs(5)));
        Ok(ConnectionManager::new_with_config(self.client.clone(), config).await?)
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The shared connection, for reads that have no script of their own.
    pub(crate) fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Whether Redis answers.
    pub async fn ping(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }
}

impl Store {
    /// Acknowledges a stream message whose effect is durable.
    pub async fn ack(&self, stream: &str, group: &str, id: &str) -> Result<()> {
        let _: i64 = redis::AsyncCommands::xack(&mut self.connection(), stream, group, &[id]).await?;
        Ok(())
    }
}
