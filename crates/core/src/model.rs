//! The task spec and the API objects a client sees. The vocabulary (modes, states, models, failure codes) is in
//! `domain.rs`.
//!
//! Batches and tasks are stored as flat Redis hashes (see `keys.rs`); the views here are built from those hashes
//! through [`Row`], so a damaged field is an error, not a default.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

pub use crate::domain::{BatchStatus, FailureCode, Mode, Model, TaskStatus};
use crate::store::{
    fields::{batch, task},
    row::Row,
    Result,
};

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
    /// The view of a batch just written by [`crate::Store::create_batch`] from `valid` at `now` (ms), before any of
    /// its tasks moved: what reading its hash back would show, without the read.
    pub fn queued(batch_id: &str, tenant_id: &str, valid: &crate::validate::ValidBatch, now: u64) -> Self {
        let total = valid.tasks.len() as u64;
        Self {
            id: batch_id.to_owned(),
            object: "batch".into(),
            mode: valid.mode,
            status: BatchStatus::Queued,
            request_counts: RequestCounts {
                total,
                queued: total,
                ..RequestCounts::default()
            },
            credits: BatchCredits {
                frozen: valid.cost(),
                ..BatchCredits::default()
            },
            metadata: valid.metadata.clone(),
            created_at: rfc3339(now),
            completed_at: None,
            tenant_id: tenant_id.to_owned(),
        }
    }

    /// Builds the view from the batch hash: `None` when there is no hash, an error when it is damaged.
    pub fn from_hash(h: &HashMap<String, String>) -> Result<Option<Self>> {
        let Some(row) = Row::of_hash("batch", h) else {
            return Ok(None);
        };
        let status: BatchStatus = row.parse(batch::STATUS)?;
        let credits = if status.is_final() {
            BatchCredits {
                frozen: 0,
                charged: row.number(batch::CHARGED)?,
                refunded: row.number(batch::REFUNDED)?,
            }
        } else {
            BatchCredits {
                frozen: row.number(batch::COST)?,
                charged: 0,
                refunded: 0,
            }
        };
        let metadata = match row.text(batch::METADATA) {
            Some(m) => serde_json::from_str(m)
                .map_err(|e| crate::StoreError::Corrupt(format!("batch metadata: {e}")))?,
            None => BTreeMap::new(),
        };
        Ok(Some(Self {
            id: row.string(batch::ID)?,
            object: "batch".into(),
            mode: row.parse(batch::MODE)?,
            status,
            request_counts: RequestCounts {
                total: row.number(batch::TOTAL)?,
                queued: row.number(batch::N_QUEUED)?,
                running: row.number(batch::N_RUNNING)?,
                succeeded: row.number(batch::N_SUCCEEDED)?,
                failed: row.number(batch::N_FAILED)?,
                cancelled: row.number(batch::N_CANCELLED)?,
            },
            credits,
            metadata,
            created_at: rfc3339(row.number(batch::CREATED_AT)?),
            completed_at: row.parse_opt(batch::COMPLETED_AT)?.map(rfc3339),
            tenant_id: row.string(batch::TENANT_ID)?,
        }))
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
    pub code: FailureCode,
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
    pub model: Model,
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
    /// Builds the view from the task hash (`None` when there is none); `batch_settled` says whether its credits
    /// have moved yet.
    pub fn from_hash(h: &HashMap<String, String>, batch_settled: bool) -> Result<Option<Self>> {
        let Some(row) = Row::of_hash("task", h) else {
            return Ok(None);
        };
        let status: TaskStatus = row.parse(task::STATUS)?;
        let price: u64 = row.number(task::PRICE)?;
        let failure = match status {
            TaskStatus::Failed | TaskStatus::Cancelled => Some(TaskFailure {
                code: row
                    .parse_opt(task::FAILURE_CODE)?
                    .unwrap_or(FailureCode::Cancelled),
                message: row.text(task::FAILURE_MESSAGE).unwrap_or_default().to_owned(),
            }),
            _ => None,
        };
        Ok(Some(Self {
            id: row.string(task::ID)?,
            object: "task".into(),
            batch_id: row.string(task::BATCH_ID)?,
            index: row.number(task::INDEX)?,
            custom_id: row.text(task::CUSTOM_ID).map(str::to_owned),
            model: row.parse(task::MODEL)?,
            status,
            progress: row.number::<u8>(task::PROGRESS)?.min(100),
            attempts: row.number(task::ATTEMPTS)?,
            last_error: row.text(task::LAST_ERROR).map(str::to_owned),
            output: (status == TaskStatus::Succeeded).then(|| TaskOutput {
                video_url: row.text(task::OUTPUT_URL).unwrap_or_default().to_owned(),
                last_frame_url: row.text(task::LAST_FRAME_URL).map(str::to_owned),
            }),
            failure,
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
            created_at: rfc3339(row.number(task::CREATED_AT)?),
            submitted_at: row.parse_opt(task::SUBMITTED_AT)?.map(rfc3339),
            finished_at: row.parse_opt(task::FINISHED_AT)?.map(rfc3339),
            tenant_id: row.string(task::TENANT_ID)?,
        }))
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
            ("model", Model::Veo31Fast.as_str()),
            ("status", TaskStatus::Failed.as_str()),
            ("price", "8"),
            ("failure_code", FailureCode::ProviderError.as_str()),
            ("failure_message", "boom"),
            ("created_at", "0"),
        ]);
        let view = TaskView::from_hash(&h, true).expect("parses").expect("view");
        assert_eq!(
            view.credits,
            TaskCredits {
                charged: 0,
                refunded: 8
            }
        );
        assert_eq!(view.failure.expect("failure").code, FailureCode::ProviderError);
        assert_eq!(view.created_at, "1970-01-01T00:00:00Z");
    }

    #[test]
    fn an_unknown_state_is_an_error_not_a_default() {
        let h = hash(&[
            ("id", "tsk_a_0"),
            ("status", "exploded"),
            ("model", Model::Sora2.as_str()),
        ]);
        assert!(TaskView::from_hash(&h, false).is_err());
        assert!(TaskView::from_hash(&HashMap::new(), false)
            .expect("empty")
            .is_none());
    }

    #[test]
    fn an_unsettled_batch_shows_frozen_credits() {
        let h = hash(&[
            ("id", "bat_a"),
            ("tenant_id", "ten_a"),
            ("mode", Mode::Parallel.as_str()),
            ("status", BatchStatus::InProgress.as_str()),
            ("cost", "36"),
            ("total", "3"),
            ("n_running", "3"),
            ("created_at", "1700000000000"),
        ]);
        let view = BatchView::from_hash(&h).expect("parses").expect("view");
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
