//! Living with a real provider: retries under injected faults, rejections, deadlines, webhooks, Seedance chains.

use std::time::Duration;

use gantry_core::{config::Secret, domain::ProviderName};
use gantry_testkit::{free_port, wait_for};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{veo, TestApp};

/// Fast retries: the policy's shape with milliseconds instead of seconds.
fn fast_retries(config: &mut gantry_core::Config) {
    config.retry.transient_base_ms = 10;
    config.retry.rate_limited_base_ms = 30;
    config.retry.cap_ms = 300;
    config.retry.max_attempts = 10;
    config.poller.interval_ms = 30;
    config.poller.max_interval_ms = 200;
    config.poller.min_interval_ms = 10;
    config.poller.set_expected_ms(100);
}

/// A stack in webhook mode: the gateway on a port known in advance, so the callback URL can point at it.
async fn webhook_app(safety_net_poll_ms: u64) -> TestApp {
    let gateway_port = free_port().unwrap();
    TestApp::start_with(|c| {
        fast_retries(c);
        c.gateway.listen = ([127, 0, 0, 1], gateway_port).into();
        c.provider.callback_base_url = Some(format!("http://127.0.0.1:{gateway_port}"));
        c.provider.callback_secret = Some(Secret::new("hook-secret"));
        c.poller.webhook_poll_interval_ms = safety_net_poll_ms;
    })
    .await
}

