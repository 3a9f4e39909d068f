//! Cancel and waitlist promotion through the real API and worker: a cancel travels
//! the goods' shard stream, is decided in order with the bookings around it, and the
//! seats it frees go to the waitlist in order in the same transaction.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{assert_error, parts, spawn_stack, Stack};

/// `DELETE path` as `token`, with an optional idempotency key.
async fn delete(stack: &Stack, path: &str, token: &str, key: Option<&str>) -> (StatusCode, Value) {
    let mut request = stack.http.delete(stack.url(path)).bearer_auth(token);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    parts(request.send().await.expect("send")).await
}

/// A booking sent with `key`, already the key of a cancel: 422, nothing queued.
async fn assert_key_reused_on_a_booking(stack: &Stack, goods: i64, token: &str, key: &str) {
    let response = stack
        .http
        .post(stack.url(&format!("/api/goods/{goods}/bookings")))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .send()
        .await
        .expect("send");
    let (status, body) = parts(response).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );
}

/// Cancels the caller's booking of `goods`; asserts the 202 and returns the request id.
async fn cancel(stack: &Stack, goods: i64, token: &str) -> String {
    let (status, body) = delete(
        stack,
        &format!("/api/goods/{goods}/bookings/me"),
        token,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "queued");
    assert_eq!(
        body["statusUrl"],
        format!(
            "/api/bookings/requests/{}",
            body["requestId"].as_str().expect("id")
        )
    );
    body["requestId"].as_str().expect("id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_gives_the_freed_seats_to_the_waitlisted_that_fit_in_order() {
    let stack = spawn_stack().await;
    let goods = stack.create_goods(10, 4).await;
    let users = stack.customers("promote", 8).await;
    // Sold out: 2 + 4 + 4 seats. Then a waitlist asking 3, 1, 2, 1, 1. All sent
    // before the worker starts, one at a time: stream order is this order.
    let mut requests = Vec::new();
    for ((id, token), quantity) in users.iter().zip([2, 4, 4, 3, 1, 2, 1, 1]) {
        requests.push(stack.book(goods, *id, token, quantity).await.request_id);
    }
    let (_, holder) = &users[0];
    let cancel_id = cancel(&stack, goods, holder).await;

    let _worker = stack.worker(&[]);
    stack.wait_for_decisions(9).await;
    stack.wait_until_nothing_pending().await;

    let cancelled = stack.status(&cancel_id, holder).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["kind"], "cancel");
    assert_eq!(cancelled["quantity"], 2, "the seats it released");
    let original = stack.status(requests[0], holder).await;
    assert_eq!(original["status"], "cancelled", "{original}");
    assert_eq!(cancelled["bookingId"], original["bookingId"]);

    let waitlist: Vec<Value> = futures_util::future::join_all(
        requests[3..]
            .iter()
            .zip(&users[3..])
            .map(|(id, (_, token))| stack.status(id, token)),
    )
    .await;
    let seen: Vec<&str> = waitlist
        .iter()
        .map(|s| s["status"].as_str().expect("status"))
        .collect();
    assert_eq!(
        seen,
        [
            "waitlisted",
            "confirmed",
            "waitlisted",
            "confirmed",
            "waitlisted"
        ],
        "2 seats free: 3 does not fit, 1 does, 2 no longer does, 1 does, none left"
    );
    for (status, promoted) in waitlist.iter().zip([false, true, false, true, false]) {
        assert_eq!(status.get("promotedAt").is_some(), promoted, "{status}");
    }
    assert_eq!(stack.seats(goods).await, (10, 10));
    stack.assert_invariants(goods).await;

    // Who, when and which request: kept in the database.
    let client = stack.db.client().await;
    let row = client
        .query_one(
            "SELECT b.status, b.cancelled_by, b.cancel_request_id::text, b.cancelled_at IS NOT NULL \
             FROM bookings b WHERE b.request_id = $1",
            &[&requests[0]],
        )
        .await
        .expect("booking");
    assert_eq!(row.get::<_, &str>(0), "cancelled");
    assert_eq!(row.get::<_, i64>(1), users[0].0);
    assert_eq!(
        row.get::<_, String>(2),
        cancel_id,
        "the cancel request that released it"
    );
    assert!(row.get::<_, bool>(3));

    // Once the status hash is gone, PostgreSQL answers the same.
    let mut conn = stack.redis.connection().await;
    for id in [requests[4], requests[0]] {
        let key = stack.keys().request_status(stack.shard_of(goods), id);
        let _: () = redis::AsyncCommands::del(&mut conn, key)
            .await
            .expect("del");
    }
    let promoted = stack.status(requests[4], &users[4].1).await;
    assert_eq!(promoted["status"], "confirmed");
    assert_eq!(
        promoted["promotedAt"], waitlist[1]["promotedAt"],
        "{promoted}"
    );
    assert_eq!(
        stack.status(requests[0], holder).await["status"],
        "cancelled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_only_ever_touches_the_callers_own_live_booking() {
    let stack = spawn_stack().await;
    let goods = stack.create_goods(1, 1).await;
    let other = stack.create_goods(5, 1).await;
    let users = stack.customers("own", 3).await;
    let (alice, bob, carol) = (&users[0], &users[1], &users[2]);
    let alice_booking = stack.book(goods, alice.0, &alice.1, 1).await.request_id;
    let bob_booking = stack.book(goods, bob.0, &bob.1, 1).await.request_id;
    let bob_other = stack.book(other, bob.0, &bob.1, 1).await.request_id;
    // Carol holds nothing; Bob cancels on the other goods through the original
    // TicketNest's route; Alice cancels twice.
    let carol_cancel = cancel(&stack, goods, &carol.1).await;
    let (status, body) = delete(&stack, &format!("/api/booking/{other}"), &bob.1, None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let bob_cancel = body["requestId"].as_str().expect("id").to_owned();
    let alice_cancel = cancel(&stack, goods, &alice.1).await;
    let alice_again = cancel(&stack, goods, &alice.1).await;

    let _worker = stack.worker(&[]);
    stack.wait_for_decisions(7).await;
    stack.wait_until_nothing_pending().await;

    let no_booking = stack.status(&carol_cancel, &carol.1).await;
    assert_eq!(no_booking["status"], "rejected");
    assert_eq!(no_booking["reason"], "no_booking");
    assert_eq!(no_booking["quantity"], 0);
    assert_eq!(
        stack.status(&bob_cancel, &bob.1).await["status"],
        "cancelled"
    );
    assert_eq!(stack.status(bob_other, &bob.1).await["status"], "cancelled");
    assert_eq!(
        stack.status(&alice_cancel, &alice.1).await["status"],
        "cancelled"
    );
    assert_eq!(
        stack.status(&alice_again, &alice.1).await["reason"],
        "no_booking"
    );
    assert_eq!(
        stack.status(alice_booking, &alice.1).await["status"],
        "cancelled"
    );
    // Bob's booking of the first goods was promoted by Alice's cancel, not touched
    // by his cancel of the other goods.
    assert_eq!(
        stack.status(bob_booking, &bob.1).await["status"],
        "confirmed"
    );
    // Nobody reads another's cancel.
    let (status, _) = stack.poll(&alice_cancel, &bob.1).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    stack.assert_invariants(goods).await;
    stack.assert_invariants(other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_refuses_unknown_goods_and_anonymous_callers_and_takes_idempotency_keys() {
    let stack = spawn_stack().await;
    let goods = stack.create_goods(3, 1).await;
    let (id, token) = stack.customers("cidem", 1).await.remove(0);

    let (status, body) = delete(&stack, "/api/goods/999999/bookings/me", &token, None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "goods_not_found");
    let response = stack
        .http
        .delete(stack.url(&format!("/api/goods/{goods}/bookings/me")))
        .send()
        .await
        .expect("send");
    let (status, body) = parts(response).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(stack.decided_count().await, 0);

    stack.book(goods, id, &token, 1).await;
    let path = format!("/api/goods/{goods}/bookings/me");
    let (status, first) = delete(&stack, &path, &token, Some("undo-1")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let (status, again) = delete(&stack, &path, &token, Some("undo-1")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["requestId"], first["requestId"], "one request");
    // The same key on a booking: another kind of request.
    assert_key_reused_on_a_booking(&stack, goods, &token, "undo-1").await;

    let _worker = stack.worker(&[]);
    stack.wait_for_decisions(2).await;
    stack.wait_until_nothing_pending().await;
    let (status, after) = delete(&stack, &path, &token, Some("undo-1")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{after}");
    assert_eq!(after["requestId"], first["requestId"]);
    assert_eq!(after["status"], "cancelled", "the retry gets the decision");
    assert_eq!(stack.decided_count().await, 2, "no second cancel");

    // Redis forgets the key (its status expired): the decision log still holds it.
    let request_id = uuid::Uuid::try_parse(first["requestId"].as_str().expect("id")).expect("uuid");
    let mut conn = stack.redis.connection().await;
    let _: () = redis::AsyncCommands::del(
        &mut conn,
        stack
            .keys()
            .request_status(stack.shard_of(goods), request_id),
    )
    .await
    .expect("expire");
    let (status, later) = delete(&stack, &path, &token, Some("undo-1")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{later}");
    assert_eq!(later["requestId"], first["requestId"]);
    assert_eq!(later["status"], "cancelled");
    assert_key_reused_on_a_booking(&stack, goods, &token, "undo-1").await;
    assert_eq!(stack.pending().await, 0, "nothing new queued");
    assert_eq!(stack.decided_count().await, 2);
    stack.assert_invariants(goods).await;
}

/// A worker that dies between COMMIT and settle after a cancel: the next owner finds
/// the cancel decided and must still write what it changed, the released booking's
/// status and the promoted one's, not only the cancel's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_cancel_writes_the_statuses_it_changed() {
    let stack = spawn_stack().await;
    let goods = stack.create_goods(1, 1).await;
    let users = stack.customers("recancel", 2).await;
    let (holder, waiting) = (&users[0], &users[1]);
    let held = stack.book(goods, holder.0, &holder.1, 1).await.request_id;
    let queued = stack.book(goods, waiting.0, &waiting.1, 1).await.request_id;
    let mut first = stack.worker(&[]);
    stack.wait_for_decisions(2).await;
    stack.wait_until_nothing_pending().await;
    assert_eq!(
        stack.status(queued, &waiting.1).await["status"],
        "waitlisted"
    );
    first.kill().await.expect("kill");

    let cancel_id = cancel(&stack, goods, &holder.1).await;
    let mut crashing = stack.worker(&[("TICKETNEST_CRASH_POINT", "after_commit")]);
    let exit = tokio::time::timeout(std::time::Duration::from_secs(60), crashing.wait())
        .await
        .expect("worker reached the crash point")
        .expect("wait");
    assert_eq!(exit.code(), Some(sub_worker::shard::CRASH_EXIT_CODE));
    assert_eq!(stack.decided_count().await, 3, "the cancel was committed");

    let _worker = stack.worker(&[]);
    stack.wait_until_nothing_pending().await;
    assert_eq!(
        stack.status(&cancel_id, &holder.1).await["status"],
        "cancelled"
    );
    assert_eq!(stack.status(held, &holder.1).await["status"], "cancelled");
    let promoted = stack.status(queued, &waiting.1).await;
    assert_eq!(promoted["status"], "confirmed", "{promoted}");
    assert!(promoted.get("promotedAt").is_some(), "{promoted}");
    stack.assert_invariants(goods).await;
}
