//! `GET /api/me/bookings`: the caller's bookings of every state, newest first, with
//! the goods' title, a hold's deadline and an exact waitlist position.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_error, page_parts, parts, spawn_stack, Stack};

/// The caller's bookings page at `path`: the array and the `Link` header.
async fn mine(stack: &Stack, path: &str, token: &str) -> (Vec<Value>, Option<String>) {
    let response = stack.get(path, Some(token)).await;
    assert_eq!(
        response.headers()["cache-control"],
        "private, no-store",
        "personal: never in a shared cache"
    );
    let (status, body, link) = page_parts(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (body.as_array().expect("a bare array").clone(), link)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn my_bookings_lists_every_state_newest_first_with_positions_and_deadlines() {
    let stack = spawn_stack().await;
    let (_, owner) = stack.organizer().await;
    let users = stack.customers("mine", 3).await;
    let (u, v, w) = (&users[0], &users[1], &users[2]);
    let hall = stack.create_goods_as(&owner, 1, 1).await;
    let held = stack.create_goods_as(&owner, 1, 1).await;
    let (status, body) = stack
        .patch_goods(held, &owner, &json!({ "holdSeconds": 600 }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let _worker = stack.worker(&[]);
    for (user, token) in [u, v, w] {
        stack.book(hall, *user, token, 1).await;
    }
    // Newest first is the order bookings were made in; the two goods may sit on
    // different shards, decided side by side: make u's second booking the later one.
    stack.wait_for_decisions(3).await;
    stack.book(held, u.0, &u.1, 1).await;
    stack.wait_for_decisions(4).await;

    let (list, _) = mine(&stack, "/api/me/bookings", &w.1).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["status"], "waitlisted");
    assert_eq!(list[0]["waitlistPosition"], 2);
    assert_eq!(list[0]["goodsId"], hall);
    assert_eq!(list[0]["goodsTitle"], "Sold-out show");

    // User u gives up the seat: v is promoted, w moves up.
    let (status, body) = stack.cancel_booking(hall, &u.1).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    stack.wait_for_decisions(5).await;
    let (list, _) = mine(&stack, "/api/me/bookings", &w.1).await;
    assert_eq!(list[0]["waitlistPosition"], 1);
    let (list, _) = mine(&stack, "/api/me/bookings", &v.1).await;
    assert_eq!(list[0]["status"], "confirmed");
    assert!(list[0]["promotedAt"].is_string(), "{}", list[0]);
    assert!(list[0].get("waitlistPosition").is_none());

    // u's: the hold first (newest), then the cancelled booking; one per page.
    let (first, link) = mine(&stack, "/api/me/bookings?limit=1", &u.1).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["goodsId"], held);
    assert_eq!(first[0]["status"], "held");
    assert!(first[0]["holdExpiresAt"].is_string(), "{}", first[0]);
    let link = link.expect("a next page");
    let next = format!("/api/me/bookings?limit=1&cursor={}", first[0]["bookingId"]);
    assert_eq!(link, format!("<{next}>; rel=\"next\""));
    let (second, link) = mine(&stack, &next, &u.1).await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0]["goodsId"], hall);
    assert_eq!(second[0]["status"], "cancelled");
    assert_eq!(link, None, "the last page");

    let (status, body) = parts(stack.get("/api/me/bookings", None).await).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, body) = parts(stack.get("/api/me/bookings?limit=0", Some(&u.1)).await).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_query");
    let (status, body) = parts(stack.get("/api/me/bookings?cursor=-1", Some(&u.1)).await).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_query");
}
