//! What both benchmarks share: a local stack tuned for load, and a client that drives one batch over HTTP.
#![allow(clippy::unwrap_used, dead_code)]

use std::time::{Duration, Instant};

use gantry::dev::DevStack;
use gantry_core::{config::Secret, Config};
use serde_json::{json, Value};

pub const ADMIN: &str = "bench";

/// The defaults, on free ports, with `max_tasks` per batch and provider limits out of the way.
pub fn config(max_tasks: usize) -> Config {
    let mut config = Config::load_from(None, Vec::new()).unwrap();
    config.gateway.listen = ([127, 0, 0, 1], 0).into();
    config.gateway.admin_listen = ([127, 0, 0, 1], 0).into();
    config.gateway.admin_token = Some(Secret::new(ADMIN));
    config.gateway.max_tasks_per_batch = max_tasks;
    config.gateway.tenant_rate_per_sec = 1e6;
    config.gateway.tenant_burst = 1_000_000;
    config.sim.listen = ([127, 0, 0, 1], 0).into();
    config.poller.concurrency = 64;
    config.provider.limits.grsai.rate_per_sec = 1e6;
    config.provider.limits.grsai.burst = 10_000;
    config.provider.limits.grsai.max_in_flight = 10_000;
    config
}

/// One tenant's view of the stack.
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    /// Creates a tenant with `credits`.
    pub async fn new(stack: &DevStack, credits: usize) -> Self {
        let http = reqwest::Client::new();
        let base = stack.gateway_url();
        let tenant: Value = http
            .post(format!("{}/admin/v1/tenants", stack.admin_url()))
            .bearer_auth(ADMIN)
            .json(&json!({"name": "bench", "credits": credits}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let key = tenant["api_key"].as_str().unwrap().to_owned();
        Self { http, base, key }
    }

    /// `veo3.1-fast` tasks with distinct prompts `<label> shot <i>`.
    pub fn tasks(label: &str, n: usize) -> Vec<Value> {
        (0..n)
            .map(|i| json!({"model": "veo3.1-fast", "prompt": format!("{label} shot {i}"), "aspect_ratio": "16:9"}))
            .collect()
    }

    /// Submits a batch; returns its id and how long the gateway took to accept it.
    pub async fn submit(&self, tasks: Vec<Value>) -> (String, Duration) {
        let started = Instant::now();
        let batch: Value = self
            .http
            .post(format!("{}/v1/batches", self.base))
            .bearer_auth(&self.key)
            .json(&json!({"tasks": tasks}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (batch["id"].as_str().unwrap().to_owned(), started.elapsed())
    }

    /// Reads the batch every 10 ms until it is completed; returns it and how many reads that took.
    pub async fn wait_completed(&self, id: &str) -> (Value, u64) {
        let mut reads = 0;
        loop {
            let batch: Value = self
                .http
                .get(format!("{}/v1/batches/{id}", self.base))
                .bearer_auth(&self.key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            reads += 1;
            if batch["status"] == "completed" {
                return (batch, reads);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A connection to the stack's Redis.
pub async fn redis(stack: &DevStack) -> redis::aio::MultiplexedConnection {
    let url = stack.config.redis.url.as_ref().unwrap().expose().to_owned();
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}
