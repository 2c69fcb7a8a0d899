//! Each service as its own process (`gantry submitter` etc.), two pollers at once; and the demo, end to end.

use std::time::{Duration, Instant};

use gantry_testkit::{free_port, wait_for};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::process::Command;

use crate::common::cluster::Cluster;

const BIN: &str = env!("CARGO_BIN_EXE_gantry");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_as_separate_processes_with_two_pollers_settle_a_batch() {
    let cluster = Cluster::start();
    let http = reqwest::Client::new();
    let key = cluster.ready_tenant(&http, 500).await;
    let tasks: Vec<Value> = (0..12)
        .map(|i| {
            let fail = if i % 4 == 3 { " [sim:fail]" } else { "" };
            json!({"model": "veo3.1-fast", "prompt": format!("shot {i}{fail}"), "aspect_ratio": "16:9"})
        })
        .collect();
    let batch = cluster.run_batch(&http, &key, tasks).await;
    assert_eq!(batch["request_counts"]["succeeded"], 9);
    assert_eq!(batch["request_counts"]["failed"], 3);
    assert_eq!(batch["credits"]["charged"], 72);
    assert_eq!(batch["credits"]["refunded"], 24);
    let url = format!("{}/v1/credits", cluster.gateway);
    let credits: Value = http
        .get(url)
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(credits["balance"], 500 - 72);

    let stats = cluster.sim_stats(&http).await;
    assert_eq!(stats["creates"], 12);
    assert!(stats["polls"].as_u64().unwrap() >= 12, "{stats}");
    let overlap = &stats["max_concurrent_polls_per_task"];
    assert_eq!(overlap, 1, "a task was polled by two pollers at once: {stats}");

    let out = cluster
        .command(&["admin", "verify-ledger"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("verify-ledger: 1 tenants, 0 violations"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_limits_hold_across_two_submitters_and_three_pollers() {
    let services = [
        "sim",
        "gateway",
        "submitter",
        "submitter",
        "poller",
        "poller",
        "poller",
        "settlement",
    ];
    let cluster = Cluster::start_with(
        &services,
        &[
            ("GANTRY__PROVIDER__LIMITS__GRSAI__MAX_IN_FLIGHT", "5"),
            ("GANTRY__PROVIDER__LIMITS__GRSAI__RATE_PER_SEC", "20"),
            ("GANTRY__PROVIDER__LIMITS__GRSAI__BURST", "5"),
            ("GANTRY__SIM__TASK_DURATION_MS", "300"),
        ],
    );
    let http = reqwest::Client::new();
    let key = cluster.ready_tenant(&http, 1000).await;
    // Slow answers, so requests pile up if the limits do not hold.
    let faults = json!({"latency_ms_min": 50, "latency_ms_max": 150});
    cluster.set_faults(&http, faults).await;
    let tasks: Vec<Value> = (0..60)
        .map(|i| json!({"model": "veo3.1-fast", "prompt": format!("limited {i}"), "aspect_ratio": "16:9"}))
        .collect();
    let batch = cluster.run_batch(&http, &key, tasks).await;
    assert_eq!(batch["request_counts"]["succeeded"], 60);
    let stats = cluster.sim_stats(&http).await;
    let in_flight = stats["max_concurrent_requests"].as_u64().unwrap();
    let per_second = stats["max_requests_in_one_second"].as_u64().unwrap();
    println!("measured: max in flight {in_flight} (limit 5), max requests in one second {per_second} (20 + burst 5)");
    assert!(in_flight <= 5, "{stats}");
    assert!(per_second <= 20 + 5, "{stats}");
    assert!(per_second >= 10, "the limit was exercised: {stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_to_the_end() {
    let started = Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new(BIN)
            .arg("demo")
            .env("RUST_LOG", "warn")
            .env_remove("GANTRY__REDIS__URL")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the demo finishes within two minutes")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("completed in"), "{stdout}");
    assert!(stdout.contains("5 succeeded, 1 failed"), "{stdout}");
    assert!(
        stdout.contains("settlement: charged 61 credits, refunded 20; tenant balance 139"),
        "{stdout}"
    );
    assert!(started.elapsed() < Duration::from_secs(120));
}

#[tokio::test]
async fn print_config_redacts_secrets_and_bad_values_name_their_key() {
    let out = Command::new(BIN)
        .args(["submitter", "--print-config"])
        .env("GANTRY__PROVIDER__GRSAI__API_KEY", "sk-very-secret")
        .env("GANTRY__REDIS__URL", "redis://:hunter2@127.0.0.1:6379")
        .env("GANTRY__POLLER__CONCURRENCY", "4")
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.contains("concurrency = 4"), "{printed}");
    assert!(
        !printed.contains("sk-very-secret") && !printed.contains("hunter2"),
        "{printed}"
    );

    let out = Command::new(BIN)
        .arg("gateway")
        .env("GANTRY__GATEWAY__LISTEN", "nowhere")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("gateway.listen"), "{stderr}");

    let out = Command::new(BIN)
        .arg("poller")
        .env_remove("GANTRY__REDIS__URL")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr).unwrap().contains("redis.url"));
}

#[tokio::test]
async fn simulator_faults_come_from_configuration() {
    let port = free_port().unwrap();
    let _sim = Command::new(BIN)
        .arg("sim")
        .env("GANTRY__SIM__LISTEN", format!("127.0.0.1:{port}"))
        .env("GANTRY__SIM__FAULTS__RATE_5XX", "0.25")
        .env("GANTRY__SIM__FAULTS__RETRY_AFTER_SECS", "3")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let faults = wait_for("the simulator to answer", Duration::from_secs(20), || async {
        let answer = http
            .get(format!("http://127.0.0.1:{port}/sim/config"))
            .send()
            .await;
        Ok(match answer {
            Ok(response) => Some(response.json::<Value>().await?),
            Err(_) => None,
        })
    })
    .await
    .unwrap();
    assert_eq!(faults["rate_5xx"], 0.25);
    assert_eq!(faults["retry_after_secs"], 3);

    let out = Command::new(BIN)
        .arg("sim")
        .env("GANTRY__SIM__FAULTS__RATE_5XX", "7")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr).unwrap().contains("rate_5xx"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_every_service_cleanly_within_the_grace_period() {
    let mut cluster = Cluster::start_with(
        &["sim", "gateway", "submitter", "poller", "settlement"],
        &[
            ("GANTRY__SHUTDOWN__GRACE_MS", "2000"),
            ("GANTRY__SIM__TASK_DURATION_MS", "5000"),
        ],
    );
    let http = reqwest::Client::new();
    let key = cluster.ready_tenant(&http, 100).await;
    // Work in flight: a batch that runs for a while, and a live event stream held open.
    let url = format!("{}/v1/batches", cluster.gateway);
    let response = http
        .post(url)
        .bearer_auth(&key)
        .json(&json!({"tasks": [{"model": "veo3.1-fast", "prompt": "long", "aspect_ratio": "16:9"}]}))
        .send()
        .await
        .unwrap();
    let batch: Value = response.json().await.unwrap();
    let events = http
        .get(format!(
            "{}/v1/batches/{}/events",
            cluster.gateway,
            batch["id"].as_str().unwrap()
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);

    let started = Instant::now();
    for child in &cluster.children {
        let pid = child.id().unwrap().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
        assert!(sent.success());
    }
    for child in &mut cluster.children {
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("exits in time")
            .unwrap();
        assert!(status.success(), "a service exited with {status}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_gateway_refuses_a_short_admin_token_at_start() {
    let port = free_port().unwrap();
    let run = Command::new(BIN)
        .arg("gateway")
        .env("GANTRY__GATEWAY__LISTEN", format!("127.0.0.1:{port}"))
        .env("GANTRY__GATEWAY__ADMIN_TOKEN", "change-me")
        // Nothing listens there: a gateway that got past its checks would wait for Redis, not exit.
        .env(
            "GANTRY__REDIS__URL",
            format!("redis://127.0.0.1:{}", free_port().unwrap()),
        )
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the gateway exits at once")
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("gateway.admin_token") && stderr.contains("32 bytes"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitter_claims_no_more_than_it_can_start_so_no_task_is_created_twice() {
    // Each submitter reads up to 20 messages but runs 2 creates at a time, each about 250 ms: a task claimed at
    // read time and left waiting for a slot would outlive its 1 s lease, be taken over by the other submitter and
    // be created twice while the first remote task still runs (3 s).
    let cluster = Cluster::start_with(
        &["sim", "gateway", "submitter", "submitter", "poller", "settlement"],
        &[
            ("GANTRY__SUBMITTER__CONCURRENCY", "2"),
            ("GANTRY__SUBMITTER__READ_COUNT", "20"),
            ("GANTRY__SUBMITTER__LEASE_MS", "1000"),
            ("GANTRY__SIM__TASK_DURATION_MS", "3000"),
        ],
    );
    let http = reqwest::Client::new();
    let key = cluster.ready_tenant(&http, 1000).await;
    cluster
        .set_faults(&http, json!({"latency_ms_min": 200, "latency_ms_max": 300}))
        .await;
    let tasks: Vec<Value> = (0..30)
        .map(|i| json!({"model": "veo3.1-fast", "prompt": format!("one create {i}"), "aspect_ratio": "16:9"}))
        .collect();
    let batch = cluster.run_batch(&http, &key, tasks).await;
    assert_eq!(batch["request_counts"]["succeeded"], 30, "{batch}");
    let stats = cluster.sim_stats(&http).await;
    assert_eq!(stats["duplicate_live_creates"], 0, "{stats}");
    assert_eq!(stats["creates"], 30, "one provider create per task: {stats}");
}
