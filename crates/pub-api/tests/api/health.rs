use reqwest::StatusCode;

use crate::helpers::{assert_error, parts, spawn_app};

#[tokio::test]
async fn healthz_and_readyz_answer_ok_when_dependencies_are_up() {
    let app = spawn_app().await;
    let (status, body) = parts(app.get("/healthz", None).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    let (status, body) = parts(app.get("/readyz", None).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checks"]["postgres"], "ok");
    assert_eq!(body["checks"]["redis"], "ok");
}

#[tokio::test]
async fn readyz_is_503_when_migrations_are_missing() {
    let app = spawn_app().await;
    app.db
        .client()
        .await
        .batch_execute("DELETE FROM refinery_schema_history")
        .await
        .expect("forget migrations");
    let (status, body) = parts(app.get("/readyz", None).await).await;
    assert_error(status, &body, StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    assert_eq!(body["checks"]["postgres"], "migrations not applied");
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_adopts_a_sane_incoming_one() {
    let app = spawn_app().await;
    let generated = app.get("/healthz", None).await;
    let id = generated.headers()["x-request-id"].to_str().expect("ascii");
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let adopted = app
        .http
        .get(app.url("/healthz"))
        .header("x-request-id", "lb-1234")
        .send()
        .await
        .expect("send");
    assert_eq!(adopted.headers()["x-request-id"], "lb-1234");
    let refused = app
        .http
        .get(app.url("/healthz"))
        .header("x-request-id", "has spaces and\ttabs")
        .send()
        .await
        .expect("send");
    assert_ne!(refused.headers()["x-request-id"], "has spaces and\ttabs");
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let app = spawn_app().await;
    let (status, body) = parts(app.get("/api/nope", None).await).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let response = app
        .http
        .delete(app.url("/api/goods"))
        .send()
        .await
        .expect("send");
    let (status, body) = parts(response).await;
    assert_error(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
}
