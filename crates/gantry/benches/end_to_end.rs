//! `just bench`: one large batch through the whole local stack, with the simulator at zero duration.
//! Prints the end-to-end time and the Redis commands spent per task (from `INFO commandstats`).
#![allow(clippy::unwrap_used)]

use std::{collections::BTreeMap, time::Instant};

use gantry::dev::DevStack;
use gantry_core::{config::Secret, Config};
use serde_json::{json, Value};

const TASKS: usize = 1000;

/// Calls per command since the server started.
async fn command_stats(conn: &mut redis::aio::MultiplexedConnection) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let mut config = Config::load_from(None, Vec::new()).unwrap();
    config.gateway.listen = ([127, 0, 0, 1], 0).into();
    config.gateway.admin_token = Some(Secret::new("bench"));
    config.gateway.max_tasks_per_batch = TASKS;
    config.sim.listen = ([127, 0, 0, 1], 0).into();
    config.sim.task_duration_ms = 0;
    config.poller.set_expected_ms(0);
    config.poller.interval_ms = 50;
    config.poller.max_interval_ms = 50;
    config.poller.concurrency = 64;
    config.provider.limits.grsai.rate_per_sec = 1e6;
    config.provider.limits.grsai.burst = 10_000;
    config.provider.limits.grsai.max_in_flight = 10_000;
    config.poller.idle_wait_ms = 20;
    config.submitter.block_ms = 100;
    config.settlement.block_ms = 100;
    let stack = DevStack::start(config).await.unwrap();
    let base = stack.gateway_url();
    let http = reqwest::Client::new();
    let url = stack.config.redis.url.as_ref().unwrap().expose().to_owned();
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();

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
        .map(|i| json!({"model": "veo3.1-fast", "prompt": format!("shot {i}"), "aspect_ratio": "16:9"}))
        .collect();

    let before = command_stats(&mut conn).await;
    let started = Instant::now();
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
    let accepted = started.elapsed();
    let id = batch["id"].as_str().unwrap().to_owned();
    let mut polls_of_status = 0u64;
    let final_batch = loop {
        let batch: Value = http
            .get(format!("{base}/v1/batches/{id}"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        polls_of_status += 1;
        if batch["status"] == "completed" {
            break batch;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let elapsed = started.elapsed();
    let after = command_stats(&mut conn).await;

    let mut spent: Vec<(String, u64)> = after
        .iter()
        .map(|(name, calls)| (name.clone(), calls - before.get(name).copied().unwrap_or(0)))
        .filter(|(_, calls)| *calls > 0)
        .collect();
    spent.sort_by_key(|s| std::cmp::Reverse(s.1));
    // The status checks of this loop are the client's, not the pipeline's: leave them out.
    let client_reads = polls_of_status * 2; // HGETALL of the batch + HGET of the API key
    let total: u64 = spent
        .iter()
        .map(|(_, c)| c)
        .sum::<u64>()
        .saturating_sub(client_reads);
    println!("end_to_end: {TASKS} tasks, simulator at zero duration");
    println!(
        "  accepted (validate + freeze + write + queue): {:.1} ms",
        accepted.as_secs_f64() * 1e3
    );
    println!(
        "  submitted → batch completed and settled:      {:.2} s",
        elapsed.as_secs_f64()
    );
    println!(
        "  throughput:                                   {:.0} tasks/s",
        TASKS as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  redis commands executed (incl. in scripts):   {total} ({:.1} per task)",
        total as f64 / TASKS as f64
    );
    let scripts = spent
        .iter()
        .find(|(name, _)| name == "evalsha")
        .map_or(0, |(_, calls)| *calls);
    println!(
        "  scripts run (EVALSHA):                        {scripts} ({:.1} per task)",
        scripts as f64 / TASKS as f64
    );
    println!("  by command (including {client_reads} of this loop's status reads):");
    for (name, calls) in spent {
        println!("    {name:<14} {calls}");
    }
    println!(
        "  succeeded {}, sim creates {}, sim polls {}",
        final_batch["request_counts"]["succeeded"],
        stack.sim.stats().creates,
        stack.sim.stats().polls
    );
}
