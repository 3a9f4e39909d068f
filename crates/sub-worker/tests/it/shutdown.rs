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

/// The shard count is recorded by the first process; one started with another count
/// would read other streams than the API writes to, so it refuses to start, naming the
/// variable.
#[tokio::test]
async fn a_worker_with_another_shard_count_than_the_deployment_refuses_to_start() {
    let stack = spawn_stack().await;
    let log = std::env::temp_dir().join(format!("tn-shards-{}.log", stack.redis.prefix()));
    let mut worker = stack.named_worker("odd", Some(&log), &[("TICKETNEST_SHARDS", "8")]);
    let exit = tokio::time::timeout(Duration::from_secs(30), worker.wait())
        .await
        .expect("the worker exits")
        .expect("wait");
    assert_eq!(exit.code(), Some(1));
    let output = std::fs::read_to_string(&log).expect("log");
    assert!(
        output.contains("TICKETNEST_SHARDS is 8 but this deployment's database records 4"),
        "{output}"
    );
    let _ = std::fs::remove_file(&log);
    // The right count starts as usual.
    let _worker = stack.worker(&[]);
    wait_until(
        "the worker holds every shard",
        Duration::from_secs(30),
        || async { stack.leases_held().await == SHARDS as usize },
    )
    .await;
}
