//! Gantry as separate processes, the way ops run it: one `gantry <service>` process per service.

use std::{process::Stdio, time::Duration};

use gantry_testkit::{free_port, wait_for};

use super::TestRedis;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_gantry");

/// Gantry services as separate processes of the `gantry` binary, against their own Redis and simulator.
/// The admin token of the process stacks (a deployed gateway wants 32 bytes at least).
pub const PROC_ADMIN_TOKEN: &str = "proc-admin-0123456789abcdef0123456789";

pub struct Cluster {
    pub env: Vec<(String, String)>,
    /// The processes, and the command each runs.
    pub children: Vec<Child>,
    pub roles: Vec<String>,
    pub gateway: String,
    /// The gateway's admin listener (admin API, `/metrics`).
    pub gateway_admin: String,
    pub sim: String,
    pub redis: TestRedis,
}

impl Cluster {
    pub fn start() -> Self {
        Self::start_with(
            &["sim", "gateway", "submitter", "poller", "poller", "settlement"],
            &[],
        )
    }

    /// Starts one process per entry of `services`, with `extra` environment on top of the defaults.
    pub fn start_with(services: &[&str], extra: &[(&str, &str)]) -> Self {
        Self::start_on(TestRedis::start(super::Backend::from_env()), services, extra)
    }

    /// Like [`Cluster::start_with`] on a Redis of the caller's (a server or a Redis Cluster).
    pub fn start_on(redis: impl Into<TestRedis>, services: &[&str], extra: &[(&str, &str)]) -> Self {
        let redis = redis.into();
        let (gateway_port, sim_port) = (free_port().unwrap(), free_port().unwrap());
        let admin_port = free_port().unwrap();
        let env: Vec<(String, String)> = [
            ("GANTRY__REDIS__URL", redis.url()),
            ("GANTRY__REDIS__MODE", redis.mode_name().into()),
            ("GANTRY__GATEWAY__LISTEN", format!("127.0.0.1:{gateway_port}")),
            ("GANTRY__GATEWAY__ADMIN_LISTEN", format!("127.0.0.1:{admin_port}")),
            ("GANTRY__GATEWAY__ADMIN_TOKEN", PROC_ADMIN_TOKEN.into()),
            ("GANTRY__GATEWAY__TENANT_RATE_PER_SEC", "100000".into()),
            ("GANTRY__GATEWAY__TENANT_BURST", "100000".into()),
            ("GANTRY__SIM__LISTEN", format!("127.0.0.1:{sim_port}")),
            ("GANTRY__SIM__TASK_DURATION_MS", "600".into()),
            ("GANTRY__SIM__DURATION_JITTER_MS", "400".into()),
            // Slow status answers, so two pollers polling one task at once would overlap visibly.
            ("GANTRY__SIM__POLL_LATENCY_MS", "40".into()),
            (
                "GANTRY__PROVIDER__GRSAI__BASE_URL",
                format!("http://127.0.0.1:{sim_port}"),
            ),
            (
                "GANTRY__PROVIDER__SEEDANCE__BASE_URL",
                format!("http://127.0.0.1:{sim_port}"),
            ),
            ("GANTRY__POLLER__EXPECTED_SORA2_MS", "30".into()),
            ("GANTRY__POLLER__EXPECTED_VEO31_FAST_MS", "30".into()),
            ("GANTRY__POLLER__EXPECTED_VEO31_PRO_MS", "30".into()),
            ("GANTRY__POLLER__INTERVAL_MS", "30".into()),
            ("GANTRY__POLLER__MAX_INTERVAL_MS", "200".into()),
            ("GANTRY__POLLER__MIN_INTERVAL_MS", "10".into()),
            ("GANTRY__POLLER__IDLE_WAIT_MS", "50".into()),
            ("GANTRY__SUBMITTER__BLOCK_MS", "200".into()),
            ("GANTRY__SETTLEMENT__BLOCK_MS", "200".into()),
            ("RUST_LOG", "warn".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .chain(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
        .collect();
        let mut cluster = Self {
            env,
            children: Vec::new(),
            roles: Vec::new(),
            gateway: format!("http://127.0.0.1:{gateway_port}"),
            gateway_admin: format!("http://127.0.0.1:{admin_port}"),
            sim: format!("http://127.0.0.1:{sim_port}"),
            redis,
        };
        for service in services {
            let child = cluster.spawn(service);
            cluster.children.push(child);
            cluster.roles.push((*service).to_owned());
        }
        cluster
    }

    /// Starts one process running `gantry <role>`.
    pub fn spawn(&self, role: &str) -> Child {
        self.command(&[role])
            .kill_on_drop(true)
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Starts `gantry <role>` with `extra` environment on top of the cluster's, its stderr (the logs) written to
    /// `log`, and keeps it with the others.
    pub fn spawn_logged(&mut self, role: &str, extra: &[(&str, String)], log: &std::path::Path) {
        let file = std::fs::File::create(log).unwrap();
        let child = self
            .command(&[role])
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
            .kill_on_drop(true)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        self.children.push(child);
        self.roles.push(role.to_owned());
    }

    /// Kills process `i` at once (SIGKILL) and starts its role again.
    pub async fn crash_and_restart(&mut self, i: usize) {
        let _ = self.children[i].kill().await;
        self.children[i] = self.spawn(&self.roles[i].clone());
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env_clear()
            .envs(self.env.iter().cloned())
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        command
    }
}

impl Cluster {
    /// Waits for the gateway, then provisions a tenant from the shell as an operator would; returns its key.
    pub async fn ready_tenant(&self, http: &reqwest::Client, credits: u64) -> String {
        wait_for("the gateway to be ready", Duration::from_secs(30), || async {
            let ready = http.get(format!("{}/readyz", self.gateway)).send().await;
            Ok(ready.is_ok_and(|r| r.status() == StatusCode::OK).then_some(()))
        })
        .await
        .unwrap();
        let credits = credits.to_string();
        let args = [
            "admin",
            "tenant",
            "create",
            "--name",
            "ops",
            "--credits",
            &credits,
        ];
        let out = self.command(&args).output().await.unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8(out.stdout).unwrap();
        let line = stdout.lines().find_map(|l| l.strip_prefix("api_key:")).unwrap();
        line.split_whitespace().next().unwrap().to_owned()
    }

    /// Submits a batch and waits until it is completed.
    pub async fn run_batch(&self, http: &reqwest::Client, key: &str, tasks: Vec<Value>) -> Value {
        let url = format!("{}/v1/batches", self.gateway);
        let response = http
            .post(url)
            .bearer_auth(key)
            .json(&json!({"tasks": tasks}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let batch: Value = response.json().await.unwrap();
        let url = format!("{}/v1/batches/{}", self.gateway, batch["id"].as_str().unwrap());
        wait_for("the batch to complete", Duration::from_secs(90), || async {
            let batch: Value = http.get(&url).bearer_auth(key).send().await?.json().await?;
            Ok((batch["status"] == "completed").then_some(batch))
        })
        .await
        .unwrap()
    }

    /// Replaces the simulator's faults (`POST /sim/config`).
    pub async fn set_faults(&self, http: &reqwest::Client, faults: Value) {
        let set = http
            .post(format!("{}/sim/config", self.sim))
            .json(&faults)
            .send()
            .await
            .unwrap();
        assert!(set.status().is_success(), "{}", set.status());
    }

    pub async fn sim_stats(&self, http: &reqwest::Client) -> Value {
        http.get(format!("{}/sim/stats", self.sim))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}
