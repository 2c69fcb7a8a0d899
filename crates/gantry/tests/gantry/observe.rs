//! Observability end to end, with the services as separate processes the way ops run them:
//!
//! - every process exports its spans over OTLP/HTTP to a test receiver here; one task's spans from the gateway,
//!   the submitter, the poller and settlement share one trace id and form one connected tree under the web app's
//!   `traceparent`;
//! - a real Prometheus (`prometheus` on PATH, Debian's package) scrapes every service's `/metrics` during the
//!   run, and every PromQL expression of the dashboards must parse and return data (the alert rules must parse);
//! - the JSON logs of the whole run carry trace ids and never a secret.
//!
//! `just observe-check` runs just this module (`cargo test -p gantry --test gantry observe::`).

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{body::Bytes, extract::State, routing::post, Router};
use gantry_testkit::{free_port, wait_for};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{any_value, KeyValue},
};
use prost::Message as _;
use serde_json::{json, Value};

use crate::common::{
    cluster::{Cluster, PROC_ADMIN_TOKEN},
    Backend, TestRedis,
};

/// The web app's trace context on the request that creates the batch.
const WEB_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const WEB_SPAN_ID: &str = "00f067aa0ba902b7";

/// One span as the receiver saw it.
#[derive(Debug, Clone)]
struct SeenSpan {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: HashMap<String, String>,
}

/// An OTLP/HTTP receiver: decodes trace exports, counts metric exports.
#[derive(Default)]
struct Receiver {
    spans: Mutex<Vec<SeenSpan>>,
    metric_exports: Mutex<usize>,
}

fn text(attributes: &[KeyValue]) -> HashMap<String, String> {
    attributes
        .iter()
        .filter_map(|kv| {
            let value = match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => s.clone(),
                any_value::Value::IntValue(i) => i.to_string(),
                any_value::Value::BoolValue(b) => b.to_string(),
                any_value::Value::DoubleValue(d) => d.to_string(),
                _ => return None,
            };
            Some((kv.key.clone(), value))
        })
        .collect()
}

async fn traces(State(receiver): State<Arc<Receiver>>, body: Bytes) -> &'static str {
    let request = ExportTraceServiceRequest::decode(body).unwrap();
    let mut spans = receiver.spans.lock().unwrap();
    for resource_spans in request.resource_spans {
        let resource = text(&resource_spans.resource.map(|r| r.attributes).unwrap_or_default());
        let service = resource.get("service.name").cloned().unwrap_or_default();
        assert!(resource.contains_key("service.instance.id"), "{resource:?}");
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                spans.push(SeenSpan {
                    service: service.clone(),
                    name: span.name.clone(),
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent: hex::encode(&span.parent_span_id),
                    attributes: text(&span.attributes),
                });
            }
        }
    }
    ""
}

async fn metrics(State(receiver): State<Arc<Receiver>>, _body: Bytes) -> &'static str {
    *receiver.metric_exports.lock().unwrap() += 1;
    ""
}

async fn start_receiver() -> (Arc<Receiver>, String) {
    let receiver = Arc::new(Receiver::default());
    let app = Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/metrics", post(metrics))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (receiver, url)
}

/// A real Prometheus scraping `targets` (job → host:port) every second; killed on drop.
struct Prometheus {
    child: std::process::Child,
    url: String,
    _dir: TempDir,
}

impl Prometheus {
    fn start(targets: &[(&str, String)]) -> Self {
        let dir = TempDir::new("prometheus");
        let jobs: String = targets
            .iter()
            .map(|(job, target)| {
                format!("  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n")
            })
            .collect();
        let config =
            format!("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n{jobs}");
        std::fs::write(dir.0.join("prometheus.yml"), config).unwrap();
        let port = free_port().unwrap();
        let child = std::process::Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.0.join("prometheus.yml").display()
            ))
            .arg(format!("--storage.tsdb.path={}", dir.0.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.0.join("prometheus.log")).unwrap())
            .spawn()
            .expect("`prometheus` must be on PATH (apt-get install prometheus); .ci/run installs it");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    async fn query(&self, http: &reqwest::Client, expr: &str) -> Value {
        http.get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("gantry-{what}-{}", uuid_like()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn uuid_like() -> String {
    format!("{}-{}", std::process::id(), rand::random::<u64>())
}

/// Every `expr` string inside a dashboard JSON document.
fn exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", Value::String(expr)) => out.push(expr.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_per_task_dashboards_with_data_and_clean_logs() {
    observe(Backend::Standalone, Checks::All).await;
}

/// What [`observe`] checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checks {
    /// The trace, the dashboards and alert rules (with a real Prometheus), the logs.
    All,
    /// The trace only (and that every process exports its Redis round trips).
    Trace,
}

