//! Sale windows: the API refuses bookings outside a goods' window without enqueuing
//! them, and the worker, judging each request by its stream entry time with the goods
//! row locked, rejects whatever a stale API cache let through.

use reqwest::StatusCode;
use serde_json::json;
use test_support::shared::decision::{Decision, RejectReason};

use crate::helpers::{assert_error, assert_invalid_field, parts, Stack, WORKER_BINARY};

async fn stack_with_long_goods_cache() -> Stack {
    // The API trusts its copy of a goods for a minute: long enough to go stale.
    Stack::builder()
        .shards(2)
        .worker_binary(WORKER_BINARY)
        .api_config(|c| c.http.goods_cache_ttl = std::time::Duration::from_secs(60))
        .spawn()
        .await
}

async fn goods_with_window(
    stack: &Stack,
    opens: Option<&str>,
    closes: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let (_, organizer) = stack.organizer().await;
    parts(
        stack
            .post_json(
                "/api/goods",
                &json!({
                    "title": "Matinee",
                    "content": "",
                    "price": 1000,
                    "imgUrl": "",
                    "showDate": "2030-01-01",
                    "bookingLimit": 10,
                    "saleOpensAt": opens,
                    "saleClosesAt": closes,
                }),
                Some(&organizer),
            )
            .await,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_bookings_outside_the_window_and_enqueues_nothing() {
    let stack = stack_with_long_goods_cache().await;
    let users = stack.customers("window", 1).await;
    let (_, token) = &users[0];

    let (status, future) = goods_with_window(&stack, Some("2099-01-01T00:00:00Z"), None).await;
    assert_eq!(status, StatusCode::CREATED, "{future}");
    assert_eq!(future["saleOpensAt"], "2099-01-01T00:00:00Z");
    assert_eq!(future["saleClosesAt"], serde_json::Value::Null);
    let goods = future["id"].as_i64().expect("id");
    let (status, body) = parts(stack.post_booking(goods, token, None).await).await;
    assert_error(status, &body, StatusCode::CONFLICT, "sale_not_open");

    let (_, past) = goods_with_window(&stack, None, Some("2000-01-01T00:00:00Z")).await;
    let closed = past["id"].as_i64().expect("id");
    let (status, body) = parts(stack.post_booking(closed, token, None).await).await;
    assert_error(status, &body, StatusCode::CONFLICT, "sale_closed");

    for goods in [goods, closed] {
        let stream = stack.keys().stream(stack.shard_of(goods));
        assert_eq!(
            stack.stream_entries(&stream).await.len(),
            0,
            "nothing enqueued"
        );
    }

    let (status, body) = goods_with_window(
        &stack,
        Some("2030-01-01T00:00:00Z"),
        Some("2029-01-01T00:00:00Z"),
    )
    .await;
    assert_invalid_field(status, &body, "saleClosesAt");
}

/// The API's copy of the goods says the sale is open; the database says otherwise by
/// the time the requests arrive: the worker's verdict stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_rejects_what_a_stale_cache_let_through_by_arrival_time() {
    let stack = stack_with_long_goods_cache().await;
    let users = stack.customers("stale", 3).await;
    let (status, created) = goods_with_window(
        &stack,
        Some("2000-01-01T00:00:00Z"),
        Some("2099-01-01T00:00:00Z"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let goods = created["id"].as_i64().expect("id");
    let _worker = stack.worker(&[]);

    // Open: the first booking fills the API's cache and is confirmed.
    stack.book(goods, users[0].0, &users[0].1, 1).await;
    stack.wait_for_decisions(1).await;

    let client = stack.db.client().await;
    client
        .execute(
            "UPDATE goods SET sale_closes_at = date_trunc('milliseconds', now()) - interval '1 hour' \
             WHERE id = $1",
            &[&goods],
        )
        .await
        .expect("close the sale");
    stack.book(goods, users[1].0, &users[1].1, 1).await;
    stack.wait_for_decisions(2).await;
    client
        .execute(
            "UPDATE goods SET sale_opens_at = date_trunc('milliseconds', now()) + interval '1 hour', \
                 sale_closes_at = date_trunc('milliseconds', now()) + interval '2 hours' \
             WHERE id = $1",
            &[&goods],
        )
        .await
        .expect("move the sale later");
    stack.book(goods, users[2].0, &users[2].1, 1).await;
    stack.wait_for_decisions(3).await;

    let rows = stack.assert_invariants(goods).await;
    assert_eq!(
        rows.iter().map(|r| r.decision).collect::<Vec<_>>(),
        [
            Decision::Confirmed,
            Decision::Rejected(RejectReason::SaleClosed),
            Decision::Rejected(RejectReason::SaleNotOpen),
        ]
    );
    assert_eq!(stack.seats(goods).await.0, 1, "one seat taken");
    let status = stack.status(&rows[1].request_id, &users[1].1).await;
    assert_eq!(status["status"], "rejected");
    assert_eq!(status["reason"], "sale_closed");
}

/// A client that got no answer retries with its Idempotency-Key after the sale closed:
/// it is told about the request it made while the sale was open, not 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_retry_after_the_close_gets_the_request_made_before_it() {
    let stack = crate::helpers::spawn_stack().await;
    let users = stack.customers("late", 2).await;
    let (_, created) = goods_with_window(&stack, None, None).await;
    let goods = created["id"].as_i64().expect("id");
    let _worker = stack.worker(&[]);
    let book = |token: String, key: &'static str| {
        let request = stack
            .http
            .post(stack.url(&format!("/api/goods/{goods}/bookings")))
            .bearer_auth(token)
            .header("idempotency-key", key);
        async move { parts(request.send().await.expect("send")).await }
    };
    let (status, first) = book(users[0].1.clone(), "k1").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    stack.wait_for_decisions(1).await;
    stack
        .db
        .client()
        .await
        .execute(
            "UPDATE goods SET sale_closes_at = date_trunc('milliseconds', now()) WHERE id = $1",
            &[&goods],
        )
        .await
        .expect("close the sale");
    // Once this API copy's cached goods has caught up, new bookings are refused...
    test_support::wait_until(
        "the API sees the sale closed",
        std::time::Duration::from_secs(30),
        || {
            let probe = stack.post_booking(goods, &users[1].1, None);
            async move { probe.await.status() == StatusCode::CONFLICT }
        },
    )
    .await;
    // ...but the retry is answered with its request, now decided.
    let (status, again) = book(users[0].1.clone(), "k1").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["requestId"], first["requestId"]);
    assert_eq!(again["status"], "confirmed");
}

/// Bounds every reader can hold: no 'infinity', no sub-millisecond instants, nothing
/// outside 1970 to 9999 (the worker's arithmetic on such a value would stall the shard).
#[tokio::test]
async fn the_database_refuses_windows_no_reader_could_hold() {
    let stack = crate::helpers::spawn_stack().await;
    let (_, created) = goods_with_window(&stack, None, None).await;
    let goods = created["id"].as_i64().expect("id");
    let client = stack.db.client().await;
    for bad in [
        "sale_closes_at = 'infinity'",
        "sale_opens_at = '-infinity'",
        "sale_opens_at = '2030-01-01T00:00:00.000700Z'",
        "sale_closes_at = '10000-01-01T00:00:00Z'",
        "sale_opens_at = '1960-01-01T00:00:00Z'",
    ] {
        let refused = client
            .execute(&format!("UPDATE goods SET {bad} WHERE id = $1"), &[&goods])
            .await
            .expect_err(bad);
        assert_eq!(
            refused.code(),
            Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION),
            "{bad}"
        );
    }
}
