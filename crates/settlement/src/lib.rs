//! Settlement: once every task of a batch is terminal, charges the succeeded tasks and refunds the rest,
//! exactly once. Both steps are idempotent (the tenant step is keyed by batch id, the batch step checks the batch
//! is still `settling`), so a message delivered twice changes nothing the second time.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use gantry_core::{
    consumer::{self, Consumer, ConsumerOptions, Delivery},
    domain::TaskStatus,
    messages::Message,
    model::now_ms,
    recovery, retention,
    service::{self, Limits},
    store::{BatchFigures, ScheduleKind, Settlement, SettlementInput, StreamKind},
    Config, Store,
};
use gantry_telemetry::{
    context,
    metrics::{count_dead_letters, metrics, record_stream, seconds_between},
    KeyValue,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The consumer group of the settle streams.
pub const GROUP: &str = "settlement";

/// Runs settlement, and the recovery sweep beside it, until `shutdown`.
pub async fn run(config: &Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let store = Store::connect_when_ready(config, &shutdown).await?;
    let streams = (0..store.keys().partitions())
        .map(|p| store.keys().settle_stream(p))
        .collect();
    let options = ConsumerOptions {
        count: 32,
        block: Duration::from_millis(config.settlement.block_ms),
        claim_idle: Duration::from_millis(config.streams.claim_idle_ms),
    };
    let mut consumer = Consumer::join(&store, GROUP, streams, options)
        .await
        .context("joining the settle streams")?;
    tracing::info!(consumer = consumer.name(), "settlement started");
    let sweeper = tokio::spawn(sweep(store.clone(), config.clone(), shutdown.clone()));
    let retainer = tokio::spawn(retain(store.clone(), config.clone(), shutdown.clone()));
    let sampler = tokio::spawn(sample(store.clone(), config.clone(), shutdown.clone()));
    let limits = Limits {
        // Batches settle independently (each step is keyed by batch id), so a duplicate message running beside
        // the first changes nothing.
        concurrency: config.settlement.concurrency,
        grace: Duration::from_millis(config.shutdown.grace_ms),
    };
    let shared = Arc::new((store, config.clone()));
    service::run(&mut consumer, limits, &shutdown, move |delivery| {
        let shared = shared.clone();
        async move {
            let (store, config) = &*shared;
            handle(store, config, &delivery).await
        }
    })
    .await;
    consumer.leave().await;
    let _ = sweeper.await;
    let _ = retainer.await;
    let _ = sampler.await;
    tracing::info!("settlement stopped");
    Ok(())
}

/// Every `sweeper.interval_ms`, finishes what a crash could have stranded (see `gantry_core::recovery`). What the sweep counted on the way feeds
/// the open-batch and reserved-credit gauges; the task-state gauge is sampled apart (see [`tasks_in_flight`]).
async fn sweep(store: Store, config: Config, shutdown: CancellationToken) {
    let period = Duration::from_millis(config.sweeper.interval_ms);
    let options = recovery::SweepOptions::from_config(&config);
    service::every(period, &shutdown, || async {
        match recovery::sweep(&store, now_ms(), &options).await {
            Ok(report) => {
                if report.repaired() {
                    tracing::warn!(?report, "recovery finished stranded work");
                }
                let m = metrics();
                m.batches_open.record(report.open_batches, &[]);
                m.credits_reserved.record(report.credits_reserved, &[]);
            }
            Err(e) => tracing::warn!(error = %e, "recovery sweep failed; trying again later"),
        }
    })
    .await;
}

/// Every `retention.interval_ms`, removes what retention no longer keeps and trims the consumed stream entries
/// (see `gantry_core::retention`).
async fn retain(store: Store, config: Config, shutdown: CancellationToken) {
    let period = Duration::from_millis(config.retention.interval_ms);
    let completed_ms = retention::completed_ms(&config);
    service::every(period, &shutdown, || async {
        match retention::run(&store, now_ms(), completed_ms).await {
            Ok(report) if report != retention::RetentionReport::default() => {
                tracing::debug!(
                    batches = report.batches_expired,
                    stream_entries = report.stream_entries_trimmed,
                    "retention removed settled batches and consumed stream entries"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention step failed; trying again later"),
        }
    })
    .await;
}

/// Every `telemetry.sample_interval_ms`, the backlog of the settle streams, the size of the dead letters and the
/// tasks in flight by state.
async fn sample(store: Store, config: Config, shutdown: CancellationToken) {
    let period = Duration::from_millis(config.telemetry.sample_interval_ms);
    service::every(period, &shutdown, || async {
        for kind in [StreamKind::Settle, StreamKind::Dead] {
            match store.stream_stats(kind, GROUP).await {
                Ok(s) => record_stream(kind.as_str(), GROUP, s.length, s.lag, s.pending),
                Err(e) => tracing::debug!(error = %e, "sampling the streams failed"),
            }
        }
        match tasks_in_flight(&store, now_ms()).await {
            Ok(states) => {
                for (state, count) in states {
                    metrics()
                        .tasks
                        .record(count, &[KeyValue::new("gantry.task.state", state.as_str())]);
                }
            }
            Err(e) => tracing::debug!(error = %e, "sampling the tasks in flight failed"),
        }
    })
    .await;
}

/// The consumer group of the submit streams (`gantry_submitter::GROUP`).
const SUBMIT_GROUP: &str = "submitter";

/// Tasks in flight by state, from what costs a few commands per partition however many batches are open (counting
/// the tasks of every open batch would read all open work): `queued` = submit messages not yet delivered plus
/// creates waiting to retry, `submitting` = submit messages delivered and not yet acknowledged (a submitter acks
/// once the provider's answer is recorded), `running` = tasks on the poll schedule. `running` is exact; the other
/// two are close estimates (a re-sent message counts twice, a chain shot waiting for its predecessor has no
/// message yet).
async fn tasks_in_flight(store: &Store, now: u64) -> gantry_core::store::Result<[(TaskStatus, u64); 3]> {
    let submit = store.stream_stats(StreamKind::Submit, SUBMIT_GROUP).await?;
    let (retrying, _) = store.schedule_stats(ScheduleKind::Retries, now).await?;
    let (polled, _) = store.schedule_stats(ScheduleKind::Polls, now).await?;
    Ok([
        (TaskStatus::Queued, submit.lag + retrying),
        (TaskStatus::Submitting, submit.pending),
        (TaskStatus::Running, polled),
    ])
}

async fn handle(store: &Store, config: &Config, delivery: &Delivery) {
    if let Some(reason) = consumer::poison(delivery, config.streams.max_deliveries) {
        // The batch stays `settling`; the sweeper sends it to settlement again.
        tracing::error!(id = %delivery.id, reason, "settle message moved to the dead letters");
        count_dead_letters(GROUP, 1);
        if let Err(e) = store
            .dead_letter(GROUP, delivery, &reason, config.streams.dead_letter_maxlen)
            .await
        {
            tracing::error!(error = %e, "moving a message to the dead letters failed");
        }
        return;
    }
    let done = match &delivery.message {
        Ok(Message::SettleBatch {
            batch_id,
            traceparent,
        }) => {
            let span = tracing::info_span!(
                "settle",
                batch.id = %batch_id,
                tenant.id = tracing::field::Empty,
                messaging.message.id = %delivery.id,
            );
            context::set_parent(&span, traceparent.as_deref());
            settle(store, batch_id, delivery_ms(&delivery.id))
                .instrument(span)
                .await
        }
        Ok(other) => {
            tracing::error!(message = ?other, "unexpected message on a settle stream");
            Ok(())
        }
        Err(_) => Ok(()),
    };
    match done {
        Ok(()) => {
            if let Err(e) = store.ack(&delivery.stream, GROUP, &delivery.id).await {
                tracing::warn!(error = %e, "ack failed; the message will be delivered again");
            }
        }
        Err(e) => tracing::error!(error = %e, "settlement failed; left pending for redelivery"),
    }
}

/// When a stream entry was added (ms), from its id (`<ms>-<seq>`).
fn delivery_ms(id: &str) -> u64 {
    gantry_core::ids::parse_stream_id(id).map_or(0, |(ms, _)| ms)
}

/// Settles one batch. `ready_at` is when its last task became terminal (the settle message's time, in ms).
async fn settle(store: &Store, batch_id: &str, ready_at: u64) -> anyhow::Result<()> {
    let Some(SettlementInput {
        tenant_id,
        status,
        cost,
        cost_succeeded,
    }) = store.settlement_input(batch_id).await?
    else {
        tracing::error!("settle message for a batch that does not exist");
        return Ok(());
    };
    tracing::Span::current().record("tenant.id", tenant_id.as_str());
    if !status.awaits_settlement() {
        tracing::debug!(%status, "batch is not settling; duplicate message ignored");
        return Ok(());
    }
    let (charged, refunded) = match store.settle(&tenant_id, batch_id, cost_succeeded).await? {
        Settlement::Settled { charged, refunded } => {
            tracing::info!(tenant.id = %tenant_id, charged, refunded, "batch settled");
            metrics().credits_charged.add(charged, &[]);
            metrics().credits_refunded.add(refunded, &[]);
            (charged, refunded)
        }
        Settlement::AlreadySettled { charged, refunded } => (charged, refunded),
        Settlement::NoReservation => {
            tracing::error!(tenant.id = %tenant_id, cost, "no reservation for this batch; nothing to settle");
            (0, 0)
        }
    };
    let now = now_ms();
    if store.settle_finalize(batch_id, charged, refunded, now).await? {
        metrics()
            .settlement_delay
            .record(seconds_between(ready_at, now), &[]);
        match store.batch_figures(batch_id).await {
            Ok(Some(figures)) => record_batch(&figures, now),
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "reading the batch's figures failed"),
        }
    }
    Ok(())
}

/// The metrics of a batch that has just been settled: its duration, and each task's outcome, status calls and
/// time in each state.
fn record_batch(figures: &BatchFigures, now: u64) {
    let m = metrics();
    m.batch_duration.record(
        seconds_between(figures.created_at, now),
        &[KeyValue::new("gantry.batch.mode", figures.mode.as_str())],
    );
    for task in &figures.tasks {
        let model = KeyValue::new("gantry.model", task.model.as_str());
        m.tasks_finished.add(
            1,
            &[
                KeyValue::new("gantry.task.state", task.status.as_str()),
                model.clone(),
            ],
        );
        let state = |status: TaskStatus| [KeyValue::new("gantry.task.state", status.as_str()), model.clone()];
        if task.claimed_at > 0 {
            m.task_state_duration.record(
                seconds_between(task.created_at, task.claimed_at),
                &state(TaskStatus::Queued),
            );
        }
        if task.submitted_at > 0 {
            m.task_state_duration.record(
                seconds_between(task.claimed_at, task.submitted_at),
                &state(TaskStatus::Submitting),
            );
            m.task_state_duration.record(
                seconds_between(task.submitted_at, task.finished_at),
                &state(TaskStatus::Running),
            );
            m.task_polls.record(task.polls, std::slice::from_ref(&model));
        }
    }
}
