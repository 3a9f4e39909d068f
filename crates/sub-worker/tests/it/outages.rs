//! PostgreSQL and Redis going away mid-sale, on private servers so that restarting
//! them disturbs no other test. Run one at a time (nextest group `resilience`).

use std::collections::HashSet;

use test_support::{
    servers::{PgServer, RedisServer},
    wait_until, TestDatabase, TestRedis,
};

use crate::helpers::{count_of, spawn_stack_on, Accepted, Stack, DRAIN_DEADLINE};
use test_support::shared::decision::Decision;

/// Every accepted request decided exactly once, the sale exact.
async fn assert_all_decided(stack: &Stack, goods: i64, accepted: &[Accepted], seats: usize) {
    stack.wait_for_decisions(accepted.len() as i64).await;
    let rows = stack.assert_invariants(goods).await;
    let decided: HashSet<uuid::Uuid> = rows.iter().map(|r| r.request_id).collect();
    let asked: HashSet<uuid::Uuid> = accepted.iter().map(|a| a.request_id).collect();
    assert_eq!(decided, asked, "exactly the accepted requests were decided");
    let confirmed = count_of(&rows, Decision::Confirmed);
    assert_eq!(confirmed, seats.min(accepted.len()));
    stack.wait_until_nothing_pending().await;
}

/// A 2,000-user sale for 400 seats during which `restart` runs (once 300 requests are
/// decided and while bookings still arrive); then every user got a 202 in the end
/// (clients retry 503s) and every accepted request is decided exactly once.
async fn sale_through_a_restart(
    stack: &Stack,
    tag: &str,
    restart: impl std::future::Future<Output = ()>,
) {
    let goods = stack.create_goods(400, 1).await;
    let users = stack.customers(tag, 2_000).await;
    let _worker = stack.worker(&[]);
    let sale = stack
        .booker()
        .spawn_sale(goods, users, 8, std::time::Duration::from_millis(1));
    wait_until("the sale is under way", DRAIN_DEADLINE, || async {
        stack.decided_count().await >= 300
    })
    .await;
    assert!(!sale.is_finished(), "the restart happens mid-sale");
    restart.await;
    let accepted = sale.await.expect("sale");
    assert_eq!(accepted.len(), 2_000, "every user got a 202 in the end");
    assert_all_decided(stack, goods, &accepted, 400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_mid_sale_loses_nothing_and_decides_nothing_twice() {
    let pg = PgServer::start().await;
    let db = TestDatabase::on_server(&pg).await;
    let stack = spawn_stack_on(db, TestRedis::new(), 4, |_| {}).await;
    sale_through_a_restart(&stack, "pgr", pg.restart()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_crash_and_restart_with_aof_always_loses_no_accepted_request() {
    let mut server = RedisServer::start(true).await;
    let redis = TestRedis::on(server.url());
    let stack = spawn_stack_on(TestDatabase::new().await, redis, 4, |_| {}).await;
    sale_through_a_restart(&stack, "rdr", server.restart()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_while_postgres_is_down_waits_and_catches_up() {
    let pg = PgServer::start().await;
    let db = TestDatabase::on_server(&pg).await;
    let stack = spawn_stack_on(db, TestRedis::new(), 4, |_| {}).await;
    let goods = stack.create_goods(5, 1).await;
    let users = stack.customers("late", 12).await;
    let mut accepted = Vec::new();
    for (id, token) in &users {
        accepted.push(stack.book(goods, *id, token, 1).await);
    }
    pg.stop().await;
    let mut worker = stack.worker(&[]);
    // It keeps waiting for PostgreSQL instead of exiting.
    let waited = tokio::time::timeout(std::time::Duration::from_secs(2), worker.wait()).await;
    assert!(
        waited.is_err(),
        "the worker exited while PostgreSQL was down: {waited:?}"
    );
    pg.start_again().await;
    assert_all_decided(&stack, goods, &accepted, 5).await;
}

/// A read-only database (as right after a failover) is trouble of the database, not of
/// the requests: the worker must wait it out, holding its batch, and decide every
/// request normally afterwards. Before, each entry met `TICKETNEST_MAX_ATTEMPTS` quick
/// refusals and was dead-lettered for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_mid_sale_delays_decisions_and_dead_letters_nothing() {
    use redis::AsyncCommands;
    use test_support::shared::stream::CONSUMER_GROUP;

    let stack = spawn_stack_on(TestDatabase::new().await, TestRedis::new(), 4, |_| {}).await;
    let spell = async {
        stack.set_read_only(true).await;
        // The worker holds entries it cannot commit, for longer than its attempts took.
        let conn = stack.redis.connection().await;
        let streams: Vec<String> = stack
            .keys()
            .shards()
            .map(|s| stack.keys().stream(s))
            .collect();
        wait_until(
            "the worker holds undecided entries for over 2 s",
            DRAIN_DEADLINE,
            || {
                let (mut conn, streams) = (conn.clone(), streams.clone());
                async move {
                    for stream in streams {
                        let pending: redis::RedisResult<redis::streams::StreamPendingCountReply> =
                            conn.xpending_count(&stream, CONSUMER_GROUP, "-", "+", 10)
                                .await;
                        if pending.is_ok_and(|p| p.ids.iter().any(|e| e.last_delivered_ms >= 2_000))
                        {
                            return true;
                        }
                    }
                    false
                }
            },
        )
        .await;
        stack.set_read_only(false).await;
    };
    sale_through_a_restart(&stack, "ro", spell).await;
    for shard in stack.keys().shards() {
        assert_eq!(stack.dead_letters(shard).await, [], "nothing dead-lettered");
    }
}
