use test_support::shared::{
    decision::{Decision, RejectReason},
    keys::Keys,
    stream::{BookingRequestV1, Message},
};

use std::time::Duration;

use crate::helpers::spawn_stack;

/// A `dead_letters` row: shard, source id, reason, fields, request id, resolution.
type Recorded = (
    i32,
    String,
    String,
    String,
    Option<uuid::Uuid>,
    Option<String>,
);

#[tokio::test]
async fn undecodable_entries_go_to_the_dead_letter_stream_and_the_shard_moves_on() {
    let stack = spawn_stack().await;
    let goods = stack.create_goods(10, 1).await;
    let (user, token) = stack.customers("dlq", 1).await.remove(0);
    let shard = stack.shard_of(goods);
    let field = |k: &'static str, v: &str| (k, v.to_owned());
    stack
        .append(shard, &[field("v", "9"), field("rid", "x")])
        .await;
    stack
        .append(shard, &[field("v", "1"), field("gid", "1")])
        .await;
    stack
        .append(
            shard,
            &[field("v", "1"), field("k", "refund"), field("rid", "x")],
        )
        .await;
    // PostgreSQL cannot store a NUL in text: its copy has U+FFFD, Redis's is exact.
    stack
        .append(shard, &[field("v", "1"), field("k", "nul\0kind")])
        .await;
    let accepted = stack.book(goods, user, &token, 1).await;

    let _worker = stack.worker(&[]);
    stack.wait_for_decisions(1).await;
    stack.wait_until_nothing_pending().await;
    let status = stack.status(&accepted.request_id, &token).await;
    assert_eq!(status["status"], "confirmed");

    let dead = stack.dead_letters(shard).await;
    assert_eq!(dead.len(), 4);
    assert_eq!(dead[0]["dlq_reason"], "unsupported message version `9`");
    assert_eq!(dead[0]["v"], "9");
    assert_eq!(dead[1]["dlq_reason"], "missing field `rid`");
    assert_eq!(dead[2]["dlq_reason"], "unknown message kind `refund`");
    assert_eq!(dead[3]["k"], "nul\0kind");
    assert!(dead.iter().all(|d| d.contains_key("dlq_source_id")));

    // Each is recorded in PostgreSQL too, open (no operator has acted on it), with
    // its fields, before it was acknowledged.
    let rows = stack
        .db
        .client()
        .await
        .query(
            "SELECT shard, source_id, reason, fields::text, request_id, resolution \
             FROM dead_letters ORDER BY id",
            &[],
        )
        .await
        .expect("dead_letters");
    let recorded: Vec<Recorded> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect();
    let expected: Vec<Recorded> = [
        (
            0,
            r#"{"v": "9", "rid": "x"}"#,
            "unsupported message version `9`",
        ),
        (1, r#"{"v": "1", "gid": "1"}"#, "missing field `rid`"),
        (
            2,
            r#"{"k": "refund", "v": "1", "rid": "x"}"#,
            "unknown message kind `refund`",
        ),
        (
            3,
            "{\"k\": \"nul\u{FFFD}kind\", \"v\": \"1\"}",
            "unknown message kind `nul\u{FFFD}kind`",
        ),
    ]
    .into_iter()
    .map(|(i, fields, reason)| {
        (
            shard.as_i32(),
            dead[i]["dlq_source_id"].clone(),
            reason.to_owned(),
            fields.to_owned(),
            None,
            None,
        )
    })
    .collect();
    assert_eq!(recorded, expected);
}

/// An entry that decodes but that PostgreSQL refuses every time (here: an acceptance
/// time beyond PostgreSQL's timestamp range) goes to the dead-letter stream after
/// `TICKETNEST_MAX_ATTEMPTS` refusals; the entries around it are decided in order.
#[tokio::test]
async fn a_poison_entry_is_dead_lettered_after_its_attempts_and_the_shard_moves_on() {
    let stack = spawn_stack().await;
    let goods = stack.create_goods(10, 1).await;
    let users = stack.customers("poison", 3).await;
    let shard = stack.shard_of(goods);

    let before = stack.book(goods, users[0].0, &users[0].1, 1).await;
    let poison_id = Keys::new_request_id(shard);
    let poison = Message::Book(BookingRequestV1 {
        request_id: poison_id,
        goods_id: goods,
        user_id: users[1].0,
        quantity: 1,
        accepted_at_ms: 9_000_000_000_000_000_000,
        trace_id: String::new(),
        traceparent: None,
    });
    stack.append(shard, &poison.to_fields()).await;
    let after = stack.book(goods, users[2].0, &users[2].1, 1).await;

    let _worker = stack.worker(&[("TICKETNEST_MAX_ATTEMPTS", "3")]);
    stack.wait_for_decisions(3).await;
    stack.wait_until_nothing_pending().await;
    let dead = stack.dead_letters(shard).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0]["dlq_reason"].starts_with("refused by the database 3 times"),
        "{dead:?}"
    );
    assert_eq!(dead[0]["rid"], poison_id.simple().to_string());
    let row = stack
        .db
        .client()
        .await
        .query_one(
            "SELECT source_id, reason, fields->>'rid', request_id FROM dead_letters",
            &[],
        )
        .await
        .expect("one dead letter in PostgreSQL");
    assert_eq!(row.get::<_, String>(0), dead[0]["dlq_source_id"]);
    assert_eq!(row.get::<_, String>(1), dead[0]["dlq_reason"]);
    assert_eq!(row.get::<_, String>(2), dead[0]["rid"]);
    assert_eq!(row.get::<_, Option<uuid::Uuid>>(3), Some(poison_id));

    // The dead letter is a decision like any other, recorded in PostgreSQL, taking no
    // turn: the requests around it keep positions 1 and 2.
    let rows = stack.assert_invariants(goods).await;
    let decided: Vec<(uuid::Uuid, Decision, Option<i64>)> = rows
        .iter()
        .map(|r| (r.request_id, r.decision, r.position))
        .collect();
    assert_eq!(
        decided,
        [
            (before.request_id, Decision::Confirmed, Some(1)),
            (
                poison_id,
                Decision::Rejected(RejectReason::Unprocessable),
                None
            ),
            (after.request_id, Decision::Confirmed, Some(2)),
        ]
    );
    let status = stack.status(poison_id, &users[1].1).await;
    assert_eq!(status["status"], "rejected");
    assert_eq!(status["reason"], "unprocessable");
    // Still so once the Redis status has expired: PostgreSQL answers.
    let mut conn = stack.redis.connection().await;
    let _: i64 =
        redis::AsyncCommands::del(&mut conn, stack.keys().request_status(shard, poison_id))
            .await
            .expect("expire the status");
    let status = stack.status(poison_id, &users[1].1).await;
    assert_eq!(status["status"], "rejected");
    assert_eq!(status["reason"], "unprocessable");
}

