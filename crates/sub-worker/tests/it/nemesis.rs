//! The randomized fault test: a sale across several goods, shards, workers and two API
//! copies, while a seeded nemesis applies a random schedule of faults (kill -9, SIGSTOP
//! and SIGCONT, inside batch transactions too, a PostgreSQL restart, a read-only
//! database, a Redis crash and restart with AOF `always`, Redis paused, a new worker, a
//! SIGTERM). Afterwards the invariant checker finds no breach, every request that got
//! 202 has exactly one decision, nothing is pending or dead-lettered, Redis keeps no
//! decided entry and every status is its decision, with an expiry.
//!
//! The seed and the schedule are printed first (nextest shows them when the test
//! fails). `TICKETNEST_NEMESIS_SEED=<seed>` replays a schedule;
//! `TICKETNEST_NEMESIS_SOAK_SECS=<n>` keeps running new rounds (new goods, users and
//! schedule) for that long and reports how many rounds and faults it survived. Runs in
//! the `resilience` group (one at a time).

use std::{
    collections::HashSet,
    fmt,
    net::TcpListener,
    time::{Duration, Instant},
};

use futures_util::future::join_all;
use pub_api::startup::Application;
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};
use redis::{streams::StreamInfoGroupsReply, AsyncCommands};
use test_support::shared::stream::CONSUMER_GROUP;
use test_support::{
    servers::{PgServer, RedisServer},
    shared::decision::Decision,
    TestDatabase, TestRedis,
};
use tokio::process::Child;
use tokio_util::sync::CancellationToken;

use crate::helpers::{count_of, signal, spawn_stack_on, Stack, LEASE_TTL_MS};

const SHARDS: u32 = 4;
const GOODS: usize = 3;
const USERS_PER_GOODS: usize = 1_000;
const SEATS: i64 = 150;
const FAULTS: usize = 12;
const WORKERS: usize = 3;

/// One fault the nemesis applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// kill -9 of a running worker.
    Kill,
    /// SIGSTOP of a worker for this long, then SIGCONT (longer than the lease TTL: it
    /// wakes up fenced out).
    Pause(Duration),
    /// SIGTERM: a graceful handover.
    Terminate,
    /// One more worker joins.
    NewWorker,
    /// PostgreSQL stops (fast shutdown) and starts again.
    PostgresRestart,
    /// The database is read-only (as after a failover) for this long.
    ReadOnly(Duration),
    /// Redis is killed and started again from its append-only file.
    RedisRestart,
    /// Redis stops answering (SIGSTOP) for this long: timeouts, lost replies, leases
    /// expiring all at once.
    RedisPause(Duration),
}

impl Fault {
    fn random(rng: &mut StdRng, kind: usize) -> Self {
        match kind {
            0 => Self::Kill,
            1 => Self::Pause(Duration::from_millis(
                rng.random_range(100..LEASE_TTL_MS * 2),
            )),
            2 => Self::Terminate,
            3 => Self::NewWorker,
            4 => Self::PostgresRestart,
            5 => Self::ReadOnly(Duration::from_millis(rng.random_range(300..3_000))),
            6 => Self::RedisRestart,
            _ => Self::RedisPause(Duration::from_millis(rng.random_range(200..3_000))),
        }
    }
}

/// The faults of one round, each after a pause.
struct Schedule(Vec<(Duration, Fault)>);

impl Schedule {
    /// Every kind of fault at least once, the rest at random, in random order.
    fn new(rng: &mut StdRng, faults: usize) -> Self {
        const KINDS: usize = 8;
        let mut kinds: Vec<usize> = (0..KINDS).collect();
        while kinds.len() < faults.max(KINDS) {
            kinds.push(rng.random_range(0..KINDS));
        }
        kinds.shuffle(rng);
        Self(
            kinds
                .into_iter()
                .map(|kind| {
                    let gap = Duration::from_millis(rng.random_range(500..3_000));
                    (gap, Fault::random(rng, kind))
                })
                .collect(),
        )
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (gap, fault)) in self.0.iter().enumerate() {
            writeln!(f, "  {:>2}. after {gap:?}: {fault:?}", i + 1)?;
        }
        Ok(())
    }
}

/// The worker processes of a round: running ones, and how many were started.
struct Workers {
    running: Vec<Child>,
    started: usize,
}

impl Workers {
    /// Workers hold each batch transaction open a little (the `stall_in_transaction`
    /// crash point), so a SIGSTOP often lands inside one.
    fn start(&mut self, stack: &Stack) {
        self.started += 1;
        self.running.push(stack.worker(&[
            ("TICKETNEST_CRASH_POINT", "stall_in_transaction"),
            ("TICKETNEST_STALL_MS", "20"),
        ]));
    }

