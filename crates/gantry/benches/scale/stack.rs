//! The system under test: a private `redis-server` and one `gantry <service>` process per service (release build),
//! configured the way the benchmark wants it, with each process's CPU time and Prometheus counters at hand.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{bail, Context};
use gantry_core::{keys::Keys, Config};
use gantry_testkit::{free_port, wait_for, RedisServer};
use tokio::process::{Child, Command};

/// The `gantry` binary cargo built for this benchmark (the bench profile: optimised).
pub const BIN: &str = env!("CARGO_BIN_EXE_gantry");

/// The `gantry` binary the services run: `BENCH_BIN` when set (to compare two builds on one harness), else the
/// release build of this checkout.
fn service_bin() -> std::ffi::OsString {
    std::env::var_os("BENCH_BIN").unwrap_or_else(|| BIN.into())
}

/// The Prometheus counter of Redis requests (round trips) each process has sent.
const ROUND_TRIPS: &str = "gantry_redis_round_trips_total";

/// The services, in start order. `sim` has no Redis connection and serves no `/metrics`.
const ROLES: [&str; 5] = ["sim", "gateway", "submitter", "poller", "settlement"];

/// What a run asks of the stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// The largest batch the gateway must accept.
    pub max_tasks_per_batch: usize,
    /// `retention.completed_secs`; `None` leaves the product default.
    pub retention_secs: Option<u64>,
}

/// One running process.
struct Service {
    role: &'static str,
    child: Child,
    /// Where it serves `/metrics` (the gateway's admin listener, a worker's `telemetry.metrics_listen`).
    metrics: Option<String>,
}

/// The private Redis and the `gantry` processes, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Stack {
    pub redis: RedisServer,
    pub env: Vec<(String, String)>,
    pub gateway: String,
    pub admin: String,
    pub sim: String,
    pub admin_token: String,
    pub keys: Keys,
    /// The configuration every service loads (defaults and the environment above).
    pub config: Config,
    pub logs: PathBuf,
    services: Vec<Service>,
}

/// Settings the user may override with their own `GANTRY__*` variables.
fn tunable_defaults(options: &StackOptions) -> Vec<(&'static str, String)> {
    let high = |v: &str| v.to_owned();
    let mut env = vec![
        // The provider answers at once, and the first status call comes right after the create.
        ("GANTRY__SIM__TASK_DURATION_MS", high("0")),
        ("GANTRY__SIM__DURATION_JITTER_MS", high("0")),
        ("GANTRY__POLLER__EXPECTED_SORA2_MS", high("0")),
        ("GANTRY__POLLER__EXPECTED_VEO31_FAST_MS", high("0")),
        ("GANTRY__POLLER__EXPECTED_VEO31_PRO_MS", high("0")),
        ("GANTRY__POLLER__INTERVAL_MS", high("50")),
        ("GANTRY__POLLER__MAX_INTERVAL_MS", high("50")),
        ("GANTRY__POLLER__MIN_INTERVAL_MS", high("10")),
        ("GANTRY__POLLER__IDLE_WAIT_MS", high("20")),
        // With the provider answering at once, each worker's throughput is its concurrency over a call's
        // latency: 64 left a core idle on 2 cores, and every doubling since made group commits larger (round trips
        // per task on 200 x 100: 0.30 at 256, 0.21 at 512, 0.165 at 1,024 with reads of 512; 1,024 over 512 gave
        // +6-22 % tasks/s on 2,000 x 10 and -2 to +7 % on 200 x 100 in interleaved pairs).
        ("GANTRY__POLLER__CONCURRENCY", high("1024")),
        ("GANTRY__SUBMITTER__CONCURRENCY", high("1024")),
        ("GANTRY__SUBMITTER__READ_COUNT", high("512")),
        // One standalone Redis, like the peer's: a single partition, so every group commit (claims, the
        // submitter's and the poller's batched scripts) gathers the work of the whole system instead of an eighth
        // of it (partitions only spread keys over cluster masters; 8 here cost 10-16 % of the tasks/s on 2,000 x 10
        // and 3-6 % on 200 x 100, interleaved pairs).
        ("GANTRY__REDIS__PARTITIONS", high("1")),
        // `gantry sim` speaks HTTP/2 without negotiation: a few multiplexed connections instead of one per call.
        ("GANTRY__PROVIDER__GRSAI__H2C", high("true")),
        ("GANTRY__PROVIDER__SEEDANCE__H2C", high("true")),
        // Six processes share two cores: each runs on one thread (a Node process, like the peer's, is one too).
        ("GANTRY__RUNTIME__WORKER_THREADS", high("1")),
        // Neither the provider limits nor the tenant rate limit may be the bottleneck.
        ("GANTRY__PROVIDER__LIMITS__GRSAI__RATE_PER_SEC", high("1000000")),
        ("GANTRY__PROVIDER__LIMITS__GRSAI__BURST", high("1000000")),
        ("GANTRY__PROVIDER__LIMITS__GRSAI__MAX_IN_FLIGHT", high("100000")),
        (
            "GANTRY__PROVIDER__LIMITS__SEEDANCE__RATE_PER_SEC",
            high("1000000"),
        ),
        ("GANTRY__PROVIDER__LIMITS__SEEDANCE__BURST", high("1000000")),
        (
            "GANTRY__PROVIDER__LIMITS__SEEDANCE__MAX_IN_FLIGHT",
            high("100000"),
        ),
        ("GANTRY__GATEWAY__TENANT_RATE_PER_SEC", high("1000000")),
        ("GANTRY__GATEWAY__TENANT_BURST", high("1000000")),
        (
            "GANTRY__GATEWAY__MAX_TASKS_PER_BATCH",
            options.max_tasks_per_batch.max(100).to_string(),
        ),
        ("GANTRY__GATEWAY__MAX_BODY_BYTES", (8 << 20).to_string()),
    ];
    if let Some(secs) = options.retention_secs {
        env.push(("GANTRY__RETENTION__COMPLETED_SECS", secs.to_string()));
        // Retention may not be shorter than the idempotency records (the harness sends no Idempotency-Key).
        env.push(("GANTRY__GATEWAY__IDEMPOTENCY_TTL_SECS", secs.to_string()));
    }
    env
}

