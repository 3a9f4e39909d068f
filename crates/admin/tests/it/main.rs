//! ticketnest-admin as operators run it (the real binary), and the schema's own
//! guarantees, checked directly against PostgreSQL.

mod dlq;
mod migrate;
mod schema;
mod status;
mod user;
mod verify;

use std::{process::Output, time::Duration};

use test_support::{stack::Stack, TestDatabase};

/// Runs `ticketnest-admin ARGS` against a database and returns its output.
pub async fn admin(db: &TestDatabase, args: &[&str]) -> Output {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_ticketnest-admin"))
        .args(args)
        .env("TICKETNEST_DATABASE_URL", db.url())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("ticketnest-admin finished")
        .expect("run ticketnest-admin")
}

/// Runs `ticketnest-admin ARGS` against a stack's database, Redis and shards; returns
/// its exit code and what it printed.
pub async fn admin_on(stack: &Stack, args: &[&str]) -> (Option<i32>, String) {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_ticketnest-admin"))
        .args(args)
        .env("TICKETNEST_DATABASE_URL", stack.db.url())
        .env("TICKETNEST_REDIS_URL", stack.redis.url())
        .env("TICKETNEST_REDIS_PREFIX", stack.redis.prefix())
        .env("TICKETNEST_SHARDS", stack.shards.to_string())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("ticketnest-admin finished")
        .expect("run ticketnest-admin");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// [`admin_on`] for a command that prints JSON and exits 0.
pub async fn admin_json(stack: &Stack, args: &[&str]) -> serde_json::Value {
    let (code, out) = admin_on(stack, args).await;
    assert_eq!(code, Some(0), "{args:?}: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
}
