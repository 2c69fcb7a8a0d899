//! `Idempotency-Key` on `POST /v1/batches` and the two cancels: replays, key reuse, races, kept 4xx, dropped
//! 5xx, and the take-over of a crashed first attempt, with the credits checked to the credit.

use gantry_core::{
    ids,
    model::now_ms,
    store::{IdempotencyBegin, IdempotentRequest, StoredAnswer},
    Store,
};
use reqwest::{header::HeaderMap, StatusCode};
use serde_json::{json, Value};

use crate::common::{veo, TestApp, ADMIN_TOKEN};

/// A veo3.1-fast task costs 8 credits by default.
const VEO_COST: i64 = 8;

/// An answer: status, headers, JSON body.
type Answer = (StatusCode, HeaderMap, Value);

async fn answer(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let text = response.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// `POST path` with the exact body bytes given and, when `idem` is set, an `Idempotency-Key`.
async fn post(app: &TestApp, api_key: &str, path: &str, idem: Option<&str>, body: &[u8]) -> Answer {
    let mut request = app
        .http
        .post(format!("{}{path}", app.base))
        .bearer_auth(api_key)
        .body(body.to_vec());
    if !body.is_empty() {
        request = request.header("content-type", "application/json");
    }
    if let Some(idem) = idem {
        request = request.header("idempotency-key", idem);
    }
    answer(request).await
}

fn batch_body(prompt: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"tasks": [veo(prompt)]})).unwrap()
}

fn replayed(headers: &HeaderMap) -> bool {
    headers.get("idempotent-replayed").is_some_and(|v| v == "true")
}

async fn store(app: &TestApp) -> Store {
    let config = &app.stack.config;
    Store::from_config(config).await.unwrap()
}

/// The caller's (balance, frozen).
async fn balance_and_frozen(app: &TestApp, key: &str) -> (i64, i64) {
    let credits = app.credits(key).await;
    (
        credits["balance"].as_i64().unwrap(),
        credits["frozen"].as_i64().unwrap(),
    )
}

/// How many `freeze` entries the caller's ledger holds for `batch_id`.
async fn freezes(app: &TestApp, key: &str, batch_id: &str) -> usize {
    let (status, page) = app
        .get(key, &format!("/v1/credits/ledger?batch_id={batch_id}&limit=100"))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "freeze")
        .count()
}

