//! The sweeper: finds and finishes what a crash could strand, so that every accepted task ends and every batch
//! is settled without human help. Everything it does is idempotent, so several sweepers may run at once.
//!
//! - A batch whose tasks are all terminal (`settling`, or `cancelling` with nothing left) gets its settle message
//!   again; settlement is exactly-once per batch, so a duplicate changes nothing.
//! - A task stuck in `submitting` past its lease gets a submit message again; a submitter takes it over with a
//!   new attempt (a live one whose lease merely ran out is fenced by the attempt number).
//! - A `cancelling` batch whose cancel was interrupted (the gateway died while cancelling its tasks) has its
//!   remaining tasks cancelled.
//! - A credit reservation whose batch was never written (the gateway died in between) is released after a grace
//!   period: recorded as a settlement that charges nothing, so the batch id can never be reserved again.

use std::collections::HashMap;

use redis::AsyncCommands;

use super::{Outcome, Result, Settlement, Store};
use crate::{ids, messages::Message};

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub open_batches: usize,
    pub settlements_resent: usize,
    pub submits_resent: usize,
    pub reservations_released: usize,
    pub cancels_finished: usize,
    /// Tasks of the open batches by state, in the order of [`TASK_STATES`].
    pub task_states: [u64; 6],
    /// Credits reserved (frozen) for batches not yet settled, all tenants.
    pub credits_reserved: u64,
}

/// The task states counted in [`SweepReport::task_states`].
pub const TASK_STATES: [&str; 6] = [
    "queued",
    "submitting",
    "running",
    "succeeded",
    "failed",
    "cancelled",
];

impl SweepReport {
    /// Whether the sweep repaired anything.
    pub fn repaired(&self) -> bool {
        self.settlements_resent + self.submits_resent + self.reservations_released + self.cancels_finished > 0
    }
}

/// The creation time (ms) inside a batch id (a UUIDv7: its first 48 bits).
fn batch_created_ms(batch_id: &str) -> Option<u64> {
    u64::from_str_radix(batch_id.strip_prefix("bat_")?.get(..12)?, 16).ok()
}

impl Store {
    /// One sweep over every partition and tenant.
    pub async fn sweep(&self, now: u64, reservation_grace_ms: u64) -> Result<SweepReport> {
        let mut report = SweepReport::default();
        for p in 0..self.keys.partitions() {
            self.sweep_partition(p, now, &mut report).await?;
        }
        for tenant in self.tenant_ids().await? {
            self.sweep_reservations(&tenant, now, reservation_grace_ms, &mut report)
                .await?;
        }
        Ok(report)
    }

    async fn sweep_partition(&self, p: u32, now: u64, report: &mut SweepReport) -> Result<()> {
        let mut conn = self.connection();
        let open: Vec<String> = conn.zrange(self.keys.open_batches(p), 0, 999).await?;
        report.open_batches += open.len();
        for batch_id in open {
            let (status, total, traceparent): (Option<String>, Option<usize>, Option<String>) = conn
                .hmget(self.keys.batch(&batch_id), &["status", "total", "traceparent"])
                .await?;
            let traceparent = traceparent.filter(|t| !t.is_empty());
            let Some(status) = status else {
                let _: () = conn.zrem(self.keys.open_batches(p), &batch_id).await?;
                continue;
            };
            let total = total.unwrap_or(0);
            let mut pipe = redis::pipe();
            for i in 0..total {
                pipe.hmget(
                    self.keys.task(&batch_id, &ids::task_id(&batch_id, i)),
                    &["status", "lease_until"],
                );
            }
            let tasks: Vec<(Option<String>, Option<u64>)> = if total == 0 {
                Vec::new()
            } else {
                pipe.query_async(&mut conn).await?
            };
            for (task_status, _) in &tasks {
                if let Some(i) = TASK_STATES
                    .iter()
                    .position(|s| Some(*s) == task_status.as_deref())
                {
                    report.task_states[i] += 1;
                }
            }
            let all_terminal = tasks
                .iter()
                .all(|(s, _)| matches!(s.as_deref(), Some("succeeded" | "failed" | "cancelled")));
            if status == "settling" || (status == "cancelling" && all_terminal) {
                let message = Message::SettleBatch {
                    batch_id: batch_id.clone(),
                    traceparent: traceparent.clone(),
                };
                let _: String = conn
                    .xadd(self.keys.settle_stream(p), "*", &message.to_fields())
                    .await?;
                report.settlements_resent += 1;
                continue;
            }
            if status == "cancelling" {
                for (i, (task_status, _)) in tasks.iter().enumerate() {
                    if matches!(task_status.as_deref(), Some("queued" | "submitting" | "running")) {
                        let outcome = Outcome::Cancelled {
                            message: "cancelled by the client".into(),
                        };
                        if self
                            .finish_task(&ids::task_id(&batch_id, i), None, &outcome, now)
                            .await?
                        {
                            report.cancels_finished += 1;
                        }
                    }
                }
                continue;
            }
            for (i, (task_status, lease_until)) in tasks.iter().enumerate() {
                if task_status.as_deref() == Some("submitting") && lease_until.is_some_and(|l| l < now) {
                    let message = Message::SubmitTask {
                        task_id: ids::task_id(&batch_id, i),
                        batch_id: batch_id.clone(),
                        traceparent: traceparent.clone(),
                    };
                    let _: String = conn
                        .xadd(self.keys.submit_stream(p), "*", &message.to_fields())
                        .await?;
                    report.submits_resent += 1;
                }
            }
        }
        Ok(())
    }

    async fn sweep_reservations(
        &self,
        tenant: &str,
        now: u64,
        grace_ms: u64,
        report: &mut SweepReport,
    ) -> Result<()> {
        let reservations: HashMap<String, u64> =
            self.connection().hgetall(self.keys.reservations(tenant)).await?;
        report.credits_reserved += reservations.values().sum::<u64>();
        for batch_id in reservations.keys() {
            let old_enough = batch_created_ms(batch_id).is_some_and(|created| created + grace_ms < now);
            if !old_enough || self.batch(batch_id).await?.is_some() {
                continue;
            }
            if let Settlement::Settled { refunded, .. } = self.settle(tenant, batch_id, 0).await? {
                tracing::warn!(tenant.id = %tenant, batch.id = %batch_id, refunded, "released a reservation whose batch was never written");
                report.reservations_released += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_ids_carry_their_creation_time() {
        let before = crate::model::now_ms();
        let id = ids::new_batch_id();
        let created = batch_created_ms(&id).expect("a time");
        assert!(created >= before.saturating_sub(1) && created <= crate::model::now_ms() + 1);
        assert_eq!(batch_created_ms("bat_x"), None);
    }
}
