//! The Lua transitions against a real redis-server: duplicates and late messages are no-ops, attempts fence
//! stale workers, money moves once.
#![allow(clippy::unwrap_used)]

use gantry_core::{
    config::Prices,
    ids,
    keys::Keys,
    model::BatchView,
    store::{Claim, Finish, Outcome, Reservation, Settlement},
    validate::{validate_batch, Limits},
    Store,
};
use gantry_testkit::RedisServer;
use serde_json::json;

pub(crate) async fn store(redis: &RedisServer) -> Store {
    Store::connect(&redis.url(), "t", 4).await.unwrap()
}

fn prices() -> Prices {
    Prices {
        sora2_per_second: 1,
        veo31_fast: 8,
        veo31_pro: 20,
    }
}

async fn batch_of(store: &Store, tenant: &str, mode: &str, n: usize) -> String {
    traced_batch_of(store, tenant, mode, n, None).await
}

/// A new batch of `n` tasks, reserved and created under the trace context `traceparent`.
pub(crate) async fn traced_batch_of(
    store: &Store,
    tenant: &str,
    mode: &str,
    n: usize,
    traceparent: Option<&str>,
) -> String {
    let tasks: Vec<_> = (0..n)
        .map(|i| json!({"model": "veo3.1-fast", "prompt": format!("p{i}"), "aspect_ratio": "16:9"}))
        .collect();
    let batch = validate_batch(
        &json!({"mode": mode, "tasks": tasks}),
        &Limits { max_tasks: 100 },
        &prices(),
    )
    .unwrap();
    let id = ids::new_batch_id();
    assert!(matches!(
        store.reserve(tenant, &id, batch.cost(), 1).await.unwrap(),
        Reservation::Reserved { .. }
    ));
    assert!(store
        .create_batch(tenant, &id, &batch, 1, traceparent)
        .await
        .unwrap());
    // The gateway answers a new batch with this view instead of reading the hash back: they must agree.
    assert_eq!(
        store.batch(&id).await.unwrap(),
        Some(BatchView::queued(&id, tenant, &batch, 1))
    );
    assert!(
        !store
            .create_batch(tenant, &id, &batch, 1, traceparent)
            .await
            .unwrap(),
        "creating twice is a no-op"
    );
    id
}

#[tokio::test]
async fn a_task_finishes_once_and_stale_attempts_are_fenced() {
    let redis = RedisServer::start().unwrap();
    let store = store(&redis).await;
    let (tenant, _) = store.create_tenant("t", 100).await.unwrap();
    let batch = batch_of(&store, &tenant, "parallel", 2).await;
    let task = ids::task_id(&batch, 0);

    let Claim::Claimed { attempt, .. } = store.claim_submit(&task, 10, 1000).await.unwrap() else {
        panic!("claim")
    };
    assert_eq!(attempt, 1);
    assert_eq!(
        store.claim_submit(&task, 11, 1000).await.unwrap(),
        Claim::Skip(Some(gantry_core::domain::TaskStatus::Submitting))
    );
    assert!(
        !store
            .mark_running(
                &task,
                attempt + 1,
                (gantry_core::domain::ProviderName::Grsai, "r-stale"),
                12,
                13
            )
            .await
            .unwrap(),
        "another attempt is fenced"
    );
    assert!(store
        .mark_running(
            &task,
            attempt,
            (gantry_core::domain::ProviderName::Grsai, "r-1"),
            12,
            13
        )
        .await
        .unwrap());
    assert!(
        !store
            .mark_running(
                &task,
                attempt,
                (gantry_core::domain::ProviderName::Grsai, "r-1"),
                12,
                13
            )
            .await
            .unwrap(),
        "a duplicate is a no-op"
    );

    let done = Outcome::Succeeded {
        video_url: "https://v/1.mp4".into(),
        last_frame_url: None,
    };
    assert!(
        !store
            .finish_task(&task, Some(attempt + 1), &done, 20)
            .await
            .unwrap(),
        "a stale attempt changes nothing"
    );
    assert!(store.finish_task(&task, Some(attempt), &done, 20).await.unwrap());
    let failed = Outcome::Failed {
        code: gantry_core::domain::FailureCode::ProviderError,
        message: "late".into(),
    };
    assert!(
        !store.finish_task(&task, None, &failed, 21).await.unwrap(),
        "a late failure cannot regress a success"
    );
    let view = store.task(&task).await.unwrap().unwrap();
    assert_eq!(view.output.unwrap().video_url, "https://v/1.mp4");

    // A task never claimed has no attempts field (attempt 0): the submitter burying its poisoned message fails it
    // under attempt 0, and a later attempt's answer is fenced.
    let never_claimed = ids::task_id(&batch, 1);
    let row = store.task_row(&never_claimed).await.unwrap().unwrap();
    assert_eq!((row.attempt, row.progress), (0, 0));
    assert!(
        !store
            .finish_task(&never_claimed, Some(1), &failed, 22)
            .await
            .unwrap(),
        "no attempt 1 was ever made"
    );
    assert!(store
        .finish_task(&never_claimed, Some(0), &failed, 22)
        .await
        .unwrap());
    assert_eq!(store.task(&never_claimed).await.unwrap().unwrap().attempts, 0);
    let batch_view = store.batch(&batch).await.unwrap().unwrap();
    assert_eq!(
        (
            batch_view.request_counts.succeeded,
            batch_view.request_counts.running
        ),
        (1, 0)
    );
}

