//! Test support: a whole Gantry stack per test (its own redis-server on a free port, or its own Redis Cluster, the
//! simulator over real HTTP, all four services), driven over HTTP like the web app drives it.

pub mod cluster;

use std::time::Duration;

use gantry::dev::DevStack;
use gantry_core::{
    config::{RedisMode, Secret},
    store::Connection,
    Config, Store,
};
use gantry_testkit::{wait_for, RedisCluster, RedisServer, TestCerts};
use reqwest::StatusCode;
use serde_json::{json, Value};

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// Fast settings: simulated tasks take a few hundred ms, polls are frequent, ports are picked by the system.
pub fn test_config() -> Config {
    let mut config = Config::load_from(None, Vec::new()).unwrap();
    config.gateway.listen = ([127, 0, 0, 1], 0).into();
    config.gateway.admin_listen = ([127, 0, 0, 1], 0).into();
    config.gateway.admin_token = Some(Secret::new(ADMIN_TOKEN));
    // Tests poll hard; the rate limit's own test sets a low one.
    config.gateway.tenant_rate_per_sec = 100_000.0;
    config.gateway.tenant_burst = 100_000;
    config.sim.listen = ([127, 0, 0, 1], 0).into();
    config.sim.task_duration_ms = 300;
    config.sim.duration_jitter_ms = 200;
    config.poller.set_expected_ms(50);
    config.poller.interval_ms = 50;
    config.poller.max_interval_ms = 200;
    config.poller.min_interval_ms = 10;
    // Generous shared limits: tests of the limits set their own.
    for limits in [
        &mut config.provider.limits.grsai,
        &mut config.provider.limits.seedance,
    ] {
        limits.rate_per_sec = 2000.0;
        limits.burst = 200;
        limits.max_in_flight = 200;
    }
    config.poller.idle_wait_ms = 100;
    config.submitter.block_ms = 200;
    config.settlement.block_ms = 200;
    config
}

/// The Redis a test runs on: the same tests run on one server and on a Redis Cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Standalone,
    Cluster,
}

impl Backend {
    /// The backend of the tests that do not name one: a Redis Cluster when `GANTRY_TEST_BACKEND=cluster` (`just
    /// test` runs the suite a second time so), else one server.
    pub fn from_env() -> Self {
        match std::env::var("GANTRY_TEST_BACKEND").as_deref() {
            Ok("cluster") => Self::Cluster,
            _ => Self::Standalone,
        }
    }
}

/// A private Redis of one [`Backend`], stopped on drop.
pub enum TestRedis {
    Server(RedisServer),
    Cluster(RedisCluster),
}

impl TestRedis {
    pub fn start(backend: Backend) -> Self {
        match backend {
            Backend::Standalone => Self::Server(RedisServer::start().unwrap()),
            Backend::Cluster => Self::Cluster(RedisCluster::start().unwrap()),
        }
    }

    /// One that persists every write, for crash tests.
    pub fn start_durable(backend: Backend) -> Self {
        match backend {
            Backend::Standalone => Self::Server(RedisServer::start_durable().unwrap()),
            Backend::Cluster => Self::Cluster(RedisCluster::start_durable().unwrap()),
        }
    }

    /// `redis.url`: the server's URL, or the cluster's seed nodes.
    pub fn url(&self) -> String {
        match self {
            Self::Server(server) => server.url(),
            Self::Cluster(cluster) => cluster.urls(),
        }
    }

    /// `redis.mode`.
    pub fn mode(&self) -> RedisMode {
        match self {
            Self::Server(_) => RedisMode::Standalone,
            Self::Cluster(_) => RedisMode::Cluster,
        }
    }

    /// The `redis.mode` value, as an environment variable takes it.
    pub fn mode_name(&self) -> &'static str {
        match self.mode() {
            RedisMode::Standalone => "standalone",
            RedisMode::Cluster => "cluster",
        }
    }

    /// Kills the server, or the cluster node `node` (modulo the node count), at once; then starts it again
    /// after `down`, with what it persisted.
    pub async fn crash_and_restart(&mut self, node: usize, down: Duration) {
        match self {
            Self::Server(server) => {
                server.kill();
                tokio::time::sleep(down).await;
                server.restart().unwrap();
            }
            Self::Cluster(cluster) => {
                let node = node % cluster.ports().len();
                cluster.kill(node);
                tokio::time::sleep(down).await;
                cluster.restart(node).unwrap();
            }
        }
    }
}

