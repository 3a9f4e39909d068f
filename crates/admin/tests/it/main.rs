//! ticketnest-admin as operators run it (the real binary), and the schema's own
//! guarantees, checked directly against PostgreSQL.

mod migrate;
mod schema;
mod user;
mod verify;

use std::{process::Output, time::Duration};

use test_support::TestDatabase;

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
