//! Bad input gets a clear 4xx in the API's error format and changes nothing.

use reqwest::StatusCode;

use crate::helpers::{assert_error, parts, spawn_app, TestApp};

async fn raw_post(
    app: &TestApp,
    path: &str,
    token: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, serde_json::Value) {
    let mut request = app.http.post(app.url(path)).bearer_auth(token).body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    parts(request.send().await.expect("send")).await
}

#[tokio::test]
async fn malformed_booking_requests_are_4xx_and_write_nothing() {
    let app = spawn_app().await;
    let (_, org) = app.organizer().await;
    let goods = app.create_goods_as(&org, 10, 2).await;
    let (_, token) = app.customers("x", 1).await.remove(0);
    let path = format!("/api/goods/{goods}/bookings");
    let json = Some("application/json");

    // (path, content type, body, status, code, text the message must contain)
    type Case<'a> = (
        String,
        Option<&'a str>,
        String,
        StatusCode,
        &'a str,
        &'a str,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            "/api/goods/abc/bookings".into(),
            json,
            "{}".into(),
            StatusCode::BAD_REQUEST,
            "invalid_path",
            "abc",
        ),
        (
            "/api/goods/0/bookings".into(),
            json,
            "{}".into(),
            StatusCode::BAD_REQUEST,
            "invalid_path",
            "positive",
        ),
        (
            "/api/goods/-7/bookings".into(),
            json,
            "{}".into(),
            StatusCode::BAD_REQUEST,
            "invalid_path",
            "positive",
        ),
        (
            "/api/goods/99999999999999999999/bookings".into(),
            json,
            "{}".into(),
            StatusCode::BAD_REQUEST,
            "invalid_path",
            "positive",
        ),
        (
            path.clone(),
            json,
            "{\"quantity\":".into(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "EOF",
        ),
        (
            path.clone(),
            json,
            "[1,2]".into(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "object",
        ),
        (
            path.clone(),
            json,
            "{\"quantity\":\"two\"}".into(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "quantity",
        ),
        (
            path.clone(),
            json,
            "{\"quantity\":1.5}".into(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "quantity",
        ),
        (
            path.clone(),
            json,
            "{\"qty\":1}".into(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "qty",
        ),
        (
            path.clone(),
            Some("text/plain"),
            "{\"quantity\":1}".into(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "application/json",
        ),
        (
            path.clone(),
            None,
            "{\"quantity\":1}".into(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "application/json",
        ),
        (
            path.clone(),
            json,
            format!("{{\"quantity\":1,\"pad\":\"{}\"}}", "x".repeat(20_000)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "bytes",
        ),
    ];
    for (path, content_type, body, status, code, needle) in cases {
        let (got, response) = raw_post(&app, &path, &token, content_type, body.clone()).await;
        assert_error(got, &response, status, code);
        let message = response["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(needle),
            "{path} {body:.60}: message `{message}` lacks `{needle}`"
        );
    }
    assert!(app.redis.keys().await.is_empty(), "nothing enqueued");
    assert_eq!(app.booking_rows().await, (0, 0));
}

#[tokio::test]
async fn malformed_account_and_status_requests_are_4xx() {
    let app = spawn_app().await;
    let (_, token) = app.customers("y", 1).await.remove(0);
    let json = Some("application/json");
    let (status, body) = raw_post(
        &app,
        "/api/auth/signup",
        &token,
        json,
        r#"{"email":"a@b.co","nickname":"n"}"#,
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_json");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("password")),
        "{body}"
    );
    let (status, body) = raw_post(
        &app,
        "/api/auth/signup",
        &token,
        json,
        r#"{"email":5,"password":"Str0ng!pw","nickname":"n"}"#,
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_json");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("email")),
        "{body}"
    );
    let (status, body) = raw_post(&app, "/api/auth/login", &token, json, "").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_json");

    let (status, body) = parts(
        app.get("/api/bookings/requests/not-a-uuid", Some(&token))
            .await,
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_path");
    let (status, body) = parts(app.get("/api/goods/1x", None).await).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_path");
    let users = app.db.count("users").await;
    assert_eq!(users, 1, "only the test's own user");
}

/// PostgreSQL cannot store or compare a NUL character: one in a text field is refused
/// as invalid input, not passed on to become a 500 (schemathesis found the goods case).
#[tokio::test]
async fn a_nul_character_in_text_is_a_4xx_never_a_5xx() {
    let app = spawn_app().await;
    let (_, org) = app.organizer().await;
    let goods = serde_json::json!({
        "title": "Show", "content": "a\u{0}b", "price": 1, "imgUrl": "",
        "showDate": "2026-12-24", "bookingLimit": 1,
    });
    let (status, body) = parts(app.post_json("/api/goods", &goods, Some(&org)).await).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "validation_failed");
    assert_eq!(body["error"]["field"], "content");
    let id = app.create_goods_as(&org, 1, 1).await;
    let (status, body) = app
        .patch_goods(id, &org, &serde_json::json!({ "title": "\u{0}" }))
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "validation_failed");
    let (status, body) = parts(
        app.post_json(
            "/api/auth/signup",
            &serde_json::json!({"email": "a\u{0}@example.com", "password": "Str0ng!pw",
                "nickname": "nul"}),
            None,
        )
        .await,
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "validation_failed");
    let (status, body) = parts(
        app.post_json(
            "/api/auth/login",
            &serde_json::json!({"email": "a\u{0}@example.com", "password": "Str0ng!pw"}),
            None,
        )
        .await,
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
}
