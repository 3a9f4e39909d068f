use std::time::Duration;

use sub_worker::shard::CRASH_EXIT_CODE;

use crate::helpers::spawn_stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_dies_between_commit_and_ack_changes_nothing_when_entries_are_redelivered() {
    let stack = spawn_stack().await;
    let goods = stack.create_goods(20, 1).await;
    let users = stack.customers("crash", 50).await;
    let accepted = stack.book_all(goods, &users, 16).await;
    assert_eq!(accepted.len(), 50);

    // First worker: commits the batch, then exits before writing statuses or XACK.
    let mut crashing = stack.worker(&[("TICKETNEST_CRASH_POINT", "after_commit")]);
    let exit = tokio::time::timeout(Duration::from_secs(60), crashing.wait())
        .await
        .expect("worker reached the crash point")
        .expect("wait");
    assert_eq!(exit.code(), Some(CRASH_EXIT_CODE));
    assert_eq!(stack.decided_count().await, 50, "the batch was committed");
    assert_eq!(stack.pending().await, 50, "and none of it acknowledged");
    let before = stack.decisions(goods).await;
    let (_, token) = &users[0];
    let queued = stack
        .status(
            &accepted
                .iter()
                .find(|a| a.user_id == users[0].0)
                .expect("a")
                .request_id,
            token,
        )
        .await;
    assert_eq!(
        queued["status"], "queued",
        "statuses were not written before the crash"
    );

    // Second worker: reclaims the pending entries, finds them decided, acknowledges.
    let _worker = stack.worker(&[]);
    stack.wait_until_nothing_pending().await;
    let after = stack.assert_invariants(goods).await;
    assert_eq!(after, before, "no decision changed");
    assert_eq!(stack.decided_count().await, 50);
    assert_eq!(stack.seats(goods).await, (20, 20), "no seat counted twice");
    // The redelivery also wrote the statuses the crash skipped.
    for accepted in &accepted {
        let token = &users
            .iter()
            .find(|(id, _)| *id == accepted.user_id)
            .expect("user")
            .1;
        let status = stack.status(&accepted.request_id, token).await;
        assert_ne!(status["status"], "queued", "{status}");
    }
}
