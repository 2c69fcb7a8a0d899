//! Recovery from what goes wrong in the middle: poison and malformed messages end in the dead letters (their
//! tasks failed and refunded), messages of a consumer that died are taken over, and duplicates change nothing.

use std::time::Duration;

use gantry_core::{
    config::Secret,
    keys::Keys,
    messages::Message,
    validate::{validate_batch, Limits},
    Store,
};
use gantry_testkit::{wait_for, RedisServer};
use redis::AsyncCommands;
use serde_json::json;

use crate::common::{veo, TestApp};

/// Writes a batch straight into Redis, as the gateway would (reservation, then batch), with no service running.
async fn write_batch(store: &Store, tenant: &str, body: serde_json::Value) -> String {
    let prices = gantry_core::Config::load_from(None, Vec::new()).unwrap().prices;
    let batch = validate_batch(&body, &Limits { max_tasks: 10 }, &prices).unwrap();
    let batch_id = gantry_core::ids::new_batch_id();
    store.reserve(tenant, &batch_id, batch.cost(), 1).await.unwrap();
    store
        .create_batch(tenant, &batch_id, &batch, 1, None)
        .await
        .unwrap();
    batch_id
}

/// Short leases so that redelivery happens within a test.
fn quick_redelivery(config: &mut gantry_core::Config) {
    config.submitter.lease_ms = 300;
    config.streams.claim_idle_ms = 500;
    config.streams.max_deliveries = 2;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_task_fails_is_refunded_and_lands_in_the_dead_letters() {
    // Write a batch whose task cannot be read before any service runs.
    let redis = RedisServer::start().unwrap();
    let store = Store::connect(&redis.url(), "gantry", 8).await.unwrap();
    let (tenant, key) = store.create_tenant("t", 100).await.unwrap();
    let batch_id = write_batch(&store, &tenant, json!({"tasks": [veo("broken")]})).await;
    let task_id = gantry_core::ids::task_id(&batch_id, 0);
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = conn
        .hset(store.keys().task(&batch_id, &task_id), "spec", "{not json")
        .await
        .unwrap();
    // A malformed message too.
    let keys = Keys::new("gantry", 8);
    let _: String = conn
        .xadd(keys.submit_stream(0), "*", &[("v", "1"), ("type", "submit_task")])
        .await
        .unwrap();

    let url = redis.url();
    let app = TestApp::start_with(move |c| {
        c.redis.url = Some(Secret::new(url));
        quick_redelivery(c);
    })
    .await;
    let batch = app.wait_final(&key, &batch_id).await;
    assert_eq!(batch["request_counts"]["failed"], 1);
    assert_eq!(batch["credits"]["refunded"], 8);
    let task = app.get(&key, &format!("/v1/tasks/{task_id}")).await.1;
    assert!(
        task["failure"]["message"].as_str().unwrap().contains("gave up"),
        "{task}"
    );
    assert_eq!(app.credits(&key).await["balance"], 100);

    let letters = store.dead_letters().await.unwrap();
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert!(
        letters.iter().any(|l| l.error.starts_with("malformed message")),
        "{letters:?}"
    );
    assert!(
        letters.iter().any(|l| l.error.contains("delivered 3 times")),
        "{letters:?}"
    );
    // Ops can drop one and replay the other (the replayed poison task is terminal: nothing happens again).
    let malformed = letters.iter().find(|l| l.error.starts_with("malformed")).unwrap();
    assert!(store.drop_dead_letter(&malformed.handle).await.unwrap());
    let poison = letters.iter().find(|l| l.error.contains("delivered")).unwrap();
    assert!(store.replay_dead_letter(&poison.handle).await.unwrap());
    assert!(store.dead_letters().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_of_a_dead_consumer_are_taken_over() {
    let redis = RedisServer::start().unwrap();
    let store = Store::connect(&redis.url(), "gantry", 8).await.unwrap();
    let (tenant, key) = store.create_tenant("t", 100).await.unwrap();
    let batch_id = write_batch(&store, &tenant, json!({"tasks": [veo("a"), veo("b")]})).await;
    // A submitter that read both messages and died before doing anything.
    let keys = Keys::new("gantry", 8);
    let stream = keys.submit_stream(keys.partition_of(&batch_id));
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = conn
        .xgroup_create_mkstream(&stream, "submitter", "0")
        .await
        .unwrap();
    let read: redis::streams::StreamReadReply = conn
        .xread_options(
            &[&stream],
            &[">"],
            &redis::streams::StreamReadOptions::default().group("submitter", "dead-one"),
        )
        .await
        .unwrap();
    assert_eq!(read.keys[0].ids.len(), 2);
    // A claimed task whose submitter died mid-create, too.
    let first = gantry_core::ids::task_id(&batch_id, 0);
    assert!(matches!(
        store
            .claim_submit(&first, gantry_core::model::now_ms(), 300)
            .await
            .unwrap(),
        gantry_core::store::Claim::Claimed { .. }
    ));

    let url = redis.url();
    let app = TestApp::start_with(move |c| {
        c.redis.url = Some(Secret::new(url));
        quick_redelivery(c);
        c.streams.max_deliveries = 5;
    })
    .await;
    let batch = app.wait_final(&key, &batch_id).await;
    assert_eq!(batch["request_counts"]["succeeded"], 2);
    let task = app.get(&key, &format!("/v1/tasks/{first}")).await.1;
    assert_eq!(
        task["attempts"], 2,
        "the expired lease was taken over with a new attempt"
    );
    assert_eq!(app.stack.sim.stats().creates, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_type_delivered_twice_changes_nothing() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant(100).await;
    let batch_id = app
        .submit(&key, &json!({"tasks": [veo("a"), veo("b [sim:fail]")]}))
        .await;
    let batch = app.wait_final(&key, &batch_id).await;
    let credits = app.credits(&key).await;

    let keys = Keys::new("gantry", 8);
    let p = keys.partition_of(&batch_id);
    let mut conn = app.connection().await;
    for index in 0..2 {
        let message = Message::SubmitTask {
            task_id: gantry_core::ids::task_id(&batch_id, index),
            batch_id: batch_id.clone(),
            traceparent: None,
        };
        let _: String = conn
            .xadd(keys.submit_stream(p), "*", &message.to_fields())
            .await
            .unwrap();
    }
    let settle = Message::SettleBatch {
        batch_id: batch_id.clone(),
        traceparent: None,
    };
    let _: String = conn
        .xadd(keys.settle_stream(p), "*", &settle.to_fields())
        .await
        .unwrap();
    // Wait until both groups have read and acknowledged everything.
    for (stream, group) in [
        (keys.submit_stream(p), "submitter"),
        (keys.settle_stream(p), "settlement"),
    ] {
        wait_for("the duplicates to be consumed", Duration::from_secs(20), || {
            let (mut conn, stream) = (conn.clone(), stream.clone());
            async move {
                let info: redis::streams::StreamInfoGroupsReply = conn.xinfo_groups(&stream).await?;
                let group = info.groups.iter().find(|g| g.name == group).unwrap();
                Ok((group.pending == 0 && group.lag == Some(0)).then_some(()))
            }
        })
        .await
        .unwrap();
    }
    assert_eq!(app.get(&key, &format!("/v1/batches/{batch_id}")).await.1, batch);
    assert_eq!(app.credits(&key).await, credits);
    assert_eq!(app.stack.sim.stats().creates, 2, "no task was created twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_settles_a_batch_whose_settle_message_was_lost_and_releases_orphan_reservations() {
    let redis = RedisServer::start().unwrap();
    let store = Store::connect(&redis.url(), "gantry", 8).await.unwrap();
    let (tenant, key) = store.create_tenant("t", 100).await.unwrap();
    // A batch that finished while settlement was down, and whose settle message was then lost.
    let batch_id = write_batch(&store, &tenant, json!({"tasks": [veo("a"), veo("b")]})).await;
    for (i, outcome) in [
        gantry_core::store::Outcome::Succeeded {
            video_url: "https://v/a.mp4".into(),
            last_frame_url: None,
        },
        gantry_core::store::Outcome::Failed {
            code: gantry_core::domain::FailureCode::ProviderError,
            message: "x".into(),
        },
    ]
    .iter()
    .enumerate()
    {
        store
            .finish_task(&gantry_core::ids::task_id(&batch_id, i), None, outcome, 2)
            .await
            .unwrap();
    }
    let keys = Keys::new("gantry", 8);
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let settle_stream = keys.settle_stream(keys.partition_of(&batch_id));
    let _: () = redis::cmd("DEL")
        .arg(&settle_stream)
        .query_async(&mut conn)
        .await
        .unwrap();
    for p in 0..8 {
        let _: () = redis::cmd("DEL")
            .arg(keys.submit_stream(p))
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    // A reservation whose batch was never written: the gateway died between the two steps, ten minutes ago.
    let ten_minutes_ago = gantry_core::model::now_ms() - 600_000;
    let orphan = format!("bat_{ten_minutes_ago:012x}{}", "0".repeat(20));
    store
        .reserve(&tenant, &orphan, 30, ten_minutes_ago)
        .await
        .unwrap();
    assert_eq!(store.credits(&tenant).await.unwrap().balance, 100 - 16 - 30);

    let url = redis.url();
    let app = TestApp::start_with(move |c| {
        c.redis.url = Some(Secret::new(url));
        c.sweeper.interval_ms = 100;
        c.sweeper.reservation_grace_ms = 60_000;
    })
    .await;
    let settled = app.wait_final(&key, &batch_id).await;
    assert_eq!(
        (
            settled["credits"]["charged"].as_u64(),
            settled["credits"]["refunded"].as_u64()
        ),
        (Some(8), Some(8))
    );
    wait_for(
        "the orphan reservation to be released",
        Duration::from_secs(20),
        || async { Ok((store.credits(&tenant).await?.frozen == 0).then_some(())) },
    )
    .await
    .unwrap();
    let credits = store.credits(&tenant).await.unwrap();
    assert_eq!((credits.balance, credits.charged), (92, 8));
    assert_eq!(
        store
            .reserve(&tenant, &orphan, 30, gantry_core::model::now_ms())
            .await
            .unwrap(),
        gantry_core::store::Reservation::Closed,
        "a released batch id cannot be reserved again"
    );
    assert_eq!(
        store.audit_tenant(&tenant).await.unwrap().violations,
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_second_redis_outage_is_answered_503_and_the_run_completes() {
    let mut redis = RedisServer::start_durable().unwrap();
    let url = redis.url();
    let mut app = TestApp::start_with(move |c| {
        c.redis.url = Some(Secret::new(url));
        c.sim.task_duration_ms = 2000;
        // Work interrupted by the outage is picked up again once its lease ends.
        c.poller.claim_lease_ms = 2000;
        c.submitter.lease_ms = 2000;
    })
    .await;
    let (_, key) = app.tenant(100).await;
    let batch_id = app
        .submit(&key, &json!({"tasks": [veo("a"), veo("b"), veo("c")]}))
        .await;

    redis.kill();
    let started = std::time::Instant::now();
    let response = app
        .http
        .get(format!("{}/v1/batches/{batch_id}", app.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    let problem: serde_json::Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "unavailable");
    let ready = app.http.get(format!("{}/readyz", app.base)).send().await.unwrap();
    assert_eq!(ready.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let (status, _) = app
        .post_batch(&key, &json!({"tasks": [veo("during the outage")]}))
        .await;
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE);
    // Ten seconds without Redis, measured from when it went away.
    wait_for("ten seconds of outage", Duration::from_secs(15), || async {
        Ok((started.elapsed() >= Duration::from_secs(10)).then_some(()))
    })
    .await
    .unwrap();
    assert_eq!(
        app.stack.stopped_services(),
        Vec::<String>::new(),
        "no service exits during the outage"
    );

    redis.restart().unwrap();
    let batch = app.wait_final(&key, &batch_id).await;
    assert_eq!(batch["request_counts"]["succeeded"], 3);
    assert_eq!(app.credits(&key).await["balance"], 100 - 24);
    assert_eq!(app.stack.stopped_services(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_finishes_a_cancel_that_was_interrupted() {
    let redis = RedisServer::start().unwrap();
    let store = Store::connect(&redis.url(), "gantry", 8).await.unwrap();
    let (tenant, key) = store.create_tenant("t", 100).await.unwrap();
    let batch_id = write_batch(&store, &tenant, json!({"tasks": [veo("a"), veo("b"), veo("c")]})).await;
    // The gateway marked the batch cancelling, then died before cancelling its tasks.
    assert_eq!(
        store.cancel_batch(&batch_id).await.unwrap(),
        gantry_core::store::CancelBatch::Cancelling
    );

    let url = redis.url();
    let app = TestApp::start_with(move |c| {
        c.redis.url = Some(Secret::new(url));
        c.sweeper.interval_ms = 100;
    })
    .await;
    let batch = app.wait_final(&key, &batch_id).await;
    assert_eq!(batch["status"], "cancelled");
    assert_eq!(batch["request_counts"]["cancelled"], 3);
    assert_eq!(batch["credits"]["refunded"], 24);
    assert_eq!(
        app.stack.sim.stats().creates,
        0,
        "nothing of a cancelling batch reaches the provider"
    );
    assert_eq!(
        store.audit_tenant(&tenant).await.unwrap().violations,
        Vec::<String>::new()
    );
}
