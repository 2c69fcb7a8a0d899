//! Settlement: once every task of a batch is terminal, charges the succeeded tasks and refunds the rest,
//! exactly once. Both steps are idempotent (the tenant step is keyed by batch id, the batch step checks the batch
//! is still `settling`), so a message delivered twice changes nothing the second time.

use std::time::Duration;

use anyhow::Context;
use gantry_core::{
    consumer::{self, Consumer, ConsumerOptions, Delivery},
    messages::Message,
    model::now_ms,
    store::Settlement,
    Config, Store,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The consumer group of the settle streams.
pub const GROUP: &str = "settlement";

/// Runs settlement until `shutdown`.
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
    while !shutdown.is_cancelled() {
        let Some(deliveries) = consumer.next_until(&shutdown).await else {
            break;
        };
        for delivery in deliveries {
            handle(&store, config, &delivery).await;
        }
    }
    consumer.leave().await;
    let _ = sweeper.await;
    tracing::info!("settlement stopped");
    Ok(())
}

/// Every `sweeper.interval_ms`, finishes what a crash could have stranded (see `Store::sweep`).
async fn sweep(store: Store, config: Config, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_millis(config.sweeper.interval_ms));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        match store.sweep(now_ms(), config.sweeper.reservation_grace_ms).await {
            Ok(report)
                if report.settlements_resent
                    + report.submits_resent
                    + report.reservations_released
                    + report.cancels_finished
                    > 0 =>
            {
                tracing::warn!(?report, "sweeper finished stranded work");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweep failed; trying again later"),
        }
    }
}

async fn handle(store: &Store, config: &Config, delivery: &Delivery) {
    if let Some(reason) = consumer::poison(delivery, config.streams.max_deliveries) {
        // The batch stays `settling`; the sweeper sends it to settlement again.
        tracing::error!(id = %delivery.id, reason, "settle message moved to the dead letters");
        if let Err(e) = store
            .dead_letter(GROUP, delivery, &reason, config.streams.dead_letter_maxlen)
            .await
        {
            tracing::error!(error = %e, "moving a message to the dead letters failed");
        }
        return;
    }
    let done = match &delivery.message {
        Ok(Message::SettleBatch { batch_id }) => {
            settle(store, batch_id)
                .instrument(tracing::info_span!("settle", batch.id = %batch_id))
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

async fn settle(store: &Store, batch_id: &str) -> anyhow::Result<()> {
    let Some((tenant_id, status, cost, succeeded_cost)) = store.settlement_input(batch_id).await? else {
        tracing::error!("settle message for a batch that does not exist");
        return Ok(());
    };
    if status != "settling" && status != "cancelling" {
        tracing::debug!(status, "batch is not settling; duplicate message ignored");
        return Ok(());
    }
    let (charged, refunded) = match store.settle(&tenant_id, batch_id, succeeded_cost).await? {
        Settlement::Settled { charged, refunded } => {
            tracing::info!(tenant.id = %tenant_id, charged, refunded, "batch settled");
            (charged, refunded)
        }
        Settlement::AlreadySettled { charged, refunded } => (charged, refunded),
        Settlement::NoReservation => {
            tracing::error!(tenant.id = %tenant_id, cost, "no reservation for this batch; nothing to settle");
            (0, 0)
        }
    };
    store
        .settle_finalize(batch_id, charged, refunded, now_ms())
        .await?;
    Ok(())
}
