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
