//! The chaos test: services as separate processes against the simulator (faults on) and a Redis that persists
//! every write, while processes, Redis included, are killed with SIGKILL and restarted. At the end every invariant
//! of DESIGN.md §4 must hold. Seeded: `GANTRY_CHAOS_SEED=<n>` replays a run's kills and faults.
//!
//! In `just test` it runs in a short form; `just chaos` runs the long form (`GANTRY_CHAOS_TASKS`, more seeds).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use gantry_testkit::wait_for;
use rand::{rngs::StdRng, Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{cluster::Cluster, Backend, TestRedis};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const SERVICES: [&str; 7] = [
    "sim",
    "gateway",
    "submitter",
    "submitter",
    "poller",
    "poller",
    "settlement",
];

/// Submits one batch, retrying with the same Idempotency-Key through crashes and outages; the batch id once
/// accepted.
async fn submit(
    http: &reqwest::Client,
    gateway: &str,
    key: &str,
    body: &Value,
    deadline: Instant,
) -> Option<String> {
    let idempotency_key = format!("chaos-{}", uuid_like(body));
    while Instant::now() < deadline {
        let sent = http
            .post(format!("{gateway}/v1/batches"))
            .bearer_auth(key)
            .header("Idempotency-Key", &idempotency_key)
            .timeout(Duration::from_secs(5))
            .json(body)
            .send()
            .await;
        if let Ok(response) = sent {
            if response.status() == StatusCode::ACCEPTED {
                let batch: Value = response.json().await.ok()?;
                return batch["id"].as_str().map(str::to_owned);
            }
            // Retry a 5xx, and a 409 "still in progress" (it carries Retry-After); anything else is a refusal.
            let in_progress =
                response.status() == StatusCode::CONFLICT && response.headers().contains_key("retry-after");
            let status = response.status();
            assert!(
                status.is_server_error() || in_progress,
                "a batch was refused: {status} {}",
                response.text().await.unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

fn uuid_like(body: &Value) -> String {
    body["tasks"][0]["prompt"]
        .as_str()
        .unwrap_or_default()
        .replace(' ', "-")
}

/// Every batch of a tenant, through the list endpoint.
async fn batches_of(http: &reqwest::Client, gateway: &str, key: &str) -> anyhow::Result<Vec<Value>> {
    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let url = format!("{gateway}/v1/batches?limit=100{after}");
        let page: Value = http
            .get(url)
            .bearer_auth(key)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        all.extend(page["data"].as_array().cloned().unwrap_or_default());
        if page["has_more"] != true {
            return Ok(all);
        }
        after = format!("&after={}", page["last_id"].as_str().unwrap_or_default());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_kill_anything_lose_nothing_charge_nothing_twice() {
    kill_anything_lose_nothing(Backend::Standalone).await;
}

/// The chaos run on a Redis of `backend`; on a cluster, the Redis crash is one node's.
pub(crate) async fn kill_anything_lose_nothing(backend: Backend) {
    let seed = env_or("GANTRY_CHAOS_SEED", 1);
    let target_tasks = env_or("GANTRY_CHAOS_TASKS", 150) as usize;
    // Kills go on at least this long, and as long as the client is still submitting.
    let chaos_for = Duration::from_secs(env_or("GANTRY_CHAOS_SECONDS", 6));
    let mut rng = StdRng::seed_from_u64(seed);
    let redis = TestRedis::start_durable(backend);
    // A reservation whose batch is not written yet is released after this grace. An attempt that stalls through a
    // crash and a Redis outage must come back within it: a cluster node's restart stops the whole cluster (every
    // slot must be served) for the node's downtime and a second or two more, so the cluster run allows longer.
    let reservation_grace = match backend {
        Backend::Standalone => "6000",
        Backend::Cluster => "12000",
    };
    // A live submitter renews its leases, but not while Redis is down: a lease must outlast the outage, which on a
    // cluster is the node's downtime and the cluster's recovery after it.
    let submit_lease = match backend {
        Backend::Standalone => "3000",
        Backend::Cluster => "6000",
    };
    let mut cluster = Cluster::start_on(
        redis,
        &SERVICES,
        &[
            ("GANTRY__GATEWAY__MAX_TASKS_PER_BATCH", "20"),
            ("GANTRY__SIM__TASK_DURATION_MS", "300"),
            ("GANTRY__SIM__DURATION_JITTER_MS", "1000"),
            // Longer than the Redis outage below, so a created remote task is recorded, not created again.
            ("GANTRY__SUBMITTER__LEASE_MS", submit_lease),
            ("GANTRY__POLLER__CLAIM_LEASE_MS", "1500"),
            ("GANTRY__STREAMS__CLAIM_IDLE_MS", "1500"),
            ("GANTRY__SWEEPER__INTERVAL_MS", "500"),
            ("GANTRY__SWEEPER__RESERVATION_GRACE_MS", reservation_grace),
            ("GANTRY__GATEWAY__IDEMPOTENCY_LEASE_MS", "2000"),
            // Crashes, not poison: a message may be delivered many times while consumers keep dying.
            ("GANTRY__STREAMS__MAX_DELIVERIES", "30"),
            ("GANTRY__RETRY__TRANSIENT_BASE_MS", "50"),
            ("GANTRY__RETRY__RATE_LIMITED_BASE_MS", "100"),
            ("GANTRY__RETRY__CAP_MS", "1000"),
            ("GANTRY__RETRY__MAX_ATTEMPTS", "10"),
            ("GANTRY__PROVIDER__LIMITS__GRSAI__RATE_PER_SEC", "400"),
            ("GANTRY__PROVIDER__LIMITS__GRSAI__BURST", "50"),
            ("GANTRY__PROVIDER__LIMITS__GRSAI__MAX_IN_FLIGHT", "50"),
            ("GANTRY__SHUTDOWN__GRACE_MS", "1000"),
        ],
    );
    let http = reqwest::Client::new();
    let faults = json!({"seed": seed, "rate_5xx": 0.05, "rate_429": 0.05, "latency_ms_max": 30});
    let mut keys = Vec::new();
    for _ in 0..3 {
        keys.push(cluster.ready_tenant(&http, 100_000).await);
    }
    cluster.set_faults(&http, faults).await;

    // The client: batches of 1..=20 shots, a third of them chains, from three tenants, until the target.
    let gateway = cluster.gateway.clone();
    let plan: Vec<(usize, Value)> = {
        let (mut planned, mut plan, mut n) = (0, Vec::new(), 0);
        while planned < target_tasks {
            let size = rng.random_range(1..=20usize).min(target_tasks - planned);
            let mode = if rng.random_bool(0.33) {
                "chain"
            } else {
                "parallel"
            };
            let tasks: Vec<Value> = (0..size)
                .map(|i| {
                    let fail = if rng.random_bool(0.1) { " [sim:fail]" } else { "" };
                    json!({"model": "veo3.1-fast", "prompt": format!("chaos {seed} batch {n} shot {i}{fail}"), "aspect_ratio": "16:9"})
                })
                .collect();
            plan.push((rng.random_range(0..3), json!({"mode": mode, "tasks": tasks})));
            planned += size;
            n += 1;
        }
        plan
    };
    let batches = plan.len();
    let client_keys = keys.clone();
    let client = tokio::spawn(async move {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut accepted = Vec::new();
        for (tenant, body) in plan {
            let id = submit(&http, &gateway, &client_keys[tenant], &body, deadline).await;
            accepted.push((tenant, id.expect("the batch was accepted before the deadline")));
        }
        accepted
    });

    // The killer: every 0.3-1.2 s a random service process is killed and restarted; Redis once, mid-run.
    let mut kills: BTreeMap<String, u64> = BTreeMap::new();
    let redis_kill_after = Duration::from_millis(rng.random_range(2000..4000));
    let started = Instant::now();
    let mut redis_killed = false;
    let kill_until = chaos_for.max(redis_kill_after + Duration::from_secs(1));
    while !client.is_finished() || started.elapsed() < kill_until {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1200))).await;
        if !redis_killed && started.elapsed() > redis_kill_after {
            let down = Duration::from_millis(rng.random_range(500..2000));
            cluster.redis.crash_and_restart(seed as usize, down).await;
            redis_killed = true;
            *kills.entry("redis".into()).or_default() += 1;
            continue;
        }
        let victim = rng.random_range(1..cluster.children.len());
        *kills.entry(cluster.roles[victim].clone()).or_default() += 1;
        cluster.crash_and_restart(victim).await;
    }
    let accepted = client.await.unwrap();

    // Everything must end: every batch final, every task terminal.
    let mut final_batches = Vec::new();
    for key in &keys {
        let all = wait_for("every batch to be final", Duration::from_secs(180), || async {
            // A gateway just restarted may answer 503 for a moment: that is "not yet".
            let Ok(all) = batches_of(&http, &cluster.gateway, key).await else {
                return Ok(None);
            };
            let done = all
                .iter()
                .all(|b| matches!(b["status"].as_str(), Some("completed" | "cancelled")));
            Ok(done.then_some(all))
        })
        .await
        .unwrap();
        final_batches.extend(all);
    }
    let known: std::collections::HashSet<&str> =
        final_batches.iter().filter_map(|b| b["id"].as_str()).collect();
    let lost = accepted
        .iter()
        .filter(|(_, id)| !known.contains(id.as_str()))
        .count();
    let tasks: u64 = final_batches
        .iter()
        .map(|b| b["request_counts"]["total"].as_u64().unwrap())
        .sum();
    let terminal: u64 = final_batches
        .iter()
        .map(|b| {
            ["succeeded", "failed", "cancelled"]
                .iter()
                .map(|k| b["request_counts"][k].as_u64().unwrap())
                .sum::<u64>()
        })
        .sum();
    let ledger = cluster
        .command(&["admin", "verify-ledger"])
        .output()
        .await
        .unwrap();
    let ledger_report = String::from_utf8_lossy(&ledger.stdout).trim().to_owned();
    let stats = cluster.sim_stats(&http).await;
    let duplicates = stats["duplicate_live_creates"].as_u64().unwrap();
    let submitter_kills = kills.get("submitter").copied().unwrap_or(0);
    let kill_list: Vec<String> = kills.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    println!(
        "chaos ({backend:?}): seed={seed} batches={batches} accepted={} tasks={tasks} terminal={terminal} settled={}/{} lost={lost} \
         ledger={} duplicate_creates={duplicates} (submitter kills {submitter_kills}) kills=[{}] in {:.0}s",
        accepted.len(),
        final_batches.len(),
        final_batches.len(),
        if ledger.status.success() { "clean" } else { "VIOLATED" },
        kill_list.join(" "),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(accepted.len(), batches, "every batch was accepted");
    assert_eq!(lost, 0, "an accepted batch was lost");
    assert_eq!(terminal, tasks, "every accepted task is terminal");
    assert!(ledger.status.success(), "verify-ledger: {ledger_report}");
    assert!(
        duplicates <= submitter_kills,
        "{duplicates} duplicate remote creates for {submitter_kills} submitter kills"
    );
    assert!(redis_killed);
}