/// The observability run on a Redis of `backend`.
pub(crate) async fn observe(backend: Backend, checks: Checks) {
    let (receiver, otlp) = start_receiver().await;
    let logs = TempDir::new("logs");
    let telemetry = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
        ("GANTRY__LOG__FORMAT", "json"),
        ("RUST_LOG", "info"),
        ("GANTRY__TELEMETRY__SAMPLE_INTERVAL_MS", "300"),
        ("GANTRY__SWEEPER__INTERVAL_MS", "300"),
        ("GANTRY__RETRY__TRANSIENT_BASE_MS", "20"),
        ("GANTRY__RETRY__RATE_LIMITED_BASE_MS", "20"),
    ];
    let mut cluster = Cluster::start_on(TestRedis::start(backend), &["sim"], &telemetry);
    let mut targets = vec![(
        "gateway",
        cluster.gateway_admin.trim_start_matches("http://").to_owned(),
    )];
    cluster.spawn_logged("gateway", &[], &logs.0.join("gateway.log"));
    for role in ["submitter", "poller", "settlement"] {
        let port = free_port().unwrap();
        let listen = format!("127.0.0.1:{port}");
        let env = [("GANTRY__TELEMETRY__METRICS_LISTEN", listen.clone())];
        cluster.spawn_logged(role, &env, &logs.0.join(format!("{role}.log")));
        targets.push((role, listen));
    }
    let prometheus = (checks == Checks::All).then(|| Prometheus::start(&targets));
    let http = reqwest::Client::new();
    let key = cluster.ready_tenant(&http, 10_000).await;

    // A batch created under the web app's trace context, run to completion.
    let tasks = vec![
        json!({"model": "veo3.1-fast", "prompt": "a lighthouse at dawn", "aspect_ratio": "16:9"}),
        json!({"model": "sora-2", "prompt": "waves", "duration": 10, "aspect_ratio": "9:16"}),
    ];
    let response = http
        .post(format!("{}/v1/batches", cluster.gateway))
        .bearer_auth(&key)
        .header("traceparent", format!("00-{WEB_TRACE_ID}-{WEB_SPAN_ID}-01"))
        .json(&json!({"tasks": tasks}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["x-trace-id"], WEB_TRACE_ID);
    let batch: Value = response.json().await.unwrap();
    let batch_id = batch["id"].as_str().unwrap().to_owned();
    let batch_url = format!("{}/v1/batches/{batch_id}", cluster.gateway);
    wait_for(
        "the traced batch to complete",
        Duration::from_secs(60),
        || async {
            let batch: Value = http
                .get(&batch_url)
                .bearer_auth(&key)
                .send()
                .await?
                .json()
                .await?;
            Ok((batch["status"] == "completed").then_some(()))
        },
    )
    .await
    .unwrap();

    // More traffic for the dashboards: a batch through 429s and 5xx (retries, error classes), and a bad request.
    cluster
        .set_faults(
            &http,
            json!({"rate_429": 0.3, "retry_after_secs": 0, "rate_5xx": 0.2, "seed": 7}),
        )
        .await;
    let flaky = (0..4)
        .map(|i| json!({"model": "veo3.1-fast", "prompt": format!("shot {i}"), "aspect_ratio": "16:9"}))
        .collect();
    cluster.run_batch(&http, &key, flaky).await;
    cluster.set_faults(&http, json!({})).await;
    let rejected = http
        .post(format!("{}/v1/batches", cluster.gateway))
        .bearer_auth(&key)
        .json(&json!({"tasks": []}))
        .send()
        .await
        .unwrap();
    assert!(rejected.status().is_client_error());

    // 1. One trace: the task's spans from all four services, connected under the web app's span.
    let spans = wait_for(
        "spans from all four services",
        Duration::from_secs(30),
        || async {
            let spans: Vec<SeenSpan> = receiver
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.trace_id == WEB_TRACE_ID)
                .cloned()
                .collect();
            let services: HashSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
            let names: HashSet<&str> = spans.iter().map(|s| s.name.as_str()).collect();
            let all = ["gateway", "submitter", "poller", "settlement"]
                .iter()
                .all(|s| services.contains(s))
                && ["submit", "poll", "settle"].iter().all(|n| names.contains(n));
            Ok(all.then_some(spans))
        },
    )
    .await
    .unwrap();
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let root = spans
        .iter()
        .find(|s| s.service == "gateway" && s.parent == WEB_SPAN_ID)
        .expect("the gateway's request span is a child of the web app's span");
    assert_eq!(
        root.attributes.get("http.route").map(String::as_str),
        Some("/v1/batches")
    );
    for span in &spans {
        assert!(
            span.parent == WEB_SPAN_ID || ids.contains(span.parent.as_str()),
            "span {} of {} has a parent outside the trace: {span:?}",
            span.name,
            span.service
        );
    }
    let task_id = format!("tsk_{}_0", batch_id.trim_start_matches("bat_"));
    for name in ["submit", "poll"] {
        let span = spans
            .iter()
            .find(|s| s.name == name && s.attributes.get("task.id") == Some(&task_id))
            .unwrap_or_else(|| panic!("a {name} span of {task_id}"));
        assert_eq!(
            span.parent, root.span_id,
            "{name} is a child of the creating request"
        );
        for attribute in ["batch.id", "tenant.id", "model", "provider"] {
            assert!(
                span.attributes.contains_key(attribute),
                "{name} lacks {attribute}: {span:?}"
            );
        }
    }
    let settle = spans.iter().find(|s| s.name == "settle").unwrap();
    assert_eq!(settle.attributes.get("batch.id"), Some(&batch_id));
    assert!(settle.attributes.contains_key("tenant.id"));
    let provider_call = spans
        .iter()
        .find(|s| s.attributes.get("gantry.provider.operation").map(String::as_str) == Some("create"))
        .expect("a provider client span");
    for attribute in [
        "http.request.method",
        "server.address",
        "url.full",
        "http.response.status_code",
    ] {
        assert!(
            provider_call.attributes.contains_key(attribute),
            "{attribute}: {provider_call:?}"
        );
    }
    assert!(
        *receiver.metric_exports.lock().unwrap() > 0,
        "metrics were pushed over OTLP"
    );
    // Every process counts its Redis round trips, and they moved.
    for (role, target) in &targets {
        let text = http
            .get(format!("http://{target}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let round_trips = text
            .lines()
            .find(|l| l.starts_with("gantry_redis_round_trips_total"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok());
        assert!(
            round_trips.is_some_and(|n| n > 0.0),
            "{role}: no gantry_redis_round_trips_total in /metrics: {round_trips:?}"
        );
    }
    let Some(prometheus) = prometheus else {
        println!("observe ({backend:?}): {} spans in the trace", spans.len());
        return;
    };

    // 2. Every dashboard query parses and returns data; every alert rule parses.
    let mut dashboard_exprs = Vec::new();
    for entry in std::fs::read_dir(repo_file("deploy/grafana/dashboards")).unwrap() {
        let path = entry.unwrap().path();
        let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        exprs(&json, &mut dashboard_exprs);
    }
    assert!(
        dashboard_exprs.len() > 20,
        "{} dashboard queries",
        dashboard_exprs.len()
    );
    let alerts: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo_file("deploy/prometheus/alerts.yml")).unwrap())
            .unwrap();
    let alert_exprs: Vec<String> = alerts["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().iter())
        .map(|r| r["expr"].as_str().unwrap().to_owned())
        .collect();
    assert!(alert_exprs.len() >= 3);
    // Wait until the last scrapes hold the run (settled batches' histograms, sampled gauges).
    let missing = wait_for(
        "every dashboard query to return data",
        Duration::from_secs(60),
        || async {
            let mut missing = Vec::new();
            for expr in &dashboard_exprs {
                let answer = prometheus.query(&http, expr).await;
                assert_eq!(answer["status"], "success", "invalid PromQL {expr}: {answer}");
                if answer["data"]["result"].as_array().is_none_or(|r| r.is_empty()) {
                    missing.push(expr.clone());
                }
            }
            Ok(missing.is_empty().then_some(missing))
        },
    )
    .await;
    assert!(missing.is_ok(), "dashboard queries without data: {missing:?}");
    for expr in &alert_exprs {
        let answer = prometheus.query(&http, expr).await;
        assert_eq!(
            answer["status"], "success",
            "invalid alert PromQL {expr}: {answer}"
        );
    }
    println!(
        "observe: {} spans in the trace, {} dashboard and {} alert queries checked",
        spans.len(),
        dashboard_exprs.len(),
        alert_exprs.len()
    );

    // 3. Logs: JSON lines with trace ids, and no secret anywhere.
    drop(cluster);
    let mut lines = 0;
    let mut traced = false;
    for role in ["gateway", "submitter", "poller", "settlement"] {
        let log = std::fs::read_to_string(logs.0.join(format!("{role}.log"))).unwrap();
        for secret in [key.as_str(), PROC_ADMIN_TOKEN, "sim-key"] {
            assert!(
                !log.contains(secret),
                "the {role} log contains a secret ({secret})"
            );
        }
        for line in log.lines() {
            let entry: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{role}: {e}: {line}"));
            lines += 1;
            if entry["trace_id"] == WEB_TRACE_ID && entry["span_id"].is_string() {
                traced = true;
            }
            assert!(
                !line.contains("OTLP") || !line.contains("error"),
                "exporter error: {line}"
            );
        }
    }
    assert!(
        lines > 0 && traced,
        "{lines} log lines; one carries the batch's trace id: {traced}"
    );
}
