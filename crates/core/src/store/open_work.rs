//! Reads and resends over the work that is still open, for the recovery sweep (`crate::recovery`), which owns the
//! policy; this module only knows where things are. The open index (`{pN}:open`) is scored by when each batch is
//! next due for a check, so a sweep reads the due batches only, however many are open; and the streams that carry
//! the open work are trimmed here once every consumer group is done with their entries.

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
    /// When the batch was accepted (ms).
    pub created_at: u64,
}

/// One task of an open batch: its state and, while `submitting`, when its submitter's lease ends (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskLease {
    pub status: TaskStatus,
    pub lease_until: Option<u64>,
}

impl Store {
    /// Takes up to `max` batches of partition `p` whose check is due at `now` (ms), the longest overdue first, and
    /// moves their next check to `next_check` (so a concurrent sweep does not take them too). Ids whose batch hash
    /// is gone are dropped from the index on the way.
    pub async fn claim_due_open_batches(
        &self,
        p: u32,
        now: u64,
        max: usize,
        next_check: u64,
    ) -> Result<Vec<OpenBatch>> {
        const FIELDS: [&str; 4] = [batch::STATUS, batch::TOTAL, batch::TRACEPARENT, batch::CREATED_AT];
        let mut conn = self.connection();
        let ids: Vec<String> = self
            .scripts
            .open_claim
            .key(self.keys.open_batches(p))
            .arg(now)
            .arg(max)
            .arg(next_check)
            .invoke_async(&mut conn)
            .await?;
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
                created_at: row.number(batch::CREATED_AT)?,
                id,
            });
        }
        Ok(open)
    }

    /// Moves the next check of an open batch to `at` (ms); a batch no longer open (settled since) stays out.
    pub async fn schedule_check(&self, batch_id: &str, at: u64) -> Result<()> {
        let key = self.keys.open_batches(self.keys.partition_of(batch_id));
        let _: () = redis::cmd("ZADD")
            .arg(key)
            .arg("XX")
            .arg(at)
            .arg(batch_id)
            .query_async(&mut self.connection())
            .await?;
        Ok(())
    }

    /// How many batches are open (not yet settled), all partitions: one ZCARD each.
    pub async fn open_batch_count(&self) -> Result<u64> {
        let mut pipe = redis::pipe();
        for p in 0..self.keys.partitions() {
            pipe.zcard(self.keys.open_batches(p));
        }
        let counts: Vec<u64> = pipe.query_async(&mut self.connection()).await?;
        Ok(counts.iter().sum())
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

    /// The tenant's batch ids reserved after the last look for orphans ended (see
    /// [`Store::set_reservations_checked`]; from the start before the first look) and at or before `until` (ms),
    /// oldest first, at most `max`, with their reservation times; and where the last look ended.
    pub async fn reserved_between(
        &self,
        tenant_id: &str,
        until: u64,
        max: usize,
    ) -> Result<(u64, Vec<(String, u64)>)> {
        let mut conn = self.connection();
        let after: Option<u64> = conn.get(self.keys.reservations_checked(tenant_id)).await?;
        let after = after.unwrap_or(0);
        if after >= until {
            return Ok((after, Vec::new()));
        }
        let ids: Vec<(String, u64)> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.tenant_batches(tenant_id))
            .arg(format!("({after}"))
            .arg(until)
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(max)
            .query_async(&mut conn)
            .await?;
        Ok((after, ids))
    }

    /// Records that the tenant's reservations made up to `at` (ms) have been looked at.
    pub async fn set_reservations_checked(&self, tenant_id: &str, at: u64) -> Result<()> {
        let _: () = self
            .connection()
            .set(self.keys.reservations_checked(tenant_id), at)
            .await?;
        Ok(())
    }

    /// Those of `batch_ids` (the tenant's) that still hold a reservation but whose batch was never written: one
    /// pipelined HEXISTS and EXISTS each.
    pub async fn orphan_reservations(&self, tenant_id: &str, batch_ids: &[String]) -> Result<Vec<String>> {
        if batch_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in batch_ids {
            pipe.hexists(self.keys.reservations(tenant_id), id)
                .exists(self.keys.batch(id));
        }
        let found: Vec<bool> = pipe.query_async(&mut self.connection()).await?;
        Ok(batch_ids
            .iter()
            .zip(found.chunks(2))
            .filter(|(_, found)| matches!(found, [true, false]))
            .map(|(id, _)| id.clone())
            .collect())
    }

    /// Drops the entries of partition `p`'s stream of `kind` that every consumer group has acknowledged (one
    /// script call; see `trim_stream.lua`); a stream without a group is left alone. Returns how many went.
    pub async fn trim_stream(&self, kind: StreamKind, p: u32) -> Result<u64> {
        Ok(self
            .scripts
            .trim_stream
            .key(self.stream_key(kind, p))
            .invoke_async(&mut self.connection())
            .await?)
    }
}
