use std::time::Duration;

use redis::AsyncCommands;
use reqwest::StatusCode;
use test_support::wait_until;

use crate::helpers::spawn_stack_configured;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_over_its_backlog_limit_gets_503_with_retry_after_until_workers_catch_up() {
    let stack = spawn_stack_configured(4, |c| c.http.backlog_limit = 5).await;
    let goods = stack.create_goods(100, 1).await;
    let users = stack.customers("bp", 60).await;
    let url = format!("{}/api/goods/{goods}/bookings", stack.address);
    let mut next = users.iter();
    let mut accepted = 0_usize;

    // No worker yet: the backlog grows until the API starts refusing.
    let mut refused = None;
    while refused.is_none() {
        let (_, token) = next.next().expect("enough users to fill the backlog");
        let response = stack
            .http
            .post(&url)
            .bearer_auth(token)
            .send()
            .await
            .expect("send");
        match response.status() {
            StatusCode::ACCEPTED => accepted += 1,
            StatusCode::SERVICE_UNAVAILABLE => refused = Some(response),
            other => panic!("unexpected {other}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = refused.expect("refused");
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: serde_json::Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "queue_full");
    assert!(
        accepted >= 5,
        "the bound is reached before refusing: {accepted}"
    );

    // A confirm is let through a full shard (a hold's deadline does not wait for the
    // backlog); a cancel is not.
    let (_, first) = &users[0];
    let mine = format!("{url}/me");
    let confirm = stack
        .http
        .post(format!("{mine}/confirm"))
        .bearer_auth(first)
        .send()
        .await
        .expect("send");
    assert_eq!(confirm.status(), StatusCode::ACCEPTED);
    let cancel = stack
        .http
        .delete(&mine)
        .bearer_auth(first)
        .send()
        .await
        .expect("send");
    assert_eq!(cancel.status(), StatusCode::SERVICE_UNAVAILABLE);
    let queued = accepted + 1;

    // Unprocessed entries are never trimmed to make room.
    let shard = goods % 4;
    let stream = format!("{}:{{s{shard}}}:stream", stack.redis.prefix());
    let mut conn = stack.redis.connection().await;
    let len: usize = conn.xlen(&stream).await.expect("xlen");
    assert_eq!(len, queued);

    // A worker drains the shard and bookings are accepted again.
    let _worker = stack.worker(&[]);
    stack.wait_for_decisions(queued as i64).await;
    let (_, token) = next.next().expect("user");
    wait_until(
        "bookings are accepted again",
        Duration::from_secs(30),
        || async {
            stack
                .http
                .post(&url)
                .bearer_auth(token)
                .send()
                .await
                .expect("send")
                .status()
                == StatusCode::ACCEPTED
        },
    )
    .await;
    stack.wait_for_decisions(queued as i64 + 1).await;
    stack.assert_invariants(goods).await;
    stack.wait_until_nothing_pending().await;
}
