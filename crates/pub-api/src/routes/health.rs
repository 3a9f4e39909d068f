//! `/healthz` (the process answers), `/readyz` (it can do its job) and `/metrics`
//! (Prometheus text, `shared::meter`).

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::state::AppState;

/// Upper bound on the whole readiness check, so a hung dependency cannot hang probes.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Every metric now, with the database pool's connections sampled at this moment.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    shared::meter::record_pool(&state.pool);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(shared::meter::render())
}

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn check_postgres(state: &AppState) -> Result<(), &'static str> {
    match shared::db::migrations_applied(&state.pool).await {
        Ok(true) => Ok(()),
        Ok(false) => Err("migrations not applied"),
        Err(_) => Err("unreachable"),
    }
}

async fn check_redis(state: &AppState) -> Result<(), &'static str> {
    let mut conn = state.redis.get().await;
    redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .map(|_| ())
        .map_err(|_| "unreachable")
}

fn verdict(result: Option<Result<(), &'static str>>) -> &'static str {
    match result {
        Some(Ok(())) => "ok",
        Some(Err(reason)) => reason,
        None => "timed out",
    }
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let (pg, redis) = tokio::join!(
        tokio::time::timeout(READY_TIMEOUT, check_postgres(&state)),
        tokio::time::timeout(READY_TIMEOUT, check_redis(&state)),
    );
    let (pg, redis) = (verdict(pg.ok()), verdict(redis.ok()));
    let checks = json!({ "postgres": pg, "redis": redis });
    if pg == "ok" && redis == "ok" {
        HttpResponse::Ok().json(json!({ "status": "ready", "checks": checks }))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({
            "error": { "code": "not_ready", "message": format!("postgres: {pg}; redis: {redis}") },
            "checks": checks,
        }))
    }
}
