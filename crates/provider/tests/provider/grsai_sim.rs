//! The Grsai client against the provider simulator over real HTTP, one simulator per test on port 0.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use gantry_provider::{
    CreateRequest, FailureCode, GrsaiClient, GrsaiConfig, Model, Provider, ProviderError, RemoteStatus,
};
use gantry_sim::{FaultConfig, SimConfig, SimHandle};
use secrecy::SecretString;

use crate::support::wait_for_end;

async fn start_sim(poll_latency_ms: u64) -> SimHandle {
    gantry_sim::spawn(SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        task_duration_ms: 50,
        poll_latency_ms,
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

fn client(sim: &SimHandle, key: &str, timeout: Duration) -> GrsaiClient {
    GrsaiClient::new(GrsaiConfig {
        base_url: sim.base_url(),
        api_key: SecretString::from(key),
        timeout,
        h2c: false,
    })
    .unwrap()
}

fn request(model: Model, prompt: &str) -> CreateRequest {
    CreateRequest {
        model,
        prompt: prompt.to_owned(),
        aspect_ratio: "9:16".to_owned(),
        duration: (model == Model::Sora2).then_some(10),
        reference_image_urls: Vec::new(),
        first_frame_url: Some("http://img/first.png".to_owned()),
        last_frame_url: None,
        webhook_url: None,
    }
}

#[tokio::test]
async fn sora_and_veo_tasks_succeed() {
    let sim = start_sim(0).await;
    let client = client(&sim, sim.api_key(), Duration::from_secs(5));
    assert_eq!(client.name(), gantry_provider::ProviderName::Grsai);
    for model in [Model::Sora2, Model::Veo31Fast, Model::Veo31Pro] {
        let id = client
            .create(&request(model, "a lighthouse at dusk"))
            .await
            .unwrap();
        // The first answer may already be the end on a slow machine; either way it is a known state.
        let first = client.status(&id).await.unwrap();
        assert!(
            matches!(
                first,
                RemoteStatus::Running { .. } | RemoteStatus::Succeeded { .. }
            ),
            "{first:?}"
        );
        let end = wait_for_end(&client, &id).await;
        let base = sim.base_url();
        assert_eq!(
            end,
            RemoteStatus::Succeeded {
                video_url: format!("{base}/videos/{id}.mp4"),
                last_frame_url: Some(format!("{base}/frames/{id}-last.jpg")),
            },
            "{model}"
        );
    }
    let stats = sim.stats();
    let models: Vec<&str> = stats.tasks.iter().map(|task| task.model.as_str()).collect();
    assert_eq!(models, ["sora-2", "veo3.1-fast", "veo3.1-pro"]);
    assert!(stats
        .tasks
        .iter()
        .all(|task| task.first_frame_url.as_deref() == Some("http://img/first.png")));
}

#[tokio::test]
async fn h2c_calls_go_over_http2_and_default_calls_over_http1() {
    let sim = start_sim(0).await;
    let h1 = client(&sim, sim.api_key(), Duration::from_secs(5));
    let id = h1.create(&request(Model::Veo31Fast, "one")).await.unwrap();
    h1.status(&id).await.unwrap();
    assert_eq!(sim.stats().http2_requests, 0);

    let h2 = GrsaiClient::new(GrsaiConfig {
        base_url: sim.base_url(),
        api_key: SecretString::from(sim.api_key()),
        timeout: Duration::from_secs(5),
        h2c: true,
    })
    .unwrap();
    // Many calls at once share the multiplexed connection; each is answered on its own.
    let creates = (0..20).map(|i| {
        let h2 = h2.clone();
        async move { h2.create(&request(Model::Veo31Fast, &format!("shot {i}"))).await }
    });
    let ids: Vec<String> = futures::future::try_join_all(creates).await.unwrap();
    let end = wait_for_end(&h2, &ids[7]).await;
    assert!(matches!(end, RemoteStatus::Succeeded { .. }), "{end:?}");
    let stats = sim.stats();
    assert_eq!(stats.creates, 21);
    assert!(
        stats.http2_requests >= 21,
        "{} HTTP/2 requests",
        stats.http2_requests
    );
    assert_eq!(
        stats.http2_requests,
        stats.creates + stats.polls - 2,
        "every call but the HTTP/1.1 client's two is HTTP/2"
    );
}

#[tokio::test]
async fn forced_failures_map_to_failure_codes() {
    let sim = start_sim(0).await;
    let client = client(&sim, sim.api_key(), Duration::from_secs(5));
    let cases = [
        ("x [sim:fail]", FailureCode::ProviderError, "simulated failure"),
        (
            "x [sim:moderation]",
            FailureCode::InputModeration,
            "simulated input moderation",
        ),
        (
            "x [sim:output-moderation]",
            FailureCode::OutputModeration,
            "simulated output moderation",
        ),
    ];
    for (prompt, code, message) in cases {
        let id = client.create(&request(Model::Veo31Fast, prompt)).await.unwrap();
        let end = wait_for_end(&client, &id).await;
        assert_eq!(
            end,
            RemoteStatus::Failed {
                code,
                message: message.to_owned()
            }
        );
    }
}

#[tokio::test]
async fn rejected_create_is_permanent() {
    let sim = start_sim(0).await;
    let client = client(&sim, sim.api_key(), Duration::from_secs(5));
    let error = client
        .create(&request(Model::Sora2, "x [sim:reject]"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ProviderError::Rejected { status: 400, message } if message == "simulated rejection")
    );
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn wrong_api_key_is_rejected_with_401() {
    let sim = start_sim(0).await;
    let client = client(&sim, "not-the-key", Duration::from_secs(5));
    let error = client.create(&request(Model::Sora2, "a cat")).await.unwrap_err();
    assert!(
        matches!(error, ProviderError::Rejected { status: 401, .. }),
        "{error:?}"
    );
    let error = client.status("sim-1").await.unwrap_err();
    assert!(
        matches!(error, ProviderError::Rejected { status: 401, .. }),
        "{error:?}"
    );
    assert!(sim.stats().tasks.is_empty());
}

#[tokio::test]
async fn unknown_id_is_pending() {
    let sim = start_sim(0).await;
    let client = client(&sim, sim.api_key(), Duration::from_secs(5));
    assert_eq!(
        client.status("no-such-task").await.unwrap(),
        RemoteStatus::Pending
    );
}

#[tokio::test]
async fn slow_answers_and_dead_servers_are_transient() {
    let sim = start_sim(2_000).await;
    let client = client(&sim, sim.api_key(), Duration::from_millis(100));
    let error = client.status("sim-1").await.unwrap_err();
    assert!(
        matches!(&error, ProviderError::Transient(message) if message.starts_with("timed out")),
        "{error:?}"
    );

    sim.shutdown().await.unwrap();
    let error = client.create(&request(Model::Sora2, "a cat")).await.unwrap_err();
    assert!(matches!(error, ProviderError::Transient(_)), "{error:?}");
    assert!(error.is_retryable());
}

#[tokio::test]
async fn injected_faults_are_classified() {
    let sim = start_sim(0).await;
    let client = client(&sim, sim.api_key(), Duration::from_millis(300));
    let faults = |faults: FaultConfig| sim.set_faults(faults).unwrap();

    faults(FaultConfig {
        rate_429: 1.0,
        retry_after_secs: Some(2),
        ..FaultConfig::default()
    });
    let error = client.create(&request(Model::Sora2, "a cat")).await.unwrap_err();
    assert!(
        matches!(error, ProviderError::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(2)),
        "{error:?}"
    );

    faults(FaultConfig {
        rate_5xx: 1.0,
        ..FaultConfig::default()
    });
    let error = client.status("sim-1").await.unwrap_err();
    assert!(
        matches!(&error, ProviderError::Transient(message) if message.starts_with("http 50")),
        "{error:?}"
    );

    faults(FaultConfig {
        malformed_rate: 1.0,
        ..FaultConfig::default()
    });
    for result in [
        client
            .create(&request(Model::Veo31Fast, "a dog"))
            .await
            .map(|_| ()),
        client.status("sim-1").await.map(|_| ()),
    ] {
        assert!(matches!(result, Err(ProviderError::Transient(_))), "{result:?}");
    }

    faults(FaultConfig {
        timeout_rate: 1.0,
        ..FaultConfig::default()
    });
    let error = client.create(&request(Model::Sora2, "a cat")).await.unwrap_err();
    assert!(
        matches!(&error, ProviderError::Transient(message) if message.starts_with("timed out")),
        "{error:?}"
    );

    let stats = sim.stats();
    assert!(stats.tasks.is_empty(), "a faulted create created a task");
    assert_eq!(
        (
            stats.rate_limited,
            stats.server_errors,
            stats.malformed,
            stats.timeouts
        ),
        (1, 1, 2, 1)
    );
}
