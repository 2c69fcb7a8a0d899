//! Retention: keeps Redis memory bounded by removing what no longer has a use, in a periodic step beside the
//! recovery sweep (see `gantry_settlement`). Everything here is idempotent, so several settlement processes may
//! run it at once.
//!
//! - A batch settled (completed or cancelled) more than `retention.completed_secs` ago goes: its hash, its tasks,
//!   its event stream, and its entries in the tenant's batch list, settlement records and ledger index. Settling a
//!   batch indexes it once (`settle_finalize.lua`: one ZADD per batch, nothing per task); this step takes the due
//!   ones per partition. The tenant's side is another cluster slot, so it is its own script call, made first: a
//!   crash before the batch's own removal leaves the batch indexed and the next run does both again. The credit
//!   ledger stays for ever, so the books still verify (`Store::audit_tenant`).
//! - The submit and settle streams are trimmed up to the oldest entry some consumer group still needs (pending or
//!   not yet delivered): one script call per stream.
//!
//! Dead-letter streams are capped by `streams.dead_letter_maxlen` where they are written, and batch event streams
//! by their MAXLEN (`lib.lua`) until they go with their batch.

use crate::{
    store::{Result, StreamKind},
    Config, Store,
};

/// Settled batches removed per script call.
const EXPIRED_PER_CALL: usize = 100;

/// Script calls per partition and run: a backlog of expired batches (after downtime) is worked off over several
/// runs rather than in one long one.
const CALLS_PER_PARTITION: usize = 10;

/// What one run removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Settled batches removed, with their tasks and event streams.
    pub batches_expired: usize,
    /// Entries trimmed off the submit and settle streams.
    pub stream_entries_trimmed: u64,
}

/// One run: removes the batches settled at least `completed_ms` before `now`, then trims the streams.
pub async fn run(store: &Store, now: u64, completed_ms: u64) -> Result<RetentionReport> {
    let mut report = RetentionReport {
        batches_expired: expire_batches(store, now.saturating_sub(completed_ms)).await?,
        ..RetentionReport::default()
    };
    for p in 0..store.keys().partitions() {
        for kind in [StreamKind::Submit, StreamKind::Settle] {
            report.stream_entries_trimmed += store.trim_stream(kind, p).await?;
        }
    }
    Ok(report)
}

/// How long settled batches are kept (ms), from the configuration.
pub fn completed_ms(config: &Config) -> u64 {
    config.retention.completed_secs.saturating_mul(1000)
}

/// Removes the batches settled at or before `cutoff` (ms), every partition.
async fn expire_batches(store: &Store, cutoff: u64) -> Result<usize> {
    let mut removed = 0;
    for p in 0..store.keys().partitions() {
        for _ in 0..CALLS_PER_PARTITION {
            let (due, gone) = store.expire_settled_batches(p, cutoff, EXPIRED_PER_CALL).await?;
            removed += gone;
            if due < EXPIRED_PER_CALL {
                break;
            }
        }
    }
    Ok(removed)
}
