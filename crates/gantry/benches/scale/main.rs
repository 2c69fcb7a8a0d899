//! `just bench`: Gantry at scale, as separate processes, measured the way the BullMQ peer benchmark
//! (`../shared/bench/bullmq`) measures itself, so the two can be compared line for line.
//!
//! # Workload
//!
//! Each run starts a private `redis-server` (free loopback port, `--save '' --appendonly no`, like the peer's
//! `run.sh`) and one process per service of the release `gantry` binary: `gantry sim`, `gateway`, `submitter`,
//! `poller`, `settlement`. The simulator answers at once (`sim.task_duration_ms = 0`), the poller polls a task
//! as soon as it is running (expected durations 0, intervals 50 ms), the keys live in one partition (one
//! standalone Redis, like the peer's), and neither the provider limits nor the tenant rate limit can be the
//! bottleneck (see `stack.rs` for every setting; any `GANTRY__*` variable you set overrides them). 16 tenants are
//! created through the admin API. The harness then submits **B batches of K `veo3.1-fast` tasks** with
//! `POST /v1/batches`, INFLIGHT (32) requests in flight; batch `b` belongs to tenant
//! `b % 16` and task `i` of each batch carries `[sim:fail]` when `i % 10 == 7`, so exactly 10 % of the tasks fail
//! at the provider. Each task is about 300 bytes of JSON, like the peer's payload. Default shapes: 2,000 × 10 and
//! 200 × 100. Batch hashes are kept `retention.completed_secs` = 2 s after they settle (RETENTION_SECS).
//!
//! # What exactly is measured
//!
//! All times are wall-clock milliseconds of processes on the same machine.
//!
//! * **wall_s**: from the harness's clock just before its first `POST /v1/batches`, to the latest settle time over
//!   all batches. A batch's settle time is the `completed_at` the settlement service writes into the batch hash in
//!   the same script that marks it `completed` and takes it off the open-batch index; when retention already
//!   removed the hash, it is the `at` of the batch's `charge` entry in its tenant's ledger, written by the step
//!   just before (`lat_from_ledger` counts those). The gateway and the workers run at the same time.
//! * **tasks_per_s** = B·K / wall_s; **batches_per_s** = B / wall_s.
//! * **lat_p50_ms / lat_p99_ms / lat_max_ms**: per batch, settle time minus the harness's clock just before the
//!   batch's `POST` (the first attempt if a 429/503 was retried). Nearest-rank percentiles over the B batches.
//! * **redis_cmds_per_task**: the delta of `INFO commandstats` between two points, over B·K. The first point is
//!   after every process is up and its consumer groups exist, just before the first submit; the second is when the
//!   harness sees the last batch settled (it looks every 50 ms, so at most ~50 ms of idle workers are included).
//!   The harness's own commands (one `INFO`, and per 50 ms one `ZCARD` per partition plus `INFO memory`) are
//!   subtracted. Redis 7.0 counts every `redis.call` inside a Lua script too, so this is "commands Redis executed".
//!   The periodic gauge sampling of the services (every `telemetry.sample_interval_ms`) is part of the system and
//!   is included. **scripts_per_task** is `evalsha` (+ `eval`) alone: the script calls.
//! * **round_trips_per_task**: the requests the services' Redis clients sent, from each process's Prometheus
//!   counter `gantry_redis_round_trips_total` (the gateway's admin listener, the workers' `telemetry.metrics_listen`)
//!   scraped before and after, summed over processes. `null` when no process exports it. This is the peer's
//!   `client_cmds_per_task`.
//! * **redis_mem_per_task_inflight_bytes**: at the 50 ms sample of highest `used_memory`, (`used_memory` − its value
//!   at the first point) / the tasks Redis held then: those in flight (accepted, batch not yet settled: the open
//!   batches × K) plus those of batches settled and not yet expired (the `expiring` index × K). A settled task holds
//!   at least what it held in flight (every field and event it ever had), so this is an upper bound of what one
//!   task in flight costs. `tasks_open_and_retained_at_memory_peak` gives the two counts.
//!   **redis_mem_per_open_task_bytes** is the older, looser bound: (Redis's `used_memory_peak`, or the highest
//!   sample − start) / the most tasks in flight at one sample, counting the retained batches' memory but not their
//!   tasks. `redis_used_memory_peak_mb` and `_start_mb` are the raw figures the peer reports.
//! * **redis_mem_per_task_after_retention**: `used_memory` once every batch settled, retention removed every batch
//!   hash and Redis reclaimed the expired keys (waited for, up to retention + `retention.interval_ms` + 10 s;
//!   `retention_expired` says whether the hashes did go), minus the start, over B·K. What each task leaves behind
//!   for good (the ledger is kept). Retention runs in the settlement's sweep, which the bench runs every second.
//! * **provider_calls_per_task**: creates + status calls counted by the simulator (`GET /sim/stats`), over B·K.
//! * **redis_cpu_us_per_task**: the delta of `used_cpu_user + used_cpu_sys`. **cpu_s** is the CPU time of every
//!   process over the measured interval (`/proc/<pid>/stat`; Redis from `INFO`; the harness itself included).
//! * **stages_p50_p99_ms**: where a task's time goes (accept, queued, create, run, settle), from the timestamps in
//!   the task and batch hashes; see `stages.rs`.
//! * **Checks** (any failure gives `"ok": false` and a non-zero exit): every batch accepted and none left open;
//!   exactly one `charge` per batch in its tenant's ledger and every remaining batch hash `completed`; 90 % / 10 %
//!   succeeded / failed per batch, in the batch hashes and in the credits charged and refunded; one provider create
//!   per task and no duplicate live task; `gantry admin verify-ledger` exits 0; no service exited.
//!
//! # Commands and knobs
//!
//! `just bench` (both shapes), `just bench-compare` (Gantry and the peer, interleaved, 3 runs each, medians),
//! `just soak` (200,000 tasks at a steady rate, memory must come back), and `cargo bench -q -p gantry --bench scale
//! -- table <file>` (the compare table and the Gantry / peer verdict of saved raw lines). Environment: `SHAPES` (`2000x10,200x100`),
//! or `B` and `K` for one shape; `INFLIGHT` (32); `REPS` (1; 3 for compare); `RETENTION_SECS` (2; 0 = leave the
//! product default); `TIMEOUT_S` (600); `BENCH_BIN` (another `gantry` binary for the services, to compare two
//! builds on one harness); `BENCH_RUST_LOG` (`warn`) for the services, whose logs go to
//! `$CARGO_TARGET_DIR/bench-logs/`.

