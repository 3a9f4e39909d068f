use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use test_support::{
    shared::auth::{Claims, Role, TokenKeys},
    token_keys, wait_until,
};

use crate::helpers::{assert_error, assert_invalid_field, parts, spawn_app, TestApp};

fn signup_body(email: &str, nickname: &str) -> serde_json::Value {
    json!({ "email": email, "password": "Str0ng!pw", "nickname": nickname })
}

#[tokio::test]
async fn signup_creates_a_customer_and_login_returns_a_token_and_cookie() {
    let app = spawn_app().await;
    let (status, body) = parts(
        app.post_json(
            "/api/auth/signup",
            &signup_body("fan@example.com", "fan"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["email"], "fan@example.com");
    assert_eq!(body["nickname"], "fan");
    assert_eq!(body["role"], "customer");
    assert!(body.get("password").is_none() && body.get("passwordHash").is_none());

    let response = app
        .post_json(
            "/api/auth/login",
            &json!({ "email": "FAN@example.com", "password": "Str0ng!pw" }),
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("set-cookie");
    let body: serde_json::Value = response.json().await.expect("json");
    let token = body["accessToken"].as_str().expect("accessToken");
    assert!(
        cookie.starts_with(&format!("Authorization={token}")),
        "{cookie}"
    );
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    let (user_id, role) = token_keys().verify(token).expect("valid token");
    assert_eq!(role, Role::Customer);
    assert_eq!(Some(user_id), body_id(&app, "fan@example.com").await);
}

async fn body_id(app: &crate::helpers::TestApp, email: &str) -> Option<i64> {
    app.db
        .client()
        .await
        .query_opt("SELECT id FROM users WHERE email = $1", &[&email])
        .await
        .expect("query")
        .map(|r| r.get(0))
}

#[tokio::test]
async fn duplicate_email_or_nickname_is_409() {
    let app = spawn_app().await;
    let first = app
        .post_json(
            "/api/auth/signup",
            &signup_body("a@example.com", "alpha"),
            None,
        )
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let (status, body) = parts(
        app.post_json(
            "/api/auth/signup",
            &signup_body("A@Example.com", "beta"),
            None,
        )
        .await,
    )
    .await;
    assert_error(status, &body, StatusCode::CONFLICT, "email_taken");
    let (status, body) = parts(
        app.post_json(
            "/api/auth/signup",
            &signup_body("b@example.com", "alpha"),
            None,
        )
        .await,
    )
    .await;
    assert_error(status, &body, StatusCode::CONFLICT, "nickname_taken");
}

#[tokio::test]
async fn invalid_signup_fields_are_400_naming_the_field() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"email": "not-an-email", "password": "Str0ng!pw", "nickname": "n"}),
            "email",
        ),
        (
            json!({"email": "a@b.co", "password": "weakpass", "nickname": "n"}),
            "password",
        ),
        (
            json!({"email": "a@b.co", "password": "NoDigits!", "nickname": "n"}),
            "password",
        ),
        (
            json!({"email": "a@b.co", "password": "Str0ng!pw", "nickname": ""}),
            "nickname",
        ),
        (
            json!({"email": "a@b.co", "password": "Str0ng!pw", "nickname": "has space"}),
            "nickname",
        ),
        (
            json!({"email": "a@b.co", "password": "Str0ng!pw", "nickname": "elevenchars"}),
            "nickname",
        ),
    ];
    for (body, field) in cases {
        let (status, response) = parts(app.post_json("/api/auth/signup", &body, None).await).await;
        assert_invalid_field(status, &response, field);
    }
    let users = app.db.count("users").await;
    assert_eq!(users, 0);
}

