//! The test stack: API in-process, workers as child processes, and assertions over
//! the decision log.

use std::{collections::HashMap, net::TcpListener, process::Stdio, time::Duration};

use futures_util::{stream, StreamExt};
use pub_api::startup::Application;
use redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::{json, Value};
use test_support::{shared::auth::Role, wait_until, TestDatabase, TestRedis};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

pub const SHARDS: u32 = 4;
/// Short lease so takeovers in tests happen quickly.
pub const LEASE_TTL_MS: u64 = 1_500;
/// How long any drain may take before a test fails.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(120);

pub struct Stack {
    pub shards: u32,
    pub address: String,
    pub db: TestDatabase,
    pub redis: TestRedis,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// One accepted booking: who asked and the id the API gave back.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub user_id: i64,
    pub request_id: String,
}

/// One row of the decision log, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRow {
    pub request_id: String,
    pub user_id: i64,
    pub quantity: i32,
    pub stream_id: String,
    pub position: Option<i64>,
    pub decision: String,
    pub reason: Option<String>,
    pub booking_id: Option<i64>,
}

pub async fn spawn_stack() -> Stack {
    spawn_stack_with(SHARDS).await
}

pub async fn spawn_stack_with(shards: u32) -> Stack {
    spawn_stack_configured(shards, |_| {}).await
}

/// A stack whose API config the test adjusts first.
pub async fn spawn_stack_configured(
    shards: u32,
    adjust: impl FnOnce(&mut test_support::shared::config::ApiConfig),
) -> Stack {
    spawn_stack_on(TestDatabase::new().await, TestRedis::new(), shards, adjust).await
}

/// A stack on a given database and Redis (private servers for outage tests).
pub async fn spawn_stack_on(
    db: TestDatabase,
    redis: TestRedis,
    shards: u32,
    adjust: impl FnOnce(&mut test_support::shared::config::ApiConfig),
) -> Stack {
    test_support::shared::telemetry::init_for_tests();
    let mut config = test_support::api_config(&db, &redis, shards);
    adjust(&mut config);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let app = Application::build_with_listener(config, listener)
        .await
        .expect("build api");
    let address = format!("http://127.0.0.1:{}", app.port());
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    Stack {
        shards,
        address,
        db,
        redis,
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()
            .expect("client"),
        shutdown,
    }
}

impl Stack {
    /// A worker process for this stack; `extra` adds or overrides environment variables.
    pub fn worker(&self, extra: &[(&str, &str)]) -> Child {
        self.worker_command(extra)
            .spawn()
            .expect("spawn sub-worker")
    }