impl Stack {
    /// Starts Redis and every service, and waits until they answer.
    pub async fn start(options: &StackOptions) -> anyhow::Result<Self> {
        let redis = RedisServer::start().context("starting redis-server")?;
        let port = |what: &str| free_port().with_context(|| format!("a free port for {what}"));
        let (gateway_port, admin_port, sim_port) = (port("gateway")?, port("admin")?, port("sim")?);
        let admin_token = format!("bench-admin-{:032x}", rand::random::<u128>());
        let sim = format!("http://127.0.0.1:{sim_port}");

        let mut env: Vec<(String, String)> = tunable_defaults(options)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        // The user's own GANTRY__ settings override the defaults above, not the addresses below.
        env.extend(std::env::vars().filter(|(k, _)| k.starts_with("GANTRY__")));
        let forced = [
            ("GANTRY__REDIS__URL", redis.url()),
            ("GANTRY__GATEWAY__LISTEN", format!("127.0.0.1:{gateway_port}")),
            ("GANTRY__GATEWAY__ADMIN_LISTEN", format!("127.0.0.1:{admin_port}")),
            ("GANTRY__GATEWAY__ADMIN_TOKEN", admin_token.clone()),
            ("GANTRY__SIM__LISTEN", format!("127.0.0.1:{sim_port}")),
            ("GANTRY__PROVIDER__GRSAI__BASE_URL", sim.clone()),
            ("GANTRY__PROVIDER__SEEDANCE__BASE_URL", sim.clone()),
            (
                "RUST_LOG",
                std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "warn".into()),
            ),
        ];
        env.extend(forced.into_iter().map(|(k, v)| (k.to_owned(), v)));

        let config = Config::load_from(None, env.clone()).context("the benchmark's configuration")?;
        let keys = Keys::new(config.redis.key_prefix.clone(), config.redis.partitions);
        let logs = target_dir().join("bench-logs");
        std::fs::create_dir_all(&logs).context("creating the log directory")?;

