//! Seat holds with a payment deadline: a winning booking is held until its deadline,
//! confirmed by its owner before it, or expired by the shard's owner at it, its seats
//! going to the waitlist in order.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use shared::decision::{Decision, RejectReason, RequestKind};
use test_support::wait_until;
use uuid::Uuid;

use crate::helpers::{assert_error, parts, spawn_stack, Stack};

/// A goods of `limit` seats (one per booking) whose winning bookings are held
/// `hold_seconds`.
async fn goods_with_holds(stack: &Stack, limit: i64, hold_seconds: i64) -> i64 {
    let (_, owner) = stack.organizer().await;
    let goods = stack.create_goods_as(&owner, limit, 1).await;
    let (status, body) = stack
        .patch_goods(goods, &owner, &json!({ "holdSeconds": hold_seconds }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["holdSeconds"], hold_seconds);
    goods
}

async fn confirm(stack: &Stack, goods: i64, token: &str) -> Uuid {
    let (status, body) = parts(
        stack
            .http
            .post(stack.url(&format!("/api/goods/{goods}/bookings/me/confirm")))
            .bearer_auth(token)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    Uuid::try_parse(body["requestId"].as_str().expect("requestId")).expect("uuid")
}

/// Waits until the request's status is `want`; returns it.
async fn wait_for_status(stack: &Stack, id: Uuid, token: &str, want: &str) -> Value {
    wait_until(
        &format!("request {id} {want}"),
        Duration::from_secs(20),
        || async { stack.status(id, token).await["status"] == want },
    )
    .await;
    stack.status(id, token).await
}

fn deadline_ms(status: &Value) -> i64 {
    let at = status["holdExpiresAt"].as_str().expect("holdExpiresAt");
    chrono::DateTime::parse_from_rfc3339(at)
        .expect("RFC 3339")
        .timestamp_millis()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_hold_stays_and_an_unconfirmed_one_expires_to_the_head_of_the_waitlist() {
    let stack = spawn_stack().await;
    let users = stack.customers("holder", 4).await;
    let goods = goods_with_holds(&stack, 2, 3).await;
    let (status, body) = parts(
        stack
            .http
            .post(stack.url("/api/goods/999999/bookings/me/confirm"))
            .bearer_auth(&users[0].1)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "goods_not_found");
    let _worker = stack.worker(&[]);
    let mut ids = Vec::new();
    for (user, token) in &users {
        ids.push(stack.book(goods, *user, token, 1).await.request_id);
    }
    let (keeper, lapser) = (&users[0].1, &users[1].1);
    let held = wait_for_status(&stack, ids[0], keeper, "held").await;
    assert_eq!(stack.status(ids[1], lapser).await["status"], "held");
    assert_eq!(
        stack.status(ids[2], &users[2].1).await["status"],
        "waitlisted"
    );
    // The owner confirms in time; a user without a hold gets no_hold.
    let confirmed = confirm(&stack, goods, keeper).await;
    let answer = wait_for_status(&stack, confirmed, keeper, "confirmed").await;
    assert_eq!(answer["kind"], "confirm");
    assert_eq!(answer["bookingId"], held["bookingId"]);
    let (status, body) = parts(
        stack
            .http
            .post(stack.url(&format!("/api/goods/{goods}/bookings/me/confirm")))
            .bearer_auth(&users[3].1)
            .header("idempotency-key", "confirm-once")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let stray = Uuid::try_parse(body["requestId"].as_str().expect("id")).expect("uuid");
    let refused = wait_for_status(&stack, stray, &users[3].1, "rejected").await;
    assert_eq!(refused["reason"], "no_hold");

    // The other hold lapses: it expires within about a second of its deadline, and
    // its seat goes to the first waitlisted request, as a hold of its own.
    let lapsed = wait_for_status(&stack, ids[1], lapser, "expired").await;
    let late_by = now_ms() - deadline_ms(&lapsed);
    eprintln!("the hold was seen expired {late_by} ms after its deadline");
    assert!(late_by < 5_000, "expired {late_by} ms late");
    let promoted = wait_for_status(&stack, ids[2], &users[2].1, "held").await;
    assert!(promoted["promotedAt"].is_string(), "{promoted}");
    assert!(deadline_ms(&promoted) > deadline_ms(&lapsed));
    assert_eq!(
        stack.status(ids[3], &users[3].1).await["status"],
        "waitlisted"
    );
    assert_eq!(stack.status(ids[0], keeper).await["status"], "confirmed");

    stack.wait_until_nothing_pending().await;
    stack.assert_invariants(goods).await;
}

/// Confirms decided only after the deadline, by a worker that came back late: the one
/// that arrived (its stream entry time) before the deadline wins; the one that arrived
/// after it is refused and ends its hold; the expiries that follow find no hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_is_judged_by_when_it_arrived_not_by_when_it_is_decided() {
    let stack = spawn_stack().await;
    let users = stack.customers("late", 3).await;
    let goods = goods_with_holds(&stack, 2, 4).await;
    let mut worker = stack.worker(&[]);
    let mut ids = Vec::new();
    for (user, token) in &users {
        ids.push(stack.book(goods, *user, token, 1).await.request_id);
    }
    let (early, late, waiting) = (&users[0].1, &users[1].1, &users[2].1);
    let held = wait_for_status(&stack, ids[0], early, "held").await;
    wait_for_status(&stack, ids[1], late, "held").await;
    wait_for_status(&stack, ids[2], waiting, "waitlisted").await;
    worker.kill().await.expect("kill");
    let in_time = confirm(&stack, goods, early).await;
    assert!(now_ms() < deadline_ms(&held), "sent before the deadline");
    wait_until(
        "the deadline has passed",
        Duration::from_secs(10),
        || async { now_ms() > deadline_ms(&held) + 200 },
    )
    .await;
    let too_late = confirm(&stack, goods, late).await;

    let _worker = stack.worker(&[]);
    let answer = wait_for_status(&stack, in_time, early, "confirmed").await;
    assert_eq!(answer["bookingId"], held["bookingId"]);
    assert_eq!(stack.status(ids[0], early).await["status"], "confirmed");
    let refused = wait_for_status(&stack, too_late, late, "rejected").await;
    assert_eq!(refused["reason"], "hold_expired");
    assert_eq!(stack.status(ids[1], late).await["status"], "expired");
    // The seat it gave back went to the waitlist, as a hold.
    wait_for_status(&stack, ids[2], waiting, "held").await;
    stack.wait_until_nothing_pending().await;
    let rows = stack.assert_invariants(goods).await;
    assert!(
        rows.iter().all(|r| r.kind != RequestKind::Expire
            || r.user_id == users[2].0
            || r.decision == Decision::Rejected(RejectReason::NoHold)),
        "no expiry ended a hold a confirm had ended"
    );
}

/// Holds outstanding when their worker is killed: the next owners expire each exactly
/// once, and the seats go down the waitlist, hold after hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_outstanding_when_their_worker_dies_expire_once_each_under_the_next_owners() {
    let stack = spawn_stack().await;
    let users = stack.customers("orphan", 6).await;
    let goods = goods_with_holds(&stack, 3, 1).await;
    let mut first = stack.worker(&[]);
    let mut ids = Vec::new();
    for (user, token) in &users {
        ids.push(stack.book(goods, *user, token, 1).await.request_id);
    }
    stack.wait_for_decisions(6).await;
    first.kill().await.expect("kill");
    let _second = stack.worker(&[]);
    let _third = stack.worker(&[]);
    for (id, (_, token)) in ids.iter().zip(&users) {
        wait_for_status(&stack, *id, token, "expired").await;
    }
    stack.wait_until_nothing_pending().await;
    let rows = stack.assert_invariants(goods).await;
    let expired: Vec<_> = rows
        .iter()
        .filter(|r| r.kind == RequestKind::Expire && r.decision == Decision::Expired)
        .collect();
    assert_eq!(expired.len(), 6, "every hold expired exactly once");
    let promoted = rows
        .iter()
        .filter(|r| r.kind == RequestKind::Book && r.promoted_at_s.is_some())
        .count();
    assert_eq!(promoted, 3, "the three waitlisted got the seats in turn");
    assert_eq!(stack.seats(goods).await.0, 0, "every seat back");
}
