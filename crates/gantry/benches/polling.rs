//! `just bench-polling`: status calls per task and detection delay (provider finished → Gantry knows) for 200
//! tasks, Gantry's poll schedule against fixed 5-second polling.
//!
//! Both runs go through the real stack (gateway, submitter, poller, settlement, Redis, the simulator over HTTP)
//! on a clock scaled down SCALE times, so minutes of generation take seconds; reported figures are scaled back.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use gantry::dev::DevStack;
use gantry_core::Config;
use redis::AsyncCommands;

mod support;

const SCALE: u64 = 50;
const TASKS: usize = 200;
/// Simulated generation time: 60 s plus up to 120 s (veo3.1-fast-like), in real seconds.
const DURATION_MS: u64 = 60_000;
const JITTER_MS: u64 = 120_000;

struct Outcome {
    polls_per_task: f64,
    median_delay_s: f64,
    p90_delay_s: f64,
    wall_s: f64,
}

async fn run(label: &str, tweak: impl FnOnce(&mut Config)) -> Outcome {
    let mut config = support::config(TASKS);
    config.sim.task_duration_ms = DURATION_MS / SCALE;
    config.sim.duration_jitter_ms = JITTER_MS / SCALE;
    config.poller.idle_wait_ms = 5;
    tweak(&mut config);
    let stack = DevStack::start(config).await.unwrap();
    let client = support::Client::new(&stack, 8 * TASKS).await;
    let started = std::time::Instant::now();
    let (id, _) = client.submit(support::Client::tasks(label, TASKS)).await;
    client.wait_completed(&id).await;
    let wall_s = started.elapsed().as_secs_f64();

    // Provider side: when each remote task finished, and how often it was polled.
    let stats = stack.sim.stats();
    let finished_at: HashMap<String, u64> = stats
        .tasks
        .iter()
        .map(|t| (t.prompt.clone(), t.finishes_at_ms))
        .collect();
    // Gantry side: when each task was known to be finished.
    let mut conn = support::redis(&stack).await;
    let keys = gantry_core::keys::Keys::new("gantry", stack.config.redis.partitions);
    let mut delays = Vec::new();
    for i in 0..TASKS {
        let task_id = gantry_core::ids::task_id(&id, i);
        let known: u64 = conn.hget(keys.task(&id, &task_id), "finished_at").await.unwrap();
        let done = finished_at[&format!("{label} shot {i}")];
        delays.push(known.saturating_sub(done) as f64 * SCALE as f64 / 1000.0);
    }
    delays.sort_by(f64::total_cmp);
    Outcome {
        polls_per_task: stats.polls as f64 / TASKS as f64,
        median_delay_s: delays[TASKS / 2],
        p90_delay_s: delays[TASKS * 9 / 10],
        wall_s,
    }
}

#[tokio::main]
async fn main() {
    let scaled = |ms: u64| ms / SCALE;
    let gantry = run("schedule", |c| {
        let p = &mut c.poller;
        p.expected_veo31_fast_ms = scaled(p.expected_veo31_fast_ms);
        p.interval_ms = scaled(p.interval_ms);
        p.max_interval_ms = scaled(p.max_interval_ms);
        p.min_interval_ms = scaled(p.min_interval_ms);
    })
    .await;
    let fixed = run("fixed", |c| {
        let p = &mut c.poller;
        p.expected_veo31_fast_ms = scaled(5_000);
        p.interval_ms = scaled(5_000);
        p.interval_factor = 1.0;
        p.max_interval_ms = scaled(5_000);
        p.min_interval_ms = scaled(5_000);
    })
    .await;
    println!("polling: {TASKS} veo3.1-fast tasks of 60-180 s (uniform), clock scaled 1/{SCALE}, figures in real seconds");
    println!(
        "  {:<28} {:>14} {:>16} {:>13} {:>10}",
        "schedule", "polls per task", "median delay (s)", "p90 delay (s)", "wall (s)"
    );
    for (name, o) in [
        ("gantry (90 s, then x1.5, cap 60 s)", &gantry),
        ("fixed every 5 s", &fixed),
    ] {
        println!(
            "  {:<28} {:>14.1} {:>16.1} {:>13.1} {:>10.1}",
            name,
            o.polls_per_task,
            o.median_delay_s,
            o.p90_delay_s,
            o.wall_s * SCALE as f64
        );
    }
}
