//! Each service as its own process (`gantry submitter` etc.), two pollers at once; and the demo, end to end.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use gantry_testkit::{free_port, wait_for, RedisServer};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_gantry");

struct Cluster {
    env: Vec<(String, String)>,
    children: Vec<Child>,
    gateway: String,
    sim: String,
    _redis: RedisServer,
}

impl Cluster {
    fn start() -> Self {
        let redis = RedisServer::start().unwrap();
        let (gateway_port, sim_port) = (free_port().unwrap(), free_port().unwrap());
        let env: Vec<(String, String)> = [
            ("GANTRY__REDIS__URL", redis.url()),
            ("GANTRY__GATEWAY__LISTEN", format!("127.0.0.1:{gateway_port}")),
            ("GANTRY__GATEWAY__ADMIN_TOKEN", "proc-admin".into()),
            ("GANTRY__SIM__LISTEN", format!("127.0.0.1:{sim_port}")),
            ("GANTRY__SIM__TASK_DURATION_MS", "600".into()),
            ("GANTRY__SIM__DURATION_JITTER_MS", "400".into()),
            // Slow status answers, so two pollers polling one task at once would overlap visibly.
            ("GANTRY__SIM__POLL_LATENCY_MS", "40".into()),
            (
                "GANTRY__PROVIDER__GRSAI__BASE_URL",
                format!("http://127.0.0.1:{sim_port}"),
            ),
            ("GANTRY__POLLER__FIRST_POLL_DELAY_MS", "30".into()),
            ("GANTRY__POLLER__INTERVAL_MS", "30".into()),
            ("GANTRY__POLLER__IDLE_WAIT_MS", "50".into()),
            ("GANTRY__SUBMITTER__BLOCK_MS", "200".into()),
            ("GANTRY__SETTLEMENT__BLOCK_MS", "200".into()),
            ("RUST_LOG", "warn".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let mut cluster = Self {
            env,
            children: Vec::new(),
            gateway: format!("http://127.0.0.1:{gateway_port}"),
            sim: format!("http://127.0.0.1:{sim_port}"),
            _redis: redis,
        };
        for service in ["sim", "gateway", "submitter", "poller", "poller", "settlement"] {
            let child = cluster
                .command(&[service])
                .kill_on_drop(true)
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            cluster.children.push(child);
        }
        cluster
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env_clear()
            .envs(self.env.iter().cloned())
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        command
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_as_separate_processes_with_two_pollers_settle_a_batch() {
    let cluster = Cluster::start();
    let http = reqwest::Client::new();
    wait_for("the gateway to be ready", Duration::from_secs(30), || async {
        let ready = http.get(format!("{}/readyz", cluster.gateway)).send().await;
        Ok(ready.is_ok_and(|r| r.status() == StatusCode::OK).then_some(()))
    })
    .await
    .unwrap();

    // Provision a tenant from the shell, as an operator would.
    let out = cluster
        .command(&["admin", "tenant", "create", "--name", "ops", "--credits", "500"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key = stdout
        .lines()
        .find_map(|l| l.strip_prefix("api_key:"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();

    let tasks: Vec<Value> = (0..12)
        .map(|i| {
            let fail = if i % 4 == 3 { " [sim:fail]" } else { "" };
            json!({"model": "veo3.1-fast", "prompt": format!("shot {i}{fail}"), "aspect_ratio": "16:9"})
        })
        .collect();
    let response = http
        .post(format!("{}/v1/batches", cluster.gateway))
        .bearer_auth(&key)
        .json(&json!({"tasks": tasks}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let batch: Value = response.json().await.unwrap();
    let id = batch["id"].as_str().unwrap();

    let batch = wait_for("the batch to complete", Duration::from_secs(60), || async {
        let batch: Value = http
            .get(format!("{}/v1/batches/{id}", cluster.gateway))
            .bearer_auth(&key)
            .send()
            .await?
            .json()
            .await?;
        Ok((batch["status"] == "completed").then_some(batch))
    })
    .await
    .unwrap();
    assert_eq!(batch["request_counts"]["succeeded"], 9);
    assert_eq!(batch["request_counts"]["failed"], 3);
    assert_eq!(batch["credits"]["charged"], 72);
    assert_eq!(batch["credits"]["refunded"], 24);
    let credits: Value = http
        .get(format!("{}/v1/credits", cluster.gateway))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(credits["balance"], 500 - 72);

    let stats: Value = http
        .get(format!("{}/sim/stats", cluster.sim))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["creates"], 12);
    assert!(stats["polls"].as_u64().unwrap() >= 12, "{stats}");
    assert_eq!(
        stats["max_concurrent_polls_per_task"], 1,
        "a task was polled by two pollers at once: {stats}"
    );
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
