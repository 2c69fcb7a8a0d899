//! Every Redis key Gantry uses is built here, nowhere else.
//!
//! Keys of one batch (its hash, its tasks, its live event stream) and the streams and schedule of its partition
//! share the hash tag `{pN}`, so every script touches a single Redis Cluster slot. Tenant keys share `{t:<id>}`.
//!
//! | key | type | what |
//! |---|---|---|
//! | `<prefix>:{pN}:submit` | stream | tasks to create at the provider (group `submitter`) |
//! | `<prefix>:{pN}:settle` | stream | batches whose tasks are all terminal (group `settlement`) |
//! | `<prefix>:{pN}:polls` | zset | running task ids scored by next poll time (ms) |
//! | `<prefix>:{pN}:open` | zset | batches not yet settled, scored by when the sweeper next checks them (ms; a new batch by its creation ms) |
//! | `<prefix>:{pN}:expiring` | zset | settled batches (completed or cancelled), scored by settlement ms: removed `retention.completed_secs` later |
//! | `<prefix>:{pN}:dead` | stream | dead letters: messages that failed `streams.max_deliveries` times or were malformed |
//! | `<prefix>:{pN}:retries` | zset | queued task ids waiting to retry a create, scored by due time (ms) |
//! | `<prefix>:{pN}:batch:<id>` | hash | a batch |
//! | `<prefix>:{pN}:batch:<id>:events` | stream | the batch's live progress events (SSE) |
//! | `<prefix>:{pN}:task:<id>` | hash | a task |
//! | `<prefix>:{t:<id>}:tenant` | hash | name, balance, frozen, charged, granted |
//! | `<prefix>:{t:<id>}:ledger` | stream | append-only credit movements |
//! | `<prefix>:{t:<id>}:keys` | hash | key id → the API key's record (see `store/api_keys.rs`) |
//! | `<prefix>:{t:<id>}:keys_used` | hash | key id → when the key was last used (ms) |
//! | `<prefix>:{t:<id>}:rate` | string | the tenant's request rate limit (GCRA arrival time, ms) |
//! | `<prefix>:{t:<id>}:ledger_by_batch` | hash | batch id → the ids of its ledger entries, space-separated, oldest first |
//! | `<prefix>:{t:<id>}:reservations` | hash | batch id → credits frozen for it, until settled |
//! | `<prefix>:{t:<id>}:settlements` | hash | batch id → `charged:refunded`, once settled |
//! | `<prefix>:{t:<id>}:batches` | zset | the tenant's batch ids by reservation time (ms) |
//! | `<prefix>:{t:<id>}:reservations_checked` | string | the sweeper has looked for orphan reservations up to this reservation time (ms) |
//! | `<prefix>:{t:<id>}:idem:<sha256>` | hash | one `Idempotency-Key` of the tenant on one endpoint: fingerprint, lease, stored answer (see `store/idempotency.rs`) |
//! | `<prefix>:apikeys` | hash | sha256(api key) → tenant id |
//! | `<prefix>:tenants` | set | all tenant ids |
//! | `<prefix>:{l:<provider>}:tat` | string | the provider's shared rate limit (GCRA arrival time, ms) |
//! | `<prefix>:{l:<provider>}:held` | hash | in-flight slots held, per process pool: `slots:lease expiry ms` |
//! | `<prefix>:{l:<provider>}:factor` | string | AIMD factor on the rate after 429s (missing = 1) |

/// Builds keys for one deployment (prefix) and partition count.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    partitions: u32,
    /// `<prefix>:{pN}` for every partition N: the hot keys are this plus a suffix, one allocation each.
    slots: std::sync::Arc<[String]>,
}

/// The concatenation of `parts`, in one allocation (keys are built for every task a service touches).
fn concat(parts: &[&str]) -> String {
    let mut key = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        key.push_str(part);
    }
    key
}

