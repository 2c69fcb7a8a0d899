//! `just bench`: one large batch through the whole local stack, with the simulator at zero duration.
//! Prints the end-to-end time and the Redis commands spent per task (from `INFO commandstats`).
#![allow(clippy::unwrap_used)]

use std::{collections::BTreeMap, time::Instant};

use gantry::dev::DevStack;

mod support;

const TASKS: usize = 1000;

/// Calls per command since the server started.
async fn command_stats(conn: &mut redis::aio::MultiplexedConnection) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    gantry_testkit::command_calls(&info)
}

#[tokio::main]
async fn main() {
    let mut config = support::config(TASKS);
    config.sim.task_duration_ms = 0;
    config.poller.set_expected_ms(0);
    config.poller.interval_ms = 50;
    config.poller.max_interval_ms = 50;
    config.poller.idle_wait_ms = 20;
    config.submitter.block_ms = 100;
    config.settlement.block_ms = 100;
    let stack = DevStack::start(config).await.unwrap();
    let client = support::Client::new(&stack, 8 * TASKS).await;
    let mut conn = support::redis(&stack).await;

    let before = command_stats(&mut conn).await;
    let started = Instant::now();
    let (id, accepted) = client.submit(support::Client::tasks("e2e", TASKS)).await;
    let (final_batch, status_reads) = client.wait_completed(&id).await;
    let elapsed = started.elapsed();
    let after = command_stats(&mut conn).await;

    let mut spent: Vec<(String, u64)> = after
        .iter()
        .map(|(name, calls)| (name.clone(), calls - before.get(name).copied().unwrap_or(0)))
        .filter(|(_, calls)| *calls > 0)
        .collect();
    spent.sort_by_key(|s| std::cmp::Reverse(s.1));
    // The status reads of this benchmark's loop are the client's, not the pipeline's: leave them out.
    let client_reads = status_reads * 2; // HGETALL of the batch + HGET of the API key
    let total: u64 = spent
        .iter()
        .map(|(_, c)| c)
        .sum::<u64>()
        .saturating_sub(client_reads);
    let scripts = spent
        .iter()
        .find(|(name, _)| name == "evalsha")
        .map_or(0, |(_, calls)| *calls);
    let per_task = |n: u64| n as f64 / TASKS as f64;
    println!("end_to_end: {TASKS} tasks, simulator at zero duration");
    println!(
        "  accepted (validate + freeze + write + queue): {:.1} ms",
        accepted.as_secs_f64() * 1e3
    );
    println!(
        "  submitted -> batch completed and settled:     {:.2} s",
        elapsed.as_secs_f64()
    );
    println!(
        "  throughput:                                   {:.0} tasks/s",
        TASKS as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  redis commands executed (incl. in scripts):   {total} ({:.1} per task)",
        per_task(total)
    );
    println!(
        "  scripts run (EVALSHA):                        {scripts} ({:.1} per task)",
        per_task(scripts)
    );
    println!("  by command (including {client_reads} of this loop's status reads):");
    for (name, calls) in spent {
        println!("    {name:<16} {calls}");
    }
    let stats = stack.sim.stats();
    println!(
        "  succeeded {}, sim creates {}, sim polls {}",
        final_batch["request_counts"]["succeeded"], stats.creates, stats.polls
    );
}
