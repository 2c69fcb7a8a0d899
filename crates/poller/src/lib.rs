//! The poller: claims due tasks from the poll schedules (a claim leases the task, so no two pollers poll it at
//! once), asks the provider for their status with at most `poller.concurrency` calls in flight, and records
//! progress, success or failure. It waits for the next due time instead of spinning when nothing is due.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use gantry_core::{
    config::ProviderName,
    model::now_ms,
    providers::Providers,
    retry::{self, Decision},
    schedule::next_poll_delay,
    store::{Outcome, PollTarget, ScheduleKind},
    Config, Store,
};
use gantry_provider::{ProviderError, RemoteStatus};
use gantry_telemetry::{
    context,
    metrics::{record_in_flight_limits, record_schedule},
};
use tokio::{sync::Semaphore, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Runs a poller until `shutdown`, then finishes the polls in flight.
pub async fn run(config: &Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let store = Store::connect_when_ready(config, &shutdown).await?;
    let providers = Providers::from_config(config, &store)?;
    let poller = Arc::new(Poller {
        store,
        providers,
        config: config.clone(),
    });
    let permits = Arc::new(Semaphore::new(config.poller.concurrency));
    let partitions = poller.store.keys().partitions();
    let mut in_flight = JoinSet::new();
    let mut offset = 0;
    tracing::info!("poller started");
    record_in_flight_limits(&[
        ("grsai", config.provider.limits.grsai.max_in_flight),
        ("seedance", config.provider.limits.seedance.max_in_flight),
    ]);
    let sampler = tokio::spawn(sample(poller.store.clone(), config.clone(), shutdown.clone()));
    while !shutdown.is_cancelled() {
        while in_flight.try_join_next().is_some() {}
        let free = permits.available_permits();
        if free == 0 {
            // Every slot is busy: wait for one to free up.
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = in_flight.join_next() => continue,
            }
        }
        let claimed = match poller.claim(offset, free).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::error!(error = %e, "claiming due polls failed");
                wait(&shutdown, Duration::from_secs(1)).await;
                continue;
            }
        };
        // Start from another partition next time, so none is favoured.
        offset = (offset + 1) % partitions;
        if claimed.is_empty() {
            let pause = poller.idle_pause().await;
            wait(&shutdown, pause).await;
            continue;
        }
        for task_id in claimed {
            let permit = permits
                .clone()
                .acquire_owned()
                .await
                .context("semaphore closed")?;
            let poller = poller.clone();
            in_flight.spawn(async move {
                if let Err(e) = poller.poll(&task_id).await {
                    // The claim lease expires and the task is polled again.
                    tracing::error!(task.id = %task_id, error = %e, "poll failed");
                }
                drop(permit);
            });
        }
    }
    gantry_core::drain(&mut in_flight, Duration::from_millis(config.shutdown.grace_ms)).await;
    let _ = sampler.await;
    tracing::info!("poller stopped");
    Ok(())
}

/// Every `telemetry.sample_interval_ms`, the size of the poll schedules and how much of them is due.
async fn sample(store: Store, config: Config, shutdown: CancellationToken) {
    let period = Duration::from_millis(config.telemetry.sample_interval_ms);
    gantry_core::every(period, &shutdown, || async {
        match store.schedule_stats(ScheduleKind::Polls, now_ms()).await {
            Ok((size, due)) => record_schedule(ScheduleKind::Polls.as_str(), size, due),
            Err(e) => tracing::debug!(error = %e, "sampling the poll schedule failed"),
        }
    })
    .await;
}

async fn wait(shutdown: &CancellationToken, pause: Duration) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(pause) => {}
    }
}

struct Poller {
    store: Store,
    providers: Providers,
    config: Config,
}

impl Poller {
    async fn claim(&self, offset: u32, max: usize) -> anyhow::Result<Vec<String>> {
        let partitions = self.store.keys().partitions();
        let now = now_ms();
        let mut claimed = Vec::new();
        for i in 0..partitions {
            if claimed.len() >= max {
                break;
            }
            let p = (offset + i) % partitions;
            let lease = self.config.poller.claim_lease_ms;
            claimed.extend(self.store.claim_polls(p, now, lease, max - claimed.len()).await?);
        }
        Ok(claimed)
    }

