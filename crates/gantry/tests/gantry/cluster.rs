//! The stack on a Redis Cluster (`redis.mode = cluster`): three masters on loopback, every key routed by its hash
//! slot. The same end-to-end tests as on one server (batches to settlement with the ledger verified, the SSE hub,
//! one trace per task, the short chaos run with a cluster node killed), plus the store's reads that span
//! partitions (several slots), which must not hit a cross-slot error.
//!
//! Run just these: `cargo test -p gantry --test gantry cluster::`.

use std::time::{Duration, Instant};

use gantry_core::{
    config::RedisMode,
    consumer::{Consumer, ConsumerOptions},
    messages::Message,
    store::{Connection, ScheduleKind, StreamKind},
    Store,
};
use gantry_testkit::RedisCluster;
use redis::AsyncCommands;
use serde_json::json;

use crate::{
    api::read_events,
    batches, chaos,
    common::{veo, Backend, TestApp},
    observe::{self, Checks},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_batch_settles_on_a_cluster() {
    let app = batches::parallel_batch(Backend::Cluster).await;
    app.verify_ledger().await;
    assert!(gantry_core::store::round_trips() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_run_in_order_and_settle_on_a_cluster() {
    let app = batches::chain_batch(Backend::Cluster).await;
    app.verify_ledger().await;
    let app = batches::failing_chain(Backend::Cluster).await;
    app.verify_ledger().await;
}

/// Many batches (so several partitions, so several slots): listed, streamed over SSE at once, and read by every
/// store query that walks all partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_across_slots_work_on_a_cluster() {
    let app = TestApp::on(Backend::Cluster).await;
    let (tenant, key) = app.tenant(1_000).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let body = json!({"tasks": [veo(&format!("shot {i}")), veo(&format!("another {i}"))]});
        ids.push(app.submit(&key, &body).await);
    }
    let store = app.store().await;
    let keys = store.keys().clone();
    let partitions: std::collections::HashSet<u32> = ids.iter().map(|id| keys.partition_of(id)).collect();
    assert!(partitions.len() > 1, "the batches span partitions");

    // The hub watches every batch at once, whatever their slots; each stream ends with its final update.
    let streams = ids.iter().map(|id| read_events(&app, &key, id, None));
    for events in futures::future::join_all(streams).await {
        let last = events.last().unwrap();
        assert_eq!(
            (last.1.as_str(), &last.2["status"]),
            ("batch.updated", &json!("completed"))
        );
    }

    // The list reads batches of several partitions in one (split) pipeline.
    let (_, list) = app.get(&key, "/v1/batches?limit=100").await;
    assert_eq!(list["data"].as_array().unwrap().len(), ids.len(), "{list}");
    let page = store.list_batches(&tenant, 100, None).await.unwrap();
    assert_eq!(page.data.len(), ids.len());

    // The reads behind the gauges and the sweeper, over all partitions.
    let submit = store.stream_stats(StreamKind::Submit, "submitter").await.unwrap();
    assert_eq!((submit.lag, submit.pending), (0, 0));
    let (scheduled, _) = store.schedule_stats(ScheduleKind::Polls, u64::MAX).await.unwrap();
    assert_eq!(scheduled, 0);
    assert!(store.dead_letters().await.unwrap().is_empty());
    app.verify_ledger().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_per_task_on_a_cluster() {
    observe::observe(Backend::Cluster, Checks::Trace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_on_a_cluster_loses_nothing() {
    chaos::kill_anything_lose_nothing(Backend::Cluster).await;
}

/// A consumer over every partition's stream reads each with its own blocking reads (a cluster refuses one read
/// over several slots), and on a clean stop it finishes its reads and leaves the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_reads_every_partition_and_leaves_cleanly_on_a_cluster() {
    let cluster = RedisCluster::start().unwrap();
    let store = Store::connect_to(RedisMode::Cluster, &cluster.urls(), "c", 8)
        .await
        .unwrap();
    let streams: Vec<String> = (0..8).map(|p| store.keys().settle_stream(p)).collect();
    let options = ConsumerOptions {
        count: 16,
        block: Duration::from_millis(200),
        claim_idle: Duration::from_secs(60),
    };
    let mut consumer = Consumer::join(&store, "settlement", streams.clone(), options)
        .await
        .unwrap();
    let mut conn = Connection::open(RedisMode::Cluster, &cluster.urls())
        .await
        .unwrap();
    for (p, stream) in streams.iter().enumerate() {
        let message = Message::SettleBatch {
            batch_id: format!("bat_{p}"),
            traceparent: None,
        };
        let _: String = conn.xadd(stream, "*", &message.to_fields()).await.unwrap();
    }
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < streams.len() && Instant::now() < deadline {
        for delivery in consumer.next().await.unwrap() {
            store
                .ack(&delivery.stream, "settlement", &delivery.id)
                .await
                .unwrap();
            seen.push(delivery.stream);
        }
    }
    seen.sort();
    let mut expected = streams.clone();
    expected.sort();
    assert_eq!(seen, expected, "one message from every partition");

    consumer.leave().await;
    for stream in &streams {
        let info: redis::streams::StreamInfoConsumersReply =
            conn.xinfo_consumers(stream, "settlement").await.unwrap();
        assert!(info.consumers.is_empty(), "{stream}: the consumer left");
    }
}
