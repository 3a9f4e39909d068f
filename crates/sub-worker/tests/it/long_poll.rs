//! `GET /api/bookings/requests/{id}?wait=N`: answers as soon as the status is other
//! than the one the client last saw, or after N seconds with the status then; the API
//! waits on the workers' notes, not on a Redis connection per client.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures_util::{stream, StreamExt};
use reqwest::StatusCode;
use serde_json::Value;
use test_support::{servers::RedisServer, wait_until, TestDatabase, TestRedis};

use crate::helpers::{assert_error, parts, spawn_stack, spawn_stack_on, Stack, SHARDS};

/// A long-poll as `token`: the HTTP status, the body, and how long it took.
async fn long_poll(stack: &Stack, query: &str, token: &str) -> (StatusCode, Value, Duration) {
    let started = Instant::now();
    let (status, body) = parts(
        stack
            .http
            .get(stack.url(&format!("/api/bookings/requests/{query}")))
            .bearer_auth(token)
            .send()
            .await
            .expect("send"),
    )
    .await;
    (status, body, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_answers_on_the_decision_or_at_its_deadline() {
    let stack = spawn_stack().await;
    let goods = stack.create_goods(1, 1).await;
    let users = stack.customers("lp", 3).await;
    let (first, second, stranger) = (&users[0], &users[1], &users[2]);
    let a = stack.book(goods, first.0, &first.1, 1).await.request_id;
    let b = stack.book(goods, second.0, &second.1, 1).await.request_id;

    // Nothing happens: after a second, the status then, still queued, with its place.
    let (status, body, took) = long_poll(&stack, &format!("{b}?wait=1"), &second.1).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "queued");
    assert_eq!(body["position"], 1);
    assert!(
        took >= Duration::from_secs(1),
        "waited its second: {took:?}"
    );

    // Bad input: 400 naming what is wrong, for the owner and a stranger alike.
    for query in [
        "wait=0",
        "wait=31",
        "wait=1.5",
        "wait=",
        "wait=+5",
        "wait=10&seen=sold",
    ] {
        let (status, body, _) = long_poll(&stack, &format!("{a}?{query}"), &first.1).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_query");
    }
    // Other parameters (a cache-buster) are ignored: a plain read, at once.
    let (status, body, _) = long_poll(&stack, &format!("{a}?_=1700000000"), &first.1).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["position"], 0);
    // Someone else's request is not found, at once.
    let (status, body, took) = long_poll(&stack, &format!("{a}?wait=30"), &stranger.1).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "request_not_found");
    assert!(took < Duration::from_secs(10), "{took:?}");

    // Both wait; a worker starts. Each answers soon after its own decision, long
    // before its deadline. The gap is measured against the moment the status hash
    // showed the decision.
    let polls = [(a, first), (b, second)].map(|(id, (_, token))| {
        let stack_http = stack.http.clone();
        let url = stack.url(&format!("/api/bookings/requests/{id}?wait=30"));
        let token = token.clone();
        tokio::spawn(async move {
            let response = stack_http
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("send");
            let answered = Instant::now();
            (parts(response).await, answered)
        })
    });
    let started = Instant::now();
    let _worker = stack.worker(&[]);
    let mut conn = stack.redis.connection().await;
    let key = stack.keys().request_status(stack.shard_of(goods), b);
    let decided_at = loop {
        let status: Option<String> = redis::cmd("HGET")
            .arg(&key)
            .arg("status")
            .query_async(&mut conn)
            .await
            .expect("HGET");
        if status.as_deref() != Some("queued") {
            break Instant::now();
        }
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "no decision within 25 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let mut answers = Vec::new();
    for poll in polls {
        answers.push(poll.await.expect("poll task"));
    }
    let [((status_a, body_a), _), ((status_b, body_b), answered_b)] =
        <[_; 2]>::try_from(answers).expect("two answers");
    assert_eq!(status_a, StatusCode::OK, "{body_a}");
    assert_eq!(body_a["status"], "confirmed");
    assert!(body_a.get("position").is_none(), "{body_a}");
    assert_eq!(status_b, StatusCode::OK, "{body_b}");
    assert_eq!(body_b["status"], "waitlisted");
    assert_eq!(body_b["waitlistPosition"], 1);
    let gap = answered_b.saturating_duration_since(decided_at);
    println!(
        "long-poll answered {gap:?} after the decision was written ({:?} after the worker started)",
        answered_b - started
    );
    assert!(gap < Duration::from_secs(5), "answered {gap:?} after");

    // Decided already: at once. Waiting past `waitlisted` (seen): until the promotion.
    let (_, body, took) = long_poll(&stack, &format!("{a}?wait=30"), &first.1).await;
    assert_eq!(body["status"], "confirmed");
    assert!(took < Duration::from_secs(10), "{took:?}");
    let promoted = {
        let http = stack.http.clone();
        let url = stack.url(&format!(
            "/api/bookings/requests/{b}?wait=30&seen=waitlisted"
        ));
        let token = second.1.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let response = http.get(url).bearer_auth(token).send().await.expect("send");
            (parts(response).await, started.elapsed())
        })
    };
    let (status, body) = stack.cancel_booking(goods, &first.1).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let ((status, body), took) = promoted.await.expect("poll task");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "confirmed", "promoted: {body}");
    assert!(body["promotedAt"].is_string(), "{body}");
    assert!(took < Duration::from_secs(20), "{took:?}");
}

