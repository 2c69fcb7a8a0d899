//! The poll schedule: claiming due polls, recording a poll's result and scheduling the next one.

use redis::AsyncCommands;

use super::{
    tasks::{batch_of, TaskRow},
    Result, Store,
};

impl Store {
    /// Claims up to `max` due polls of a partition, each leased for `lease_ms`, with each task's row (`None` when
    /// the task is gone; an error when its hash is damaged): one script call, then one pipeline of reads. Also
    /// answers the earliest due time left in the partition's schedule (`None` when it is empty), so that a poller
    /// knows when to come back.
    pub async fn claim_polls(
        &self,
        partition: u32,
        now: u64,
        lease_ms: u64,
        max: usize,
    ) -> Result<(Vec<(String, Result<Option<TaskRow>>)>, Option<u64>)> {
        let (claimed, next_due): (Vec<String>, String) = self
            .scripts
            .poll_claim
            .key(self.keys.polls(partition))
            .arg(now)
            .arg(lease_ms)
            .arg(max)
            .invoke_async(&mut self.connection())
            .await?;
        let mut rows = Vec::with_capacity(claimed.len());
        if !claimed.is_empty() {
            let prefix = self.keys.partition_task_prefix(partition);
            let mut pipe = redis::pipe();
            for id in &claimed {
                pipe.cmd("HMGET")
                    .arg(format!("{prefix}{id}"))
                    .arg(&TaskRow::FIELDS);
            }
            let values: Vec<Vec<Option<String>>> = pipe.query_async(&mut self.connection()).await?;
            for (id, values) in claimed.into_iter().zip(values) {
                let row = TaskRow::from_values(&id, &values);
                rows.push((id, row));
            }
        }
        // Scores are whole ms, though Redis may write them as floats.
        Ok((rows, next_due.parse::<f64>().ok().map(|due| due as u64)))
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
}