impl Keys {
    pub fn new(prefix: impl Into<String>, partitions: u32) -> Self {
        let prefix = prefix.into();
        let partitions = partitions.max(1);
        let slots = (0..partitions).map(|p| format!("{prefix}:{{p{p}}}")).collect();
        Self {
            prefix,
            partitions,
            slots,
        }
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The partition of a batch: FNV-1a of its id modulo the partition count (stable across processes).
    pub fn partition_of(&self, batch_id: &str) -> u32 {
        let mut hash: u32 = 0x811c_9dc5;
        for byte in batch_id.bytes() {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        hash % self.partitions
    }

    /// `<prefix>:{pN}`; a partition out of range (a caller's bug) still gets its well-formed key.
    fn slot(&self, partition: u32) -> std::borrow::Cow<'_, str> {
        match self.slots.get(partition as usize) {
            Some(slot) => std::borrow::Cow::Borrowed(slot),
            None => std::borrow::Cow::Owned(format!("{}:{{p{partition}}}", self.prefix)),
        }
    }

    pub fn submit_stream(&self, partition: u32) -> String {
        concat(&[&self.slot(partition), ":submit"])
    }

    pub fn settle_stream(&self, partition: u32) -> String {
        concat(&[&self.slot(partition), ":settle"])
    }

    pub fn polls(&self, partition: u32) -> String {
        concat(&[&self.slot(partition), ":polls"])
    }

    /// The dead-letter stream of a partition: messages that could not be processed.
    pub fn dead_letters(&self, partition: u32) -> String {
        concat(&[&self.slot(partition), ":dead"])
    }

    /// The dead-letter stream in the same slot as the stream `source` (one of this module's partition streams).
    pub fn dead_letters_of(&self, source: &str) -> String {
        let slot = source.rsplit_once(':').map_or(source, |(slot, _)| slot);
        format!("{slot}:dead")
    }

    /// Batches of a partition not yet settled, scored by when the sweeper should next check them (ms): a new
    /// batch by its creation time, then rescored after each check.
    pub fn open_batches(&self, partition: u32) -> String {
        concat(&[&self.slot(partition), ":open"])
    }

    /// Settled batches of a partition, scored by settlement time (ms): what retention removes once they are old.
    pub fn expiring_batches(&self, partition: u32) -> String {
        concat(&[&self.slot(partition), ":expiring"])
    }

    pub fn retries(&self, partition: u32) -> String {
        concat(&[&self.slot(partition), ":retries"])
    }

    /// The three keys of one provider's shared limits: (rate, in-flight slots held, AIMD factor).
    pub fn limiter(&self, provider: &str) -> (String, String, String) {
        let slot = format!("{}:{{l:{provider}}}", self.prefix);
        (
            format!("{slot}:tat"),
            format!("{slot}:held"),
            format!("{slot}:factor"),
        )
    }

    pub fn batch(&self, batch_id: &str) -> String {
        concat(&[&self.slot(self.partition_of(batch_id)), ":batch:", batch_id])
    }

    pub fn batch_events(&self, batch_id: &str) -> String {
        concat(&[
            &self.slot(self.partition_of(batch_id)),
            ":batch:",
            batch_id,
            ":events",
        ])
    }

    /// The prefix that, followed by a task id, makes that task's key (used by scripts that walk a batch).
    pub fn task_prefix(&self, batch_id: &str) -> String {
        self.partition_task_prefix(self.partition_of(batch_id))
    }

    /// The prefix of the task keys of one partition (the task id is appended).
    pub fn partition_task_prefix(&self, partition: u32) -> String {
        concat(&[&self.slot(partition), ":task:"])
    }

    pub fn task(&self, batch_id: &str, task_id: &str) -> String {
        concat(&[&self.slot(self.partition_of(batch_id)), ":task:", task_id])
    }

    /// `<prefix>:{t:<tenant>}` followed by `suffix`.
    fn tenant_key(&self, tenant_id: &str, suffix: &str) -> String {
        concat(&[&self.prefix, ":{t:", tenant_id, "}", suffix])
    }

    pub fn tenant(&self, tenant_id: &str) -> String {
        self.tenant_key(tenant_id, ":tenant")
    }

    pub fn ledger(&self, tenant_id: &str) -> String {
        self.tenant_key(tenant_id, ":ledger")
    }

    pub fn tenant_rate(&self, tenant_id: &str) -> String {
        self.tenant_key(tenant_id, ":rate")
    }

    pub fn api_key_records(&self, tenant_id: &str) -> String {
        self.tenant_key(tenant_id, ":keys")
    }

    pub fn api_keys_used(&self, tenant_id: &str) -> String {
        self.tenant_key(tenant_id, ":keys_used")
    }

    pub fn ledger_by_batch(&self, tenant_id: &str) -> String {
        self.tenant_key(tenant_id, ":ledger_by_batch")
    }

    pub fn reservations(&self, tenant_id: &str) -> String {
        self.tenant_key(tenant_id, ":reservations")
    }

    pub fn settlements(&self, tenant_id: &str) -> String {
        self.tenant_key(tenant_id, ":settlements")
    }

    pub fn tenant_batches(&self, tenant_id: &str) -> String {
        self.tenant_key(tenant_id, ":batches")
    }

    /// How far (reservation time, ms) the sweeper has looked for reservations whose batch was never written.
    pub fn reservations_checked(&self, tenant_id: &str) -> String {
        self.tenant_key(tenant_id, ":reservations_checked")
    }

    /// The record of an `Idempotency-Key` sent by a tenant to one endpoint (`endpoint` = method and path, so the
    /// same key on two endpoints is two records). The key is hashed: it is client input of any visible character.
    pub fn idempotency(&self, tenant_id: &str, endpoint: &str, key: &str) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::new()
            .chain_update(endpoint)
            .chain_update("\n")
            .chain_update(key)
            .finalize();
        self.tenant_key(tenant_id, &format!(":idem:{}", hex::encode(digest)))
    }

