use test_support::shared::decision::Decision;

use crate::helpers::spawn_stack;

#[tokio::test]
async fn a_large_request_waitlists_while_a_later_small_one_still_fits() {
    let stack = spawn_stack().await;
    let goods = stack.create_goods(5, 4).await;
    let users = stack.customers("mix", 5).await;
    let _worker = stack.worker(&[]);
    // One at a time, so stream order is this order.
    let mut accepted = Vec::new();
    for ((id, token), quantity) in users.iter().zip([3, 3, 2, 1, 4]) {
        accepted.push((stack.book(goods, *id, token, quantity).await, token));
    }
    stack.wait_for_decisions(5).await;
    let rows = stack.assert_invariants(goods).await;
    let decisions: Vec<&str> = rows.iter().map(|r| r.decision.status().as_str()).collect();
    assert_eq!(
        decisions,
        [
            "confirmed",
            "waitlisted",
            "confirmed",
            "waitlisted",
            "waitlisted"
        ]
    );
    assert_eq!(stack.seats(goods).await, (5, 5));
    let expected = [
        "confirmed",
        "waitlisted",
        "confirmed",
        "waitlisted",
        "waitlisted",
    ];
    for ((accepted, token), expected) in accepted.iter().zip(expected) {
        let status = stack.status(&accepted.request_id, token).await;
        assert_eq!(status["status"], expected, "{status}");
    }
}

#[tokio::test]
async fn the_same_user_booking_twice_is_rejected_already_booked() {
    let stack = spawn_stack().await;
    let goods = stack.create_goods(10, 1).await;
    let (user, token) = stack.customers("twice", 1).await.remove(0);
    let _worker = stack.worker(&[]);
    let first = stack.book(goods, user, &token, 1).await;
    let second = stack.book(goods, user, &token, 1).await;
    stack.wait_for_decisions(2).await;
    let first = stack.status(&first.request_id, &token).await;
    let second = stack.status(&second.request_id, &token).await;
    assert_eq!(first["status"], "confirmed");
    assert!(first["bookingId"].is_i64());
    assert_eq!(second["status"], "rejected");
    assert_eq!(second["reason"], "already_booked");
    assert!(second.get("bookingId").is_none());
    assert_eq!(stack.seats(goods).await, (1, 10));
    stack.assert_invariants(goods).await;
}

#[tokio::test]
async fn a_request_for_goods_deleted_before_its_turn_is_rejected_goods_not_found() {
    let stack = spawn_stack().await;
    let goods = stack.create_goods(10, 1).await;
    let (user, token) = stack.customers("gone", 1).await.remove(0);
    // Accepted while the goods existed, decided after it was deleted.
    let accepted = stack.book(goods, user, &token, 1).await;
    // Gone altogether, not deleted softly: nothing in TicketNest deletes a goods row
    // (migration V11 refuses it), but a worker must not stall on one missing.
    stack
        .db
        .client()
        .await
        .batch_execute(&format!(
            "ALTER TABLE goods DISABLE TRIGGER goods_never_deleted;
             DELETE FROM goods WHERE id = {goods};
             ALTER TABLE goods ENABLE TRIGGER goods_never_deleted;"
        ))
        .await
        .expect("delete goods");
    let _worker = stack.worker(&[]);
    stack.wait_for_decisions(1).await;
    let status = stack.status(&accepted.request_id, &token).await;
    assert_eq!(status["status"], "rejected");
    assert_eq!(status["reason"], "goods_not_found");
}

