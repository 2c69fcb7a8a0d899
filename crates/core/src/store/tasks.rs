//! Task transitions used by the workers, each one script that checks the current state first.

use redis::AsyncCommands;

use super::{Result, Store, StoreError};
use crate::{ids, model::TaskSpec};

/// What a submitter gets when it claims a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The task is now `submitting` under this attempt.
    Claimed {
        attempt: u32,
        model: String,
        spec: TaskSpec,
        /// The previous shot's last frame (chain mode), to use as this shot's first frame.
        chain_first_frame: Option<String>,
        tenant_id: String,
    },
    /// Nothing to do: the task is in this state (or `missing`).
    Skip(String),
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded {
        video_url: String,
        last_frame_url: Option<String>,
    },
    Failed {
        code: String,
        message: String,
    },
    /// Cancelled by the client; refunded at settlement.
    Cancelled {
        message: String,
    },
}

/// What a poller needs to poll a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollTarget {
    pub status: String,
    pub attempt: u32,
    pub remote_id: String,
    pub model: String,
    pub batch_id: String,
    pub progress: u8,
    /// The provider that holds the remote task.
    pub provider: String,
    /// Polls so far, and consecutive failed status calls.
    pub polls: u32,
    pub poll_errors: u32,
    /// When the provider accepted the task (ms).
    pub submitted_at: u64,
    /// The W3C trace context of the request that created the batch.
    pub traceparent: Option<String>,
    pub tenant_id: String,
}

fn batch_of(task_id: &str) -> Result<String> {
    ids::parse_task_id(task_id)
        .map(|(batch, _)| batch)
        .ok_or_else(|| StoreError::Corrupt(format!("not a task id: {task_id}")))
}