    fn worker_command(&self, extra: &[(&str, &str)]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sub-worker"));
        command
            .env("TICKETNEST_DATABASE_URL", self.db.url())
            .env("TICKETNEST_REDIS_URL", self.redis.url())
            .env("TICKETNEST_REDIS_PREFIX", self.redis.prefix())
            .env("TICKETNEST_SHARDS", self.shards.to_string())
            .env("TICKETNEST_LEASE_TTL_MS", LEASE_TTL_MS.to_string())
            .env("TICKETNEST_BLOCK_MS", "100")
            .env("TICKETNEST_BATCH_SIZE", "200")
            .env("TICKETNEST_DATABASE_POOL_SIZE", "4")
            .env_remove("TICKETNEST_CRASH_POINT")
            .kill_on_drop(true)
            .stdin(Stdio::null());
        if std::env::var("TEST_LOG").is_ok() {
            command.env("RUST_LOG", "info,sub_worker=debug");
        } else {
            command
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null());
        }
        for (key, value) in extra {
            command.env(key, value);
        }
        command
    }

    pub async fn organizer_token(&self) -> String {
        let tag = format!("org{}x", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let id = test_support::create_users(&self.db, &tag, 1).await[0];
        test_support::make_organizer(&self.db, id).await;
        test_support::token_for(id, Role::Organizer)
    }

    pub async fn customers(&self, tag: &str, n: usize) -> Vec<(i64, String)> {
        test_support::create_users(&self.db, tag, n)
            .await
            .into_iter()
            .map(|id| (id, test_support::token_for(id, Role::Customer)))
            .collect()
    }

    pub async fn create_goods(&self, limit: i64, max_per_booking: i64) -> i64 {
        let token = self.organizer_token().await;
        let response = self
            .http
            .post(format!("{}/api/goods", self.address))
            .bearer_auth(token)
            .json(&json!({
                "title": "Hot show", "content": "", "price": 100, "imgUrl": "",
                "showDate": "2026-12-31", "bookingLimit": limit, "maxPerBooking": max_per_booking
            }))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.expect("json");
        body["id"].as_i64().expect("id")
    }

    /// Books once and returns the request id; panics unless the API answers 202.
    pub async fn book(&self, goods_id: i64, user_id: i64, token: &str, quantity: i64) -> Accepted {
        self.booker().book(goods_id, user_id, token, quantity).await
    }

    /// A handle that books through this stack's API and can move into a task.
    pub fn booker(&self) -> Booker {
        Booker {
            http: self.http.clone(),
            address: self.address.clone(),
        }
    }

    /// Books once per user, up to `concurrency` requests in flight.
    pub async fn book_all(
        &self,
        goods_id: i64,
        users: &[(i64, String)],
        concurrency: usize,
    ) -> Vec<Accepted> {
        stream::iter(users)
            .map(|(id, token)| self.book(goods_id, *id, token, 1))
            .buffer_unordered(concurrency)
            .collect()
            .await
    }

    /// The status of a request as its owner sees it.
    pub async fn status(&self, request_id: &str, token: &str) -> Value {
        let response = self
            .http
            .get(format!(
                "{}/api/bookings/requests/{request_id}",
                self.address
            ))
            .bearer_auth(token)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("json")
    }

    pub async fn decided_count(&self) -> i64 {
        self.db
            .client()
            .await
            .query_one("SELECT count(*) FROM booking_requests", &[])
            .await
            .expect("count")
            .get(0)
    }

    pub async fn wait_for_decisions(&self, n: i64) {
        wait_until(&format!("{n} decisions"), DRAIN_DEADLINE, || async {
            self.decided_count().await >= n
        })
        .await;
        assert_eq!(
            self.decided_count().await,
            n,
            "no more decisions than requests"
        );
    }

    /// The decision log of a goods in stream order.
    pub async fn decisions(&self, goods_id: i64) -> Vec<DecisionRow> {
        self.db
            .client()
            .await
            .query(
                "SELECT request_id::text, user_id, quantity, stream_id, position, decision, reason, booking_id \
                 FROM booking_requests WHERE goods_id = $1 ORDER BY stream_ms, stream_seq",
                &[&goods_id],
            )
            .await
            .expect("decisions")
            .iter()
            .map(|r| DecisionRow {
                request_id: r.get(0),
                user_id: r.get(1),
                quantity: r.get(2),
                stream_id: r.get(3),
                position: r.get(4),
                decision: r.get(5),
                reason: r.get(6),
                booking_id: r.get(7),
            })
            .collect()
    }

    /// `(booked_count, booking_limit)` of a goods.
    pub async fn seats(&self, goods_id: i64) -> (i32, i32) {
        let row = self
            .db
            .client()
            .await
            .query_one(
                "SELECT booked_count, booking_limit FROM goods WHERE id = $1",
                &[&goods_id],
            )
            .await
            .expect("goods");
        (row.get(0), row.get(1))
    }

    /// Entries read by a consumer but not yet acknowledged, over every shard.
    pub async fn pending(&self) -> usize {
        let mut conn = self.redis.connection().await;
        let mut total = 0;
        for shard in 0..self.shards {
            let stream = format!("{}:{{s{shard}}}:stream", self.redis.prefix());
            let reply: redis::RedisResult<redis::streams::StreamPendingReply> =
                conn.xpending(&stream, "workers").await;
            if let Ok(reply) = reply {
                total += reply.count();
            }
        }
        total
    }

    pub async fn dead_letters(&self, shard: u32) -> Vec<HashMap<String, String>> {
        let mut conn = self.redis.connection().await;
        let key = format!("{}:{{s{shard}}}:dead", self.redis.prefix());
        let reply: redis::streams::StreamRangeReply = conn.xrange_all(&key).await.expect("xrange");
        reply
            .ids
            .iter()
            .map(|e| {
                e.map
                    .iter()
                    .map(|(k, v)| (k.clone(), redis::from_redis_value_ref(v).expect("string")))
                    .collect()
            })
            .collect()
    }

    pub async fn lease_keys(&self) -> Vec<String> {
        self.redis
            .keys()
            .await
            .into_iter()
            .filter(|k| k.ends_with(":lease"))
            .collect()
    }
}

