//! The poller: claims due tasks from the poll schedules (a claim leases the task, so no two pollers poll it at
//! once), asks the provider for their status with at most `poller.concurrency` calls in flight, and records
//! progress, success or failure. It waits for the next due time instead of spinning when nothing is due.

use std::{sync::Arc, time::Duration};

use gantry_core::{
    coalesce::Coalescer,
    domain::{FailureCode, TaskStatus},
    model::now_ms,
    schedule::next_poll_delay,
    service::{self, Limits, Source},
    store::{Finish, Outcome, ScheduleKind, TaskRow},
    Config, Store,
};
use gantry_provider::{
    outcome::{self, Decision, PollStep},
    Provider, ProviderError, Providers,
};
use gantry_telemetry::{
    context,
    metrics::{record_in_flight_limits, record_schedule},
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Runs a poller until `shutdown`, then finishes the polls in flight.
pub async fn run(config: &Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let store = Store::connect_when_ready(config, &shutdown).await?;
    let providers = Providers::from_config(config, &store)?;
    let finishes = {
        let store = store.clone();
        Coalescer::spawn(move |partition, finishes: Vec<Finish>| {
            let store = store.clone();
            async move { store.finish_tasks(partition, &finishes).await }
        })
    };
    let poller = Arc::new(Poller {
        store,
        providers,
        config: config.clone(),
        finishes,
    });
    tracing::info!("poller started");
    record_in_flight_limits(&Providers::in_flight_limits(config));
    let sampler = tokio::spawn(sample(poller.store.clone(), config.clone(), shutdown.clone()));
    let mut due = DuePolls::new(poller.clone());
    let limits = Limits {
        concurrency: config.poller.concurrency,
        grace: Duration::from_millis(config.shutdown.grace_ms),
    };
    service::run(&mut due, limits, &shutdown, move |(task_id, row): DuePoll| {
        let poller = poller.clone();
        async move {
            if let Err(e) = poller.poll(&task_id, row).await {
                // The claim lease expires and the task is polled again.
                tracing::error!(task.id = %task_id, error = %e, "poll failed");
            }
        }
    })
    .await;
    let _ = sampler.await;
    tracing::info!("poller stopped");
    Ok(())
}

/// A claimed poll: the task id and the task's row as the claim read it.
type DuePoll = (String, gantry_core::store::Result<Option<TaskRow>>);

/// Due polls, claimed from the poll schedules of every partition (a claim leases the task); when nothing is due,
/// waits until the next due time, at most `poller.idle_wait_ms`.
struct DuePolls {
    poller: Arc<Poller>,
    /// The partition to start from; it turns, so none is favoured.
    offset: u32,
    /// When each partition's schedule is next worth a claim (ms): its earliest due time as the last claim saw it,
    /// but no later than `idle_wait_ms` after that claim (tasks scheduled since then are found by then).
    next_check: Vec<u64>,
}

impl DuePolls {
    fn new(poller: Arc<Poller>) -> Self {
        let partitions = poller.store.keys().partitions() as usize;
        Self {
            poller,
            offset: 0,
            next_check: vec![0; partitions],
        }
    }

    /// Claims up to `max` due polls from the partitions worth a claim now, one script call each.
    async fn claim(&mut self, now: u64, max: usize) -> anyhow::Result<Vec<DuePoll>> {
        let config = &self.poller.config.poller;
        let partitions = self.next_check.len() as u32;
        let mut claimed = Vec::new();
        for i in 0..partitions {
            let p = (self.offset + i) % partitions;
            if claimed.len() >= max {
                break;
            }
            if self.next_check[p as usize] > now {
                continue;
            }
            let (rows, next_due) = self
                .poller
                .store
                .claim_polls(p, now, config.claim_lease_ms, max - claimed.len())
                .await?;
            let horizon = now + config.idle_wait_ms;
            self.next_check[p as usize] = next_due.map_or(horizon, |due| due.min(horizon));
            claimed.extend(rows);
        }
        self.offset = (self.offset + 1) % partitions;
        Ok(claimed)
    }
}

impl Source for DuePolls {
    type Item = DuePoll;

    async fn next(&mut self, max: usize, shutdown: &CancellationToken) -> Option<Vec<DuePoll>> {
        if shutdown.is_cancelled() {
            return None;
        }
        let claimed = match self.claim(now_ms(), max).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::error!(error = %e, "claiming due polls failed");
                service::pause(shutdown, Duration::from_secs(1)).await;
                return Some(Vec::new());
            }
        };
        if claimed.is_empty() {
            // Nothing due anywhere: sleep until the first partition is worth a claim again.
            let wake = self.next_check.iter().min().copied().unwrap_or_default();
            let longest = self.poller.config.poller.idle_wait_ms;
            let pause = wake.saturating_sub(now_ms()).clamp(1, longest);
            service::pause(shutdown, Duration::from_millis(pause)).await;
        }
        Some(claimed)
    }
}

