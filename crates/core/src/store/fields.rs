//! The field names of the batch, task and tenant hashes, declared once. Rust reads and writes them through these
//! constants, and every Lua script reads them from the constants `scripts.rs` generates from the same declarations
//! (`TASK_STATUS` is `'status'`; a misspelt one such as `TASK_STAUTS` is an undeclared global, which Redis refuses,
//! so the script fails instead of naming a `nil` field). Renaming a field here renames it everywhere.
//!
//! The other hashes keep their names where they are used: the idempotency record (`idem_*.lua`, written and read
//! only by those scripts) and the reservation and settlement hashes, whose fields are batch ids.
//!
//! All times are epoch milliseconds as decimal strings. "Created" means written by `create_batch.lua` from the
//! objects `Store::create_batch` builds.
//!
//! Batch hash (`<prefix>:{pN}:batch:<batch_id>`):
//!
//! | constant | field | holds | written by |
//! |---|---|---|---|
//! | `ID`, `TENANT_ID` | `id`, `tenant_id` | identity | created |
//! | `MODE` | `mode` | `parallel` or `chain` | created |
//! | `STATUS` | `status` | a `BatchStatus` | created; `claim_submit`, `finish_task`, `cancel_batch`, `settle_finalize` |
//! | `TOTAL` | `total` | number of tasks | created |
//! | `N_QUEUED`, `N_RUNNING` | `n_queued`, `n_running` | tasks queued (retries included), submitting or running | created; `claim_submit`, `retry_later`, `finish_task` |
//! | `N_SUCCEEDED`, `N_FAILED`, `N_CANCELLED` | `n_succeeded`, `n_failed`, `n_cancelled` | terminal tasks by status | created; `finish_task` |
//! | `COST` | `cost` | credits frozen for the batch | created |
//! | `COST_SUCCEEDED` | `cost_succeeded` | prices of the succeeded tasks (what settlement charges) | created; `finish_task` |
//! | `METADATA` | `metadata` | the client's metadata, a JSON object | created |
//! | `CREATED_AT` | `created_at` | accept time | created |
//! | `TRACEPARENT` | `traceparent` | trace context of the creating request (may be empty) | created |
//! | `CHARGED`, `REFUNDED` | `charged`, `refunded` | settled credits | `settle_finalize` |
//! | `COMPLETED_AT` | `completed_at` | when the batch became final | `settle_finalize` |
//!
//! Task hash (`<prefix>:{pN}:task:<task_id>`):
//!
//! | constant | field | holds | written by |
//! |---|---|---|---|
//! | `ID`, `BATCH_ID`, `TENANT_ID` | `id`, `batch_id`, `tenant_id` | identity | created |
//! | `INDEX`, `CUSTOM_ID` | `index`, `custom_id` | position in the batch, the client's id (may be empty) | created |
//! | `MODEL`, `SPEC`, `PRICE` | `model`, `spec`, `price` | canonical model, validated request (JSON), credits | created |
//! | `STATUS` | `status` | a `TaskStatus` | created; `claim_submit`, `mark_running`, `retry_later`, `finish_task` |
//! | `PROGRESS` | `progress` | 0 to 100 | created; `poll_update`, `finish_task` |
//! | `ATTEMPTS` | `attempts` | claims so far; fences stale attempts | created; `claim_submit` |
//! | `CREATED_AT`, `UPDATED_AT` | `created_at`, `updated_at` | times | created; `updated_at` by every transition |
//! | `CLAIMED_AT` | `claimed_at` | when a submitter last took the task | `claim_submit` |
//! | `TRACEPARENT` | `traceparent` | the batch's trace context | created |
//! | `LEASE_UNTIL` | `lease_until` | while `submitting`: when the submitter's lease ends | `claim_submit`; deleted on leaving `submitting` |
//! | `LAST_ERROR` | `last_error` | the last provider error | `retry_later`, `poll_update` |
//! | `RETRY_AT` | `retry_at` | when the last scheduled create retry is due | `retry_later` |
//! | `REMOTE_ID`, `PROVIDER`, `SUBMITTED_AT` | `remote_id`, `provider`, `submitted_at` | the provider's id, which provider, when it accepted | `mark_running` |
//! | `POLLS`, `POLL_ERRORS` | `polls`, `poll_errors` | status calls, failed ones in a row | `mark_running`, `poll_update` |
//! | `OUTPUT_URL`, `LAST_FRAME_URL` | `output_url`, `last_frame_url` | the result | `finish_task` |
//! | `FAILURE_CODE`, `FAILURE_MESSAGE` | `failure_code`, `failure_message` | why it failed or was cancelled | `finish_task` |
//! | `FINISHED_AT` | `finished_at` | when it became terminal | `finish_task` |
//! | `CHAIN_FIRST_FRAME` | `chain_first_frame` | chain mode: the previous shot's last frame | `finish_task` (of the previous shot) |
//!
//! Tenant hash (`<prefix>:{t:<tenant_id>}:tenant`); credits are whole numbers and
//! `balance + frozen + charged == granted` (see `audit.rs`):
//!
//! | constant | field | holds | written by |
//! |---|---|---|---|
//! | `ID`, `NAME` | `id`, `name` | identity | `Store::create_tenant` |
//! | `BALANCE` | `balance` | credits free to spend | `Store::create_tenant` (0); `grant`, `reserve`, `settle` |
//! | `FROZEN` | `frozen` | credits reserved for unsettled batches | `Store::create_tenant` (0); `reserve`, `settle` |
//! | `CHARGED` | `charged` | credits spent on settled batches | `Store::create_tenant` (0); `settle` |
//! | `GRANTED` | `granted` | credits ever granted | `Store::create_tenant` (0); `grant` |
//! | `CREATED_AT` | `created_at` | creation time | `Store::create_tenant` |

