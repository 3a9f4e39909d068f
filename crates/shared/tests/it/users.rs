use test_support::TestDatabase;

async fn deleted_xid(client: &tokio_postgres::Client, id: i64) -> Option<i64> {
    client
        .query_one(
            "SELECT deleted_xid::text::bigint FROM users WHERE id = $1",
            &[&id],
        )
        .await
        .expect("user")
        .get(0)
}

/// Migration V3: whatever deletes a user records the deleting transaction's id (the
/// API's incremental reload of deleted users rests on it); restoring clears it.
#[tokio::test]
async fn deleting_a_user_records_the_deleting_transaction_and_restoring_clears_it() {
    let db = TestDatabase::new().await;
    let ids = test_support::create_users(&db, "xid", 2).await;
    let mut client = db.client().await;
    assert_eq!(deleted_xid(&client, ids[0]).await, None);

    let tx = client.transaction().await.expect("begin");
    let xid: i64 = tx
        .query_one("SELECT pg_current_xact_id()::text::bigint", &[])
        .await
        .expect("xid")
        .get(0);
    tx.execute(
        "UPDATE users SET deleted_at = now() - interval '1 day' WHERE id = $1",
        &[&ids[0]],
    )
    .await
    .expect("delete");
    tx.commit().await.expect("commit");
    assert_eq!(deleted_xid(&client, ids[0]).await, Some(xid));
    assert_eq!(deleted_xid(&client, ids[1]).await, None, "only that user");

    // The operator path records it too; other updates leave it alone.
    let pool = test_support::shared::db::build_pool(&db.config()).expect("pool");
    assert!(
        test_support::shared::db::delete_user(&pool, "xid2@load.invalid")
            .await
            .expect("delete through the operator path")
    );
    assert!(deleted_xid(&client, ids[1]).await.is_some());
    client
        .execute(
            "UPDATE users SET role = 'organizer' WHERE id = $1",
            &[&ids[0]],
        )
        .await
        .expect("promote");
    assert_eq!(deleted_xid(&client, ids[0]).await, Some(xid));

    client
        .execute(
            "UPDATE users SET deleted_at = NULL WHERE id = $1",
            &[&ids[0]],
        )
        .await
        .expect("restore");
    assert_eq!(deleted_xid(&client, ids[0]).await, None);
}

/// The worker's sessions bound an idle transaction; other pools' do not.
#[tokio::test]
async fn worker_sessions_bound_idle_transactions() {
    let db = TestDatabase::new().await;
    let pool = test_support::shared::db::build_worker_pool(
        &db.config(),
        std::time::Duration::from_millis(1_500),
    )
    .expect("pool");
    let client = pool.get().await.expect("connection");
    let idle: String = client
        .query_one("SHOW idle_in_transaction_session_timeout", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(idle, "1500ms");
    let api = test_support::shared::db::build_pool(&db.config()).expect("pool");
    let other = api.get().await.expect("connection");
    let idle: String = other
        .query_one("SHOW idle_in_transaction_session_timeout", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(idle, "0");
}
