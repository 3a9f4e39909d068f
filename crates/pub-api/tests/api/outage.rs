//! The API with Redis gone: fast 503s in the API's error format, never a hang or a 500.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use test_support::{servers::RedisServer, TestRedis};

use crate::helpers::{assert_error, parts, spawn_app_on};

const TIMEOUT: Duration = Duration::from_millis(300);
/// Slack for scheduling on a busy machine; the point is "bounded", not "fast".
const SLACK: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_unreachable_bookings_and_status_get_503_within_the_timeout_and_readyz_fails() {
    let mut server = RedisServer::start(false).await;
    let app = spawn_app_on(TestRedis::on(server.url()), |c| c.redis.timeout = TIMEOUT).await;
    let (_, org) = app.organizer().await;
    let goods = app.create_goods_as(&org, 10, 1).await;
    let (_, token) = app.customers("r", 1).await.remove(0);
    assert_eq!(
        app.post_booking(goods, &token, None).await.status(),
        StatusCode::ACCEPTED
    );

    server.kill().await;
    let started = Instant::now();
    let (status, body) = parts(app.post_booking(goods, &token, None).await).await;
    let took = started.elapsed();
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "queue_unavailable",
    );
    assert!(took < TIMEOUT + SLACK, "answered after {took:?}");

    // An id the API could have made (its last two bytes name the goods' shard): the
    // status must come from Redis, which is gone.
    let request = test_support::shared::keys::Keys::new_request_id(app.shard_of(goods));
    let (status, body) = app.poll(request, &token).await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "queue_unavailable",
    );

    let started = Instant::now();
    let (status, body) = parts(app.get("/readyz", None).await).await;
    assert_error(status, &body, StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    assert_eq!(body["checks"]["postgres"], "ok");
    assert_ne!(body["checks"]["redis"], "ok");
    assert!(started.elapsed() < Duration::from_secs(2) + SLACK);

    // Redis back: bookings flow again without restarting the API.
    server.start_again().await;
    test_support::wait_until(
        "bookings accepted again",
        Duration::from_secs(30),
        || async { app.post_booking(goods, &token, None).await.status() == StatusCode::ACCEPTED },
    )
    .await;
}
