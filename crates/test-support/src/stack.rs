//! The test stack every crate's integration tests use: the real API in-process on port
//! 0, workers as real child processes (or in-process for tools that have no worker
//! binary of their own), users and tokens in bulk, goods, bookings, and reads of the
//! decision log, the streams and the leases.
//!
//! ```ignore
//! let stack = Stack::builder().worker_binary(env!("CARGO_BIN_EXE_sub-worker")).spawn().await;
//! let goods = stack.create_goods(10, 1).await;
//! let users = stack.customers("fan", 100).await;
//! let _worker = stack.worker(&[]);
//! stack.book_all(goods, &users, 16).await;
//! stack.wait_for_decisions(100).await;
//! stack.assert_invariants(goods).await;
//! ```

use std::{collections::HashMap, net::TcpListener, path::PathBuf, process::Stdio, time::Duration};

use futures_util::{stream, StreamExt};
use pub_api::startup::Application;
use redis::AsyncCommands;
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use shared::{
    auth::Role,
    config::{ApiConfig, FromVars, SubWorkerConfig},
    decision::DecisionRow,
    keys::Keys,
    queue::QueueConnection,
    shard::Shard,
    stream::{AUTO_ID, CONSUMER_GROUP},
};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{wait_until, TestDatabase, TestRedis};

/// Shards of a stack unless a test asks for another count.
pub const SHARDS: u32 = 4;
/// Short lease so takeovers in tests happen quickly.
pub const LEASE_TTL_MS: u64 = 1_500;
/// How long any drain may take before a test fails.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(120);

/// A change to the API's config before it starts.
type ConfigChange = Box<dyn FnOnce(&mut ApiConfig)>;

/// What a stack is built on; see [`Stack::builder`].
pub struct StackBuilder {
    shards: u32,
    db: Option<TestDatabase>,
    redis: Option<TestRedis>,
    worker_binary: Option<PathBuf>,
    adjust: Vec<ConfigChange>,
}

impl StackBuilder {
    pub fn shards(mut self, shards: u32) -> Self {
        self.shards = shards;
        self
    }

    /// A given database (a private server's, for outage tests).
    pub fn db(mut self, db: TestDatabase) -> Self {
        self.db = Some(db);
        self
    }

    /// A given Redis (a private server or a cluster, for outage and cluster tests).
    pub fn redis(mut self, redis: TestRedis) -> Self {
        self.redis = Some(redis);
        self
    }

    /// The `sub-worker` binary `Stack::worker` starts (`env!("CARGO_BIN_EXE_sub-worker")`
    /// in sub-worker's own tests, the only ones cargo gives the path to).
    pub fn worker_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.worker_binary = Some(path.into());
        self
    }

    /// Adjusts the API's config before it starts.
    pub fn api_config(mut self, adjust: impl FnOnce(&mut ApiConfig) + 'static) -> Self {
        self.adjust.push(Box::new(adjust));
        self
    }

    /// Starts the API in-process on port 0.
    ///
    /// # Panics
    /// If the API cannot start (PostgreSQL or Redis unreachable).
    pub async fn spawn(self) -> Stack {
        shared::telemetry::init_for_tests();
        let db = match self.db {
            Some(db) => db,
            None => TestDatabase::new().await,
        };
        let redis = self.redis.unwrap_or_default();
        let mut config = crate::api_config(&db, &redis, self.shards);
        for adjust in self.adjust {
            adjust(&mut config);
        }
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        let app = Application::build_with_listener(config, listener)
            .await
            .expect("build api");
        let address = format!("http://127.0.0.1:{}", app.port());
        let shutdown = CancellationToken::new();
        tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Stack {
            keys: Keys::new(redis.prefix(), self.shards).expect("shard count"),
            shards: self.shards,
            address,
            db,
            redis,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .pool_max_idle_per_host(256)
                // Below actix-web's 5 s keep-alive, so the client never reuses a
                // connection at the moment the server closes it as idle.
                .pool_idle_timeout(Duration::from_secs(2))
                .build()
                .expect("client"),
            worker_binary: self.worker_binary,
            shutdown,
        }
    }
}

