//! `just soak`: does Redis give its memory back? 200,000 tasks go through the stack at a steady rate for a few
//! minutes with `retention.completed_secs = 5`; Redis's `used_memory` is printed every 10 s; at the end, once
//! every batch settled and retention removed every batch hash (waited for with a deadline), `used_memory` must be
//! within 10 % of what it was at the start, else the soak fails.
//!
//! Shape: **200 batches × 1,000 tasks** (SOAK_B, SOAK_K), one batch a second (SOAK_RATE, batches/s). Few, big
//! batches on purpose: what must stay forever is per batch, not per task. The tenants' ledgers are kept by design
//! (about three entries per batch: reservation, charge, refund), as are the per-tenant settlement records that make
//! settling exactly-once; 200 batches leave a few tens of KB of them, within the 10 % of a ~1.5 MB empty instance,
//! whereas 2,000 × 100 would leave ten times as much and fail the check for a reason that is not a leak. Everything
//! per task (task hashes, stream entries, schedules, events) must be gone.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use tokio::sync::Semaphore;

use crate::{
    knob,
    probe::Probe,
    run::{wait_expired, wait_for_groups},
    stack::{Stack, StackOptions},
    workload::{self, Accepted, TENANTS},
};

const MB: f64 = 1024.0 * 1024.0;

pub async fn run() -> anyhow::Result<()> {
    let b: usize = knob("SOAK_B", 200)?;
    let k: usize = knob("SOAK_K", 1000)?;
    let rate: f64 = knob("SOAK_RATE", 1.0)?;
    let retention: u64 = knob("RETENTION_SECS", 5)?;
    let inflight: usize = knob("INFLIGHT", 32)?;
    anyhow::ensure!(
        rate > 0.0 && retention > 0,
        "SOAK_RATE and RETENTION_SECS must be above 0"
    );
    let mut stack = Stack::start(&StackOptions {
        max_tasks_per_batch: k,
        retention_secs: Some(retention),
    })
    .await?;
    let result = soak(&mut stack, b, k, rate, retention, inflight).await;
    stack.stop().await;
    result
}

async fn soak(
    stack: &mut Stack,
    b: usize,
    k: usize,
    rate: f64,
    retention: u64,
    inflight: usize,
) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let credits = (b.div_ceil(TENANTS) * k) as u64 * stack.config.prices.veo31_fast * 2 + 1000;
    let tenants = workload::create_tenants(&http, &stack.admin, &stack.admin_token, credits).await?;
    let mut probe = Probe::connect(&stack.redis.url(), stack.keys.clone()).await?;
    wait_for_groups(&mut probe, stack).await?;
    let start = probe.info("memory").await?.get("used_memory");
    println!(
        "soak: {b} batches x {k} tasks at {rate} batches/s, retention {retention} s; start used_memory {:.3} MB",
        start / MB
    );

    // Submit on a fixed schedule, INFLIGHT at most at once.
    let accepted_count = Arc::new(AtomicUsize::new(0));
    let submitter = {
        let (http, gateway, count) = (http.clone(), stack.gateway.clone(), accepted_count.clone());
        let tenants = tenants.clone();
        tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(inflight.max(1)));
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            let mut pending = Vec::with_capacity(b);
            for i in 0..b {
                tick.tick().await;
                let permit = permits.clone().acquire_owned().await?;
                let (http, gateway, tenant, count) = (
                    http.clone(),
                    gateway.clone(),
                    tenants[i % TENANTS].clone(),
                    count.clone(),
                );
                pending.push(tokio::spawn(async move {
                    let body = serde_json::to_vec(&workload::batch_body(i, k))?;
                    let batch = workload::submit(&http, &gateway, &tenant, i, body).await;
                    drop(permit);
                    count.fetch_add(1, Ordering::SeqCst);
                    batch
                }));
            }
            let mut accepted: Vec<Accepted> = Vec::with_capacity(b);
            for task in pending {
                accepted.push(task.await??);
            }
            anyhow::Ok(accepted)
        })
    };

    // Print used_memory every 10 s until everything settled.
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(b as f64 / rate) + Duration::from_secs(600);
    let mut next_line = started;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (open, used) = probe.open_batches_and_memory().await?;
        let accepted = accepted_count.load(Ordering::SeqCst);
        if Instant::now() >= next_line {
            next_line += Duration::from_secs(10);
            println!(
                "soak: {:4.0} s  used_memory {:8.3} MB  accepted {accepted}/{b}  open {open}",
                started.elapsed().as_secs_f64(),
                used / MB
            );
        }
        if accepted == b && open == 0 {
            break;
        }
        if submitter.is_finished() && accepted < b {
            submitter.await??;
            bail!("the submitter stopped early");
        }
        if Instant::now() > deadline {
            bail!("{open} batches still open after {:?}", started.elapsed());
        }
        stack.check_alive()?;
    }
    let accepted = submitter.await.context("the submitter")??;
    println!(
        "soak: every batch settled after {:.1} s; waiting for retention",
        started.elapsed().as_secs_f64()
    );

    // Wait until retention removed every batch hash (and Redis reclaimed them), printing every 10 s.
    let mut next_line = Instant::now() + Duration::from_secs(10);
    let sweep = Duration::from_millis(stack.config.sweeper.interval_ms);
    let expire_deadline = Instant::now() + Duration::from_secs(retention + 60) + sweep;
    let expired = wait_expired(&mut probe, &stack.keys, &accepted, expire_deadline, |used| {
        if Instant::now() >= next_line {
            next_line += Duration::from_secs(10);
            println!(
                "soak: {:4.0} s  used_memory {:8.3} MB  (retention)",
                started.elapsed().as_secs_f64(),
                used / MB
            );
        }
    })
    .await?;
    let end = probe.info("memory").await?.get("used_memory");
    let verified = stack
        .command(&["admin", "verify-ledger"])
        .output()
        .await?
        .status
        .success();
    let within = (end - start).abs() <= 0.10 * start;
    println!(
        "soak: start used_memory {:.3} MB, end {:.3} MB ({:+.1} %): {}; batch hashes expired: {expired}; ledger verified: {verified}",
        start / MB,
        end / MB,
        (end - start) / start * 100.0,
        if within { "within 10 %" } else { "NOT within 10 %" },
    );
    if !(within && expired && verified) {
        bail!("the soak failed");
    }
    Ok(())
}
