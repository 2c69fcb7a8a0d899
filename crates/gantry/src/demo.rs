//! `gantry demo` (behind `just demo`): starts the local stack, creates a tenant, submits a six-shot batch with
//! mixed models (one shot forced to fail), shows live progress until the batch is settled, then prints the
//! settlement. It talks to the gateway over HTTP exactly as the web app would.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use gantry_core::{
    config::Secret,
    domain::{Mode, Model},
    model::{BatchView, TaskView},
    Config,
};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::dev::DevStack;

/// The longest the demo waits for its batch.
const DEADLINE: Duration = Duration::from_secs(90);

/// The demo's batch: six shots for an ad, the fourth forced to fail by the simulator.
pub fn demo_batch() -> Value {
    json!({
        "mode": Mode::Parallel,
        "metadata": {"campaign": "demo"},
        "tasks": [
            {"custom_id": "opening", "model": Model::Sora2, "prompt": "A sunrise over a quiet harbour", "aspect_ratio": "16:9", "duration": 10},
            {"custom_id": "product", "model": Model::Veo31Fast, "prompt": "A glass bottle turning on a pedestal", "aspect_ratio": "16:9"},
            {"custom_id": "hands", "model": Model::Veo31Fast, "prompt": "Hands opening the bottle", "aspect_ratio": "9:16"},
            {"custom_id": "glitch", "model": Model::Veo31Pro, "prompt": "A shot the provider rejects [sim:fail]", "aspect_ratio": "16:9"},
            {"custom_id": "people", "model": Model::Sora2, "prompt": "Friends laughing at a beach party", "aspect_ratio": "9:16", "duration": 15},
            {"custom_id": "logo", "model": Model::Veo31Pro, "prompt": "The logo forms out of sea foam", "aspect_ratio": "16:9"}
        ]
    })
}

/// Settings that make the demo take seconds: fast simulated tasks, fast polls, ports chosen by the system.
pub fn demo_config(mut config: Config) -> Config {
    config.gateway.listen = ([127, 0, 0, 1], 0).into();
    config.gateway.admin_listen = ([127, 0, 0, 1], 0).into();
    config.gateway.admin_token = Some(Secret::new(format!("demo-{}", std::process::id())));
    config.sim.listen = ([127, 0, 0, 1], 0).into();
    config.sim.task_duration_ms = 4000;
    config.sim.duration_jitter_ms = 4000;
    config.poller.set_expected_ms(500);
    config.poller.interval_ms = 400;
    config.poller.max_interval_ms = 1000;
    config.submitter.block_ms = 500;
    config.settlement.block_ms = 500;
    config
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    let stack = DevStack::start(demo_config(config)).await?;
    let result = drive(&stack).await;
    let mut stack = stack;
    stack.shutdown().await?;
    result
}

async fn drive(stack: &DevStack) -> anyhow::Result<()> {
    let base = stack.gateway_url();
    let http = reqwest::Client::new();
    let admin = stack
        .config
        .gateway
        .admin_token
        .as_ref()
        .map(Secret::expose)
        .unwrap_or_default();
    println!("gantry demo: gateway {base}, simulator {}", stack.sim.base_url());

    let tenant: Value = ok_json(
        http.post(format!("{}/admin/v1/tenants", stack.admin_url()))
            .bearer_auth(admin)
            .json(&json!({"name": "demo", "credits": 200}))
            .send()
            .await?,
    )
    .await
    .context("creating the demo tenant")?;
    let key = tenant["api_key"]
        .as_str()
        .context("no api_key in the answer")?
        .to_owned();
    println!(
        "tenant {} created with 200 credits",
        tenant["tenant_id"].as_str().unwrap_or("?")
    );

    let batch: Value = ok_json(
        http.post(format!("{base}/v1/batches"))
            .bearer_auth(&key)
            .json(&demo_batch())
            .send()
            .await?,
    )
    .await
    .context("submitting the batch")?;
    let batch_id = batch["id"].as_str().context("no batch id")?.to_owned();
    println!(
        "batch {batch_id} accepted: 6 shots, {} credits frozen",
        batch["credits"]["frozen"]
    );

    let bars = MultiProgress::new();
    let batch_bar = bars.add(ProgressBar::new(6));
    batch_bar.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:30.cyan/blue}] {pos}/{len} tasks done  {msg}")?
            .progress_chars("=> "),
    );
    batch_bar.set_prefix("batch");
    let task_style = ProgressStyle::with_template("{prefix:>8} [{bar:30.green/white}] {pos:>3}%  {msg}")?
        .progress_chars("=> ");
    let task_bars: Vec<ProgressBar> = (0..6)
        .map(|i| {
            let bar = bars.add(ProgressBar::new(100));
            bar.set_style(task_style.clone());
            bar.set_prefix(format!("shot {}", i + 1));
            bar
        })
        .collect();

    let started = Instant::now();
    let final_batch = loop {
        let batch: BatchView = ok_json(
            http.get(format!("{base}/v1/batches/{batch_id}"))
                .bearer_auth(&key)
                .send()
                .await?,
        )
        .await?;
        let tasks: Page<TaskView> = ok_json(
            http.get(format!("{base}/v1/batches/{batch_id}/tasks"))
                .bearer_auth(&key)
                .send()
                .await?,
        )
        .await?;
        for (bar, task) in task_bars.iter().zip(&tasks.data) {
            bar.set_position(u64::from(task.progress));
            bar.set_message(format!(
                "{:<10} {:<12} {}",
                task.status,
                task.model,
                task.custom_id.as_deref().unwrap_or("")
            ));
        }
        let counts = &batch.request_counts;
        batch_bar.set_position(counts.succeeded + counts.failed + counts.cancelled);
        batch_bar.set_message(batch.status.to_string());
        if batch.status.is_final() {
            break batch;
        }
        if started.elapsed() > DEADLINE {
            bail!("the batch did not finish within {DEADLINE:?}: {batch:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for bar in task_bars.iter().chain([&batch_bar]) {
        bar.finish();
    }

    let credits: Value = ok_json(
        http.get(format!("{base}/v1/credits"))
            .bearer_auth(&key)
            .send()
            .await?,
    )
    .await?;
    let counts = &final_batch.request_counts;
    println!();
    println!(
        "batch {batch_id} {} in {:.1}s: {} succeeded, {} failed",
        final_batch.status,
        started.elapsed().as_secs_f64(),
        counts.succeeded,
        counts.failed
    );
    println!(
        "settlement: charged {} credits, refunded {}; tenant balance {} (frozen {}, charged {})",
        final_batch.credits.charged,
        final_batch.credits.refunded,
        credits["balance"],
        credits["frozen"],
        credits["charged"]
    );
    Ok(())
}

/// The JSON body of a 2xx answer, or an error quoting the problem document.
async fn ok_json<T: serde::de::DeserializeOwned>(response: reqwest::Response) -> anyhow::Result<T> {
    let status = response.status();
    let body = response.text().await?;
    if !status.is_success() {
        bail!("HTTP {status}: {body}");
    }
    serde_json::from_str(&body).with_context(|| format!("unreadable answer: {body}"))
}

/// One page of a list, as the API answers it.
#[derive(serde::Deserialize)]
struct Page<T> {
    data: Vec<T>,
}
