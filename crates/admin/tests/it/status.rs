//! `ticketnest-admin status` and `goods stats`: a sale's state before and after its
//! worker decides it.

use serde_json::{json, Value};
use test_support::stack::Stack;
use tokio_util::sync::CancellationToken;

use crate::{admin_json, admin_on};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_goods_stats_show_the_queue_then_the_decisions() {
    let stack = Stack::builder().spawn().await;
    let goods = stack.create_goods(5, 1).await;
    let quiet = stack.create_goods(5, 1).await;
    let fans = stack.customers("stat", 8).await;
    stack.book_all(goods, &fans, 4).await;
    stack.book_all(quiet, &fans[..2], 2).await;
    let shard = stack.shard_of(goods);

    // No worker yet: everything is queued, nobody owns a shard.
    let before = admin_json(&stack, &["status", "--json"]).await;
    let shards = before["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), stack.shards as usize);
    let row = &shards[shard.index()];
    let expected_backlog = if stack.shard_of(quiet) == shard {
        10
    } else {
        8
    };
    assert_eq!(row["backlog"], expected_backlog, "{before}");
    assert_eq!(row["pending"], 0);
    assert_eq!(row["owner"], Value::Null);
    assert!(
        row["lagSeconds"].as_f64().is_some_and(|s| s >= 0.0),
        "{row}"
    );
    assert_eq!(before["workers"], json!([]));
    assert_eq!(
        before["mostBacklog"],
        json!([
            { "goods": goods, "shard": shard.get(), "queued": 8 },
            { "goods": quiet, "shard": stack.shard_of(quiet).get(), "queued": 2 },
        ])
    );
    let stats = admin_json(&stack, &["goods", "stats", &goods.to_string(), "--json"]).await;
    assert_eq!(stats["queued"], 8, "{stats}");
    assert_eq!(stats["decided"], 0);

    stack
        .in_process_worker_until(CancellationToken::new())
        .await;
    stack.wait_for_decisions(10).await;
    stack.wait_until_nothing_pending().await;
    test_support::wait_until(
        "every shard owned",
        std::time::Duration::from_secs(30),
        || async { stack.leases_held().await == stack.shards as usize },
    )
    .await;

    let after = admin_json(&stack, &["status", "--json"]).await;
    let row = &after["shards"][shard.index()];
    assert_eq!(row["backlog"], 0, "{after}");
    assert_eq!(row["lagSeconds"], Value::Null);
    assert!(row["owner"].is_string(), "{row}");
    assert!(row["fence"].as_i64().is_some_and(|f| f >= 1), "{row}");
    assert_eq!(row["deadLetters"], json!({ "open": 0, "inStream": 0 }));
    assert_eq!(
        after["workers"].as_array().map(Vec::len),
        Some(1),
        "{after}"
    );
    assert_eq!(after["mostBacklog"], json!([]));

    let stats = admin_json(&stack, &["goods", "stats", &goods.to_string(), "--json"]).await;
    assert_eq!(stats["limit"], 5, "{stats}");
    assert_eq!(stats["seatsTaken"], 5);
    assert_eq!(stats["queued"], 0);
    assert_eq!(stats["decided"], 8);
    assert_eq!(
        stats["bookings"]["confirmed"],
        json!({ "bookings": 5, "seats": 5 })
    );
    assert_eq!(
        stats["bookings"]["waitlisted"],
        json!({ "bookings": 3, "seats": 3 })
    );
    assert_eq!(
        stats["bookings"]["cancelled"],
        json!({ "bookings": 0, "seats": 0 })
    );
    assert_eq!(
        stats["decisions"],
        json!([
            { "decision": "confirmed", "reason": null, "count": 5 },
            { "decision": "waitlisted", "reason": null, "count": 3 },
        ])
    );

    let (code, out) = admin_on(&stack, &["status"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("1 live workers"), "{out}");
    assert!(out.contains("no goods has requests queued"), "{out}");
    let (code, out) = admin_on(&stack, &["goods", "stats", &goods.to_string()]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("limit 5 seats: 5 taken"), "{out}");
    assert!(out.contains("  waitlisted 3 bookings, 3 seats"), "{out}");
    let (code, out) = admin_on(&stack, &["goods", "stats", "987654"]).await;
    assert_eq!((code, out.trim()), (Some(1), "no goods 987654"));
}
