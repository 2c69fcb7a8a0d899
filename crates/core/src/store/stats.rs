//! Read-only figures behind the backlog gauges: how long each kind of stream is, how far a consumer group lags
//! behind and how much it holds unacknowledged, and how full the schedules are. A few cheap commands per
//! partition (XLEN, XINFO GROUPS, ZCARD, ZCOUNT), summed over all partitions.

use redis::{streams::StreamInfoGroupsReply, AsyncCommands};

use super::{
    fields::{batch, task},
    row::Row,
    Result, Store,
};
use crate::domain::{Mode, Model, TaskStatus};

/// A kind of partition stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Submit,
    Settle,
    Dead,
}

impl StreamKind {
    /// The `gantry.stream` attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Submit => "submit",
            Self::Settle => "settle",
            Self::Dead => "dead",
        }
    }
}

/// A kind of schedule (sorted set of task ids by due time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleKind {
    Polls,
    Retries,
}

impl ScheduleKind {
    /// The `gantry.schedule` attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Polls => "polls",
            Self::Retries => "retries",
        }
    }
}

/// One kind of stream over all partitions, as one consumer group sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Entries in the streams.
    pub length: u64,
    /// Entries not yet delivered to the group.
    pub lag: u64,
    /// Entries delivered to the group and not acknowledged.
    pub pending: u64,
}

impl Store {
    /// The key of partition `p`'s stream of `kind`.
    pub(super) fn stream_key(&self, kind: StreamKind, p: u32) -> String {
        match kind {
            StreamKind::Submit => self.keys.submit_stream(p),
            StreamKind::Settle => self.keys.settle_stream(p),
            StreamKind::Dead => self.keys.dead_letters(p),
        }
    }

    /// Length of every `kind` stream, and the lag and pending count of `group` on them (0 where the group does
    /// not exist yet).
    pub async fn stream_stats(&self, kind: StreamKind, group: &str) -> Result<StreamStats> {
        let mut conn = self.connection();
        let mut stats = StreamStats::default();
        for p in 0..self.keys.partitions() {
            let stream = self.stream_key(kind, p);
            let length: u64 = conn.xlen(&stream).await?;
            stats.length += length;
            if length == 0 && kind == StreamKind::Dead {
                continue;
            }
            // A stream that does not exist yet has no groups: XINFO answers an error, which means zero here.
            let groups: redis::RedisResult<StreamInfoGroupsReply> = conn.xinfo_groups(&stream).await;
            let Ok(groups) = groups else { continue };
            if let Some(info) = groups.groups.iter().find(|g| g.name == group) {
                stats.pending += info.pending as u64;
                // Redis reports no lag after some deletions; then count everything past the last delivery.
                stats.lag += info.lag.map_or(0, |lag| lag as u64);
            }
        }
        Ok(stats)
    }

    /// How many tasks each `kind` schedule holds, and how many of them are due at `now` (ms).
    pub async fn schedule_stats(&self, kind: ScheduleKind, now: u64) -> Result<(u64, u64)> {
        let mut pipe = redis::pipe();
        for p in 0..self.keys.partitions() {
            let key = match kind {
                ScheduleKind::Polls => self.keys.polls(p),
                ScheduleKind::Retries => self.keys.retries(p),
            };
            pipe.zcard(&key).zcount(&key, "-inf", now);
        }
        let counts: Vec<u64> = pipe.query_async(&mut self.connection()).await?;
        let size = counts.iter().step_by(2).sum();
        let due = counts.iter().skip(1).step_by(2).sum();
        Ok((size, due))
    }
}

/// What a settled batch's metrics are made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchFigures {
    pub mode: Mode,
    /// When the batch was accepted (ms).
    pub created_at: u64,
    pub tasks: Vec<TaskFigures>,
}

/// One task's times (ms, 0 where it never got there) and status calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFigures {
    pub model: Model,
    pub status: TaskStatus,
    pub created_at: u64,
    /// The last time a submitter took it (its last attempt).
    pub claimed_at: u64,
    /// When the provider accepted it.
    pub submitted_at: u64,
    pub finished_at: u64,
    pub polls: u64,
}

impl Store {
    /// The figures of a batch and its tasks (one pipelined read), or `None` when the batch does not exist.
    pub async fn batch_figures(&self, batch_id: &str) -> Result<Option<BatchFigures>> {
        let mut conn = self.connection();
        const BATCH: [&str; 3] = [batch::MODE, batch::CREATED_AT, batch::TOTAL];
        const TASK: [&str; 7] = [
            task::MODEL,
            task::STATUS,
            task::CREATED_AT,
            task::CLAIMED_AT,
            task::SUBMITTED_AT,
            task::FINISHED_AT,
            task::POLLS,
        ];
        let values: Vec<Option<String>> = conn.hmget(self.keys.batch(batch_id), &BATCH).await?;
        let batch_row = Row::of_fields("batch", &BATCH, &values);
        let Some(mode) = batch_row.parse_opt::<Mode>(batch::MODE)? else {
            return Ok(None);
        };
        let created_at = batch_row.number(batch::CREATED_AT)?;
        let total: usize = batch_row.number(batch::TOTAL)?;
        let mut pipe = redis::pipe();
        for i in 0..total {
            pipe.hmget(self.keys.task(batch_id, &crate::ids::task_id(batch_id, i)), &TASK);
        }
        let rows: Vec<Vec<Option<String>>> = if total == 0 {
            Vec::new()
        } else {
            pipe.query_async(&mut conn).await?
        };
        let tasks = rows
            .iter()
            .map(|values| {
                let row = Row::of_fields("task", &TASK, values);
                Ok(TaskFigures {
                    model: row.parse(task::MODEL)?,
                    status: row.parse(task::STATUS)?,
                    created_at: row.number(task::CREATED_AT)?,
                    claimed_at: row.number(task::CLAIMED_AT)?,
                    submitted_at: row.number(task::SUBMITTED_AT)?,
                    finished_at: row.number(task::FINISHED_AT)?,
                    polls: row.number(task::POLLS)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Some(BatchFigures {
            mode,
            created_at,
            tasks,
        }))
    }
}