    /// A running worker to hurt; starts another first if it is the last one.
    fn victim(&mut self, stack: &Stack, rng: &mut StdRng) -> usize {
        if self.running.len() < 2 {
            self.start(stack);
        }
        rng.random_range(0..self.running.len())
    }
}

/// The two servers the nemesis restarts.
struct Servers {
    pg: PgServer,
    redis: RedisServer,
}

async fn apply(
    fault: Fault,
    stack: &Stack,
    servers: &mut Servers,
    workers: &mut Workers,
    rng: &mut StdRng,
) {
    match fault {
        Fault::Kill => {
            let i = workers.victim(stack, rng);
            let mut child = workers.running.swap_remove(i);
            child.start_kill().expect("kill -9");
            child.wait().await.expect("reap");
        }
        Fault::Pause(for_how_long) => {
            let i = workers.victim(stack, rng);
            signal(&workers.running[i], "STOP");
            tokio::time::sleep(for_how_long).await;
            signal(&workers.running[i], "CONT");
        }
        Fault::Terminate => {
            let i = workers.victim(stack, rng);
            let mut child = workers.running.swap_remove(i);
            signal(&child, "TERM");
            let exited = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
            assert!(
                exited.is_ok_and(|s| s.is_ok()),
                "a worker did not stop within 30 s of SIGTERM"
            );
        }
        Fault::NewWorker => workers.start(stack),
        Fault::PostgresRestart => servers.pg.restart().await,
        Fault::ReadOnly(for_how_long) => {
            stack.set_read_only(true).await;
            tokio::time::sleep(for_how_long).await;
            stack.set_read_only(false).await;
        }
        Fault::RedisRestart => servers.redis.restart().await,
        Fault::RedisPause(for_how_long) => servers.redis.pause(for_how_long).await,
    }
}

/// One round: a sale of `GOODS` goods through two API copies while the schedule runs;
/// then every check. Returns how many faults were applied.
async fn round(stack: &Stack, servers: &mut Servers, second_api: &str, seed: u64) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let schedule = Schedule::new(&mut rng, FAULTS);
    eprintln!(
        "nemesis seed {seed} (replay: TICKETNEST_NEMESIS_SEED={seed}); schedule:\n{schedule}"
    );

    let decided_before = stack.decided_count().await;
    let mut goods = Vec::with_capacity(GOODS);
    for _ in 0..GOODS {
        goods.push(stack.create_goods(SEATS, 1).await);
    }
    let users = stack
        .customers(&format!("nem{seed}"), GOODS * USERS_PER_GOODS)
        .await;
    let mut workers = Workers {
        running: Vec::new(),
        started: 0,
    };
    for _ in 0..WORKERS {
        workers.start(stack);
    }
    // Two sales per goods, one through each API copy, about 30 s in all.
    let sales: Vec<_> = users
        .chunks(USERS_PER_GOODS / 2)
        .enumerate()
        .map(|(i, chunk)| {
            let booker = if i % 2 == 0 {
                stack.booker()
            } else {
                stack.booker_at(second_api)
            };
            let goods = goods[i / 2];
            (
                goods,
                booker.spawn_sale(goods, chunk.to_vec(), 4, Duration::from_millis(55)),
            )
        })
        .collect();

    let started = Instant::now();
    for (i, (gap, fault)) in schedule.0.iter().enumerate() {
        tokio::time::sleep(*gap).await;
        eprintln!(
            "  {:>6.1} s  fault {}: {fault:?}",
            started.elapsed().as_secs_f64(),
            i + 1
        );
        apply(*fault, stack, servers, &mut workers, &mut rng).await;
    }
    eprintln!(
        "  {:>6.1} s  faults done; {} workers started, {} running",
        started.elapsed().as_secs_f64(),
        workers.started,
        workers.running.len()
    );
    if workers.running.is_empty() {
        workers.start(stack);
    }

    let mut accepted_by_goods: Vec<(i64, Vec<uuid::Uuid>)> =
        goods.iter().map(|g| (*g, Vec::new())).collect();
    let (sale_goods, handles): (Vec<i64>, Vec<_>) = sales.into_iter().unzip();
    for (g, accepted) in sale_goods.into_iter().zip(join_all(handles).await) {
        let accepted = accepted.expect("every booking got a 202 in the end");
        if let Some((_, ids)) = accepted_by_goods.iter_mut().find(|(id, _)| *id == g) {
            ids.extend(accepted.into_iter().map(|a| a.request_id));
        }
    }
    let total: usize = accepted_by_goods.iter().map(|(_, ids)| ids.len()).sum();
    assert_eq!(total, GOODS * USERS_PER_GOODS, "every user got a 202");
    stack
        .wait_for_decisions(decided_before + total as i64)
        .await;

    for (g, ids) in &accepted_by_goods {
        // No oversell, exact FIFO, counters, one live place per user, each entry and
        // turn decided once: the invariant checker.
        let rows = stack.assert_invariants(*g).await;
        let decided: HashSet<uuid::Uuid> = rows.iter().map(|r| r.request_id).collect();
        let asked: HashSet<uuid::Uuid> = ids.iter().copied().collect();
        assert_eq!(rows.len(), ids.len(), "goods {g}: one decision per 202");
        assert_eq!(
            decided, asked,
            "goods {g}: exactly the accepted requests decided"
        );
        assert_eq!(count_of(&rows, Decision::Confirmed), SEATS as usize);
        assert_eq!(
            count_of(&rows, Decision::Waitlisted),
            ids.len() - SEATS as usize,
            "goods {g}: everyone else waitlisted, nobody rejected or dead-lettered"
        );
    }
    stack.wait_until_nothing_pending().await;
    for shard in stack.keys().shards() {
        assert_eq!(stack.dead_letters(shard).await, [], "nothing dead-lettered");
    }
    assert_redis_holds_only_decisions(stack, &accepted_by_goods).await;
    eprintln!(
        "  {:>6.1} s  round passed: {total} requests decided, every check clean",
        started.elapsed().as_secs_f64()
    );
    schedule.0.len()
}

