use redis::AsyncCommands;

use crate::helpers::{spawn_stack, wait_until_nothing_pending, SHARDS};

#[tokio::test]
async fn undecodable_entries_go_to_the_dead_letter_stream_and_the_shard_moves_on() {
    let stack = spawn_stack().await;
    let goods = stack.create_goods(10, 1).await;
    let (user, token) = stack.customers("dlq", 1).await.remove(0);
    let shard = u32::try_from(goods % i64::from(SHARDS)).expect("shard");
    let stream = format!("{}:{{s{shard}}}:stream", stack.redis.prefix());
    let mut conn = stack.redis.connection().await;
    let _: String = conn
        .xadd(&stream, "*", &[("v", "9"), ("rid", "x")])
        .await
        .expect("xadd future version");
    let _: String = conn
        .xadd(&stream, "*", &[("v", "1"), ("gid", "1")])
        .await
        .expect("xadd missing fields");
    let accepted = stack.book(goods, user, &token, 1).await;

    let _worker = stack.worker(&[]);
    stack.wait_for_decisions(1).await;
    wait_until_nothing_pending(&stack).await;
    let status = stack.status(&accepted.request_id, &token).await;
    assert_eq!(status["status"], "confirmed");

    let dead = stack.dead_letters(shard).await;
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0]["dlq_reason"], "unsupported message version `9`");
    assert_eq!(dead[0]["v"], "9");
    assert_eq!(dead[1]["dlq_reason"], "missing field `rid`");
    assert!(dead.iter().all(|d| d.contains_key("dlq_source_id")));
}

/// An entry that decodes but that PostgreSQL refuses every time (here: an acceptance
/// time beyond PostgreSQL's timestamp range) goes to the dead-letter stream after
/// `TICKETNEST_MAX_ATTEMPTS` refusals; the entries around it are decided in order.
#[tokio::test]
async fn a_poison_entry_is_dead_lettered_after_its_attempts_and_the_shard_moves_on() {
    use test_support::shared::message::{BookingRequestV1, StreamMessage};

    let stack = spawn_stack().await;
    let goods = stack.create_goods(10, 1).await;
    let users = stack.customers("poison", 3).await;
    let shard = u32::try_from(goods % i64::from(SHARDS)).expect("shard");
    let stream = format!("{}:{{s{shard}}}:stream", stack.redis.prefix());

    let before = stack.book(goods, users[0].0, &users[0].1, 1).await;
    let poison_id = test_support::shared::keys::Keys::new_request_id(shard);
    let poison = StreamMessage::BookingRequestV1(BookingRequestV1 {
        request_id: poison_id,
        goods_id: goods,
        user_id: users[1].0,
        quantity: 1,
        accepted_at_ms: 9_000_000_000_000_000_000,
        trace_id: String::new(),
    });
    let mut conn = stack.redis.connection().await;
    let _: String = conn
        .xadd(&stream, "*", &poison.to_fields())
        .await
        .expect("xadd poison");
    let after = stack.book(goods, users[2].0, &users[2].1, 1).await;

    let _worker = stack.worker(&[("TICKETNEST_MAX_ATTEMPTS", "3")]);
    stack.wait_for_decisions(2).await;
    wait_until_nothing_pending(&stack).await;
    let dead = stack.dead_letters(shard).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0]["dlq_reason"].starts_with("refused by the database 3 times"),
        "{dead:?}"
    );
    assert_eq!(dead[0]["rid"], poison_id.simple().to_string());

    let rows = crate::helpers::assert_fifo_invariants(&stack, goods).await;
    let decided: Vec<&str> = rows.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(
        decided,
        [before.request_id.as_str(), after.request_id.as_str()]
    );
    let status = stack.status(&poison_id.to_string(), &users[1].1).await;
    assert_eq!(status["status"], "rejected");
    assert_eq!(status["reason"], "unprocessable");
}