/// Five requests are appended and read by `consumer` in one transaction, so the
/// running worker never sees them as new; then one more arrives through the API. The
/// five are older than anything read afterwards: they must be decided first, and never
/// left pending.
async fn entries_read_by_another_read_are_decided_first(
    consumer: &str,
    worker_id: &str,
    then_book: bool,
) {
    use redis::AsyncCommands;
    use test_support::shared::stream::{
        BookingRequestV1, Message, AUTO_ID, CONSUMER_GROUP, NEW_ENTRIES,
    };

    let stack = spawn_stack().await;
    let goods = stack.create_goods(3, 1).await;
    let users = stack.customers("stale", 7).await;
    let _worker = stack.named_worker(worker_id, None, &[]);
    let stream = stack.keys().stream(stack.shard_of(goods));
    // A first booking, decided, shows the worker is reading the goods' shard.
    let (first, first_token) = &users[0];
    stack.book(goods, *first, first_token, 1).await;
    stack.wait_for_decisions(1).await;
    let mut pipe = redis::pipe();
    pipe.atomic();
    for (user, _) in &users[1..6] {
        let message = Message::Book(BookingRequestV1 {
            request_id: uuid::Uuid::now_v7(),
            goods_id: goods,
            user_id: *user,
            quantity: 1,
            accepted_at_ms: 1,
            trace_id: String::new(),
            traceparent: None,
        });
        pipe.xadd(&stream, AUTO_ID, &message.to_fields()).ignore();
    }
    pipe.cmd("XREADGROUP")
        .arg(&["GROUP", CONSUMER_GROUP, consumer, "COUNT", "5", "STREAMS"])
        .arg(&stream)
        .arg(NEW_ENTRIES)
        .ignore();
    let mut conn = stack.redis.connection().await;
    let () = pipe.query_async(&mut conn).await.expect("hidden read");
    let pending: redis::streams::StreamPendingReply = conn
        .xpending(&stream, CONSUMER_GROUP)
        .await
        .expect("xpending");
    assert_eq!(pending.count(), 5);

    // The last request arrives through the API and reaches the live worker; or none
    // does, and the shard stays idle.
    let decided = if then_book {
        let (user, token) = &users[6];
        stack.book(goods, *user, token, 1).await;
        7
    } else {
        6
    };
    stack.wait_for_decisions(decided).await;
    stack.wait_until_nothing_pending().await;
    let rows = stack.assert_invariants(goods).await;
    let order: Vec<i64> = rows.iter().map(|r| r.user_id).collect();
    let expected: Vec<i64> = users.iter().take(order.len()).map(|(id, _)| *id).collect();
    assert_eq!(order, expected, "decided in stream order");
    assert_eq!(order.len(), usize::try_from(decided).expect("count"));
    assert_eq!(rows[5].decision, Decision::Waitlisted);
}

/// A stale owner (one that lost its lease but has not noticed) can still read new
/// entries after the new owner's reclaim.
#[tokio::test]
async fn entries_a_stale_consumer_read_after_the_takeover_are_decided_first() {
    entries_read_by_another_read_are_decided_first("zombie", "w1", true).await;
}

/// The same with no booking after them: entries left pending must not wait for new
/// traffic on the shard to be decided.
#[tokio::test]
async fn entries_left_pending_are_decided_while_the_shard_is_idle() {
    entries_read_by_another_read_are_decided_first("zombie", "w1", false).await;
}

/// On Redis Cluster the client resends a command whose reply was lost: a lost
/// `XREADGROUP >` reply leaves a batch pending under the worker's own name while the
/// resend returns the next batch. The lost batch is older and comes first.
#[tokio::test]
async fn entries_the_worker_read_under_its_own_name_but_never_got_are_decided_first() {
    entries_read_by_another_read_are_decided_first("w1", "w1", true).await;
}

#[tokio::test]
async fn a_retried_booking_with_the_same_idempotency_key_is_decided_once() {
    let stack = spawn_stack().await;
    let goods = stack.create_goods(10, 1).await;
    let (_, token) = stack.customers("idem", 1).await.remove(0);
    let url = format!("{}/api/goods/{goods}/bookings", stack.address);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let response = stack
            .http
            .post(&url)
            .bearer_auth(&token)
            .header("idempotency-key", "order-42")
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
        let body: serde_json::Value = response.json().await.expect("json");
        ids.push(body["requestId"].as_str().expect("id").to_owned());
    }
    assert_eq!(ids[0], ids[1], "the same key gives the same request id");
    let bad = stack
        .http
        .post(&url)
        .bearer_auth(&token)
        .header("idempotency-key", "has spaces")
        .send()
        .await
        .expect("send");
    assert_eq!(bad.status(), reqwest::StatusCode::BAD_REQUEST);
    let body: serde_json::Value = bad.json().await.expect("json");
    assert_eq!(body["error"]["field"], "Idempotency-Key");

    let _worker = stack.worker(&[]);
    stack.wait_for_decisions(1).await;
    stack.wait_until_nothing_pending().await;
    assert_eq!(stack.decided_count().await, 1, "one entry, one decision");
    let status = stack.status(&ids[0], &token).await;
    assert_eq!(status["status"], "confirmed");
    assert_eq!(stack.seats(goods).await, (1, 10));
}
