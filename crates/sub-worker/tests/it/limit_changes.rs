//! Booking limit changes, decided by the worker in order with the goods' bookings, and
//! the waitlist cap.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_error, parts, spawn_stack, Stack};

async fn detail(stack: &Stack, goods: i64) -> Value {
    let (status, body) = parts(stack.get(&format!("/api/goods/{goods}"), None).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The statuses of `requests` now, and whether each was promoted.
async fn statuses(stack: &Stack, requests: &[(uuid::Uuid, &str)]) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for (id, token) in requests {
        let s = stack.status(id, token).await;
        out.push((
            s["status"].as_str().unwrap_or_default().to_owned(),
            s["promotedAt"].is_string(),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raised_limit_promotes_the_waitlist_in_order_and_one_below_the_booked_seats_changes_nothing(
) {
    let stack = spawn_stack().await;
    let (_, owner) = stack.organizer().await;
    let users = stack.customers("raise", 5).await;
    let goods = stack.create_goods_as(&owner, 4, 3).await;
    let _worker = stack.worker(&[]);
    let mut requests = Vec::new();
    for ((user, token), quantity) in users.iter().zip([3, 3, 1, 2, 1]) {
        let id = stack.book(goods, *user, token, quantity).await.request_id;
        requests.push((id, token.as_str()));
    }
    stack.wait_for_decisions(5).await;
    let w = |s: &str| (s.to_owned(), false);
    assert_eq!(
        statuses(&stack, &requests).await,
        [
            w("confirmed"),
            w("waitlisted"),
            w("confirmed"),
            w("waitlisted"),
            w("waitlisted")
        ]
    );

    // Below the 4 seats booked: refused, nothing changed, nothing sent to the worker.
    let before = detail(&stack, goods).await;
    let (status, body) = stack
        .patch_goods(goods, &owner, &json!({ "bookingLimit": 3, "title": "x" }))
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "limit_below_booked");
    assert_eq!(detail(&stack, goods).await, before);
    // Above maxPerBooking's reach: a new limit still bounds maxPerBooking.
    let (status, body) = stack
        .patch_goods(goods, &owner, &json!({ "bookingLimit": 2 }))
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "validation_failed");
    assert_eq!(body["error"]["field"], "maxPerBooking");

    // Two seats more: the 3-seat request does not fit them, the 2-seat one does.
    let (status, body) = stack
        .patch_goods(
            goods,
            &owner,
            &json!({ "bookingLimit": 6, "title": "Bigger hall" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["bookingLimit"], 6);
    assert_eq!(body["title"], "Bigger hall");
    assert_eq!(body["bookingCount"], 6);
    assert_eq!(body["remaining"], 0);
    assert_eq!(body["waitlisted"], 2);
    assert_eq!(
        statuses(&stack, &requests).await,
        [
            w("confirmed"),
            w("waitlisted"),
            w("confirmed"),
            ("confirmed".to_owned(), true),
            w("waitlisted")
        ]
    );
    let rows = stack.assert_invariants(goods).await;
    let limit_rows: Vec<_> = rows
        .iter()
        .filter(|r| r.kind == shared::decision::RequestKind::Limit)
        .collect();
    assert_eq!(
        limit_rows.len(),
        1,
        "the refused change never reached the worker"
    );
    assert_eq!(limit_rows[0].quantity, 6);
    assert_eq!(limit_rows[0].position, Some(6), "it took its turn");
    let limit_before: Option<i32> = stack
        .db
        .client()
        .await
        .query_one(
            "SELECT limit_before FROM booking_requests WHERE request_id = $1",
            &[&limit_rows[0].request_id],
        )
        .await
        .expect("row")
        .get(0);
    assert_eq!(limit_before, Some(4));
}

/// The API's check passes, but bookings queued before the change take the seats: the
/// worker refuses it in order. PATCH stops waiting after its bound and answers 202,
/// having written nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_change_queued_behind_bookings_is_decided_after_them() {
    let stack = spawn_stack().await;
    let (_, owner) = stack.organizer().await;
    let users = stack.customers("behind", 2).await;
    let goods = stack.create_goods_as(&owner, 5, 2).await;
    for (user, token) in &users {
        stack.book(goods, *user, token, 2).await;
    }
    // No worker yet: the change is not decided within PATCH's wait.
    let (status, queued) = stack
        .patch_goods(
            goods,
            &owner,
            &json!({ "bookingLimit": 3, "content": "Smaller hall" }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    assert_eq!(queued["status"], "queued");
    let request = queued["requestId"].as_str().expect("requestId").to_owned();
    assert_eq!(
        queued["statusUrl"],
        format!("/api/bookings/requests/{request}")
    );

    let _worker = stack.worker(&[]);
    stack.wait_for_decisions(3).await;
    let decided = stack.status(&request, &owner).await;
    assert_eq!(decided["kind"], "limit", "{decided}");
    assert_eq!(decided["status"], "rejected", "{decided}");
    assert_eq!(decided["reason"], "limit_below_booked");
    assert_eq!(decided["quantity"], 3);
    let goods_now = detail(&stack, goods).await;
    assert_eq!(goods_now["bookingLimit"], 5);
    assert_eq!(goods_now["bookingCount"], 4);
    assert_eq!(
        goods_now["content"], "The one everyone wants",
        "a change whose limit was not decided in time writes nothing else"
    );
    // Nobody but the organizer reads the change's status.
    let (status, _) = parts(
        stack
            .get(
                &format!("/api/bookings/requests/{request}"),
                Some(&users[0].1),
            )
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    stack.assert_invariants(goods).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_waitlist_refuses_what_does_not_fit_and_lifting_the_cap_lets_them_wait() {
    let stack = spawn_stack().await;
    let (_, owner) = stack.organizer().await;
    let users = stack.customers("capped", 4).await;
    let goods = stack.create_goods_as(&owner, 1, 1).await;
    let (status, body) = stack
        .patch_goods(goods, &owner, &json!({ "waitlistLimit": 1 }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["waitlistLimit"], 1);
    let (status, body) = stack
        .patch_goods(goods, &owner, &json!({ "waitlistLimit": -1 }))
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "validation_failed");
    assert_eq!(body["error"]["field"], "waitlistLimit");

    let _worker = stack.worker(&[]);
    let mut requests = Vec::new();
    for (user, token) in &users[..3] {
        requests.push(stack.book(goods, *user, token, 1).await.request_id);
    }
    stack.wait_for_decisions(3).await;
    let third = stack.status(requests[2], &users[2].1).await;
    assert_eq!(third["status"], "rejected", "{third}");
    assert_eq!(third["reason"], "waitlist_full");
    assert_eq!(
        stack.status(requests[1], &users[1].1).await["status"],
        "waitlisted"
    );

    let (status, body) = stack
        .patch_goods(goods, &owner, &json!({ "waitlistLimit": null }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["waitlistLimit"], Value::Null);
    let fourth = stack
        .book(goods, users[3].0, &users[3].1, 1)
        .await
        .request_id;
    stack.wait_for_decisions(4).await;
    assert_eq!(
        stack.status(fourth, &users[3].1).await["status"],
        "waitlisted"
    );
    let now = detail(&stack, goods).await;
    assert_eq!(now["waitlisted"], 2);
    stack.assert_invariants(goods).await;
}
