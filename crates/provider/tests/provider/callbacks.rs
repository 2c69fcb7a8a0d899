//! Callbacks from the simulator, read with the crate's parsers: what arrives maps exactly like a status answer.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use axum::{body::Bytes, extract::State, routing::post, Router};
use gantry_provider::{
    parse_grsai_callback, parse_seedance_callback, CreateRequest, GrsaiClient, GrsaiConfig, Model, Provider,
    RemoteStatus, SeedanceClient, SeedanceConfig,
};
use gantry_sim::{SimConfig, SimHandle};
use secrecy::SecretString;
use tokio::{net::TcpListener, sync::mpsc};

const DEADLINE: Duration = Duration::from_secs(10);

/// A receiver on port 0 that hands every body it is sent to the test.
async fn receiver() -> (String, mpsc::UnboundedReceiver<Bytes>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (sender, bodies) = mpsc::unbounded_channel();
    let app = Router::new()
        .route(
            "/hook",
            post(
                |State(sender): State<mpsc::UnboundedSender<Bytes>>, body: Bytes| async move {
                    let _ = sender.send(body);
                },
            ),
        )
        .with_state(sender);
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, bodies)
}

async fn next(bodies: &mut mpsc::UnboundedReceiver<Bytes>) -> Bytes {
    tokio::time::timeout(DEADLINE, bodies.recv())
        .await
        .expect("a callback in time")
        .expect("the receiver is alive")
}

async fn start_sim() -> SimHandle {
    gantry_sim::spawn(SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        // Long enough that the mid-way callback still finds the task running on a busy machine.
        task_duration_ms: 600,
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

fn request(prompt: &str, webhook_url: &str) -> CreateRequest {
    CreateRequest {
        model: Model::Veo31Fast,
        prompt: prompt.to_owned(),
        aspect_ratio: "9:16".to_owned(),
        duration: None,
        reference_image_urls: Vec::new(),
        first_frame_url: None,
        last_frame_url: None,
        webhook_url: Some(webhook_url.to_owned()),
    }
}

#[tokio::test]
async fn grsai_callbacks_parse_into_progress_then_the_end() {
    let sim = start_sim().await;
    let (url, mut bodies) = receiver().await;
    let client = GrsaiClient::new(GrsaiConfig {
        base_url: sim.base_url(),
        api_key: SecretString::from(sim.api_key()),
        timeout: Duration::from_secs(5),
        h2c: false,
    })
    .unwrap();
    let id = client.create(&request("hooked", &url)).await.unwrap();

    let (remote_id, status) = parse_grsai_callback(&next(&mut bodies).await).unwrap();
    assert_eq!(remote_id, id);
    assert!(matches!(status, RemoteStatus::Running { .. }), "{status:?}");
    let (remote_id, status) = parse_grsai_callback(&next(&mut bodies).await).unwrap();
    assert_eq!(remote_id, id);
    assert_eq!(status, client.status(&id).await.unwrap());
    assert!(matches!(
        status,
        RemoteStatus::Succeeded {
            last_frame_url: Some(_),
            ..
        }
    ));
}

#[tokio::test]
async fn seedance_callbacks_parse_like_status_answers() {
    let sim = start_sim().await;
    let (url, mut bodies) = receiver().await;
    let client = SeedanceClient::new(SeedanceConfig {
        base_url: sim.base_url(),
        api_key: SecretString::from(sim.api_key()),
        timeout: Duration::from_secs(5),
        h2c: false,
        model: "seedance-1-0-pro-250528".to_owned(),
    })
    .unwrap();
    let id = client
        .create(&request("hooked [sim:moderation]", &url))
        .await
        .unwrap();

    let (remote_id, status) = parse_seedance_callback(&next(&mut bodies).await).unwrap();
    assert_eq!(remote_id, id);
    assert_eq!(status, RemoteStatus::Running { progress: 50 });
    let (remote_id, status) = parse_seedance_callback(&next(&mut bodies).await).unwrap();
    assert_eq!(remote_id, id);
    assert_eq!(status, client.status(&id).await.unwrap());
    assert!(matches!(
        status,
        RemoteStatus::Failed {
            code: gantry_provider::FailureCode::InputModeration,
            ..
        }
    ));
}