async fn set_faults(app: &TestApp, faults: Value) {
    let response = app
        .http
        .post(format!("{}/sim/config", app.stack.sim.base_url()))
        .json(&faults)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_5xx_and_429_injected_every_task_ends_and_none_is_created_twice() {
    let app = TestApp::start_with(|c| {
        fast_retries(c);
        c.gateway.max_tasks_per_batch = 200;
        c.sim.task_duration_ms = 200;
        c.sim.duration_jitter_ms = 300;
    })
    .await;
    set_faults(&app, json!({"seed": 7, "rate_5xx": 0.2, "rate_429": 0.1})).await;
    let (_, key) = app.tenant(8 * 200).await;
    let tasks: Vec<Value> = (0..200).map(|i| veo(&format!("unique shot {i}"))).collect();
    let batch_id = app.submit(&key, &json!({"tasks": tasks})).await;
    let batch = app.wait_final(&key, &batch_id).await;
    assert_eq!(batch["status"], "completed");
    let counts = &batch["request_counts"];
    assert_eq!(
        counts["succeeded"].as_u64().unwrap() + counts["failed"].as_u64().unwrap(),
        200
    );

    let stats = app.stack.sim.stats();
    assert!(stats.server_errors > 20, "faults were injected: {stats:?}");
    assert!(stats.rate_limited > 10, "faults were injected: {stats:?}");
    assert_eq!(
        stats.duplicate_live_creates, 0,
        "a task had two live remote tasks"
    );
    assert_eq!(stats.tasks.len(), 200, "one remote task per task");

    // A task may only fail for a retryable cause once its attempts ran out.
    let mut retried = 0;
    for page in [None, Some(99)] {
        let after = page
            .map(|i| format!("&after={}", gantry_core::ids::task_id(&batch_id, i)))
            .unwrap_or_default();
        let (_, list) = app
            .get(&key, &format!("/v1/batches/{batch_id}/tasks?limit=100{after}"))
            .await;
        for task in list["data"].as_array().unwrap() {
            if task["attempts"].as_u64().unwrap() > 1 {
                retried += 1;
                assert!(task["last_error"].is_string(), "{task}");
            }
            if task["status"] == "failed" {
                assert_eq!(task["attempts"], 10, "failed before its attempts ran out: {task}");
            }
        }
    }
    assert!(retried > 20, "creates were retried ({retried})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_400_fails_at_once_and_a_never_ending_task_times_out() {
    let app = TestApp::start_with(|c| {
        fast_retries(c);
        c.poller.deadline_ms = 1500;
    })
    .await;
    let (_, key) = app.tenant(100).await;
    let batch_id = app
        .submit(
            &key,
            &json!({"tasks": [veo("refused [sim:reject]"), veo("endless [sim:never]")]}),
        )
        .await;
    let batch = app.wait_final(&key, &batch_id).await;
    assert_eq!(batch["request_counts"]["failed"], 2);
    assert_eq!(batch["credits"]["refunded"], 16);
    let tasks = app.tasks(&key, &batch_id).await;
    assert_eq!(tasks[0]["failure"]["code"], "rejected");
    assert_eq!(tasks[0]["attempts"], 1, "a rejection is not retried");
    assert_eq!(tasks[1]["failure"]["code"], "timeout");
    assert_eq!(app.stack.sim.stats().creates, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_with_duplicates_reordering_and_drops_end_every_task_right() {
    // Polling is only the safety net for dropped callbacks.
    let app = webhook_app(1500).await;
    set_faults(&app, json!({"seed": 3, "webhook_drop_rate": 0.3, "webhook_duplicate_rate": 0.5, "webhook_delay_ms_max": 150})).await;
    let (_, key) = app.tenant(500).await;
    let tasks: Vec<Value> = (0..12)
        .map(|i| {
            veo(&format!(
                "hooked {i}{}",
                if i % 4 == 0 { " [sim:fail]" } else { "" }
            ))
        })
        .collect();
    let batch_id = app.submit(&key, &json!({"tasks": tasks})).await;

    // Forged and stale tokens are refused and change nothing.
    let task_id = gantry_core::ids::task_id(&batch_id, 1);
    for token in [
        "1.00",
        "junk",
        &gantry_core::callback::token("wrong-secret", &task_id, 1),
    ] {
        let url = format!("{}/v1/provider/callbacks/grsai/{task_id}?token={token}", app.base);
        let response = app
            .http
            .post(url)
            .json(&json!({"id": "sim-1", "status": "succeeded", "url": "https://evil/x.mp4"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }

    let batch = app.wait_final(&key, &batch_id).await;
    assert_eq!(batch["request_counts"]["succeeded"], 9);
    assert_eq!(batch["request_counts"]["failed"], 3);
    for task in app.tasks(&key, &batch_id).await {
        if task["status"] == "succeeded" {
            assert!(
                task["output"]["video_url"]
                    .as_str()
                    .unwrap()
                    .starts_with(&app.stack.sim.base_url()),
                "{task}"
            );
        }
    }
    let stats = app.stack.sim.stats();
    assert!(stats.webhooks_sent > 0, "{stats:?}");
    assert!(stats.webhooks_dropped > 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_completes_when_every_callback_is_dropped() {
    let app = webhook_app(300).await;
    set_faults(&app, json!({"webhook_drop_rate": 1.0})).await;
    let (_, key) = app.tenant(100).await;
    let batch_id = app
        .submit(&key, &json!({"tasks": [veo("a"), veo("b"), veo("c")]}))
        .await;
    let batch = app.wait_final(&key, &batch_id).await;
    assert_eq!(batch["request_counts"]["succeeded"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_on_seedance_hands_on_each_last_frame() {
    let app = TestApp::start_with(|c| {
        fast_retries(c);
        c.provider.routes.veo31_fast = ProviderName::Seedance;
    })
    .await;
    let (_, key) = app.tenant(100).await;
    let body = json!({"mode": "chain", "tasks": [veo("seed one"), veo("seed two"), veo("seed three")]});
    let batch_id = app.submit(&key, &body).await;
    let batch = app.wait_final(&key, &batch_id).await;
    assert_eq!(batch["request_counts"]["succeeded"], 3);
    let stats = app.stack.sim.stats();
    assert!(stats.tasks.iter().all(|t| t.provider == "seedance"), "{stats:?}");
    let tasks = app.tasks(&key, &batch_id).await;
    for i in 1..3 {
        let previous_frame = tasks[i - 1]["output"]["last_frame_url"].as_str().unwrap();
        assert_eq!(stats.tasks[i].first_frame_url.as_deref(), Some(previous_frame));
        assert_eq!(stats.tasks[i - 1].last_frame_url.as_deref(), Some(previous_frame));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_replayed_callbacks_makes_one_status_call_at_a_time() {
    // Slow status answers, so replays arrive while the first confirmation is still waiting for one.
    let app = webhook_app(60_000).await;
    set_faults(&app, json!({"latency_ms_min": 300, "latency_ms_max": 300})).await;
    let (_, key) = app.tenant(100).await;
    let batch_id = app
        .submit(&key, &json!({"tasks": [veo("endless [sim:never]")]}))
        .await;
    let task_id = gantry_core::ids::task_id(&batch_id, 0);
    wait_for("the task to run", Duration::from_secs(20), || async {
        let (_, task) = app.get(&key, &format!("/v1/tasks/{task_id}")).await;
        Ok((task["status"] == "running").then_some(()))
    })
    .await
    .unwrap();

    let token = gantry_core::callback::token("hook-secret", &task_id, 1);
    let url = format!("{}/v1/provider/callbacks/grsai/{task_id}?token={token}", app.base);
    let polls_before = app.stack.sim.stats().polls;
    let replays = (0..100).map(|_| {
        app.http
            .post(&url)
            .json(&json!({"id": "sim-1", "status": "succeeded", "url": "https://v/1.mp4"}))
            .send()
    });
    for response in futures::future::join_all(replays).await {
        assert!(response.unwrap().status().is_success());
    }
    // Every replay was answered at once; the confirmations behind them did not pile up.
    let stats = app.stack.sim.stats();
    assert!(stats.max_concurrent_polls_per_task <= 2, "{stats:?}");
    assert!(
        stats.polls - polls_before <= 10,
        "{} status calls for 100 replays",
        stats.polls - polls_before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_see_failure_codes_and_short_messages_not_provider_errors() {
    let app = TestApp::start_with(|c| {
        fast_retries(c);
        c.retry.max_attempts = 3;
    })
    .await;
    set_faults(&app, json!({"rate_5xx": 1.0})).await;
    let (_, key) = app.tenant(100).await;
    let batch_id = app
        .submit(&key, &json!({"tasks": [veo("never gets through")]}))
        .await;
    let batch = app.wait_final(&key, &batch_id).await;
    assert_eq!(batch["request_counts"]["failed"], 1, "{batch}");
    let task = &app.tasks(&key, &batch_id).await[0];
    assert_eq!(task["failure"]["code"], "provider_error", "{task}");
    // What the simulator said, and where it lives, stay in the logs.
    let shown = format!("{} {}", task["failure"]["message"], task["last_error"]);
    for leak in ["simulated", "http 50", "127.0.0.1", "http://"] {
        assert!(!shown.contains(leak), "{leak} in {shown}");
    }
    assert!(shown.contains("the provider failed"), "{shown}");
}
