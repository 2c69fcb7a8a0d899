//! Task transitions used by the workers, each one script that checks the current state first, and the typed
//! rows the workers read (see `polls.rs` for the poll schedule).

use redis::AsyncCommands;

use super::{
    fields::{batch, task},
    row::Row,
    Result, Store, StoreError,
};
use crate::{
    domain::{BatchStatus, FailureCode, Model, ProviderName, TaskStatus},
    ids,
    model::TaskSpec,
};

/// What a submitter gets when it claims a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The task is now `submitting` under this attempt.
    Claimed {
        attempt: u32,
        model: Model,
        spec: TaskSpec,
        /// The previous shot's last frame (chain mode), to use as this shot's first frame.
        chain_first_frame: Option<String>,
        tenant_id: String,
    },
    /// Nothing to do: the task is in this state (`None`: there is no such task).
    Skip(Option<TaskStatus>),
    /// The task is now `submitting` under this attempt, but names a model this version does not know: it can
    /// never be sent, and should fail.
    Unusable { attempt: u32, why: String },
}

impl Claim {
    /// What a claimed task sends to its provider, read apart from the claim: none of it changes once the task can
    /// be claimed.
    const SENT: [&'static str; 4] = [task::MODEL, task::SPEC, task::CHAIN_FIRST_FRAME, task::TENANT_ID];

    /// One task's answer of `claim_submit.lua`: `ok` and the attempt, or `skip` and the state in the way. An
    /// attempt means the claim was made, and the task's [`Claim::SENT`] fields are still to be read.
    fn from_reply(task_id: &str, reply: &[Option<String>]) -> Result<std::result::Result<u32, Self>> {
        const ANSWER: [&str; 2] = ["answer", "detail"];
        let row = Row::of_fields(task_id, &ANSWER, reply);
        if row.text("answer") == Some("ok") {
            return Ok(Ok(row.parse("detail")?));
        }
        // The script answers the state that forbids the claim, or `missing`.
        Ok(Err(Self::Skip(match row.text("detail") {
            Some("missing") => None,
            status => Some(
                status
                    .unwrap_or_default()
                    .parse()
                    .map_err(|e| StoreError::Corrupt(format!("{task_id}: {e}")))?,
            ),
        })))
    }

    /// A claim made under `attempt`, from the task's [`Claim::SENT`] fields.
    fn claimed(task_id: &str, attempt: u32, values: &[Option<String>]) -> Result<Self> {
        let row = Row::of_fields(task_id, &Self::SENT, values);
        // A damaged spec is an error (the message is retried, then buried as poison); a model this version does not
        // know can never be sent, so the task fails at once.
        let spec = serde_json::from_str(row.text(task::SPEC).unwrap_or_default()).map_err(|e| {
            StoreError::Corrupt(format!("{task_id}: field `{}` does not parse: {e}", task::SPEC))
        })?;
        let model = match row.parse(task::MODEL) {
            Ok(model) => model,
            Err(e) => {
                return Ok(Self::Unusable {
                    attempt,
                    why: e.to_string(),
                })
            }
        };
        Ok(Self::Claimed {
            attempt,
            model,
            spec,
            chain_first_frame: row.text(task::CHAIN_FIRST_FRAME).map(str::to_owned),
            tenant_id: row.string(task::TENANT_ID)?,
        })
    }
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded {
        video_url: String,
        last_frame_url: Option<String>,
    },
    Failed {
        code: FailureCode,
        message: String,
    },
    /// Cancelled by the client; refunded at settlement.
    Cancelled {
        message: String,
    },
}

impl Outcome {
    /// The terminal status this outcome moves a task to.
    pub fn status(&self) -> TaskStatus {
        match self {
            Self::Succeeded { .. } => TaskStatus::Succeeded,
            Self::Failed { .. } => TaskStatus::Failed,
            Self::Cancelled { .. } => TaskStatus::Cancelled,
        }
    }

    /// The outcome of a task cancelled at the client's request.
    pub fn cancelled_by_client() -> Self {
        Self::Cancelled {
            message: "cancelled by the client".into(),
        }
    }
}

/// A task's state as the workers see it (what a poller needs to poll it, a route to act on it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    pub status: TaskStatus,
    pub attempt: u32,
    /// The provider's id of the task; empty before the provider has it.
    pub remote_id: String,
    pub model: Model,
    pub batch_id: String,
    pub progress: u8,
    /// The provider that holds the remote task (`None` before a submitter reached one).
    pub provider: Option<ProviderName>,
    /// Polls so far, and consecutive failed status calls.
    pub polls: u32,
    pub poll_errors: u32,
    /// When the provider accepted the task (ms).
    pub submitted_at: u64,
    /// The W3C trace context of the request that created the batch.
    pub traceparent: Option<String>,
    pub tenant_id: String,
}

