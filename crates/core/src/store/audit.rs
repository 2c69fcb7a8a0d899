//! Auditing the money: every tenant's books must balance, and every finished batch must be settled exactly once.

use std::collections::{HashMap, HashSet};

use redis::AsyncCommands;

use super::{Result, Store};
use crate::model::BatchStatus;

/// What an audit of one tenant found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audit {
    pub tenant_id: String,
    pub batches: usize,
    pub ledger_entries: usize,
    /// Each broken rule, in words; empty when the books balance.
    pub violations: Vec<String>,
}

impl Store {
    /// All tenant ids.
    pub async fn tenant_ids(&self) -> Result<Vec<String>> {
        let mut ids: Vec<String> = self.connection().smembers(self.keys.tenants()).await?;
        ids.sort();
        Ok(ids)
    }

    /// Checks one tenant: `balance + frozen + charged == granted`; the balances agree with the ledger; every
    /// settled batch has exactly one charge and one refund entry; every finished batch is settled, and no
    /// unfinished batch is. A batch removed by retention is checked through its ledger entries alone.
    pub async fn audit_tenant(&self, tenant_id: &str) -> Result<Audit> {
        let credits = self.credits(tenant_id).await?;
        let ledger = self.ledger(tenant_id).await?;
        let mut conn = self.connection();
        let settlements: HashMap<String, String> = conn.hgetall(self.keys.settlements(tenant_id)).await?;
        let reservations: HashMap<String, i64> = conn.hgetall(self.keys.reservations(tenant_id)).await?;
        let batch_ids: Vec<String> = conn.zrange(self.keys.tenant_batches(tenant_id), 0, -1).await?;
        let mut audit = Audit {
            tenant_id: tenant_id.to_owned(),
            batches: batch_ids.len(),
            ledger_entries: ledger.len(),
            violations: Vec::new(),
        };
        let mut problem = |text: String| audit.violations.push(text);

        if credits.balance + credits.frozen + credits.charged != credits.granted {
            problem(format!(
                "balance {} + frozen {} + charged {} != granted {}",
                credits.balance, credits.frozen, credits.charged, credits.granted
            ));
        }
        let sum = |kind: &str| {
            ledger
                .iter()
                .filter(|e| e.kind == kind)
                .map(|e| e.amount)
                .sum::<i64>()
        };
        let (granted, frozen, charged, refunded) =
            (sum("grant"), sum("freeze"), sum("charge"), sum("refund"));
        if granted != credits.granted {
            problem(format!("ledger grants {granted} != granted {}", credits.granted));
        }
        if charged != credits.charged {
            problem(format!("ledger charges {charged} != charged {}", credits.charged));
        }
        if frozen - charged - refunded != credits.frozen {
            problem(format!(
                "ledger freezes - charges - refunds = {} != frozen {}",
                frozen - charged - refunded,
                credits.frozen
            ));
        }
        let reserved: i64 = reservations.values().sum();
        if reserved != credits.frozen {
            problem(format!(
                "open reservations {reserved} != frozen {}",
                credits.frozen
            ));
        }

        let listed: HashSet<&str> = batch_ids.iter().map(String::as_str).collect();
        let mut per_batch: HashMap<&str, (usize, usize)> = HashMap::new();
        for entry in &ledger {
            if let Some(batch) = entry.batch_id.as_deref() {
                let counts = per_batch.entry(batch).or_default();
                match entry.kind.as_str() {
                    "charge" => counts.0 += 1,
                    "refund" => counts.1 += 1,
                    _ => {}
                }
            }
        }
        for (batch, (charges, refunds)) in &per_batch {
            if (*charges, *refunds) != (0, 0) && (*charges, *refunds) != (1, 1) {
                problem(format!(
                    "batch {batch} has {charges} charge and {refunds} refund entries (want 1 and 1)"
                ));
            }
            // Retention drops a batch's settlement record together with its place in the batch list (in one
            // script); its ledger entries stay. A listed batch must keep its record.
            if *charges > 0 && !settlements.contains_key(*batch) && listed.contains(batch) {
                problem(format!("batch {batch} was charged but has no settlement record"));
            }
        }
        for batch_id in &batch_ids {
            let Some(batch) = self.batch(batch_id).await? else {
                if !reservations.contains_key(batch_id) && !settlements.contains_key(batch_id) {
                    problem(format!(
                        "batch {batch_id} is listed but has neither a batch, a reservation nor a settlement"
                    ));
                }
                continue;
            };
            let finished = matches!(batch.status, BatchStatus::Completed | BatchStatus::Cancelled);
            match (finished, settlements.get(batch_id)) {
                (true, None) => problem(format!(
                    "batch {batch_id} is {:?} but was never settled",
                    batch.status
                )),
                // Between the tenant's settlement and the batch's final status, a batch is still settling or
                // cancelling: that is fine.
                (false, Some(_))
                    if !matches!(batch.status, BatchStatus::Settling | BatchStatus::Cancelling) =>
                {
                    problem(format!(
                        "batch {batch_id} is settled but still {:?}",
                        batch.status
                    ))
                }
                (true, Some(record)) => {
                    let expected = format!("{}:{}", batch.credits.charged, batch.credits.refunded);
                    if *record != expected {
                        problem(format!(
                            "batch {batch_id} shows {expected} but was settled as {record}"
                        ));
                    }
                }
                _ => {}
            }
        }
        Ok(audit)
    }
}
