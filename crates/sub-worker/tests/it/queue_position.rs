//! A request's exact place: `position` while queued (undecided requests for the same
//! goods ahead of it in stream order) and `waitlistPosition` while waitlisted.

use reqwest::StatusCode;
use serde_json::Value;
use test_support::wait_until;

use crate::helpers::{spawn_stack, Accepted, Stack};

/// Books `goods` once as `user`, in the order called (not concurrently: the order of
/// the calls is the stream order the test checks against).
async fn book_in_order(stack: &Stack, goods: i64, user: &(i64, String)) -> Accepted {
    stack.book(goods, user.0, &user.1, 1).await
}

async fn statuses(stack: &Stack, requests: &[Accepted], users: &[(i64, String)]) -> Vec<Value> {
    let mut out = Vec::with_capacity(requests.len());
    for (request, (_, token)) in requests.iter().zip(users) {
        out.push(stack.status(request.request_id, token).await);
    }
    out
}

async fn cancel(stack: &Stack, goods: i64, token: &str) {
    let (status, body) = stack.cancel_booking(goods, token).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_and_waitlist_positions_are_exact() {
    let stack = spawn_stack().await;
    let (_, owner) = stack.organizer().await;
    // Two goods on one shard: the other's requests share the stream, not the count.
    let hot = stack.create_goods_as(&owner, 30, 1).await;
    let mut other = stack.create_goods_as(&owner, 1_000, 1).await;
    while stack.shard_of(other) != stack.shard_of(hot) {
        other = stack.create_goods_as(&owner, 1_000, 1).await;
    }
    let fans = stack.customers("pos", 100).await;
    let neighbours = stack.customers("nbr", 10).await;

    // With no worker running: 100 requests for the hot goods, 10 for its neighbour
    // interleaved with them.
    let mut hot_requests = Vec::new();
    let mut other_requests = Vec::new();
    for (i, fan) in fans.iter().enumerate() {
        hot_requests.push(book_in_order(&stack, hot, fan).await);
        if i % 10 == 5 {
            other_requests.push(book_in_order(&stack, other, &neighbours[i / 10]).await);
        }
    }
    for (i, status) in statuses(&stack, &hot_requests, &fans)
        .await
        .iter()
        .enumerate()
    {
        assert_eq!(status["status"], "queued");
        assert_eq!(status["position"], i, "request {i}: {status}");
    }
    for (i, status) in statuses(&stack, &other_requests, &neighbours)
        .await
        .iter()
        .enumerate()
    {
        assert_eq!(status["position"], i, "neighbour {i}: {status}");
    }

    // A worker decides part of the queue, slowly, and is killed part-way.
    let mut worker = stack.worker(&[
        ("TICKETNEST_BATCH_SIZE", "4"),
        ("TICKETNEST_CRASH_POINT", "stall_after_read"),
        ("TICKETNEST_STALL_MS", "100"),
    ]);
    wait_until(
        "some decisions",
        std::time::Duration::from_secs(60),
        || async { stack.decided_count().await >= 20 },
    )
    .await;
    worker.kill().await.expect("kill the worker");
    // The requests decided (as their owners see it) are a prefix of the queue, and each
    // one still queued counts exactly the queued ones ahead of it.
    let seen = statuses(&stack, &hot_requests, &fans).await;
    let decided = seen.iter().take_while(|s| s["status"] != "queued").count();
    assert!(
        (1..100).contains(&decided),
        "part of the queue decided: {decided}"
    );
    for (i, status) in seen.iter().enumerate() {
        if i < decided {
            assert!(status.get("position").is_none(), "decided: {status}");
        } else {
            assert_eq!(status["status"], "queued", "request {i}: {status}");
            assert_eq!(status["position"], i - decided, "request {i}: {status}");
        }
    }

    // Everything decided: 30 seats, 70 in line in request order.
    let _worker = stack.worker(&[]);
    stack.wait_for_decisions(110).await;
    let seen = statuses(&stack, &hot_requests, &fans).await;
    for (i, status) in seen.iter().enumerate() {
        if i < 30 {
            assert_eq!(status["status"], "confirmed", "request {i}: {status}");
            assert!(status.get("waitlistPosition").is_none(), "{status}");
        } else {
            assert_eq!(status["status"], "waitlisted", "request {i}: {status}");
            assert_eq!(status["waitlistPosition"], i - 29, "request {i}: {status}");
        }
        assert!(status.get("position").is_none(), "decided: {status}");
    }

    // Three seats come free and one place in the middle of the line is given up: the
    // first three in line are promoted, everyone behind moves up.
    for fan in &fans[..3] {
        cancel(&stack, hot, &fan.1).await;
    }
    cancel(&stack, hot, &fans[50].1).await;
    stack.wait_for_decisions(114).await;
    let seen = statuses(&stack, &hot_requests, &fans).await;
    for (i, status) in seen.iter().enumerate() {
        let expected_place = match i {
            0..=2 => {
                assert_eq!(status["status"], "cancelled", "request {i}: {status}");
                continue;
            }
            3..=32 => {
                assert_eq!(status["status"], "confirmed", "request {i}: {status}");
                if i >= 30 {
                    assert!(status["promotedAt"].is_string(), "{status}");
                }
                continue;
            }
            50 => {
                assert_eq!(status["status"], "cancelled", "request {i}: {status}");
                continue;
            }
            33..=49 => i - 32,
            _ => i - 33,
        };
        assert_eq!(status["status"], "waitlisted", "request {i}: {status}");
        assert_eq!(
            status["waitlistPosition"], expected_place,
            "request {i}: {status}"
        );
    }
    stack.assert_invariants(hot).await;
}
