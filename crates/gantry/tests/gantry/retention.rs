//! Bounded memory: settled batches expire after their retention (the API answers 404 and stops listing them, the
//! ledger stays and verifies), consumed stream entries are trimmed without ever losing a pending or undelivered
//! one, and the recovery sweep reads only the open batches that are due for a check.

use std::time::Duration;

use gantry_core::{
    ids,
    recovery::{self, SweepOptions},
    retention,
    store::{Outcome, StreamKind},
    validate::{validate_batch, Limits},
    Store,
};
use gantry_testkit::{wait_for, RedisServer};
use redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::json;

use crate::common::{veo, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settled_batch_expires_after_its_retention_and_the_ledger_still_verifies() {
    let app = TestApp::start_with(|c| {
        c.retention.completed_secs = 1;
        c.gateway.idempotency_ttl_secs = 1;
        c.sweeper.interval_ms = 100;
    })
    .await;
    let (tenant, key) = app.tenant(100).await;
    let gone = app
        .submit(&key, &json!({"tasks": [veo("a"), veo("b [sim:fail]")]}))
        .await;
    app.wait_final(&key, &gone).await;
    let ledger_before = app.get(&key, "/v1/credits/ledger?limit=100").await.1;
    let credits = app.credits(&key).await;

    let status = wait_for("the batch to expire", Duration::from_secs(20), || async {
        let (status, body) = app.get(&key, &format!("/v1/batches/{gone}")).await;
        Ok((status == StatusCode::NOT_FOUND).then_some(body))
    })
    .await
    .unwrap();
    assert_eq!(
        status["code"], "not_found",
        "the documented problem format: {status}"
    );
    for path in [
        format!("/v1/batches/{gone}/tasks"),
        format!("/v1/tasks/{}", ids::task_id(&gone, 0)),
        format!("/v1/batches/{gone}/events"),
    ] {
        let (status, body) = app.get(&key, &path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(body["code"], "not_found", "{path}: {body}");
    }
    let (status, list) = app.get(&key, "/v1/batches").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["data"], json!([]), "an expired batch is not listed: {list}");

    // Nothing of the batch is left in Redis but its ledger entries.
    let store = app.store().await;
    let keys = store.keys().clone();
    let p = keys.partition_of(&gone);
    let mut conn = app.connection().await;
    let left: usize = conn
        .exists(&[
            keys.batch(&gone),
            keys.batch_events(&gone),
            keys.task(&gone, &ids::task_id(&gone, 0)),
            keys.task(&gone, &ids::task_id(&gone, 1)),
        ])
        .await
        .unwrap();
    assert_eq!(left, 0);
    let indexed: Option<f64> = conn.zscore(keys.expiring_batches(p), &gone).await.unwrap();
    assert_eq!(indexed, None);
    for hash in [keys.settlements(&tenant), keys.ledger_by_batch(&tenant)] {
        let kept: bool = conn.hexists(&hash, &gone).await.unwrap();
        assert!(!kept, "{hash}");
    }

    // The money's history stays, and still adds up.
    assert_eq!(
        app.get(&key, "/v1/credits/ledger?limit=100").await.1,
        ledger_before
    );
    assert_eq!(app.credits(&key).await, credits);
    let audit = store.audit_tenant(&tenant).await.unwrap();
    assert_eq!(audit.violations, Vec::<String>::new());
    assert_eq!(audit.ledger_entries, 4, "grant, freeze, charge, refund");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_settled_batches_expire_and_only_once_their_retention_is_over() {
    // The default week: the service's own retention step removes nothing here.
    let app = TestApp::start_with(|c| c.sweeper.interval_ms = 100).await;
    let (tenant, key) = app.tenant(100).await;
    let done = app.submit(&key, &json!({"tasks": [veo("a")]})).await;
    app.wait_final(&key, &done).await;
    let running = app
        .submit(&key, &json!({"tasks": [veo("slow [sim:never]")]}))
        .await;
    let store = app.store().await;
    let week = 604_800_000;
    let now = gantry_core::model::now_ms();
    assert_eq!(
        retention::run(&store, now, week).await.unwrap().batches_expired,
        0
    );
    for id in [&done, &running] {
        let (status, _) = app.get(&key, &format!("/v1/batches/{id}")).await;
        assert_eq!(status, StatusCode::OK);
    }
    // A week on, the settled batch goes; the open one stays whatever its age.
    let report = retention::run(&store, now + week + 1, week).await.unwrap();
    assert_eq!(report.batches_expired, 1);
    assert_eq!(
        app.get(&key, &format!("/v1/batches/{done}")).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, open) = app.get(&key, &format!("/v1/batches/{running}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.tasks(&key, &running).await.len(), 1);
    let (_, list) = app.get(&key, "/v1/batches").await;
    assert_eq!(list["data"], json!([open]));
    assert_eq!(
        store.audit_tenant(&tenant).await.unwrap().violations,
        Vec::<String>::new()
    );
}

/// Writes a settled batch of `n` tasks straight into Redis, settled at `settled_at` (ms).
async fn settled_batch(store: &Store, tenant: &str, n: usize, settled_at: u64) -> String {
    let batch_id = written_batch(store, tenant, n, 1).await;
    for i in 0..n {
        let outcome = Outcome::Succeeded {
            video_url: format!("https://v/{i}.mp4"),
            last_frame_url: None,
        };
        assert!(store
            .finish_task(&ids::task_id(&batch_id, i), None, &outcome, 2)
            .await
            .unwrap());
    }
    let input = store.settlement_input(&batch_id).await.unwrap().unwrap();
    store
        .settle(tenant, &batch_id, input.cost_succeeded)
        .await
        .unwrap();
    assert!(store
        .settle_finalize(&batch_id, input.cost_succeeded, 0, settled_at)
        .await
        .unwrap());
    batch_id
}

/// Writes a batch of `n` tasks straight into Redis, as the gateway would, accepted at `now` (ms).
async fn written_batch(store: &Store, tenant: &str, n: usize, now: u64) -> String {
    let prices = gantry_core::Config::load_from(None, Vec::new()).unwrap().prices;
    let tasks: Vec<_> = (0..n).map(|i| veo(&format!("p{i}"))).collect();
    let batch = validate_batch(&json!({"tasks": tasks}), &Limits { max_tasks: n.max(1) }, &prices).unwrap();
    let batch_id = ids::new_batch_id();
    store.reserve(tenant, &batch_id, batch.cost(), now).await.unwrap();
    assert!(store
        .create_batch(tenant, &batch_id, &batch, now, None)
        .await
        .unwrap());
    batch_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_interrupted_between_its_two_steps_is_finished_by_the_next_run() {
    let redis = RedisServer::start().unwrap();
    let store = Store::connect(&redis.url(), "gantry", 4).await.unwrap();
    let (tenant, _) = store.create_tenant("t", 1000).await.unwrap();
    let old = settled_batch(&store, &tenant, 3, 1_000).await;
    let recent = settled_batch(&store, &tenant, 2, 50_000).await;
    let keys = store.keys().clone();
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // The process died after the tenant's step (entries gone) and before the batch's own removal.
    let _: () = conn.zrem(keys.tenant_batches(&tenant), &old).await.unwrap();
    let _: () = conn.hdel(keys.settlements(&tenant), &old).await.unwrap();
    let _: () = conn.hdel(keys.ledger_by_batch(&tenant), &old).await.unwrap();
    assert_eq!(
        store.audit_tenant(&tenant).await.unwrap().violations,
        Vec::<String>::new()
    );

    // Retention of 10 s at t = 40 s: the batch settled at 1 s goes, the one settled at 50 s stays.
    let report = retention::run(&store, 40_000, 10_000).await.unwrap();
    assert_eq!(report.batches_expired, 1);
    assert!(store.batch(&old).await.unwrap().is_none());
    let left: usize = conn
        .exists(&[
            keys.batch(&old),
            keys.batch_events(&old),
            keys.task(&old, &ids::task_id(&old, 0)),
            keys.task(&old, &ids::task_id(&old, 2)),
        ])
        .await
        .unwrap();
    assert_eq!(left, 0);
    assert!(store.batch(&recent).await.unwrap().is_some());
    assert_eq!(store.list_batches(&tenant, 10, None).await.unwrap().data.len(), 1);
    // Running again changes nothing; later the recent one goes too.
    assert_eq!(
        retention::run(&store, 40_000, 10_000)
            .await
            .unwrap()
            .batches_expired,
        0
    );
    assert_eq!(
        retention::run(&store, 60_000, 10_000)
            .await
            .unwrap()
            .batches_expired,
        1
    );
    assert!(store
        .list_batches(&tenant, 10, None)
        .await
        .unwrap()
        .data
        .is_empty());
    let audit = store.audit_tenant(&tenant).await.unwrap();
    assert_eq!(audit.violations, Vec::<String>::new());
    assert_eq!(
        audit.ledger_entries,
        1 + 2 * 3,
        "a grant, then a freeze, charge and refund per batch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_many_tasks_expires_in_one_run() {
    let redis = RedisServer::start().unwrap();
    let store = Store::connect(&redis.url(), "gantry", 2).await.unwrap();
    let (tenant, _) = store.create_tenant("t", 100_000).await.unwrap();
    let big = settled_batch(&store, &tenant, 2_500, 1_000).await;
    let report = retention::run(&store, 100_000, 10_000).await.unwrap();
    assert_eq!(report.batches_expired, 1);
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = conn.keys("gantry:{p*}:*").await.unwrap();
    let left: Vec<&String> = keys
        .iter()
        .filter(|k| !k.ends_with(":settle") && !k.ends_with(":submit"))
        .collect();
    assert!(
        left.is_empty(),
        "{} keys left, e.g. {:?}",
        left.len(),
        left.first()
    );
    assert!(store.batch(&big).await.unwrap().is_none());
    assert_eq!(
        store.audit_tenant(&tenant).await.unwrap().violations,
        Vec::<String>::new()
    );
}

/// How many HMGET and HGETALL calls Redis has served so far (batch and task reads).
async fn hash_reads(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let calls = crate::common::command_calls(conn).await;
    ["hmget", "hgetall"].iter().filter_map(|c| calls.get(*c)).sum()
}

/// Entry ids of a stream, oldest first.
async fn entry_ids(conn: &mut redis::aio::MultiplexedConnection, stream: &str) -> Vec<String> {
    let reply: redis::streams::StreamRangeReply = conn.xrange_all(stream).await.unwrap();
    reply.ids.into_iter().map(|e| e.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimming_never_drops_a_pending_or_undelivered_entry() {
    let redis = RedisServer::start().unwrap();
    let store = Store::connect(&redis.url(), "gantry", 1).await.unwrap();
    let keys = store.keys().clone();
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let stream = keys.submit_stream(0);
    let mut added = Vec::new();
    for i in 0..6 {
        let id: String = conn.xadd(&stream, "*", &[("n", i)]).await.unwrap();
        added.push(id);
    }
    // Nobody has read the stream yet: nothing goes.
    assert_eq!(store.trim_stream(StreamKind::Submit, 0).await.unwrap(), 0);

    // Two groups: one read four entries and acknowledged all but the second; the other read two and acked both.
    let reader = conn.clone();
    let read = |group: &'static str, count: usize| {
        let (mut conn, stream) = (reader.clone(), stream.clone());
        async move {
            let options = redis::streams::StreamReadOptions::default()
                .group(group, "c1")
                .count(count);
            let reply: redis::streams::StreamReadReply =
                conn.xread_options(&[&stream], &[">"], &options).await.unwrap();
            reply.keys[0].ids.iter().map(|e| e.id.clone()).collect::<Vec<_>>()
        }
    };
    for group in ["submitter", "audit"] {
        let _: () = conn.xgroup_create(&stream, group, "0").await.unwrap();
    }
    let first = read("submitter", 4).await;
    let _: i64 = conn
        .xack(&stream, "submitter", &[&first[0], &first[2], &first[3]])
        .await
        .unwrap();
    let other = read("audit", 2).await;
    let _: i64 = conn.xack(&stream, "audit", &other).await.unwrap();

    // The oldest entry a group needs is the pending second one: only the first goes.
    assert_eq!(store.trim_stream(StreamKind::Submit, 0).await.unwrap(), 1);
    assert_eq!(entry_ids(&mut conn, &stream).await, added[1..]);

    // Once acknowledged, the lagging group holds the line just after its last delivered (and acknowledged) entry.
    let _: i64 = conn.xack(&stream, "submitter", &[&first[1]]).await.unwrap();
    assert_eq!(store.trim_stream(StreamKind::Submit, 0).await.unwrap(), 1);
    assert_eq!(entry_ids(&mut conn, &stream).await, added[2..]);
    let _: () = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(&stream)
        .arg("audit")
        .query_async(&mut conn)
        .await
        .unwrap();
    // Alone, the submitter group has everything up to its last delivered entry acknowledged, that one included;
    // the two it was never delivered stay.
    assert_eq!(store.trim_stream(StreamKind::Submit, 0).await.unwrap(), 2);
    assert_eq!(entry_ids(&mut conn, &stream).await, added[4..]);
    assert_eq!(read("submitter", 10).await, added[4..]);

    // The group still sees the undelivered entries' count right (trimming only cut behind it).
    let groups: redis::streams::StreamInfoGroupsReply = conn.xinfo_groups(&stream).await.unwrap();
    assert_eq!(groups.groups[0].pending, 2);
    assert_eq!(groups.groups[0].lag, Some(0));
    // Read to its end and acknowledged, the stream is emptied (Redis frees its last node) and still works.
    let _: i64 = conn.xack(&stream, "submitter", &added[4..]).await.unwrap();
    assert_eq!(store.trim_stream(StreamKind::Submit, 0).await.unwrap(), 2);
    assert!(entry_ids(&mut conn, &stream).await.is_empty());
    let next: String = conn.xadd(&stream, "*", &[("n", 6)]).await.unwrap();
    assert_eq!(read("submitter", 10).await, [next]);
    // A stream that does not exist is no error.
    assert_eq!(store.trim_stream(StreamKind::Settle, 0).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_reads_only_the_batches_due_for_a_check() {
    let redis = RedisServer::start().unwrap();
    let store = Store::connect(&redis.url(), "gantry", 1).await.unwrap();
    let (tenant, _) = store.create_tenant("t", 1000).await.unwrap();
    let keys = store.keys().clone();
    let now = 1_000_000;
    let batches = [
        written_batch(&store, &tenant, 2, now).await,
        written_batch(&store, &tenant, 2, now).await,
        written_batch(&store, &tenant, 2, now).await,
    ];
    let options = SweepOptions {
        reservation_grace_ms: 300_000,
        recheck_ms: 60_000,
        batches_per_partition: 2,
    };
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let scores = |conn: &redis::aio::MultiplexedConnection| {
        let (mut conn, index) = (conn.clone(), keys.open_batches(0));
        async move {
            let scored: Vec<(String, u64)> = conn.zrange_withscores(&index, 0, -1).await.unwrap();
            scored.into_iter().map(|(_, score)| score).collect::<Vec<_>>()
        }
    };
    // New batches are due at once, at most two a sweep; none is older than a lease, so each is only rescored to
    // when its first lease could end.
    let first = recovery::sweep(&store, now + 10, &options).await.unwrap();
    assert_eq!((first.batches_checked, first.open_batches), (2, 3));
    let second = recovery::sweep(&store, now + 20, &options).await.unwrap();
    assert_eq!(second.batches_checked, 1);
    assert_eq!(scores(&conn).await, vec![now + 60_000; 3]);
    // Until then, a sweep reads no batch and no task at all.
    let reads_before = hash_reads(&mut conn).await;
    let idle = recovery::sweep(&store, now + 30_000, &options).await.unwrap();
    assert_eq!((idle.batches_checked, idle.open_batches), (0, 3));
    assert_eq!(
        hash_reads(&mut conn).await,
        reads_before + 1,
        "one read: the tenant's frozen credits"
    );

    // A task claimed and abandoned by a dead submitter: found when its batch is next due, and resent.
    let stuck = ids::task_id(&batches[0], 1);
    assert!(matches!(
        store.claim_submit(&stuck, now + 1_000, 60_000).await.unwrap(),
        gantry_core::store::Claim::Claimed { .. }
    ));
    let _: () = redis::cmd("DEL")
        .arg(keys.submit_stream(0))
        .query_async(&mut conn)
        .await
        .unwrap();
    let due = recovery::sweep(&store, now + 60_000, &options).await.unwrap();
    assert_eq!(due.batches_checked, 2);
    let rest = recovery::sweep(&store, now + 60_000, &options).await.unwrap();
    assert_eq!(rest.batches_checked, 1);
    // The stuck task's lease ends at 61 s: its batch is looked at again just after, the others a recheck later.
    let mut expected = vec![now + 61_001, now + 120_000, now + 120_000];
    expected.sort_unstable();
    assert_eq!(scores(&conn).await, expected);
    assert_eq!(due.submits_resent + rest.submits_resent, 0);
    let late = recovery::sweep(&store, now + 61_001, &options).await.unwrap();
    assert_eq!((late.batches_checked, late.submits_resent), (1, 1));
    let resent: u64 = conn.xlen(keys.submit_stream(0)).await.unwrap();
    assert_eq!(resent, 1);

    // Reservations are looked at once, when they pass the grace period: an orphan (its batch never written) is
    // released, and the sweep remembers how far it looked.
    let orphan = format!("bat_{:012x}{}", now + 1, "0".repeat(20));
    store.reserve(&tenant, &orphan, 8, now + 1).await.unwrap();
    let before = recovery::sweep(&store, now + 300_000, &options).await.unwrap();
    assert_eq!(before.reservations_released, 0, "not yet past the grace period");
    let after = recovery::sweep(&store, now + 300_002, &options).await.unwrap();
    assert_eq!(after.reservations_released, 1);
    let checked: u64 = conn.get(keys.reservations_checked(&tenant)).await.unwrap();
    assert_eq!(checked, now + 2);
    assert_eq!(after.credits_reserved, 3 * 16, "the three open batches");

    // A settled batch leaves the open index for the expiry index.
    let settled = settled_batch(&store, &tenant, 1, now + 70_000).await;
    let report = recovery::sweep(&store, now + 70_001, &options).await.unwrap();
    assert_eq!(report.open_batches, 3);
    let expiring: Option<u64> = conn.zscore(keys.expiring_batches(0), &settled).await.unwrap();
    assert_eq!(expiring, Some(now + 70_000));
}