/// A stack whose Redis is a server of its own, so `CLIENT LIST` shows only its
/// connections (and the test's).
async fn stack_on_a_private_redis() -> (RedisServer, Stack) {
    let server = RedisServer::start(false).await;
    let stack = spawn_stack_on(
        TestDatabase::new().await,
        TestRedis::on(server.url()),
        SHARDS,
        |_| {},
    )
    .await;
    (server, stack)
}

/// `CLIENT LIST`: one line per connection.
async fn client_list(conn: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(conn)
        .await
        .expect("CLIENT LIST");
    list.lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// Connections to a Redis server.
async fn connections(conn: &mut redis::aio::MultiplexedConnection) -> usize {
    client_list(conn).await.len()
}

/// Script calls a Redis server has run (`INFO commandstats`): every status read is one.
async fn script_calls(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO");
    info.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split(['=', ','])
                .nth(1)
                .and_then(|calls| calls.parse::<u64>().ok())
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_long_polls_cost_a_handful_of_redis_connections() {
    const POLLS: usize = 2_000;
    let (_server, stack) = stack_on_a_private_redis().await;
    let goods = stack.create_goods(1_500, 1).await;
    let fans = stack.customers("lp2k", POLLS).await;
    let accepted = stack.book_all(goods, &fans, 32).await;
    let tokens: std::collections::HashMap<i64, String> = fans.iter().cloned().collect();

    let mut conn = stack.redis.connection().await;
    let before = connections(&mut conn).await;
    let reads_before = script_calls(&mut conn).await;
    let answered = Arc::new(AtomicUsize::new(0));
    let polls = {
        let answered = answered.clone();
        let http = stack.http.clone();
        let base = stack.url("/api/bookings/requests");
        let requests: Vec<(String, String)> = accepted
            .iter()
            .map(|a| {
                (
                    format!("{base}/{}?wait=30", a.request_id),
                    tokens[&a.user_id].clone(),
                )
            })
            .collect();
        tokio::spawn(async move {
            stream::iter(requests)
                .map(|(url, token)| {
                    let http = http.clone();
                    let answered = answered.clone();
                    async move {
                        // 2,000 connections opened at once on a loaded 2-core machine:
                        // one may be refused or reset before it is answered. A client
                        // sends such a GET again; only an answer counts.
                        let mut tries = 0;
                        let response = loop {
                            match http.get(&url).bearer_auth(&token).send().await {
                                Ok(response) => break response,
                                Err(e) if tries < 5 => {
                                    tries += 1;
                                    eprintln!("long-poll not sent ({e}); sending it again");
                                    tokio::time::sleep(Duration::from_millis(200)).await;
                                }
                                Err(e) => panic!("long-poll failed {tries} times: {e}"),
                            }
                        };
                        answered.fetch_add(1, Ordering::SeqCst);
                        parts(response).await
                    }
                })
                .buffer_unordered(POLLS)
                .collect::<Vec<_>>()
                .await
        })
    };
    // Every poll has made its first read and waits.
    wait_until(
        "every long-poll waiting",
        Duration::from_secs(60),
        || async {
            script_calls(&mut stack.redis.connection().await).await >= reads_before + POLLS as u64
        },
    )
    .await;
    let during = connections(&mut conn).await;
    assert_eq!(answered.load(Ordering::SeqCst), 0, "none has answered yet");
    println!("Redis connections: {before} before, {during} with {POLLS} long-polls waiting");
    assert!(
        during <= before + 2 && during <= 12,
        "{during} connections with {POLLS} long-polls waiting ({before} before)"
    );

    // A worker decides them all; every poll answers with its decision.
    let started = Instant::now();
    let _worker = stack.worker(&[]);
    let answers = polls.await.expect("polls");
    let took = started.elapsed();
    println!("{POLLS} long-polls answered within {took:?} of the worker starting");
    assert!(took < Duration::from_secs(25), "{took:?}");
    let mut confirmed = 0;
    let mut waitlisted = 0;
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
        match body["status"].as_str() {
            Some("confirmed") => confirmed += 1,
            Some("waitlisted") => waitlisted += 1,
            _ => panic!("answered undecided: {body}"),
        }
    }
    assert_eq!((confirmed, waitlisted), (1_500, 500));
}

/// Subscribers (pub/sub connections) on a Redis server, as `CLIENT LIST` shows them.
async fn subscribers(conn: &mut redis::aio::MultiplexedConnection) -> usize {
    client_list(conn)
        .await
        .iter()
        .filter(|l| l.split(' ').any(|f| f.starts_with("sub=") && f != "sub=0"))
        .count()
}

/// The API's subscription dies (here: killed by Redis); it subscribes again, and
/// long-polls are woken by the worker's notes as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_subscription_comes_back_and_long_polls_still_wake() {
    let (_server, stack) = stack_on_a_private_redis().await;
    let goods = stack.create_goods(5, 1).await;
    let (user, token) = stack.customers("resub", 1).await.remove(0);
    let id = stack.book(goods, user, &token, 1).await.request_id;
    let mut conn = stack.redis.connection().await;
    wait_until("the API subscribed", Duration::from_secs(10), || async {
        subscribers(&mut stack.redis.connection().await).await == 1
    })
    .await;
    let killed: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "pubsub"])
        .query_async(&mut conn)
        .await
        .expect("CLIENT KILL");
    assert_eq!(killed, 1);
    wait_until(
        "the API subscribed again",
        Duration::from_secs(10),
        || async { subscribers(&mut stack.redis.connection().await).await == 1 },
    )
    .await;

    let reads_before = script_calls(&mut conn).await;
    let poll = {
        let request = stack
            .http
            .get(stack.url(&format!("/api/bookings/requests/{id}?wait=30")))
            .bearer_auth(&token);
        tokio::spawn(async move {
            let started = Instant::now();
            let response = request.send().await.expect("send");
            (parts(response).await, started.elapsed())
        })
    };
    // The poll has read `queued` and waits before the worker starts.
    wait_until("the long-poll waiting", Duration::from_secs(10), || async {
        script_calls(&mut stack.redis.connection().await).await > reads_before
    })
    .await;
    let _worker = stack.worker(&[]);
    let ((status, body), took) = poll.await.expect("poll task");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "confirmed");
    assert!(took < Duration::from_secs(20), "{took:?}");
}