mod compare;
mod outcome;
mod probe;
mod run;
mod soak;
mod stack;
mod stages;
mod summary;
mod workload;

use std::time::Duration;

use anyhow::{bail, Context};

use crate::run::RunOptions;

/// An environment knob, `default` when unset or empty.
fn knob<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().ok().with_context(|| format!("bad {name}={v}")),
        _ => Ok(default),
    }
}

/// The shapes to run: `B`/`K` when either is set, else `SHAPES`.
fn shapes() -> anyhow::Result<Vec<(usize, usize)>> {
    if std::env::var_os("B").is_some() || std::env::var_os("K").is_some() {
        return Ok(vec![(knob("B", 2000)?, knob("K", 10)?)]);
    }
    let list = std::env::var("SHAPES").unwrap_or_else(|_| "2000x10,200x100".into());
    list.split(',')
        .map(|shape| {
            let (b, k) = shape.trim().split_once('x').context("a shape is BxK")?;
            Ok((b.parse()?, k.parse()?))
        })
        .collect()
}

/// Run options for each shape, from the knobs.
fn run_options() -> anyhow::Result<Vec<RunOptions>> {
    let retention: u64 = knob("RETENTION_SECS", knob("GANTRY__RETENTION__COMPLETED_SECS", 2)?)?;
    let inflight = knob("INFLIGHT", 32)?;
    let timeout = Duration::from_secs(knob("TIMEOUT_S", 600)?);
    Ok(shapes()?
        .into_iter()
        .map(|(b, k)| RunOptions {
            b,
            k,
            inflight,
            retention_secs: (retention > 0).then_some(retention),
            timeout,
        })
        .collect())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // `cargo bench` appends `--bench`; the first other argument is the mode.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let work = async {
        match args.first().map(String::as_str) {
            None | Some("run") => run_all().await,
            Some("compare") => compare::run().await,
            Some("soak") => soak::run().await,
            Some("table") => match args.get(1) {
                Some(path) => compare::reprint(path),
                None => Err(anyhow::anyhow!(
                    "table needs a file of raw lines (bench-results/*.jsonl)"
                )),
            },
            Some(other) => Err(anyhow::anyhow!(
                "unknown mode {other}: run, compare, soak or table <file>"
            )),
        }
    };
    // On Ctrl+C or SIGTERM the work is dropped, and with it the running stack: its processes and Redis stop.
    let result = tokio::select! {
        result = work => result,
        () = interrupted() => Err(anyhow::anyhow!("interrupted")),
    };
    if let Err(e) = result {
        eprintln!("bench failed: {e:#}");
        std::process::exit(1);
    }
}

/// Resolves on Ctrl+C or SIGTERM.
async fn interrupted() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Every shape, REPS times; one JSON line per run on stdout.
async fn run_all() -> anyhow::Result<()> {
    let reps: usize = knob("REPS", 1)?;
    let mut failed = 0;
    for _ in 0..reps {
        for options in run_options()? {
            let summary = run::run(&options).await?;
            println!("{summary}");
            if summary.get("ok") != &serde_json::Value::Bool(true) {
                failed += 1;
                eprintln!("checks failed: {}", summary.get("checks"));
            }
        }
    }
    if failed > 0 {
        bail!("{failed} run(s) failed their checks");
    }
    Ok(())
}
