//! What the tests share: a started simulator with a client, a webhook receiver, and waiting with deadlines.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{extract::State, http::StatusCode, routing::post, Router};
use gantry_sim::{SimConfig, SimHandle, SimStats};
use serde_json::{json, Value};
use tokio::{net::TcpListener, sync::watch, time::Instant};

/// Between two looks at a condition that only time changes (a task's simulated progress, the simulator's counters).
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The Seedance task collection.
pub const SEEDANCE_TASKS: &str = "/api/v3/contents/generations/tasks";

pub fn config(task_duration_ms: u64) -> SimConfig {
    SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        task_duration_ms,
        ..SimConfig::default()
    }
}

/// A started simulator and an HTTP client with the right key.
pub struct TestSim {
    pub handle: SimHandle,
    pub http: reqwest::Client,
}

impl TestSim {
    pub async fn start(config: SimConfig) -> Self {
        let handle = gantry_sim::spawn(config).await.unwrap();
        Self {
            handle,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.handle.base_url())
    }

    /// An authenticated request to `path`, not yet sent.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(self.handle.api_key())
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .request(reqwest::Method::POST, path)
            .json(&body)
            .send()
            .await
            .unwrap();
        answer(response).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        answer(self.request(reqwest::Method::GET, path).send().await.unwrap()).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        answer(self.request(reqwest::Method::DELETE, path).send().await.unwrap()).await
    }

    /// A Sora create with `extra` fields merged in; returns the status and the answer.
    pub async fn try_create_sora(&self, prompt: &str, extra: Value) -> (u16, Value) {
        let mut body = json!({
            "model": "sora-2", "prompt": prompt, "url": "http://img/first.png", "aspectRatio": "16:9",
            "duration": 10, "size": "small", "webHook": "-1", "shutProgress": true,
        });
        if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
            body.extend(extra);
        }
        self.post("/v1/video/sora-video", body).await
    }

    pub async fn create_sora(&self, prompt: &str) -> String {
        self.create_sora_with(prompt, json!({})).await
    }

    pub async fn create_sora_with(&self, prompt: &str, extra: Value) -> String {
        let (status, answer) = self.try_create_sora(prompt, extra).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["code"], 0);
        answer["data"]["id"].as_str().unwrap().to_owned()
    }

    pub async fn poll(&self, id: &str) -> Value {
        let (status, answer) = self.post("/v1/draw/result", json!({ "id": id })).await;
        assert_eq!(status, 200, "{answer}");
        answer
    }

    /// Polls until the task leaves `running`, returning every answer's `data` in order.
    pub async fn poll_to_end(&self, id: &str) -> Vec<Value> {
        let deadline = Instant::now() + DEADLINE;
        let mut seen = Vec::new();
        loop {
            let data = self.poll(id).await["data"].clone();
            let running = data["status"] == "running";
            seen.push(data);
            if !running {
                return seen;
            }
            assert!(Instant::now() < deadline, "task {id} still running");
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Replaces the faults over HTTP, as a test of another crate would.
    pub async fn set_faults(&self, faults: Value) {
        let response = self
            .http
            .post(self.url("/sim/config"))
            .json(&faults)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
    }

    /// Waits until the stats satisfy `condition`, and returns them.
    pub async fn wait_for_stats(&self, what: &str, condition: impl Fn(&SimStats) -> bool) -> SimStats {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let stats = self.handle.stats();
            if condition(&stats) {
                return stats;
            }
            assert!(Instant::now() < deadline, "never {what}: {stats:?}");
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

/// Status and JSON body of an answer.
async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Bounds `future` by [`DEADLINE`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} took longer than {DEADLINE:?}"),
    }
}

/// A webhook receiver on port 0 that records every JSON body it is sent and answers with a fixed status.
pub struct Receiver {
    pub url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    count: watch::Receiver<usize>,
}

#[derive(Clone)]
struct ReceiverState {
    answer: StatusCode,
    bodies: Arc<Mutex<Vec<Value>>>,
    count: Arc<watch::Sender<usize>>,
}

impl Receiver {
    pub async fn start(answer: StatusCode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let (count, receiver) = watch::channel(0);
        let state = ReceiverState {
            answer,
            bodies: Arc::clone(&bodies),
            count: Arc::new(count),
        };
        let app = Router::new().route("/hook", post(record)).with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            bodies,
            count: receiver,
        }
    }

    /// Waits until at least `n` bodies have arrived, and returns all of them.
    pub async fn wait_for(&self, n: usize) -> Vec<Value> {
        let mut count = self.count.clone();
        within("waiting for callbacks", count.wait_for(|&count| count >= n))
            .await
            .unwrap();
        self.bodies()
    }

    pub fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }
}

async fn record(State(state): State<ReceiverState>, body: String) -> StatusCode {
    let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    let count = {
        let mut bodies = state.bodies.lock().unwrap();
        bodies.push(value);
        bodies.len()
    };
    state.count.send_replace(count);
    state.answer
}
