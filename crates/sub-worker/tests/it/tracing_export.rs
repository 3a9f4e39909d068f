//! OTLP trace export: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, the API's request and
//! enqueue spans and the worker's batch and commit spans reach the collector, the
//! worker's batch linked to the accepting request through the `traceparent` carried
//! in the stream message. Without it, nothing is carried. The collector here is a
//! small OTLP/HTTP JSON receiver of the test's own.

use std::{sync::Arc, time::Duration};

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
    sync::Mutex,
};

use crate::helpers::spawn_stack;

/// Every span received: (service name, span object as OTLP JSON).
type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// Serves `POST /v1/traces` (OTLP/HTTP JSON) on a free port, answering `{}`, keeping
/// every span with its service's name.
async fn collector() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let received: Received = Arc::default();
    let store = received.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut read = BufReader::new(read);
                // One request after another on a kept-alive connection.
                loop {
                    let mut length = 0;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let header = line.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = header.split_once(':') {
                            if name.eq_ignore_ascii_case("content-length") {
                                length = value.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0; length];
                    if read.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    if let Ok(export) = serde_json::from_slice::<Value>(&body) {
                        let mut store = store.lock().await;
                        for resource in export["resourceSpans"].as_array().into_iter().flatten() {
                            let service = resource["resource"]["attributes"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .find(|a| a["key"] == "service.name")
                                .and_then(|a| a["value"]["stringValue"].as_str())
                                .unwrap_or_default()
                                .to_owned();
                            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                                for span in scope["spans"].as_array().into_iter().flatten() {
                                    store.push((service.clone(), span.clone()));
                                }
                            }
                        }
                    }
                    let answer =
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                    if write.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, received)
}

/// The first span of `service` named `name` that `matches`.
async fn find(
    received: &Received,
    service: &str,
    name: &str,
    matches: impl Fn(&Value) -> bool,
) -> Option<Value> {
    received
        .lock()
        .await
        .iter()
        .find(|(s, span)| s == service && span["name"] == name && matches(span))
        .map(|(_, span)| span.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_and_the_workers_batch_links_to_the_accepting_request() {
    let (url, received) = collector().await;
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", url.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    // This test's own process is the API's: export from it too (set before anything
    // else runs; each test is a process of its own).
    for (name, value) in otel {
        std::env::set_var(name, value);
    }
    let _telemetry = test_support::shared::telemetry::init("pub-api", "info");
    assert!(test_support::shared::telemetry::exporting());

    let stack = spawn_stack().await;
    let goods = stack.create_goods(10, 1).await;
    let (_, token) = stack.customers("otel", 1).await.remove(0);
    let _worker = stack.worker(&otel);
    // A client's own trace: linked to, not continued (a client decides neither the
    // sampling nor the trace of TicketNest's spans).
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = stack
        .http
        .post(stack.url(&format!("/api/goods/{goods}/bookings")))
        .bearer_auth(&token)
        .header(
            "traceparent",
            format!("00-{client_trace}-00f067aa0ba902b7-00"),
        )
        .json(&serde_json::json!({ "quantity": 1 }))
        .send()
        .await
        .expect("book");
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    stack.wait_for_decisions(1).await;

    let links_to = |span: &Value, trace: &str| {
        span["links"]
            .as_array()
            .is_some_and(|links| links.iter().any(|l| l["traceId"] == trace))
    };
    let is_root = |span: &Value| span["parentSpanId"].as_str().unwrap_or_default().is_empty();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (request, batch) = loop {
        let request = find(&received, "pub-api", "http", |s| links_to(s, client_trace)).await;
        if let Some(request) = request {
            let trace = request["traceId"].as_str().unwrap_or_default().to_owned();
            let enqueued = find(&received, "pub-api", "enqueue", |s| {
                s["traceId"] == trace.as_str()
            })
            .await
            .is_some();
            let batch = find(&received, "sub-worker", "batch", |s| links_to(s, &trace)).await;
            if let (true, Some(batch)) = (enqueued, batch) {
                let batch_id = batch["spanId"].clone();
                if find(&received, "sub-worker", "commit", |s| {
                    s["parentSpanId"] == batch_id
                })
                .await
                .is_some()
                {
                    break (request, batch);
                }
            }
        }
        if tokio::time::Instant::now() > deadline {
            let seen: Vec<String> = received
                .lock()
                .await
                .iter()
                .map(|(service, span)| {
                    format!(
                        "{service} {} trace {} parent {} links {}",
                        span["name"], span["traceId"], span["parentSpanId"], span["links"]
                    )
                })
                .collect();
            panic!("timed out waiting for the request, enqueue, batch and commit spans; received: {seen:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(is_root(&request), "the request span is a root: {request}");
    assert_ne!(request["traceId"], client_trace);
    assert!(is_root(&batch), "each batch is a trace of its own: {batch}");
    assert_ne!(batch["traceId"], request["traceId"]);
}

#[tokio::test]
async fn without_an_otlp_endpoint_no_trace_context_is_carried() {
    let stack = spawn_stack().await;
    let goods = stack.create_goods(10, 1).await;
    let (user, token) = stack.customers("nootel", 1).await.remove(0);
    stack.book(goods, user, &token, 1).await;
    assert!(!test_support::shared::telemetry::exporting());
    let entries = stack
        .stream_entries(&stack.keys().stream(stack.shard_of(goods)))
        .await;
    assert_eq!(entries.len(), 1);
    assert!(!entries[0].contains_key("tp"), "{entries:?}");
    assert!(entries[0].contains_key("trace"), "{entries:?}");
}