/// Declares a module of field-name constants and `ALL`, every `(constant name, field)` pair in order, from which
/// the Lua tables are generated (the Lua key is the constant's name in lower case).
macro_rules! hash_fields {
    ($(#[$doc:meta])* $module:ident { $($constant:ident = $field:literal,)* }) => {
        $(#[$doc])*
        pub mod $module {
            $(pub const $constant: &str = $field;)*

            /// Every field: the constant's name and the field's name.
            pub const ALL: &[(&str, &str)] = &[$((stringify!($constant), $constant)),*];
        }
    };
}

hash_fields! {
    /// The fields of a batch hash.
    batch {
        ID = "id",
        TENANT_ID = "tenant_id",
        MODE = "mode",
        STATUS = "status",
        TOTAL = "total",
        N_QUEUED = "n_queued",
        N_RUNNING = "n_running",
        N_SUCCEEDED = "n_succeeded",
        N_FAILED = "n_failed",
        N_CANCELLED = "n_cancelled",
        COST = "cost",
        COST_SUCCEEDED = "cost_succeeded",
        METADATA = "metadata",
        CREATED_AT = "created_at",
        TRACEPARENT = "traceparent",
        CHARGED = "charged",
        REFUNDED = "refunded",
        COMPLETED_AT = "completed_at",
    }
}

hash_fields! {
    /// The fields of a task hash.
    task {
        ID = "id",
        BATCH_ID = "batch_id",
        TENANT_ID = "tenant_id",
        INDEX = "index",
        CUSTOM_ID = "custom_id",
        MODEL = "model",
        SPEC = "spec",
        PRICE = "price",
        STATUS = "status",
        PROGRESS = "progress",
        ATTEMPTS = "attempts",
        CREATED_AT = "created_at",
        UPDATED_AT = "updated_at",
        CLAIMED_AT = "claimed_at",
        TRACEPARENT = "traceparent",
        LEASE_UNTIL = "lease_until",
        LAST_ERROR = "last_error",
        RETRY_AT = "retry_at",
        REMOTE_ID = "remote_id",
        PROVIDER = "provider",
        SUBMITTED_AT = "submitted_at",
        POLLS = "polls",
        POLL_ERRORS = "poll_errors",
        OUTPUT_URL = "output_url",
        LAST_FRAME_URL = "last_frame_url",
        FAILURE_CODE = "failure_code",
        FAILURE_MESSAGE = "failure_message",
        FINISHED_AT = "finished_at",
        CHAIN_FIRST_FRAME = "chain_first_frame",
    }
}

hash_fields! {
    /// The fields of a tenant hash.
    tenant {
        ID = "id",
        NAME = "name",
        BALANCE = "balance",
        FROZEN = "frozen",
        CHARGED = "charged",
        GRANTED = "granted",
        CREATED_AT = "created_at",
    }
}

/// A hash whose fields the Lua scripts get as constants (`<name>_<CONSTANT>`).
pub(crate) struct LuaTable {
    /// The prefix of its constants in Lua.
    pub name: &'static str,
    pub fields: &'static [(&'static str, &'static str)],
}

/// The hashes of the generated prelude.
pub(crate) const LUA_TABLES: [LuaTable; 3] = [
    LuaTable {
        name: "BATCH",
        fields: batch::ALL,
    },
    LuaTable {
        name: "TASK",
        fields: task::ALL,
    },
    LuaTable {
        name: "TENANT",
        fields: tenant::ALL,
    },
];

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn no_hash_declares_a_field_or_a_constant_twice() {
        for table in LUA_TABLES {
            let constants: HashSet<_> = table.fields.iter().map(|(c, _)| c).collect();
            let fields: HashSet<_> = table.fields.iter().map(|(_, f)| f).collect();
            assert_eq!(constants.len(), table.fields.len(), "{}", table.name);
            assert_eq!(fields.len(), table.fields.len(), "{}", table.name);
        }
    }
}