/// A decision already in the log that this build cannot read (here: a rejection
/// reason written by some newer build) is not the entry's fault: the worker retries
/// it like an outage, never dead-letters it, and settles it once the row is readable.
#[tokio::test]
async fn a_decision_this_build_cannot_read_is_retried_and_never_dead_lettered() {
    use redis::AsyncCommands;
    use test_support::shared::stream::CONSUMER_GROUP;

    let stack = spawn_stack().await;
    let goods = stack.create_goods(10, 1).await;
    let (user, token) = stack.customers("unread", 1).await.remove(0);
    let shard = stack.shard_of(goods);
    let _worker = stack.worker(&[("TICKETNEST_MAX_ATTEMPTS", "1")]);
    let book = || async {
        let response = stack
            .http
            .post(stack.url(&format!("/api/goods/{goods}/bookings")))
            .bearer_auth(&token)
            .header("idempotency-key", "once")
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
        let body: serde_json::Value = response.json().await.expect("json");
        body["requestId"].as_str().expect("requestId").to_owned()
    };
    let request_id = book().await;
    stack.wait_for_decisions(1).await;
    stack.wait_until_nothing_pending().await;
    let client = stack.db.client().await;
    let unreadable = "UPDATE booking_requests SET decision = 'rejected', reason = 'sold_elsewhere'";
    client.execute(unreadable, &[]).await.expect("corrupt");

    // A second entry for the same request (a redelivery; an idempotent retry is
    // answered from Redis and appends none): the worker finds it decided, and cannot
    // read the decision. It must hold the entry, not acknowledge or dead-letter it.
    let copy = Message::Book(BookingRequestV1 {
        request_id: uuid::Uuid::try_parse(&request_id).expect("uuid"),
        goods_id: goods,
        user_id: user,
        quantity: 1,
        accepted_at_ms: 1_700_000_000_000,
        trace_id: String::new(),
        traceparent: None,
    });
    let fields: Vec<(&str, String)> = copy.to_fields();
    stack.append(shard, &fields).await;
    let stream = stack.keys().stream(shard);
    let conn = stack.redis.connection().await;
    test_support::wait_until(
        "the worker holds the retried entry for over 1.5 s without settling it",
        Duration::from_secs(30),
        || {
            let (mut conn, stream) = (conn.clone(), stream.clone());
            async move {
                let pending: redis::streams::StreamPendingCountReply = conn
                    .xpending_count(&stream, CONSUMER_GROUP, "-", "+", 10)
                    .await
                    .expect("xpending");
                pending.ids.iter().any(|p| p.last_delivered_ms >= 1_500)
            }
        },
    )
    .await;
    assert!(stack.dead_letters(shard).await.is_empty());

    // Readable again: settled from the log, nothing dead-lettered.
    client
        .execute(
            "UPDATE booking_requests SET decision = 'confirmed', reason = NULL",
            &[],
        )
        .await
        .expect("repair");
    stack.wait_until_nothing_pending().await;
    assert!(stack.dead_letters(shard).await.is_empty());
    let status = stack.status(&request_id, &token).await;
    assert_eq!(status["status"], "confirmed", "{status}");
    stack.assert_invariants(goods).await;
}