/// Redis after the sale: every shard's group has read everything (lag 0), each stream
/// keeps at most its last delivered entry (decided entries are trimmed), and every
/// accepted request's status is its decision, with an expiry.
async fn assert_redis_holds_only_decisions(stack: &Stack, accepted: &[(i64, Vec<uuid::Uuid>)]) {
    let mut conn = stack.redis.connection().await;
    for shard in stack.keys().shards() {
        let stream = stack.keys().stream(shard);
        let groups: StreamInfoGroupsReply = conn.xinfo_groups(&stream).await.expect("xinfo");
        let lag = groups
            .groups
            .iter()
            .find(|g| g.name == CONSUMER_GROUP)
            .map(|g| (g.lag, g.pending));
        assert_eq!(lag, Some((Some(0), 0)), "shard {shard}: lag and pending");
        let len: usize = conn.xlen(&stream).await.expect("xlen");
        assert!(len <= 1, "shard {shard}: {len} entries left in the stream");
    }
    for (goods, ids) in accepted {
        let shard = stack.shard_of(*goods);
        for chunk in ids.chunks(500) {
            let mut pipe = redis::pipe();
            for id in chunk {
                let key = stack.keys().request_status(shard, *id);
                pipe.hget(&key, "status").ttl(&key);
            }
            let replies: Vec<(Option<String>, i64)> =
                pipe.query_async(&mut conn).await.expect("statuses");
            for (id, (status, ttl)) in chunk.iter().zip(replies) {
                assert!(
                    matches!(status.as_deref(), Some("confirmed" | "waitlisted")) && ttl > 0,
                    "request {id}: status {status:?}, ttl {ttl}"
                );
            }
        }
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_under_a_random_schedule_of_faults_keeps_every_invariant() {
    let pg = PgServer::start().await;
    let db = TestDatabase::on_server(&pg).await;
    let redis = RedisServer::start(true).await;
    let stack = spawn_stack_on(db, TestRedis::on(redis.url()), SHARDS, |_| {}).await;
    let second = Application::build_with_listener(
        test_support::api_config(&stack.db, &stack.redis, SHARDS),
        TcpListener::bind("127.0.0.1:0").expect("bind"),
    )
    .await
    .expect("second api");
    let second_api = format!("http://127.0.0.1:{}", second.port());
    let stop = CancellationToken::new();
    tokio::spawn(second.run_until_stopped(stop.clone()));
    let mut servers = Servers { pg, redis };

    let seed = env_number("TICKETNEST_NEMESIS_SEED").unwrap_or_else(rand::random);
    let soak = Duration::from_secs(env_number("TICKETNEST_NEMESIS_SOAK_SECS").unwrap_or(0));
    let started = Instant::now();
    let (mut rounds, mut faults) = (0_u64, 0);
    loop {
        faults += round(&stack, &mut servers, &second_api, seed.wrapping_add(rounds)).await;
        rounds += 1;
        if started.elapsed() >= soak {
            break;
        }
    }
    eprintln!(
        "nemesis: {rounds} round(s), {faults} faults survived in {:.0} s (seed {seed})",
        started.elapsed().as_secs_f64()
    );
    stop.cancel();
}
