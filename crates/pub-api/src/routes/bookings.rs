//! `POST /api/goods/{id}/bookings` (the hot path) and `GET /api/bookings/requests/{id}`.
//!
//! Accepting a booking costs one Redis round trip: a pipeline that writes the status
//! hash (`queued`) and then appends the request to the goods' shard stream. The status
//! is written first so a worker that decides the request at once can never have its
//! decision overwritten by a late `queued`. PostgreSQL is touched only when the goods
//! cache misses. The API never writes booking tables: the worker decides.

use std::{collections::HashMap, time::SystemTime};

use actix_web::{http::header, web, HttpMessage, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use shared::{
    keys::Keys,
    message::{BookingRequestV1, StreamMessage},
    status_fields as f, RequestStatus,
};
use uuid::Uuid;

use crate::{
    db::{self, GoodsLimits},
    error::ApiError,
    extract::{parse_optional_json, ApiBody, AuthUser, IdPath},
    request_id::RequestId,
    state::AppState,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BookingBody {
    quantity: Option<i64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Accepted {
    request_id: Uuid,
    status: &'static str,
    status_url: String,
}

async fn goods_limits(state: &AppState, goods_id: i64) -> Result<GoodsLimits, ApiError> {
    state
        .goods
        .try_get_with(goods_id, async {
            db::goods_limits(&state.pool, goods_id)
                .await?
                .ok_or(ApiError::GoodsNotFound)
        })
        .await
        .map_err(ApiError::from)
}

/// Header a client may send so that retrying a booking whose answer it never got
/// cannot book twice (see `Keys::idempotent_request_id`).
const IDEMPOTENCY_HEADER: &str = "idempotency-key";
const MAX_IDEMPOTENCY_KEY_LEN: usize = 64;

fn idempotency_key(req: &HttpRequest) -> Result<Option<&str>, ApiError> {
    let Some(value) = req.headers().get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    let key = value.to_str().ok().filter(|k| {
        !k.is_empty()
            && k.len() <= MAX_IDEMPOTENCY_KEY_LEN
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    });
    key.map(Some).ok_or_else(|| {
        ApiError::validation(
            "Idempotency-Key",
            format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters from [A-Za-z0-9-_.:]"
            ),
        )
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[tracing::instrument(skip_all, fields(user_id = user.id, goods_id, request_id))]
pub async fn create(
    state: web::Data<AppState>,
    user: AuthUser,
    IdPath(goods_id): IdPath,
    req: HttpRequest,
    ApiBody(body): ApiBody,
) -> Result<HttpResponse, ApiError> {
    tracing::Span::current().record("goods_id", goods_id);
    let body: Option<BookingBody> = parse_optional_json(&req, &body)?;
    let quantity = body.and_then(|b| b.quantity).unwrap_or(1);
    let limits = goods_limits(&state, goods_id).await?;
    if quantity < 1 || quantity > i64::from(limits.max_per_booking) {
        return Err(ApiError::validation(
            "quantity",
            format!(
                "quantity must be between 1 and {} for this goods",
                limits.max_per_booking
            ),
        ));
    }
    let quantity = i32::try_from(quantity).unwrap_or(i32::MAX);
    let shard = state.keys.shard_of(goods_id);
    if state.backlog.is_full(shard) {
        return Err(ApiError::QueueFull);
    }

    let request_id = match idempotency_key(&req)? {
        Some(key) => Keys::idempotent_request_id(shard, user.id, goods_id, key),
        None => Keys::new_request_id(shard),
    };
    tracing::Span::current().record("request_id", tracing::field::display(request_id));
    let trace_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let message = StreamMessage::BookingRequestV1(BookingRequestV1 {
        request_id,
        goods_id,
        user_id: user.id,
        quantity,
        accepted_at_ms: now_ms(),
        trace_id,
    });
    let status_key = state.keys.request_status(shard, request_id);
    let ttl = i64::try_from(state.status_ttl.as_secs()).unwrap_or(i64::MAX);

    let mut pipe = redis::pipe();
    pipe.hset_multiple(
        &status_key,
        &[
            (f::USER, user.id.to_string()),
            (f::GOODS, goods_id.to_string()),
            (f::QUANTITY, quantity.to_string()),
            (f::STATUS, RequestStatus::Queued.as_str().to_owned()),
        ],
    )
    .ignore()
    .expire(&status_key, ttl)
    .ignore()
    .xadd(state.keys.stream(shard), "*", &message.to_fields())
    .ignore();
    let mut conn = state.redis.get().await;
    pipe.query_async::<()>(&mut conn).await?;

    let status_url = format!("/api/bookings/requests/{request_id}");
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, status_url.clone()))
        .json(Accepted {
            request_id,
            status: RequestStatus::Queued.as_str(),
            status_url,
        }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusResponse {
    request_id: Uuid,
    goods_id: i64,
    quantity: i32,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    booking_id: Option<i64>,
}

/// Reads the status hash; `None` when it expired or never existed.
fn from_hash(request_id: Uuid, hash: &HashMap<String, String>) -> Option<(i64, StatusResponse)> {
    let num = |field: &str| hash.get(field).and_then(|v| v.parse::<i64>().ok());
    let status = RequestStatus::parse(hash.get(f::STATUS)?)?;
    Some((
        num(f::USER)?,
        StatusResponse {
            request_id,
            goods_id: num(f::GOODS)?,
            quantity: i32::try_from(num(f::QUANTITY)?).ok()?,
            status: status.as_str(),
            reason: hash.get(f::REASON).filter(|r| !r.is_empty()).cloned(),
            booking_id: num(f::BOOKING),
        },
    ))
}

#[tracing::instrument(skip_all, fields(user_id = user.id))]
pub async fn status(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let request_id = Uuid::try_parse(&path).map_err(|_| {
        ApiError::InvalidPath(
            "request id must be a UUID as returned by the booking endpoint".into(),
        )
    })?;
    let mut conn = state.redis.get().await;
    let hash: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(
            state
                .keys
                .request_status(Keys::shard_in_request_id(request_id), request_id),
        )
        .query_async(&mut conn)
        .await?;
    // Someone else's request is "not found": its existence is none of the caller's business.
    let (owner, response) = match from_hash(request_id, &hash) {
        Some(found) => found,
        None => {
            let record = db::request_record(&state.pool, request_id)
                .await?
                .ok_or(ApiError::RequestNotFound)?;
            let status = RequestStatus::parse(&record.decision).ok_or_else(|| {
                ApiError::Internal(format!("unknown decision `{}`", record.decision).into())
            })?;
            (
                record.user_id,
                StatusResponse {
                    request_id,
                    goods_id: record.goods_id,
                    quantity: record.quantity,
                    status: status.as_str(),
                    reason: record.reason,
                    booking_id: record.booking_id,
                },
            )
        }
    };
    if owner != user.id {
        return Err(ApiError::RequestNotFound);
    }
    Ok(HttpResponse::Ok().json(response))
}
