//! `spawn_app` and request helpers.

use std::net::TcpListener;

use pub_api::startup::Application;
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use test_support::{shared::auth::Role, TestDatabase, TestRedis};
use tokio_util::sync::CancellationToken;

pub struct TestApp {
    pub address: String,
    pub db: TestDatabase,
    pub redis: TestRedis,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_on(TestRedis::new(), |_| {}).await
}

/// An app on a given Redis (a private server for outage tests), config adjusted first.
pub async fn spawn_app_on(
    redis: TestRedis,
    adjust: impl FnOnce(&mut test_support::shared::config::ApiConfig),
) -> TestApp {
    test_support::shared::telemetry::init_for_tests();
    let db = TestDatabase::new().await;
    let mut config = test_support::api_config(&db, &redis, 4);
    adjust(&mut config);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let app = Application::build_with_listener(config, listener)
        .await
        .expect("build app");
    let address = format!("http://127.0.0.1:{}", app.port());
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    TestApp {
        address,
        db,
        redis,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        shutdown,
    }
}

/// Status and JSON body of a response (`Value::Null` if the body is not JSON).
pub async fn parts(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

/// Asserts the API error format and returns the body.
#[track_caller]
pub fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str) {
    assert_eq!(status, expected, "body: {body}");
    assert_eq!(body["error"]["code"], code, "body: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error message missing: {body}"
    );
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn post_json(&self, path: &str, body: &Value, token: Option<&str>) -> Response {
        let mut request = self.http.post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("send")
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("send")
    }

    /// An organizer (created directly in the database) and their token.
    pub async fn organizer(&self) -> (i64, String) {
        let id = test_support::create_users(&self.db, "org", 1).await[0];
        test_support::make_organizer(&self.db, id).await;
        (id, test_support::token_for(id, Role::Organizer))
    }

    /// `n` customers and their tokens.
    pub async fn customers(&self, tag: &str, n: usize) -> Vec<(i64, String)> {
        test_support::create_users(&self.db, tag, n)
            .await
            .into_iter()
            .map(|id| (id, test_support::token_for(id, Role::Customer)))
            .collect()
    }

    /// Creates a goods through the API and returns its id.
    pub async fn create_goods(&self, token: &str, limit: i64, max_per_booking: i64) -> i64 {
        let (status, body) = parts(
            self.post_json(
                "/api/goods",
                &json!({
                    "title": "Sold-out show",
                    "content": "The one everyone wants",
                    "price": 50_000,
                    "imgUrl": "https://img.example/show.png",
                    "showDate": "2026-12-24T19:30:00Z",
                    "bookingLimit": limit,
                    "maxPerBooking": max_per_booking,
                }),
                Some(token),
            )
            .await,
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_i64().expect("goods id")
    }

    pub async fn book(&self, goods_id: i64, token: &str, quantity: Option<i64>) -> Response {
        let body = quantity.map_or_else(|| json!({}), |q| json!({ "quantity": q }));
        self.post_json(
            &format!("/api/goods/{goods_id}/bookings"),
            &body,
            Some(token),
        )
        .await
    }

    /// Rows in the decision log and bookings table: zero unless a worker ran.
    pub async fn booking_rows(&self) -> (i64, i64) {
        let client = self.db.client().await;
        let decisions: i64 = client
            .query_one("SELECT count(*) FROM booking_requests", &[])
            .await
            .expect("count")
            .get(0);
        let bookings: i64 = client
            .query_one("SELECT count(*) FROM bookings", &[])
            .await
            .expect("count")
            .get(0);
        (decisions, bookings)
    }
}