    /// How long to wait when nothing is due: until the next due time, at most `idle_wait_ms`.
    async fn idle_pause(&self) -> Duration {
        let longest = self.config.poller.idle_wait_ms;
        let until_due = match self.store.next_poll_due().await {
            Ok(Some(due)) => due.saturating_sub(now_ms()),
            Ok(None) | Err(_) => longest,
        };
        Duration::from_millis(until_due.clamp(1, longest))
    }

    async fn poll(&self, task_id: &str) -> anyhow::Result<()> {
        let Some(target) = self.store.poll_target(task_id).await? else {
            self.store.unschedule_poll(task_id).await?;
            return Ok(());
        };
        if target.status != "running" {
            // Finished meanwhile (or not started): nothing to ask the provider.
            self.store.unschedule_poll(task_id).await?;
            return Ok(());
        }
        // One short span per poll, a child of the request that created the batch.
        let span = tracing::info_span!(
            "poll",
            task.id = %task_id,
            batch.id = %target.batch_id,
            tenant.id = %target.tenant_id,
            model = %target.model,
            provider = %target.provider,
            attempt = target.attempt,
            poll = target.polls + 1,
        );
        context::set_parent(&span, target.traceparent.as_deref());
        self.poll_running(task_id, &target).instrument(span).await
    }

    async fn poll_running(&self, task_id: &str, target: &PollTarget) -> anyhow::Result<()> {
        let now = now_ms();
        let elapsed = now.saturating_sub(target.submitted_at);
        let provider = self
            .providers
            .by_name(ProviderName::parse(&target.provider).unwrap_or(ProviderName::Grsai));
        if elapsed > self.config.poller.deadline_ms {
            let message = format!("still running {} s after submission", elapsed / 1000);
            let outcome = Outcome::Failed {
                code: "timeout".into(),
                message,
            };
            self.finish(task_id, target, outcome).await?;
            // Best effort: stop the remote work we will not use (where the provider can).
            if let Err(e) = provider.cancel(&target.remote_id).await {
                tracing::debug!(error = %e, "remote cancel after the deadline failed");
            }
            return Ok(());
        }
        match provider.status(&target.remote_id).await {
            Ok(RemoteStatus::Pending) => self.reschedule(task_id, target, target.progress, None).await,
            Ok(RemoteStatus::Running { progress }) => self.reschedule(task_id, target, progress, None).await,
            Ok(RemoteStatus::Succeeded {
                video_url,
                last_frame_url,
            }) => {
                self.finish(
                    task_id,
                    target,
                    Outcome::Succeeded {
                        video_url,
                        last_frame_url,
                    },
                )
                .await
            }
            Ok(RemoteStatus::Failed { code, message }) => {
                self.finish(
                    task_id,
                    target,
                    Outcome::Failed {
                        code: code.as_str().into(),
                        message,
                    },
                )
                .await
            }
            Err(e) => match retry::decide(&self.config.retry, &e, target.poll_errors + 1) {
                Decision::RetryAfter(wait) => {
                    tracing::warn!(error = %e, "status call failed; polling again later");
                    self.reschedule(task_id, target, target.progress, Some((&e, wait)))
                        .await
                }
                Decision::GiveUp => {
                    tracing::warn!(error = %e, errors = target.poll_errors + 1, "status calls keep failing");
                    let code = if matches!(e, ProviderError::Rejected { .. }) {
                        "rejected"
                    } else {
                        "provider_error"
                    };
                    self.finish(
                        task_id,
                        target,
                        Outcome::Failed {
                            code: code.into(),
                            message: e.to_string(),
                        },
                    )
                    .await
                }
            },
        }
    }

    /// Schedules the next poll: after a failed call, its backoff; else the growing interval (or the slow safety
    /// net interval when provider callbacks are on).
    async fn reschedule(
        &self,
        task_id: &str,
        target: &PollTarget,
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
        let error = failure.map(|(e, _)| e.to_string());
        self.store
            .poll_update(task_id, target.attempt, progress, now, next, error.as_deref())
            .await?;
        Ok(())
    }

    async fn finish(&self, task_id: &str, target: &PollTarget, outcome: Outcome) -> anyhow::Result<()> {
        let applied = self
            .store
            .finish_task(task_id, Some(target.attempt), &outcome, now_ms())
            .await?;
        tracing::info!(applied, outcome = ?outcome, "task finished");
        Ok(())
    }
}
