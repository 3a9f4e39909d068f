use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_error, parts, spawn_app};

#[tokio::test]
async fn a_booking_is_accepted_enqueued_once_and_pollable_by_its_owner_only() {
    let app = spawn_app().await;
    let (_, org) = app.organizer().await;
    let goods = app.create_goods_as(&org, 10, 2).await;
    let mut users = app.customers("b", 2).await;
    let (other, other_token) = users.pop().expect("user");
    let (user, token) = users.pop().expect("user");
    assert_ne!(user, other);

    let response = app.post_booking(goods, &token, Some(2)).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["status"], "queued");
    let request_id = body["requestId"].as_str().expect("requestId").to_owned();
    assert_eq!(
        body["statusUrl"],
        format!("/api/bookings/requests/{request_id}")
    );
    assert_eq!(location, body["statusUrl"]);

    // Exactly one entry on the goods' shard stream, carrying the request.
    let stream = app.keys().stream(app.shard_of(goods));
    let entries = app.stream_entries(&stream).await;
    assert_eq!(entries.len(), 1);
    let fields = &entries[0];
    assert_eq!(fields["v"], "1");
    assert_eq!(fields["gid"], goods.to_string());
    assert_eq!(fields["uid"], user.to_string());
    assert_eq!(fields["qty"], "2");
    assert_eq!(fields["rid"], request_id.replace('-', ""));
    assert_eq!(fields["n"], "1", "the goods' first turn");

    let (status, body) = app.poll(&request_id, &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({ "requestId": request_id, "goodsId": goods, "kind": "book", "quantity": 2, "status": "queued", "position": 0 })
    );
    let (status, body) = app.poll(&request_id, &other_token).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "request_not_found");
    // The API never writes booking tables.
    assert_eq!(app.booking_rows().await, (0, 0));
}

#[tokio::test]
async fn the_original_compatibility_route_books_too() {
    let app = spawn_app().await;
    let (_, org) = app.organizer().await;
    let goods = app.create_goods_as(&org, 10, 1).await;
    let (_, token) = app.customers("o", 1).await.remove(0);
    let response = app
        .post_json(&format!("/api/booking/{goods}"), &json!({}), Some(&token))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn status_falls_back_to_postgres_when_the_redis_key_is_gone() {
    let app = spawn_app().await;
    let (_, org) = app.organizer().await;
    let goods = app.create_goods_as(&org, 10, 1).await;
    let (user, token) = app.customers("f", 1).await.remove(0);
    let request_id = uuid::Uuid::now_v7();
    // A decision the worker committed long ago, whose Redis status has expired.
    app.db
        .client()
        .await
        .execute(
            "INSERT INTO booking_requests (request_id, goods_id, user_id, quantity, shard, stream_id, \
             stream_ms, stream_seq, position, decision, reason, accepted_at) \
             VALUES ($1, $2, $3, 1, 0, '1-0', 1, 0, 1, 'rejected', 'already_booked', now())",
            &[&request_id, &goods, &user],
        )
        .await
        .expect("insert decision");
    let (status, body) = app.poll(&request_id, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "rejected");
    assert_eq!(body["reason"], "already_booked");
    let (status, body) = app.poll(uuid::Uuid::now_v7(), &token).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "request_not_found");
}

#[tokio::test]
async fn unknown_goods_is_404_and_quantities_outside_the_limit_are_400() {
    let app = spawn_app().await;
    let (_, org) = app.organizer().await;
    let goods = app.create_goods_as(&org, 10, 3).await;
    let (_, token) = app.customers("q", 1).await.remove(0);
    let (status, body) = parts(app.post_booking(goods + 1000, &token, None).await).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "goods_not_found");
    for quantity in [0, -1, 4, i64::MAX] {
        let (status, body) = parts(app.post_booking(goods, &token, Some(quantity)).await).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "validation_failed");
        assert_eq!(body["error"]["field"], "quantity");
    }
    assert!(app.redis.keys().await.is_empty(), "nothing enqueued");
}

#[tokio::test]
async fn a_booking_whose_body_is_json_null_books_one_seat_as_without_a_body() {
    let app = spawn_app().await;
    let goods = app.create_goods(10, 2).await;
    let (_, token) = app.customers("null", 1).await.remove(0);
    let (status, body) = parts(
        app.http
            .post(app.url(&format!("/api/goods/{goods}/bookings")))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body("null")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let stream = app.keys().stream(app.shard_of(goods));
    assert_eq!(app.stream_entries(&stream).await[0]["qty"], "1");
    // Without a JSON content type it is still refused, as any other body.
    let (status, body) = parts(
        app.http
            .post(app.url(&format!("/api/goods/{goods}/bookings")))
            .bearer_auth(&token)
            .body("null")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
}
