//! Goods management: the organizer who created a goods changes or removes it, nobody
//! else; a goods with live bookings stays; requests for a removed one are rejected.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_error, parts, spawn_stack, Stack};

async fn delete(stack: &Stack, path: &str, token: &str) -> (StatusCode, Value) {
    parts(
        stack
            .http
            .delete(stack.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("send"),
    )
    .await
}

async fn detail(stack: &Stack, goods: i64) -> (StatusCode, Value) {
    parts(stack.get(&format!("/api/goods/{goods}"), None).await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_organizer_who_created_a_goods_changes_it() {
    let stack = spawn_stack().await;
    let (owner_id, owner) = stack.organizer().await;
    let (_, rival) = stack.organizer().await;
    let (_, customer) = stack.customers("patcher", 1).await.remove(0);
    let goods = stack.create_goods_as(&owner, 10, 2).await;
    let (_, before) = detail(&stack, goods).await;

    let change = json!({ "title": "Moved show", "maxPerBooking": 4 });
    let (status, body) = stack.patch_goods(goods, &rival, &change).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    let (status, body) = stack.patch_goods(goods, &customer, &change).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    let (status, body) = stack.patch_goods(999_999, &owner, &change).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "goods_not_found");
    let (status, body) = delete(&stack, &format!("/api/goods/{goods}"), &rival).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    // Bad changes: refused whole, naming the field.
    for (bad, field) in [
        (json!({ "maxPerBooking": 0 }), "maxPerBooking"),
        (json!({ "title": "" }), "title"),
        (json!({ "bookingLimit": 0 }), "bookingLimit"),
        (json!({ "maxPerBooking": 11 }), "maxPerBooking"),
        (json!({ "holdSeconds": 86_401 }), "holdSeconds"),
        (
            json!({ "saleOpensAt": "2030-01-02T00:00:00Z", "saleClosesAt": "2030-01-01T00:00:00Z" }),
            "saleClosesAt",
        ),
    ] {
        let (status, body) = stack.patch_goods(goods, &owner, &bad).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "validation_failed");
        assert_eq!(body["error"]["field"], field, "{body}");
    }
    let (status, body) = stack
        .patch_goods(goods, &owner, &json!({ "seats": 60 }))
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_json");
    assert_eq!(detail(&stack, goods).await.1, before, "nothing changed");

    let (status, body) = stack.patch_goods(goods, &owner, &change).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["title"], "Moved show");
    assert_eq!(body["maxPerBooking"], 4);
    assert_eq!(body["content"], before["content"], "the rest unchanged");
    assert_eq!(body["bookingLimit"], 10);
    assert_eq!(detail(&stack, goods).await.1, body);

    // A window set, then one bound removed with null.
    let window =
        json!({ "saleOpensAt": "2030-01-01T00:00:00Z", "saleClosesAt": "2030-02-01T00:00:00Z" });
    let (status, body) = stack.patch_goods(goods, &owner, &window).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["saleOpensAt"], "2030-01-01T00:00:00Z");
    // The change is served at once by this API copy: the sale is not open now.
    let (status, body) = parts(stack.post_booking(goods, &customer, Some(4)).await).await;
    assert_error(status, &body, StatusCode::CONFLICT, "sale_not_open");
    let (status, body) = stack
        .patch_goods(goods, &owner, &json!({ "saleOpensAt": null }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["saleOpensAt"], Value::Null);
    assert_eq!(body["saleClosesAt"], "2030-02-01T00:00:00Z");
    let (status, body) = parts(stack.post_booking(goods, &customer, Some(4)).await).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "the new maxPerBooking: {body}"
    );

    // Ownership does not outlive the role: a demoted organizer changes nothing.
    stack
        .db
        .client()
        .await
        .execute(
            "UPDATE users SET role = 'customer' WHERE id = $1",
            &[&owner_id],
        )
        .await
        .expect("demote");
    let (status, body) = stack
        .patch_goods(goods, &owner, &json!({ "title": "Mine" }))
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goods_with_live_bookings_stays_and_one_without_is_removed() {
    let stack = spawn_stack().await;
    let (_, owner) = stack.organizer().await;
    let users = stack.customers("remover", 2).await;
    let (user, token) = &users[0];

    // A booking queued for a goods removed before the worker gets to it.
    let doomed = stack.create_goods_as(&owner, 5, 1).await;
    let keyed = || {
        stack
            .http
            .post(stack.url(&format!("/api/goods/{doomed}/bookings")))
            .bearer_auth(token)
            .header("idempotency-key", "before-the-delete")
            .send()
    };
    let (status, body) = parts(keyed().await.expect("send")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let queued = body["requestId"].as_str().expect("id").to_owned();
    let (status, body) = delete(&stack, &format!("/api/goods/{doomed}"), &owner).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    let goods = stack.create_goods_as(&owner, 5, 1).await;
    let booked = stack.book(goods, *user, token, 1).await.request_id;
    let _worker = stack.worker(&[]);
    stack.wait_for_decisions(2).await;
    stack.wait_until_nothing_pending().await;
    let rejected = stack.status(&queued, token).await;
    assert_eq!(rejected["status"], "rejected", "{rejected}");
    assert_eq!(rejected["reason"], "goods_not_found");
    // Its retry gets the request it made, not a 404 for the goods now gone.
    let (status, body) = parts(keyed().await.expect("send")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["requestId"], queued.as_str());
    assert_eq!(body["status"], "rejected");
    assert_eq!(stack.status(booked, token).await["status"], "confirmed");

    let path = format!("/api/goods/{goods}");
    let (status, body) = delete(&stack, &path, &owner).await;
    assert_error(status, &body, StatusCode::CONFLICT, "goods_has_bookings");
    assert_eq!(detail(&stack, goods).await.0, StatusCode::OK, "still there");

    let (status, body) = delete(&stack, &format!("/api/goods/{goods}/bookings/me"), token).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    stack.wait_for_decisions(3).await;
    let (status, body) = delete(&stack, &path, &owner).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    let (status, body) = detail(&stack, goods).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "goods_not_found");
    let (status, body) = parts(stack.post_booking(goods, &users[1].1, None).await).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "goods_not_found");
    let (status, body) = delete(&stack, &path, &owner).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "goods_not_found");
    let listed = parts(stack.get("/api/goods", None).await).await.1;
    assert!(
        listed
            .as_array()
            .expect("a bare array")
            .iter()
            .all(|g| g["id"] != goods && g["id"] != doomed),
        "{listed}"
    );
    // The history stays: the cancelled booking and the decision log.
    let client = stack.db.client().await;
    let kept: i64 = client
        .query_one(
            "SELECT count(*) FROM bookings WHERE goods_id = $1 AND status = 'cancelled'",
            &[&goods],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(kept, 1);
    stack.assert_invariants(goods).await;
    stack.assert_invariants(doomed).await;
}

