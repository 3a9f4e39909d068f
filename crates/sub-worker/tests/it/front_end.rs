//! The original TicketNest's React front end, served from the API's origin and
//! authenticated only by the `Authorization` cookie login sets, works unchanged: its
//! exact calls, replayed with a cookie jar and nothing else. And a front end on another
//! origin listed in `TICKETNEST_CORS_ORIGINS` gets its preflights answered.

use std::time::Duration;

use reqwest::{header, Client, Method, StatusCode};
use serde_json::{json, Value};
use test_support::wait_until;

use crate::helpers::{parts, spawn_stack_configured, Stack, SHARDS};

const ALLOWED: &str = "https://shop.example";

/// A browser: a cookie jar, and the `Origin` header it puts on every POST and DELETE
/// (same-origin: the API's own).
struct Browser {
    http: Client,
    origin: String,
}

impl Browser {
    fn new(stack: &Stack) -> Self {
        Self {
            http: Client::builder()
                .cookie_store(true)
                .build()
                .expect("client"),
            origin: stack.address.clone(),
        }
    }

    async fn send(
        &self,
        stack: &Stack,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method.clone(), stack.url(path));
        if method != Method::GET {
            request = request.header(header::ORIGIN, &self.origin);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        parts(request.send().await.expect("send")).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_front_ends_calls_work_with_a_cookie_jar_only() {
    let stack =
        spawn_stack_configured(SHARDS, |c| c.http.cors_origins = vec![ALLOWED.into()]).await;
    let goods = stack.create_goods(10, 1).await;
    let _worker = stack.worker(&[]);
    let browser = Browser::new(&stack);

    // The goods list: a bare array of goods with the fields the page reads.
    let (status, list) = browser.send(&stack, Method::GET, "/api/goods", None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let first = &list.as_array().expect("a bare array")[0];
    for field in ["id", "imgUrl", "title", "content"] {
        assert!(!first[field].is_null(), "{field} in {first}");
    }
    assert_eq!(first["id"], goods);
    let (status, detail) = browser
        .send(&stack, Method::GET, &format!("/api/goods/{goods}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    assert_eq!(detail["title"], first["title"]);

    // Sign-up sends the password twice.
    let mut signup = json!({
        "email": "front@example.com", "password": "Fan4ever!",
        "confirm": "Fan4ever?", "nickname": "front"
    });
    let (status, body) = browser
        .send(&stack, Method::POST, "/api/auth/signup", Some(&signup))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "confirm");
    signup["confirm"] = json!("Fan4ever!");
    let (status, body) = browser
        .send(&stack, Method::POST, "/api/auth/signup", Some(&signup))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let login = json!({ "email": "front@example.com", "password": "Fan4ever!" });
    let (status, body) = browser
        .send(&stack, Method::POST, "/api/auth/login", Some(&login))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Booking: no body, no Content-Type, the cookie only.
    let (status, booked) = browser
        .send(&stack, Method::POST, &format!("/api/booking/{goods}"), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{booked}");
    let poll = booked["statusUrl"].as_str().expect("statusUrl").to_owned();
    let status_of = |path: String| {
        let browser = &browser;
        let stack = &stack;
        async move { browser.send(stack, Method::GET, &path, None).await.1["status"].clone() }
    };
    wait_until(
        "the booking is confirmed",
        Duration::from_secs(20),
        || async { status_of(poll.clone()).await == "confirmed" },
    )
    .await;

    // Cancel, the cookie only.
    let (status, cancel) = browser
        .send(
            &stack,
            Method::DELETE,
            &format!("/api/booking/{goods}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{cancel}");
    wait_until(
        "the booking is cancelled",
        Duration::from_secs(20),
        || async { status_of(poll.clone()).await == "cancelled" },
    )
    .await;
    stack.assert_invariants(goods).await;
}

async fn preflight(stack: &Stack, origin: &str) -> reqwest::Response {
    preflight_with(stack, origin, "content-type").await
}

async fn preflight_with(stack: &Stack, origin: &str, headers: &str) -> reqwest::Response {
    stack
        .http
        .request(Method::OPTIONS, stack.url("/api/booking/1"))
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "DELETE")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, headers)
        .send()
        .await
        .expect("send")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflights_are_answered_for_listed_origins_only_with_credentials() {
    let stack =
        spawn_stack_configured(SHARDS, |c| c.http.cors_origins = vec![ALLOWED.into()]).await;

    let allowed = preflight(&stack, ALLOWED).await;
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let headers = allowed.headers();
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], ALLOWED);
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    let methods = headers[header::ACCESS_CONTROL_ALLOW_METHODS]
        .to_str()
        .expect("ascii");
    assert!(methods.contains("DELETE"), "{methods}");
    let asked = preflight_with(&stack, ALLOWED, "x-request-id,idempotency-key").await;
    assert_eq!(
        asked.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        ALLOWED
    );

    let refused = preflight(&stack, "https://evil.example").await;
    assert!(
        refused
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none(),
        "{:?}",
        refused.headers()
    );

    // A simple request from the listed origin carries its CORS answer and exposes the
    // headers clients read.
    let listed = stack
        .http
        .get(stack.url("/api/goods?limit=1"))
        .header(header::ORIGIN, ALLOWED)
        .send()
        .await
        .expect("send");
    assert_eq!(listed.status(), StatusCode::OK);
    assert_eq!(
        listed.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        ALLOWED
    );
    let exposed = listed.headers()[header::ACCESS_CONTROL_EXPOSE_HEADERS]
        .to_str()
        .expect("ascii")
        .to_ascii_lowercase();
    assert!(exposed.contains("link"), "{exposed}");
    assert!(exposed.contains("x-request-id"), "{exposed}");
    // Another origin still reads public data, without a CORS answer for its page.
    let other = stack
        .http
        .get(stack.url("/api/goods?limit=1"))
        .header(header::ORIGIN, "https://evil.example")
        .send()
        .await
        .expect("send");
    assert_eq!(other.status(), StatusCode::OK);
    assert!(other
        .headers()
        .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        .is_none());
}