impl Store {
    /// `queued → submitting`: starts a new attempt, or says why there is nothing to do.
    pub async fn claim_submit(&self, task_id: &str, now: u64, lease_ms: u64) -> Result<Claim> {
        let batch_id = batch_of(task_id)?;
        let reply: Vec<redis::Value> = self
            .scripts
            .claim_submit
            .key(self.keys.task(&batch_id, task_id))
            .key(self.keys.batch(&batch_id))
            .key(self.keys.batch_events(&batch_id))
            .arg(now)
            .arg(lease_ms)
            .invoke_async(&mut self.connection())
            .await?;
        let text = |i: usize| -> String {
            reply
                .get(i)
                .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
                .unwrap_or_default()
        };
        if text(0) != "ok" {
            return Ok(Claim::Skip(text(1)));
        }
        let attempt = text(1)
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("attempt of {task_id}")))?;
        let spec = serde_json::from_str(&text(3))
            .map_err(|e| StoreError::Corrupt(format!("spec of {task_id}: {e}")))?;
        let frame = text(4);
        Ok(Claim::Claimed {
            attempt,
            model: text(2),
            spec,
            chain_first_frame: (!frame.is_empty()).then_some(frame),
            tenant_id: text(5),
        })
    }

    /// `submitting → running`: records the remote id and schedules the first poll. False if the attempt is stale.
    pub async fn mark_running(
        &self,
        task_id: &str,
        attempt: u32,
        remote: (&str, &str),
        now: u64,
        first_poll_at: u64,
    ) -> Result<bool> {
        let (provider, remote_id) = remote;
        let batch_id = batch_of(task_id)?;
        let applied: i64 = self
            .scripts
            .mark_running
            .key(self.keys.task(&batch_id, task_id))
            .key(self.keys.polls(self.keys.partition_of(&batch_id)))
            .key(self.keys.batch_events(&batch_id))
            .arg(now)
            .arg(attempt)
            .arg(remote_id)
            .arg(first_poll_at)
            .arg(provider)
            .invoke_async(&mut self.connection())
            .await?;
        Ok(applied == 1)
    }

    /// Moves a task to a terminal state, with everything that follows in its batch. `attempt: None` accepts
    /// any attempt. False when the task was already terminal or belongs to another attempt.
    pub async fn finish_task(
        &self,
        task_id: &str,
        attempt: Option<u32>,
        outcome: &Outcome,
        now: u64,
    ) -> Result<bool> {
        let batch_id = batch_of(task_id)?;
        let partition = self.keys.partition_of(&batch_id);
        let (status, url, frame, code, message) = match outcome {
            Outcome::Succeeded {
                video_url,
                last_frame_url,
            } => (
                "succeeded",
                video_url.as_str(),
                last_frame_url.as_deref().unwrap_or(""),
                "",
                "",
            ),
            Outcome::Failed { code, message } => ("failed", "", "", code.as_str(), message.as_str()),
            Outcome::Cancelled { message } => ("cancelled", "", "", "cancelled", message.as_str()),
        };
        let applied: i64 = self
            .scripts
            .finish_task
            .key(self.keys.task(&batch_id, task_id))
            .key(self.keys.batch(&batch_id))
            .key(self.keys.polls(partition))
            .key(self.keys.submit_stream(partition))
            .key(self.keys.batch_events(&batch_id))
            .key(self.keys.settle_stream(partition))
            .key(self.keys.retries(partition))
            .arg(now)
            .arg(attempt.map(|a| a.to_string()).unwrap_or_default())
            .arg(status)
            .arg(url)
            .arg(frame)
            .arg(code)
            .arg(message)
            .arg(self.keys.task_prefix(&batch_id))
            .arg(ids::task_id_stem(&batch_id))
            .arg(&batch_id)
            .invoke_async(&mut self.connection())
            .await?;
        Ok(applied == 1)
    }

    /// Marks a batch `cancelling`; returns `None` when it is, else the status that forbids it (`missing` if none).
    pub async fn cancel_batch(&self, batch_id: &str) -> Result<Option<String>> {
        let answer: String = self
            .scripts
            .cancel_batch
            .key(self.keys.batch(batch_id))
            .key(self.keys.batch_events(batch_id))
            .invoke_async(&mut self.connection())
            .await?;
        Ok((answer != "ok").then_some(answer))
    }

    /// `submitting → queued` with a retry scheduled at `due`; false if the attempt is stale.
    pub async fn retry_later(
        &self,
        task_id: &str,
        attempt: u32,
        due: u64,
        error: &str,
        now: u64,
    ) -> Result<bool> {
        let batch_id = batch_of(task_id)?;
        let applied: i64 = self
            .scripts
            .retry_later
            .key(self.keys.task(&batch_id, task_id))
            .key(self.keys.batch(&batch_id))
            .key(self.keys.retries(self.keys.partition_of(&batch_id)))
            .key(self.keys.batch_events(&batch_id))
            .arg(now)
            .arg(attempt)
            .arg(due)
            .arg(error)
            .invoke_async(&mut self.connection())
            .await?;
        Ok(applied == 1)
    }

    /// Turns due retries of every partition back into submit messages (naming the batch recorded on each task);
    /// returns how many.
    pub async fn pump_retries(&self, now: u64, max: usize) -> Result<usize> {
        let mut moved = 0;
        for p in 0..self.keys.partitions() {
            let n: usize = self
                .scripts
                .retry_pump
                .key(self.keys.retries(p))
                .key(self.keys.submit_stream(p))
                .arg(now)
                .arg(max)
                .arg(self.keys.partition_task_prefix(p))
                .invoke_async(&mut self.connection())
                .await?;
            moved += n;
        }
        Ok(moved)
    }

    /// Claims up to `max` due polls of a partition, each leased for `lease_ms`.
    pub async fn claim_polls(
        &self,
        partition: u32,
        now: u64,
        lease_ms: u64,
        max: usize,
    ) -> Result<Vec<String>> {
        Ok(self
            .scripts
            .poll_claim
            .key(self.keys.polls(partition))
            .arg(now)
            .arg(lease_ms)
            .arg(max)
            .invoke_async(&mut self.connection())
            .await?)
    }

    /// The earliest due time (ms) over all partitions, if anything is scheduled.
    pub async fn next_poll_due(&self) -> Result<Option<u64>> {
        let mut pipe = redis::pipe();
        for p in 0..self.keys.partitions() {
            pipe.zrange_withscores(self.keys.polls(p), 0, 0);
        }
        let firsts: Vec<Vec<(String, f64)>> = pipe.query_async(&mut self.connection()).await?;
        Ok(firsts.iter().flatten().map(|(_, score)| *score as u64).min())
    }

    /// What a poller needs to know about a task.
    pub async fn poll_target(&self, task_id: &str) -> Result<Option<PollTarget>> {
        let batch_id = batch_of(task_id)?;
        let key = self.keys.task(&batch_id, task_id);
        let fields: Vec<Option<String>> = self
            .connection()
            .hmget(
                &key,
                &[
                    "status",
                    "attempts",
                    "remote_id",
                    "model",
                    "progress",
                    "provider",
                    "polls",
                    "poll_errors",
                    "submitted_at",
                    "traceparent",
                    "tenant_id",
                ],
            )
            .await?;
        let text = |i: usize| fields.get(i).cloned().flatten();
        let num = |i: usize| text(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let small = |i: usize| u32::try_from(num(i)).unwrap_or(u32::MAX);
        Ok(match (text(0), text(3)) {
            (Some(status), Some(model)) => Some(PollTarget {
                status,
                attempt: small(1),
                remote_id: text(2).unwrap_or_default(),
                model,
                batch_id,
                progress: u8::try_from(num(4).min(100)).unwrap_or(100),
                provider: text(5).unwrap_or_else(|| "grsai".into()),
                polls: small(6),
                poll_errors: small(7),
                submitted_at: num(8),
                traceparent: text(9).filter(|t| !t.is_empty()),
                tenant_id: text(10).unwrap_or_default(),
            }),
            _ => None,
        })
    }

    /// Records progress of a running task and schedules its next poll; false when it left the schedule.
    pub async fn poll_update(
        &self,
        task_id: &str,
        attempt: u32,
        progress: u8,
        now: u64,
        next_at: u64,
        error: Option<&str>,
    ) -> Result<bool> {
        let batch_id = batch_of(task_id)?;
        let applied: i64 = self
            .scripts
            .poll_update
            .key(self.keys.task(&batch_id, task_id))
            .key(self.keys.polls(self.keys.partition_of(&batch_id)))
            .key(self.keys.batch_events(&batch_id))
            .arg(now)
            .arg(attempt)
            .arg(progress)
            .arg(next_at)
            .arg(task_id)
            .arg(error.unwrap_or(""))
            .invoke_async(&mut self.connection())
            .await?;
        Ok(applied == 1)
    }

    /// Drops a task from its partition's poll schedule (it cannot be polled).
    pub async fn unschedule_poll(&self, task_id: &str) -> Result<()> {
        let batch_id = batch_of(task_id)?;
        let _: () = self
            .connection()
            .zrem(self.keys.polls(self.keys.partition_of(&batch_id)), task_id)
            .await?;
        Ok(())
    }

    /// The sum of the prices of a batch's succeeded tasks, and its tenant, as recorded on the batch.
    pub async fn settlement_input(&self, batch_id: &str) -> Result<Option<(String, String, u64, u64)>> {
        let (tenant, status, cost, succeeded): (Option<String>, Option<String>, Option<u64>, Option<u64>) =
            self.connection()
                .hmget(
                    self.keys.batch(batch_id),
                    &["tenant_id", "status", "cost", "cost_succeeded"],
                )
                .await?;
        Ok(match (tenant, status) {
            (Some(t), Some(s)) => Some((t, s, cost.unwrap_or(0), succeeded.unwrap_or(0))),
            _ => None,
        })
    }

    /// `settling → completed` with the settled amounts. False when the batch was not settling.
    pub async fn settle_finalize(
        &self,
        batch_id: &str,
        charged: u64,
        refunded: u64,
        now: u64,
    ) -> Result<bool> {
        let applied: i64 = self
            .scripts
            .settle_finalize
            .key(self.keys.batch(batch_id))
            .key(self.keys.batch_events(batch_id))
            .key(self.keys.open_batches(self.keys.partition_of(batch_id)))
            .arg(now)
            .arg(charged)
            .arg(refunded)
            .invoke_async(&mut self.connection())
            .await?;
        Ok(applied == 1)
    }
}

impl Store {
    /// Applies a provider's answer about a task's attempt: terminal answers finish the task (state-checked and
    /// fenced by attempt, so duplicates and late answers change nothing); others change nothing here.
    pub async fn apply_remote_status(
        &self,
        task_id: &str,
        attempt: u32,
        status: gantry_provider::RemoteStatus,
        now: u64,
    ) -> Result<bool> {
        use gantry_provider::RemoteStatus;
        let outcome = match status {
            RemoteStatus::Succeeded {
                video_url,
                last_frame_url,
            } => Outcome::Succeeded {
                video_url,
                last_frame_url,
            },
            RemoteStatus::Failed { code, message } => Outcome::Failed {
                code: code.as_str().into(),
                message,
            },
            RemoteStatus::Pending | RemoteStatus::Running { .. } => return Ok(false),
        };
        self.finish_task(task_id, Some(attempt), &outcome, now).await
    }
}
