//! The REST contract: validation with pointers, auth, tenant isolation, limits, lists, the live event stream.

use std::time::Duration;

use gantry_core::store::Connection;
use gantry_testkit::wait_for;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{veo, TestApp, ADMIN_TOKEN};

fn pointers(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_batches_get_422_with_every_pointer_and_create_nothing() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant(1000).await;
    let cases = [
        (json!({}), vec!["/tasks"]),
        (json!({"tasks": []}), vec!["/tasks"]),
        (json!({"mode": "serial", "tasks": [veo("a")]}), vec!["/mode"]),
        (
            json!({"tasks": [veo("a")], "metadata": {"k": 1}}),
            vec!["/metadata/k"],
        ),
        (
            json!({"tasks": [
                {"model": "sora-2", "prompt": "p", "aspect_ratio": "1:1", "duration": 12,
                 "reference_image_urls": ["https://a.test/1", "https://a.test/2"], "first_frame_url": "https://a.test/f"},
                {"model": "veo3.1-fast", "prompt": "", "aspect_ratio": "16:9", "duration": 10, "last_frame_url": "not a url"},
                {"model": "midjourney", "prompt": "p", "aspect_ratio": "16:9"},
                {"model": "veo-pro", "aspect_ratio": "16:9", "reference_image_urls": ["https://a.test/1", "https://a.test/2", "https://a.test/3", "https://a.test/4"]},
                {"model": "sora-2", "prompt": "x".repeat(4001), "aspect_ratio": "9:16"},
            ]}),
            vec![
                "/tasks/0/aspect_ratio",
                "/tasks/0/duration",
                "/tasks/0/reference_image_urls",
                "/tasks/0/first_frame_url",
                "/tasks/1/prompt",
                "/tasks/1/duration",
                "/tasks/1/last_frame_url",
                "/tasks/2/model",
                "/tasks/3/prompt",
                "/tasks/3/reference_image_urls",
                "/tasks/4/prompt",
                "/tasks/4/duration",
            ],
        ),
    ];
    for (body, expected) in cases {
        let (status, problem) = app.post_batch(&key, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body} → {problem}");
        assert_eq!(problem["code"], "invalid_request");
        assert_eq!(problem["status"], 422);
        assert!(problem["trace_id"].as_str().is_some_and(|t| t.len() == 32));
        let mut got = pointers(&problem);
        let mut expected: Vec<String> = expected.into_iter().map(String::from).collect();
        got.sort();
        expected.sort();
        assert_eq!(got, expected, "{problem}");
    }
    // More tasks than the limit (100 by default).
    let (status, problem) = app.post_batch(&key, &json!({"tasks": vec![veo("a"); 101]})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(pointers(&problem), ["/tasks"]);

    let credits = app.credits(&key).await;
    assert_eq!(
        (credits["balance"].as_i64(), credits["frozen"].as_i64()),
        (Some(1000), Some(0))
    );
    assert_eq!(app.get(&key, "/v1/batches").await.1["data"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_bodies_are_400_and_413() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant(100).await;
    let url = format!("{}/v1/batches", app.base);
    let (status, problem) = app
        .send(
            app.http
                .post(&url)
                .bearer_auth(&key)
                .header("content-type", "application/json")
                .body("{\"tasks\": ["),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem["code"], "invalid_request");
    let huge = format!("{{\"tasks\": [], \"pad\": \"{}\"}}", "x".repeat(1024 * 1024 + 1));
    let (status, problem) = app.send(app.http.post(&url).bearer_auth(&key).body(huge)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(problem["code"], "payload_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_required_and_tenants_see_only_their_own() {
    let app = TestApp::start().await;
    let (_, alice) = app.tenant(100).await;
    let (_, bob) = app.tenant(100).await;
    let batch_id = app.submit(&alice, &json!({"tasks": [veo("mine")]})).await;
    let task_id = app.tasks(&alice, &batch_id).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // No key, a wrong key: 401 with the problem format and a trace id header.
    let response = app
        .http
        .get(format!("{}/v1/batches/{batch_id}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key("x-trace-id"));
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let (status, problem) = app.get("gk_wrong", "/v1/credits").await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    // The old web app's header works too.
    let (status, _) = app
        .send(
            app.http
                .get(format!("{}/v1/credits", app.base))
                .header("x-api-key", &alice),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // Another tenant's batch and task look exactly like missing ones.
    for path in [
        format!("/v1/batches/{batch_id}"),
        format!("/v1/batches/{batch_id}/tasks"),
        format!("/v1/batches/{batch_id}/events"),
        format!("/v1/tasks/{task_id}"),
        "/v1/batches/bat_00000000000000000000000000000000".to_owned(),
        "/v1/tasks/nonsense".to_owned(),
    ] {
        let (status, problem) = app.get(&bob, &path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(problem["code"], "not_found");
    }
    assert_eq!(app.get(&bob, "/v1/batches").await.1["data"], json!([]));
    assert_eq!(
        app.get(&alice, &format!("/v1/tasks/{task_id}")).await.0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_needs_its_token_and_grants_credits() {
    let app = TestApp::start().await;
    let url = format!("{}/admin/v1/tenants", app.admin_base);
    let (status, _) = app
        .send(
            app.http
                .post(&url)
                .bearer_auth("nope")
                .json(&json!({"name": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, problem) = app
        .send(
            app.http
                .post(&url)
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({"credits": -1})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(pointers(&problem), ["/name", "/credits"]);

    let (tenant, key) = app.tenant(5).await;
    let grant = format!("{}/admin/v1/tenants/{tenant}/credits", app.admin_base);
    let (status, body) = app
        .send(
            app.http
                .post(&grant)
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({"amount": 45, "reason": "promo"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["balance"], 50);
    assert_eq!(app.credits(&key).await["balance"], 50);
    let missing = format!(
        "{}/admin/v1/tenants/ten_00000000000000000000000000000000/credits",
        app.admin_base
    );
    let (status, _) = app
        .send(
            app.http
                .post(&missing)
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({"amount": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_newest_first_and_by_index() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant(1000).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            app.submit(&key, &json!({"tasks": [veo("a"), veo("b"), veo("c")]}))
                .await,
        );
    }
    let (_, page) = app.get(&key, "/v1/batches?limit=2").await;
    assert_eq!(page["object"], "list");
    let got: Vec<_> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].clone())
        .collect();
    assert_eq!(got, [json!(ids[2]), json!(ids[1])]);
    assert_eq!(page["has_more"], true);
    assert_eq!(page["last_id"], json!(ids[1]));
    let (_, rest) = app
        .get(&key, &format!("/v1/batches?limit=2&after={}", ids[1]))
        .await;
    assert_eq!(rest["data"].as_array().unwrap().len(), 1);
    assert_eq!(rest["has_more"], false);

    let (_, tasks) = app
        .get(&key, &format!("/v1/batches/{}/tasks?limit=2", ids[0]))
        .await;
    let indexes: Vec<_> = tasks["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["index"].clone())
        .collect();
    assert_eq!(indexes, [json!(0), json!(1)]);
    let after = tasks["last_id"].as_str().unwrap();
    let (_, tail) = app
        .get(&key, &format!("/v1/batches/{}/tasks?after={after}", ids[0]))
        .await;
    assert_eq!(tail["data"][0]["index"], 2);

    app.wait_final(&key, &ids[0]).await;
    let (_, done) = app
        .get(&key, &format!("/v1/batches/{}/tasks?status=succeeded", ids[0]))
        .await;
    assert_eq!(done["data"].as_array().unwrap().len(), 3);
    let (status, _) = app.get(&key, "/v1/batches?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app
        .get(&key, &format!("/v1/batches/{}/tasks?status=lost", ids[0]))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// Reads a whole SSE response into (id, event, data) triples.
pub(crate) async fn read_events(
    app: &TestApp,
    key: &str,
    batch_id: &str,
    last_id: Option<&str>,
) -> Vec<(String, String, Value)> {
    let mut request = app
        .http
        .get(format!("{}/v1/batches/{batch_id}/events", app.base))
        .bearer_auth(key);
    if let Some(last) = last_id {
        request = request.header("last-event-id", last);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let body = tokio::time::timeout(Duration::from_secs(60), response.text())
        .await
        .unwrap()
        .unwrap();
    body.split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}:")).map(|v| v.trim().to_owned()))
            };
            Some((
                field("id")?,
                field("event")?,
                serde_json::from_str(&field("data")?).ok()?,
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_follows_a_batch_to_the_end_and_resumes() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant(100).await;
    let batch_id = app
        .submit(&key, &json!({"tasks": [veo("a"), veo("b [sim:fail]")]}))
        .await;
    // Opened while the batch runs: the response ends by itself after the final batch.updated.
    let events = read_events(&app, &key, &batch_id, None).await;
    let last = events.last().unwrap();
    assert_eq!(last.1, "batch.updated");
    assert_eq!(last.2["status"], "completed");
    assert!(events
        .iter()
        .any(|(_, kind, data)| kind == "task.updated" && data["status"] == "succeeded"));
    assert!(events
        .iter()
        .any(|(_, kind, data)| kind == "task.updated" && data["status"] == "failed"));
    let ids: Vec<_> = events.iter().map(|(id, _, _)| id.clone()).collect();
    let mut sorted = ids.clone();
    sorted.sort_by_key(|id| {
        let (ms, seq) = id.split_once('-').unwrap();
        (ms.parse::<u64>().unwrap(), seq.parse::<u64>().unwrap())
    });
    assert_eq!(ids, sorted, "ids increase");

    // A reconnect with Last-Event-ID gets exactly what followed.
    let resumed = read_events(&app, &key, &batch_id, Some(&events[2].0)).await;
    assert_eq!(resumed, events[3..].to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_and_trace_ids() {
    let app = TestApp::start().await;
    let response = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = app
        .http
        .get(format!("{}/readyz", app.base))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["x-trace-id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_shows_every_credit_movement_of_the_caller() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant(100).await;
    let (_, other) = app.tenant(7).await;
    let batch_id = app
        .submit(&key, &json!({"tasks": [veo("a"), veo("b [sim:fail]")]}))
        .await;
    app.wait_final(&key, &batch_id).await;

    let (status, page) = app.get(&key, "/v1/credits/ledger").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let moves: Vec<_> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].clone(), e["amount"].clone()))
        .collect();
    assert_eq!(
        moves,
        [
            (json!("refund"), json!(8)),
            (json!("charge"), json!(8)),
            (json!("freeze"), json!(16)),
            (json!("grant"), json!(100))
        ]
    );
    assert_eq!(page["data"][0]["balance"], 92);
    assert_eq!(page["data"][0]["object"], "ledger_entry");

    let (_, of_batch) = app
        .get(&key, &format!("/v1/credits/ledger?batch_id={batch_id}&limit=2"))
        .await;
    assert_eq!(of_batch["data"].as_array().unwrap().len(), 2);
    assert_eq!(of_batch["has_more"], true);
    let after = of_batch["last_id"].as_str().unwrap();
    let (_, rest) = app
        .get(
            &key,
            &format!("/v1/credits/ledger?batch_id={batch_id}&after={after}"),
        )
        .await;
    assert_eq!(rest["data"][0]["kind"], "freeze");
    assert_eq!(rest["has_more"], false);

    let (_, theirs) = app.get(&other, "/v1/credits/ledger").await;
    assert_eq!(
        theirs["data"].as_array().unwrap().len(),
        1,
        "only the other tenant's own grant"
    );
    assert_eq!(
        app.get(&key, "/v1/credits/ledger?after=nonsense").await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_task_list_is_one_small_error_and_keeps_a_small_answer() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant(100).await;
    // Just under the 1 MiB body limit: about 349,000 empty tasks.
    let items = (app.stack.config.gateway.max_body_bytes - 64) / 3;
    let body = format!("{{\"tasks\":[{}{{}}]}}", "{},".repeat(items - 1));
    let response = app
        .http
        .post(format!("{}/v1/batches", app.base))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .header("idempotency-key", "huge-1")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let text = response.text().await.unwrap();
    assert!(text.len() < 2048, "a {} byte answer", text.len());
    let problem: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(pointers(&problem), ["/tasks"]);
    // The answer kept for replay is as small as the one sent.
    let mut redis = app.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*idem*")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let kept: usize = redis::cmd("HSTRLEN")
        .arg(&keys[0])
        .arg("body")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(kept > 0 && kept < 2048, "{kept} bytes kept");
    assert_eq!(app.credits(&key).await["frozen"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_many_violations_lists_fifty_and_counts_the_rest() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant(100).await;
    let task = json!({ "model": "nope", "prompt": 7, "extra": true });
    let (status, problem) = app.post_batch(&key, &json!({ "tasks": vec![task; 100] })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let errors = problem["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 51, "{problem}");
    let last = errors.last().unwrap();
    assert_eq!(last["pointer"], "");
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .contains("more violations not listed"),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_out_of_range_are_400_or_an_empty_page_never_500() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant(100).await;
    let batch_id = app.submit(&key, &json!({ "tasks": [veo("a")] })).await;

    // Digits past 64 bits are no ledger id: 400, not a Redis error.
    let (status, problem) = app
        .get(&key, "/v1/credits/ledger?after=99999999999999999999999-0")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert_eq!(problem["code"], "invalid_request");
    // Nothing comes before the very first id.
    let (status, page) = app.get(&key, "/v1/credits/ledger?after=0-0").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["data"], json!([]));
    // The largest id is fine too: everything is before it.
    let (status, page) = app
        .get(
            &key,
            &format!("/v1/credits/ledger?after={}-{}", u64::MAX, u64::MAX),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(!page["data"].as_array().unwrap().is_empty(), "{page}");

    // A task cursor at the largest index: an empty page, not an overflow.
    let last = format!("tsk_{}_{}", batch_id.trim_start_matches("bat_"), usize::MAX);
    let (status, page) = app
        .get(&key, &format!("/v1/batches/{batch_id}/tasks?after={last}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["data"], json!([]));
    assert_eq!(page["has_more"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_amounts_stay_exact_or_are_refused_never_500() {
    let app = TestApp::start().await;
    let (tenant, key) = app.tenant(0).await;
    let grant = |amount: Value| {
        app.send(
            app.http
                .post(format!("{}/admin/v1/tenants/{tenant}/credits", app.admin_base))
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({ "amount": amount })),
        )
    };
    // Past what Lua's doubles hold exactly: refused up front.
    let (status, problem) = grant(json!((1u64 << 53) + 1)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(pointers(&problem), ["/amount"]);
    let (status, problem) = grant(json!(u64::MAX)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    // The largest grant lands to the credit.
    let (status, body) = grant(json!(1_000_000_000_000u64)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["balance"], 1_000_000_000_000u64);
    assert_eq!(app.credits(&key).await["balance"], 1_000_000_000_000u64);
    // A tenant about to pass 2^53 - 1 credits granted in all is refused, and nothing changes.
    let mut redis = app.connection().await;
    let tenant_key = gantry_core::keys::Keys::new("gantry", 1).tenant(&tenant);
    let _: () = redis::cmd("HSET")
        .arg(&tenant_key)
        .arg("granted")
        .arg((1u64 << 53) - 10)
        .query_async(&mut redis)
        .await
        .unwrap();
    let (status, problem) = grant(json!(11)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(app.credits(&key).await["balance"], 1_000_000_000_000u64);

    let (status, problem) = app
        .send(
            app.http
                .post(format!("{}/admin/v1/tenants", app.admin_base))
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({ "name": "big", "credits": 1u64 << 60 })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(pointers(&problem), ["/credits"]);
}

/// How many times Redis has run `command` so far.
async fn command_calls(redis: &mut Connection, command: &str) -> u64 {
    crate::common::command_calls(redis)
        .await
        .get(command)
        .copied()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_filter_reads_the_batch_entries_not_the_whole_ledger() {
    let app = TestApp::start().await;
    let (tenant, key) = app.tenant(100).await;
    let batch_id = app.submit(&key, &json!({ "tasks": [veo("a")] })).await;
    app.wait_final(&key, &batch_id).await;
    // A long ledger after the batch's entries.
    for _ in 0..300 {
        let (status, _) = app
            .send(
                app.http
                    .post(format!("{}/admin/v1/tenants/{tenant}/credits", app.admin_base))
                    .bearer_auth(ADMIN_TOKEN)
                    .json(&json!({ "amount": 1 })),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let mut redis = app.connection().await;
    let scans = command_calls(&mut redis, "xrevrange").await;

    let (status, page) = app
        .get(&key, &format!("/v1/credits/ledger?batch_id={batch_id}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let kinds: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["refund", "charge", "freeze"]);
    let (_, page) = app
        .get(
            &key,
            "/v1/credits/ledger?batch_id=bat_00000000000000000000000000000000",
        )
        .await;
    assert_eq!(page["data"], json!([]));
    assert_eq!(
        command_calls(&mut redis, "xrevrange").await,
        scans,
        "no scan of the ledger"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_request_rate_is_limited_across_gateways() {
    // A slow refill, so the burst alone decides what passes during the test.
    let app = TestApp::start_with(|c| {
        c.gateway.tenant_rate_per_sec = 0.01;
        c.gateway.tenant_burst = 5;
    })
    .await;
    // A second gateway on the same Redis (the stack's config binds port 0).
    let config = app.stack.config.clone();
    let listeners = gantry_gateway::Listeners::bind(&config).await.unwrap();
    let second = format!("http://{}", listeners.public.local_addr().unwrap());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let stop = shutdown.clone();
    let serving = tokio::spawn(async move { gantry_gateway::run(&config, listeners, stop).await });
    let (_, key) = app.tenant(10).await;
    let (_, other) = app.tenant(10).await;

    let mut statuses = Vec::new();
    let mut limited = None;
    for i in 0..8 {
        let base = if i % 2 == 0 { &app.base } else { &second };
        let response = app
            .http
            .get(format!("{base}/v1/credits"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == StatusCode::TOO_MANY_REQUESTS && limited.is_none() {
            limited = Some(response);
        }
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 429, 429, 429],
        "five in all, whichever gateway"
    );
    let limited = limited.unwrap();
    let header = |name: &str| limited.headers()[name].to_str().unwrap().to_owned();
    assert!(header("retry-after").parse::<u64>().unwrap() >= 1);
    assert_eq!(header("ratelimit-limit"), "5");
    assert_eq!(header("ratelimit-remaining"), "0");
    let problem: Value = limited.json().await.unwrap();
    assert_eq!(problem["code"], "rate_limited");
    assert_eq!(problem["status"], 429);
    // Another tenant has a budget of its own.
    assert_eq!(app.get(&other, "/v1/credits").await.0, StatusCode::OK);

    shutdown.cancel();
    serving.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_too_slow_to_send_its_headers_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = TestApp::start_with(|c| c.gateway.header_read_timeout_ms = 300).await;
    let mut slow = tokio::net::TcpStream::connect(app.stack.gateway_addr)
        .await
        .unwrap();
    // Headers that never end.
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: gantry\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection is still open after 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_at_its_request_limit_sheds_load_and_slow_requests_time_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = TestApp::start_with(|c| {
        c.gateway.max_concurrent_requests = 1;
        c.gateway.request_timeout_ms = 1000;
    })
    .await;
    let (_, key) = app.tenant(10).await;
    // One request holds the only slot: its body comes slowly.
    let mut slow = tokio::net::TcpStream::connect(app.stack.gateway_addr)
        .await
        .unwrap();
    let head = format!(
        "POST /v1/batches HTTP/1.1\r\nHost: gantry\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"tasks\""
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    // Meanwhile others are answered 503 at once.
    let shed = wait_for("a request to be shed", Duration::from_secs(5), || async {
        let (status, problem) = app.get(&key, "/v1/credits").await;
        Ok((status == StatusCode::SERVICE_UNAVAILABLE).then_some(problem))
    })
    .await
    .unwrap();
    assert_eq!(shed["code"], "unavailable", "{shed}");
    // The slow request is answered 503 once its time is up, and the slot is free again.
    let mut answer = vec![0; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut answer))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    wait_for("the slot to free up", Duration::from_secs(5), || async {
        Ok((app.get(&key, "/v1/credits").await.0 == StatusCode::OK).then_some(()))
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_and_metrics_listen_apart_from_the_public_api() {
    let app = TestApp::start().await;
    let http = app.http.clone();
    let get = |url: String| {
        let http = http.clone();
        async move { http.get(url).send().await.unwrap().status() }
    };
    assert_eq!(get(format!("{}/metrics", app.base)).await, StatusCode::NOT_FOUND);
    assert_eq!(get(format!("{}/metrics", app.admin_base)).await, StatusCode::OK);
    let create = |base: &str| {
        app.http
            .post(format!("{base}/admin/v1/tenants"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "name": "acme", "credits": 1 }))
            .send()
    };
    assert_eq!(create(&app.base).await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(
        create(&app.admin_base).await.unwrap().status(),
        StatusCode::CREATED
    );
    // And the tenant API is not on the admin listener.
    let (_, key) = app.tenant(1).await;
    let on_admin = app
        .http
        .get(format!("{}/v1/credits", app.admin_base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(on_admin.status(), StatusCode::NOT_FOUND);
    assert_eq!(get(format!("{}/healthz", app.admin_base)).await, StatusCode::OK);
}

/// Redis's `connected_clients`, summed over a cluster's nodes.
async fn connected_clients(redis: &mut Connection) -> u64 {
    let sections = crate::common::info_sections(redis, "clients").await;
    sections
        .iter()
        .map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("connected_clients:"))
                .map(|n| n.trim().parse::<u64>().unwrap())
                .unwrap()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_capped_per_tenant_and_cost_no_redis_connection_each() {
    let app = TestApp::start().await;
    let max = app.stack.config.gateway.sse_max_per_tenant;
    let (_, key) = app.tenant(100).await;
    let batch_id = app
        .submit(&key, &json!({ "tasks": [veo("endless [sim:never]")] }))
        .await;
    let url = format!("{}/v1/batches/{batch_id}/events", app.base);
    let open = || app.http.get(&url).bearer_auth(&key).send();
    // One stream first, read up to its first event, so the gateway's event hub has its connection (the answer's
    // head comes before the hub's first read).
    let mut first = open().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert!(first.chunk().await.unwrap().is_some(), "the first event");
    let mut redis = app.connection().await;
    let before = connected_clients(&mut redis).await;

    let responses: Vec<reqwest::Response> = futures::future::join_all((1..500).map(|_| open()))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let served = responses.iter().filter(|r| r.status() == StatusCode::OK).count();
    let refused: Vec<_> = responses
        .iter()
        .filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(1 + served, max, "streams served");
    assert_eq!(1 + served + refused.len(), 500, "every other one is 429");
    assert_eq!(refused[0].headers()["retry-after"], "1");
    let during = connected_clients(&mut redis).await;
    assert_eq!(during, before, "Redis connections with {max} streams open");

    // Closing streams gives the slots back.
    drop(responses);
    drop(first);
    wait_for("a slot to free up", Duration::from_secs(10), || async {
        Ok((open().await?.status() == StatusCode::OK).then_some(()))
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_holds_several_keys_that_expire_show_their_last_use_and_revoke_at_once() {
    let app = TestApp::start().await;
    let (tenant, first) = app.tenant(10).await;
    let keys_url = format!("{}/admin/v1/tenants/{tenant}/keys", app.admin_base);
    let issue = |body: Value| app.send(app.http.post(&keys_url).bearer_auth(ADMIN_TOKEN).json(&body));
    let (status, second) = issue(json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let (status, short) = issue(json!({ "expires_in_secs": 1 })).await;
    assert_eq!(status, StatusCode::CREATED, "{short}");
    assert!(short["expires_at"].is_string(), "{short}");
    let (status, problem) = issue(json!({ "expires_in_secs": 0 })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");

    // Every key works, for the same tenant.
    let second_key = second["api_key"].as_str().unwrap().to_owned();
    for key in [&first, &second_key] {
        assert_eq!(app.get(key, "/v1/credits").await.0, StatusCode::OK);
    }
    // The list shows each key's last use, never the key.
    let (_, list) = app.send(app.http.get(&keys_url).bearer_auth(ADMIN_TOKEN)).await;
    let keys = list["data"].as_array().unwrap();
    assert_eq!(keys.len(), 3, "{list}");
    assert!(keys.iter().all(|k| k.get("api_key").is_none()), "{list}");
    let used = keys.iter().find(|k| k["id"] == second["id"]).unwrap();
    assert!(used["last_used_at"].is_string(), "{list}");

    // Revoked: refused at once.
    let revoke = format!("{keys_url}/{}", second["id"].as_str().unwrap());
    let revoked = app
        .http
        .delete(&revoke)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&second_key, "/v1/credits").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.get(&first, "/v1/credits").await.0, StatusCode::OK);
    let again = app
        .http
        .delete(&revoke)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);

    // Expired: refused once its time is up.
    let short_key = short["api_key"].as_str().unwrap().to_owned();
    wait_for("the short key to expire", Duration::from_secs(10), || async {
        Ok((app.get(&short_key, "/v1/credits").await.0 == StatusCode::UNAUTHORIZED).then_some(()))
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_string_that_does_not_parse_is_a_400_problem() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant(1).await;
    let response = app
        .http
        .get(format!("{}/v1/batches?limit=1&limit=2", app.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "invalid_request");
}
