//! `shared::audit` over a real sale, then over the same database corrupted on purpose,
//! one breach at a time. Each corruption runs inside a transaction that the checker
//! reads through and that is rolled back afterwards, so every case starts from the
//! same correct sale.

use std::collections::HashSet;

use shared::{
    audit::{self, Breach},
    decision::{Decision, DecisionRow},
};
use test_support::stack::Stack;
use tokio_postgres::Transaction;
use uuid::Uuid;

const SEATS: i64 = 3;
const USERS: usize = 8;

/// A sale of `SEATS` seats to `USERS` users, decided by a real worker: the log in
/// stream order and the accepted request ids.
async fn sale() -> (Stack, i64, Vec<DecisionRow>, HashSet<Uuid>) {
    let stack = Stack::builder().spawn().await;
    stack.in_process_worker().await;
    let goods = stack.create_goods(SEATS, 1).await;
    let users = stack.customers("audit", USERS).await;
    let mut accepted = HashSet::new();
    // One at a time, so stream order is user order.
    for (id, token) in &users {
        accepted.insert(stack.book(goods, *id, token, 1).await.request_id);
    }
    stack.wait_for_decisions(USERS as i64).await;
    let rows = stack.assert_invariants(goods).await;
    (stack, goods, rows, accepted)
}

/// SQL that rewrites one request's decision, in the log and in its booking.
fn set_decision(request_id: Uuid, decision: &str) -> String {
    format!(
        "UPDATE booking_requests SET decision = '{decision}' WHERE request_id = '{request_id}';
         UPDATE bookings SET status = '{decision}' WHERE request_id = '{request_id}';"
    )
}

