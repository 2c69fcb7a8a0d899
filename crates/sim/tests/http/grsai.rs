//! The Grsai API: creates, status calls, markers, stats and the server's life.

use gantry_sim::{SimConfig, SimStats};
use serde_json::{json, Value};
use tokio::{net::TcpListener, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::support::{config, now_ms, TestSim, DEADLINE, POLL_INTERVAL};

#[tokio::test]
async fn api_requires_the_bearer_key() {
    let sim = TestSim::start(config(50)).await;
    let url = format!("{}/v1/draw/result", sim.handle.base_url());
    for key in [None, Some("wrong")] {
        let mut request = sim.http.post(&url).json(&json!({ "id": "x" }));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, json!({ "code": -1, "msg": "unauthorized" }));
    }
    assert_eq!(sim.handle.stats().polls, 0);
}

#[tokio::test]
async fn sora_task_runs_to_success() {
    let sim = TestSim::start(config(100)).await;
    let id = sim.create_sora("a cat on a roof").await;
    let data = sim.poll_to_end(&id).await.pop().unwrap();
    let base = sim.handle.base_url();
    assert_eq!(data["status"], "succeeded");
    assert_eq!(data["progress"], 100);
    assert_eq!(data["results"][0]["url"], format!("{base}/videos/{id}.mp4"));
    assert_eq!(data["url"], format!("{base}/videos/{id}.mp4"));
    assert_eq!(data["last_frame_url"], format!("{base}/frames/{id}-last.jpg"));

    let video = sim
        .http
        .get(format!("{base}/videos/{id}.mp4"))
        .send()
        .await
        .unwrap();
    assert_eq!(video.status(), 200);
    let missing = sim
        .http
        .get(format!("{base}/videos/nope.mp4"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    let task = &sim.handle.stats().tasks[0];
    assert_eq!(task.model, "sora-2");
    assert_eq!(task.provider, "grsai");
    assert_eq!(task.first_frame_url.as_deref(), Some("http://img/first.png"));
    assert_eq!(task.last_frame_url, Some(format!("{base}/frames/{id}-last.jpg")));
    assert_eq!(task.finishes_at_ms - task.created_at_ms, 100);
    assert!(!task.cancelled);
}

#[tokio::test]
async fn veo_task_records_its_first_frame() {
    let sim = TestSim::start(config(20)).await;
    let body = json!({
        "model": "veo3.1-fast", "prompt": "a dog", "aspectRatio": "9:16", "firstFrameUrl": "http://img/f.png",
        "urls": ["http://img/r1.png"], "webHook": "-1", "shutProgress": true,
    });
    let (status, answer) = sim.post("/v1/video/veo", body).await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["data"]["id"].as_str().unwrap();
    assert_eq!(sim.poll_to_end(id).await.pop().unwrap()["status"], "succeeded");
    let task = &sim.handle.stats().tasks[0];
    assert_eq!(task.model, "veo3.1-fast");
    assert_eq!(task.first_frame_url.as_deref(), Some("http://img/f.png"));
}

#[tokio::test]
async fn invalid_creates_answer_400() {
    let sim = TestSim::start(config(20)).await;
    let sora = json!({ "model": "sora-2", "prompt": "p", "aspectRatio": "16:9", "duration": 10 });
    let mut bad = Vec::new();
    for (key, value) in [
        ("model", json!("veo3.1-fast")),
        ("prompt", json!("")),
        ("aspectRatio", json!("1:1")),
        ("duration", json!(5)),
    ] {
        let mut body = sora.clone();
        body[key] = value;
        bad.push(("/v1/video/sora-video", body));
    }
    bad.push((
        "/v1/video/veo",
        json!({ "model": "sora-2", "prompt": "p", "aspectRatio": "16:9" }),
    ));
    bad.push((
        "/v1/video/sora-video",
        json!({ "model": "sora-2", "prompt": "p [sim:reject]",
        "aspectRatio": "16:9", "duration": 15 }),
    ));
    for (path, body) in bad {
        let (status, answer) = sim.post(path, body.clone()).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert_eq!(answer["code"], -1);
        assert!(answer["msg"].as_str().is_some_and(|msg| !msg.is_empty()));
    }
    let stats = sim.handle.stats();
    assert_eq!(stats.creates, 6);
    assert!(stats.tasks.is_empty());
}

#[tokio::test]
async fn markers_force_outcomes() {
    let sim = TestSim::start(config(30)).await;
    let failed = sim.create_sora("x [sim:fail]").await;
    let moderated = sim.create_sora("x [sim:moderation]").await;
    let output = sim.create_sora("x [sim:output-moderation]").await;

    let data = sim.poll_to_end(&failed).await.pop().unwrap();
    assert_eq!(data["status"], "failed");
    assert_eq!(data["failure_reason"], "error");
    assert_eq!(data["error"], "simulated failure");
    let data = sim.poll_to_end(&moderated).await.pop().unwrap();
    assert_eq!(data["failure_reason"], "input_moderation");
    let data = sim.poll_to_end(&output).await.pop().unwrap();
    assert_eq!(data["failure_reason"], "output_moderation");
    assert!(data.get("last_frame_url").is_none());
}

#[tokio::test]
async fn never_marker_keeps_running_past_its_duration() {
    let sim = TestSim::start(config(30)).await;
    let id = sim.create_sora("x [sim:never]").await;
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
async fn progress_grows_while_running() {
    let sim = TestSim::start(config(400)).await;
    let id = sim.create_sora("slow").await;
    let seen = sim.poll_to_end(&id).await;
    let progress: Vec<u64> = seen
        .iter()
        .map(|data| data["progress"].as_u64().unwrap())
        .collect();
    assert!(progress.windows(2).all(|pair| pair[0] <= pair[1]), "{progress:?}");
    let mut running: Vec<u64> = seen
        .iter()
        .filter(|data| data["status"] == "running")
        .map(|data| data["progress"].as_u64().unwrap())
        .collect();
    running.dedup();
    assert!(running.len() >= 2, "progress never moved: {progress:?}");
    assert!(running.iter().all(|&p| p <= 99));
}

#[tokio::test]
async fn unknown_id_answers_code_minus_22() {
    let sim = TestSim::start(config(30)).await;
    let answer = sim.poll("sim-does-not-exist").await;
    assert_eq!(answer["code"], -22);
    assert_eq!(answer["msg"], "task not found");
}

#[tokio::test]
async fn stats_count_and_reset_clears() {
    let sim = TestSim::start(config(10_000)).await;
    let first = sim.create_sora("one").await;
    let second = sim.create_sora("two").await;
    sim.poll(&first).await;
    sim.poll(&first).await;
    sim.poll(&second).await;
    sim.poll("unknown").await;

    let stats = sim.handle.stats();
    assert_eq!((stats.creates, stats.polls), (2, 4));
    let ids: Vec<&str> = stats.tasks.iter().map(|task| task.id.as_str()).collect();
    assert_eq!(ids, [first.as_str(), second.as_str()]);
    assert_eq!(stats.tasks[0].polls, 2);
    assert_eq!(stats.tasks[1].polls, 1);
    assert_eq!(stats.max_concurrent_requests, 1);
    assert_eq!(stats.max_concurrent_polls_per_task, 1);

    let url = format!("{}/sim/stats", sim.handle.base_url());
    let served: SimStats = sim.http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(served, stats);

    let reset = format!("{}/sim/reset", sim.handle.base_url());
    assert!(sim.http.post(&reset).send().await.unwrap().status().is_success());
    assert_eq!(sim.handle.stats(), SimStats::default());
    assert_eq!(sim.poll(&first).await["code"], -22);
}

#[tokio::test]
async fn concurrent_polls_of_one_task_are_measured() {
    let sim = TestSim::start(SimConfig {
        poll_latency_ms: 300,
        ..config(10_000)
    })
    .await;
    let id = sim.create_sora("watched").await;
    let other = sim.create_sora("other").await;
    tokio::join!(sim.poll(&id), sim.poll(&id), sim.poll(&other));
    let stats = sim.handle.stats();
    assert_eq!(stats.max_concurrent_polls_per_task, 2);
    assert_eq!(stats.max_concurrent_requests, 3);
}

#[tokio::test]
async fn run_stops_when_cancelled() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(gantry_sim::run(config(10), listener, shutdown.clone()));
    shutdown.cancel();
    tokio::time::timeout(DEADLINE, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    let handle = gantry_sim::spawn(config(10)).await.unwrap();
    tokio::time::timeout(DEADLINE, handle.shutdown())
        .await
        .unwrap()
        .unwrap();
}
