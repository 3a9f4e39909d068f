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

/// The worker's sessions plan each statement for the tables as they are: a generic plan
/// cached on an empty database read every live booking per batch for as long as the
/// connection lived (bench/results/soak-*.md). They also bound an idle transaction.
#[tokio::test]
async fn worker_sessions_plan_each_statement_and_bound_idle_transactions() {
    let db = TestDatabase::new().await;
    let pool = test_support::shared::db::build_worker_pool(
        &db.config(),
        std::time::Duration::from_millis(1_500),
    )
    .expect("pool");
    let client = pool.get().await.expect("connection");
    let show = |name: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(&format!("SHOW {name}"), &[])
                .await
                .expect("show")
                .get::<_, String>(0)
        }
    };
    assert_eq!(show("plan_cache_mode").await, "force_custom_plan");
    assert_eq!(show("idle_in_transaction_session_timeout").await, "1500ms");
    // Other pools keep PostgreSQL's default.
    let api = test_support::shared::db::build_pool(&db.config()).expect("pool");
    let other = api.get().await.expect("connection");
    let mode: String = other
        .query_one("SHOW plan_cache_mode", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(mode, "auto");
}
