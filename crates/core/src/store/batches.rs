//! Creating batches, reading batches and tasks for the API, and removing settled batches once their retention is
//! over.

use std::collections::{BTreeMap, HashMap};

use redis::AsyncCommands;

use super::{
    fields::{batch, task},
    row::Row,
    Result, Store, StoreError,
};
use crate::{
    domain::{BatchStatus, TaskStatus},
    ids,
    model::{BatchView, TaskView},
    validate::ValidBatch,
};

/// `value` as JSON; a value that does not serialise is damaged data.
fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub has_more: bool,
}

impl<T> Page<T> {
    /// A page with nothing on it, and nothing after it.
    pub fn empty() -> Self {
        Self {
            data: Vec::new(),
            has_more: false,
        }
    }

    /// The first `limit` of `data`, read one past the limit to know whether more follow.
    pub fn of_overfetched(mut data: Vec<T>, limit: usize) -> Self {
        let has_more = data.len() > limit;
        data.truncate(limit);
        Self { data, has_more }
    }
}

impl Store {
    /// Writes a validated batch whose cost is already reserved, and queues the tasks that may start. The batch,
    /// its tasks and its messages keep `traceparent` (the creating request's trace context), if given.
    /// Returns false when the batch already existed (nothing changed).
    pub async fn create_batch(
        &self,
        tenant_id: &str,
        batch_id: &str,
        valid: &ValidBatch,
        now: u64,
        traceparent: Option<&str>,
    ) -> Result<bool> {
        let traceparent = traceparent.unwrap_or_default();
        let total = valid.tasks.len().to_string();
        let now = now.to_string();
        // Hashes of few fields are listpacks, which Redis searches front to back: the fields the scripts read on
        // every transition go first.
        let batch_fields = [
            (batch::STATUS, BatchStatus::Queued.as_str().to_owned()),
            (batch::TOTAL, total.clone()),
            (batch::N_QUEUED, total.clone()),
            (batch::N_RUNNING, "0".to_owned()),
            (batch::N_SUCCEEDED, "0".to_owned()),
            (batch::N_FAILED, "0".to_owned()),
            (batch::N_CANCELLED, "0".to_owned()),
            (batch::MODE, valid.mode.as_str().to_owned()),
            (batch::ID, batch_id.to_owned()),
            (batch::COST_SUCCEEDED, "0".to_owned()),
            (batch::TRACEPARENT, traceparent.to_owned()),
            (batch::TENANT_ID, tenant_id.to_owned()),
            (batch::COST, valid.cost().to_string()),
            (batch::METADATA, to_json(&valid.metadata)?),
            (batch::CREATED_AT, now.clone()),
        ];
        let partition = self.keys.partition_of(batch_id);
        let mut invocation = self.scripts.create_batch.prepare_invoke();
        invocation
            .key(self.keys.batch(batch_id))
            .key(self.keys.submit_stream(partition))
            .key(self.keys.batch_events(batch_id))
            .key(self.keys.open_batches(partition))
            .arg(self.keys.task_prefix(batch_id))
            .arg(batch_id)
            .arg(valid.mode.as_str())
            .arg(&now)
            .arg(traceparent)
            .arg(&total)
            .arg(batch_fields.len() * 2);
        for (field, value) in &batch_fields {
            invocation.arg(*field).arg(value);
        }
        for (index, t) in valid.tasks.iter().enumerate() {
            let task_id = ids::task_id(batch_id, index);
            let task_fields = [
                // `attempts` and `progress` start absent (every reader takes that as 0), and `updated_at` until
                // the first change: three fields fewer through the script per task.
                (task::STATUS, TaskStatus::Queued.as_str().to_owned()),
                (task::ID, task_id.clone()),
                (task::INDEX, index.to_string()),
                (task::PRICE, t.price.to_string()),
                (task::MODEL, t.model.as_str().to_owned()),
                (task::SPEC, to_json(&t.spec)?),
                (task::TENANT_ID, tenant_id.to_owned()),
                (task::BATCH_ID, batch_id.to_owned()),
                (task::CREATED_AT, now.clone()),
                // Empty means absent to every reader: an empty field would only take room.
                (task::CUSTOM_ID, t.custom_id.clone().unwrap_or_default()),
                (task::TRACEPARENT, traceparent.to_owned()),
            ];
            let present: Vec<_> = task_fields
                .iter()
                .filter(|(_, value)| !value.is_empty())
                .collect();
            invocation.arg(&task_id).arg(present.len() * 2);
            for (field, value) in present {
                invocation.arg(*field).arg(value);
            }
        }
        let created: i64 = invocation.invoke_async(&mut self.connection()).await?;
        Ok(created == 1)
    }

    /// A batch by id, whoever owns it.
    pub async fn batch(&self, batch_id: &str) -> Result<Option<BatchView>> {
        if !ids::is_batch_id(batch_id) {
            return Ok(None);
        }
        let h: HashMap<String, String> = self.connection().hgetall(self.keys.batch(batch_id)).await?;
        BatchView::from_hash(&h)
    }

    /// A tenant's batch; another tenant's batch is `None`, exactly like a missing one.
    pub async fn tenant_batch(&self, tenant_id: &str, batch_id: &str) -> Result<Option<BatchView>> {
        Ok(self.batch(batch_id).await?.filter(|b| b.tenant_id == tenant_id))
    }

    /// A task by id, whoever owns it.
    pub async fn task(&self, task_id: &str) -> Result<Option<TaskView>> {
        let Some((batch_id, _)) = ids::parse_task_id(task_id) else {
            return Ok(None);
        };
        let mut conn = self.connection();
        let (task, status): (HashMap<String, String>, Option<String>) = redis::pipe()
            .hgetall(self.keys.task(&batch_id, task_id))
            .hget(self.keys.batch(&batch_id), batch::STATUS)
            .query_async(&mut conn)
            .await?;
        TaskView::from_hash(&task, settled(status.as_deref())?)
    }

