//! Callbacks: what is sent, when, and what the webhook faults do to it.

use axum::http::StatusCode;
use gantry_sim::{FaultConfig, SimConfig};
use serde_json::{json, Value};

use crate::support::{config, Receiver, TestSim, SEEDANCE_TASKS};

fn hooked(url: &str, shut_progress: bool) -> Value {
    json!({ "webHook": url, "shutProgress": shut_progress })
}

#[tokio::test]
async fn grsai_callbacks_report_progress_then_the_end() {
    let receiver = Receiver::start(StatusCode::OK).await;
    let sim = TestSim::start(config(600)).await;
    let id = sim.create_sora_with("hooked", hooked(&receiver.url, false)).await;
    let bodies = receiver.wait_for(2).await;
    let base = sim.handle.base_url();
    assert_eq!(bodies[0]["id"], id.as_str());
    assert_eq!(bodies[0]["status"], "running");
    let progress = bodies[0]["progress"].as_u64().unwrap();
    assert!((50..=99).contains(&progress), "{progress}");
    assert_eq!(
        bodies[1],
        json!({
            "id": id, "status": "succeeded", "progress": 100,
            "results": [{ "url": format!("{base}/videos/{id}.mp4") }],
            "url": format!("{base}/videos/{id}.mp4"), "failure_reason": "", "error": "",
            "last_frame_url": format!("{base}/frames/{id}-last.jpg"),
        })
    );
    let stats = sim
        .wait_for_stats("two callbacks sent", |stats| stats.webhooks_sent == 2)
        .await;
    assert_eq!((stats.webhooks_dropped, stats.webhooks_failed), (0, 0));
}

#[tokio::test]
async fn shut_progress_sends_only_the_end_and_minus_one_sends_nothing() {
    let receiver = Receiver::start(StatusCode::OK).await;
    let sim = TestSim::start(config(100)).await;
    sim.create_sora_with("polled", hooked("-1", false)).await;
    let id = sim
        .create_sora_with("quiet [sim:fail]", hooked(&receiver.url, true))
        .await;
    let bodies = receiver.wait_for(1).await;
    assert_eq!(bodies[0]["id"], id.as_str());
    assert_eq!(bodies[0]["status"], "failed");
    assert_eq!(bodies[0]["failure_reason"], "error");
    let stats = sim
        .wait_for_stats("one callback sent", |stats| stats.webhooks_sent == 1)
        .await;
    assert_eq!(stats.webhooks_sent, 1);
    assert_eq!(receiver.bodies().len(), 1);
}

#[tokio::test]
async fn seedance_callbacks_carry_the_task_object() {
    let receiver = Receiver::start(StatusCode::OK).await;
    let sim = TestSim::start(config(600)).await;
    let body = json!({
        "model": "seedance-1-0-lite", "content": [{ "type": "text", "text": "a hooked fox --ratio 9:16" }],
        "return_last_frame": true, "callback_url": receiver.url,
    });
    let (status, answer) = sim.post(SEEDANCE_TASKS, body).await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["id"].as_str().unwrap();
    let bodies = receiver.wait_for(2).await;
    assert_eq!(bodies[0]["id"], id);
    assert_eq!(bodies[0]["status"], "running");
    assert_eq!(bodies[1]["status"], "succeeded");
    assert_eq!(bodies[1]["model"], "seedance-1-0-lite");
    let base = sim.handle.base_url();
    assert_eq!(
        bodies[1]["content"]["last_frame_url"],
        format!("{base}/frames/{id}-last.jpg")
    );
}

#[tokio::test]
async fn webhook_faults_duplicate_delay_and_drop_deliveries() {
    let receiver = Receiver::start(StatusCode::OK).await;
    let sim = TestSim::start(SimConfig {
        faults: FaultConfig {
            seed: Some(5),
            webhook_duplicate_rate: 1.0,
            webhook_delay_ms_max: 100,
            ..FaultConfig::default()
        },
        ..config(50)
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            sim.create_sora_with(&format!("twice {i}"), hooked(&receiver.url, true))
                .await,
        );
    }
    let bodies = receiver.wait_for(6).await;
    for id in &ids {
        let copies = bodies.iter().filter(|body| body["id"] == id.as_str()).count();
        assert_eq!(copies, 2, "{id}: {bodies:?}");
    }
    let stats = sim
        .wait_for_stats("six callbacks sent", |stats| stats.webhooks_sent == 6)
        .await;
    assert_eq!(stats.webhooks_duplicated, 3);

    sim.set_faults(json!({ "webhook_drop_rate": 1.0 })).await;
    for i in 0..3 {
        sim.create_sora_with(&format!("lost {i}"), hooked(&receiver.url, false))
            .await;
    }
    let stats = sim
        .wait_for_stats("six callbacks dropped", |stats| stats.webhooks_dropped == 6)
        .await;
    assert_eq!(stats.webhooks_sent, 6);
    assert_eq!(receiver.bodies().len(), 6);

    // Half dropped, half doubled: every delivery is accounted for.
    sim.handle.reset();
    sim.set_faults(
        json!({ "seed": 9, "webhook_drop_rate": 0.5, "webhook_duplicate_rate": 0.5,
                           "webhook_delay_ms_max": 50 }),
    )
    .await;
    for i in 0..20 {
        sim.create_sora_with(&format!("mixed {i}"), hooked(&receiver.url, true))
            .await;
    }
    let stats = sim
        .wait_for_stats("all twenty deliveries decided and sent", |stats| {
            stats.webhooks_dropped + stats.webhooks_sent == 20 + stats.webhooks_duplicated
        })
        .await;
    assert!(
        stats.webhooks_dropped > 0 && stats.webhooks_duplicated > 0,
        "{stats:?}"
    );
    assert_eq!(
        receiver.wait_for(6 + stats.webhooks_sent as usize).await.len(),
        6 + stats.webhooks_sent as usize
    );
}

#[tokio::test]
async fn failed_deliveries_are_counted_not_retried() {
    let refusing = Receiver::start(StatusCode::INTERNAL_SERVER_ERROR).await;
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}/hook", listener.local_addr().unwrap())
    };
    let sim = TestSim::start(config(30)).await;
    sim.create_sora_with("refused", hooked(&refusing.url, true)).await;
    sim.create_sora_with("nobody home", hooked(&closed, true)).await;
    let stats = sim
        .wait_for_stats("two callbacks sent", |stats| stats.webhooks_sent == 2)
        .await;
    assert_eq!(stats.webhooks_failed, 2);
    assert_eq!(refusing.bodies().len(), 1);
}
