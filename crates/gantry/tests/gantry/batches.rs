//! End-to-end: batches travel gateway → submitter → poller → settlement over a real Redis and the simulator.

use gantry_core::store::Connection;
use redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{sora, veo, Backend, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_batch_with_two_failures_settles_to_the_credit() {
    parallel_batch(Backend::Standalone).await;
}

/// A parallel batch with two failures, on a Redis of `backend`; the stack it ran on.
pub(crate) async fn parallel_batch(backend: Backend) -> TestApp {
    let app = TestApp::on(backend).await;
    let (_, key) = app.tenant(500).await;
    let tasks = vec![
        sora("a harbour at dawn", 10),
        sora("a beach party", 15),
        veo("a bottle on a pedestal"),
        json!({"model": "veo3.1-pro", "prompt": "a logo", "aspect_ratio": "16:9"}),
        veo("this one breaks [sim:fail]"),
        json!({"model": "veo-pro", "prompt": "this one is refused [sim:moderation]", "aspect_ratio": "9:16"}),
    ];
    let batch_id = app
        .submit(&key, &json!({"tasks": tasks, "metadata": {"campaign": "spring"}}))
        .await;
    assert_eq!(app.credits(&key).await["frozen"], 10 + 15 + 8 + 20 + 8 + 20);

    let batch = app.wait_final(&key, &batch_id).await;
    assert_eq!(batch["status"], "completed");
    assert_eq!(batch["request_counts"]["total"], 6);
    assert_eq!(batch["request_counts"]["succeeded"], 4);
    assert_eq!(batch["request_counts"]["failed"], 2);
    assert_eq!(batch["credits"]["charged"], 10 + 15 + 8 + 20);
    assert_eq!(batch["credits"]["refunded"], 8 + 20);
    assert_eq!(batch["metadata"]["campaign"], "spring");
    assert!(batch["completed_at"].is_string());

    let credits = app.credits(&key).await;
    assert_eq!(credits["balance"], 500 - (10 + 15 + 8 + 20));
    assert_eq!(credits["frozen"], 0);
    assert_eq!(credits["charged"], 53);

    let tasks = app.tasks(&key, &batch_id).await;
    let failures: Vec<_> = tasks
        .iter()
        .filter_map(|t| t["failure"]["code"].as_str())
        .collect();
    assert_eq!(failures, ["provider_error", "input_moderation"]);
    for task in &tasks {
        match task["status"].as_str().unwrap() {
            "succeeded" => {
                assert!(task["output"]["video_url"].as_str().unwrap().ends_with(".mp4"));
                assert_eq!(task["credits"]["refunded"], 0);
                assert_eq!(task["progress"], 100);
            }
            "failed" => assert_eq!(task["credits"]["charged"], 0),
            other => panic!("unexpected status {other}"),
        }
        assert_eq!(task["attempts"], 1);
    }
    // Every remote task was created exactly once.
    assert_eq!(app.stack.sim.stats().creates, 6);
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_runs_in_order_and_hands_on_each_last_frame() {
    chain_batch(Backend::Standalone).await;
}

/// A chain of three shots, on a Redis of `backend`; the stack it ran on.
pub(crate) async fn chain_batch(backend: Backend) -> TestApp {
    let app = TestApp::on(backend).await;
    let (_, key) = app.tenant(100).await;
    let batch_id = app
        .submit(
            &key,
            &json!({"mode": "chain", "tasks": [veo("shot one"), veo("shot two"), veo("shot three")]}),
        )
        .await;
    let batch = app.wait_final(&key, &batch_id).await;
    assert_eq!(batch["request_counts"]["succeeded"], 3);

    let stats = app.stack.sim.stats();
    assert_eq!(stats.tasks.len(), 3);
    let tasks = app.tasks(&key, &batch_id).await;
    for i in 1..3 {
        let (before, after) = (&stats.tasks[i - 1], &stats.tasks[i]);
        assert!(
            after.prompt.contains(["one", "two", "three"][i]),
            "created out of order: {stats:?}"
        );
        assert!(
            after.created_at_ms >= before.finishes_at_ms,
            "shot {i} started before shot {} finished",
            i - 1
        );
        let last_frame = tasks[i - 1]["output"]["last_frame_url"].as_str().unwrap();
        assert_eq!(after.first_frame_url.as_deref(), Some(last_frame));
    }
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_in_a_chain_cancels_and_refunds_the_rest() {
    failing_chain(Backend::Standalone).await;
}

/// A chain whose second shot fails, on a Redis of `backend`; the stack it ran on.
pub(crate) async fn failing_chain(backend: Backend) -> TestApp {
    let app = TestApp::on(backend).await;
    let (_, key) = app.tenant(100).await;
    let body = json!({"mode": "chain", "tasks": [veo("one"), veo("two [sim:fail]"), veo("three"), sora("four", 10)]});
    let batch_id = app.submit(&key, &body).await;
    let batch = app.wait_final(&key, &batch_id).await;
    let counts = &batch["request_counts"];
    assert_eq!(
        (
            counts["succeeded"].as_u64(),
            counts["failed"].as_u64(),
            counts["cancelled"].as_u64()
        ),
        (Some(1), Some(1), Some(2))
    );
    assert_eq!(batch["credits"]["charged"], 8);
    assert_eq!(batch["credits"]["refunded"], 8 + 8 + 10);
    let statuses: Vec<_> = app
        .tasks(&key, &batch_id)
        .await
        .iter()
        .map(|t| t["status"].clone())
        .collect();
    assert_eq!(statuses, ["succeeded", "failed", "cancelled", "cancelled"]);
    // The cancelled shots never reached the provider.
    assert_eq!(app.stack.sim.stats().creates, 2);
    assert_eq!(app.credits(&key).await["balance"], 100 - 8);
    app
}

/// Every key with its type and size, to compare Redis before and after a rejected request. The tenant's
/// rate-limit counter and its keys' last use are left out: they account for every request, rejected ones too, by
/// design.
async fn snapshot(conn: &mut Connection) -> Vec<(String, String, i64)> {
    let mut keys: Vec<String> = conn.keys("*").await.unwrap();
    keys.retain(|k| !k.ends_with(":rate") && !k.ends_with(":keys_used"));
    keys.sort();
    let mut out = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query_async(conn).await.unwrap();
        let size: i64 = match kind.as_str() {
            "stream" => conn.xlen(&key).await.unwrap(),
            "hash" => conn.hlen(&key).await.unwrap(),
            "zset" => conn.zcard(&key).await.unwrap(),
            "set" => conn.scard(&key).await.unwrap(),
            _ => 0,
        };
        out.push((key, kind, size));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_the_balance_is_402_and_changes_nothing() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant(30).await;
    let mut conn = app.connection().await;
    let before = snapshot(&mut conn).await;
    let (status, problem) = app
        .post_batch(&key, &json!({"tasks": [veo("a"), veo("b"), veo("c"), veo("d")]}))
        .await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(problem["code"], "insufficient_credits");
    assert_eq!(problem["status"], 402);
    assert_eq!(snapshot(&mut conn).await, before);
    let credits = app.credits(&key).await;
    assert_eq!(
        (credits["balance"].as_i64(), credits["frozen"].as_i64()),
        (Some(30), Some(0))
    );
    let (_, list) = app.get(&key, "/v1/batches").await;
    assert_eq!(list["data"], json!([]), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settle_message_delivered_twice_settles_once() {
    let app = TestApp::start().await;
    let (tenant, key) = app.tenant(100).await;
    let batch_id = app
        .submit(&key, &json!({"tasks": [veo("ok"), veo("no [sim:fail]")]}))
        .await;
    app.wait_final(&key, &batch_id).await;

    let keys = gantry_core::keys::Keys::new("gantry", app.stack.config.redis.partitions);
    let stream = keys.settle_stream(keys.partition_of(&batch_id));
    let mut conn = app.connection().await;
    let fields = gantry_core::messages::Message::SettleBatch {
        batch_id: batch_id.clone(),
        traceparent: None,
    }
    .to_fields();
    // Deliver the settle message again (twice more), as a crashed-and-retried producer or a redelivery would.
    for _ in 0..2 {
        let _: String = conn.xadd(&stream, "*", &fields).await.unwrap();
    }
    let total: usize = conn.xlen(&stream).await.unwrap();
    assert_eq!(total, 3);
    gantry_testkit::wait_for(
        "the duplicates to be consumed",
        std::time::Duration::from_secs(20),
        || {
            let mut conn = conn.clone();
            let stream = stream.clone();
            async move {
                let pending: redis::streams::StreamPendingReply =
                    conn.xpending(&stream, "settlement").await?;
                let info: redis::streams::StreamInfoGroupsReply = conn.xinfo_groups(&stream).await?;
                let read = info.groups.first().and_then(|g| g.entries_read).unwrap_or(0);
                Ok((pending.count() == 0 && read >= 3).then_some(()))
            }
        },
    )
    .await
    .unwrap();

    let ledger: Vec<Value> = app
        .store()
        .await
        .ledger(&tenant)
        .await
        .unwrap()
        .into_iter()
        .map(|e| json!([e.kind, e.amount]))
        .collect();
    assert_eq!(
        ledger,
        [
            json!(["grant", 100]),
            json!(["freeze", 16]),
            json!(["charge", 8]),
            json!(["refund", 8])
        ]
    );
    let credits = app.credits(&key).await;
    assert_eq!(
        (credits["balance"].as_i64(), credits["charged"].as_i64()),
        (Some(92), Some(8))
    );
}
