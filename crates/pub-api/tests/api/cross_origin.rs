//! Cookie authentication stays for the original front end, so a browser on another
//! site could make a user's browser book with the user's cookie. State-changing
//! requests authenticated by cookie are refused when they come from another origin.

use reqwest::{header, StatusCode};
use test_support::{shared::auth::Role, TestRedis};

use crate::helpers::{assert_error, parts, spawn_app, spawn_app_on, TestApp};

/// Books with the token in the cookie, sending `headers`.
async fn book_with_cookie(
    app: &TestApp,
    goods: i64,
    token: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = app
        .http
        .post(app.url(&format!("/api/booking/{goods}")))
        .header(header::COOKIE, format!("Authorization={token}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("send")
}

#[tokio::test]
async fn a_cookie_authenticated_booking_from_another_origin_is_refused_and_enqueues_nothing() {
    let app = spawn_app().await;
    let (_, org) = app.organizer().await;
    let goods = app.create_goods_as(&org, 10, 1).await;
    let (user, token) = app.customers("xs", 1).await.remove(0);
    for headers in [
        [("origin", "https://evil.example")],
        [("referer", "https://evil.example/page?x=1")],
        [("origin", "null")],
    ] {
        let (status, body) = parts(book_with_cookie(&app, goods, &token, &headers).await).await;
        assert_error(status, &body, StatusCode::FORBIDDEN, "cross_origin_refused");
    }
    assert!(app.redis.keys().await.is_empty(), "nothing enqueued");

    // The API's own origin, no origin at all, and a token in the header are fine.
    let own = app.address.clone();
    for headers in [vec![("origin", own.as_str())], vec![]] {
        let response = book_with_cookie(&app, goods, &token, &headers).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    let response = app
        .http
        .post(app.url(&format!("/api/booking/{goods}")))
        .bearer_auth(test_support::token_for(user, Role::Customer))
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn an_origin_listed_in_ticketnest_cors_origins_may_book_by_cookie() {
    let app = spawn_app_on(TestRedis::new(), |c| {
        c.http.cors_origins = vec!["https://shop.example".into()];
    })
    .await;
    let (_, org) = app.organizer().await;
    let goods = app.create_goods_as(&org, 10, 1).await;
    let (_, token) = app.customers("cors", 1).await.remove(0);
    let response =
        book_with_cookie(&app, goods, &token, &[("origin", "https://shop.example")]).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let (status, body) = parts(
        book_with_cookie(
            &app,
            goods,
            &token,
            &[("origin", "https://shop.example.evil")],
        )
        .await,
    )
    .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "cross_origin_refused");
}
