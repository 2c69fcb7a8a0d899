//! The messages the scripts write are the ones Rust reads: every entry of every submit and settle stream parses
//! with `Message::from_fields` and names the task and batch it should.

use gantry_core::{
    ids,
    messages::Message,
    model::TaskStatus,
    store::{Claim, Outcome},
    Store,
};
use gantry_testkit::RedisServer;
use redis::{streams::StreamRangeReply, AsyncCommands};

use crate::transitions::{store, traced_batch_of};

const PARALLEL_TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const CHAIN_TRACE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// Claims a task that must be claimable: its attempt and the first frame handed over by a chain.
async fn claim(store: &Store, task: &str, now: u64) -> (u32, Option<String>) {
    let Claim::Claimed {
        attempt,
        chain_first_frame,
        ..
    } = store.claim_submit(task, now, 1000).await.unwrap()
    else {
        panic!("{task} cannot be claimed")
    };
    (attempt, chain_first_frame)
}

fn succeeded(last_frame_url: Option<&str>) -> Outcome {
    Outcome::Succeeded {
        video_url: "https://v/1.mp4".into(),
        last_frame_url: last_frame_url.map(Into::into),
    }
}

fn failed() -> Outcome {
    Outcome::Failed {
        code: gantry_core::domain::FailureCode::ProviderError,
        message: "no".into(),
    }
}

fn submit(task_id: &str, batch_id: &str, traceparent: Option<&str>) -> Message {
    Message::SubmitTask {
        task_id: task_id.into(),
        batch_id: batch_id.into(),
        traceparent: traceparent.map(Into::into),
    }
}

fn settle(batch_id: &str, traceparent: Option<&str>) -> Message {
    Message::SettleBatch {
        batch_id: batch_id.into(),
        traceparent: traceparent.map(Into::into),
    }
}

#[tokio::test]
async fn every_message_a_script_writes_parses_and_names_its_task_and_batch() {
    let redis = RedisServer::start().unwrap();
    let store = store(&redis).await;
    let keys = store.keys().clone();
    let submit_stream = |batch: &str| keys.submit_stream(keys.partition_of(batch));
    let settle_stream = |batch: &str| keys.settle_stream(keys.partition_of(batch));
    let (tenant, _) = store.create_tenant("t", 100).await.unwrap();

    // Creating batches queues every task of a parallel batch and the first shot of a chain.
    let untraced = traced_batch_of(&store, &tenant, "parallel", 1, None).await;
    let parallel = traced_batch_of(&store, &tenant, "parallel", 2, Some(PARALLEL_TRACE)).await;
    let chain = traced_batch_of(&store, &tenant, "chain", 3, Some(CHAIN_TRACE)).await;
    let p = |i| ids::task_id(&parallel, i);
    let c = |i| ids::task_id(&chain, i);
    let mut expected = vec![
        (
            submit_stream(&untraced),
            submit(&ids::task_id(&untraced, 0), &untraced, None),
        ),
        (
            submit_stream(&parallel),
            submit(&p(0), &parallel, Some(PARALLEL_TRACE)),
        ),
        (
            submit_stream(&parallel),
            submit(&p(1), &parallel, Some(PARALLEL_TRACE)),
        ),
        (submit_stream(&chain), submit(&c(0), &chain, Some(CHAIN_TRACE))),
    ];

    // A create to retry goes to the retry schedule; the pump sends it again when it is due.
    let (attempt, _) = claim(&store, &p(0), 10).await;
    assert!(store.retry_later(&p(0), attempt, 50, "429", 10).await.unwrap());
    assert_eq!(store.pump_retries(49, 10).await.unwrap(), 0, "not due yet");
    assert_eq!(store.pump_retries(50, 10).await.unwrap(), 1);
    expected.push((
        submit_stream(&parallel),
        submit(&p(0), &parallel, Some(PARALLEL_TRACE)),
    ));
    let (attempt, _) = claim(&store, &p(0), 60).await;
    assert_eq!(attempt, 2);
    assert!(store
        .finish_task(&p(0), Some(attempt), &succeeded(None), 70)
        .await
        .unwrap());
    // The last task of the parallel batch fails: the batch settles.
    let (attempt, _) = claim(&store, &p(1), 80).await;
    assert!(store
        .finish_task(&p(1), Some(attempt), &failed(), 90)
        .await
        .unwrap());
    expected.push((settle_stream(&parallel), settle(&parallel, Some(PARALLEL_TRACE))));

    // Shot 0 of the chain succeeds and hands its last frame to shot 1.
    let (attempt, _) = claim(&store, &c(0), 100).await;
    assert!(store
        .finish_task(&c(0), Some(attempt), &succeeded(Some("https://v/0.png")), 110)
        .await
        .unwrap());
    expected.push((submit_stream(&chain), submit(&c(1), &chain, Some(CHAIN_TRACE))));
    let (attempt, first_frame) = claim(&store, &c(1), 120).await;
    assert_eq!(first_frame.as_deref(), Some("https://v/0.png"));
    // Shot 1 fails: shot 2 can no longer start, and the chain settles.
    assert!(store
        .finish_task(&c(1), Some(attempt), &failed(), 130)
        .await
        .unwrap());
    assert_eq!(
        store.task(&c(2)).await.unwrap().unwrap().status,
        TaskStatus::Cancelled
    );
    expected.push((settle_stream(&chain), settle(&chain, Some(CHAIN_TRACE))));

    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut read = 0;
    for partition in 0..keys.partitions() {
        for stream in [keys.submit_stream(partition), keys.settle_stream(partition)] {
            let entries: StreamRangeReply = conn.xrange_all(&stream).await.unwrap();
            let messages: Vec<Message> = entries
                .ids
                .iter()
                .map(|entry| {
                    Message::from_fields(&entry.map)
                        .unwrap_or_else(|e| panic!("{stream} {}: {e}: {:?}", entry.id, entry.map))
                })
                .collect();
            let wanted: Vec<Message> = expected
                .iter()
                .filter(|(s, _)| *s == stream)
                .map(|(_, message)| message.clone())
                .collect();
            assert_eq!(messages, wanted, "{stream}");
            read += messages.len();
        }
    }
    assert_eq!(read, expected.len());
}
