//! What every part of a running worker shares: connections, key names and settings.
//!
//! It depends on nothing else in this crate, so `lease`, `shard` and `startup` all
//! use it without depending on each other in a circle.

use deadpool_postgres::Pool;
use shared::{
    config::{RedisConfig, WorkerConfig},
    keys::Keys,
    probe::Readiness,
    queue::QueueConnection,
    stream::Retention,
};

pub struct Context {
    pub pool: Pool,
    /// Shared connection for short commands (statuses, XACK, leases).
    pub redis: QueueConnection,
    /// For opening each shard's connection of its own (blocking reads).
    pub redis_config: RedisConfig,
    pub keys: Keys,
    pub worker: WorkerConfig,
    /// How long decided statuses, decided entries and dead letters stay in Redis.
    pub retention: Retention,
    /// What `/readyz` answers: ready while the worker is in the membership set and may
    /// own shards (its heartbeat succeeds).
    pub readiness: Readiness,
}
