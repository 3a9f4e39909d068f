//! `ticketnest-admin verify`: clean on a healthy sale (saying what it checked), and
//! exit 1 naming each breach, in PostgreSQL and in the streams.

use std::time::Duration;

use redis::AsyncCommands;
use serde_json::Value;
use test_support::stack::Stack;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_a_healthy_sale_and_names_every_breach() {
    let stack = Stack::builder().spawn().await;
    let stop_worker = CancellationToken::new();
    stack.in_process_worker_until(stop_worker.clone()).await;
    let goods = stack.create_goods(5, 1).await;
    let fans = stack.customers("ver", 20).await;
    stack.book_all(goods, &fans, 8).await;
    stack.wait_for_decisions(20).await;
    stack.wait_until_nothing_pending().await;

    let (code, out) = crate::admin_on(&stack, &["verify"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("checked 1 goods, 20 decisions, 20 bookings"),
        "{out}"
    );
    assert!(out.contains("no breach"), "{out}");
    let (code, out) =
        crate::admin_on(&stack, &["verify", "--json", "--goods", &goods.to_string()]).await;
    assert_eq!(code, Some(0), "{out}");
    let report: Value = serde_json::from_str(&out).expect("one JSON object");
    assert_eq!(report["ok"], true);
    assert_eq!(report["checked"]["decisions"], 20);
    assert_eq!(report["breaches"], serde_json::json!([]));

    // Two breaches: a seat counter changed by hand, and an entry acknowledged (as by
    // a worker) that no decision records.
    stop_worker.cancel();
    test_support::wait_until("the worker gone", Duration::from_secs(20), || async {
        stack.leases_held().await == 0
    })
    .await;
    stack
        .db
        .client()
        .await
        .execute(
            "UPDATE goods SET booked_count = booked_count - 1 WHERE id = $1",
            &[&goods],
        )
        .await
        .expect("corrupt the counter");
    let shard = stack.shard_of(goods);
    let lost = uuid::Uuid::new_v4();
    let stream = stack.keys().stream(shard);
    stack
        .append(
            shard,
            &[
                ("v", "1".into()),
                ("k", "book".into()),
                ("rid", lost.simple().to_string()),
                ("gid", goods.to_string()),
                ("uid", fans[0].0.to_string()),
                ("qty", "1".into()),
                ("at", "1700000000000".into()),
            ],
        )
        .await;
    let mut conn = stack.redis.connection().await;
    let read: redis::streams::StreamReadReply = conn
        .xread_options(
            &[&stream],
            &[">"],
            &redis::streams::StreamReadOptions::default().group("workers", "by-hand"),
        )
        .await
        .expect("read as a worker");
    let ids: Vec<String> = read
        .keys
        .iter()
        .flat_map(|k| k.ids.iter().map(|e| e.id.clone()))
        .collect();
    assert_eq!(ids.len(), 1);
    let _: i64 = conn.xack(&stream, "workers", &ids).await.expect("xack");

    let (code, out) = crate::admin_on(&stack, &["verify"]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("BREACH"), "{out}");
    assert!(out.contains("booked_count"), "the counter is named: {out}");
    assert!(
        out.contains(&lost.to_string()),
        "the undecided request is named: {out}"
    );
    let (code, out) = crate::admin_on(&stack, &["verify", "--json"]).await;
    assert_eq!(code, Some(1));
    let report: Value = serde_json::from_str(&out).expect("one JSON object");
    assert_eq!(report["ok"], false);
    let kinds: Vec<&str> = report["breaches"]
        .as_array()
        .expect("breaches")
        .iter()
        .filter_map(|b| b["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"counter_mismatch"), "{kinds:?}");
    assert!(kinds.contains(&"undecided"), "{kinds:?}");
}
