//! The shared test stack (`test_support::stack`), as the API's tests start it.

pub use test_support::stack::{
    assert_error, assert_invalid_field, page_parts, parts, Stack as TestApp,
};
use test_support::TestRedis;

/// The API in-process with a database and Redis prefix of its own.
pub async fn spawn_app() -> TestApp {
    TestApp::builder().spawn().await
}

/// An app on a given Redis (a private server for outage tests), config adjusted first.
pub async fn spawn_app_on(
    redis: TestRedis,
    adjust: impl FnOnce(&mut test_support::shared::config::ApiConfig) + 'static,
) -> TestApp {
    TestApp::builder()
        .redis(redis)
        .api_config(adjust)
        .spawn()
        .await
}
