//! The shared test stack (`test_support::stack`) with this crate's worker binary.

pub use test_support::stack::*;
use test_support::{shared::config::ApiConfig, TestDatabase, TestRedis};

/// The real `sub-worker` binary cargo built for these tests.
pub const WORKER_BINARY: &str = env!("CARGO_BIN_EXE_sub-worker");

fn builder(shards: u32) -> StackBuilder {
    Stack::builder().shards(shards).worker_binary(WORKER_BINARY)
}

pub async fn spawn_stack() -> Stack {
    builder(SHARDS).spawn().await
}

pub async fn spawn_stack_with(shards: u32) -> Stack {
    builder(shards).spawn().await
}

/// A stack whose API config the test adjusts first.
pub async fn spawn_stack_configured(
    shards: u32,
    adjust: impl FnOnce(&mut ApiConfig) + 'static,
) -> Stack {
    builder(shards).api_config(adjust).spawn().await
}

/// A stack on a given database and Redis (private servers for outage tests).
pub async fn spawn_stack_on(
    db: TestDatabase,
    redis: TestRedis,
    shards: u32,
    adjust: impl FnOnce(&mut ApiConfig) + 'static,
) -> Stack {
    builder(shards)
        .db(db)
        .redis(redis)
        .api_config(adjust)
        .spawn()
        .await
}