/// A request accepted by an API newer than the workers (a version they cannot read:
/// the upgrade order broken) is dead-lettered; its owner must not be told `queued` for
/// good: the status the API wrote becomes `rejected`, `unprocessable`, and expires.
#[tokio::test]
async fn an_undecodable_entry_with_a_request_id_tells_its_owner_it_was_rejected() {
    use redis::AsyncCommands;

    let stack = spawn_stack().await;
    let goods = stack.create_goods(10, 1).await;
    let (user, token) = stack.customers("skew", 1).await.remove(0);
    let shard = stack.shard_of(goods);
    let request_id = Keys::new_request_id(shard);
    let status_key = stack.keys().request_status(shard, request_id);
    let mut conn = stack.redis.connection().await;
    let _: () = conn
        .hset_multiple(
            &status_key,
            &[
                ("user", user.to_string()),
                ("goods", goods.to_string()),
                ("qty", "1".to_owned()),
                ("status", "queued".to_owned()),
            ],
        )
        .await
        .expect("hset");
    let field = |k: &'static str, v: String| (k, v);
    stack
        .append(
            shard,
            &[
                field("v", "2".into()),
                field("rid", request_id.simple().to_string()),
            ],
        )
        .await;

    let _worker = stack.worker(&[]);
    test_support::wait_until(
        "the entry is dead-lettered",
        Duration::from_secs(30),
        || async { stack.dead_letters(shard).await.len() == 1 },
    )
    .await;
    let status = stack.status(&request_id, &token).await;
    assert_eq!(status["status"], "rejected");
    assert_eq!(status["reason"], "unprocessable");
    let ttl: i64 = conn.ttl(&status_key).await.expect("ttl");
    assert!(ttl > 0 && ttl <= 3_600, "the rejection expires: {ttl}");
}

/// An undecodable entry of thousands of fields is dead-lettered (its copy cut down to a
/// bounded size, saying so) and the shard moves on.
#[tokio::test]
async fn an_entry_with_thousands_of_fields_is_dead_lettered_and_the_shard_moves_on() {
    let stack = spawn_stack().await;
    let goods = stack.create_goods(10, 1).await;
    let (user, token) = stack.customers("wide", 1).await.remove(0);
    let shard = stack.shard_of(goods);
    let names: Vec<String> = (0..5_000).map(|i| format!("f{i}")).collect();
    let mut fields: Vec<(&str, String)> = names.iter().map(|n| (n.as_str(), "x".into())).collect();
    fields.push(("v", "2".into()));
    stack.append(shard, &fields).await;
    let accepted = stack.book(goods, user, &token, 1).await;

    let _worker = stack.worker(&[]);
    stack.wait_for_decisions(1).await;
    stack.wait_until_nothing_pending().await;
    let status = stack.status(&accepted.request_id, &token).await;
    assert_eq!(status["status"], "confirmed");
    let dead = stack.dead_letters(shard).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["dlq_truncated"], "5001");
    assert!(dead[0].len() < 1_000, "{} fields copied", dead[0].len());
}

