//! The workload, as the peer benchmark defines it: B batches of K `veo3.1-fast` tasks over 16 tenants (batch `b`
//! belongs to tenant `b % 16`), task `n` of a batch failing at the provider when `n % 10 == 7` (10 %), each task
//! about 300 bytes of JSON like the peer's payload. Tenants are provisioned through the admin API.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Tenants the batches are spread over.
pub const TENANTS: usize = 16;

/// The peer's four prompts (`lib/common.js`).
const PROMPTS: [&str; 4] = [
    "A slow cinematic dolly shot through a neon-lit night market in the rain, shallow depth of field, 35mm film grain",
    "Aerial drone shot over a misty pine forest at sunrise, golden light rays, gentle camera drift, photorealistic",
    "Close-up of a ceramic cup of coffee on a wooden table, steam rising, soft window light, macro lens, calm mood",
    "A red vintage car driving along a coastal cliff road at dusk, tracking shot, warm highlights, anamorphic flare",
];

/// Whether task `i` of a batch fails (the simulator fails a prompt containing `[sim:fail]`).
pub fn fails(i: usize) -> bool {
    i % 10 == 7
}

/// Tasks of a K-task batch that fail.
pub fn failing_per_batch(k: usize) -> usize {
    (0..k).filter(|i| fails(*i)).count()
}

/// The body of batch `b` of K tasks: distinct prompts (the batch and index are in them), a reference image.
pub fn batch_body(b: usize, k: usize) -> Value {
    let tasks: Vec<Value> = (0..k)
        .map(|i| {
            let n = b * k + i;
            let marker = if fails(i) { " [sim:fail]" } else { "" };
            json!({
                "custom_id": format!("b{b}-{i}"),
                "model": "veo3.1-fast",
                "prompt": format!("{} (batch {b}, shot {i}){marker}", PROMPTS[n % PROMPTS.len()]),
                "aspect_ratio": if n % 3 == 0 { "9:16" } else { "16:9" },
                "reference_image_urls": [format!("https://assets.example.com/ref/t{:03}/{b}/{i}.png", b % TENANTS)],
            })
        })
        .collect();
    json!({ "tasks": tasks })
}

/// A tenant the benchmark created.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: String,
    pub key: String,
}

/// Creates the tenants with `credits` each, through `POST /admin/v1/tenants`.
pub async fn create_tenants(
    http: &reqwest::Client,
    admin: &str,
    token: &str,
    credits: u64,
) -> anyhow::Result<Vec<Tenant>> {
    let mut tenants = Vec::with_capacity(TENANTS);
    for t in 0..TENANTS {
        let answer = http
            .post(format!("{admin}/admin/v1/tenants"))
            .bearer_auth(token)
            .json(&json!({"name": format!("bench-t{t:03}"), "credits": credits}))
            .send()
            .await?;
        let status = answer.status();
        let body: Value = answer.json().await.context("the tenant creation answer")?;
        let (Some(id), Some(key)) = (body["tenant_id"].as_str(), body["api_key"].as_str()) else {
            bail!("creating a tenant answered {status}: {body}");
        };
        tenants.push(Tenant {
            id: id.to_owned(),
            key: key.to_owned(),
        });
    }
    Ok(tenants)
}

/// One accepted batch.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub b: usize,
    pub id: String,
    /// Wall-clock time just before the first `POST` of this batch (ms since the epoch).
    pub t0_ms: u64,
    /// `POST`s answered 429 or 503 before it was accepted.
    pub retries: u32,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Submits batch `b` (`POST /v1/batches`), retrying a 429 or 503 after a short pause.
pub async fn submit(
    http: &reqwest::Client,
    gateway: &str,
    tenant: &Tenant,
    b: usize,
    body: Vec<u8>,
) -> anyhow::Result<Accepted> {
    let t0_ms = now_ms();
    let mut retries = 0;
    loop {
        let answer = http
            .post(format!("{gateway}/v1/batches"))
            .bearer_auth(&tenant.key)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .with_context(|| format!("submitting batch {b}"))?;
        let status = answer.status();
        if (status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE)
            && retries < 20
        {
            retries += 1;
            tokio::time::sleep(Duration::from_millis(20 * u64::from(retries))).await;
            continue;
        }
        let batch: Value = answer
            .json()
            .await
            .with_context(|| format!("batch {b}'s answer"))?;
        if status != StatusCode::ACCEPTED {
            bail!("batch {b} answered {status}: {batch}");
        }
        let id = batch["id"].as_str().context("a batch id")?.to_owned();
        return Ok(Accepted {
            b,
            id,
            t0_ms,
            retries,
        });
    }
}