async fn batch_count(app: &TestApp, key: &str) -> usize {
    let (_, list) = app.get(key, "/v1/batches?limit=100").await;
    list["data"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_create_replays_the_first_answer_and_freezes_once() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant(100).await;
    let body = batch_body("harbour at dawn");

    let (status, first_headers, first) = post(&app, &key, "/v1/batches", Some("create-1"), &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert!(!replayed(&first_headers));
    let batch_id = first["id"].as_str().unwrap().to_owned();

    let (status, headers, again) = post(&app, &key, "/v1/batches", Some("create-1"), &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert!(replayed(&headers), "{headers:?}");
    assert_eq!(again, first, "the replay is the first answer, byte for byte");
    assert_eq!(headers["location"], format!("/v1/batches/{batch_id}"));
    assert_eq!(headers["location"], first_headers["location"]);
    assert_eq!(headers["content-type"], "application/json");

    assert_eq!(batch_count(&app, &key).await, 1);
    assert_eq!(freezes(&app, &key, &batch_id).await, 1);
    assert_eq!(balance_and_frozen(&app, &key).await, (100 - VEO_COST, VEO_COST));

    // The key is scoped per tenant: another tenant's same key is a request of its own.
    let (_, other) = app.tenant(100).await;
    let (status, _, theirs) = post(&app, &other, "/v1/batches", Some("create-1"), &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{theirs}");
    assert_ne!(theirs["id"], first["id"]);
    // A request without a key is never a replay.
    let (status, headers, fresh) = post(&app, &key, "/v1/batches", None, &body).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(!replayed(&headers));
    assert_ne!(fresh["id"], first["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_for_a_different_request_is_422_and_changes_nothing() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant(100).await;
    let (status, _, first) = post(&app, &key, "/v1/batches", Some("k"), &batch_body("one")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");

    let (status, headers, problem) = post(&app, &key, "/v1/batches", Some("k"), &batch_body("two")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["code"], "idempotency_key_reused");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert!(!replayed(&headers));
    // Same JSON, different bytes: still a different request.
    let respaced = serde_json::to_vec_pretty(&json!({"tasks": [veo("one")]})).unwrap();
    let (status, _, problem) = post(&app, &key, "/v1/batches", Some("k"), &respaced).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("idempotency_key_reused"))
    );

    assert_eq!(batch_count(&app, &key).await, 1);
    assert_eq!(balance_and_frozen(&app, &key).await, (100 - VEO_COST, VEO_COST));
    // The first request still replays.
    let (status, headers, again) = post(&app, &key, "/v1/batches", Some("k"), &batch_body("one")).await;
    assert_eq!(
        (status, again["id"].clone()),
        (StatusCode::ACCEPTED, first["id"].clone())
    );
    assert!(replayed(&headers));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_keys_are_400() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant(100).await;
    let body = batch_body("x");
    for bad in ["x".repeat(256), "two words".to_owned()] {
        let (status, _, problem) = post(&app, &key, "/v1/batches", Some(&bad), &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {problem}");
        assert_eq!(problem["code"], "invalid_request");
    }
    let (status, _, problem) = answer(
        app.http
            .post(format!("{}/v1/batches", app.base))
            .bearer_auth(&key)
            .header("idempotency-key", "a")
            .header("idempotency-key", "b")
            .body(body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    let longest = "k".repeat(255);
    let (status, _, _) = post(&app, &key, "/v1/batches", Some(&longest), &body).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(batch_count(&app, &key).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_identical_requests_at_once_create_one_batch() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant(1000).await;
    for round in 0..5 {
        let idem = format!("race-{round}");
        let body = batch_body(&format!("race {round}"));
        let (a, b) = tokio::join!(
            post(&app, &key, "/v1/batches", Some(&idem), &body),
            post(&app, &key, "/v1/batches", Some(&idem), &body),
        );
        let (ran, other) = if replayed(&a.1) || a.0 == StatusCode::CONFLICT {
            (b, a)
        } else {
            (a, b)
        };
        assert_eq!(ran.0, StatusCode::ACCEPTED, "{}", ran.2);
        assert!(!replayed(&ran.1));
        match other.0 {
            StatusCode::ACCEPTED => {
                assert!(replayed(&other.1), "two requests ran: {} and {}", ran.2, other.2);
                assert_eq!(other.2, ran.2);
            }
            StatusCode::CONFLICT => {
                assert_eq!(other.2["code"], "conflict");
                assert_eq!(other.1["retry-after"], "1");
            }
            status => panic!("unexpected {status}: {}", other.2),
        }
        assert_eq!(batch_count(&app, &key).await, round + 1);
    }
    assert_eq!(
        balance_and_frozen(&app, &key).await,
        (1000 - 5 * VEO_COST, 5 * VEO_COST)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_while_the_first_attempt_runs_is_409_with_retry_after() {
    let app = TestApp::start().await;
    let (tenant, key) = app.tenant(100).await;
    let body = batch_body("slow");
    // A first attempt that is still running: its record is pending with a live lease.
    let request = IdempotentRequest::new(&tenant, "POST", "/v1/batches", "busy", &body);
    let begin = store(&app)
        .await
        .idempotency_begin(&request, &ids::new_batch_id(), now_ms(), 60_000, 86_400_000)
        .await
        .unwrap();
    assert!(matches!(begin, IdempotencyBegin::Run(ref lease) if !lease.taken_over));

    let (status, headers, problem) = post(&app, &key, "/v1/batches", Some("busy"), &body).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["code"], "conflict");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(batch_count(&app, &key).await, 0);
    assert_eq!(balance_and_frozen(&app, &key).await, (100, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4xx_answer_is_kept_and_replayed() {
    let app = TestApp::start().await;
    let (tenant, key) = app.tenant(5).await;
    let body = batch_body("too dear");
    let (status, _, first) = post(&app, &key, "/v1/batches", Some("poor"), &body).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{first}");
    assert_eq!(first["code"], "insufficient_credits");

    // Even once the balance would cover it, the key answers what it answered.
    let (status, grant) = app
        .send(
            app.http
                .post(format!("{}/admin/v1/tenants/{tenant}/credits", app.admin_base))
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({"amount": 95})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{grant}");
    let (status, headers, again) = post(&app, &key, "/v1/batches", Some("poor"), &body).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    assert!(replayed(&headers));
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(again, first);
    assert_eq!(batch_count(&app, &key).await, 0);
    assert_eq!(balance_and_frozen(&app, &key).await, (100, 0));

    // A new key is a new request.
    let (status, headers, _) = post(&app, &key, "/v1/batches", Some("rich"), &body).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(!replayed(&headers));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_answer_is_not_kept_and_the_retry_runs_afresh() {
    let app = TestApp::start().await;
    let (tenant, key) = app.tenant(100).await;
    let tenant_key = gantry_core::keys::Keys::new(
        &app.stack.config.redis.key_prefix,
        app.stack.config.redis.partitions,
    )
    .tenant(&tenant);
    let mut redis = app.connection().await;
    // A damaged balance makes the reservation script fail: a 500 after the request began.
    let _: () = redis::cmd("HSET")
        .arg(&tenant_key)
        .arg("balance")
        .arg("damaged")
        .query_async(&mut redis)
        .await
        .unwrap();
    let body = batch_body("unlucky");
    let (status, _, problem) = post(&app, &key, "/v1/batches", Some("flaky"), &body).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{problem}");

    let _: () = redis::cmd("HSET")
        .arg(&tenant_key)
        .arg("balance")
        .arg(100)
        .query_async(&mut redis)
        .await
        .unwrap();
    let (status, headers, batch) = post(&app, &key, "/v1/batches", Some("flaky"), &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{batch}");
    assert!(!replayed(&headers), "the 500 was not kept; the retry ran");
    assert_eq!(balance_and_frozen(&app, &key).await, (100 - VEO_COST, VEO_COST));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_takes_over_a_crashed_first_attempt_and_reuses_its_batch_id() {
    let app = TestApp::start().await;
    let (tenant, key) = app.tenant(100).await;
    let store = store(&app).await;
    let body = batch_body("after the crash");
    let lease_ms = app.stack.config.gateway.idempotency_lease_ms;

    // The first attempt chose its batch id, froze the credits and died before writing the batch: its record is
    // pending and its lease ran out.
    let batch_id = ids::new_batch_id();
    let request = IdempotentRequest::new(&tenant, "POST", "/v1/batches", "crash", &body);
    let started = now_ms() - 2 * lease_ms;
    let begin = store
        .idempotency_begin(&request, &batch_id, started, lease_ms, 86_400_000)
        .await
        .unwrap();
    assert!(matches!(begin, IdempotencyBegin::Run(_)));
    store
        .reserve(&tenant, &batch_id, VEO_COST as u64, started)
        .await
        .unwrap();
    assert_eq!(balance_and_frozen(&app, &key).await, (100 - VEO_COST, VEO_COST));

    let (status, headers, batch) = post(&app, &key, "/v1/batches", Some("crash"), &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{batch}");
    assert!(!replayed(&headers), "a take-over runs the request");
    assert_eq!(batch["id"], batch_id.as_str());
    assert_eq!(headers["location"], format!("/v1/batches/{batch_id}"));
    assert_eq!(freezes(&app, &key, &batch_id).await, 1);
    assert_eq!(balance_and_frozen(&app, &key).await, (100 - VEO_COST, VEO_COST));
    assert_eq!(batch_count(&app, &key).await, 1);

    // From now on the key replays the take-over's answer.
    let (status, headers, again) = post(&app, &key, "/v1/batches", Some("crash"), &body).await;
    assert_eq!((status, &again), (StatusCode::ACCEPTED, &batch));
    assert!(replayed(&headers));
    let batch = app.wait_final(&key, &batch_id).await;
    assert_eq!(batch["credits"]["charged"], VEO_COST);
    assert_eq!(balance_and_frozen(&app, &key).await, (100 - VEO_COST, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_attempt_holding_a_record_may_finish_or_release_it() {
    let app = TestApp::start().await;
    let (tenant, _) = app.tenant(0).await;
    let store = store(&app).await;
    let request = IdempotentRequest::new(&tenant, "POST", "/v1/tasks/t/cancel", "k", b"");
    let ttl = 86_400_000;
    let IdempotencyBegin::Run(dead) = store
        .idempotency_begin(&request, "", now_ms() - 10_000, 1_000, ttl)
        .await
        .unwrap()
    else {
        panic!("a new key runs")
    };
    let IdempotencyBegin::Run(live) = store
        .idempotency_begin(&request, "", now_ms(), 60_000, ttl)
        .await
        .unwrap()
    else {
        panic!("an expired lease is taken over")
    };
    assert!(live.taken_over);
    let answer = StoredAnswer {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: b"{\"ok\":true}".to_vec(),
    };
    assert!(!store.idempotency_release(&request, &dead).await.unwrap());
    assert!(!store
        .idempotency_finish(&request, &dead, &answer, ttl)
        .await
        .unwrap());
    assert!(store
        .idempotency_finish(&request, &live, &answer, ttl)
        .await
        .unwrap());
    assert_eq!(
        store
            .idempotency_begin(&request, "", now_ms(), 60_000, ttl)
            .await
            .unwrap(),
        IdempotencyBegin::Replay(answer)
    );
    // A released record (its answer was a 5xx) is run again at once by a retry of the same request; the key
    // still belongs to that request.
    let other = IdempotentRequest::new(&tenant, "POST", "/v1/tasks/u/cancel", "k", b"");
    let IdempotencyBegin::Run(lease) = store
        .idempotency_begin(&other, "", now_ms(), 60_000, ttl)
        .await
        .unwrap()
    else {
        panic!("another endpoint is another record")
    };
    assert!(store.idempotency_release(&other, &lease).await.unwrap());
    assert!(matches!(
        store
            .idempotency_begin(&other, "", now_ms(), 60_000, ttl)
            .await
            .unwrap(),
        IdempotencyBegin::Run(_)
    ));
    let changed = IdempotentRequest::new(&tenant, "POST", "/v1/tasks/u/cancel", "k", b"{}");
    assert_eq!(
        store
            .idempotency_begin(&changed, "", now_ms(), 60_000, ttl)
            .await
            .unwrap(),
        IdempotencyBegin::Mismatch
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_replay_their_first_answer() {
    let app = TestApp::start_with(|c| c.sim.task_duration_ms = 3000).await;
    let (_, key) = app.tenant(100).await;
    let batch_id = app
        .submit(&key, &json!({"tasks": [veo("one"), veo("two"), veo("three")]}))
        .await;

    // A task.
    let task_path = format!("/v1/tasks/{}/cancel", ids::task_id(&batch_id, 0));
    let (status, headers, task) = post(&app, &key, &task_path, Some("cancel-task"), b"").await;
    assert_eq!(status, StatusCode::OK, "{task}");
    assert_eq!(task["status"], "cancelled");
    assert!(!replayed(&headers));
    let (status, headers, again) = post(&app, &key, &task_path, Some("cancel-task"), b"").await;
    assert_eq!((status, &again), (StatusCode::OK, &task));
    assert!(replayed(&headers));
    // Without the key, a second cancel of a finished task is a conflict.
    let (status, _, _) = post(&app, &key, &task_path, None, b"").await;
    assert_eq!(status, StatusCode::CONFLICT);

    // The whole batch, with the same key: another endpoint, so another record.
    let batch_path = format!("/v1/batches/{batch_id}/cancel");
    let (status, headers, batch) = post(&app, &key, &batch_path, Some("cancel-task"), b"").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{batch}");
    assert!(!replayed(&headers));
    assert_eq!(batch["id"], batch_id.as_str());
    let (status, headers, again) = post(&app, &key, &batch_path, Some("cancel-task"), b"").await;
    assert_eq!((status, &again), (StatusCode::ACCEPTED, &batch));
    assert!(replayed(&headers));
    // Without the key it runs again (still `cancelling`: 202, or 409 once `cancelled`), never replayed.
    let (status, headers, _) = post(&app, &key, &batch_path, None, b"").await;
    assert!(matches!(status, StatusCode::ACCEPTED | StatusCode::CONFLICT));
    assert!(!replayed(&headers));

    let batch = app.wait_final(&key, &batch_id).await;
    assert_eq!(batch["status"], "cancelled");
    assert_eq!(balance_and_frozen(&app, &key).await.1, 0);
}
