use test_support::TestDatabase;

use crate::admin;

async fn user_row(db: &TestDatabase, id: i64) -> (String, bool) {
    let row = db
        .client()
        .await
        .query_one(
            "SELECT role, deleted_at IS NOT NULL FROM users WHERE id = $1",
            &[&id],
        )
        .await
        .expect("user");
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn promote_demote_and_delete_change_exactly_the_named_user() {
    let db = TestDatabase::new().await;
    let ids = test_support::create_users(&db, "adm", 2).await;
    let output = admin(&db, &["user", "promote", "ADM1@load.invalid"]).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(user_row(&db, ids[0]).await, ("organizer".into(), false));
    assert_eq!(user_row(&db, ids[1]).await, ("customer".into(), false));

    let output = admin(&db, &["user", "demote", "adm1@load.invalid"]).await;
    assert!(output.status.success());
    assert_eq!(user_row(&db, ids[0]).await, ("customer".into(), false));

    let output = admin(&db, &["user", "delete", "adm2@load.invalid"]).await;
    assert!(output.status.success());
    assert_eq!(user_row(&db, ids[1]).await, ("customer".into(), true));
    // A deleted user cannot be promoted, and an unknown email is an error.
    let output = admin(&db, &["user", "promote", "adm2@load.invalid"]).await;
    assert_eq!(output.status.code(), Some(1));
    let output = admin(&db, &["user", "promote", "nobody@load.invalid"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no user with email nobody@load.invalid")
    );
}
