//! The submitter: reads the submit streams, creates each task at the provider, records the remote id and
//! schedules the first poll. A message is acknowledged only once its effect is in Redis.

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context;
use gantry_core::{
    acks::Acker,
    callback,
    coalesce::Coalescer,
    consumer::{self, Consumer, ConsumerOptions, Delivery},
    domain::{FailureCode, TaskStatus},
    messages::Message,
    model::now_ms,
    service::{self, Limits, Source},
    store::{Claim, Outcome, ScheduleKind, Started, StreamKind},
    Config, Store, StoreError,
};
use gantry_provider::{
    outcome::{self, Decision},
    CreateRequest, ProviderError, ProviderName, Providers,
};
use gantry_telemetry::{
    context,
    metrics::{count_dead_letters, metrics, record_in_flight_limits, record_schedule, record_stream},
    KeyValue,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The consumer group of the submit streams.
pub const GROUP: &str = "submitter";

/// Runs a submitter until `shutdown`, then finishes the creates in flight.
pub async fn run(config: &Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let store = Store::connect_when_ready(config, &shutdown).await?;
    let providers = Providers::from_config(config, &store)?;
    let streams = (0..store.keys().partitions())
        .map(|p| store.keys().submit_stream(p))
        .collect();
    let options = ConsumerOptions {
        count: config.submitter.read_count,
        block: Duration::from_millis(config.submitter.block_ms),
        // Reclaim a dead submitter's messages only once the task's lease has run out.
        claim_idle: Duration::from_millis(config.submitter.lease_ms + 1_000),
    };
    let consumer = Consumer::join(&store, GROUP, streams, options)
        .await
        .context("joining the submit streams")?;
    tracing::info!(consumer = consumer.name(), "submitter started");
    record_in_flight_limits(&Providers::in_flight_limits(config));
    let sampler = tokio::spawn(sample(store.clone(), config.clone(), shutdown.clone()));
    let (acker, acks_sent) = Acker::spawn(store.clone(), GROUP);
    let started = {
        let store = store.clone();
        Coalescer::spawn(move |partition, tasks: Vec<Started>| {
            let store = store.clone();
            async move { store.mark_running_all(partition, &tasks, now_ms()).await }
        })
    };
    let worker = Arc::new(Worker {
        store: store.clone(),
        providers,
        config: config.clone(),
        acker,
        started,
    });
    let mut source = SubmitSource {
        consumer,
        store,
        pump_max: config.submitter.read_count,
        max_deliveries: config.streams.max_deliveries,
        lease_ms: config.submitter.lease_ms,
        last_pump: None,
    };
    let limits = Limits {
        concurrency: config.submitter.concurrency,
        grace: Duration::from_millis(config.shutdown.grace_ms),
    };
    service::run(&mut source, limits, &shutdown, move |(delivery, claim)| {
        let worker = worker.clone();
        async move { worker.handle(delivery, claim).await }
    })
    .await;
    // The handlers are gone with `service::run`: the last acks go out before the consumer leaves.
    let _ = acks_sent.await;
    source.consumer.leave().await;
    let _ = sampler.await;
    tracing::info!("submitter stopped");
    Ok(())
}

/// The submit streams; before each read, due retries become submit messages again (read by whichever submitter
/// gets them). The tasks a read delivers are claimed together, one script call per stream.
struct SubmitSource {
    consumer: Consumer,
    store: Store,
    pump_max: usize,
    max_deliveries: u32,
    lease_ms: u64,
    last_pump: Option<std::time::Instant>,
}

/// How often the submitter moves due retries back to the submit streams, at most.
const PUMP_EVERY: Duration = Duration::from_millis(50);

/// A delivery, with its task's claim when the read claimed it (`None`: the handler claims it, or buries it).
type Submit = (Delivery, Option<Result<Claim, StoreError>>);

impl Source for SubmitSource {
    type Item = Submit;

    async fn next(&mut self, max: usize, shutdown: &CancellationToken) -> Option<Vec<Submit>> {
        // Retries wait seconds; a pass over every partition's retry schedule now and then is enough.
        if self.last_pump.is_none_or(|at| at.elapsed() >= PUMP_EVERY) {
            self.last_pump = Some(std::time::Instant::now());
            if let Err(e) = self.store.pump_retries(now_ms(), self.pump_max).await {
                tracing::warn!(error = %e, "moving due retries failed");
            }
        }
        let deliveries = Source::next(&mut self.consumer, max, shutdown).await?;
        Some(self.claim(deliveries, max).await)
    }
}

impl SubmitSource {
    /// Claims the tasks of healthy submit messages, one call per stream; a failed call leaves its tasks to be
    /// claimed by their handlers (which then meet the same error, and leave the message pending).
    ///
    /// Only as many as there are free slots (`max`): a read may hand over more, and those wait for a slot in the
    /// runner. A claim starts the task's lease, and nothing renews it before the handler runs, so a task claimed
    /// here and kept waiting behind a throttled provider would be taken over by another submitter and created
    /// twice (the long chaos run, 3,000 tasks, saw dozens). The rest are claimed by their handlers when they start.
    async fn claim(&self, deliveries: Vec<Delivery>, max: usize) -> Vec<Submit> {
        let mut claims: Vec<Option<Result<Claim, StoreError>>> = deliveries.iter().map(|_| None).collect();
        let mut by_stream: std::collections::BTreeMap<&str, Vec<(usize, &str)>> = Default::default();
        let mut claimed = 0;
        for (i, delivery) in deliveries.iter().enumerate() {
            if claimed == max {
                break;
            }
            if consumer::poison(delivery, self.max_deliveries).is_some() {
                continue;
            }
            if let Ok(Message::SubmitTask { task_id, .. }) = &delivery.message {
                by_stream
                    .entry(delivery.stream.as_str())
                    .or_default()
                    .push((i, task_id.as_str()));
                claimed += 1;
            }
        }
        for tasks in by_stream.values() {
            let ids: Vec<&str> = tasks.iter().map(|(_, id)| *id).collect();
            match self.store.claim_submits(&ids, now_ms(), self.lease_ms).await {
                Ok(answers) => {
                    for ((i, _), answer) in tasks.iter().zip(answers) {
                        claims[*i] = Some(answer);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "claiming the tasks read failed"),
            }
        }
        deliveries.into_iter().zip(claims).collect()
    }
}

/// Every `telemetry.sample_interval_ms`, the backlog of the submit streams and of the retry schedule.
async fn sample(store: Store, config: Config, shutdown: CancellationToken) {
    let period = Duration::from_millis(config.telemetry.sample_interval_ms);
    service::every(period, &shutdown, || async {
        match store.stream_stats(StreamKind::Submit, GROUP).await {
            Ok(s) => record_stream(StreamKind::Submit.as_str(), GROUP, s.length, s.lag, s.pending),
            Err(e) => tracing::debug!(error = %e, "sampling the submit streams failed"),
        }
        match store.schedule_stats(ScheduleKind::Retries, now_ms()).await {
            Ok((size, due)) => record_schedule(ScheduleKind::Retries.as_str(), size, due),
            Err(e) => tracing::debug!(error = %e, "sampling the retry schedule failed"),
        }
    })
    .await;
}

struct Worker {
    store: Store,
    providers: Providers,
    config: Config,
    acker: Acker,
    /// Records remote ids, many tasks per script call under load.
    started: Coalescer<Started>,
}

impl Worker {
    async fn handle(&self, delivery: Delivery, claim: Option<Result<Claim, StoreError>>) {
        if let Some(reason) = consumer::poison(&delivery, self.config.streams.max_deliveries) {
            return self.bury(&delivery, &reason).await;
        }
        let done = match &delivery.message {
            Ok(Message::SubmitTask {
                task_id,
                batch_id,
                traceparent,
            }) => {
                let span = tracing::info_span!(
                    "submit",
                    task.id = %task_id,
                    batch.id = %batch_id,
                    tenant.id = tracing::field::Empty,
                    model = tracing::field::Empty,
                    provider = tracing::field::Empty,
                    attempt = tracing::field::Empty,
                    messaging.message.id = %delivery.id,
                );
                context::set_parent(&span, traceparent.as_deref());
                self.submit(task_id, claim).instrument(span).await
            }
            Ok(other) => {
                tracing::error!(message = ?other, "unexpected message on a submit stream");
                Ok(())
            }
            Err(_) => Ok(()),
        };
        match done {
            Ok(()) => self.acker.ack(&delivery.stream, &delivery.id),
            // Not acknowledged: the message stays pending and is taken over after the lease.
            Err(e) => tracing::error!(error = %e, "submit failed; left pending for redelivery"),
        }
    }

    /// A poison message: its task fails (so settlement refunds it), then the message goes to the dead letters.
    async fn bury(&self, delivery: &Delivery, reason: &str) {
        tracing::error!(id = %delivery.id, reason, "submit message moved to the dead letters");
        count_dead_letters(GROUP, 1);
        if let Ok(Message::SubmitTask { task_id, .. }) = &delivery.message {
            let outcome = Outcome::Failed {
                code: FailureCode::ProviderError,
                message: format!("gave up: {reason}"),
            };
            // Only a task that never got to the provider fails; a running one belongs to the poller now.
            let failed = match self.store.task_row(task_id).await {
                Ok(Some(t)) if t.status.is_before_provider() => {
                    self.store
                        .finish_task(task_id, Some(t.attempt), &outcome, now_ms())
                        .await
                }
                Ok(_) => Ok(false),
                Err(e) => Err(e),
            };
            match failed {
                Ok(_) => {}
                // Redis is unreachable: leave the message pending; the next delivery tries again.
                Err(e @ StoreError::Redis(_)) => {
                    return tracing::error!(error = %e, "failing a poisoned task failed");
                }
                // Not a task at all, or a damaged one: nothing to fail.
                Err(e) => tracing::warn!(error = %e, "poisoned message names no task that can fail"),
            }
        }
        let maxlen = self.config.streams.dead_letter_maxlen;
        if let Err(e) = self.store.dead_letter(GROUP, delivery, reason, maxlen).await {
            tracing::error!(error = %e, "moving a message to the dead letters failed");
        }
    }

    /// Sends one task to its provider: `claim` is the read's claim of it, if it made one.
    async fn submit(&self, task_id: &str, claim: Option<Result<Claim, StoreError>>) -> anyhow::Result<()> {
        let claim = match claim {
            Some(claim) => claim?,
            None => {
                self.store
                    .claim_submit(task_id, now_ms(), self.config.submitter.lease_ms)
                    .await?
            }
        };
        let (attempt, model, spec, chain_first_frame) = match claim {
            Claim::Claimed {
                attempt,
                model,
                spec,
                chain_first_frame,
                tenant_id,
            } => {
                let span = tracing::Span::current();
                span.record("tenant.id", tenant_id.as_str());
                span.record("model", model.as_str());
                span.record("attempt", attempt);
                (attempt, model, spec, chain_first_frame)
            }
            Claim::Skip(Some(TaskStatus::Submitting)) => {
                // A duplicate: another submitter holds the task under a live lease. If that submitter dies, the
                // sweeper sends the task again once the lease has run out.
                tracing::debug!("task is being submitted elsewhere");
                return Ok(());
            }
            Claim::Skip(status) => {
                tracing::debug!(status = ?status, "nothing to submit");
                return Ok(());
            }
            Claim::Unusable { attempt, why } => {
                tracing::error!(attempt, why, "stored task names an unknown model; failing it");
                let outcome = Outcome::Failed {
                    code: FailureCode::Rejected,
                    message: "unknown model".into(),
                };
                self.store
                    .finish_task(task_id, Some(attempt), &outcome, now_ms())
                    .await?;
                return Ok(());
            }
        };
        let provider = self
            .providers
            .for_model(model)
            .with_context(|| format!("no provider serves {model}"))?;
        let provider_name = provider.name();
        tracing::Span::current().record("provider", provider_name.as_str());
        let mut request = CreateRequest {
            model,
            prompt: spec.prompt,
            aspect_ratio: spec.aspect_ratio,
            duration: spec.duration,
            reference_image_urls: spec.reference_image_urls,
            first_frame_url: spec.first_frame_url,
            last_frame_url: spec.last_frame_url,
            webhook_url: self.webhook_url(provider_name, task_id, attempt),
        };
        if let Some(frame) = chain_first_frame {
            // Visual continuity: the shot starts from the previous shot's last frame, the provider's way.
            provider.start_from_frame(&mut request, frame);
        }
        let created = self
            .holding_lease(task_id, attempt, provider.create(&request))
            .await;
        match created {
            Ok(remote_id) => {
                let now = now_ms();
                let poller = &self.config.poller;
                let first_poll = now + poller.expected_ms(model);
                let remote = (provider_name, remote_id.as_str());
                if !self
                    .record_remote(task_id, attempt, remote, now, first_poll)
                    .await?
                {
                    tracing::warn!(remote.id = %remote_id, "task moved on while it was created; result ignored");
                    // Cancelled meanwhile (or taken over): stop the remote work where the provider can.
                    if let Err(e) = provider.cancel(&remote_id).await {
                        tracing::debug!(error = %e, "remote cancel failed");
                    }
                }
                tracing::info!(remote.id = %remote_id, attempt, provider = provider_name.as_str(), "task created");
            }
            Err(e) => self.failed_create(task_id, attempt, provider_name, &e).await?,
        }
        Ok(())
    }

    /// Runs `work` (waiting for provider permits, then the create) while this attempt holds the task's lease: every
    /// third of `submitter.lease_ms` the lease is moved on, so a live submitter that waits long is not taken over
    /// (which would create a second remote task). If this process dies, the renewals stop and the lease runs out
    /// as designed.
    async fn holding_lease<T>(&self, task_id: &str, attempt: u32, work: impl Future<Output = T>) -> T {
        let lease_ms = self.config.submitter.lease_ms;
        let every = Duration::from_millis((lease_ms / 3).max(1));
        let mut renew_at = tokio::time::Instant::now() + every;
        tokio::pin!(work);
        loop {
            tokio::select! {
                done = &mut work => return done,
                () = tokio::time::sleep_until(renew_at) => {
                    match self.store.renew_lease(task_id, attempt, now_ms() + lease_ms).await {
                        Ok(true) => tracing::debug!(attempt, "lease renewed while the create waits"),
                        // Taken over or cancelled: the create's result is fenced by the attempt when recorded.
                        Ok(false) => tracing::info!(attempt, "lease lost while the create waits"),
                        Err(e) => tracing::warn!(error = %e, "renewing the lease failed"),
                    }
                    renew_at += every;
                }
            }
        }
    }

    /// The signed URL the provider should call back for this attempt, when callbacks are configured (else the
    /// provider is polled).
    fn webhook_url(&self, provider: ProviderName, task_id: &str, attempt: u32) -> Option<String> {
        let p = &self.config.provider;
        match (&p.callback_base_url, &p.callback_secret) {
            (Some(base), Some(secret)) => Some(callback::url(
                base,
                provider.as_str(),
                task_id,
                attempt,
                secret.expose(),
            )),
            _ => None,
        }
    }

    /// Records the remote id. The provider has the task now, so a Redis outage must not lose it (a retry would
    /// create a second remote task): keep trying until Redis answers, while the task's lease lasts.
    async fn record_remote(
        &self,
        task_id: &str,
        attempt: u32,
        remote: (ProviderName, &str),
        now: u64,
        first_poll: u64,
    ) -> anyhow::Result<bool> {
        let give_up_at = now + self.config.submitter.lease_ms;
        let started = Started::new(task_id, attempt, remote, first_poll);
        let partition = self.store.partition_of_task(task_id)?;
        loop {
            match self.started.call(partition, started.clone()).await {
                Ok(applied) => return Ok(applied),
                Err(e @ StoreError::Redis(_)) if now_ms() < give_up_at => {
                    tracing::warn!(error = %e, "recording the remote task failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A create failed: schedule a retry when the policy allows one, else fail the task.
    async fn failed_create(
        &self,
        task_id: &str,
        attempt: u32,
        provider: ProviderName,
        error: &ProviderError,
    ) -> anyhow::Result<()> {
        let now = now_ms();
        match outcome::decide(&self.config.retry, error, attempt) {
            Decision::RetryAfter(wait) => {
                if let Some(reason) = outcome::retry_reason(error) {
                    metrics().task_retries.add(
                        1,
                        &[
                            KeyValue::new("gantry.provider", provider.as_str()),
                            KeyValue::new("gantry.retry.reason", reason),
                        ],
                    );
                }
                let due = now + u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                tracing::warn!(error = %error, attempt, retry_in_ms = due - now, "provider create failed; retry scheduled");
                self.store
                    .retry_later(task_id, attempt, due, &outcome::public_message(error), now)
                    .await?;
            }
            Decision::GiveUp => {
                tracing::warn!(error = %error, attempt, "provider create failed for good");
                self.store
                    .finish_task(task_id, Some(attempt), &outcome::given_up(error), now)
                    .await?;
            }
        }
        Ok(())
    }
}