/// A running API with its own database and Redis prefix; workers on demand.
pub struct Stack {
    pub shards: u32,
    pub address: String,
    pub db: TestDatabase,
    pub redis: TestRedis,
    pub http: reqwest::Client,
    keys: Keys,
    worker_binary: Option<PathBuf>,
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
    pub request_id: Uuid,
}

impl Stack {
    pub fn builder() -> StackBuilder {
        StackBuilder {
            shards: SHARDS,
            db: None,
            redis: None,
            worker_binary: None,
            adjust: Vec::new(),
        }
    }

    /// This stack's Redis key names.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The shard of a goods.
    pub fn shard_of(&self, goods_id: i64) -> Shard {
        self.keys.shard_of(goods_id)
    }

    // ------------------------------------------------------------------ workers

    /// A worker process for this stack; `extra` adds or overrides environment variables.
    ///
    /// # Panics
    /// If the stack was built without a worker binary, or it cannot start.
    pub fn worker(&self, extra: &[(&str, &str)]) -> Child {
        self.worker_command(extra)
            .spawn()
            .expect("spawn sub-worker")
    }

    fn worker_command(&self, extra: &[(&str, &str)]) -> Command {
        let binary = self
            .worker_binary
            .as_ref()
            .expect("this stack was built without .worker_binary(...)");
        let mut command = Command::new(binary);
        command
            .env("TICKETNEST_DATABASE_URL", self.db.url())
            .env("TICKETNEST_REDIS_URL", self.redis.url())
            .env("TICKETNEST_REDIS_PREFIX", self.redis.prefix())
            .env("TICKETNEST_SHARDS", self.shards.to_string())
            .env("TICKETNEST_LEASE_TTL_MS", LEASE_TTL_MS.to_string())
            .env("TICKETNEST_BLOCK_MS", "100")
            .env("TICKETNEST_BATCH_SIZE", "200")
            .env("TICKETNEST_DATABASE_POOL_SIZE", "4")
            // Any free port: several workers run side by side (a test names one to
            // read it).
            .env("TICKETNEST_WORKER_HTTP_ADDR", "127.0.0.1:0")
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

    /// A worker inside this process (for crates whose tests cannot name the worker
    /// binary); it stops with the stack.
    ///
    /// # Panics
    /// If the worker cannot start.
    pub async fn in_process_worker(&self) {
        self.in_process_worker_until(self.shutdown.clone()).await;
    }

    /// A worker inside this process that stops (finishing its batch, releasing its
    /// leases) when `stop` is cancelled, or with the stack.
    ///
    /// # Panics
    /// If the worker cannot start.
    pub async fn in_process_worker_until(&self, stop: CancellationToken) {
        let mut config = SubWorkerConfig::from_vars(&|name| match name {
            "TICKETNEST_LEASE_TTL_MS" => Some(LEASE_TTL_MS.to_string()),
            "TICKETNEST_BLOCK_MS" => Some("100".into()),
            _ => None,
        })
        .expect("worker config");
        config.shards.shards = self.shards;
        config.database = self.db.config();
        config.redis = self.redis.config();
        let worker = sub_worker::startup::Worker::build(config)
            .await
            .expect("worker");
        let stack_stops = self.shutdown.clone();
        tokio::spawn(async move {
            let either = CancellationToken::new();
            let watch = {
                let either = either.clone();
                async move {
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = stack_stops.cancelled() => {}
                    }
                    either.cancel();
                }
            };
            tokio::spawn(watch);
            worker.run_until_stopped(either).await;
        });
    }

    // ------------------------------------------------------------------ people and goods

    /// `n` customers made in one statement, and their tokens.
    pub async fn customers(&self, tag: &str, n: usize) -> Vec<(i64, String)> {
        crate::create_users(&self.db, tag, n)
            .await
            .into_iter()
            .map(|id| (id, crate::token_for(id, Role::Customer)))
            .collect()
    }

