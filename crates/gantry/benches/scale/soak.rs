//! `just soak`: does Redis give its memory back? 200,000 tasks go through the stack at a steady rate for a few
//! minutes with `retention.completed_secs = 5`; Redis's `used_memory` is printed every 10 s; at the end, once
//! every batch settled and retention removed every batch hash (waited for with a deadline), `used_memory` must be
//! within 10 % of what it was at the start, else the soak fails. The start is taken after a warm-up batch per
//! tenant went through and expired, so fixed costs of a running deployment (Lua scripts loaded, ~110 KB; client
//! buffers; the streams' consumer groups) are in it. At the end the soak prints `MEMORY STATS` and the keys left by
//! kind.
//!
//! Shape: **50 batches × 4,000 tasks**, one batch every 4 s (SOAK_B, SOAK_K, SOAK_RATE in batches/s). Few, big
//! batches on purpose: what must stay is per batch, not per task. Each tenant's credit ledger is kept for ever by
//! design, three entries per batch (reservation, charge, refund), about 1.9 KB per batch as `MEMORY USAGE` counts
//! it: 200 × 1,000 leaves ~370 KB of ledger, about 20 % of a ~2 MB warm instance, and fails for a reason that is
//! not a leak; 50 × 4,000 leaves ~95 KB. Everything per task (task hashes, stream entries, schedules, events) must
//! be gone.

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
    let b: usize = knob("SOAK_B", 50)?;
    let k: usize = knob("SOAK_K", 4000)?;
    let rate: f64 = knob("SOAK_RATE", 0.25)?;
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
    // Warm up: every script in Redis's script cache (a fixed ~130 KB, or scripts first used late in the run, e.g.
    // by the sweeper, would count as growth), then one small batch per tenant through the whole pipeline and out
    // again through retention, so the start figure already holds what any running deployment holds (scripts
    // loaded, streams and groups in use, client buffers) and the comparison is about what the tasks leave behind.
    gantry_core::Store::connect(
        &stack.redis.url(),
        &stack.config.redis.key_prefix,
        stack.config.redis.partitions,
    )
    .await?
    .load_scripts()
    .await
    .context("loading the scripts")?;
    let sweep = Duration::from_millis(stack.config.retention.interval_ms);
    let mut warm = Vec::with_capacity(TENANTS);
    for (t, tenant) in tenants.iter().enumerate() {
        let body = serde_json::to_vec(&workload::batch_body(b + t, 10))?;
        warm.push(workload::submit(&http, &stack.gateway, tenant, b + t, body).await?);
    }
    let warm_deadline = Instant::now() + Duration::from_secs(retention + 60) + sweep;
    anyhow::ensure!(
        wait_expired(&mut probe, &stack.keys, &warm, warm_deadline, |_| {}).await?,
        "the warm-up batches did not expire within retention + 60 s"
    );
    // The slow log (`slowlog-max-len` entries, each holding up to 32 arguments of a command slower than 10 ms) is a
    // bounded diagnostic buffer, not data: a 4,000-task `create_batch` lands in it, and its ~200 KB would read as
    // growth. Both figures are taken with it empty.
    let start = used_memory_without_slowlog(&mut probe).await?.1;
    print_leftovers(&mut probe).await?;
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
        let sample = probe.open_batches_and_memory().await?;
        let (open, used) = (sample.open, sample.used_memory);
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
    let (with_slowlog, end) = used_memory_without_slowlog(&mut probe).await?;
    println!(
        "soak: used_memory {:.3} MB with the slow log, {:.3} MB once it is reset",
        with_slowlog / MB,
        end / MB
    );
    print_leftovers(&mut probe).await?;
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

/// `used_memory` as it is, then after `SLOWLOG RESET`.
async fn used_memory_without_slowlog(probe: &mut Probe) -> anyhow::Result<(f64, f64)> {
    let before = probe.info("memory").await?.get("used_memory");
    let () = redis::cmd("SLOWLOG")
        .arg("RESET")
        .query_async(probe.conn())
        .await?;
    let after = probe.info("memory").await?.get("used_memory");
    Ok((before, after))
}

/// What Redis holds: `MEMORY STATS` overheads and the biggest keys by exact `MEMORY USAGE` (grouped by their name
/// with ids taken out), to tell a leak from what is kept by design.
async fn print_leftovers(probe: &mut Probe) -> anyhow::Result<()> {
    let stats: Vec<redis::Value> = redis::cmd("MEMORY")
        .arg("STATS")
        .query_async(probe.conn())
        .await?;
    let mut line = String::from("soak: memory stats:");
    for pair in stats.chunks(2) {
        let (Ok(name), Ok(value)) = (
            redis::from_redis_value::<String>(pair[0].clone()),
            redis::from_redis_value::<i64>(pair.get(1).cloned().unwrap_or(redis::Value::Nil)),
        ) else {
            continue;
        };
        if value >= 1024 && !name.ends_with(".count") && name != "peak.allocated" {
            line += &format!(" {name}={:.0}KB", value as f64 / 1024.0);
        }
    }
    println!("{line}");
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(probe.conn()).await?;
    let mut groups: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for key in &keys {
        let bytes: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .arg("SAMPLES")
            .arg(0)
            .query_async(probe.conn())
            .await?;
        let shape: String = key
            .split(':')
            .map(|part| {
                if part.contains('_') && part.len() > 20 {
                    "*"
                } else {
                    part
                }
            })
            .collect::<Vec<_>>()
            .join(":");
        let entry = groups.entry(shape).or_default();
        entry.0 += 1;
        entry.1 += bytes.unwrap_or(0);
    }
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups.sort_by_key(|(_, (_, bytes))| std::cmp::Reverse(*bytes));
    println!("soak: {} keys left; by kind (keys, KB):", keys.len());
    for (shape, (count, bytes)) in groups.iter().take(12) {
        println!("soak:   {shape:<48} {count:>6} {:>9.1}", *bytes as f64 / 1024.0);
    }
    Ok(())
}