impl From<RedisServer> for TestRedis {
    fn from(server: RedisServer) -> Self {
        Self::Server(server)
    }
}

pub struct TestApp {
    pub stack: DevStack,
    pub http: reqwest::Client,
    pub base: String,
    /// The admin listener: the admin API and `/metrics`.
    pub admin_base: String,
    /// The test's own Redis when it is not the stack's private redis-server.
    _redis: Option<TestRedis>,
}

impl TestApp {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_on_with(Backend::from_env(), tweak).await
    }

    /// A stack on a Redis of `backend` (the stack's private redis-server when standalone).
    pub async fn on(backend: Backend) -> Self {
        Self::start_on_with(backend, |_| {}).await
    }

    /// A stack on a Redis of `backend`, unless `tweak` names a Redis of its own (a test's own server).
    pub async fn start_on_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = test_config();
        tweak(&mut config);
        let redis =
            (backend == Backend::Cluster && config.redis.url.is_none()).then(|| TestRedis::start(backend));
        if let Some(redis) = &redis {
            config.redis.url = Some(Secret::new(redis.url()));
            config.redis.mode = redis.mode();
        }
        Self::start_stack(config, redis).await
    }

    /// A stack whose services reach `redis` over TLS only: at `tls_urls` (its `rediss://` ports), with `certs`'
    /// CA and client certificate.
    pub async fn on_tls(redis: TestRedis, tls_urls: String, certs: &TestCerts) -> Self {
        let mut config = test_config();
        config.redis.url = Some(Secret::new(tls_urls));
        config.redis.mode = redis.mode();
        config.redis.tls_ca_file = Some(certs.ca());
        config.redis.tls_cert_file = Some(certs.client_cert());
        config.redis.tls_key_file = Some(certs.client_key());
        Self::start_stack(config, Some(redis)).await
    }

    async fn start_stack(config: Config, redis: Option<TestRedis>) -> Self {
        let stack = DevStack::start(config).await.unwrap();
        let (base, admin_base) = (stack.gateway_url(), stack.admin_url());
        let app = Self {
            stack,
            http: reqwest::Client::new(),
            base,
            admin_base,
            _redis: redis,
        };
        app.wait_ready().await;
        app
    }

    /// Waits until the workers have joined their streams (each creates its consumer groups on start).
    async fn wait_ready(&self) {
        let keys = gantry_core::keys::Keys::new("gantry", self.stack.config.redis.partitions);
        let streams: Vec<String> = (0..keys.partitions())
            .flat_map(|p| [keys.submit_stream(p), keys.settle_stream(p)])
            .collect();
        let conn = self.connection().await;
        wait_for(
            "the workers to join their streams",
            Duration::from_secs(20),
            || {
                let (mut conn, streams) = (conn.clone(), streams.clone());
                async move {
                    // One key per command: a cluster refuses a multi-key EXISTS across slots.
                    for stream in &streams {
                        let exists: bool = redis::cmd("EXISTS").arg(stream).query_async(&mut conn).await?;
                        if !exists {
                            return Ok(None);
                        }
                    }
                    Ok(Some(()))
                }
            },
        )
        .await
        .unwrap();
    }

    /// A connection to the stack's Redis, whichever the backend (on a cluster, each command goes to the node of its
    /// key's slot), to look behind the API.
    pub async fn connection(&self) -> Connection {
        let redis = &self.stack.config.redis;
        let tls = redis.tls_certificates().unwrap();
        Connection::open_tls(redis.mode, redis.url.as_ref().unwrap().expose(), tls)
            .await
            .unwrap()
    }

    /// A store on the stack's Redis, to look behind the API.
    pub async fn store(&self) -> Store {
        Store::from_config(&self.stack.config).await.unwrap()
    }

    /// Checks every tenant's books (what `gantry admin verify-ledger` does): panics on any violation.
    pub async fn verify_ledger(&self) {
        let store = self.store().await;
        let tenants = store.tenant_ids().await.unwrap();
        assert!(!tenants.is_empty());
        for tenant in tenants {
            let audit = store.audit_tenant(&tenant).await.unwrap();
            assert!(audit.violations.is_empty(), "{tenant}: {:?}", audit.violations);
        }
    }

    /// Creates a tenant through the admin API; returns (tenant id, api key).
    pub async fn tenant(&self, credits: u64) -> (String, String) {
        let (status, body) = self
            .send(
                self.http
                    .post(format!("{}/admin/v1/tenants", self.admin_base))
                    .bearer_auth(ADMIN_TOKEN)
                    .json(&json!({"name": "acme", "credits": credits})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (
            body["tenant_id"].as_str().unwrap().into(),
            body["api_key"].as_str().unwrap().into(),
        )
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn get(&self, key: &str, path: &str) -> (StatusCode, Value) {
        self.send(self.http.get(format!("{}{path}", self.base)).bearer_auth(key))
            .await
    }

    pub async fn post_batch(&self, key: &str, body: &Value) -> (StatusCode, Value) {
        self.send(
            self.http
                .post(format!("{}/v1/batches", self.base))
                .bearer_auth(key)
                .json(body),
        )
        .await
    }

    /// Submits a batch that must be accepted; returns its id.
    pub async fn submit(&self, key: &str, body: &Value) -> String {
        let (status, batch) = self.post_batch(key, body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{batch}");
        batch["id"].as_str().unwrap().to_owned()
    }

    /// Waits until the batch is completed or cancelled and returns it.
    pub async fn wait_final(&self, key: &str, batch_id: &str) -> Value {
        wait_for("the batch to be final", Duration::from_secs(60), || async {
            let (_, batch) = self.get(key, &format!("/v1/batches/{batch_id}")).await;
            Ok(matches!(batch["status"].as_str(), Some("completed" | "cancelled")).then_some(batch))
        })
        .await
        .unwrap()
    }

    pub async fn tasks(&self, key: &str, batch_id: &str) -> Vec<Value> {
        let (status, list) = self
            .get(key, &format!("/v1/batches/{batch_id}/tasks?limit=100"))
            .await;
        assert_eq!(status, StatusCode::OK, "{list}");
        list["data"].as_array().unwrap().clone()
    }

    pub async fn credits(&self, key: &str) -> Value {
        self.get(key, "/v1/credits").await.1
    }
}

/// The calls per command Redis has served so far (`INFO commandstats`), summed over a cluster's nodes.
pub async fn command_calls(
    redis: &mut (impl redis::aio::ConnectionLike + Send),
) -> std::collections::BTreeMap<String, u64> {
    let mut calls = std::collections::BTreeMap::new();
    for info in info_sections(redis, "commandstats").await {
        for (command, n) in gantry_testkit::command_calls(&info) {
            *calls.entry(command).or_default() += n;
        }
    }
    calls
}

/// `INFO section`: one text from a server, one per node from a cluster (the client asks every node).
pub async fn info_sections(
    redis: &mut (impl redis::aio::ConnectionLike + Send),
    section: &str,
) -> Vec<String> {
    let reply: redis::Value = redis::cmd("INFO").arg(section).query_async(redis).await.unwrap();
    match reply {
        redis::Value::Map(nodes) => nodes
            .into_iter()
            .map(|(_, info)| redis::from_redis_value(info).unwrap())
            .collect(),
        one => vec![redis::from_redis_value(one).unwrap()],
    }
}

pub fn veo(prompt: &str) -> Value {
    json!({"model": "veo3.1-fast", "prompt": prompt, "aspect_ratio": "16:9"})
}

pub fn sora(prompt: &str, duration: u32) -> Value {
    json!({"model": "sora-2", "prompt": prompt, "aspect_ratio": "9:16", "duration": duration})
}
