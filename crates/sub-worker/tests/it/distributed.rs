//! The same binaries past one machine: two pub-api copies behind a real HAProxy, a
//! three-master Redis Cluster, two workers. Runs in the `resilience` group.

use std::{collections::HashSet, net::TcpListener, time::Duration};

use futures_util::future::join_all;
use pub_api::startup::Application;
use test_support::{
    servers::{HaProxy, RedisCluster},
    TestDatabase, TestRedis,
};
use tokio_util::sync::CancellationToken;

use crate::helpers::count_of;
use crate::helpers::spawn_stack_on;
use test_support::shared::decision::Decision;

const SHARDS: u32 = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_through_haproxy_two_apis_a_redis_cluster_and_two_workers_keeps_every_invariant() {
    let cluster = RedisCluster::start(3).await;
    let mut stack = spawn_stack_on(
        TestDatabase::new().await,
        TestRedis::on(cluster.urls()),
        SHARDS,
        |_| {},
    )
    .await;
    let first_port: u16 = stack
        .address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let second = Application::build_with_listener(
        test_support::api_config(&stack.db, &stack.redis, SHARDS),
        TcpListener::bind("127.0.0.1:0").expect("bind"),
    )
    .await
    .expect("second api");
    let second_port = second.port();
    let second_stop = CancellationToken::new();
    tokio::spawn(second.run_until_stopped(second_stop.clone()));
    let proxy = HaProxy::start(&[first_port, second_port]).await;
    stack.address = proxy.address();

    let mut goods = Vec::new();
    for _ in 0..4 {
        goods.push(stack.create_goods(300, 1).await);
    }
    let users = stack.customers("dist", 5_000).await;
    let workers = [
        stack.named_worker("w1", None, &[]),
        stack.named_worker("w2", None, &[]),
    ];
    let sales: Vec<_> = goods
        .iter()
        .zip(users.chunks(1_250))
        .map(|(g, chunk)| {
            stack
                .booker()
                .spawn_sale(*g, chunk.to_vec(), 8, Duration::ZERO)
        })
        .collect();
    let accepted: Vec<_> = join_all(sales)
        .await
        .into_iter()
        .flat_map(|s| s.expect("sale"))
        .collect();
    assert_eq!(accepted.len(), 5_000);
    stack.wait_for_decisions(5_000).await;

    // 1, 2, 6: per goods, no oversell, exact FIFO, one live place per user.
    let mut decided = HashSet::new();
    for g in &goods {
        let rows = stack.assert_invariants(*g).await;
        assert_eq!(count_of(&rows, Decision::Confirmed), 300);
        decided.extend(rows.into_iter().map(|r| r.request_id));
    }
    // 3, 4: every accepted request decided, exactly once.
    let asked: HashSet<uuid::Uuid> = accepted.into_iter().map(|a| a.request_id).collect();
    assert_eq!(decided, asked);
    assert_eq!(stack.decided_count().await, 5_000);

    // Nothing left pending on any shard stream of the cluster.
    stack.wait_until_nothing_pending().await;

    // 5: every shard was taken under a fencing token, and both workers took some.
    let owners: Vec<String> = stack
        .db
        .client()
        .await
        .query("SELECT owner FROM shard_fences", &[])
        .await
        .expect("fences")
        .iter()
        .map(|r| {
            r.get::<_, String>(0)
                .split('/')
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(owners.len(), SHARDS as usize);
    let distinct: HashSet<&String> = owners.iter().collect();
    assert_eq!(distinct.len(), 2, "both workers own shards: {owners:?}");

    // Both API copies served bookings.
    let served = proxy.served().await;
    assert_eq!(served.len(), 2);
    assert!(
        served.iter().all(|n| *n > 100),
        "HAProxy spread the load: {served:?}"
    );

    // Long-polls through either copy wake on the decision, whichever node holds the
    // shard: one per shard, waiting while no worker runs.
    drop(workers);
    let (_, owner) = stack.organizer().await;
    let mut per_shard = Vec::new();
    while per_shard.len() < SHARDS as usize {
        per_shard.push(stack.create_goods_as(&owner, 1, 1).await);
    }
    let late = stack.customers("late", SHARDS as usize).await;
    let mut polls = Vec::new();
    for (goods, (user, token)) in per_shard.iter().zip(&late) {
        let id = stack.book(*goods, *user, token, 1).await.request_id;
        let request = stack
            .http
            .get(stack.url(&format!("/api/bookings/requests/{id}?wait=30")))
            .bearer_auth(token);
        polls.push(tokio::spawn(async move {
            let started = std::time::Instant::now();
            let response = request.send().await.expect("long-poll");
            let body: serde_json::Value = response.json().await.expect("json");
            (body, started.elapsed())
        }));
    }
    // (A poll that arrives after its decision answers at once, which is also right.)
    let _worker = stack.named_worker("w3", None, &[]);
    for poll in polls {
        let (body, took) = poll.await.expect("poll task");
        assert_eq!(body["status"], "confirmed", "{body}");
        assert!(took < Duration::from_secs(20), "answered after {took:?}");
    }
    second_stop.cancel();
}