/// A keyed request still queued when its goods changes or goes: its retry is answered
/// with the request it made, not refused by the goods as it is now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_retry_of_a_queued_request_outlives_a_change_of_its_goods() {
    let stack = spawn_stack().await;
    let (_, owner) = stack.organizer().await;
    let (_, token) = stack.customers("outlive", 1).await.remove(0);
    let goods = stack.create_goods_as(&owner, 5, 4).await;
    let send = || {
        stack
            .http
            .post(stack.url(&format!("/api/goods/{goods}/bookings")))
            .bearer_auth(&token)
            .header("idempotency-key", "three-seats")
            .json(&json!({ "quantity": 3 }))
            .send()
    };
    let (status, first) = parts(send().await.expect("send")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");

    let (status, body) = stack
        .patch_goods(goods, &owner, &json!({ "maxPerBooking": 2 }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, again) = parts(send().await.expect("send")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["requestId"], first["requestId"]);
    assert_eq!(again["status"], "queued");

    let (status, body) = delete(&stack, &format!("/api/goods/{goods}"), &owner).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, again) = parts(send().await.expect("send")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["requestId"], first["requestId"]);
    // A new request is still refused.
    let (status, body) = parts(stack.post_booking(goods, &token, Some(1)).await).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "goods_not_found");

    let _worker = stack.worker(&[]);
    stack.wait_for_decisions(1).await;
    let decided = stack
        .status(first["requestId"].as_str().expect("id"), &token)
        .await;
    assert_eq!(decided["reason"], "goods_not_found", "{decided}");
}