#[tokio::test]
async fn wrong_email_and_wrong_password_get_the_same_401() {
    let app = spawn_app().await;
    app.post_json("/api/auth/signup", &signup_body("x@example.com", "x"), None)
        .await;
    let (s1, b1) = parts(
        app.post_json(
            "/api/auth/login",
            &json!({"email": "x@example.com", "password": "Wr0ng!pw"}),
            None,
        )
        .await,
    )
    .await;
    let (s2, b2) = parts(
        app.post_json(
            "/api/auth/login",
            &json!({"email": "nobody@example.com", "password": "Str0ng!pw"}),
            None,
        )
        .await,
    )
    .await;
    assert_error(s1, &b1, StatusCode::UNAUTHORIZED, "invalid_credentials");
    assert_eq!(b1, b2);
    assert_eq!(s2, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn missing_bad_and_expired_tokens_are_401() {
    let app = spawn_app().await;
    let (_, org) = app.organizer().await;
    let goods = app.create_goods_as(&org, 10, 1).await;
    let user = app.customers("c", 1).await.remove(0).0;
    let forged = TokenKeys::new(&"another-secret".to_owned().into(), Duration::from_secs(60))
        .mint(user, Role::Customer)
        .expect("mint");
    let expired = token_keys()
        .mint_claims(&Claims {
            sub: user.to_string(),
            role: Role::Customer,
            iat: 1,
            exp: 2,
        })
        .expect("mint");
    let path = format!("/api/goods/{goods}/bookings");
    for (token, message) in [
        (None, "missing access token"),
        (Some(forged.as_str()), "access token invalid"),
        (Some("garbage"), "access token invalid"),
        (Some(expired.as_str()), "access token expired"),
    ] {
        let (status, body) = parts(app.post_json(&path, &json!({}), token).await).await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(body["error"]["message"], message);
    }
    assert!(app.redis.keys().await.is_empty(), "nothing enqueued");
}

#[tokio::test]
async fn the_token_of_a_deleted_user_stops_working() {
    let app = spawn_app().await;
    let (_, org) = app.organizer().await;
    let goods = app.create_goods_as(&org, 10, 1).await;
    let (user, token) = app.customers("d", 1).await.remove(0);
    app.db
        .client()
        .await
        .execute(
            "UPDATE users SET deleted_at = now() WHERE id = $1",
            &[&user],
        )
        .await
        .expect("delete user");
    let path = format!("/api/goods/{goods}/bookings");
    wait_until(
        "the deleted user's token is refused",
        Duration::from_secs(10),
        || async {
            app.post_json(&path, &json!({}), Some(&token))
                .await
                .status()
                == StatusCode::UNAUTHORIZED
        },
    )
    .await;
    let (status, body) = parts(app.post_json(&path, &json!({}), Some(&token)).await).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
}

/// Whether the API refuses `token` as a revoked one.
async fn refused(app: &TestApp, goods: i64, token: &str) -> bool {
    let path = format!("/api/goods/{goods}/bookings");
    app.post_json(&path, &json!({}), Some(token)).await.status() == StatusCode::UNAUTHORIZED
}

/// The API picks up deleted users incrementally: a deletion committed after a refresh
/// by a transaction that began before it, stamped with a `deleted_at` far older than
/// that refresh (a long transaction's `now()` is its start time), still revokes.
#[tokio::test]
async fn a_deletion_committed_late_by_an_older_transaction_still_revokes_the_token() {
    let app = spawn_app().await;
    let (_, org) = app.organizer().await;
    let goods = app.create_goods_as(&org, 10, 1).await;
    let mut users = app.customers("late", 2).await;
    let (_, marker_token) = users.pop().expect("second user");
    let (late, late_token) = users.pop().expect("first user");

    let mut client = app.db.client().await;
    let slow = client.transaction().await.expect("begin");
    slow.execute(
        "UPDATE users SET deleted_at = now() - interval '1 day' WHERE id = $1",
        &[&late],
    )
    .await
    .expect("delete inside the open transaction");

    // Another user deleted through the operator path and committed: once their token
    // is refused, a refresh has run while the slow transaction was open.
    let pool = test_support::shared::db::build_pool(&app.db.config()).expect("pool");
    let deleted = test_support::shared::db::delete_user(&pool, "late2@load.invalid")
        .await
        .expect("delete the marker user");
    assert!(deleted, "the marker user exists");
    wait_until(
        "the committed deletion is picked up",
        Duration::from_secs(10),
        || refused(&app, goods, &marker_token),
    )
    .await;
    assert!(
        !refused(&app, goods, &late_token).await,
        "an uncommitted deletion revokes nothing"
    );

    slow.commit().await.expect("commit");
    wait_until(
        "the late-committed deletion is picked up",
        Duration::from_secs(10),
        || refused(&app, goods, &late_token),
    )
    .await;
}

#[tokio::test]
async fn the_authorization_cookie_authenticates_like_the_header() {
    let app = spawn_app().await;
    let (_, org) = app.organizer().await;
    let goods = app.create_goods_as(&org, 10, 1).await;
    let (_, token) = app.customers("k", 1).await.remove(0);
    for cookie in [
        format!("Authorization={token}"),
        format!("Authorization=Bearer%20{token}"),
    ] {
        let response = app
            .http
            .post(app.url(&format!("/api/goods/{goods}/bookings")))
            .header("cookie", cookie)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
}

#[tokio::test]
async fn a_customer_cannot_create_goods_but_a_promoted_one_can() {
    let app = spawn_app().await;
    let (user, token) = app.customers("p", 1).await.remove(0);
    let body = json!({
        "title": "t", "content": "", "price": 0, "imgUrl": "",
        "showDate": "2026-12-24", "bookingLimit": 1
    });
    let (status, response) = parts(app.post_json("/api/goods", &body, Some(&token)).await).await;
    assert_error(status, &response, StatusCode::FORBIDDEN, "forbidden");
    test_support::make_organizer(&app.db, user).await;
    // The token still says "customer"; the database is the truth.
    let response = app.post_json("/api/goods", &body, Some(&token)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
}
