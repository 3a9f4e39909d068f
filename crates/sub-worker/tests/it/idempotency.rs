//! Idempotency keys done right: one user, goods and key is one request, whatever the
//! retries and whenever they come.

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_error, parts, spawn_stack, Stack};

/// Every entry ever appended to a shard stream (trimming does not lower it).
async fn entries_added(stack: &Stack, goods: i64) -> i64 {
    let mut conn = stack.redis.connection().await;
    let info: std::collections::HashMap<String, redis::Value> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(stack.keys().stream(stack.shard_of(goods)))
        .query_async(&mut conn)
        .await
        .expect("xinfo stream");
    redis::from_redis_value(info["entries-added"].clone()).expect("entries-added")
}

async fn post(
    stack: &Stack,
    goods: i64,
    token: &str,
    key: &str,
    quantity: i64,
) -> (StatusCode, Value) {
    parts(
        stack
            .http
            .post(stack.url(&format!("/api/goods/{goods}/bookings")))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(&json!({ "quantity": quantity }))
            .send()
            .await
            .expect("send"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_is_one_request_one_entry_and_one_decision_whatever_the_retries() {
    let stack = spawn_stack().await;
    let goods = stack.create_goods(10, 2).await;
    let (_, token) = stack.customers("idem50", 1).await.remove(0);

    // Fifty at once, as a client that retries on every timeout might send them.
    let answers = join_all((0..50).map(|_| post(&stack, goods, &token, "order-7", 1))).await;
    let first = answers[0].1["requestId"].clone();
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["requestId"], first);
        assert_eq!(body["status"], "queued");
    }
    assert_eq!(entries_added(&stack, goods).await, 1, "one stream entry");

    let _worker = stack.worker(&[]);
    stack.wait_for_decisions(1).await;
    stack.wait_until_nothing_pending().await;

    // After the decision: the same answer, now with the decision; nothing new queued.
    let (status, body) = post(&stack, goods, &token, "order-7", 1).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["requestId"], first);
    assert_eq!(body["status"], "confirmed");
    assert_eq!(
        entries_added(&stack, goods).await,
        1,
        "still one stream entry"
    );

    // The same key for another request: refused, nothing changed.
    let (status, body) = post(&stack, goods, &token, "order-7", 2).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );
    assert_eq!(entries_added(&stack, goods).await, 1);
    let request_id = first.as_str().expect("id");
    assert_eq!(
        stack.status(request_id, &token).await["status"],
        "confirmed"
    );
    assert_eq!(stack.decided_count().await, 1);

    // The key holds for a day: the decided status of a keyed request outlives the
    // usual status TTL.
    let request_id = uuid::Uuid::try_parse(request_id).expect("uuid");
    let key = stack
        .keys()
        .request_status(stack.shard_of(goods), request_id);
    let mut conn = stack.redis.connection().await;
    let ttl: i64 = redis::AsyncCommands::ttl(&mut conn, &key)
        .await
        .expect("ttl");
    assert!(ttl > 23 * 3_600, "kept a day: {ttl}");
}

/// A retry arrives when the shard is over its backlog limit (the rush in which clients
/// retry most): it is answered with the request it made, not 503; new requests are
/// still turned away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_retry_is_answered_even_when_new_bookings_are_turned_away() {
    let stack = crate::helpers::spawn_stack_configured(2, |c| c.http.backlog_limit = 1).await;
    let goods = stack.create_goods(10, 2).await;
    let users = stack.customers("rush", 2).await;
    let (status, first) = post(&stack, goods, &users[0].1, "rush-1", 1).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    // No worker: the backlog stays at one; the API refuses new bookings once it
    // has sampled it.
    test_support::wait_until(
        "new bookings are refused",
        std::time::Duration::from_secs(30),
        || async {
            stack.post_booking(goods, &users[1].1, None).await.status()
                == StatusCode::SERVICE_UNAVAILABLE
        },
    )
    .await;
    // (The probes accepted before the API sampled the backlog added entries too.)
    let before = entries_added(&stack, goods).await;
    let (status, again) = post(&stack, goods, &users[0].1, "rush-1", 1).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["requestId"], first["requestId"]);
    assert_eq!(again["status"], "queued");
    let (status, body) = post(&stack, goods, &users[0].1, "rush-1", 2).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );
    assert_eq!(
        entries_added(&stack, goods).await,
        before,
        "the retries added nothing"
    );
}
