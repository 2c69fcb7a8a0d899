//! Domain types: modes, state machines, the task spec, and the API objects a client sees.
//!
//! Batches and tasks are stored as flat Redis hashes (see `keys.rs`); the views here are built from those hashes.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

/// How the tasks of a batch run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// All tasks at once, under the provider's limits.
    Parallel,
    /// Shot i+1 starts after shot i succeeded, from shot i's last frame.
    Chain,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Parallel => "parallel",
            Self::Chain => "chain",
        }
    }
}

/// `queued → submitting → running → succeeded | failed`, and `cancelled` from any non-terminal state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Queued,
    Submitting,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => Self::Queued,
            "submitting" => Self::Submitting,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// `queued → in_progress → settling → completed`, or `cancelling → cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    Queued,
    InProgress,
    Settling,
    Completed,
    Cancelling,
    Cancelled,
}

impl BatchStatus {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => Self::Queued,
            "in_progress" => Self::InProgress,
            "settling" => Self::Settling,
            "completed" => Self::Completed,
            "cancelling" => Self::Cancelling,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    /// Whether nothing will change any more (the live stream closes).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Cancelled)
    }
}

/// What the provider is asked to generate, as validated by the gateway. Stored as JSON in the task hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub prompt: String,
    pub aspect_ratio: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reference_image_urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_frame_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_frame_url: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    pub total: u64,
    pub queued: u64,
    pub running: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchCredits {
    pub frozen: u64,
    pub charged: u64,
    pub refunded: u64,
}

/// A batch as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchView {
    pub id: String,
    pub object: String,
    pub mode: Mode,
    pub status: BatchStatus,
    pub request_counts: RequestCounts,
    pub credits: BatchCredits,
    pub metadata: BTreeMap<String, String>,
    pub created_at: String,
    pub completed_at: Option<String>,
    #[serde(skip)]
    pub tenant_id: String,
}

impl BatchView {
    /// Builds the view from the batch hash; `None` when the hash is missing or damaged.
    pub fn from_hash(h: &HashMap<String, String>) -> Option<Self> {
        let num = |k: &str| h.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let status = BatchStatus::parse(h.get("status")?)?;
        let mode = if h.get("mode")? == "chain" {
            Mode::Chain
        } else {
            Mode::Parallel
        };
        let settled = status == BatchStatus::Completed || status == BatchStatus::Cancelled;
        Some(Self {
            id: h.get("id")?.clone(),
            object: "batch".into(),
            mode,
            status,
            request_counts: RequestCounts {
                total: num("total"),
                queued: num("n_queued"),
                running: num("n_running"),
                succeeded: num("n_succeeded"),
                failed: num("n_failed"),
                cancelled: num("n_cancelled"),
            },
            credits: if settled {
                BatchCredits {
                    frozen: 0,
                    charged: num("charged"),
                    refunded: num("refunded"),
                }
            } else {
                BatchCredits {
                    frozen: num("cost"),
                    charged: 0,
                    refunded: 0,
                }
            },
            metadata: h
                .get("metadata")
                .and_then(|m| serde_json::from_str(m).ok())
                .unwrap_or_default(),
            created_at: rfc3339(num("created_at")),
            completed_at: h.get("completed_at").and_then(|v| v.parse().ok()).map(rfc3339),
            tenant_id: h.get("tenant_id")?.clone(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskOutput {
    pub video_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_frame_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailure {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCredits {
    pub charged: u64,
    pub refunded: u64,
}

/// A task as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    pub id: String,
    pub object: String,
    pub batch_id: String,
    pub index: u64,
    pub custom_id: Option<String>,
    pub model: String,
    pub status: TaskStatus,
    pub progress: u8,
    pub attempts: u32,
    /// The last provider error of this task (a retried create, a failed status call), if any.
    pub last_error: Option<String>,
    pub output: Option<TaskOutput>,
    pub failure: Option<TaskFailure>,
    pub credits: TaskCredits,
    pub created_at: String,
    pub submitted_at: Option<String>,
    pub finished_at: Option<String>,
    #[serde(skip)]
    pub tenant_id: String,
}

impl TaskView {
    /// Builds the view from the task hash; `batch_settled` says whether its credits have moved yet.
    pub fn from_hash(h: &HashMap<String, String>, batch_settled: bool) -> Option<Self> {
        let num = |k: &str| h.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let time = |k: &str| h.get(k).and_then(|v| v.parse().ok()).map(rfc3339);
        let status = TaskStatus::parse(h.get("status")?)?;
        let price = num("price");
        Some(Self {
            id: h.get("id")?.clone(),
            object: "task".into(),
            batch_id: h.get("batch_id")?.clone(),
            index: num("index"),
            custom_id: h.get("custom_id").filter(|c| !c.is_empty()).cloned(),
            model: h.get("model")?.clone(),
            status,
            progress: u8::try_from(num("progress").min(100)).unwrap_or(100),
            attempts: u32::try_from(num("attempts")).unwrap_or(u32::MAX),
            last_error: h.get("last_error").filter(|e| !e.is_empty()).cloned(),
            output: (status == TaskStatus::Succeeded).then(|| TaskOutput {
                video_url: h.get("output_url").cloned().unwrap_or_default(),
                last_frame_url: h.get("last_frame_url").cloned(),
            }),
            failure: matches!(status, TaskStatus::Failed | TaskStatus::Cancelled).then(|| TaskFailure {
                code: h
                    .get("failure_code")
                    .cloned()
                    .unwrap_or_else(|| "cancelled".into()),
                message: h.get("failure_message").cloned().unwrap_or_default(),
            }),
            credits: match (batch_settled, status) {
                (false, _) => TaskCredits::default(),
                (true, TaskStatus::Succeeded) => TaskCredits {
                    charged: price,
                    refunded: 0,
                },
                (true, _) => TaskCredits {
                    charged: 0,
                    refunded: price,
                },
            },
            created_at: rfc3339(num("created_at")),
            submitted_at: time("submitted_at"),
            finished_at: time("finished_at"),
            tenant_id: h.get("tenant_id")?.clone(),
        })
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    let now = OffsetDateTime::now_utc();
    u64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// Formats epoch milliseconds as RFC 3339.
pub fn rfc3339(ms: u64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_settled_failed_task_shows_its_refund() {
        let h = hash(&[
            ("id", "tsk_a_0"),
            ("batch_id", "bat_a"),
            ("tenant_id", "ten_a"),
            ("model", "veo3.1-fast"),
            ("status", "failed"),
            ("price", "8"),
            ("failure_code", "provider_error"),
            ("failure_message", "boom"),
            ("created_at", "0"),
        ]);
        let view = TaskView::from_hash(&h, true).expect("view");
        assert_eq!(
            view.credits,
            TaskCredits {
                charged: 0,
                refunded: 8
            }
        );
        assert_eq!(view.failure.expect("failure").code, "provider_error");
        assert_eq!(view.created_at, "1970-01-01T00:00:00Z");
    }

    #[test]
    fn an_unsettled_batch_shows_frozen_credits() {
        let h = hash(&[
            ("id", "bat_a"),
            ("tenant_id", "ten_a"),
            ("mode", "parallel"),
            ("status", "in_progress"),
            ("cost", "36"),
            ("total", "3"),
            ("n_running", "3"),
            ("created_at", "1700000000000"),
        ]);
        let view = BatchView::from_hash(&h).expect("view");
        assert_eq!(
            view.credits,
            BatchCredits {
                frozen: 36,
                charged: 0,
                refunded: 0
            }
        );
        assert_eq!(view.request_counts.running, 3);
        assert!(view.completed_at.is_none());
    }
}
