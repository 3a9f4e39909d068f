use std::time::Duration;

use test_support::wait_until;

use crate::helpers::{spawn_stack, SHARDS};

#[tokio::test]
async fn sigterm_stops_a_worker_cleanly_and_releases_its_leases_at_once() {
    let stack = spawn_stack().await;
    let mut worker = stack.worker(&[]);
    wait_until(
        "the worker holds every shard",
        Duration::from_secs(30),
        || async { stack.leases_held().await == SHARDS as usize },
    )
    .await;
    let pid = worker.id().expect("pid");
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    let exit = tokio::time::timeout(Duration::from_secs(20), worker.wait())
        .await
        .expect("worker stopped")
        .expect("wait");
    assert_eq!(exit.code(), Some(0));
    // Released, not left to expire.
    assert_eq!(stack.leases_held().await, 0);
}
