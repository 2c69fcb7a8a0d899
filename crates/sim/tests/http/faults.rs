//! Fault injection: every knob over real HTTP, and `/sim/config`.

use std::time::Duration;

use futures::future::join_all;
use gantry_sim::{FaultConfig, SimConfig};
use reqwest::{header::RETRY_AFTER, Method};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::support::{config, now_ms, within, TestSim, DEADLINE, POLL_INTERVAL, SEEDANCE_TASKS};

fn faulty(task_duration_ms: u64, faults: FaultConfig) -> SimConfig {
    SimConfig {
        faults,
        ..config(task_duration_ms)
    }
}

fn seedance_body(text: &str) -> Value {
    json!({ "model": "seedance-1-0-pro-250528", "content": [{ "type": "text", "text": text }] })
}

#[tokio::test]
async fn rate_429_answers_with_retry_after_and_is_counted() {
    let sim = TestSim::start(faulty(
        50,
        FaultConfig {
            rate_429: 1.0,
            retry_after_secs: Some(3),
            ..FaultConfig::default()
        },
    ))
    .await;
    let response = sim
        .request(Method::POST, "/v1/video/sora-video")
        .json(&json!({ "model": "sora-2", "prompt": "p", "aspectRatio": "16:9", "duration": 10 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()[RETRY_AFTER], "3");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], -1);

    let response = sim
        .request(Method::POST, SEEDANCE_TASKS)
        .json(&seedance_body("p"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "RateLimitExceeded");

    sim.handle
        .set_faults(FaultConfig {
            rate_429: 1.0,
            ..FaultConfig::default()
        })
        .unwrap();
    let response = sim
        .request(Method::GET, &format!("{SEEDANCE_TASKS}/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().get(RETRY_AFTER).is_none());

    let stats = sim.handle.stats();
    assert_eq!(stats.rate_limited, 3);
    assert_eq!((stats.creates, stats.polls), (0, 0));
    assert!(stats.tasks.is_empty());
}

#[tokio::test]
async fn server_errors_create_nothing() {
    let sim = TestSim::start(faulty(
        50,
        FaultConfig {
            rate_5xx: 1.0,
            ..FaultConfig::default()
        },
    ))
    .await;
    for i in 0..6 {
        let (status, answer) = sim.try_create_sora(&format!("p{i}"), json!({})).await;
        assert!([500, 502, 503].contains(&status), "{status}");
        assert_eq!(answer["code"], -1);
    }
    let (status, answer) = sim.post(SEEDANCE_TASKS, seedance_body("p")).await;
    assert!([500, 502, 503].contains(&status), "{status}");
    assert!(answer["error"]["code"].is_string());
    let stats = sim.handle.stats();
    assert_eq!(stats.server_errors, 7);
    assert!(stats.tasks.is_empty());

    // The controls are not part of the provider API and never fault.
    let response = sim.http.get(sim.url("/sim/stats")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let response = sim.http.get(sim.url("/sim/config")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn malformed_answers_are_not_json_and_create_nothing() {
    let sim = TestSim::start(faulty(
        50,
        FaultConfig {
            malformed_rate: 1.0,
            ..FaultConfig::default()
        },
    ))
    .await;
    for path in ["/v1/video/veo", SEEDANCE_TASKS] {
        let response = sim
            .request(Method::POST, path)
            .json(&json!({ "model": "veo3.1-fast", "prompt": "p", "aspectRatio": "16:9" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body = response.bytes().await.unwrap();
        assert!(serde_json::from_slice::<Value>(&body).is_err());
    }
    let stats = sim.handle.stats();
    assert_eq!(stats.malformed, 2);
    assert!(stats.tasks.is_empty());
}

#[tokio::test]
async fn timeouts_hang_then_answer_504_and_end_with_the_server() {
    let sim = TestSim::start(faulty(
        50,
        FaultConfig {
            timeout_rate: 1.0,
            timeout_hang_ms: 200,
            ..FaultConfig::default()
        },
    ))
    .await;
    let started = Instant::now();
    let (status, _) = sim.try_create_sora("hung", json!({})).await;
    assert_eq!(status, 504);
    assert!(started.elapsed() >= Duration::from_millis(200));

    // A client that gives up first sees a timeout, and still no task is created.
    let error = sim
        .request(Method::POST, "/v1/draw/result")
        .json(&json!({ "id": "x" }))
        .timeout(Duration::from_millis(50))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error}");
    assert!(sim.handle.stats().tasks.is_empty());

    // A request hanging for the default minute does not hold up shutdown.
    sim.handle
        .set_faults(FaultConfig {
            timeout_rate: 1.0,
            ..FaultConfig::default()
        })
        .unwrap();
    let hung = tokio::spawn(
        sim.request(Method::POST, "/v1/draw/result")
            .json(&json!({ "id": "x" }))
            .send(),
    );
    sim.wait_for_stats("three timeouts", |stats| stats.timeouts == 3)
        .await;
    let TestSim { handle, .. } = sim;
    within("shutdown", handle.shutdown()).await.unwrap();
    let answer = within("the hung request", hung).await.unwrap();
    assert!(answer.is_err() || answer.is_ok_and(|response| response.status() == 504));
}

#[tokio::test]
async fn latency_is_added_to_every_request() {
    let sim = TestSim::start(faulty(
        50,
        FaultConfig {
            latency_ms_min: 150,
            latency_ms_max: 200,
            ..FaultConfig::default()
        },
    ))
    .await;
    let started = Instant::now();
    sim.poll("unknown").await;
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn max_concurrency_answers_429_at_once() {
    let sim = TestSim::start(SimConfig {
        poll_latency_ms: 500,
        ..faulty(
            10_000,
            FaultConfig {
                max_concurrency: Some(2),
                retry_after_secs: Some(1),
                ..FaultConfig::default()
            },
        )
    })
    .await;
    let id = sim.create_sora("busy").await;
    let poll = || async {
        let response = sim
            .request(Method::POST, "/v1/draw/result")
            .json(&json!({ "id": id }))
            .send()
            .await
            .unwrap();
        let quick = response.status() == 429;
        (
            response.status().as_u16(),
            quick && response.headers()[RETRY_AFTER] == "1",
        )
    };
    let answers = tokio::join!(poll(), poll(), poll(), poll());
    let mut statuses = [answers.0, answers.1, answers.2, answers.3];
    statuses.sort();
    assert_eq!(statuses, [(200, false), (200, false), (429, true), (429, true)]);
    let stats = sim.handle.stats();
    assert_eq!(stats.rate_limited, 2);
    assert_eq!(stats.polls, 2);
    assert!(stats.max_concurrent_requests >= 3, "{stats:?}");
}

#[tokio::test]
async fn arrivals_within_one_second_are_measured() {
    let sim = TestSim::start(config(50)).await;
    join_all((0..20).map(|_| sim.poll("unknown"))).await;
    assert_eq!(sim.handle.stats().max_requests_in_one_second, 20);

    // The window slides: two requests more than a second apart are never in one window. The sleep is the thing
    // measured here, not synchronisation.
    sim.handle.reset();
    sim.poll("unknown").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sim.poll("unknown").await;
    assert_eq!(sim.handle.stats().max_requests_in_one_second, 1);
}

#[tokio::test]
async fn duplicate_live_creates_count_repeated_live_prompts_only() {
    let sim = TestSim::start(config(10_000)).await;
    sim.create_sora("shot 1").await;
    sim.create_sora("shot 2").await;
    assert_eq!(sim.handle.stats().duplicate_live_creates, 0);
    sim.create_sora("shot 1").await;
    assert_eq!(sim.handle.stats().duplicate_live_creates, 1);
    let (status, _) = sim.post(SEEDANCE_TASKS, seedance_body("shot 2")).await;
    assert_eq!(status, 200);
    assert_eq!(sim.handle.stats().duplicate_live_creates, 2);

    // A finished task is no longer live: creating its prompt again is a retry, not a duplicate.
    let sim = TestSim::start(config(20)).await;
    for prompt in ["done", "gone [sim:fail]"] {
        let id = sim.create_sora(prompt).await;
        sim.poll_to_end(&id).await;
        sim.create_sora(prompt).await;
    }
    assert_eq!(sim.handle.stats().duplicate_live_creates, 0);
}

#[tokio::test]
async fn never_finish_rate_keeps_tasks_running() {
    let sim = TestSim::start(faulty(
        20,
        FaultConfig {
            never_finish_rate: 1.0,
            ..FaultConfig::default()
        },
    ))
    .await;
    let id = sim.create_sora("endless").await;
    let finishes_at_ms = sim.handle.stats().tasks[0].finishes_at_ms;
    let deadline = Instant::now() + DEADLINE;
    // Waiting on simulated time is the point here: poll until the task's duration has passed.
    while now_ms() <= finishes_at_ms + 20 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    let data = sim.poll(&id).await["data"].clone();
    assert_eq!(data["status"], "running");
    assert_eq!(data["progress"], 99);
}

#[tokio::test]
async fn a_seed_repeats_the_faults() {
    let faults = FaultConfig {
        seed: Some(42),
        rate_429: 0.3,
        rate_5xx: 0.3,
        ..FaultConfig::default()
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        let sim = TestSim::start(faulty(50, faults.clone())).await;
        let mut statuses = Vec::new();
        for _ in 0..30 {
            statuses.push(
                sim.request(Method::POST, "/v1/draw/result")
                    .json(&json!({ "id": "x" }))
                    .send()
                    .await
                    .unwrap()
                    .status(),
            );
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1]);
    assert!(runs[0].iter().any(|status| status.as_u16() == 200));
    assert!(runs[0].iter().any(|status| status.as_u16() == 429));
}

#[tokio::test]
async fn sim_config_round_trips() {
    let sim = TestSim::start(config(50)).await;
    let current = |sim: &TestSim| {
        let url = sim.url("/sim/config");
        let http = sim.http.clone();
        async move {
            let response = http.get(url).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<FaultConfig>().await.unwrap()
        }
    };
    assert_eq!(current(&sim).await, FaultConfig::default());

    sim.set_faults(json!({ "seed": 1, "rate_429": 0.5, "retry_after_secs": 2, "webhook_delay_ms_max": 30 }))
        .await;
    let expected = FaultConfig {
        seed: Some(1),
        rate_429: 0.5,
        retry_after_secs: Some(2),
        webhook_delay_ms_max: 30,
        ..FaultConfig::default()
    };
    assert_eq!(current(&sim).await, expected);
    assert_eq!(sim.handle.faults(), expected);

    for bad in [
        json!({ "rate_429": 2.0 }),
        json!({ "rate_5xx": 0.7, "timeout_rate": 0.7 }),
        json!("junk"),
    ] {
        let response = sim
            .http
            .post(sim.url("/sim/config"))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad}");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].is_string());
    }
    assert_eq!(current(&sim).await, expected);

    let invalid = faulty(
        50,
        FaultConfig {
            latency_ms_min: 5,
            latency_ms_max: 1,
            ..FaultConfig::default()
        },
    );
    let error = gantry_sim::spawn(invalid).await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
}
