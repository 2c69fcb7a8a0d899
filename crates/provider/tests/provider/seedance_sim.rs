//! The Seedance client against the provider simulator over real HTTP, one simulator per test on port 0.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use gantry_provider::{
    CreateRequest, FailureCode, Model, Provider, ProviderError, RemoteStatus, SeedanceClient, SeedanceConfig,
};
use gantry_sim::{SimConfig, SimHandle};
use secrecy::SecretString;

use crate::support::wait_for_end;

const MODEL: &str = "seedance-1-0-pro-250528";

async fn start_sim(task_duration_ms: u64) -> SimHandle {
    gantry_sim::spawn(SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        task_duration_ms,
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

fn client(sim: &SimHandle, key: &str) -> SeedanceClient {
    SeedanceClient::new(SeedanceConfig {
        base_url: sim.base_url(),
        api_key: SecretString::from(key),
        timeout: Duration::from_secs(5),
        h2c: false,
        model: MODEL.to_owned(),
    })
    .unwrap()
}

fn request(prompt: &str, first_frame_url: Option<&str>) -> CreateRequest {
    CreateRequest {
        model: Model::Veo31Fast,
        prompt: prompt.to_owned(),
        aspect_ratio: "16:9".to_owned(),
        duration: None,
        reference_image_urls: vec!["http://img/ignored.png".to_owned()],
        first_frame_url: first_frame_url.map(str::to_owned),
        last_frame_url: None,
        webhook_url: None,
    }
}

#[tokio::test]
async fn task_succeeds_with_its_last_frame_and_keeps_the_first_frame() {
    let sim = start_sim(50).await;
    let client = client(&sim, sim.api_key());
    assert_eq!(client.name(), gantry_provider::ProviderName::Seedance);
    let id = client
        .create(&request("a lighthouse at dusk", Some("http://img/first.png")))
        .await
        .unwrap();
    let end = wait_for_end(&client, &id).await;
    let base = sim.base_url();
    assert_eq!(
        end,
        RemoteStatus::Succeeded {
            video_url: format!("{base}/videos/{id}.mp4"),
            last_frame_url: Some(format!("{base}/frames/{id}-last.jpg")),
        }
    );
    let task = &sim.stats().tasks[0];
    assert_eq!(task.provider, "seedance");
    assert_eq!(task.model, MODEL);
    assert_eq!(task.prompt, "a lighthouse at dusk --ratio 16:9 --duration 5");
    assert_eq!(task.first_frame_url.as_deref(), Some("http://img/first.png"));
}

#[tokio::test]
async fn a_running_task_can_be_cancelled() {
    let sim = start_sim(10_000).await;
    let client = client(&sim, sim.api_key());
    let id = client.create(&request("a long take", None)).await.unwrap();
    assert!(matches!(
        client.status(&id).await.unwrap(),
        RemoteStatus::Running { .. }
    ));
    assert!(client.cancel(&id).await.unwrap());
    assert_eq!(
        client.status(&id).await.unwrap(),
        RemoteStatus::Failed {
            code: FailureCode::ProviderError,
            message: "cancelled at the provider".to_owned()
        }
    );
    assert!(sim.stats().tasks[0].cancelled);
    let error = client.cancel("cgt-unknown").await.unwrap_err();
    assert!(
        matches!(error, ProviderError::Rejected { status: 404, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn forced_failures_map_to_failure_codes() {
    let sim = start_sim(30).await;
    let client = client(&sim, sim.api_key());
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
        let id = client.create(&request(prompt, None)).await.unwrap();
        assert_eq!(
            wait_for_end(&client, &id).await,
            RemoteStatus::Failed {
                code,
                message: message.to_owned()
            }
        );
    }
}

#[tokio::test]
async fn rejections_are_permanent() {
    let sim = start_sim(30).await;
    let client = client(&sim, sim.api_key());
    let error = client.create(&request("x [sim:reject]", None)).await.unwrap_err();
    assert!(
        matches!(&error, ProviderError::Rejected { status: 400, message }
            if message == "InvalidParameter: simulated rejection"),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    // Seedance takes at most 12 seconds.
    let mut long = request("too long", None);
    long.duration = Some(15);
    assert!(matches!(
        client.create(&long).await,
        Err(ProviderError::Rejected { status: 400, .. })
    ));
    let error = client.status("cgt-unknown").await.unwrap_err();
    assert!(
        matches!(error, ProviderError::Rejected { status: 404, .. }),
        "{error:?}"
    );

    let wrong = self::client(&sim, "not-the-key");
    let error = wrong.create(&request("a cat", None)).await.unwrap_err();
    assert!(
        matches!(error, ProviderError::Rejected { status: 401, .. }),
        "{error:?}"
    );
    assert!(sim.stats().tasks.is_empty());
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_classified() {
    let sim = start_sim(30).await;
    let client = client(&sim, sim.api_key());
    sim.set_faults(gantry_sim::FaultConfig {
        rate_429: 1.0,
        retry_after_secs: Some(4),
        ..gantry_sim::FaultConfig::default()
    })
    .unwrap();
    let error = client.create(&request("a cat", None)).await.unwrap_err();
    assert!(
        matches!(error, ProviderError::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(4)),
        "{error:?}"
    );
    sim.set_faults(gantry_sim::FaultConfig {
        rate_5xx: 1.0,
        ..gantry_sim::FaultConfig::default()
    })
    .unwrap();
    let error = client.status("cgt-1").await.unwrap_err();
    assert!(
        error.is_retryable() && matches!(error, ProviderError::Transient(_)),
        "{error:?}"
    );
    assert!(sim.stats().tasks.is_empty());
}