/// Every `telemetry.sample_interval_ms`, the size of the poll schedules and how much of them is due.
async fn sample(store: Store, config: Config, shutdown: CancellationToken) {
    let period = Duration::from_millis(config.telemetry.sample_interval_ms);
    service::every(period, &shutdown, || async {
        match store.schedule_stats(ScheduleKind::Polls, now_ms()).await {
            Ok((size, due)) => record_schedule(ScheduleKind::Polls.as_str(), size, due),
            Err(e) => tracing::debug!(error = %e, "sampling the poll schedule failed"),
        }
    })
    .await;
}

struct Poller {
    store: Store,
    providers: Providers,
    config: Config,
    /// Finishes tasks, many per script call under load.
    finishes: Coalescer<Finish>,
}

impl Poller {
    async fn poll(
        &self,
        task_id: &str,
        row: gantry_core::store::Result<Option<TaskRow>>,
    ) -> anyhow::Result<()> {
        let target = match row? {
            Some(target) if target.status == TaskStatus::Running => target,
            // Gone, finished meanwhile (or not started): nothing to ask the provider.
            _ => {
                self.store.unschedule_poll(task_id).await?;
                return Ok(());
            }
        };
        // One short span per poll, a child of the request that created the batch.
        let span = tracing::info_span!(
            "poll",
            task.id = %task_id,
            batch.id = %target.batch_id,
            tenant.id = %target.tenant_id,
            model = %target.model,
            provider = tracing::field::Empty,
            attempt = target.attempt,
            poll = target.polls + 1,
        );
        if let Some(provider) = target.provider {
            span.record("provider", provider.as_str());
        }
        context::set_parent(&span, target.traceparent.as_deref());
        self.poll_running(task_id, &target).instrument(span).await
    }

    async fn poll_running(&self, task_id: &str, target: &TaskRow) -> anyhow::Result<()> {
        let now = now_ms();
        let elapsed = now.saturating_sub(target.submitted_at);
        let name = target.running_provider()?;
        let provider: Arc<dyn Provider> = self
            .providers
            .get(name)
            .ok_or_else(|| anyhow::anyhow!("provider {name} is not configured"))?;
        if elapsed > self.config.poller.deadline_ms {
            let outcome = Outcome::Failed {
                code: FailureCode::Timeout,
                message: format!("still running {} s after submission", elapsed / 1000),
            };
            self.finish(task_id, target, outcome).await?;
            // Best effort: stop the remote work we will not use (where the provider can).
            if let Err(e) = provider.cancel(&target.remote_id).await {
                tracing::debug!(error = %e, "remote cancel after the deadline failed");
            }
            return Ok(());
        }
        match provider.status(&target.remote_id).await {
            Ok(status) => match outcome::poll_step(status) {
                PollStep::Continue { progress } => {
                    let progress = progress.unwrap_or(target.progress);
                    self.reschedule(task_id, target, progress, None).await
                }
                PollStep::Finish(outcome) => self.finish(task_id, target, outcome).await,
            },
            Err(e) => match outcome::decide(&self.config.retry, &e, target.poll_errors + 1) {
                Decision::RetryAfter(wait) => {
                    tracing::warn!(error = %e, "status call failed; polling again later");
                    self.reschedule(task_id, target, target.progress, Some((&e, wait)))
                        .await
                }
                Decision::GiveUp => {
                    tracing::warn!(error = %e, errors = target.poll_errors + 1, "status calls keep failing");
                    self.finish(task_id, target, outcome::given_up(&e)).await
                }
            },
        }
    }

    /// Schedules the next poll: after a failed call, its backoff; else the growing interval (or the slow safety
    /// net interval when provider callbacks are on).
    async fn reschedule(
        &self,
        task_id: &str,
        target: &TaskRow,
        progress: u8,
        failure: Option<(&ProviderError, Duration)>,
    ) -> anyhow::Result<()> {
        let now = now_ms();
        let poller = &self.config.poller;
        let delay = match failure {
            Some((_, wait)) => wait,
            None if self.config.provider.callback_base_url.is_some() => {
                Duration::from_millis(poller.webhook_poll_interval_ms)
            }
            None => {
                let elapsed = Duration::from_millis(now.saturating_sub(target.submitted_at));
                next_poll_delay(poller, target.polls, progress, elapsed)
            }
        };
        let next = now + u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        let error = failure.map(|(e, _)| outcome::public_message(e));
        self.store
            .poll_update(task_id, target.attempt, progress, now, next, error.as_deref())
            .await?;
        Ok(())
    }

    async fn finish(&self, task_id: &str, target: &TaskRow, outcome: Outcome) -> anyhow::Result<()> {
        let finish = Finish {
            task_id: task_id.to_owned(),
            attempt: Some(target.attempt),
            outcome: outcome.clone(),
            now: now_ms(),
        };
        let partition = self.store.partition_of_task(task_id)?;
        let applied = self.finishes.call(partition, finish).await?;
        tracing::info!(applied, outcome = ?outcome, "task finished");
        Ok(())
    }
}