    /// A tenant's task; another tenant's task is `None`.
    pub async fn tenant_task(&self, tenant_id: &str, task_id: &str) -> Result<Option<TaskView>> {
        Ok(self.task(task_id).await?.filter(|t| t.tenant_id == tenant_id))
    }

    /// A tenant's batches, newest first, after the batch `after` (exclusive).
    pub async fn list_batches(
        &self,
        tenant_id: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<BatchView>> {
        let mut conn = self.connection();
        let index = self.keys.tenant_batches(tenant_id);
        let start = match after {
            Some(after) => match conn.zrevrank::<_, _, Option<isize>>(&index, after).await? {
                Some(rank) => rank + 1,
                None => return Ok(Page::empty()),
            },
            None => 0,
        };
        // One extra id tells whether more follow.
        let ids: Vec<String> = conn.zrevrange(&index, start, start + limit as isize).await?;
        let has_more = ids.len() > limit;
        if ids.is_empty() {
            return Ok(Page {
                data: Vec::new(),
                has_more,
            });
        }
        let mut pipe = redis::pipe();
        for id in ids.iter().take(limit) {
            pipe.hgetall(self.keys.batch(id));
        }
        let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut conn).await?;
        // A reservation whose batch was never written (a crash in between) has no hash: skip it.
        let data = hashes
            .iter()
            .map(BatchView::from_hash)
            .filter_map(Result::transpose)
            .collect::<Result<_>>()?;
        Ok(Page { data, has_more })
    }

    /// The tasks of a batch by index, optionally of one status, after the task `after` (exclusive).
    pub async fn list_tasks(
        &self,
        batch: &BatchView,
        status: Option<TaskStatus>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<TaskView>> {
        let start = match after {
            Some(after) => match ids::parse_task_id(after) {
                Some((b, index)) if b == batch.id => index.saturating_add(1),
                _ => return Ok(Page::empty()),
            },
            None => 0,
        };
        let total = usize::try_from(batch.request_counts.total).unwrap_or(0);
        let settled = batch.status.is_final();
        let mut conn = self.connection();
        let mut data = Vec::new();
        let mut index = start;
        // Read in pages of the limit, so a status filter never loads the whole batch at once.
        while index < total && data.len() <= limit {
            let end = (index + limit.max(1) + 1).min(total);
            let mut pipe = redis::pipe();
            for i in index..end {
                pipe.hgetall(self.keys.task(&batch.id, &ids::task_id(&batch.id, i)));
            }
            let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut conn).await?;
            for hash in &hashes {
                if let Some(task) = TaskView::from_hash(hash, settled)? {
                    if status.is_none_or(|s| task.status == s) {
                        data.push(task);
                    }
                }
            }
            index = end;
        }
        Ok(Page::of_overfetched(data, limit))
    }
}

impl Store {
    /// Removes up to `max` batches of partition `p` settled at or before `cutoff` (ms), oldest first: first their
    /// tenant side (one `expire_tenant.lua` call per tenant, in the tenant's slot), then the batches themselves
    /// (one `expire_batches.lua` call for the partition). A crash in between leaves the batches indexed, and the next
    /// call does both steps again; both are idempotent. Returns how many batches were found due, and how many of
    /// them were removed.
    pub async fn expire_settled_batches(&self, p: u32, cutoff: u64, max: usize) -> Result<(usize, usize)> {
        const FIELDS: [&str; 2] = [batch::TENANT_ID, batch::TOTAL];
        let mut conn = self.connection();
        let index = self.keys.expiring_batches(p);
        let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&index)
            .arg("-inf")
            .arg(cutoff)
            .arg("LIMIT")
            .arg(0)
            .arg(max)
            .query_async(&mut conn)
            .await?;
        if ids.is_empty() {
            return Ok((0, 0));
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hmget(self.keys.batch(id), &FIELDS);
        }
        let rows: Vec<Vec<Option<String>>> = pipe.query_async(&mut conn).await?;
        let mut by_tenant: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        let mut remove = self.scripts.expire_batches.key(&index);
        remove.arg(cutoff);
        for (id, values) in ids.iter().zip(&rows) {
            let row = Row::of_fields(id, &FIELDS, values);
            // A batch whose hash is already gone has nothing left to remove but its index entry.
            let total: usize = row.number(batch::TOTAL)?;
            if let Some(tenant) = row.text(batch::TENANT_ID) {
                by_tenant.entry(tenant.to_owned()).or_default().push(id);
            }
            remove
                .key(self.keys.batch(id))
                .key(self.keys.batch_events(id))
                .arg(id)
                .arg(total + 2);
            for i in 0..total {
                remove.key(self.keys.task(id, &ids::task_id(id, i)));
            }
        }
        for (tenant, batch_ids) in &by_tenant {
            let _: i64 = self
                .scripts
                .expire_tenant
                .key(self.keys.tenant_batches(tenant))
                .key(self.keys.settlements(tenant))
                .key(self.keys.ledger_by_batch(tenant))
                .arg(batch_ids.as_slice())
                .invoke_async(&mut conn)
                .await?;
        }
        let removed: usize = remove.invoke_async(&mut conn).await?;
        Ok((ids.len(), removed))
    }
}

/// Whether a batch of this stored status has settled its credits (a missing batch has not).
fn settled(status: Option<&str>) -> Result<bool> {
    match status {
        Some(status) => status
            .parse::<BatchStatus>()
            .map(BatchStatus::is_final)
            .map_err(|e| StoreError::Corrupt(e.to_string())),
        None => Ok(false),
    }
}
