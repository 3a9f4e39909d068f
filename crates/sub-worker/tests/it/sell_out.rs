use std::collections::HashSet;

use test_support::shared::decision::Decision;

use crate::helpers::{count_of, spawn_stack, Stack};

/// The request ids on a goods' shard stream, in stream order (as the API wrote them).
async fn stream_order(stack: &Stack, goods_id: i64) -> Vec<String> {
    let stream = stack.keys().stream(stack.shard_of(goods_id));
    stack
        .stream_entries(&stream)
        .await
        .into_iter()
        .filter_map(|mut fields| fields.remove("rid"))
        .collect()
}

async fn sell_out(workers: usize, users: usize, seats: i64) {
    let stack = spawn_stack().await;
    let goods = stack.create_goods(seats, 1).await;
    let customers = stack.customers("fan", users).await;
    // Decided entries stay in the stream for an hour, so the test can read its order.
    let keep = [("TICKETNEST_STREAM_RETENTION_SECS", "3600")];
    let mut children: Vec<_> = (0..workers).map(|_| stack.worker(&keep)).collect();

    let accepted = stack.book_all(goods, &customers, 256).await;
    assert_eq!(accepted.len(), users, "every request accepted");
    stack.wait_for_decisions(users as i64).await;

    let rows = stack.assert_invariants(goods).await;
    let confirmed = count_of(&rows, Decision::Confirmed);
    let waitlisted = count_of(&rows, Decision::Waitlisted);
    assert_eq!(confirmed as i64, seats);
    assert_eq!(waitlisted, users - seats as usize);
    assert_eq!(stack.seats(goods).await, (seats as i32, seats as i32));

    // Every accepted request decided exactly once, and no user twice.
    let accepted_ids: HashSet<uuid::Uuid> = accepted.iter().map(|a| a.request_id).collect();
    let decided_ids: HashSet<uuid::Uuid> = rows.iter().map(|r| r.request_id).collect();
    assert_eq!(accepted_ids, decided_ids);
    let users_seen: HashSet<i64> = rows.iter().map(|r| r.user_id).collect();
    assert_eq!(users_seen.len(), users);

    // The decision log's order is the stream's own order.
    let logged: Vec<String> = rows
        .iter()
        .map(|r| r.request_id.simple().to_string())
        .collect();
    assert_eq!(logged, stream_order(&stack, goods).await);

    // Statuses reached the owners; nothing is left pending or dead.
    let tokens: std::collections::HashMap<i64, &str> =
        customers.iter().map(|(id, t)| (*id, t.as_str())).collect();
    for row in [&rows[0], &rows[seats as usize], &rows[users - 1]] {
        let status = stack.status(&row.request_id, tokens[&row.user_id]).await;
        assert_eq!(status["status"], row.decision.status().as_str());
        assert_eq!(status["bookingId"], serde_json::json!(row.booking_id));
    }
    stack.wait_until_nothing_pending().await;
    for shard in stack.keys().shards() {
        assert!(stack.dead_letters(shard).await.is_empty());
    }
    for child in &mut children {
        assert!(
            child.try_wait().expect("wait").is_none(),
            "worker still running"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sell_out_of_100_seats_to_2000_users_confirms_exactly_the_first_100() {
    sell_out(1, 2_000, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_started_by_mistake_still_sell_each_seat_once_in_order() {
    sell_out(2, 1_000, 100).await;
}
