//! `ticketnest-admin dlq`: dead letters recorded by the worker in PostgreSQL, listed,
//! replayed as new requests decided like any other (once, however often replayed),
//! and dropped with an audit line.

use serde_json::Value;
use test_support::{
    shared::{
        decision::{Decision, RejectReason},
        keys::Keys,
        stream::{BookingRequestV1, Message},
    },
    stack::Stack,
};
use tokio_util::sync::CancellationToken;

use crate::{admin_json, admin_on};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_replayed_once_and_dropped_with_who_and_when() {
    let stack = Stack::builder().spawn().await;
    let goods = stack.create_goods(10, 2).await;
    let users = stack.customers("dlq", 2).await;
    let shard = stack.shard_of(goods);

    // A booking PostgreSQL refuses (an acceptance time beyond its range), an entry no
    // build decodes, and a good booking after them.
    let poison_id = Keys::new_request_id(shard);
    let poison = Message::Book(BookingRequestV1 {
        request_id: poison_id,
        goods_id: goods,
        user_id: users[0].0,
        quantity: 2,
        accepted_at_ms: 9_000_000_000_000_000_000,
        trace_id: "t-poison".into(),
        traceparent: None,
    });
    stack.append(shard, &poison.to_fields()).await;
    stack
        .append(shard, &[("v", "9".to_owned()), ("gid", goods.to_string())])
        .await;
    let good = stack.book(goods, users[1].0, &users[1].1, 1).await;
    stack
        .in_process_worker_until(CancellationToken::new())
        .await;
    stack.wait_for_decisions(2).await;
    stack.wait_until_nothing_pending().await;

    let listed = admin_json(&stack, &["dlq", "list", "--json"]).await;
    let letters = listed.as_array().expect("an array");
    assert_eq!(letters.len(), 2, "{listed}");
    let (refused, undecodable) = (&letters[0], &letters[1]);
    assert_eq!(refused["shard"], shard.get());
    assert_eq!(refused["requestId"], poison_id.to_string());
    assert_eq!(refused["fields"]["qty"], "2");
    assert!(
        refused["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("refused by the database 5 times")),
        "{refused}"
    );
    assert_eq!(undecodable["reason"], "unsupported message version `9`");
    assert_eq!(undecodable["requestId"], Value::Null);
    assert_eq!(undecodable["resolution"], Value::Null);
    let (refused_id, undecodable_id) = (
        refused["id"].as_i64().expect("id").to_string(),
        undecodable["id"].as_i64().expect("id").to_string(),
    );
    let (code, out) = admin_on(&stack, &["dlq", "list", "--shard", &shard.to_string()]).await;
    assert_eq!(code, Some(0));
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        out.contains(&format!("#{refused_id} shard {shard}")),
        "{out}"
    );

    // The undecodable one: this build cannot decode it either; nothing changes.
    let (code, out) = admin_on(&stack, &["dlq", "replay", &undecodable_id]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("cannot decode it either"), "{out}");

    // The refused one comes back as a new request, at the back of the line, decided
    // like any other; its own decision stays.
    let (code, out) = admin_on(
        &stack,
        &[
            "dlq",
            "replay",
            &refused_id,
            "--by",
            "alice",
            "--note",
            "range fixed",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    let replayed = Keys::replay_request_id(
        shard,
        refused["id"].as_i64().expect("id"),
        refused["sourceId"].as_str().expect("sourceId"),
    );
    assert!(out.contains(&replayed.to_string()), "{out}");
    stack.wait_for_decisions(3).await;
    stack.wait_until_nothing_pending().await;
    let status = stack.status(replayed, &users[0].1).await;
    assert_eq!(status["status"], "confirmed", "{status}");
    assert_eq!(status["quantity"], 2, "{status}");
    let rows = stack.assert_invariants(goods).await;
    let decided: Vec<_> = rows
        .iter()
        .map(|r| (r.request_id, r.decision, r.position))
        .collect();
    assert_eq!(
        decided,
        [
            (
                poison_id,
                Decision::Rejected(RejectReason::Unprocessable),
                None
            ),
            (good.request_id, Decision::Confirmed, Some(1)),
            (replayed, Decision::Confirmed, Some(2)),
        ]
    );

    // Replayed again: refused, it is resolved. And a replay whose record was lost
    // (the row put back by hand) finds its request decided and enqueues nothing.
    let (code, out) = admin_on(&stack, &["dlq", "replay", &refused_id]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("already resolved"), "{out}");
    assert!(out.contains("replayed by alice"), "{out}");
    let client = stack.db.client().await;
    client
        .execute(
            "UPDATE dead_letters SET resolution = NULL, resolved_by = NULL, resolved_at = NULL, \
             replayed_as = NULL WHERE request_id = $1",
            &[&poison_id],
        )
        .await
        .expect("lose the record");
    let before = stream_len(&stack, shard).await;
    let (code, out) = admin_on(
        &stack,
        &["dlq", "replay", "--all", "--json", "--by", "carol"],
    )
    .await;
    assert_eq!(code, Some(1), "the undecodable one is skipped: {out}");
    let report: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(report[0]["replayedAs"], replayed.to_string(), "{report}");
    assert!(report[1]["skipped"].is_string(), "{report}");
    assert_eq!(
        stream_len(&stack, shard).await,
        before,
        "nothing enqueued twice"
    );
    assert_eq!(stack.decisions(goods).await.len(), 3);

    // Dropped, with who, when and why; once.
    let (code, out) = admin_on(
        &stack,
        &[
            "dlq",
            "drop",
            &undecodable_id,
            "--by",
            "bob",
            "--note",
            "junk",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = admin_on(&stack, &["dlq", "drop", &undecodable_id]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("already resolved"), "{out}");
    let (code, out) = admin_on(&stack, &["dlq", "drop", "999999"]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no such dead letter"), "{out}");
    let (code, out) = admin_on(&stack, &["dlq", "list"]).await;
    assert_eq!((code, out.trim()), (Some(0), "no dead letters waiting"));
    let all = admin_json(&stack, &["dlq", "list", "--all", "--json"]).await;
    let audit: Vec<(Value, Value, Value, Value, bool)> = all
        .as_array()
        .expect("array")
        .iter()
        .map(|l| {
            (
                l["resolution"].clone(),
                l["resolvedBy"].clone(),
                l["note"].clone(),
                l["replayedAs"].clone(),
                l["resolvedAt"].is_string(),
            )
        })
        .collect();
    assert_eq!(
        audit,
        [
            (
                "replayed".into(),
                "carol".into(),
                Value::Null,
                replayed.to_string().into(),
                true
            ),
            (
                "dropped".into(),
                "bob".into(),
                "junk".into(),
                Value::Null,
                true
            ),
        ]
    );
    let (code, out) = admin_on(&stack, &["verify"]).await;
    assert_eq!(code, Some(0), "{out}");
}

/// What is not replayed: a letter of another kind than a booking (it would act on
/// what is there now), a letter whose entry a worker decided since, and anything at
/// all under another shard count than the deployment's. And a replay that was not
/// recorded cannot be dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_that_would_decide_something_nobody_sent_are_refused() {
    let stack = Stack::builder().spawn().await;
    let goods = stack.create_goods(10, 1).await;
    let users = stack.customers("nodlq", 3).await;
    let shard = stack.shard_of(goods);
    let poison = |user: i64, cancel: bool| {
        let request = BookingRequestV1 {
            request_id: Keys::new_request_id(shard),
            goods_id: goods,
            user_id: user,
            quantity: if cancel { 0 } else { 1 },
            accepted_at_ms: 9_000_000_000_000_000_000,
            trace_id: String::new(),
            traceparent: None,
        };
        if cancel {
            Message::Cancel(request)
        } else {
            Message::Book(request)
        }
    };
    stack
        .append(shard, &poison(users[0].0, true).to_fields())
        .await;
    stack
        .append(shard, &poison(users[1].0, false).to_fields())
        .await;
    let good = stack.book(goods, users[2].0, &users[2].1, 1).await;
    stack
        .in_process_worker_until(CancellationToken::new())
        .await;
    stack.wait_for_decisions(3).await;
    stack.wait_until_nothing_pending().await;
    let letters = admin_json(&stack, &["dlq", "list", "--json"]).await;
    let ids: Vec<String> = letters
        .as_array()
        .expect("array")
        .iter()
        .map(|l| l["id"].as_i64().expect("id").to_string())
        .collect();
    assert_eq!(ids.len(), 2, "{letters}");
    let (cancel, book) = (&ids[0], &ids[1]);

    let (code, out) = admin_on(&stack, &["dlq", "replay", cancel]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("only bookings are replayed"), "{out}");

    // An old build's letter for an entry a newer worker decided since.
    let client = stack.db.client().await;
    let stale: i64 = client
        .query_one(
            "INSERT INTO dead_letters (shard, source_id, reason, fields, request_id) \
             SELECT shard, stream_id, 'unsupported message version `3`', \
               jsonb_build_object('v', '1', 'k', 'book', 'rid', request_id::text, \
                 'gid', goods_id::text, 'uid', user_id::text, 'qty', '1', 'at', '1700000000000'), \
               NULL \
             FROM booking_requests WHERE request_id = $1 RETURNING id",
            &[&good.request_id],
        )
        .await
        .expect("a stale letter")
        .get(0);
    let before = stream_len(&stack, shard).await;
    let (code, out) = admin_on(&stack, &["dlq", "replay", &stale.to_string()]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("decided since, as request {}", good.request_id)),
        "{out}"
    );

    // Another shard count: refused before anything is read or written.
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_ticketnest-admin"))
        .args(["dlq", "replay", "--all"])
        .env("TICKETNEST_DATABASE_URL", stack.db.url())
        .env("TICKETNEST_REDIS_URL", stack.redis.url())
        .env("TICKETNEST_REDIS_PREFIX", stack.redis.prefix())
        .env("TICKETNEST_SHARDS", (stack.shards + 1).to_string())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run ticketnest-admin");
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains(&format!("this deployment has {} shards", stack.shards)),
        "{stderr}"
    );
    assert_eq!(stream_len(&stack, shard).await, before, "nothing enqueued");

    // A replay whose record was lost cannot be dropped: it is on its way.
    let (code, out) = admin_on(&stack, &["dlq", "replay", book]).await;
    assert_eq!(code, Some(0), "{out}");
    client
        .execute(
            "UPDATE dead_letters SET resolution = NULL, resolved_by = NULL, resolved_at = NULL, \
             replayed_as = NULL WHERE id = $1",
            &[&book.parse::<i64>().expect("id")],
        )
        .await
        .expect("lose the record");
    let (code, out) = admin_on(&stack, &["dlq", "drop", book]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("that replay was not recorded"), "{out}");
    let (code, out) = admin_on(&stack, &["dlq", "drop", cancel, "--note", "resent"]).await;
    assert_eq!(code, Some(0), "{out}");
    stack.wait_for_decisions(4).await;
    stack.wait_until_nothing_pending().await;
    let (code, out) = admin_on(&stack, &["verify"]).await;
    assert_eq!(code, Some(0), "{out}");
}

/// How many entries the shard stream holds now.
async fn stream_len(stack: &Stack, shard: test_support::shared::shard::Shard) -> u64 {
    let mut conn = stack.redis.connection().await;
    redis::cmd("XLEN")
        .arg(stack.keys().stream(shard))
        .query_async(&mut conn)
        .await
        .expect("XLEN")
}
