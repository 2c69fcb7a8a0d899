//! What the simulator reports about itself: counters and tasks, served by `GET /sim/stats` and
//! [`crate::SimHandle::stats`] alike.
//!
//! Fields added after the first version default when absent, so an older JSON answer still deserialises.

/// Counters and tasks of a simulator, as served by `GET /sim/stats` and [`crate::SimHandle::stats`].
///
/// Requests answered by an injected fault (429, 5xx, timeout, malformed) never reach the API handlers, so they count
/// in the fault counters below and not in `creates` or `polls`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct SimStats {
    /// Authenticated create calls (Grsai and Seedance), including the ones answered with 400.
    pub creates: u64,
    /// Authenticated status calls (Grsai `/v1/draw/result`, Seedance `GET .../tasks/{id}`), unknown ids included.
    pub polls: u64,
    /// API requests (of any kind) that came over HTTP/2 (h2c: the simulator speaks HTTP/1.1 and HTTP/2 on one port).
    pub http2_requests: u64,
    /// The most API requests (of any kind) ever in flight at the same time.
    pub max_concurrent_requests: u64,
    /// The most status requests ever in flight at the same time for one task id.
    pub max_concurrent_polls_per_task: u64,
    /// 429 answers served, by the `rate_429` draw or the `max_concurrency` limit.
    pub rate_limited: u64,
    /// 500/502/503 answers served by the `rate_5xx` draw.
    pub server_errors: u64,
    /// Requests made to hang by the `timeout_rate` draw.
    pub timeouts: u64,
    /// 200 answers with a body that is not JSON, by the `malformed_rate` draw.
    pub malformed: u64,
    /// The most API requests that arrived within any sliding one-second window.
    pub max_requests_in_one_second: u64,
    /// Accepted creates whose prompt equals that of an earlier accepted task still live (not finished, failed or
    /// cancelled): more than one remote task at a time for the same work.
    pub duplicate_live_creates: u64,
    /// Webhook POSTs sent (duplicates included), whatever their answer.
    pub webhooks_sent: u64,
    /// Webhook deliveries dropped by the `webhook_drop_rate` draw.
    pub webhooks_dropped: u64,
    /// Webhook deliveries sent twice by the `webhook_duplicate_rate` draw.
    pub webhooks_duplicated: u64,
    /// Webhook POSTs that failed (connection error, timeout or non-2xx answer); they are not retried.
    pub webhooks_failed: u64,
    /// Accepted tasks, in creation order.
    pub tasks: Vec<SimTaskInfo>,
}

/// One accepted task, as reported in [`SimStats`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct SimTaskInfo {
    /// The remote id handed to the client.
    pub id: String,
    /// The API the task was created through: `grsai` or `seedance`.
    #[serde(default)]
    pub provider: String,
    /// The model named in the create call.
    pub model: String,
    /// The prompt, markers included (for Seedance, the whole text, `--ratio ...` included).
    pub prompt: String,
    /// The starting image: `firstFrameUrl` for Veo, `url` for Sora, the `first_frame` image for Seedance.
    pub first_frame_url: Option<String>,
    /// The last frame the task reported once it succeeded (`None` before, after a failure, or when a Seedance
    /// create did not ask for it with `return_last_frame`).
    #[serde(default)]
    pub last_frame_url: Option<String>,
    /// Creation time, in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// When the task finishes (or would, for `[sim:never]`), in milliseconds since the Unix epoch.
    pub finishes_at_ms: u64,
    /// Status calls that found this task.
    pub polls: u64,
    /// Whether the task was cancelled through the Seedance API.
    #[serde(default)]
    pub cancelled: bool,
}
