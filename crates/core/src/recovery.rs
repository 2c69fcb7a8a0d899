//! Recovery: finds and finishes what a crash could strand, so that every accepted task ends and every batch is
//! settled without human help. Everything it does is idempotent, so several sweeps may run at once (each
//! settlement process runs one every `sweeper.interval_ms`; see `gantry_settlement`).
//!
//! A sweep's work does not grow with the number of open batches: the open index is scored by when each batch is
//! next due for a check (a new batch by its creation time), and a sweep takes at most
//! [`SweepOptions::batches_per_partition`] due batches per partition, pushing each one's next check a recheck
//! interval (the submit lease) ahead as it takes it. A batch is then checked about once per lease while it is open,
//! sooner when one of its leases ends sooner; a batch younger than one lease has nothing a lease could strand, so
//! its first look reads no tasks.
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
    Config, Store,
};

/// Reservations that passed the grace period looked at per tenant and sweep (a backlog, e.g. on the first sweep
/// after an upgrade, is worked off over several sweeps).
const RESERVATIONS_PER_SWEEP: usize = 1_000;

/// How much one sweep may do, and when it looks again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepOptions {
    /// A reservation whose batch was never written is released once it is older than this (ms).
    pub reservation_grace_ms: u64,
    /// How long after a check a batch is checked again (ms): the submit lease, since a task cannot be stranded in
    /// `submitting` for less.
    pub recheck_ms: u64,
    /// Most due batches checked per partition and sweep; the rest stay due for the next sweep.
    pub batches_per_partition: usize,
}

impl SweepOptions {
    /// Due batches checked per partition and sweep, by default.
    pub const BATCHES_PER_PARTITION: usize = 500;

    pub fn from_config(config: &Config) -> Self {
        Self {
            reservation_grace_ms: config.sweeper.reservation_grace_ms,
            recheck_ms: config.submitter.lease_ms.max(1),
            batches_per_partition: Self::BATCHES_PER_PARTITION,
        }
    }
}

/// What one sweep did, and what it counted on the way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Batches not yet settled, all partitions (the size of the open index, not a walk over it).
    pub open_batches: u64,
    /// Open batches that were due and checked by this sweep.
    pub batches_checked: usize,
    pub settlements_resent: usize,
    pub submits_resent: usize,
    pub reservations_released: usize,
    pub cancels_finished: usize,
    /// Credits reserved (frozen) for batches not yet settled, all tenants.
    pub credits_reserved: u64,
}

impl SweepReport {
    /// Whether the sweep repaired anything.
    pub fn repaired(&self) -> bool {
        self.settlements_resent + self.submits_resent + self.reservations_released + self.cancels_finished > 0
    }
}

/// One sweep over the due batches of every partition, and over every tenant's reservations that passed the grace
/// period since the last sweep.
pub async fn sweep(store: &Store, now: u64, options: &SweepOptions) -> Result<SweepReport> {
    let mut report = SweepReport::default();
    let next_check = now.saturating_add(options.recheck_ms);
    for p in 0..store.keys().partitions() {
        let due = store
            .claim_due_open_batches(p, now, options.batches_per_partition, next_check)
            .await?;
        for batch in due {
            report.batches_checked += 1;
            sweep_batch(store, &batch, now, options, &mut report).await?;
        }
    }
    report.open_batches = store.open_batch_count().await?;
    for tenant in store.tenant_ids().await? {
        sweep_reservations(store, &tenant, now, options.reservation_grace_ms, &mut report).await?;
    }
    Ok(report)
}

/// Checks one due batch (its next check is already `now + recheck`; brought forward when a lease ends sooner).
async fn sweep_batch(
    store: &Store,
    batch: &OpenBatch,
    now: u64,
    options: &SweepOptions,
    report: &mut SweepReport,
) -> Result<()> {
    let cancelling = batch.status == BatchStatus::Cancelling;
    if batch.status == BatchStatus::Settling {
        return resend_settle(store, batch, report).await;
    }
    let first_lease_end = batch.created_at.saturating_add(options.recheck_ms);
    if !cancelling && first_lease_end > now {
        // No lease of this batch can have run out yet: look at its tasks once one could have.
        return store.schedule_check(&batch.id, first_lease_end).await;
    }
    let tasks = store.task_leases(batch).await?;
    let all_terminal = tasks.iter().all(|t| t.is_some_and(|t| t.status.is_terminal()));
    if cancelling && all_terminal {
        return resend_settle(store, batch, report).await;
    }
    let mut next_lease_end: Option<u64> = None;
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
        } else if !cancelling && status == TaskStatus::Submitting {
            match lease_until {
                Some(end) if end < now => {
                    store
                        .resend(&Message::SubmitTask {
                            task_id,
                            batch_id: batch.id.clone(),
                            traceparent: batch.traceparent.clone(),
                        })
                        .await?;
                    report.submits_resent += 1;
                }
                Some(end) => next_lease_end = Some(next_lease_end.map_or(end, |n| n.min(end))),
                None => {}
            }
        }
    }
    match next_lease_end {
        // Look again just after the first live lease ends, if that comes before the regular recheck.
        Some(end) if end.saturating_add(1) < now.saturating_add(options.recheck_ms) => {
            store.schedule_check(&batch.id, end.saturating_add(1)).await
        }
        _ => Ok(()),
    }
}

async fn resend_settle(store: &Store, batch: &OpenBatch, report: &mut SweepReport) -> Result<()> {
    store
        .resend(&Message::SettleBatch {
            batch_id: batch.id.clone(),
            traceparent: batch.traceparent.clone(),
        })
        .await?;
    report.settlements_resent += 1;
    Ok(())
}

/// Releases the tenant's reservations whose batch was never written, once older than the grace period. Each
/// reservation is looked at once, when it passes the grace period: the tenant's batch index is scored by
/// reservation time, and how far the sweep has looked is kept per tenant in Redis. Per tenant and sweep: an HMGET of
/// its credits, a GET and a ZRANGEBYSCORE, and a HEXISTS and EXISTS per reservation that passed the grace period
/// since the last sweep.
async fn sweep_reservations(
    store: &Store,
    tenant: &str,
    now: u64,
    grace_ms: u64,
    report: &mut SweepReport,
) -> Result<()> {
    let until = now.saturating_sub(grace_ms);
    let (checked, passed) = store
        .reserved_between(tenant, until, RESERVATIONS_PER_SWEEP)
        .await?;
    let ids: Vec<String> = passed.iter().map(|(id, _)| id.clone()).collect();
    for batch_id in store.orphan_reservations(tenant, &ids).await? {
        if let Settlement::Settled { refunded, .. } = store.settle(tenant, &batch_id, 0).await? {
            tracing::warn!(tenant.id = %tenant, batch.id = %batch_id, refunded, "released a reservation whose batch was never written");
            report.reservations_released += 1;
        }
    }
    // Nothing is written for a tenant with nothing new to look at. A full page may stop inside one millisecond:
    // look again from just before its last one.
    let reached = match passed.last() {
        None => checked,
        Some((_, at)) if passed.len() == RESERVATIONS_PER_SWEEP => at.saturating_sub(1),
        Some(_) => until,
    };
    if reached > checked {
        store.set_reservations_checked(tenant, reached).await?;
    }
    report.credits_reserved += u64::try_from(store.credits(tenant).await?.frozen).unwrap_or(0);
    Ok(())
}