#[tokio::test]
async fn polls_are_claimed_by_one_poller_until_the_lease_ends() {
    let redis = RedisServer::start().unwrap();
    let store = store(&redis).await;
    let (tenant, _) = store.create_tenant("t", 100).await.unwrap();
    let batch = batch_of(&store, &tenant, "parallel", 1).await;
    let task = ids::task_id(&batch, 0);
    let Claim::Claimed { attempt, .. } = store.claim_submit(&task, 10, 1000).await.unwrap() else {
        panic!("claim")
    };
    store
        .mark_running(
            &task,
            attempt,
            (gantry_core::domain::ProviderName::Grsai, "r-1"),
            10,
            100,
        )
        .await
        .unwrap();
    let p = store.keys().partition_of(&batch);
    // A claim answers the ids it leased, each task's row, and the earliest due time left in the schedule.
    let claim = |now: u64| {
        let store = store.clone();
        async move {
            let (claimed, next_due) = store.claim_polls(p, now, 50, 10).await.unwrap();
            let ids: Vec<String> = claimed
                .into_iter()
                .map(|(id, row)| {
                    let row = row.unwrap().unwrap();
                    assert_eq!(
                        (row.status, row.remote_id.as_str()),
                        (gantry_core::domain::TaskStatus::Running, "r-1")
                    );
                    id
                })
                .collect();
            (ids, next_due)
        }
    };

    assert_eq!(claim(99).await, (vec![], Some(100)), "not due yet");
    assert_eq!(
        claim(100).await,
        (vec![task.clone()], Some(150)),
        "leased until 150"
    );
    assert_eq!(
        claim(120).await,
        (vec![], Some(150)),
        "leased to the first poller"
    );
    assert_eq!(
        claim(150).await,
        (vec![task.clone()], Some(200)),
        "the lease ran out"
    );
    assert!(store
        .poll_update(&task, attempt, 40, 150, 400, None)
        .await
        .unwrap());
    assert_eq!(store.task(&task).await.unwrap().unwrap().progress, 40);
    assert_eq!(claim(399).await, (vec![], Some(400)));
    store
        .finish_task(
            &task,
            Some(attempt),
            &Outcome::Failed {
                code: gantry_core::domain::FailureCode::Timeout,
                message: String::new(),
            },
            500,
        )
        .await
        .unwrap();
    assert_eq!(
        claim(500).await,
        (vec![], None),
        "a terminal task leaves the schedule"
    );
    assert!(!store
        .poll_update(&task, attempt, 50, 600, 700, None)
        .await
        .unwrap());
}