impl TaskRow {
    /// The task hash fields a row is made of, in the order [`TaskRow::from_values`] reads them.
    pub(super) const FIELDS: [&'static str; 11] = [
        task::STATUS,
        task::ATTEMPTS,
        task::REMOTE_ID,
        task::MODEL,
        task::PROGRESS,
        task::PROVIDER,
        task::POLLS,
        task::POLL_ERRORS,
        task::SUBMITTED_AT,
        task::TRACEPARENT,
        task::TENANT_ID,
    ];

    /// The row from the values of [`TaskRow::FIELDS`] (an HMGET); `None` when the task hash is gone.
    pub(super) fn from_values(task_id: &str, values: &[Option<String>]) -> Result<Option<Self>> {
        let row = Row::of_fields(task_id, &Self::FIELDS, values);
        let Some(status) = row.parse_opt::<TaskStatus>(task::STATUS)? else {
            return Ok(None);
        };
        Ok(Some(Self {
            status,
            attempt: row.number(task::ATTEMPTS)?,
            remote_id: row.text(task::REMOTE_ID).unwrap_or_default().to_owned(),
            model: row.parse(task::MODEL)?,
            batch_id: batch_of(task_id)?,
            progress: row.number::<u8>(task::PROGRESS)?.min(100),
            provider: row.parse_opt(task::PROVIDER)?,
            polls: row.number(task::POLLS)?,
            poll_errors: row.number(task::POLL_ERRORS)?,
            submitted_at: row.number(task::SUBMITTED_AT)?,
            traceparent: row.text(task::TRACEPARENT).map(str::to_owned),
            tenant_id: row.string(task::TENANT_ID)?,
        }))
    }

    /// The provider of a task that the provider holds (`running`); an error when the row does not say which.
    pub fn running_provider(&self) -> Result<ProviderName> {
        self.provider.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "running task of batch {} names no provider",
                self.batch_id
            ))
        })
    }
}

/// What settlement needs to know about a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementInput {
    pub tenant_id: String,
    pub status: BatchStatus,
    /// Credits frozen for the batch, and the prices of its succeeded tasks.
    pub cost: u64,
    pub cost_succeeded: u64,
}

/// The answer to a batch cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelBatch {
    /// The batch is `cancelling` now (or already was).
    Cancelling,
    /// The batch is in this state and can no longer be cancelled.
    Refused(BatchStatus),
    Missing,
}

/// A task the provider accepted, to record with [`Store::mark_running_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub task_id: String,
    pub attempt: u32,
    pub provider: ProviderName,
    pub remote_id: String,
    /// When to poll it first (ms).
    pub first_poll_at: u64,
}

impl Started {
    /// Task `task_id`'s attempt `attempt`, accepted by the provider as `remote` (provider, remote id).
    pub fn new(task_id: &str, attempt: u32, remote: (ProviderName, &str), first_poll_at: u64) -> Self {
        let (provider, remote_id) = remote;
        Self {
            task_id: task_id.to_owned(),
            attempt,
            provider,
            remote_id: remote_id.to_owned(),
            first_poll_at,
        }
    }
}

/// A task to finish with [`Store::finish_tasks`]; `attempt: None` accepts any attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finish {
    pub task_id: String,
    pub attempt: Option<u32>,
    pub outcome: Outcome,
    pub now: u64,
}

/// A multi-task script's 1/0 answers, one per task.
fn answers(expected: usize, applied: Vec<i64>) -> Result<Vec<bool>> {
    if applied.len() != expected {
        return Err(StoreError::Corrupt(format!(
            "{expected} tasks sent, {} answers",
            applied.len()
        )));
    }
    Ok(applied.into_iter().map(|a| a == 1).collect())
}

pub(super) fn batch_of(task_id: &str) -> Result<String> {
    ids::parse_task_id(task_id)
        .map(|(batch, _)| batch)
        .ok_or_else(|| StoreError::Corrupt(format!("not a task id: {task_id}")))
}

impl Store {
    /// `queued → submitting`: starts a new attempt, or says why there is nothing to do.
    pub async fn claim_submit(&self, task_id: &str, now: u64, lease_ms: u64) -> Result<Claim> {
        let mut claims = self.claim_submits(&[task_id], now, lease_ms).await?;
        claims.pop().unwrap_or_else(|| {
            Err(StoreError::Corrupt(format!(
                "{task_id}: the claim gave no answer"
            )))
        })
    }