/// Readers tolerate words a newer build writes (a rolling upgrade: workers first):
/// a decision whose reason this build does not know is still answered, as written,
/// not with a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_with_a_word_this_build_does_not_know_is_answered_as_written() {
    let stack = spawn_stack().await;
    let goods = stack.create_goods(1, 1).await;
    let users = stack.customers("words", 2).await;
    let _worker = stack.worker(&[]);
    stack.book(goods, users[0].0, &users[0].1, 1).await;
    let second = stack.book(goods, users[1].0, &users[1].1, 1).await;
    stack.wait_for_decisions(2).await;
    stack.wait_until_nothing_pending().await;
    stack
        .db
        .client()
        .await
        .execute(
            "UPDATE booking_requests SET decision = 'rejected', reason = 'waitlist_full' \
             WHERE request_id = $1",
            &[&second.request_id],
        )
        .await
        .expect("a newer build's word");
    let key = stack
        .keys()
        .request_status(stack.shard_of(goods), second.request_id);
    let mut conn = stack.redis.connection().await;
    let _: () = redis::AsyncCommands::del(&mut conn, &key)
        .await
        .expect("expire");
    let status = stack.status(&second.request_id, &users[1].1).await;
    assert_eq!(status["status"], "rejected", "{status}");
    assert_eq!(status["reason"], "waitlist_full", "{status}");
}

/// A dead letter too big for its PostgreSQL row is cut to size, and one PostgreSQL
/// refuses whole (here a constraint added by hand) is recorded without its fields:
/// no entry can stall its shard.
#[tokio::test]
async fn a_dead_letter_postgresql_cannot_store_whole_is_cut_or_recorded_bare_and_the_shard_moves_on(
) {
    use test_support::shared::stream::MAX_STORED_FIELD_BYTES;

    let stack = spawn_stack().await;
    let goods = stack.create_goods(10, 1).await;
    let users = stack.customers("big", 2).await;
    let shard = stack.shard_of(goods);
    let huge = "é".repeat(MAX_STORED_FIELD_BYTES);
    stack
        .append(shard, &[("v", "9".to_owned()), ("blob", huge.clone())])
        .await;
    let first = stack.book(goods, users[0].0, &users[0].1, 1).await;
    let _worker = stack.worker(&[]);
    stack.wait_for_decisions(1).await;
    stack.wait_until_nothing_pending().await;
    let client = stack.db.client().await;
    let row = client
        .query_one(
            "SELECT length(fields->>'blob'), fields->>'dlq_cut', fields->>'v' FROM dead_letters",
            &[],
        )
        .await
        .expect("the cut letter");
    assert_eq!(
        row.get::<_, Option<i32>>(0),
        Some(i32::try_from(MAX_STORED_FIELD_BYTES / 2).expect("fits"))
    );
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("blob"));
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("9"));
    assert_eq!(
        stack.dead_letters(shard).await[0]["blob"],
        huge,
        "Redis keeps it whole"
    );

    client
        .batch_execute(
            "ALTER TABLE dead_letters ADD CONSTRAINT small CHECK (length(fields::text) < 100) NOT VALID",
        )
        .await
        .expect("narrow the table");
    // Side by side (usually in one batch): the one that fits keeps its fields.
    stack
        .append(shard, &[("v", "9".to_owned()), ("s", "ok".to_owned())])
        .await;
    stack
        .append(shard, &[("v", "9".to_owned()), ("pad", "x".repeat(200))])
        .await;
    let second = stack.book(goods, users[1].0, &users[1].1, 1).await;
    stack.wait_for_decisions(2).await;
    stack.wait_until_nothing_pending().await;
    for (request, token) in [
        (&first.request_id, &users[0].1),
        (&second.request_id, &users[1].1),
    ] {
        assert_eq!(stack.status(request, token).await["status"], "confirmed");
    }
    let rows = client
        .query(
            "SELECT fields::text, reason FROM dead_letters ORDER BY id DESC LIMIT 2",
            &[],
        )
        .await
        .expect("the last two letters");
    let (bare, small) = (&rows[0], &rows[1]);
    assert_eq!(small.get::<_, String>(0), r#"{"s": "ok", "v": "9"}"#);
    assert_eq!(bare.get::<_, String>(0), "{}");
    assert!(
        bare.get::<_, String>(1)
            .contains("PostgreSQL refused to store"),
        "{}",
        bare.get::<_, String>(1)
    );
    assert_eq!(stack.dead_letters(shard).await.len(), 3);
}