#[tokio::test]
async fn money_moves_once_per_batch() {
    let redis = RedisServer::start().unwrap();
    let store = store(&redis).await;
    let (tenant, key) = store.create_tenant("t", 50).await.unwrap();
    assert_eq!(
        store
            .authenticate(&key)
            .await
            .unwrap()
            .map(|owner| owner.tenant_id),
        Some(tenant.clone())
    );
    assert_eq!(store.authenticate("gk_other").await.unwrap(), None);

    assert_eq!(
        store.reserve(&tenant, "bat_x", 60, 1).await.unwrap(),
        Reservation::InsufficientCredits { balance: 50 }
    );
    assert_eq!(
        store.reserve(&tenant, "bat_a", 30, 1).await.unwrap(),
        Reservation::Reserved { balance: 20 }
    );
    assert_eq!(
        store.reserve(&tenant, "bat_a", 30, 1).await.unwrap(),
        Reservation::Reserved { balance: 20 },
        "idempotent"
    );
    assert_eq!(
        store.settle(&tenant, "bat_a", 12).await.unwrap(),
        Settlement::Settled {
            charged: 12,
            refunded: 18
        }
    );
    assert_eq!(
        store.settle(&tenant, "bat_a", 12).await.unwrap(),
        Settlement::AlreadySettled {
            charged: 12,
            refunded: 18
        }
    );
    assert_eq!(
        store.settle(&tenant, "bat_never", 1).await.unwrap(),
        Settlement::NoReservation
    );
    let credits = store.credits(&tenant).await.unwrap();
    assert_eq!(
        (credits.balance, credits.frozen, credits.charged, credits.granted),
        (38, 0, 12, 50)
    );
    assert_eq!(
        credits.balance + credits.frozen + credits.charged,
        credits.granted,
        "money is conserved"
    );
    let kinds: Vec<_> = store
        .ledger(&tenant)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.amount))
        .collect();
    assert_eq!(
        kinds,
        [
            ("grant".into(), 50),
            ("freeze".into(), 30),
            ("charge".into(), 12),
            ("refund".into(), 18)
        ]
    );
}

#[tokio::test]
async fn shared_limits_grant_permits_in_blocks_and_429s_cut_the_rate_for_everyone() {
    use gantry_core::{
        config::ProviderLimits,
        store::{PermitGrant, PermitRequest},
    };
    let redis = RedisServer::start().unwrap();
    let store = store(&redis).await;
    let limits = ProviderLimits {
        rate_per_sec: 10.0,
        burst: 2,
        max_in_flight: 3,
        create_share: 0.67,
    };
    let ask = |holder: &'static str, share: f64, slots: u32, tokens: u32| PermitRequest {
        share,
        lease_ms: 10_000,
        holder,
        slots,
        tokens,
        rate_limited: 0,
        ok: 0,
    };
    let take = |request: PermitRequest<'static>, now: u64| {
        let store = store.clone();
        let limits = limits.clone();
        async move { store.limiter_take("p", &limits, &request, now).await.unwrap() }
    };
    // A burst of two tokens at once, and every slot.
    let a = take(ask("a", 1.0, 3, 5), 1_000).await;
    assert_eq!((a.slots, a.tokens, a.wait_ms), (3, 2, 0));
    // Nothing is left for another holder until `a` gives slots back.
    let b = take(ask("b", 1.0, 1, 1), 1_000).await;
    assert_eq!((b.slots, b.tokens), (0, 0));
    assert!(b.wait_ms > 0);
    assert_eq!(take(ask("a", 1.0, 1, 0), 1_000).await.slots, 1);
    // Creates may hold two of the three slots; the burst is spent, so the next token comes ~100 ms later.
    let b = take(ask("b", 0.67, 3, 1), 1_000).await;
    assert_eq!((b.slots, b.tokens), (1, 0));
    assert!((90..=110).contains(&b.wait_ms), "{b:?}");
    let b = take(ask("b", 0.67, 1, 1), 1_102).await;
    assert_eq!((b.slots, b.tokens, b.wait_ms), (1, 1, 0));
    // A holder that died: its slots come back when its lease ends (b's lease runs to 11_102).
    let c = take(ask("c", 1.0, 3, 0), 11_001).await;
    assert_eq!(c.slots, 2, "{c:?}");

    // 429s halve the factor for everyone; good answers give it back step by step.
    let report = |holder, rate_limited, ok| PermitRequest {
        rate_limited,
        ok,
        ..ask(holder, 1.0, 0, 0)
    };
    let factor = |g: PermitGrant| g.factor;
    assert_eq!(factor(take(report("a", 1, 0), 11_001).await), 0.5);
    assert_eq!(factor(take(report("b", 2, 0), 11_001).await), 0.25);
    let recovered = factor(take(report("c", 0, 1), 11_001).await);
    assert!((recovered - 0.27).abs() < 1e-9, "recovers gradually: {recovered}");
}