        let mut stack = Self {
            redis,
            env,
            gateway: format!("http://127.0.0.1:{gateway_port}"),
            admin: format!("http://127.0.0.1:{admin_port}"),
            sim,
            admin_token,
            keys,
            config,
            logs,
            services: Vec::new(),
        };
        for role in ROLES {
            let metrics = match role {
                "sim" => None,
                "gateway" => Some(format!("{}/metrics", stack.admin)),
                _ => Some(format!("http://127.0.0.1:{}/metrics", port(role)?)),
            };
            let mut command = stack.command(&[role]);
            if let (Some(url), false) = (&metrics, role == "gateway") {
                let addr = url.trim_start_matches("http://").trim_end_matches("/metrics");
                command.env("GANTRY__TELEMETRY__METRICS_LISTEN", addr);
            }
            let log = std::fs::File::create(stack.logs.join(format!("{role}.log")))?;
            let child = command
                .stdout(Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting `gantry {role}`"))?;
            stack.services.push(Service { role, child, metrics });
        }
        if let Some(path) = std::env::var_os("REDIS_MONITOR") {
            // Diagnostics only: every command Redis runs, scripts' inner calls included, to a file. MONITOR
            // costs Redis a lot, so the figures of such a run are not comparable.
            let file = std::fs::File::create(&path)?;
            let child = Command::new("redis-cli")
                .args(["-p", &stack.redis.port().to_string(), "monitor"])
                .stdout(file)
                .kill_on_drop(true)
                .spawn()
                .context("starting redis-cli monitor")?;
            stack.services.push(Service {
                role: "monitor",
                child,
                metrics: None,
            });
        }
        stack.wait_ready().await?;
        Ok(stack)
    }

    /// A `gantry` command with the stack's environment (and nothing else of the caller's but `PATH`).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(service_bin());
        command
            .args(args)
            .env_clear()
            .envs(self.env.iter().cloned())
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        command
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let mut probes = vec![
            format!("{}/sim/stats", self.sim),
            format!("{}/readyz", self.admin),
        ];
        probes.extend(
            self.services
                .iter()
                .filter(|s| s.role != "gateway")
                .filter_map(|s| s.metrics.as_ref())
                .map(|m| m.replace("/metrics", "/healthz")),
        );
        for url in probes {
            let result = wait_for(&url, Duration::from_secs(30), || async {
                let answer = http.get(&url).send().await;
                Ok(answer.is_ok_and(|r| r.status().is_success()).then_some(()))
            })
            .await;
            if let Err(e) = result {
                self.check_alive()?;
                return Err(e).with_context(|| format!("logs in {}", self.logs.display()));
            }
        }
        Ok(())
    }

    /// Fails naming the first service that has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for service in &mut self.services {
            if let Some(status) = service.child.try_wait()? {
                bail!(
                    "`gantry {}` exited with {status}; see {}",
                    service.role,
                    self.logs.join(format!("{}.log", service.role)).display()
                );
            }
        }
        Ok(())
    }

    /// CPU seconds (user + system) each service process has used so far, by role.
    pub fn cpu_seconds(&self) -> Vec<(&'static str, f64)> {
        self.services
            .iter()
            .filter_map(|s| Some((s.role, process_cpu_seconds(s.child.id()?)?)))
            .collect()
    }

    /// The sum of `gantry_redis_round_trips_total` over every process, by role; `None` where a process does not
    /// export it (or did not answer).
    pub async fn round_trips(&self, http: &reqwest::Client) -> Vec<(&'static str, Option<f64>)> {
        let mut out = Vec::new();
        for service in &self.services {
            let Some(url) = &service.metrics else { continue };
            let text = match http.get(url).send().await {
                Ok(answer) => answer.text().await.ok(),
                Err(_) => None,
            };
            out.push((service.role, text.and_then(|t| counter_sum(&t, ROUND_TRIPS))));
        }
        out
    }

    /// Stops every service: SIGTERM, a grace period, then SIGKILL.
    pub async fn stop(&mut self) {
        for service in &self.services {
            if let Some(pid) = service.child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
        }
        for service in &mut self.services {
            let waited = tokio::time::timeout(Duration::from_secs(5), service.child.wait()).await;
            if waited.is_err() {
                let _ = service.child.kill().await;
            }
        }
    }
}

/// The sum of every sample of the counter `name` in a Prometheus text exposition, or `None` when there is none.
pub fn counter_sum(text: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let value = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let Some(value) = value {
            *total.get_or_insert(0.0) += value;
        }
    }
    total
}

/// User + system CPU seconds of a process, from `/proc/<pid>/stat` (clock ticks of 1/100 s).
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis are plain.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

/// The cargo target directory (`CARGO_TARGET_DIR`, else `<workspace>/target`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}
