//! Abuse limits: a per-user budget for bookings (in Redis, shared by API copies), a
//! per-address budget for signups and logins, and a Redis that could evict accepted
//! bookings refused at startup.

use reqwest::StatusCode;
use serde_json::json;
use test_support::{
    servers::RedisServer,
    shared::config::{ApiConfig, RateLimit},
    TestRedis,
};

use crate::helpers::{assert_error, parts, TestApp};

fn retry_after(response: &reqwest::Response) -> u64 {
    response.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("whole seconds")
}

async fn app(adjust: impl FnOnce(&mut ApiConfig) + 'static) -> TestApp {
    TestApp::builder()
        .shards(2)
        .api_config(adjust)
        .spawn()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_over_their_booking_budget_gets_429_with_retry_after_and_nothing_is_enqueued() {
    let app = app(|c| {
        c.http.user_rate = Some(RateLimit::per(1, std::time::Duration::from_secs(60), 3));
    })
    .await;
    let goods = app.create_goods(10, 1).await;
    let users = app.customers("budget", 2).await;
    let (_, token) = &users[0];
    for _ in 0..3 {
        let response = app.post_booking(goods, token, None).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    let response = app.post_booking(goods, token, None).await;
    let wait = retry_after(&response);
    assert!((55..=60).contains(&wait), "Retry-After {wait}");
    let (status, body) = parts(response).await;
    assert_error(status, &body, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let stream = app.keys().stream(app.shard_of(goods));
    assert_eq!(
        app.stream_entries(&stream).await.len(),
        3,
        "the refusal enqueued nothing"
    );

    let (_, other) = &users[1];
    let response = app.post_booking(goods, other, None).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED, "a budget per user");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_gets_its_burst_of_logins_and_signups_then_429() {
    let app = app(|c| {
        c.http.auth_rate = Some(RateLimit::per(1, std::time::Duration::from_secs(60), 2));
        c.http.trust_forwarded_for = true;
    })
    .await;
    let login = json!({ "email": "nobody@example.com", "password": "Wrong-passw0rd" });
    let from = |address: &'static str| {
        let request = app
            .http
            .post(app.url("/api/auth/login"))
            .json(&login)
            .header("x-forwarded-for", format!("198.51.100.1, {address}"));
        async move { request.send().await.expect("send") }
    };
    for _ in 0..2 {
        let (status, body) = parts(from("203.0.113.5").await).await;
        assert_error(
            status,
            &body,
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        );
    }
    let response = from("203.0.113.5").await;
    let wait = retry_after(&response);
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    let (status, body) = parts(response).await;
    assert_error(status, &body, StatusCode::TOO_MANY_REQUESTS, "rate_limited");

    // Signups share the address's budget.
    let signup = app
        .http
        .post(app.url("/api/auth/signup"))
        .header("x-forwarded-for", "203.0.113.5")
        .json(
            &json!({ "email": "new@example.com", "password": "Passw0rd!x", "nickname": "newbie" }),
        )
        .send()
        .await
        .expect("send");
    let (status, body) = parts(signup).await;
    assert_error(status, &body, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert_eq!(
        app.db.count("users").await,
        0,
        "the refused signup wrote nothing"
    );

    // Another client behind the same proxy has a budget of its own.
    let (status, body) = parts(from("203.0.113.6").await).await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
}

/// An evicting Redis could drop accepted bookings: the API refuses to start on one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_to_start_on_a_redis_that_may_evict_keys() {
    let server = RedisServer::start(false).await;
    let redis = TestRedis::on(server.url());
    let mut conn = redis.connection().await;
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory-policy", "allkeys-lru"])
        .query_async(&mut conn)
        .await
        .expect("config set");
    let db = test_support::TestDatabase::new().await;
    let config = test_support::api_config(&db, &redis, 2);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let error = pub_api::startup::Application::build_with_listener(config, listener)
        .await
        .err()
        .expect("refused to start");
    let message = test_support::shared::error::display_chain(&error);
    assert!(
        message.contains("`allkeys-lru`") && message.contains("noeviction"),
        "{message}"
    );
}

/// The shipped HAProxy example (with its stick-table limit) is a configuration HAProxy
/// accepts.
#[tokio::test]
async fn the_shipped_haproxy_config_is_valid() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/haproxy.cfg");
    let output = tokio::process::Command::new("haproxy")
        .args(["-c", "-f", config])
        .output()
        .await
        .expect("run haproxy (scripts/services.sh installs it)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