#[tokio::test]
async fn the_audit_finds_books_that_do_not_balance() {
    let redis = RedisServer::start().unwrap();
    let store = store(&redis).await;
    let (tenant, _) = store.create_tenant("t", 100).await.unwrap();
    let batch = batch_of(&store, &tenant, "parallel", 2).await;
    for i in 0..2 {
        let task = ids::task_id(&batch, i);
        let Claim::Claimed { attempt, .. } = store.claim_submit(&task, 10, 1000).await.unwrap() else {
            panic!()
        };
        let done = Outcome::Succeeded {
            video_url: "https://v/1.mp4".into(),
            last_frame_url: None,
        };
        assert!(store.finish_task(&task, Some(attempt), &done, 20).await.unwrap());
    }
    let audit = store.audit_tenant(&tenant).await.unwrap();
    assert_eq!(
        audit.violations,
        Vec::<String>::new(),
        "a batch waiting for settlement is fine"
    );
    assert_eq!(
        store.settle(&tenant, &batch, 16).await.unwrap(),
        Settlement::Settled {
            charged: 16,
            refunded: 0
        }
    );
    assert!(store.settle_finalize(&batch, 16, 0, 30).await.unwrap());
    let audit = store.audit_tenant(&tenant).await.unwrap();
    assert_eq!(audit.violations, Vec::<String>::new());
    assert_eq!((audit.batches, audit.ledger_entries), (1, 4));

    // Money out of thin air: the books no longer balance.
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: i64 = redis::cmd("HINCRBY")
        .arg(store.keys().tenant(&tenant))
        .arg("balance")
        .arg(5)
        .query_async(&mut conn)
        .await
        .unwrap();
    let audit = store.audit_tenant(&tenant).await.unwrap();
    assert!(
        audit.violations.iter().any(|v| v.contains("!= granted")),
        "{audit:?}"
    );
}

#[tokio::test]
async fn a_stale_submitter_finishing_after_its_lease_expired_changes_nothing() {
    let redis = RedisServer::start().unwrap();
    let store = store(&redis).await;
    let (tenant, _) = store.create_tenant("t", 100).await.unwrap();
    let batch = batch_of(&store, &tenant, "parallel", 1).await;
    let task = ids::task_id(&batch, 0);
    // Submitter A claims with a 100 ms lease and stalls; at 200 ms submitter B takes the task over.
    let Claim::Claimed { attempt: a, .. } = store.claim_submit(&task, 10, 100).await.unwrap() else {
        panic!()
    };
    assert_eq!(
        store.claim_submit(&task, 50, 100).await.unwrap(),
        Claim::Skip(Some(gantry_core::domain::TaskStatus::Submitting)),
        "lease still held"
    );
    let Claim::Claimed { attempt: b, .. } = store.claim_submit(&task, 200, 100).await.unwrap() else {
        panic!()
    };
    assert_eq!((a, b), (1, 2));
    assert!(store
        .mark_running(
            &task,
            b,
            (gantry_core::domain::ProviderName::Grsai, "remote-b"),
            210,
            300
        )
        .await
        .unwrap());
    // A wakes up: neither its remote id nor its result may overwrite B's.
    assert!(!store
        .mark_running(
            &task,
            a,
            (gantry_core::domain::ProviderName::Grsai, "remote-a"),
            220,
            300
        )
        .await
        .unwrap());
    let late = Outcome::Failed {
        code: gantry_core::domain::FailureCode::ProviderError,
        message: "stale".into(),
    };
    assert!(!store.finish_task(&task, Some(a), &late, 230).await.unwrap());
    let target = store.task_row(&task).await.unwrap().unwrap();
    assert_eq!(
        (target.status.as_str(), target.attempt, target.remote_id.as_str()),
        ("running", 2, "remote-b")
    );
    let view = store.batch(&batch).await.unwrap().unwrap();
    assert_eq!(
        (view.request_counts.running, view.request_counts.queued),
        (1, 0),
        "counted once"
    );
}

#[tokio::test]
async fn a_new_tenant_is_written_whole_in_one_script_and_its_key_works_last() {
    let redis = RedisServer::start().unwrap();
    let store = store(&redis).await;
    // The tenant's hash, its grant and its key record come from one script (create_tenant.lua); the tenant index
    // and the key's lookup entry follow.
    let (tenant, key) = store.create_tenant("t", 50).await.unwrap();
    let credits = store.credits(&tenant).await.unwrap();
    assert_eq!((credits.balance, credits.frozen, credits.charged), (50, 0, 0));
    let ledger = store.ledger(&tenant).await.unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(
        (ledger[0].kind.as_str(), ledger[0].amount, ledger[0].balance),
        ("grant", 50, 50)
    );
    assert_eq!(store.list_api_keys(&tenant).await.unwrap().len(), 1);
    assert_eq!(store.authenticate(&key).await.unwrap().unwrap().tenant_id, tenant);
    assert!(store.audit_tenant(&tenant).await.unwrap().violations.is_empty());
}

