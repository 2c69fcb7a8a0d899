//! After the measured interval: when each batch settled and how, read back from Redis (batch hashes, and the
//! tenants' ledgers for batches whose hash retention already removed), and the checks a run must pass.

use std::collections::HashMap;

use anyhow::Context;
use gantry_core::keys::Keys;
use redis::{aio::MultiplexedConnection, streams::StreamRangeReply};

use crate::workload::{Accepted, Tenant};

/// How one batch ended.
#[derive(Debug, Clone, Default)]
pub struct Settled {
    /// When it settled (ms since the epoch): the batch hash's `completed_at`, else its ledger charge's `at`.
    pub at_ms: Option<u64>,
    /// Whether `at_ms` comes from the ledger (the batch hash was gone).
    pub from_ledger: bool,
    /// From the batch hash, when it still exists: status, succeeded and failed tasks.
    pub status: Option<String>,
    pub succeeded: Option<u64>,
    pub failed: Option<u64>,
    /// From the ledger: `charge` entries (exactly one when settled once), credits charged and refunded.
    pub charges: u32,
    pub charged: u64,
    pub refunded: u64,
}

/// Reads every accepted batch's end: one pipelined `HMGET` over the batch hashes and one `XRANGE` per tenant ledger.
pub async fn read_settled(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    tenants: &[Tenant],
    accepted: &[Accepted],
) -> anyhow::Result<Vec<Settled>> {
    // Field names as declared in crates/core/src/store/fields.rs.
    const FIELDS: [&str; 4] = ["status", "completed_at", "n_succeeded", "n_failed"];
    let mut ledger: HashMap<String, Settled> = HashMap::new();
    for tenant in tenants {
        let entries: StreamRangeReply = redis::cmd("XRANGE")
            .arg(keys.ledger(&tenant.id))
            .arg("-")
            .arg("+")
            .query_async(conn)
            .await
            .context("reading a ledger")?;
        for entry in entries.ids {
            let field = |name: &str| entry.get::<String>(name);
            let (Some(kind), Some(batch)) = (field("kind"), field("batch_id")) else {
                continue;
            };
            let amount: u64 = field("amount").and_then(|a| a.parse().ok()).unwrap_or(0);
            let settled = ledger.entry(batch).or_default();
            match kind.as_str() {
                "charge" => {
                    settled.charges += 1;
                    settled.charged += amount;
                    settled.at_ms = field("at").and_then(|a| a.parse().ok());
                }
                "refund" => settled.refunded += amount,
                _ => {}
            }
        }
    }
    let mut pipe = redis::pipe();
    for batch in accepted {
        pipe.hmget(keys.batch(&batch.id), &FIELDS);
    }
    let rows: Vec<Vec<Option<String>>> = pipe.query_async(conn).await.context("reading the batches")?;
    Ok(accepted
        .iter()
        .zip(rows)
        .map(|(batch, row)| {
            let mut settled = ledger.remove(&batch.id).unwrap_or_default();
            let number = |i: usize| row.get(i).cloned().flatten().and_then(|v| v.parse::<u64>().ok());
            settled.status = row.first().cloned().flatten();
            settled.succeeded = number(2);
            settled.failed = number(3);
            match number(1) {
                Some(completed_at) => settled.at_ms = Some(completed_at),
                None => settled.from_ledger = settled.at_ms.is_some(),
            }
            settled
        })
        .collect())
}

/// The checks of one run, each true when it passed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Checks {
    /// Every batch was accepted (202) and none is left in the open-batch index.
    pub every_batch_accepted_and_settled: bool,
    /// Every batch has exactly one `charge` in its tenant's ledger, and those whose hash remains are `completed`.
    pub settled_exactly_once_and_completed: bool,
    /// Succeeded and failed tasks per batch are 90 % / 10 % (task `i` fails when `i % 10 == 7`), both in the
    /// batch hashes that remain and in the credits charged and refunded.
    pub succeeded_failed_split: bool,
    /// The simulator saw exactly one create per task and never two live tasks for the same prompt.
    pub one_provider_create_per_task: bool,
    /// `gantry admin verify-ledger` exited 0.
    pub ledger_verified: bool,
    /// Every service process was still running at the end.
    pub services_alive: bool,
}

impl Checks {
    pub fn all(&self) -> bool {
        self.every_batch_accepted_and_settled
            && self.settled_exactly_once_and_completed
            && self.succeeded_failed_split
            && self.one_provider_create_per_task
            && self.ledger_verified
            && self.services_alive
    }
}

/// Whether every batch settled once, as `completed`, with the expected split of `k` tasks; and a description of
/// the first few batches that did not (for the report).
///
/// `price` is the configured price of one task (`prices.veo31_fast`). Not the `credits.frozen` of the `POST`
/// answer: that is read back after the create and is 0 when the batch happened to be settled by then.
pub fn batch_checks(
    k: usize,
    price: u64,
    accepted: &[Accepted],
    settled: &[Settled],
) -> (bool, bool, Vec<String>) {
    let failing = crate::workload::failing_per_batch(k) as u64;
    let succeeding = k as u64 - failing;
    let mut once = true;
    let mut split = true;
    let mut odd = Vec::new();
    for (batch, s) in accepted.iter().zip(settled) {
        let settled_once = s.charges == 1 && s.status.as_deref().is_none_or(|st| st == "completed");
        let split_ok = s.succeeded.is_none_or(|n| n == succeeding)
            && s.failed.is_none_or(|n| n == failing)
            && s.charged == price * succeeding
            && s.refunded == price * failing;
        once &= settled_once;
        split &= split_ok;
        if !(settled_once && split_ok) && odd.len() < 5 {
            odd.push(format!(
                "batch {} ({}): status {:?}, succeeded {:?}, failed {:?}, ledger charges {} charged {} refunded {}",
                batch.b, batch.id, s.status, s.succeeded, s.failed, s.charges, s.charged, s.refunded
            ));
        }
    }
    (once, split, odd)
}

/// Nearest-rank percentile of sorted values (as the peer computes it).
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}