    /// A fresh organizer (made in the database) and their token.
    pub async fn organizer(&self) -> (i64, String) {
        let tag = format!("org{}x", &Uuid::new_v4().simple().to_string()[..8]);
        let id = crate::create_users(&self.db, &tag, 1).await[0];
        crate::make_organizer(&self.db, id).await;
        (id, crate::token_for(id, Role::Organizer))
    }

    /// Creates a goods through the API as the organizer `token`; returns its id.
    pub async fn create_goods_as(&self, token: &str, limit: i64, max_per_booking: i64) -> i64 {
        let (status, body) = parts(
            self.post_json(
                "/api/goods",
                &json!({
                    "title": "Sold-out show",
                    "content": "The one everyone wants",
                    "price": 50_000,
                    "imgUrl": "https://img.example/show.png",
                    "showDate": "2026-12-24T19:30:00Z",
                    "bookingLimit": limit,
                    "maxPerBooking": max_per_booking,
                }),
                Some(token),
            )
            .await,
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_i64().expect("goods id")
    }

    /// Creates a goods through the API as a fresh organizer; returns its id.
    pub async fn create_goods(&self, limit: i64, max_per_booking: i64) -> i64 {
        let (_, token) = self.organizer().await;
        self.create_goods_as(&token, limit, max_per_booking).await
    }

    // ------------------------------------------------------------------ HTTP

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn post_json(&self, path: &str, body: &Value, token: Option<&str>) -> Response {
        let mut request = self.http.post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("send")
    }

    /// `PATCH /api/goods/{goods}` as `token`: the status and the JSON body.
    pub async fn patch_goods(&self, goods: i64, token: &str, body: &Value) -> (StatusCode, Value) {
        parts(
            self.http
                .patch(self.url(&format!("/api/goods/{goods}")))
                .bearer_auth(token)
                .json(body)
                .send()
                .await
                .expect("send"),
        )
        .await
    }

    /// `DELETE /api/goods/{goods}/bookings/me` as `token` (a cancel): the status and
    /// the JSON body.
    pub async fn cancel_booking(&self, goods: i64, token: &str) -> (StatusCode, Value) {
        parts(
            self.http
                .delete(self.url(&format!("/api/goods/{goods}/bookings/me")))
                .bearer_auth(token)
                .send()
                .await
                .expect("send"),
        )
        .await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("send")
    }

    /// One booking request as sent, the response as received (no retry).
    pub async fn post_booking(
        &self,
        goods_id: i64,
        token: &str,
        quantity: Option<i64>,
    ) -> Response {
        let body = quantity.map_or_else(|| json!({}), |q| json!({ "quantity": q }));
        self.post_json(
            &format!("/api/goods/{goods_id}/bookings"),
            &body,
            Some(token),
        )
        .await
    }

    /// Books once and returns the request id; panics unless the API answers 202 (a 503
    /// is retried, see [`Booker::book`]).
    pub async fn book(&self, goods_id: i64, user_id: i64, token: &str, quantity: i64) -> Accepted {
        self.booker().book(goods_id, user_id, token, quantity).await
    }

    /// A handle that books through this stack's API and can move into a task.
    pub fn booker(&self) -> Booker {
        self.booker_at(&self.address)
    }

    /// A handle that books through another API copy (`http://host:port`) of this stack.
    pub fn booker_at(&self, address: &str) -> Booker {
        Booker {
            http: self.http.clone(),
            address: address.to_owned(),
        }
    }

    /// Makes the stack's database read-only, as right after a failover (or writable
    /// again), and ends every other session: sessions keep the setting they started
    /// with, so the pools reconnect and get the new one.
    ///
    /// # Panics
    /// On database errors.
    pub async fn set_read_only(&self, on: bool) {
        let client = self.db.client().await;
        // This session may have started read-only itself.
        client
            .batch_execute("SET default_transaction_read_only = off")
            .await
            .expect("writable session");
        client
            .batch_execute(&format!(
                "ALTER DATABASE {} SET default_transaction_read_only = {on}",
                self.db.name()
            ))
            .await
            .expect("alter database");
        client
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .expect("end sessions");
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

    /// Polls a request's status as `token`: the HTTP status and the body.
    pub async fn poll(
        &self,
        request_id: impl std::fmt::Display,
        token: &str,
    ) -> (StatusCode, Value) {
        parts(
            self.get(&format!("/api/bookings/requests/{request_id}"), Some(token))
                .await,
        )
        .await
    }

    /// The status of a request as its owner sees it (asserting a 200).
    pub async fn status(&self, request_id: impl std::fmt::Display, token: &str) -> Value {
        let (status, body) = self.poll(request_id, token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    // ------------------------------------------------------------------ PostgreSQL

    /// Rows in the decision log.
    pub async fn decided_count(&self) -> i64 {
        self.db.count("booking_requests").await
    }

    /// Rows in the decision log and in bookings: zero unless a worker ran.
    pub async fn booking_rows(&self) -> (i64, i64) {
        (self.decided_count().await, self.db.count("bookings").await)
    }

    /// Waits until exactly `n` requests are decided.
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
        let mut client = self.db.client().await;
        shared::audit::snapshot(&mut client, Some(&[goods_id]))
            .await
            .expect("decision log")
            .decisions
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

    /// Runs the invariant checker (`shared::audit`) over one goods, panics naming every
    /// breach, and returns the goods' decision log in stream order.
    pub async fn assert_invariants(&self, goods_id: i64) -> Vec<DecisionRow> {
        let mut client = self.db.client().await;
        let facts = shared::audit::snapshot(&mut client, Some(&[goods_id]))
            .await
            .expect("read the decision log");
        let breaches = shared::audit::check(&facts, None);
        assert!(
            breaches.is_empty(),
            "goods {goods_id} breaches its invariants:\n{}",
            breaches
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
        facts.decisions
    }

    // ------------------------------------------------------------------ Redis

    /// A connection to this stack's Redis (a single server or a cluster), as the
    /// services open it.
    pub async fn queue(&self) -> QueueConnection {
        shared::queue::connect_shared(&self.redis.config())
            .await
            .expect("connect to redis")
    }

    /// Entries read by a worker and not yet acknowledged, over every shard;
    /// `usize::MAX` when Redis cannot tell (down, refusing).
    pub async fn pending(&self) -> usize {
        let mut conn = self.queue().await;
        let mut total = 0;
        for shard in self.keys.shards() {
            let reply: redis::RedisResult<redis::streams::StreamPendingReply> =
                conn.xpending(self.keys.stream(shard), CONSUMER_GROUP).await;
            total += match reply {
                Ok(reply) => reply.count(),
                // No stream or group yet: nothing was ever read there.
                Err(e) if e.code() == Some("NOGROUP") => 0,
                // Anything else is no proof that nothing is pending.
                Err(_) => return usize::MAX,
            };
        }
        total
    }

    /// Waits until every entry read has been acknowledged.
    pub async fn wait_until_nothing_pending(&self) {
        wait_until("no pending entries", DRAIN_DEADLINE, || async {
            self.pending().await == 0
        })
        .await;
    }

    /// Every entry of a stream (a shard stream or a dead-letter stream), fields as
    /// strings, in stream order.
    pub async fn stream_entries(&self, key: &str) -> Vec<HashMap<String, String>> {
        let mut conn = self.queue().await;
        let reply: redis::streams::StreamRangeReply = conn.xrange_all(key).await.expect("xrange");
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

    /// Appends an entry with these fields to a shard's stream, as a client of Redis
    /// other than the API would (a future version, a corrupt entry, a hand-made one).
    pub async fn append(&self, shard: Shard, fields: &[(&str, String)]) -> String {
        let mut conn = self.queue().await;
        conn.xadd(self.keys.stream(shard), AUTO_ID, fields)
            .await
            .expect("xadd")
    }

    /// The dead letters of a shard, in order.
    pub async fn dead_letters(&self, shard: Shard) -> Vec<HashMap<String, String>> {
        self.stream_entries(&self.keys.dead_letter(shard)).await
    }

    /// How many shard leases are held now.
    pub async fn leases_held(&self) -> usize {
        self.lease_holders().await.len()
    }

    /// Which worker (by `TICKETNEST_WORKER_ID`) holds each shard's lease right now.
    pub async fn lease_holders(&self) -> HashMap<Shard, String> {
        let mut conn = self.queue().await;
        let mut holders = HashMap::new();
        for shard in self.keys.shards() {
            let holder: Option<String> = conn.get(self.keys.lease(shard)).await.expect("GET lease");
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
        let shards = self.keys.shards().count();
        let max = shards.div_ceil(workers);
        wait_until(
            &format!("{shards} shards spread over {workers} workers, at most {max} each"),
            Duration::from_secs(30),
            || async {
                let shares = self.shares().await;
                shares.len() == workers
                    && shares.values().sum::<usize>() == shards
                    && shares.values().all(|n| *n <= max)
            },
        )
        .await;
        self.shares().await
    }
}

/// Books through the API; cheap to clone into background tasks.
#[derive(Clone)]
pub struct Booker {
    http: reqwest::Client,
    address: String,
}

impl Booker {
    /// Books once, as a well-behaved client: a 503 (outage, backpressure) or a lost
    /// connection is retried after a short pause, for up to a minute, with the same
    /// idempotency key, so a request Redis took before the answer was lost is not
    /// booked twice. Panics on any other answer but 202.
    pub async fn book(&self, goods_id: i64, user_id: i64, token: &str, quantity: i64) -> Accepted {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let key = Uuid::new_v4().to_string();
        loop {
            let sent = self
                .http
                .post(format!("{}/api/goods/{goods_id}/bookings", self.address))
                .bearer_auth(token)
                .header("idempotency-key", &key)
                .json(&json!({ "quantity": quantity }))
                .send()
                .await;
            let response = match sent {
                Ok(response) => response,
                Err(error) if tokio::time::Instant::now() < deadline => {
                    eprintln!("booking for user {user_id} lost its connection, retrying: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(error) => panic!("send: {error}"),
            };
            let status = response.status();
            if status == StatusCode::SERVICE_UNAVAILABLE && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            assert_eq!(status, StatusCode::ACCEPTED);
            let body: Value = response.json().await.expect("json");
            let request_id = body["requestId"].as_str().expect("requestId");
            return Accepted {
                user_id,
                request_id: Uuid::try_parse(request_id).expect("requestId is a UUID"),
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

/// How many rows of a decision log carry `decision`.
pub fn count_of(rows: &[DecisionRow], decision: shared::decision::Decision) -> usize {
    rows.iter().filter(|r| r.decision == decision).count()
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

/// A list page's status, JSON body and `Link` header (the next page, if any).
pub async fn page_parts(response: Response) -> (StatusCode, Value, Option<String>) {
    let link = response
        .headers()
        .get("link")
        .map(|v| v.to_str().expect("an ASCII Link header").to_owned());
    let (status, body) = parts(response).await;
    (status, body, link)
}

/// Status and JSON body of a response (`Value::Null` if the body is not JSON).
pub async fn parts(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

/// Asserts a 400 `validation_failed` that names `field`.
#[track_caller]
pub fn assert_invalid_field(status: StatusCode, body: &Value, field: &str) {
    assert_error(status, body, StatusCode::BAD_REQUEST, "validation_failed");
    assert_eq!(body["error"]["field"], field, "{body}");
}

/// Asserts the API error format: the status, the stable code and a message.
#[track_caller]
pub fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str) {
    assert_eq!(status, expected, "body: {body}");
    assert_eq!(body["error"]["code"], code, "body: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error message missing: {body}"
    );
}