#[tokio::test]
async fn one_call_finishes_several_tasks_of_a_batch_and_settles_it_once() {
    let redis = RedisServer::start().unwrap();
    let store = store(&redis).await;
    let (tenant, _) = store.create_tenant("t", 100).await.unwrap();
    let batch = batch_of(&store, &tenant, "parallel", 3).await;
    let tasks: Vec<String> = (0..3).map(|i| ids::task_id(&batch, i)).collect();
    for task in &tasks {
        let Claim::Claimed { attempt, .. } = store.claim_submit(task, 10, 1000).await.unwrap() else {
            panic!("claim")
        };
        let remote = format!("r-{task}");
        let provider = (gantry_core::domain::ProviderName::Grsai, remote.as_str());
        assert!(store.mark_running(task, attempt, provider, 12, 13).await.unwrap());
    }
    let succeeded = Outcome::Succeeded {
        video_url: "https://v/1.mp4".into(),
        last_frame_url: None,
    };
    let failed = Outcome::Failed {
        code: gantry_core::domain::FailureCode::ProviderError,
        message: "no".into(),
    };
    let finish = |i: usize, outcome: &Outcome| Finish {
        task_id: tasks[i].clone(),
        attempt: Some(1),
        outcome: outcome.clone(),
        now: 20,
    };
    let keys = Keys::new("t", 4);
    let partition = keys.partition_of(&batch);
    let applied = store
        .finish_tasks(
            partition,
            &[
                finish(0, &succeeded),
                finish(1, &failed),
                finish(0, &failed),
                finish(2, &succeeded),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        applied,
        [true, true, false, true],
        "a task ends once, even twice in one call"
    );

    let view = store.batch(&batch).await.unwrap().unwrap();
    let counts = &view.request_counts;
    assert_eq!(
        (counts.running, counts.succeeded, counts.failed),
        (0, 2, 1),
        "the batch's counters moved once per task"
    );
    assert_eq!(view.status, gantry_core::domain::BatchStatus::Settling);
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let settle_messages: u64 = redis::cmd("XLEN")
        .arg(keys.settle_stream(partition))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(settle_messages, 1, "one settle message for the batch");
    let cost_succeeded: u64 = redis::cmd("HGET")
        .arg(keys.batch(&batch))
        .arg("cost_succeeded")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(cost_succeeded, 2 * 8, "what the two successes cost");
}

#[tokio::test]
async fn only_the_attempt_holding_a_task_renews_its_lease() {
    let redis = RedisServer::start().unwrap();
    let store = store(&redis).await;
    let (tenant, _) = store.create_tenant("t", 100).await.unwrap();
    let batch = batch_of(&store, &tenant, "parallel", 1).await;
    let task = ids::task_id(&batch, 0);
    assert!(
        !store.renew_lease(&task, 1, 5_000).await.unwrap(),
        "a queued task has no lease"
    );

    let Claim::Claimed { attempt, .. } = store.claim_submit(&task, 10, 1000).await.unwrap() else {
        panic!("claim")
    };
    assert!(store.renew_lease(&task, attempt, 5_000).await.unwrap());
    // Renewed, the lease has not run out at 2,000 ms, where the first one (10 + 1,000) had.
    assert_eq!(
        store.claim_submit(&task, 2_000, 1000).await.unwrap(),
        Claim::Skip(Some(gantry_core::domain::TaskStatus::Submitting))
    );
    assert!(
        !store.renew_lease(&task, attempt + 1, 9_000).await.unwrap(),
        "another attempt is fenced"
    );
    // Once the lease runs out, another submitter takes the task over and the old attempt can renew no more.
    let Claim::Claimed { attempt: second, .. } = store.claim_submit(&task, 6_000, 1000).await.unwrap() else {
        panic!("takeover")
    };
    assert_eq!(second, attempt + 1);
    assert!(!store.renew_lease(&task, attempt, 9_000).await.unwrap());
}
