//! What operators see: the worker's own HTTP listener (`/healthz`, `/readyz`,
//! `/metrics`), up before its dependencies, and the metrics of a sale on both sides.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use test_support::{servers::free_port, wait_until};

use crate::helpers::{Stack, SHARDS};

/// The sum of every sample of `name` (exactly: not `name_bucket`...) whose labels
/// include all of `labels`, in Prometheus text.
fn sample_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
        .sum()
}

async fn get(http: &reqwest::Client, url: String) -> (StatusCode, String) {
    let response = http.get(url).send().await.expect("an answer");
    (response.status(), response.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_answers_probes_before_redis_and_both_sides_count_a_sale() {
    let mut server = test_support::servers::RedisServer::start(false).await;
    let stack = crate::helpers::spawn_stack_on(
        test_support::TestDatabase::new().await,
        test_support::TestRedis::on(server.url()),
        SHARDS,
        |_| {},
    )
    .await;
    let goods = stack.create_goods(20, 1).await;
    let fans = stack.customers("obs", 50).await;

    // Redis goes away; a worker starts: its listener answers at once.
    server.kill().await;
    let port = free_port();
    let _worker = stack.worker(&[
        ("TICKETNEST_WORKER_HTTP_ADDR", &format!("127.0.0.1:{port}")),
        ("TICKETNEST_REDIS_TIMEOUT_MS", "300"),
    ]);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    wait_until("the worker's listener", Duration::from_secs(20), || async {
        http.get(format!("{base}/healthz")).send().await.is_ok()
    })
    .await;
    let (status, body) = get(&http, format!("{base}/healthz")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_until(
        "readyz names the queue",
        Duration::from_secs(20),
        || async {
            get(&http, format!("{base}/readyz"))
                .await
                .1
                .contains("queue unavailable")
        },
    )
    .await;
    let (status, body) = get(&http, format!("{base}/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let body: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(body["error"]["code"], "not_ready");
    let (status, _) = get(&http, format!("{base}/nowhere")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Redis is back: the worker joins, is ready, and decides a sale.
    server.start_again().await;
    wait_until("the worker ready", Duration::from_secs(30), || async {
        get(&http, format!("{base}/readyz")).await.0 == StatusCode::OK
    })
    .await;
    stack.book_all(goods, &fans, 8).await;
    stack.wait_for_decisions(50).await;
    stack.wait_until_nothing_pending().await;

    let (status, worker) = get(&http, format!("{base}/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    let decided = |outcome: &str| {
        sample_sum(
            &worker,
            "ticketnest_decisions_total",
            &[("outcome", outcome), ("reason", "none")],
        )
    };
    assert_eq!(decided("confirmed"), 20.0, "{worker}");
    assert_eq!(decided("waitlisted"), 30.0, "{worker}");
    assert_eq!(sample_sum(&worker, "ticketnest_decisions_total", &[]), 50.0);
    assert_eq!(
        sample_sum(&worker, "ticketnest_shard_owned", &[]),
        f64::from(SHARDS),
        "one worker owns every shard"
    );
    assert!(sample_sum(&worker, "ticketnest_leases_acquired_total", &[]) >= f64::from(SHARDS));
    let batches = sample_sum(&worker, "ticketnest_worker_batches_total", &[]);
    assert!(batches >= 1.0, "{worker}");
    assert_eq!(
        sample_sum(&worker, "ticketnest_worker_batch_size_count", &[]),
        batches
    );
    assert_eq!(
        sample_sum(&worker, "ticketnest_worker_batch_size_sum", &[]),
        50.0,
        "every entry in one batch or another"
    );
    assert_eq!(
        sample_sum(
            &worker,
            "ticketnest_worker_commit_duration_seconds_count",
            &[]
        ),
        batches
    );
    assert!(worker.contains("process_resident_memory_bytes"), "{worker}");

    let api = metrics_of(&stack).await;
    let route = "/api/goods/{id}/bookings";
    assert_eq!(
        sample_sum(
            &api,
            "ticketnest_http_requests_total",
            &[("route", route), ("method", "POST"), ("status", "2xx")]
        ),
        50.0,
        "{api}"
    );
    assert_eq!(
        sample_sum(
            &api,
            "ticketnest_http_request_duration_seconds_count",
            &[("route", route)]
        ),
        50.0
    );
    assert_eq!(
        sample_sum(&api, "ticketnest_enqueue_duration_seconds_count", &[]),
        50.0
    );
    assert!(
        api.contains("ticketnest_shard_backlog{shard=\"0\"}"),
        "{api}"
    );
    // Sampled every 200 ms: it reaches 0 once everything is decided.
    wait_until("no backlog", Duration::from_secs(10), || async {
        sample_sum(&metrics_of(&stack).await, "ticketnest_shard_backlog", &[]) == 0.0
    })
    .await;
    // An error answer is counted by its code.
    let (status, _) = crate::helpers::parts(stack.get("/api/goods/0", None).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let api = metrics_of(&stack).await;
    assert_eq!(
        sample_sum(
            &api,
            "ticketnest_http_errors_total",
            &[("code", "invalid_path")]
        ),
        1.0,
        "{api}"
    );
}

/// The API's `/metrics`.
async fn metrics_of(stack: &Stack) -> String {
    let response = stack.get("/metrics", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/plain"));
    response.text().await.expect("body")
}
