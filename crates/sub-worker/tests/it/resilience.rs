//! Workers joining, leaving, crashing and pausing during a sale, with real processes.
//! These run one at a time (nextest group `resilience`): they measure handovers and
//! must not compete with each other for the two cores.

use std::{collections::HashMap, time::Duration};

use redis::AsyncCommands;
use test_support::wait_until;

use test_support::shared::{decision::Decision, stream::CONSUMER_GROUP};

use crate::helpers::{count_of, signal, spawn_stack_with, Stack};

/// Kills a worker with SIGKILL and reaps it.
async fn kill_9(child: &mut tokio::process::Child) {
    child.kill().await.expect("kill -9");
}

/// Waits for a worker to exit by itself and returns its exit code.
async fn exit_code(child: &mut tokio::process::Child) -> Option<i32> {
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("worker exited in time")
        .expect("wait")
        .code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_from_one_to_four_to_two_workers_keeps_shards_even_and_the_sale_exact() {
    let stack = spawn_stack_with(16).await;
    let mut goods = Vec::new();
    for _ in 0..4 {
        goods.push(stack.create_goods(100, 1).await);
    }
    let users = stack.customers("scale", 2_000).await;
    let mut workers = HashMap::new();
    workers.insert("w1", stack.named_worker("w1", None, &[]));
    assert_eq!(stack.wait_for_even_spread(1).await["w1"], 16);

    let sales: Vec<_> = goods
        .iter()
        .zip(users.chunks(500))
        .map(|(g, chunk)| {
            stack
                .booker()
                .spawn_sale(*g, chunk.to_vec(), 4, Duration::from_millis(8))
        })
        .collect();

    for name in ["w2", "w3", "w4"] {
        workers.insert(name, stack.named_worker(name, None, &[]));
    }
    let shares = stack.wait_for_even_spread(4).await;
    assert!(shares.values().all(|n| *n == 4), "{shares:?}");

    // Down to two: one stops gracefully, one crashes.
    signal(&workers["w3"], "TERM");
    let mut crashed = workers.remove("w4").expect("w4");
    kill_9(&mut crashed).await;
    assert_eq!(exit_code(workers.get_mut("w3").expect("w3")).await, Some(0));
    let shares = stack.wait_for_even_spread(2).await;
    assert!(shares.values().all(|n| *n == 8), "{shares:?}");

    let mut accepted = 0;
    for sale in sales {
        accepted += sale.await.expect("sale").len();
    }
    assert_eq!(accepted, 2_000);
    stack.wait_for_decisions(2_000).await;
    for g in &goods {
        let rows = stack.assert_invariants(*g).await;
        assert_eq!(count_of(&rows, Decision::Confirmed), 100);
    }
    stack.wait_until_nothing_pending().await;
}

/// The worker holding `shard`'s lease, by name.
async fn owner(stack: &Stack, shard: test_support::shared::shard::Shard) -> Option<String> {
    stack.lease_holders().await.remove(&shard)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_storm_of_five_kill_9s_loses_nothing_and_decides_in_exact_fifo_order() {
    const USERS: usize = 20_000;
    const SEATS: i64 = 1_000;
    let stack = spawn_stack_with(4).await;
    let goods = stack.create_goods(SEATS, 1).await;
    let shard = stack.shard_of(goods);
    let users = stack.customers("storm", USERS).await;
    let names = ["w1", "w2", "w3"];
    let mut workers: HashMap<&str, tokio::process::Child> = names
        .iter()
        .map(|n| (*n, stack.named_worker(n, None, &[])))
        .collect();
    let sale = stack.booker().spawn_sale(goods, users, 32, Duration::ZERO);

    // Five times: once a fifth more of the sale is decided, kill -9 the worker that owns
    // the goods' shard (the most damaging choice) and start it again at once.
    for round in 1..=5_i64 {
        let threshold = round * (USERS as i64) / 7;
        wait_until(
            &format!("{threshold} decisions before kill {round}"),
            Duration::from_secs(120),
            || async { stack.decided_count().await >= threshold },
        )
        .await;
        let victim = owner(&stack, shard).await.expect("the shard has an owner");
        let name = *names.iter().find(|n| **n == victim).expect("known worker");
        let mut child = workers.remove(name).expect("running");
        kill_9(&mut child).await;
        workers.insert(name, stack.named_worker(name, None, &[]));
    }

    let accepted = sale.await.expect("sale");
    assert_eq!(accepted.len(), USERS, "every request accepted");
    stack.wait_for_decisions(USERS as i64).await;
    let rows = stack.assert_invariants(goods).await;
    assert_eq!(count_of(&rows, Decision::Confirmed) as i64, SEATS);
    assert_eq!(stack.seats(goods).await, (SEATS as i32, SEATS as i32));
    let decided: std::collections::HashSet<uuid::Uuid> =
        rows.iter().map(|r| r.request_id).collect();
    assert!(accepted.iter().all(|a| decided.contains(&a.request_id)));
    stack.wait_until_nothing_pending().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_worker_that_lost_its_lease_cannot_commit_when_it_wakes() {
    let stack = spawn_stack_with(1).await;
    let goods = stack.create_goods(10, 1).await;
    let users = stack.customers("zombie", 25).await;
    let shard = stack.shard_of(goods);
    let log = std::env::temp_dir().join(format!("tn-zombie-{}.log", stack.redis.prefix()));
    // The zombie holds every batch it reads for two seconds before deciding it.
    let zombie = stack.named_worker(
        "zombie",
        Some(&log),
        &[
            ("TICKETNEST_CRASH_POINT", "stall_after_read"),
            ("TICKETNEST_STALL_MS", "2000"),
        ],
    );
    wait_until(
        "the zombie owns the shard",
        Duration::from_secs(30),
        || async { owner(&stack, shard).await.as_deref() == Some("zombie") },
    )
    .await;
    let _healthy = stack.named_worker("healthy", None, &[]);

    for (id, token) in &users[..20] {
        stack.book(goods, *id, token, 1).await;
    }
    let stream = stack.keys().stream(shard);
    let conn = stack.redis.connection().await;
    wait_until(
        "the zombie holds an undecided batch",
        Duration::from_secs(30),
        || {
            let mut conn = conn.clone();
            let stream = stream.clone();
            async move {
                // No group yet (the worker is still starting) means not yet.
                let reply: redis::RedisResult<redis::streams::StreamPendingReply> =
                    conn.xpending(&stream, CONSUMER_GROUP).await;
                match reply {
                    Ok(redis::streams::StreamPendingReply::Data(d)) => d
                        .consumers
                        .iter()
                        .any(|c| c.name == "zombie" && c.pending > 0),
                    _ => false,
                }
            }
        },
    )
    .await;
    signal(&zombie, "STOP");
    assert_eq!(stack.decided_count().await, 0, "paused before deciding");

    // The healthy worker takes the shard after the lease TTL and decides the batch.
    stack.wait_for_decisions(20).await;
    assert_eq!(owner(&stack, shard).await.as_deref(), Some("healthy"));
    signal(&zombie, "CONT");
    wait_until(
        "the zombie's commit is refused by the fence",
        Duration::from_secs(30),
        || async {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("fencing token superseded"))
        },
    )
    .await;

    for (id, token) in &users[20..] {
        stack.book(goods, *id, token, 1).await;
    }
    stack.wait_for_decisions(25).await;
    let rows = stack.assert_invariants(goods).await;
    assert_eq!(count_of(&rows, Decision::Confirmed), 10);
    stack.wait_until_nothing_pending().await;
    let _ = std::fs::remove_file(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_sale_hands_the_shard_over_with_no_gap_over_a_second() {
    let stack = spawn_stack_with(1).await;
    let goods = stack.create_goods(100, 1).await;
    let shard = stack.shard_of(goods);
    let users = stack.customers("term", 800).await;
    let mut first = stack.named_worker("first", None, &[]);
    wait_until(
        "the first worker owns the shard",
        Duration::from_secs(30),
        || async { owner(&stack, shard).await.as_deref() == Some("first") },
    )
    .await;
    let _second = stack.named_worker("second", None, &[]);
    let sale = stack
        .booker()
        .spawn_sale(goods, users, 2, Duration::from_millis(4));
    wait_until("the sale is under way", Duration::from_secs(60), || async {
        stack.decided_count().await >= 200
    })
    .await;
    signal(&first, "TERM");
    assert_eq!(exit_code(&mut first).await, Some(0), "graceful exit");
    assert_eq!(sale.await.expect("sale").len(), 800);
    stack.wait_for_decisions(800).await;
    assert_eq!(owner(&stack, shard).await.as_deref(), Some("second"));
    stack.assert_invariants(goods).await;

    // Longest pause between two consecutive decision batches during the sale.
    let gap_ms: f64 = stack
        .db
        .client()
        .await
        .query_one(
            "SELECT COALESCE(EXTRACT(EPOCH FROM max(next - at)) * 1000, 0)::float8 FROM ( \
               SELECT decided_at AS at, lead(decided_at) OVER (ORDER BY decided_at) AS next \
               FROM booking_requests WHERE goods_id = $1) t",
            &[&goods],
        )
        .await
        .expect("gap")
        .get(0);
    println!("longest gap between decisions across the handover: {gap_ms:.0} ms");
    assert!(gap_ms < 1_000.0, "decisions stopped for {gap_ms:.0} ms");
}

/// A worker paused inside its batch transaction keeps its session "idle in
/// transaction", holding the shard's fence row. The next owner must not wait on it for
/// as long as the pause lasts: a booking is decided within about the lease TTL plus a
/// bounded delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_paused_inside_its_transaction_does_not_hold_up_the_takeover() {
    let stack = spawn_stack_with(1).await;
    let goods = stack.create_goods(10, 1).await;
    let shard = stack.shard_of(goods);
    let users = stack.customers("frozen", 2).await;
    let zombie = stack.named_worker(
        "zombie",
        None,
        &[
            ("TICKETNEST_CRASH_POINT", "stall_in_transaction"),
            ("TICKETNEST_STALL_MS", "60000"),
        ],
    );
    wait_until(
        "the zombie owns the shard",
        Duration::from_secs(30),
        || async { owner(&stack, shard).await.as_deref() == Some("zombie") },
    )
    .await;
    // The zombie reads this booking and stalls inside its transaction, holding the
    // fence row; then it is paused for good.
    let (first, first_token) = &users[0];
    stack.book(goods, *first, first_token, 1).await;
    let client = stack.db.client().await;
    wait_until(
        "the zombie's session holds a transaction open",
        Duration::from_secs(30),
        || async {
            let open: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND state = 'idle in transaction'",
                    &[],
                )
                .await
                .expect("pg_stat_activity")
                .get(0);
            open > 0
        },
    )
    .await;
    signal(&zombie, "STOP");
    let paused = std::time::Instant::now();
    let _healthy = stack.named_worker("healthy", None, &[]);
    let (second, second_token) = &users[1];
    stack.book(goods, *second, second_token, 1).await;
    let bound = Duration::from_millis(crate::helpers::LEASE_TTL_MS) + Duration::from_secs(5);
    wait_until(
        "both bookings decided by the new owner",
        bound + Duration::from_secs(1),
        || async { stack.decided_count().await == 2 },
    )
    .await;
    assert!(paused.elapsed() <= bound + Duration::from_secs(1));
    assert_eq!(owner(&stack, shard).await.as_deref(), Some("healthy"));
    let rows = stack.assert_invariants(goods).await;
    assert_eq!(
        rows.iter().map(|r| r.user_id).collect::<Vec<_>>(),
        [*first, *second],
        "decided in stream order"
    );
    signal(&zombie, "CONT");
}
