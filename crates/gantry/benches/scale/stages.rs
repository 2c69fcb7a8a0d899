//! Where a task's time goes, from the timestamps Gantry writes into the task and batch hashes (read right after
//! the measured interval; tasks whose hash retention already removed are left out, `tasks` says how many count).
//!
//! | stage | from → to |
//! |---|---|
//! | `accept_ms` | the harness's clock before `POST` → the batch's `created_at` (gateway: validate, reserve, write) |
//! | `queued_ms` | task `created_at` → `claimed_at` (waiting in the submit stream for a submitter) |
//! | `create_ms` | `claimed_at` → `submitted_at` (provider limiter, the create call, marking it running) |
//! | `run_ms` | `submitted_at` → `finished_at` (waiting for the first poll, the status call, finishing it) |
//! | `settle_ms` | the batch's last `finished_at` → its `completed_at` (settle stream, settlement) |

use anyhow::Context;
use gantry_core::{ids, keys::Keys};
use redis::aio::MultiplexedConnection;
use serde_json::{json, Value};

use crate::{outcome::percentile, workload::Accepted};

/// Field names as declared in crates/core/src/store/fields.rs.
const TASK: [&str; 4] = ["created_at", "claimed_at", "submitted_at", "finished_at"];
const BATCH: [&str; 2] = ["created_at", "completed_at"];

fn number(value: &Option<String>) -> Option<u64> {
    value.as_deref().and_then(|v| v.parse().ok())
}

/// The p50 and p99 of every stage, as `{"queued_ms": [p50, p99], ..., "tasks": n}`.
pub async fn read_stages(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    accepted: &[Accepted],
    k: usize,
) -> anyhow::Result<Value> {
    let mut stages: [Vec<u64>; 5] = Default::default();
    let mut counted = 0;
    for chunk in accepted.chunks((5000 / k.max(1)).max(1)) {
        let mut pipe = redis::pipe();
        for batch in chunk {
            pipe.hmget(keys.batch(&batch.id), &BATCH);
            for i in 0..k {
                pipe.hmget(keys.task(&batch.id, &ids::task_id(&batch.id, i)), &TASK);
            }
        }
        let rows: Vec<Vec<Option<String>>> = pipe.query_async(conn).await.context("reading task times")?;
        for (batch, rows) in chunk.iter().zip(rows.chunks(k + 1)) {
            let (Some(created), Some(completed)) = (number(&rows[0][0]), number(&rows[0][1])) else {
                continue;
            };
            stages[0].push(created.saturating_sub(batch.t0_ms));
            let mut last_finished = None;
            for task in &rows[1..] {
                let times: Vec<Option<u64>> = task.iter().map(number).collect();
                let [Some(c), Some(cl), Some(s), Some(f)] = times[..] else {
                    continue;
                };
                counted += 1;
                stages[1].push(cl.saturating_sub(c));
                stages[2].push(s.saturating_sub(cl));
                stages[3].push(f.saturating_sub(s));
                last_finished = last_finished.max(Some(f));
            }
            if let Some(f) = last_finished {
                stages[4].push(completed.saturating_sub(f));
            }
        }
    }
    let mut out = serde_json::Map::new();
    for (name, mut values) in ["accept_ms", "queued_ms", "create_ms", "run_ms", "settle_ms"]
        .into_iter()
        .zip(stages)
    {
        values.sort_unstable();
        out.insert(
            name.into(),
            json!([percentile(&values, 50.0), percentile(&values, 99.0)]),
        );
    }
    out.insert("tasks".into(), json!(counted));
    Ok(Value::Object(out))
}
