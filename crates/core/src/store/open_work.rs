//! Reads and resends over the work that is still open, for the recovery sweep (`crate::recovery`), which owns the
//! policy; this module only knows where things are.

use std::collections::HashMap;

use redis::AsyncCommands;

use super::{
    fields::{batch, task},
    row::Row,
    Result, Store, StreamKind,
};
use crate::{
    domain::{BatchStatus, TaskStatus},
    ids,
    messages::Message,
};

/// What the sweep needs to know about an open batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenBatch {
    pub id: String,
    pub status: BatchStatus,
    pub total: usize,
    pub traceparent: Option<String>,
}

/// One task of an open batch: its state and, while `submitting`, when its submitter's lease ends (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskLease {
    pub status: TaskStatus,
    pub lease_until: Option<u64>,
}

impl Store {
    /// Up to `max` batches of partition `p` that are not settled yet, oldest first. Ids whose batch hash is
    /// gone are dropped from the index on the way.
    pub async fn open_batches(&self, p: u32, max: usize) -> Result<Vec<OpenBatch>> {
        const FIELDS: [&str; 3] = [batch::STATUS, batch::TOTAL, batch::TRACEPARENT];
        let mut conn = self.connection();
        let last = isize::try_from(max).unwrap_or(isize::MAX).saturating_sub(1);
        let ids: Vec<String> = conn.zrange(self.keys.open_batches(p), 0, last).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hmget(self.keys.batch(id), &FIELDS);
        }
        let rows: Vec<Vec<Option<String>>> = pipe.query_async(&mut conn).await?;
        let mut open = Vec::with_capacity(ids.len());
        for (id, values) in ids.into_iter().zip(rows) {
            let row = Row::of_fields(&id, &FIELDS, &values);
            let Some(status) = row.parse_opt::<BatchStatus>(batch::STATUS)? else {
                let _: () = conn.zrem(self.keys.open_batches(p), &id).await?;
                continue;
            };
            open.push(OpenBatch {
                status,
                total: row.number(batch::TOTAL)?,
                traceparent: row.text(batch::TRACEPARENT).map(str::to_owned),
                id,
            });
        }
        Ok(open)
    }

    /// The state of every task of `batch`, by index (`None` where a task hash is missing).
    pub async fn task_leases(&self, batch: &OpenBatch) -> Result<Vec<Option<TaskLease>>> {
        const FIELDS: [&str; 2] = [task::STATUS, task::LEASE_UNTIL];
        if batch.total == 0 {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for i in 0..batch.total {
            pipe.hmget(self.keys.task(&batch.id, &ids::task_id(&batch.id, i)), &FIELDS);
        }
        let rows: Vec<Vec<Option<String>>> = pipe.query_async(&mut self.connection()).await?;
        rows.iter()
            .map(|values| {
                let row = Row::of_fields(&batch.id, &FIELDS, values);
                Ok(match row.parse_opt::<TaskStatus>(task::STATUS)? {
                    Some(status) => Some(TaskLease {
                        status,
                        lease_until: row.parse_opt(task::LEASE_UNTIL)?,
                    }),
                    None => None,
                })
            })
            .collect()
    }

    /// Sends `message` again on its stream (submit or settle) of the batch's partition.
    pub async fn resend(&self, message: &Message) -> Result<()> {
        let (batch_id, kind) = match message {
            Message::SubmitTask { batch_id, .. } => (batch_id, StreamKind::Submit),
            Message::SettleBatch { batch_id, .. } => (batch_id, StreamKind::Settle),
        };
        let key = self.stream_key(kind, self.keys.partition_of(batch_id));
        let _: String = self.connection().xadd(key, "*", &message.to_fields()).await?;
        Ok(())
    }

    /// A tenant's credit reservations: batch id → credits frozen for it, until settled.
    pub async fn reservations(&self, tenant_id: &str) -> Result<HashMap<String, u64>> {
        Ok(self
            .connection()
            .hgetall(self.keys.reservations(tenant_id))
            .await?)
    }
}
