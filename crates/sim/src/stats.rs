//! What the simulator reports about itself: counters and tasks, served by `GET /sim/stats` and
//! [`crate::SimHandle::stats`] alike.

/// Counters and tasks of a simulator, as served by `GET /sim/stats` and [`crate::SimHandle::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct SimStats {
    /// Authenticated create calls, including the ones answered with 400.
    pub creates: u64,
    /// Authenticated `/v1/draw/result` calls, including the ones for unknown ids.
    pub polls: u64,
    /// The most API requests (of any kind) ever in flight at the same time.
    pub max_concurrent_requests: u64,
    /// The most `/v1/draw/result` requests ever in flight at the same time for one task id.
    pub max_concurrent_polls_per_task: u64,
    /// Accepted tasks, in creation order.
    pub tasks: Vec<SimTaskInfo>,
}

/// One accepted task, as reported in [`SimStats`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct SimTaskInfo {
    /// The remote id handed to the client.
    pub id: String,
    /// The model named in the create call.
    pub model: String,
    /// The prompt, markers included.
    pub prompt: String,
    /// The starting image: `firstFrameUrl` for Veo, `url` for Sora.
    pub first_frame_url: Option<String>,
    /// Creation time, in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// When the task finishes (or would, for `[sim:never]`), in milliseconds since the Unix epoch.
    pub finishes_at_ms: u64,
    /// Status calls that found this task.
    pub polls: u64,
}
