//! Cancelling tasks and batches in every state, with the credits checked to the credit.

use std::time::Duration;

use gantry_testkit::wait_for;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{veo, TestApp};

async fn cancel_task(app: &TestApp, key: &str, task_id: &str) -> (StatusCode, Value) {
    app.send(
        app.http
            .post(format!("{}/v1/tasks/{task_id}/cancel", app.base))
            .bearer_auth(key),
    )
    .await
}

async fn wait_task(app: &TestApp, key: &str, task_id: &str, status: &str) {
    wait_for(
        &format!("task {task_id} to be {status}"),
        Duration::from_secs(30),
        || async {
            let (_, task) = app.get(key, &format!("/v1/tasks/{task_id}")).await;
            Ok((task["status"] == status).then_some(()))
        },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_shot_of_a_chain_is_cancelled_with_the_rest_and_refunded() {
    let app = TestApp::start_with(|c| c.sim.task_duration_ms = 1500).await;
    let (_, key) = app.tenant(100).await;
    let batch_id = app
        .submit(
            &key,
            &json!({"mode": "chain", "tasks": [veo("one"), veo("two"), veo("three")]}),
        )
        .await;
    let second = gantry_core::ids::task_id(&batch_id, 1);
    let (status, task) = cancel_task(&app, &key, &second).await;
    assert_eq!(status, StatusCode::OK, "{task}");
    assert_eq!(task["status"], "cancelled");
    assert_eq!(task["failure"]["code"], "cancelled");

    let batch = app.wait_final(&key, &batch_id).await;
    assert_eq!(batch["status"], "completed");
    let statuses: Vec<_> = app
        .tasks(&key, &batch_id)
        .await
        .iter()
        .map(|t| t["status"].clone())
        .collect();
    assert_eq!(statuses, ["succeeded", "cancelled", "cancelled"]);
    assert_eq!(
        (
            batch["credits"]["charged"].as_u64(),
            batch["credits"]["refunded"].as_u64()
        ),
        (Some(8), Some(16))
    );
    assert_eq!(
        app.stack.sim.stats().creates,
        1,
        "cancelled shots never reach the provider"
    );
    assert_eq!(app.credits(&key).await["balance"], 92);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_task_is_cancelled_its_late_result_ignored_and_refunded() {
    let app = TestApp::start_with(|c| c.sim.task_duration_ms = 1500).await;
    let (_, key) = app.tenant(100).await;
    let batch_id = app
        .submit(&key, &json!({"tasks": [veo("keep"), veo("drop")]}))
        .await;
    let drop = gantry_core::ids::task_id(&batch_id, 1);
    wait_task(&app, &key, &drop, "running").await;
    let (status, task) = cancel_task(&app, &key, &drop).await;
    assert_eq!(status, StatusCode::OK, "{task}");

    let batch = app.wait_final(&key, &batch_id).await;
    let tasks = app.tasks(&key, &batch_id).await;
    assert_eq!(
        tasks[1]["status"], "cancelled",
        "the provider's later success changed nothing"
    );
    assert_eq!(tasks[1]["credits"]["refunded"], 8);
    assert_eq!(
        (
            batch["credits"]["charged"].as_u64(),
            batch["credits"]["refunded"].as_u64()
        ),
        (Some(8), Some(8))
    );
    assert_eq!(app.credits(&key).await["balance"], 92);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_cancelled_while_being_submitted_is_refunded() {
    let app = TestApp::start().await;
    // Slow creates: the task stays `submitting` long enough to be cancelled there.
    let faults = json!({"latency_ms_min": 1500, "latency_ms_max": 1500});
    app.http
        .post(format!("{}/sim/config", app.stack.sim.base_url()))
        .json(&faults)
        .send()
        .await
        .unwrap();
    let (_, key) = app.tenant(100).await;
    let batch_id = app.submit(&key, &json!({"tasks": [veo("slow")]})).await;
    let task_id = gantry_core::ids::task_id(&batch_id, 0);
    wait_task(&app, &key, &task_id, "submitting").await;
    let (status, _) = cancel_task(&app, &key, &task_id).await;
    assert_eq!(status, StatusCode::OK);
    let batch = app.wait_final(&key, &batch_id).await;
    assert_eq!(batch["request_counts"]["cancelled"], 1);
    assert_eq!(
        (
            batch["credits"]["charged"].as_u64(),
            batch["credits"]["refunded"].as_u64()
        ),
        (Some(0), Some(8))
    );
    assert_eq!(app.credits(&key).await["balance"], 100);
    assert_eq!(
        app.get(&key, &format!("/v1/tasks/{task_id}")).await.1["status"],
        "cancelled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_batch_refunds_everything_unfinished_and_finished_things_are_409() {
    let app = TestApp::start_with(|c| c.sim.task_duration_ms = 800).await;
    let (_, key) = app.tenant(100).await;
    let done_id = app.submit(&key, &json!({"tasks": [veo("quick")]})).await;
    app.wait_final(&key, &done_id).await;
    let done_task = gantry_core::ids::task_id(&done_id, 0);
    assert_eq!(cancel_task(&app, &key, &done_task).await.0, StatusCode::CONFLICT);
    let url = format!("{}/v1/batches/{done_id}/cancel", app.base);
    let (status, problem) = app.send(app.http.post(url).bearer_auth(&key)).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::CONFLICT, Some("conflict"))
    );

    let batch_id = app
        .submit(&key, &json!({"tasks": [veo("a"), veo("b"), veo("c")]}))
        .await;
    let url = format!("{}/v1/batches/{batch_id}/cancel", app.base);
    let (status, batch) = app.send(app.http.post(&url).bearer_auth(&key)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{batch}");
    assert!(
        matches!(batch["status"].as_str(), Some("cancelling" | "cancelled")),
        "{batch}"
    );
    let batch = app.wait_final(&key, &batch_id).await;
    assert_eq!(batch["status"], "cancelled");
    assert_eq!(batch["request_counts"]["cancelled"], 3);
    assert_eq!(
        (
            batch["credits"]["charged"].as_u64(),
            batch["credits"]["refunded"].as_u64()
        ),
        (Some(0), Some(24))
    );
    assert_eq!(app.credits(&key).await["balance"], 100 - 8);
    assert_eq!(
        app.send(app.http.post(&url).bearer_auth(&key)).await.0,
        StatusCode::CONFLICT
    );

    // Another tenant cannot cancel it: it does not exist for them.
    let (_, other) = app.tenant(1).await;
    assert_eq!(
        cancel_task(&app, &other, &done_task).await.0,
        StatusCode::NOT_FOUND
    );
}
