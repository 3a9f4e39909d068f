use crate::helpers::{assert_fifo_invariants, spawn_stack};

#[tokio::test]
async fn a_large_request_waitlists_while_a_later_small_one_still_fits() {
    let stack = spawn_stack().await;
    let goods = stack.create_goods(5, 4).await;
    let users = stack.customers("mix", 5).await;
    let _worker = stack.worker(&[]);
    // One at a time, so stream order is this order.
    let mut accepted = Vec::new();
    for ((id, token), quantity) in users.iter().zip([3, 3, 2, 1, 4]) {
        accepted.push((stack.book(goods, *id, token, quantity).await, token));
    }
    stack.wait_for_decisions(5).await;
    let rows = assert_fifo_invariants(&stack, goods).await;
    let decisions: Vec<&str> = rows.iter().map(|r| r.decision.as_str()).collect();
    assert_eq!(
        decisions,
        [
            "confirmed",
            "waitlisted",
            "confirmed",
            "waitlisted",
            "waitlisted"
        ]
    );
    assert_eq!(stack.seats(goods).await, (5, 5));
    let expected = [
        "confirmed",
        "waitlisted",
        "confirmed",
        "waitlisted",
        "waitlisted",
    ];
    for ((accepted, token), expected) in accepted.iter().zip(expected) {
        let status = stack.status(&accepted.request_id, token).await;
        assert_eq!(status["status"], expected, "{status}");
    }
}

#[tokio::test]
async fn the_same_user_booking_twice_is_rejected_already_booked() {
    let stack = spawn_stack().await;
    let goods = stack.create_goods(10, 1).await;
    let (user, token) = stack.customers("twice", 1).await.remove(0);
    let _worker = stack.worker(&[]);
    let first = stack.book(goods, user, &token, 1).await;
    let second = stack.book(goods, user, &token, 1).await;
    stack.wait_for_decisions(2).await;
    let first = stack.status(&first.request_id, &token).await;
    let second = stack.status(&second.request_id, &token).await;
    assert_eq!(first["status"], "confirmed");
    assert!(first["bookingId"].is_i64());
    assert_eq!(second["status"], "rejected");
    assert_eq!(second["reason"], "already_booked");
    assert!(second.get("bookingId").is_none());
    assert_eq!(stack.seats(goods).await, (1, 10));
    assert_fifo_invariants(&stack, goods).await;
}

#[tokio::test]
async fn a_request_for_goods_deleted_before_its_turn_is_rejected_goods_not_found() {
    let stack = spawn_stack().await;
    let goods = stack.create_goods(10, 1).await;
    let (user, token) = stack.customers("gone", 1).await.remove(0);
    // Accepted while the goods existed, decided after it was deleted.
    let accepted = stack.book(goods, user, &token, 1).await;
    stack
        .db
        .client()
        .await
        .execute("DELETE FROM goods WHERE id = $1", &[&goods])
        .await
        .expect("delete goods");
    let _worker = stack.worker(&[]);
    stack.wait_for_decisions(1).await;
    let status = stack.status(&accepted.request_id, &token).await;
    assert_eq!(status["status"], "rejected");
    assert_eq!(status["reason"], "goods_not_found");
}
