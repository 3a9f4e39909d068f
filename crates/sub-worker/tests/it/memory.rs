//! Redis memory stays bounded: decided entries leave the stream, undecided ones never
//! do, and the API stops accepting before Redis reaches its memory limit.

use redis::AsyncCommands;
use reqwest::StatusCode;
use test_support::{servers::RedisServer, wait_until, TestDatabase, TestRedis};

use crate::helpers::{parts, spawn_stack, spawn_stack_on, Stack, DRAIN_DEADLINE};

async fn stream_len(stack: &Stack, goods: i64) -> usize {
    let stream = stack.keys().stream(stack.shard_of(goods));
    let mut conn = stack.redis.connection().await;
    conn.xlen(&stream).await.expect("xlen")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decided_entries_leave_the_stream_and_undecided_ones_stay() {
    let stack = spawn_stack().await;
    let goods = stack.create_goods(50, 1).await;
    let customers = stack.customers("trim", 300).await;

    // No worker: nothing is decided, so every accepted entry stays in the stream.
    let first = stack.book_all(goods, &customers[..100], 32).await;
    assert_eq!(first.len(), 100);
    assert_eq!(stream_len(&stack, goods).await, 100);

    // A worker decides them; the stream keeps at most the last delivered entry.
    let _worker = stack.worker(&[]);
    stack.wait_for_decisions(100).await;
    wait_until("decided entries are trimmed", DRAIN_DEADLINE, || async {
        stream_len(&stack, goods).await <= 1
    })
    .await;

    // Again while the worker runs: the stream does not grow with the sale.
    let rest = stack.book_all(goods, &customers[100..], 32).await;
    assert_eq!(rest.len(), 200);
    stack.wait_for_decisions(300).await;
    wait_until("decided entries are trimmed", DRAIN_DEADLINE, || async {
        stream_len(&stack, goods).await <= 1
    })
    .await;
    stack.assert_invariants(goods).await;
    stack.wait_until_nothing_pending().await;
}

/// With `TICKETNEST_STREAM_RETENTION_SECS`, decided entries stay that long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decided_entries_stay_for_the_configured_retention() {
    let stack = spawn_stack().await;
    let goods = stack.create_goods(50, 1).await;
    let customers = stack.customers("keep", 40).await;
    let _worker = stack.worker(&[("TICKETNEST_STREAM_RETENTION_SECS", "3600")]);
    stack.book_all(goods, &customers, 16).await;
    stack.wait_for_decisions(40).await;
    stack.wait_until_nothing_pending().await;
    assert_eq!(stream_len(&stack, goods).await, 40);
}

/// Redis with a memory limit: once it is nearly full, bookings get 503
/// `queue_memory_full` (nothing written), and are accepted again once memory is freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_are_refused_before_redis_runs_out_of_memory() {
    let server = RedisServer::start(false).await;
    let redis = TestRedis::on(server.url());
    let stack = spawn_stack_on(TestDatabase::new().await, redis, 2, |_| {}).await;
    let goods = stack.create_goods(10, 1).await;
    let customers = stack.customers("oom", 3).await;
    let mut conn = stack.redis.connection().await;
    // 60 MB of ballast, a megabyte at a time (so no big query buffer inflates the
    // reading below).
    let ballast = format!("{}:ballast", stack.redis.prefix());
    for _ in 0..60 {
        let _: () = conn
            .append(&ballast, vec![b'x'; 1 << 20])
            .await
            .expect("ballast");
    }
    // Redis at about 95% of its limit: over the API's 90%, with room left for writes.
    server.limit_memory_to(105).await;

    // The API samples memory every 200 ms: a booking or two may get in first.
    let (_, token) = &customers[0];
    wait_until("bookings are refused", DRAIN_DEADLINE, || async {
        let response = stack.post_booking(goods, token, None).await;
        if response.status() == StatusCode::ACCEPTED {
            return false;
        }
        let retry_after = response.headers().get("retry-after").cloned();
        let (status, body) = parts(response).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "queue_memory_full");
        assert_eq!(retry_after.expect("retry-after"), "1");
        true
    })
    .await;
    let accepted = stream_len(&stack, goods).await;
    for _ in 0..20 {
        let (status, body) = parts(stack.post_booking(goods, token, None).await).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "queue_memory_full");
    }
    assert_eq!(
        stream_len(&stack, goods).await,
        accepted,
        "refusals enqueue nothing"
    );

    let _: () = conn.del(&ballast).await.expect("del");
    wait_until("bookings are accepted again", DRAIN_DEADLINE, || async {
        stack.post_booking(goods, token, None).await.status() == StatusCode::ACCEPTED
    })
    .await;
}

/// Redis over its `maxmemory` (the API already refusing bookings) must not stop the
/// workers: a worker that dies then is replaced, and its successor takes the shard
/// (lease, membership, consumer group) and decides everything that was accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_works_while_redis_is_over_its_memory_limit() {
    let server = RedisServer::start(false).await;
    let redis = TestRedis::on(server.url());
    let stack = spawn_stack_on(TestDatabase::new().await, redis, 1, |_| {}).await;
    let goods = stack.create_goods(10, 1).await;
    let customers = stack.customers("oomtake", 40).await;
    let mut first = stack.worker(&[]);
    let early = stack.book_all(goods, &customers[..20], 8).await;
    stack.wait_for_decisions(early.len() as i64).await;
    first.start_kill().expect("kill -9");
    first.wait().await.expect("reap");
    let late = stack.book_all(goods, &customers[20..], 8).await;

    server.limit_memory_to(50).await;

    let _second = stack.worker(&[]);
    stack
        .wait_for_decisions((early.len() + late.len()) as i64)
        .await;
    stack.assert_invariants(goods).await;
    stack.wait_until_nothing_pending().await;
    assert!(
        stream_len(&stack, goods).await <= 1,
        "trimmed over the limit too"
    );
}