    pub fn api_keys(&self) -> String {
        format!("{}:apikeys", self.prefix)
    }

    pub fn tenants(&self) -> String {
        format!("{}:tenants", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(key: &str) -> &str {
        let start = key.find('{').expect("tagged");
        let end = key[start..].find('}').expect("closed") + start;
        &key[start + 1..end]
    }

    #[test]
    fn a_batch_shares_its_slot_with_its_partition() {
        let keys = Keys::new("g", 8);
        let batch = "bat_0190f3c1a2b37c4d8e9f001122334455";
        let p = keys.partition_of(batch);
        let tags = [
            keys.batch(batch),
            keys.batch_events(batch),
            keys.task(batch, "tsk_x_0"),
            keys.submit_stream(p),
            keys.settle_stream(p),
            keys.polls(p),
            keys.open_batches(p),
            keys.expiring_batches(p),
        ]
        .map(|k| tag(&k).to_owned());
        assert!(tags.iter().all(|t| *t == tags[0]), "{tags:?}");
    }

    #[test]
    fn idempotency_records_live_with_their_tenant_and_are_scoped_by_endpoint() {
        let keys = Keys::new("g", 8);
        let tenant = "ten_0190f3c1a2b37c4d8e9f001122334455";
        let record = keys.idempotency(tenant, "POST /v1/batches", "k1");
        assert_eq!(tag(&record), tag(&keys.tenant(tenant)));
        assert_ne!(record, keys.idempotency(tenant, "POST /v1/tasks/x/cancel", "k1"));
        assert_ne!(record, keys.idempotency(tenant, "POST /v1/batches", "k2"));
        assert_ne!(record, keys.idempotency("ten_other", "POST /v1/batches", "k1"));
        // The key's characters never reach the Redis key: `{` or `:` in a client's key cannot move the slot.
        assert!(!keys
            .idempotency(tenant, "POST /v1/batches", "{x}:y")
            .contains("{x}"));
    }

    #[test]
    fn partitions_spread_and_are_stable() {
        let keys = Keys::new("g", 8);
        let mut seen = std::collections::HashSet::new();
        for i in 0..200 {
            let id = format!("bat_{i:032x}");
            let p = keys.partition_of(&id);
            assert_eq!(p, keys.partition_of(&id));
            assert!(p < 8);
            seen.insert(p);
        }
        assert_eq!(seen.len(), 8);
    }
}