/// Books through the API; cheap to clone into background tasks.
#[derive(Clone)]
pub struct Booker {
    http: reqwest::Client,
    address: String,
}

impl Booker {
    /// Books once, as a well-behaved client: a 503 (outage, backpressure) is retried
    /// after a short pause, for up to a minute, with the same idempotency key, so a
    /// request Redis took before the answer was lost is not booked twice. Panics on any
    /// other answer but 202.
    pub async fn book(&self, goods_id: i64, user_id: i64, token: &str, quantity: i64) -> Accepted {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let key = uuid::Uuid::new_v4().to_string();
        loop {
            let response = self
                .http
                .post(format!("{}/api/goods/{goods_id}/bookings", self.address))
                .bearer_auth(token)
                .header("idempotency-key", &key)
                .json(&json!({ "quantity": quantity }))
                .send()
                .await
                .expect("send");
            let status = response.status();
            if status == StatusCode::SERVICE_UNAVAILABLE && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            assert_eq!(status, StatusCode::ACCEPTED);
            let body: Value = response.json().await.expect("json");
            return Accepted {
                user_id,
                request_id: body["requestId"].as_str().expect("requestId").to_owned(),
            };
        }
    }

    /// Books once per user in the background, `concurrency` at a time, pausing `pace`
    /// between starts so the sale lasts a while.
    pub fn spawn_sale(
        &self,
        goods_id: i64,
        users: Vec<(i64, String)>,
        concurrency: usize,
        pace: Duration,
    ) -> tokio::task::JoinHandle<Vec<Accepted>> {
        let booker = self.clone();
        tokio::spawn(async move {
            stream::iter(users)
                .then(|user| {
                    let booker = booker.clone();
                    async move {
                        tokio::time::sleep(pace).await;
                        (booker, user)
                    }
                })
                .map(|(booker, (id, token))| async move { booker.book(goods_id, id, &token, 1).await })
                .buffer_unordered(concurrency)
                .collect()
                .await
        })
    }
}

/// Sends a signal (`KILL`, `STOP`, `CONT`, `TERM`) to a child process.
pub fn signal(child: &Child, signal: &str) {
    let pid = child.id().expect("child still running");
    let sent = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -{signal} {pid}");
}

impl Stack {
    /// A worker with a given `TICKETNEST_WORKER_ID`, logging to `log` (a file path).
    pub fn named_worker(
        &self,
        name: &str,
        log: Option<&std::path::Path>,
        extra: &[(&str, &str)],
    ) -> Child {
        let mut env: Vec<(&str, &str)> = vec![("TICKETNEST_WORKER_ID", name)];
        env.extend_from_slice(extra);
        match log {
            None => self.worker(&env),
            Some(path) => {
                let file = std::fs::File::create(path).expect("log file");
                let mut command = self.worker_command(&env);
                command
                    .env("RUST_LOG", "info")
                    .env("NO_COLOR", "1")
                    .stdout(Stdio::from(file.try_clone().expect("clone log")))
                    .stderr(Stdio::from(file));
                command.spawn().expect("spawn sub-worker")
            }
        }
    }

