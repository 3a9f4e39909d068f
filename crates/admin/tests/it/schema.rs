//! PostgreSQL itself refuses what the invariants forbid, whatever the code does.

use test_support::TestDatabase;
use tokio_postgres::error::SqlState;

async fn goods_with_one_seat(db: &TestDatabase) -> (tokio_postgres::Client, i64, Vec<i64>) {
    let users = test_support::create_users(db, "s", 2).await;
    let client = db.client().await;
    let goods: i64 = client
        .query_one(
            "INSERT INTO goods (organizer_id, title, content, price, img_url, show_date, booking_limit) \
             VALUES ($1, 't', '', 0, '', now(), 1) RETURNING id",
            &[&users[0]],
        )
        .await
        .expect("goods")
        .get(0);
    (client, goods, users)
}

#[tokio::test]
async fn the_seat_counter_cannot_pass_the_booking_limit() {
    let db = TestDatabase::new().await;
    let (client, goods, _) = goods_with_one_seat(&db).await;
    client
        .execute("UPDATE goods SET booked_count = 1 WHERE id = $1", &[&goods])
        .await
        .expect("the last seat");
    let oversell = client
        .execute(
            "UPDATE goods SET booked_count = booked_count + 1 WHERE id = $1",
            &[&goods],
        )
        .await
        .expect_err("oversell refused");
    assert_eq!(oversell.code(), Some(&SqlState::CHECK_VIOLATION));
    let negative = client
        .execute(
            "UPDATE goods SET booked_count = -1 WHERE id = $1",
            &[&goods],
        )
        .await
        .expect_err("negative refused");
    assert_eq!(negative.code(), Some(&SqlState::CHECK_VIOLATION));
}

#[tokio::test]
async fn max_per_booking_cannot_pass_the_booking_limit_nor_a_hold_lack_its_deadline() {
    let db = TestDatabase::new().await;
    let (client, goods, users) = goods_with_one_seat(&db).await;
    let over = client
        .execute(
            "UPDATE goods SET max_per_booking = booking_limit + 1 WHERE id = $1",
            &[&goods],
        )
        .await
        .expect_err("maxPerBooking above the limit refused");
    assert_eq!(over.code(), Some(&SqlState::CHECK_VIOLATION));
    let held = client
        .execute(
            "INSERT INTO bookings (goods_id, user_id, request_id, quantity, status, position) \
             VALUES ($1, $2, gen_random_uuid(), 1, 'held', 1)",
            &[&goods, &users[0]],
        )
        .await
        .expect_err("a hold without a deadline refused");
    assert_eq!(held.code(), Some(&SqlState::CHECK_VIOLATION));
}

#[tokio::test]
async fn a_user_cannot_hold_two_live_bookings_for_one_goods() {
    let db = TestDatabase::new().await;
    let (client, goods, users) = goods_with_one_seat(&db).await;
    let insert =
        "INSERT INTO bookings (goods_id, user_id, request_id, quantity, status, position) \
                  VALUES ($1, $2, gen_random_uuid(), 1, $3, $4)";
    client
        .execute(insert, &[&goods, &users[1], &"confirmed", &1_i64])
        .await
        .expect("first booking");
    let second = client
        .execute(insert, &[&goods, &users[1], &"waitlisted", &2_i64])
        .await
        .expect_err("second live booking refused");
    assert_eq!(second.code(), Some(&SqlState::UNIQUE_VIOLATION));
    // A cancelled booking does not count; it must say who cancelled it, when and by
    // which request.
    let bare = client
        .execute(insert, &[&goods, &users[1], &"cancelled", &3_i64])
        .await
        .expect_err("a cancel without its record refused");
    assert_eq!(bare.code(), Some(&SqlState::CHECK_VIOLATION));
    client
        .execute(
            "INSERT INTO bookings (goods_id, user_id, request_id, quantity, status, position, \
               cancelled_at, cancelled_by, cancel_request_id) \
             VALUES ($1, $2, gen_random_uuid(), 1, 'cancelled', 3, now(), $2, gen_random_uuid())",
            &[&goods, &users[1]],
        )
        .await
        .expect("cancelled rows are not live");
}

#[tokio::test]
async fn a_request_id_is_decided_once_and_emails_are_unique_ignoring_case() {
    let db = TestDatabase::new().await;
    let (client, goods, users) = goods_with_one_seat(&db).await;
    let insert = "INSERT INTO booking_requests (request_id, goods_id, user_id, quantity, shard, stream_id, \
                  stream_ms, stream_seq, decision, accepted_at) \
                  VALUES ('00000000-0000-0000-0000-000000000001', $1, $2, 1, 0, '1-0', 1, 0, 'waitlisted', now())";
    client
        .execute(insert, &[&goods, &users[1]])
        .await
        .expect("first decision");
    let again = client
        .execute(insert, &[&goods, &users[1]])
        .await
        .expect_err("second decision refused");
    assert_eq!(again.code(), Some(&SqlState::UNIQUE_VIOLATION));
    let duplicate = client
        .execute(
            "INSERT INTO users (email, nickname, password_hash) VALUES (upper($1), 'other', 'x')",
            &[&"s1@load.invalid"],
        )
        .await
        .expect_err("same email in another case refused");
    assert_eq!(duplicate.code(), Some(&SqlState::UNIQUE_VIOLATION));
}

/// Migration V11: the worker's batch statement runs no foreign-key trigger per row;
/// what those keys guarded against besides, a referenced row deleted, is refused
/// outright: users, goods, bookings and decisions are never deleted (nor truncated),
/// and a refused statement changes nothing.
#[tokio::test]
async fn users_goods_bookings_and_decisions_are_never_deleted_nor_truncated() {
    let db = TestDatabase::new().await;
    let ids = test_support::create_users(&db, "keep", 1).await;
    let client = db.client().await;
    let goods: i64 = client
        .query_one(
            "INSERT INTO goods (organizer_id, title, content, price, img_url, show_date, \
               booking_limit) VALUES ($1, 't', '', 0, '', now(), 10) RETURNING id",
            &[&ids[0]],
        )
        .await
        .expect("goods")
        .get(0);
    client
        .batch_execute(&format!(
            "WITH b AS (INSERT INTO bookings (goods_id, user_id, request_id, quantity, status, \
               position) VALUES ({goods}, {user}, gen_random_uuid(), 1, 'confirmed', 1) \
               RETURNING id, request_id) \
             INSERT INTO booking_requests (request_id, goods_id, user_id, quantity, shard, \
               stream_id, stream_ms, stream_seq, position, decision, booking_id, accepted_at, \
               kind) SELECT request_id, {goods}, {user}, 1, 0, '1-0', 1, 0, 1, 'confirmed', id, \
               now(), 'book' FROM b",
            user = ids[0]
        ))
        .await
        .expect("a booking and its decision");

    for table in ["users", "goods", "bookings", "booking_requests"] {
        for statement in [
            format!("DELETE FROM {table}"),
            format!("TRUNCATE {table} CASCADE"),
        ] {
            let err = client
                .batch_execute(&statement)
                .await
                .expect_err(&format!("{statement} must be refused"));
            let code = err.as_db_error().map(|e| e.code().code().to_owned());
            assert_eq!(code.as_deref(), Some("23001"), "{statement}: {err}");
            let rows: i64 = client
                .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .await
                .expect("count")
                .get(0);
            assert_eq!(rows, 1, "{statement} changed nothing");
        }
    }
}
