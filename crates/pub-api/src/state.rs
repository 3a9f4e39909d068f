//! Process-wide state shared by all actix workers: pools, keys, caches.
//!
//! Nothing here is state another API copy would need: the goods cache and the revoked
//! user set are local copies of PostgreSQL facts, refreshed on their own.

use std::{
    collections::HashSet,
    sync::{Arc, RwLock},
    time::Duration,
};

use deadpool_postgres::Pool;
use moka::future::Cache;
use shared::{
    auth::{PasswordHashing, TokenKeys},
    config::RateLimit,
    keys::Keys,
};

use crate::{
    backlog::Backlog, db::GoodsLimits, limits::AddressLimiter, long_poll::Waiters,
    redis_local::LocalRedis,
};

/// Most goods kept in the in-process cache.
const GOODS_CACHE_CAPACITY: u64 = 100_000;

#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    /// Redis, one connection per worker thread (see `redis_local`).
    pub redis: LocalRedis,
    pub keys: Keys,
    pub tokens: TokenKeys,
    pub passwords: PasswordHashing,
    /// Goods existence and limits, so the booking hot path does not query PostgreSQL.
    /// Only found goods are cached: a goods created a moment ago is never refused
    /// because an earlier lookup missed it. Concurrent misses for one goods share a
    /// single query (the first burst of a sale does not stampede the database).
    pub goods: Cache<i64, GoodsLimits>,
    /// Ids of deleted users, refreshed in the background (see `revocation`).
    pub revoked: Arc<RwLock<HashSet<i64>>>,
    /// Last sampled backlog per shard, for backpressure.
    pub backlog: Backlog,
    /// The per-user budget of requests through a shard stream (checked in the enqueue
    /// script, shared by every API copy).
    pub user_rate: Option<RateLimit>,
    /// The per-address budget of signups and logins (this process).
    pub auth_limiter: Option<Arc<AddressLimiter>>,
    /// Whether the client address comes from `X-Forwarded-For`.
    pub trust_forwarded_for: bool,
    /// Permits to compute a password hash: at most one per core at once.
    pub hashing: Arc<tokio::sync::Semaphore>,
    /// A hash of a random password with the configured argon2 cost, verified at login
    /// when the email is unknown.
    pub dummy_hash: Arc<str>,
    /// Whether cookies are marked `Secure` (prod).
    pub secure_cookies: bool,
    /// The status long-polls waiting in this process (`long_poll`).
    pub waiters: Waiters,
    /// Other origins allowed to send cookie-authenticated state-changing requests
    /// (`TICKETNEST_CORS_ORIGINS`), lower case.
    pub cors_origins: Arc<[String]>,
}

impl AppState {
    pub fn goods_cache(ttl: Duration) -> Cache<i64, GoodsLimits> {
        let capacity = if ttl.is_zero() {
            0
        } else {
            GOODS_CACHE_CAPACITY
        };
        Cache::builder()
            .max_capacity(capacity)
            .time_to_live(ttl.max(Duration::from_millis(1)))
            .build()
    }

    pub fn is_revoked(&self, user_id: i64) -> bool {
        // A poisoned lock only means a refresher panicked mid-swap; the set is still usable.
        match self.revoked.read() {
            Ok(set) => set.contains(&user_id),
            Err(poisoned) => poisoned.into_inner().contains(&user_id),
        }
    }
}