    /// [`Store::claim_submit`] for several tasks of one partition in one script call; one answer per task, in
    /// order (a damaged task is an error of its own and does not spoil the others).
    pub async fn claim_submits(
        &self,
        task_ids: &[&str],
        now: u64,
        lease_ms: u64,
    ) -> Result<Vec<Result<Claim>>> {
        let mut script = self.scripts.claim_submit.prepare_invoke();
        // Each task's key serves the claim and then the read of what it sends.
        let mut task_keys = Vec::with_capacity(task_ids.len());
        for task_id in task_ids {
            let batch_id = batch_of(task_id)?;
            let task_key = self.keys.task(&batch_id, task_id);
            script
                .key(&task_key)
                .key(self.keys.batch(&batch_id))
                .key(self.keys.batch_events(&batch_id));
            task_keys.push(task_key);
        }
        let replies: Vec<Vec<Option<String>>> = script
            .arg(now)
            .arg(lease_ms)
            .invoke_async(&mut self.connection())
            .await?;
        if replies.len() != task_ids.len() {
            return Err(StoreError::Corrupt(format!(
                "claimed {} tasks, got {} answers",
                task_ids.len(),
                replies.len()
            )));
        }
        let answers: Vec<Result<std::result::Result<u32, Claim>>> = task_ids
            .iter()
            .zip(replies)
            .map(|(task_id, reply)| Claim::from_reply(task_id, &reply))
            .collect();
        // One pipeline reads what the claimed tasks send to their providers.
        let mut pipe = redis::pipe();
        for (key, answer) in task_keys.iter().zip(&answers) {
            if let Ok(Ok(_)) = answer {
                pipe.cmd("HMGET").arg(key).arg(&Claim::SENT);
            }
        }
        // When the reads fail, each claimed task answers that error: its message stays pending and the task is
        // taken over once its lease runs out, as after a crash of this submitter.
        let sent: std::result::Result<Vec<Vec<Option<String>>>, String> = if pipe.is_empty() {
            Ok(Vec::new())
        } else {
            pipe.query_async(&mut self.connection())
                .await
                .map_err(|e| e.to_string())
        };
        let mut rows = sent.as_ref().map(|rows| rows.iter());
        Ok(task_ids
            .iter()
            .zip(answers)
            .map(|(task_id, answer)| match answer? {
                Ok(attempt) => match &mut rows {
                    Ok(rows) => Claim::claimed(task_id, attempt, rows.next().map_or(&[][..], Vec::as_slice)),
                    Err(why) => Err(StoreError::Redis(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "reading a claimed task failed",
                        format!("{task_id}: {why}"),
                    )))),
                },
                Err(skip) => Ok(skip),
            })
            .collect())
    }

    /// `submitting → running`: records the remote id and schedules the first poll. False if the attempt is stale.
    pub async fn mark_running(
        &self,
        task_id: &str,
        attempt: u32,
        remote: (ProviderName, &str),
        now: u64,
        first_poll_at: u64,
    ) -> Result<bool> {
        let started = Started::new(task_id, attempt, remote, first_poll_at);
        let partition = self.partition_of_task(task_id)?;
        Ok(self.mark_running_all(partition, &[started], now).await?[0])
    }

    /// [`Store::mark_running`] for several tasks of one partition, in one script call; one answer per task.
    pub async fn mark_running_all(&self, partition: u32, started: &[Started], now: u64) -> Result<Vec<bool>> {
        let mut script = self.scripts.mark_running.prepare_invoke();
        script.key(self.keys.polls(partition)).arg(now);
        for task in started {
            let batch_id = batch_of(&task.task_id)?;
            script
                .key(self.keys.task(&batch_id, &task.task_id))
                .key(self.keys.batch_events(&batch_id))
                .arg(task.attempt)
                .arg(&task.remote_id)
                .arg(task.first_poll_at)
                .arg(task.provider.as_str());
        }
        let applied: Vec<i64> = script.invoke_async(&mut self.connection()).await?;
        answers(started.len(), applied)
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
        let finish = Finish {
            task_id: task_id.to_owned(),
            attempt,
            outcome: outcome.clone(),
            now,
        };
        let partition = self.partition_of_task(task_id)?;
        Ok(self.finish_tasks(partition, &[finish]).await?[0])
    }

    /// [`Store::finish_task`] for several tasks of one partition, in one script call (each finished in turn, as
    /// if alone); one answer per task.
    pub async fn finish_tasks(&self, partition: u32, finishes: &[Finish]) -> Result<Vec<bool>> {
        let mut script = self.scripts.finish_task.prepare_invoke();
        script
            .key(self.keys.polls(partition))
            .key(self.keys.submit_stream(partition))
            .key(self.keys.settle_stream(partition))
            .key(self.keys.retries(partition))
            .arg(self.keys.partition_task_prefix(partition));
        for finish in finishes {
            let batch_id = batch_of(&finish.task_id)?;
            let status = finish.outcome.status().as_str();
            let (url, frame, code, message) = match &finish.outcome {
                Outcome::Succeeded {
                    video_url,
                    last_frame_url,
                } => (
                    video_url.as_str(),
                    last_frame_url.as_deref().unwrap_or(""),
                    "",
                    "",
                ),
                Outcome::Failed { code, message } => ("", "", code.as_str(), message.as_str()),
                Outcome::Cancelled { message } => ("", "", FailureCode::Cancelled.as_str(), message.as_str()),
            };
            script
                .key(self.keys.task(&batch_id, &finish.task_id))
                .key(self.keys.batch(&batch_id))
                .key(self.keys.batch_events(&batch_id))
                .arg(finish.now)
                .arg(finish.attempt.map(|a| a.to_string()).unwrap_or_default())
                .arg(status)
                .arg(url)
                .arg(frame)
                .arg(code)
                .arg(message)
                .arg(&batch_id)
                .arg(ids::task_id_stem(&batch_id));
        }
        let applied: Vec<i64> = script.invoke_async(&mut self.connection()).await?;
        answers(finishes.len(), applied)
    }

    /// Marks a batch `cancelling`, or says why it cannot be.
    pub async fn cancel_batch(&self, batch_id: &str) -> Result<CancelBatch> {
        let answer: String = self
            .scripts
            .cancel_batch
            .key(self.keys.batch(batch_id))
            .key(self.keys.batch_events(batch_id))
            .invoke_async(&mut self.connection())
            .await?;
        Ok(match answer.as_str() {
            "ok" => CancelBatch::Cancelling,
            "missing" => CancelBatch::Missing,
            status => CancelBatch::Refused(
                status
                    .parse()
                    .map_err(|e| StoreError::Corrupt(format!("batch {batch_id}: {e}")))?,
            ),
        })
    }

    /// Moves the lease of a task this attempt holds (`submitting`) on to `until`; false when the task is no longer
    /// this attempt's (taken over, cancelled, or on).
    pub async fn renew_lease(&self, task_id: &str, attempt: u32, until: u64) -> Result<bool> {
        let batch_id = batch_of(task_id)?;
        let renewed: i64 = self
            .scripts
            .renew_lease
            .key(self.keys.task(&batch_id, task_id))
            .arg(attempt)
            .arg(until)
            .invoke_async(&mut self.connection())
            .await?;
        Ok(renewed == 1)
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

    /// A task's state as the workers see it; `None` when there is no such task.
    pub async fn task_row(&self, task_id: &str) -> Result<Option<TaskRow>> {
        let batch_id = batch_of(task_id)?;
        let values: Vec<Option<String>> = self
            .connection()
            .hmget(self.keys.task(&batch_id, task_id), &TaskRow::FIELDS)
            .await?;
        TaskRow::from_values(task_id, &values)
    }

    /// What settlement needs to know about a batch; `None` when there is no such batch.
    pub async fn settlement_input(&self, batch_id: &str) -> Result<Option<SettlementInput>> {
        const FIELDS: [&str; 4] = [
            batch::TENANT_ID,
            batch::STATUS,
            batch::COST,
            batch::COST_SUCCEEDED,
        ];
        let values: Vec<Option<String>> = self
            .connection()
            .hmget(self.keys.batch(batch_id), &FIELDS)
            .await?;
        let row = Row::of_fields(batch_id, &FIELDS, &values);
        let Some(status) = row.parse_opt::<BatchStatus>(batch::STATUS)? else {
            return Ok(None);
        };
        Ok(Some(SettlementInput {
            tenant_id: row.string(batch::TENANT_ID)?,
            status,
            cost: row.number(batch::COST)?,
            cost_succeeded: row.number(batch::COST_SUCCEEDED)?,
        }))
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
            .key(self.keys.expiring_batches(self.keys.partition_of(batch_id)))
            .arg(now)
            .arg(charged)
            .arg(refunded)
            .invoke_async(&mut self.connection())
            .await?;
        Ok(applied == 1)
    }
}

impl Store {
    /// The partition of a task's batch.
    pub fn partition_of_task(&self, task_id: &str) -> Result<u32> {
        Ok(self.keys.partition_of(&batch_of(task_id)?))
    }
}