/// Applies `corrupt` in a transaction, checks, rolls back; returns the breaches.
async fn breaches_after(
    client: &mut tokio_postgres::Client,
    goods: i64,
    accepted: &HashSet<Uuid>,
    corrupt: &str,
) -> Vec<Breach> {
    let tx: Transaction<'_> = client.transaction().await.expect("begin");
    tx.batch_execute(corrupt).await.expect("corrupt");
    let facts = audit::read(&tx, Some(&[goods])).await.expect("read");
    let breaches = audit::check(&facts, Some(accepted));
    tx.rollback().await.expect("rollback");
    breaches
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_passes_a_real_sale_and_names_each_breach_on_a_database_corrupted_on_purpose() {
    let (stack, goods, rows, accepted) = sale().await;
    let mut client = stack.db.client().await;
    assert_eq!(
        audit::audit(&mut client, None, Some(&accepted))
            .await
            .expect("audit"),
        [],
        "the real sale is correct"
    );
    let confirmed: Vec<&DecisionRow> = rows
        .iter()
        .filter(|r| r.decision == Decision::Confirmed)
        .collect();
    let waitlisted: Vec<&DecisionRow> = rows
        .iter()
        .filter(|r| r.decision == Decision::Waitlisted)
        .collect();
    assert_eq!((confirmed.len(), waitlisted.len()), (3, 5));
    let (first_waiting, last_confirmed) = (waitlisted[0], confirmed[2]);

    // Oversell: a waitlisted request confirmed, in the log and in bookings.
    let oversold = breaches_after(
        &mut client,
        goods,
        &accepted,
        &set_decision(first_waiting.request_id, "confirmed"),
    )
    .await;
    assert!(
        oversold.contains(&Breach::Oversold {
            goods_id: goods,
            confirmed: SEATS + 1,
            limit: SEATS
        }),
        "{oversold:?}"
    );
    assert!(oversold
        .iter()
        .any(|b| matches!(b, Breach::OutOfOrder { turn: 4, .. })));

    // A counter that differs from the sum of live bookings.
    let drifted = breaches_after(
        &mut client,
        goods,
        &accepted,
        &format!("UPDATE goods SET booked_count = booked_count - 1 WHERE id = {goods}"),
    )
    .await;
    assert_eq!(
        drifted,
        [Breach::CounterMismatch {
            goods_id: goods,
            counter: "booked_count",
            stored: SEATS - 1,
            actual: SEATS
        }]
    );

    // A user with two live bookings for one goods (the unique index dropped first).
    let twice = breaches_after(
        &mut client,
        goods,
        &accepted,
        &format!(
            "DROP INDEX bookings_one_live_per_user;
             UPDATE bookings SET user_id = {0} WHERE request_id = '{1}';",
            confirmed[0].user_id, first_waiting.request_id
        ),
    )
    .await;
    assert!(
        twice.contains(&Breach::TwoLivePlaces {
            goods_id: goods,
            user_id: confirmed[0].user_id,
            count: 2
        }),
        "{twice:?}"
    );

    // A confirmed set that is not the first requests in stream order: the last
    // confirmed and the first waitlisted swapped.
    let swapped = breaches_after(
        &mut client,
        goods,
        &accepted,
        &(set_decision(last_confirmed.request_id, "waitlisted")
            + &set_decision(first_waiting.request_id, "confirmed")),
    )
    .await;
    let turns: Vec<(usize, Uuid)> = swapped
        .iter()
        .map(|b| match b {
            Breach::OutOfOrder {
                turn, request_id, ..
            } => (*turn, *request_id),
            other => panic!("only FIFO breaches expected, got {other}"),
        })
        .collect();
    assert_eq!(
        turns,
        [
            (3, last_confirmed.request_id),
            (4, first_waiting.request_id)
        ]
    );

    // An accepted request left undecided (its decision and booking gone).
    let lost = rows[USERS - 1].request_id;
    let undecided = breaches_after(
        &mut client,
        goods,
        &accepted,
        &format!(
            // (Nothing is ever deleted: migration V11's triggers are off for this.)
            "ALTER TABLE bookings DISABLE TRIGGER bookings_never_deleted;
             ALTER TABLE booking_requests DISABLE TRIGGER booking_requests_never_deleted;
             DELETE FROM bookings WHERE request_id = '{lost}';
             DELETE FROM booking_requests WHERE request_id = '{lost}';
             UPDATE goods SET decided_count = decided_count - 1,
               waitlisted_count = waitlisted_count - 1 WHERE id = {goods};"
        ),
    )
    .await;
    assert_eq!(
        undecided,
        [Breach::Undecided {
            count: 1,
            example: lost
        }]
    );

    // A booking whose user is gone (no foreign key since V11: users are never deleted;
    // the trigger is off for this), and bookings whose goods is gone.
    let booker = confirmed[0];
    let orphaned = breaches_after(
        &mut client,
        goods,
        &accepted,
        &format!(
            "ALTER TABLE users DISABLE TRIGGER users_never_deleted;
             DELETE FROM users WHERE id = {};",
            booker.user_id
        ),
    )
    .await;
    assert_eq!(
        orphaned,
        [Breach::BookingMismatch {
            goods_id: goods,
            request_id: booker.request_id,
            problem: "booking of a user that does not exist"
        }]
    );
    let goods_gone = breaches_after(
        &mut client,
        goods,
        &accepted,
        &format!(
            "ALTER TABLE goods DISABLE TRIGGER goods_never_deleted;
             DELETE FROM goods WHERE id = {goods};"
        ),
    )
    .await;
    assert!(!goods_gone.is_empty());
    assert!(
        goods_gone.iter().all(|b| matches!(
            b,
            Breach::BookingMismatch { problem, .. }
                if *problem == "booking of a goods that does not exist"
        )),
        "{goods_gone:?}"
    );
    assert_eq!(goods_gone.len(), USERS, "one per booking of the sale");

    // One stream entry decided twice (under a second request id).
    let copy = Uuid::new_v4();
    let doubled = breaches_after(
        &mut client,
        goods,
        &accepted,
        &format!(
            "INSERT INTO booking_requests (request_id, goods_id, user_id, quantity, shard, \
               stream_id, stream_ms, stream_seq, position, decision, reason, accepted_at) \
             SELECT '{copy}', goods_id, user_id, quantity, shard, stream_id, stream_ms, \
               stream_seq, position, 'rejected', 'already_booked', accepted_at \
             FROM booking_requests WHERE request_id = '{0}';",
            first_waiting.request_id
        ),
    )
    .await;
    assert!(
        doubled.iter().any(
            |b| matches!(b, Breach::DecidedTwice { what, .. } if what.starts_with("stream entry"))
        ),
        "{doubled:?}"
    );
    assert!(
        doubled.contains(&Breach::NeverAccepted {
            count: 1,
            example: copy
        }),
        "{doubled:?}"
    );

    // Every corruption was rolled back: the sale checks clean again.
    assert_eq!(
        audit::audit(&mut client, Some(&[goods]), Some(&accepted))
            .await
            .expect("audit"),
        []
    );
}
