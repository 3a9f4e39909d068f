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

#[tokio::test]
async fn bulk_create_writes_one_token_per_user_to_a_file_only_its_owner_can_read() {
    use std::os::unix::fs::PermissionsExt;

    let db = TestDatabase::new().await;
    let dir = std::env::temp_dir().join(format!("tn-admin-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("tokens.csv");
    // A file left world-readable by some earlier run is narrowed too.
    std::fs::write(&path, "old").expect("old file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_ticketnest-admin"))
        .args([
            "user",
            "bulk-create",
            "--count",
            "3",
            "--tag",
            "bulk",
            "--tokens",
        ])
        .arg(&path)
        .env("TICKETNEST_DATABASE_URL", db.url())
        .env("TICKETNEST_JWT_SECRET", test_support::TEST_JWT_SECRET)
        .env("TICKETNEST_ARGON2_MEMORY_KIB", "8")
        .env("TICKETNEST_ARGON2_ITERATIONS", "1")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run ticketnest-admin");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let lines = std::fs::read_to_string(&path).expect("tokens file");
    let ids: Vec<i64> = lines
        .lines()
        .map(|l| {
            l.split(',')
                .next()
                .and_then(|id| id.parse().ok())
                .expect("user id")
        })
        .collect();
    assert_eq!(ids.len(), 3);
    for id in &ids {
        assert_eq!(user_row(&db, *id).await, ("customer".to_owned(), false));
    }
    let mode = std::fs::metadata(&path)
        .expect("metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    let _ = std::fs::remove_dir_all(&dir);
}