    /// Which worker (by `TICKETNEST_WORKER_ID`) holds each shard's lease right now.
    pub async fn lease_holders(&self) -> HashMap<u32, String> {
        let mut conn = self.redis.connection().await;
        let mut holders = HashMap::new();
        for shard in 0..self.shards {
            let key = format!("{}:{{s{shard}}}:lease", self.redis.prefix());
            let holder: Option<String> = conn.get(&key).await.expect("GET lease");
            if let Some(holder) = holder {
                let worker = holder.split('/').next().unwrap_or_default().to_owned();
                holders.insert(shard, worker);
            }
        }
        holders
    }

    /// How many shards each worker holds.
    pub async fn shares(&self) -> HashMap<String, usize> {
        let mut shares = HashMap::new();
        for worker in self.lease_holders().await.into_values() {
            *shares.entry(worker).or_insert(0) += 1;
        }
        shares
    }

    /// Waits until exactly `workers` hold shards, every shard is held, and nobody holds
    /// more than its fair share `ceil(shards / workers)`.
    pub async fn wait_for_even_spread(&self, workers: usize) -> HashMap<String, usize> {
        let max = (self.shards as usize).div_ceil(workers);
        wait_until(
            &format!(
                "{} shards spread over {workers} workers, at most {max} each",
                self.shards
            ),
            Duration::from_secs(30),
            || async {
                let shares = self.shares().await;
                shares.len() == workers
                    && shares.values().sum::<usize>() == self.shards as usize
                    && shares.values().all(|n| *n <= max)
            },
        )
        .await;
        self.shares().await
    }
}

/// Invariants 1, 2 and 6 over one goods' decision log: the confirmed requests are
/// exactly those that fit, in stream order; the waitlist is in stream order; positions
/// follow stream order; no user holds two live places; the counter matches.
pub async fn assert_fifo_invariants(stack: &Stack, goods_id: i64) -> Vec<DecisionRow> {
    let rows = stack.decisions(goods_id).await;
    let (booked, limit) = stack.seats(goods_id).await;
    let mut left = limit;
    let mut live_users = std::collections::HashSet::new();
    for (i, row) in rows.iter().enumerate() {
        let expected = if row.reason.is_some() {
            "rejected"
        } else if row.quantity <= left {
            "confirmed"
        } else {
            "waitlisted"
        };
        assert_eq!(row.decision, expected, "row {i} in stream order: {row:?}");
        if expected == "confirmed" {
            left -= row.quantity;
        }
        if expected != "rejected" {
            assert!(
                live_users.insert(row.user_id),
                "user {} holds two places",
                row.user_id
            );
            assert!(
                row.booking_id.is_some(),
                "a live place has a booking: {row:?}"
            );
        }
        assert_eq!(
            row.position,
            Some(i as i64 + 1),
            "positions follow stream order"
        );
    }
    let confirmed: i32 = rows
        .iter()
        .filter(|r| r.decision == "confirmed")
        .map(|r| r.quantity)
        .sum();
    assert_eq!(booked, confirmed, "counter equals confirmed seats");
    assert!(booked <= limit, "oversold: {booked} > {limit}");
    let bookings: i64 = stack
        .db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM bookings WHERE goods_id = $1",
            &[&goods_id],
        )
        .await
        .expect("count")
        .get(0);
    let live = rows.iter().filter(|r| r.decision != "rejected").count();
    assert_eq!(bookings, live as i64, "one booking row per live decision");
    rows
}

/// Waits until every entry read has been acknowledged.
pub async fn wait_until_nothing_pending(stack: &Stack) {
    wait_until("no pending entries", DRAIN_DEADLINE, || async {
        stack.pending().await == 0
    })
    .await;
}
