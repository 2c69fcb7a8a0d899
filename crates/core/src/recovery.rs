//! Recovery: finds and finishes what a crash could strand, so that every accepted task ends and every batch is
//! settled without human help. Everything it does is idempotent, so several sweeps may run at once (each
//! settlement process runs one every `sweeper.interval_ms`; see `gantry_settlement`).
//!
//! - A batch whose tasks are all terminal (`settling`, or `cancelling` with nothing left) gets its settle message
//!   again; settlement is exactly-once per batch, so a duplicate changes nothing.
//! - A task stuck in `submitting` past its lease gets a submit message again; a submitter takes it over with a
//!   new attempt (a live one whose lease merely ran out is fenced by the attempt number).
//! - A `cancelling` batch whose cancel was interrupted (the gateway died while cancelling its tasks) has its
//!   remaining tasks cancelled.
//! - A credit reservation whose batch was never written (the gateway died in between) is released after a grace
//!   period: recorded as a settlement that charges nothing, so the batch id can never be reserved again.

use crate::{
    domain::{BatchStatus, TaskStatus},
    ids,
    messages::Message,
    store::{OpenBatch, Outcome, Result, Settlement, TaskLease},
    Store,
};

/// Open batches read per partition and sweep.
const OPEN_BATCHES_PER_SWEEP: usize = 1_000;

/// What one sweep did, and what it counted on the way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub open_batches: usize,
    pub settlements_resent: usize,
    pub submits_resent: usize,
    pub reservations_released: usize,
    pub cancels_finished: usize,
    /// Tasks of the open batches by state, in the order of [`TaskStatus::ALL`].
    pub task_states: [u64; TaskStatus::ALL.len()],
    /// Credits reserved (frozen) for batches not yet settled, all tenants.
    pub credits_reserved: u64,
}

impl SweepReport {
    /// Whether the sweep repaired anything.
    pub fn repaired(&self) -> bool {
        self.settlements_resent + self.submits_resent + self.reservations_released + self.cancels_finished > 0
    }

    /// The task counts with their states.
    pub fn tasks_by_state(&self) -> impl Iterator<Item = (TaskStatus, u64)> + '_ {
        TaskStatus::ALL.iter().copied().zip(self.task_states)
    }
}

/// One sweep over every partition and tenant. Reservations younger than `reservation_grace_ms` are left alone.
pub async fn sweep(store: &Store, now: u64, reservation_grace_ms: u64) -> Result<SweepReport> {
    let mut report = SweepReport::default();
    for p in 0..store.keys().partitions() {
        for batch in store.open_batches(p, OPEN_BATCHES_PER_SWEEP).await? {
            report.open_batches += 1;
            sweep_batch(store, &batch, now, &mut report).await?;
        }
    }
    for tenant in store.tenant_ids().await? {
        sweep_reservations(store, &tenant, now, reservation_grace_ms, &mut report).await?;
    }
    Ok(report)
}

async fn sweep_batch(store: &Store, batch: &OpenBatch, now: u64, report: &mut SweepReport) -> Result<()> {
    let tasks = store.task_leases(batch).await?;
    for task in tasks.iter().flatten() {
        if let Some(i) = TaskStatus::ALL.iter().position(|s| *s == task.status) {
            report.task_states[i] += 1;
        }
    }
    let all_terminal = tasks.iter().all(|t| t.is_some_and(|t| t.status.is_terminal()));
    let cancelling = batch.status == BatchStatus::Cancelling;
    if batch.status == BatchStatus::Settling || (cancelling && all_terminal) {
        store
            .resend(&Message::SettleBatch {
                batch_id: batch.id.clone(),
                traceparent: batch.traceparent.clone(),
            })
            .await?;
        report.settlements_resent += 1;
        return Ok(());
    }
    for (i, task) in tasks.iter().enumerate() {
        let Some(TaskLease { status, lease_until }) = *task else {
            continue;
        };
        let task_id = ids::task_id(&batch.id, i);
        if cancelling && !status.is_terminal() {
            if store
                .finish_task(&task_id, None, &Outcome::cancelled_by_client(), now)
                .await?
            {
                report.cancels_finished += 1;
            }
        } else if !cancelling && status == TaskStatus::Submitting && lease_until.is_some_and(|l| l < now) {
            store
                .resend(&Message::SubmitTask {
                    task_id,
                    batch_id: batch.id.clone(),
                    traceparent: batch.traceparent.clone(),
                })
                .await?;
            report.submits_resent += 1;
        }
    }
    Ok(())
}

async fn sweep_reservations(
    store: &Store,
    tenant: &str,
    now: u64,
    grace_ms: u64,
    report: &mut SweepReport,
) -> Result<()> {
    let reservations = store.reservations(tenant).await?;
    report.credits_reserved += reservations.values().sum::<u64>();
    for batch_id in reservations.keys() {
        let old_enough = ids::batch_created_ms(batch_id).is_some_and(|created| created + grace_ms < now);
        if !old_enough || store.batch(batch_id).await?.is_some() {
            continue;
        }
        if let Settlement::Settled { refunded, .. } = store.settle(tenant, batch_id, 0).await? {
            tracing::warn!(tenant.id = %tenant, batch.id = %batch_id, refunded, "released a reservation whose batch was never written");
            report.reservations_released += 1;
        }
    }
    Ok(())
}
