//! One run of one shape: start the stack, provision tenants, submit B batches with INFLIGHT requests in flight,
//! watch the open-batch count until every batch settled, then read back, check and summarise as one JSON line.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use futures::{StreamExt, TryStreamExt};
use gantry_core::keys::Keys;
use serde_json::{json, Map, Value};

use crate::{
    outcome::{self, Checks},
    probe::{command_delta, Probe, Sample},
    stack::{self, Stack, StackOptions},
    stages,
    summary::{ordered, round3, Ordered},
    workload::{self, Accepted, TENANTS},
};

/// What one run does.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub b: usize,
    pub k: usize,
    /// `POST /v1/batches` requests in flight.
    pub inflight: usize,
    /// `retention.completed_secs` given to the services (`None`: the product's default).
    pub retention_secs: Option<u64>,
    /// A run that takes longer than this fails.
    pub timeout: Duration,
}

impl RunOptions {
    pub fn shape(&self) -> String {
        format!("{}x{}", self.b, self.k)
    }
}

/// What the watcher saw while the batches went through.
#[derive(Debug, Default)]
struct Watch {
    /// The most tasks accepted and not yet settled at one sample.
    peak_in_flight: u64,
    /// The sample with the highest `used_memory`.
    peak_sample: Sample,
}

/// Runs one shape; returns its JSON summary (with `ok`).
pub async fn run(options: &RunOptions) -> anyhow::Result<Ordered> {
    let (b, k) = (options.b, options.k);
    let tasks = (b * k) as u64;
    let mut stack = Stack::start(&StackOptions {
        max_tasks_per_batch: k,
        retention_secs: options.retention_secs,
    })
    .await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(options.inflight.max(1))
        .build()?;
    let price = stack.config.prices.veo31_fast;
    let credits = (b.div_ceil(TENANTS) * k) as u64 * price * 2 + 1000;
    let tenants = workload::create_tenants(&http, &stack.admin, &stack.admin_token, credits).await?;
    let mut probe = Probe::connect(&stack.redis.url(), stack.keys.clone()).await?;
    wait_for_groups(&mut probe, &stack).await?;
    // The request bodies are made up front, as the peer's producer has its jobs' data at hand: the measured
    // interval is the system's work, not the load generator's JSON.
    let bodies = (0..b)
        .map(|b| serde_json::to_vec(&workload::batch_body(b, k)))
        .collect::<Result<Vec<_>, _>>()?;

    // ---- the measured interval -------------------------------------------------------------------------------
    let rt_before = stack.round_trips(&http).await;
    let cpu_before = stack.cpu_seconds();
    let harness_cpu_before = stack::process_cpu_seconds(std::process::id());
    let before = probe.info("all").await?;
    probe.reset_tally();

    let accepted_count = Arc::new(AtomicUsize::new(0));
    let submitting = Arc::new(AtomicBool::new(true));
    let watcher = tokio::spawn(watch(
        probe,
        options.clone(),
        accepted_count.clone(),
        submitting.clone(),
    ));
    let submitted = submit_all(&http, &stack.gateway, &tenants, options, bodies, &accepted_count).await;
    submitting.store(false, Ordering::SeqCst);
    let accepted = match submitted {
        Ok(accepted) => accepted,
        Err(e) => {
            watcher.abort();
            stack.stop().await;
            return Err(e);
        }
    };
    let (mut probe, watched) = watcher.await.context("the watcher")??;
    let own = probe.tally().clone();
    let after = probe.info("all").await?;
    let cpu_after = stack.cpu_seconds();
    let harness_cpu_after = stack::process_cpu_seconds(std::process::id());
    let rt_after = stack.round_trips(&http).await;
    eprintln!();

    // ---- read back and check ---------------------------------------------------------------------------------
    let mut accepted = accepted;
    accepted.sort_by_key(|a| a.b);
    // First the task times, before retention removes them.
    let stages = stages::read_stages(probe.conn(), &stack.keys, &accepted, k).await?;
    let sim: Value = http
        .get(format!("{}/sim/stats", stack.sim))
        .send()
        .await?
        .json()
        .await?;
    let settled = outcome::read_settled(probe.conn(), &stack.keys, &tenants, &accepted).await?;
    let verify = stack.command(&["admin", "verify-ledger"]).output().await?;
    let services_alive = stack.check_alive().is_ok();
    let (mem_after_retention, retention_expired) =
        after_retention(&mut probe, &stack, &accepted, options).await?;
    stack.stop().await;

    let (once, split, odd) = outcome::batch_checks(k, price, &accepted, &settled);
    for line in &odd {
        eprintln!("unexpected: {line}");
    }
    let creates = sim["creates"].as_u64().unwrap_or(0);
    let checks = Checks {
        every_batch_accepted_and_settled: accepted.len() == b,
        settled_exactly_once_and_completed: once,
        succeeded_failed_split: split,
        one_provider_create_per_task: creates == tasks && sim["duplicate_live_creates"].as_u64() == Some(0),
        ledger_verified: verify.status.success(),
        services_alive,
    };
    if !checks.ledger_verified {
        eprintln!("verify-ledger: {}", String::from_utf8_lossy(&verify.stdout));
    }

    // ---- figures ---------------------------------------------------------------------------------------------
    let first_t0 = accepted.iter().map(|a| a.t0_ms).min().unwrap_or(0);
    let last_settled = settled.iter().filter_map(|s| s.at_ms).max().unwrap_or(first_t0);
    let wall_s = (last_settled.saturating_sub(first_t0)) as f64 / 1e3;
    let mut latencies: Vec<u64> = accepted
        .iter()
        .zip(&settled)
        .filter_map(|(a, s)| Some(s.at_ms?.saturating_sub(a.t0_ms)))
        .collect();
    latencies.sort_unstable();
    let spent = command_delta(&before, &after, &own);
    let per_task = |n: f64| round3(n / tasks as f64);
    let total_cmds: u64 = spent.values().sum();
    let scripts = spent.get("evalsha").copied().unwrap_or(0) + spent.get("eval").copied().unwrap_or(0);
    let mut top: Vec<(&String, &u64)> = spent.iter().collect();
    top.sort_by_key(|(_, calls)| std::cmp::Reverse(**calls));
    let round_trips = round_trip_delta(&rt_before, &rt_after);
    let redis_cpu = after.cpu_seconds() - before.cpu_seconds();
    let start_mem = before.get("used_memory");
    let peak_mem = after.get("used_memory_peak").max(watched.peak_sample.used_memory);
    let mut cpu = Map::new();
    for ((role, b0), (_, b1)) in cpu_before.iter().zip(&cpu_after) {
        cpu.insert((*role).to_owned(), json!(round3(b1 - b0)));
    }
    cpu.insert("redis".into(), json!(round3(redis_cpu)));
    if let (Some(h0), Some(h1)) = (harness_cpu_before, harness_cpu_after) {
        cpu.insert("harness".into(), json!(round3(h1 - h0)));
    }
    const MB: f64 = 1024.0 * 1024.0;
    let ok = checks.all();
    Ok(ordered![
        "system" => "gantry",
        "shape" => options.shape(),
        "ok" => ok,
        "B" => b,
        "K" => k,
        "tasks" => tasks,
        "inflight" => options.inflight,
        "redis" => before.version,
        "wall_s" => round3(wall_s),
        "submit_s" => round3(accepted.iter().map(|a| a.t0_ms).max().unwrap_or(0).saturating_sub(first_t0) as f64 / 1e3),
        "tasks_per_s" => (tasks as f64 / wall_s).round(),
        "batches_per_s" => ((b as f64 / wall_s) * 10.0).round() / 10.0,
        "lat_p50_ms" => outcome::percentile(&latencies, 50.0),
        "lat_p99_ms" => outcome::percentile(&latencies, 99.0),
        "lat_max_ms" => latencies.last(),
        "lat_from_ledger" => settled.iter().filter(|s| s.from_ledger).count(),
        "stages_p50_p99_ms" => stages,
        "redis_cmds_per_task" => per_task(total_cmds as f64),
        "redis_cmds_top8_per_task" => top.iter().take(8).map(|(n, c)| json!([n, per_task(**c as f64)])).collect::<Vec<_>>(),
        "redis_cmds_all_per_task" => top.iter().map(|(n, c)| ((*n).clone(), json!(per_task(**c as f64)))).collect::<Map<_, _>>(),
        "scripts_per_task" => per_task(scripts as f64),
        "round_trips_per_task" => round_trips.total.map(per_task),
        "round_trips_by_process_per_task" => round_trips.by_role.iter().map(|(r, v)| ((*r).to_owned(), json!(v.map(per_task)))).collect::<Map<_, _>>(),
        "redis_mem_per_task_inflight_bytes" => held_per_task(&watched.peak_sample, start_mem, options.k),
        "redis_mem_per_open_task_bytes" => ((peak_mem - start_mem) / (watched.peak_in_flight.max(1) as f64)).round(),
        "peak_tasks_in_flight" => watched.peak_in_flight,
        "tasks_open_and_retained_at_memory_peak" => [watched.peak_sample.open * options.k as u64, watched.peak_sample.retained * options.k as u64],
        "redis_mem_per_task_after_retention" => mem_after_retention.map(|m| round3((m - start_mem) / tasks as f64)),
        "retention_secs" => options.retention_secs,
        "retention_expired" => retention_expired,
        "redis_used_memory_start_mb" => round3(start_mem / MB),
        "redis_used_memory_peak_mb" => round3(peak_mem / MB),
        "redis_used_memory_end_mb" => round3(after.get("used_memory") / MB),
        "redis_used_memory_after_retention_mb" => mem_after_retention.map(|m| round3(m / MB)),
        "provider_calls_per_task" => per_task((creates + sim["polls"].as_u64().unwrap_or(0)) as f64),
        "provider_creates_per_task" => per_task(creates as f64),
        "provider_polls_per_task" => per_task(sim["polls"].as_u64().unwrap_or(0) as f64),
        "redis_cpu_us_per_task" => (redis_cpu / tasks as f64 * 1e6).round(),
        "cpu_s" => cpu,
        "submit_retries" => accepted.iter().map(|a| u64::from(a.retries)).sum::<u64>(),
        "tasks_succeeded" => settled.iter().map(|s| s.charged / price.max(1)).sum::<u64>(),
        "tasks_failed" => settled.iter().map(|s| s.refunded / price.max(1)).sum::<u64>(),
        "checks" => checks,
        "unexpected_batches" => odd,
    ])
}

