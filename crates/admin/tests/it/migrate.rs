use test_support::TestDatabase;

use crate::admin;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_concurrent_migrate_runs_apply_each_migration_exactly_once() {
    let db = TestDatabase::empty().await;
    let runs = futures_util::future::join_all((0..4).map(|_| admin(&db, &["migrate"]))).await;
    for output in &runs {
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let client = db.client().await;
    let applied: Vec<i32> = client
        .query(
            "SELECT version FROM refinery_schema_history ORDER BY version",
            &[],
        )
        .await
        .expect("history")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let expected: Vec<i32> =
        (1..=i32::try_from(test_support::shared::db::latest_migration_version()).expect("v"))
            .collect();
    assert_eq!(applied, expected);
    // And again, later: nothing to do, still success.
    let again = admin(&db, &["migrate"]).await;
    assert!(again.status.success());
}
