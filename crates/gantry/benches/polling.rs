//! `just bench-polling`: status calls per task and detection delay (provider finished → Gantry knows) for 200
//! tasks, Gantry's poll schedule against fixed 5-second polling.
//!
//! Both runs go through the real stack (gateway, submitter, poller, settlement, Redis, the simulator over HTTP)
//! on a clock scaled down SCALE times, so minutes of generation take seconds; reported figures are scaled back.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use gantry::dev::DevStack;
use gantry_core::{config::Secret, Config};
use redis::AsyncCommands;
use serde_json::{json, Value};

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
    let mut config = Config::load_from(None, Vec::new()).unwrap();
    config.gateway.listen = ([127, 0, 0, 1], 0).into();
    config.gateway.admin_token = Some(Secret::new("bench"));
    config.gateway.max_tasks_per_batch = TASKS;
    config.sim.listen = ([127, 0, 0, 1], 0).into();
    config.sim.task_duration_ms = DURATION_MS / SCALE;
    config.sim.duration_jitter_ms = JITTER_MS / SCALE;
    config.poller.concurrency = 64;
    config.poller.idle_wait_ms = 5;
    config.provider.limits.grsai.rate_per_sec = 1e6;
    config.provider.limits.grsai.burst = 10_000;
    config.provider.limits.grsai.max_in_flight = 10_000;
    tweak(&mut config);
    let stack = DevStack::start(config).await.unwrap();
    let base = stack.gateway_url();
    let http = reqwest::Client::new();
    let tenant: Value = http
        .post(format!("{base}/admin/v1/tenants"))
        .bearer_auth("bench")
        .json(&json!({"name": "bench", "credits": 8 * TASKS}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = tenant["api_key"].as_str().unwrap().to_owned();
    let tasks: Vec<Value> = (0..TASKS)
        .map(|i| json!({"model": "veo3.1-fast", "prompt": format!("{label} shot {i}"), "aspect_ratio": "16:9"}))
        .collect();
    let started = std::time::Instant::now();
    let batch: Value = http
        .post(format!("{base}/v1/batches"))
        .bearer_auth(&key)
        .json(&json!({"tasks": tasks}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = batch["id"].as_str().unwrap().to_owned();
    loop {
        let batch: Value = http
            .get(format!("{base}/v1/batches/{id}"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if batch["status"] == "completed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let wall_s = started.elapsed().as_secs_f64();

    // Provider side: when each remote task finished, and how often it was polled.
    let stats = stack.sim.stats();
    let finished_at: HashMap<String, u64> = stats
        .tasks
        .iter()
        .map(|t| (t.prompt.clone(), t.finishes_at_ms))
        .collect();
    // Gantry side: when each task was known to be finished.
    let url = stack.config.redis.url.as_ref().unwrap().expose().to_owned();
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
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