/// Waits until the submitter and settlement consumer groups exist (the workers are up and reading).
pub async fn wait_for_groups(probe: &mut Probe, stack: &Stack) -> anyhow::Result<()> {
    let last = stack.keys.partitions() - 1;
    let streams = [
        (stack.keys.submit_stream(last), "submitter"),
        (stack.keys.settle_stream(last), "settlement"),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    for (stream, group) in streams {
        loop {
            let groups: redis::RedisResult<redis::streams::StreamInfoGroupsReply> = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(&stream)
                .query_async(probe.conn())
                .await;
            if groups.is_ok_and(|g| g.groups.iter().any(|g| g.name == group)) {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "no consumer group {group} on {stream} after 30 s; logs in {}",
                    stack.logs.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Submits every batch of `bodies` (batch `b` is `bodies[b]`), `inflight` requests at a time; batch `b` goes to
/// tenant `b % 16`.
pub async fn submit_all(
    http: &reqwest::Client,
    gateway: &str,
    tenants: &[workload::Tenant],
    options: &RunOptions,
    bodies: Vec<Vec<u8>>,
    accepted: &AtomicUsize,
) -> anyhow::Result<Vec<Accepted>> {
    futures::stream::iter(bodies.into_iter().enumerate())
        .map(|(b, body)| async move {
            let batch = workload::submit(http, gateway, &tenants[b % TENANTS], b, body).await?;
            accepted.fetch_add(1, Ordering::SeqCst);
            anyhow::Ok(batch)
        })
        .buffer_unordered(options.inflight.max(1))
        .try_collect()
        .await
}

/// Redis memory per task held at the sample of highest `used_memory`: over the tasks in flight there plus those of
/// batches settled and not yet expired. A settled task holds at least what it held in flight (all its fields and
/// events), so this is an upper bound of what one task in flight costs; `None` before any task was held.
fn held_per_task(peak: &Sample, start_mem: f64, k: usize) -> Option<f64> {
    let tasks = (peak.open + peak.retained) * k as u64;
    (tasks > 0).then(|| ((peak.used_memory - start_mem) / tasks as f64).round())
}

/// Every 50 ms: open batches and `used_memory` (one round trip), a progress line; returns once every batch was
/// submitted and none is open.
async fn watch(
    mut probe: Probe,
    options: RunOptions,
    accepted: Arc<AtomicUsize>,
    submitting: Arc<AtomicBool>,
) -> anyhow::Result<(Probe, Watch)> {
    let started = Instant::now();
    let mut watched = Watch::default();
    let mut last_line = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        let done_submitting = !submitting.load(Ordering::SeqCst);
        let accepted = accepted.load(Ordering::SeqCst) as u64;
        let sample = probe
            .open_batches_and_memory()
            .await
            .context("counting the open batches")?;
        let (open, used) = (sample.open, sample.used_memory);
        watched.peak_in_flight = watched.peak_in_flight.max(open * options.k as u64);
        if used > watched.peak_sample.used_memory {
            watched.peak_sample = sample;
        }
        if last_line.elapsed() >= Duration::from_millis(500) {
            last_line = Instant::now();
            eprint!(
                "\r[gantry {}] {:5.1} s  accepted {accepted}/{}  settled {}  open {open}  redis {:.1} MB   ",
                options.shape(),
                started.elapsed().as_secs_f64(),
                options.b,
                accepted.saturating_sub(open),
                used / 1048576.0
            );
        }
        if done_submitting && open == 0 {
            return Ok((probe, watched));
        }
        if started.elapsed() > options.timeout {
            bail!("timed out after {:?} with {open} batches open", options.timeout);
        }
    }
}

/// Waits until retention removed every batch hash and Redis reclaimed the expired keys; returns `used_memory`
/// then and whether the hashes did go. Without retention, `used_memory` at once.
async fn after_retention(
    probe: &mut Probe,
    stack: &Stack,
    accepted: &[Accepted],
    options: &RunOptions,
) -> anyhow::Result<(Option<f64>, bool)> {
    let Some(secs) = options.retention_secs.filter(|s| *s > 0) else {
        return Ok((Some(probe.info("memory").await?.get("used_memory")), false));
    };
    // Retention removes batches in the settlement's retention step, every `retention.interval_ms`.
    let sweep = Duration::from_millis(stack.config.retention.interval_ms);
    let deadline = Instant::now() + Duration::from_secs(secs + 10) + sweep;
    let expired = wait_expired(probe, &stack.keys, accepted, deadline, |_| {}).await?;
    Ok((Some(probe.info("memory").await?.get("used_memory")), expired))
}

/// Waits until no batch hash of `accepted` exists and the count of keys with a time to live has settled (Redis
/// reclaims logically expired keys in its expiry cycle), or until `deadline`; calls `each` with `used_memory`
/// about every 500 ms. True when the hashes are gone.
pub async fn wait_expired(
    probe: &mut Probe,
    keys: &Keys,
    accepted: &[Accepted],
    deadline: Instant,
    mut each: impl FnMut(f64),
) -> anyhow::Result<bool> {
    let mut expired = false;
    let mut last_expires = None;
    while Instant::now() < deadline {
        let mut left = 0;
        for chunk in accepted.chunks(1000) {
            let mut exists = redis::cmd("EXISTS");
            for batch in chunk {
                exists.arg(keys.batch(&batch.id));
            }
            left += exists.query_async::<u64>(probe.conn()).await?;
        }
        let info = probe.info("all").await?;
        each(info.get("used_memory"));
        if left == 0 {
            expired = true;
            if last_expires == Some(info.keyspace.1) {
                break;
            }
            last_expires = Some(info.keyspace.1);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(expired)
}

/// Round trips summed over the processes that export the counter.
struct RoundTrips {
    total: Option<f64>,
    by_role: Vec<(&'static str, Option<f64>)>,
}

fn round_trip_delta(
    before: &[(&'static str, Option<f64>)],
    after: &[(&'static str, Option<f64>)],
) -> RoundTrips {
    let by_role: Vec<(&'static str, Option<f64>)> = before
        .iter()
        .zip(after)
        .map(|((role, b0), (_, b1))| (*role, b1.map(|b1| b1 - b0.unwrap_or(0.0))))
        .collect();
    let present: Vec<f64> = by_role.iter().filter_map(|(_, v)| *v).collect();
    RoundTrips {
        total: (!present.is_empty()).then(|| present.iter().sum()),
        by_role,
    }
}
