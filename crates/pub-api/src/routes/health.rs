//! `/healthz` (the process answers), `/readyz` (it can do its job) and `/metrics`
//! (Prometheus text, `shared::meter`).

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    error::{ErrorCode, ErrorDetail},
    state::AppState,
};

/// The process answers.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"status": "ok"}))]
pub struct Health {
    /// `ok`.
    #[schema(value_type = String)]
    status: &'static str,
}

/// Each dependency's check: `ok`, or what is wrong (`unreachable`, `migrations not
/// applied`, `timed out`).
#[derive(Serialize, ToSchema)]
pub struct Checks {
    #[schema(value_type = String)]
    postgres: &'static str,
    #[schema(value_type = String)]
    redis: &'static str,
}

/// Ready: PostgreSQL and Redis answer and every migration is applied.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"status": "ready", "checks": {"postgres": "ok", "redis": "ok"}}))]
pub struct Ready {
    /// `ready`.
    #[schema(value_type = String)]
    status: &'static str,
    checks: Checks,
}

/// Not ready, saying which check failed (`code` `not_ready`).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"error": {"code": "not_ready", "message": "postgres: ok; redis: unreachable"},
    "checks": {"postgres": "ok", "redis": "unreachable"}}))]
pub struct NotReady<'a> {
    error: ErrorDetail<'a>,
    checks: Checks,
}

/// Upper bound on the whole readiness check, so a hung dependency cannot hang probes.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Every metric now, with the database pool's connections sampled at this moment.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "health",
    responses((status = 200, description = "Prometheus text exposition of every metric",
        content_type = "text/plain", body = String))
)]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    shared::meter::record_pool(&state.pool);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(shared::meter::render())
}

/// Liveness: `200` while the process runs (also while it starts).
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "health",
    responses((status = 200, description = "The process answers", body = Health))
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
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

/// Readiness: PostgreSQL and Redis answer, within 2 seconds.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "health",
    responses(
        (status = 200, description = "Ready", body = Ready),
        (status = 503, description = "`not_ready`: a dependency does not answer", body = NotReady<'_>),
    )
)]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let (pg, redis) = tokio::join!(
        tokio::time::timeout(READY_TIMEOUT, check_postgres(&state)),
        tokio::time::timeout(READY_TIMEOUT, check_redis(&state)),
    );
    let (pg, redis) = (verdict(pg.ok()), verdict(redis.ok()));
    let checks = Checks {
        postgres: pg,
        redis,
    };
    if pg == "ok" && redis == "ok" {
        HttpResponse::Ok().json(Ready {
            status: "ready",
            checks,
        })
    } else {
        HttpResponse::ServiceUnavailable().json(NotReady {
            error: ErrorDetail {
                code: ErrorCode::NotReady.as_str(),
                message: format!("postgres: {pg}; redis: {redis}"),
                field: None,
            },
            checks,
        })
    }
}
