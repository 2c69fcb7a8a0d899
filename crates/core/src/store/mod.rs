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
//! - Redis is one server or a Redis Cluster (`redis.mode`), behind one connection type (`connection.rs`): in
//!   cluster mode commands follow their key's slot, pipelines over several partitions are split per slot, and
//!   blocking stream reads name one stream (or one slot's streams) per command, each on a connection of its own.

mod api_keys;
mod audit;
mod batches;
mod connection;
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

pub(crate) use self::connection::by_slot;
pub use self::{
    api_keys::{ApiKeyInfo, KeyOwner, LEGACY_KEY_ID},
    audit::Audit,
    batches::Page,
    connection::{round_trips, Connection},
    dead_letters::DeadLetter,
    events::{BatchEvent, EventWatcher},
    idempotency::{fingerprint, IdempotencyBegin, IdempotencyLease, IdempotentRequest, StoredAnswer},
    limiter::{PermitGrant, PermitRequest, RateDecision},
    open_work::{OpenBatch, TaskLease},
    stats::{BatchFigures, ScheduleKind, StreamKind, StreamStats, TaskFigures},
    tasks::{CancelBatch, Claim, Finish, Outcome, SettlementInput, Started, TaskRow},
    tenants::{Credits, Grant, LedgerEntry, Reservation, Settlement, MAX_GRANT},
};
use crate::{config::RedisMode, keys::Keys};

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// A background reader of the store (cluster mode) that stopped or failed, as a client-side Redis error.
    pub(crate) fn reader(why: String) -> Self {
        Self::Redis(redis::RedisError::from((
            redis::ErrorKind::Client,
            "redis reader stopped",
            why,
        )))
    }
}

/// A handle on Gantry's Redis data; cheap to clone (one multiplexed, self-reconnecting connection).
#[derive(Clone)]
pub struct Store {
    backend: connection::Backend,
    conn: Connection,
    keys: Keys,
    scripts: std::sync::Arc<scripts::Scripts>,
}

/// How long a reply on the shared connection may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

impl Store {
    /// Connects to the standalone Redis at `url`; keys start with `prefix` and batches spread over `partitions`.
    pub async fn connect(url: &str, prefix: &str, partitions: u32) -> Result<Self> {
        Self::connect_to(RedisMode::Standalone, url, prefix, partitions).await
    }

    /// Connects to Redis in `mode`: `urls` is one server's URL, or a Redis Cluster's seed nodes (comma-separated).
    pub async fn connect_to(mode: RedisMode, urls: &str, prefix: &str, partitions: u32) -> Result<Self> {
        Self::connect_tls(mode, urls, None, prefix, partitions).await
    }

    /// Like [`Store::connect_to`], for `rediss://` URLs with a CA of their own and/or a client certificate.
    pub async fn connect_tls(
        mode: RedisMode,
        urls: &str,
        tls: Option<redis::TlsCertificates>,
        prefix: &str,
        partitions: u32,
    ) -> Result<Self> {
        let backend = connection::Backend::open(mode, urls, tls)?;
        let conn = backend.connect(RESPONSE_TIMEOUT).await?;
        Ok(Self {
            backend,
            conn,
            keys: Keys::new(prefix, partitions),
            scripts: std::sync::Arc::new(scripts::Scripts::load()),
        })
    }

    /// Whether this store talks to a Redis Cluster.
    pub fn mode(&self) -> RedisMode {
        self.backend.mode()
    }

    /// A connection of its own, for blocking reads (`XREADGROUP BLOCK`) that must not stall the shared one.
    pub(crate) async fn blocking_connection(&self, longest_block: Duration) -> Result<Connection> {
        Ok(self.backend.connect(longest_block + RESPONSE_TIMEOUT).await?)
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The shared connection, for reads that have no script of their own.
    pub(crate) fn connection(&self) -> Connection {
        self.conn.clone()
    }

    /// Loads every script into Redis's script cache (`SCRIPT LOAD`; on a cluster, on the node the client picks).
    /// Calls never need it: a script missing from the cache is sent whole on first use. It lets a measurement
    /// count the cache (about 130 KB) from the start instead of seeing it appear under load (`just soak`).
    pub async fn load_scripts(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        for script in self.scripts.all() {
            script.load_async(&mut conn).await?;
        }
        Ok(())
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
        self.ack_all(stream, group, &[id]).await
    }

    /// Acknowledges messages of one stream whose effects are durable, in one `XACK`.
    pub async fn ack_all<Id: redis::ToRedisArgs + Send + Sync>(
        &self,
        stream: &str,
        group: &str,
        ids: &[Id],
    ) -> Result<()> {
        let _: i64 = redis::AsyncCommands::xack(&mut self.connection(), stream, group, ids).await?;
        Ok(())
    }
}
