//! `POST /api/goods`, `GET /api/goods`, `GET /api/goods/{id}`, and for the organizer
//! who created a goods `PATCH /api/goods/{id}` and `DELETE /api/goods/{id}`.
//!
//! A change of `bookingLimit` is decided by the worker owning the goods' shard, in
//! order with the goods' bookings (it may free seats for the waitlist): PATCH
//! enqueues it like a booking and waits a bounded time for its decision.

use std::time::Duration;

use actix_web::{http::header, web, HttpMessage, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::{
    auth::Role,
    decision::{RejectReason, RequestStatus},
    keys::Keys,
    stream::{self, BookingRequestV1, Enqueued, Message, StatusRecord},
};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    db::{self, Goods, GoodsChange, GoodsFields},
    domain::GoodsInput,
    error::ApiError,
    extract::{ApiJson, AuthUser, IdPath},
    openapi::errors,
    request_id::RequestId,
    routes::{
        bookings::{now_ms, status_url},
        paging::PageQuery,
    },
    state::AppState,
};

/// A new goods. Unknown fields are ignored.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"title": "Swan Lake", "content": "Ballet", "price": 120000,
    "imgUrl": "https://img.example/swan.png", "showDate": "2026-12-24T19:30:00+09:00",
    "bookingLimit": 300, "maxPerBooking": 4, "saleOpensAt": "2026-12-01T10:00:00+09:00",
    "saleClosesAt": "2026-12-24T18:00:00+09:00"}))]
pub struct CreateGoodsBody {
    /// 1 to 100 characters, once trimmed.
    title: String,
    /// At most 5,000 characters, once trimmed.
    content: String,
    /// In the smallest currency unit.
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    price: i64,
    /// Empty, or an http(s) URL of at most 2,048 characters.
    img_url: String,
    /// RFC 3339 (`2026-12-24T19:30:00+09:00`) or a date (`2026-12-24`, midnight UTC).
    #[schema(schema_with = show_date_schema)]
    show_date: String,
    /// Seats on sale.
    #[schema(minimum = 1, maximum = 1_000_000)]
    booking_limit: i64,
    /// Most seats one booking may take, at most `bookingLimit` (default 1).
    #[schema(minimum = 1, maximum = 100)]
    max_per_booking: Option<i64>,
    /// Bookings are taken from this instant on (RFC 3339, 1970 to 9999; `null`: from
    /// now).
    #[schema(format = DateTime)]
    sale_opens_at: Option<String>,
    /// No booking is taken from this instant on; after `saleOpensAt` (`null`: no end).
    #[schema(format = DateTime)]
    sale_closes_at: Option<String>,
    /// Most waitlisted bookings (`null`: no cap; 0: no waitlist).
    #[schema(minimum = 0, maximum = 1_000_000)]
    waitlist_limit: Option<i64>,
    /// How long a booking that wins seats holds them unconfirmed (default 0: confirmed
    /// at once).
    #[schema(minimum = 0, maximum = 86_400)]
    hold_seconds: Option<i64>,
}

/// `showDate` as a client sends it: an RFC 3339 date-time or a plain date.
fn show_date_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{AnyOfBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type};
    let string = |format| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(format)))
    };
    AnyOfBuilder::new()
        .item(string(KnownFormat::DateTime))
        .item(string(KnownFormat::Date))
        .description(Some(
            "RFC 3339 (`2026-12-24T19:30:00+09:00`) or a date (`2026-12-24`, midnight UTC)",
        ))
        .build()
        .into()
}

/// `showDate` in a change: as at creation, or `null` (kept).
fn show_date_or_null_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Type};
    AnyOfBuilder::new()
        .item(show_date_schema())
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .build()
        .into()
}

/// A goods.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"id": 1, "organizerId": 3, "title": "Swan Lake", "content": "Ballet",
    "price": 120000, "imgUrl": "https://img.example/swan.png", "showDate": "2026-12-24T10:30:00Z",
    "bookingLimit": 300, "maxPerBooking": 4, "saleOpensAt": "2026-12-01T01:00:00Z",
    "saleClosesAt": null, "waitlistLimit": null, "holdSeconds": 0, "bookingCount": 300,
    "remaining": 0, "waitlisted": 42, "createdAt": "2026-11-24T19:00:00Z"}))]
pub struct GoodsResponse {
    id: i64,
    organizer_id: i64,
    #[serde(flatten)]
    fields: GoodsFields,
    /// Seats taken by confirmed and held bookings.
    booking_count: i32,
    remaining: i32,
    /// Bookings waiting for seats.
    waitlisted: i32,
    created_at: DateTime<Utc>,
}

impl From<Goods> for GoodsResponse {
    fn from(g: Goods) -> Self {
        Self {
            id: g.id,
            organizer_id: g.organizer_id,
            remaining: g.fields.booking_limit - g.booked_count,
            booking_count: g.booked_count,
            waitlisted: g.waitlisted_count,
            fields: g.fields,
            created_at: g.created_at,
        }
    }
}

errors!(CreateGoodsErrors: ValidationFailed, InvalidJson, PayloadTooLarge, UnsupportedMediaType,
    Unauthorized, Forbidden, CrossOriginRefused, DatabaseUnavailable);

/// Creates a goods (organizers only: the role is read from the database).
#[utoipa::path(
    post,
    path = "/api/goods",
    operation_id = "create_goods",
    tag = "goods",
    request_body = CreateGoodsBody,
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 201, description = "The new goods", body = GoodsResponse, headers(
            ("Location" = String, description = "`/api/goods/{id}`")
        )),
        CreateGoodsErrors,
    )
)]
#[tracing::instrument(skip_all, fields(user_id = user.id))]
pub async fn create(
    state: web::Data<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<CreateGoodsBody>,
) -> Result<HttpResponse, ApiError> {
    // The role in the token may be stale (promoted or demoted since login): ask the truth.
    match db::user_role(&state.pool, user.id).await? {
        Some(Role::Organizer) => {}
        Some(Role::Customer) => {
            return Err(ApiError::Forbidden("only organizers can create goods"))
        }
        None => return Err(ApiError::Unauthorized("account no longer exists")),
    }
    let new = GoodsInput {
        title: &body.title,
        content: &body.content,
        price: body.price,
        img_url: &body.img_url,
        show_date: &body.show_date,
        booking_limit: body.booking_limit,
        max_per_booking: body.max_per_booking,
        sale_opens_at: body.sale_opens_at.as_deref(),
        sale_closes_at: body.sale_closes_at.as_deref(),
        waitlist_limit: body.waitlist_limit,
        hold_seconds: body.hold_seconds,
    }
    .parse()?;
    let goods = db::insert_goods(&state.pool, user.id, &new).await?;
    tracing::info!(goods_id = goods.id, "goods created");
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/goods/{}", goods.id)))
        .json(GoodsResponse::from(goods)))
}

/// A change to a goods: any of the creation fields, by the creation rules. A field
/// left out (or `null`) keeps its value, but `saleOpensAt`, `saleClosesAt` and
/// `waitlistLimit` set to `null` remove that bound. An unknown field is refused.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"title": "Swan Lake (matinee)", "maxPerBooking": 2, "saleClosesAt": null}))]
pub struct PatchGoodsBody {
    title: Option<String>,
    content: Option<String>,
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    price: Option<i64>,
    img_url: Option<String>,
    #[schema(schema_with = show_date_or_null_schema)]
    show_date: Option<String>,
    /// Decided by the worker, in order with the goods' bookings.
    #[schema(minimum = 1, maximum = 1_000_000)]
    booking_limit: Option<i64>,
    #[schema(minimum = 1, maximum = 100)]
    max_per_booking: Option<i64>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, format = DateTime)]
    sale_opens_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, format = DateTime)]
    sale_closes_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 1_000_000)]
    waitlist_limit: Option<Option<i64>>,
    #[schema(minimum = 0, maximum = 86_400)]
    hold_seconds: Option<i64>,
}

/// A field that is present (`Some`, its value possibly `null`), as opposed to absent.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl PatchGoodsBody {
    /// The goods' fields with this change, validated as at creation against booking
    /// limit `limit`.
    fn apply(&self, was: &GoodsFields, limit: i64) -> Result<GoodsFields, ApiError> {
        // A show date left out is kept as stored, not validated again (stored values
        // may predate today's rules): validated here is a stand-in, replaced below.
        let show_date = self.show_date.as_deref().unwrap_or("2000-01-01");
        let opens = match &self.sale_opens_at {
            Some(change) => change.clone(),
            None => was.sale_opens_at.map(rfc3339),
        };
        let closes = match &self.sale_closes_at {
            Some(change) => change.clone(),
            None => was.sale_closes_at.map(rfc3339),
        };
        GoodsInput {
            title: self.title.as_deref().unwrap_or(&was.title),
            content: self.content.as_deref().unwrap_or(&was.content),
            price: self.price.unwrap_or(was.price),
            img_url: self.img_url.as_deref().unwrap_or(&was.img_url),
            show_date,
            booking_limit: limit,
            max_per_booking: Some(
                self.max_per_booking
                    .unwrap_or(i64::from(was.max_per_booking)),
            ),
            sale_opens_at: opens.as_deref(),
            sale_closes_at: closes.as_deref(),
            waitlist_limit: match self.waitlist_limit {
                Some(change) => change,
                None => was.waitlist_limit.map(i64::from),
            },
            hold_seconds: Some(self.hold_seconds.unwrap_or(i64::from(was.hold_seconds))),
        }
        .parse()
        .map(|mut fields| {
            if self.show_date.is_none() {
                fields.show_date = was.show_date;
            }
            fields
        })
    }
}

/// How long PATCH waits for the worker to decide a `bookingLimit` change before
/// answering `202` with where to follow it.
const LIMIT_CHANGE_WAIT: Duration = Duration::from_secs(5);

errors!(UpdateGoodsErrors: ValidationFailed, InvalidJson, InvalidPath, PayloadTooLarge,
    UnsupportedMediaType, Unauthorized, Forbidden, CrossOriginRefused, GoodsNotFound,
    LimitBelowBooked, RateLimited, LimitChangeFailed, DatabaseUnavailable, QueueUnavailable,
    QueueFull, QueueMemoryFull);

/// `PATCH /api/goods/{id}`: the organizer who created it changes it; `200` with the
/// goods. This API copy forgets its cached copy at once; others within
/// `TICKETNEST_GOODS_CACHE_TTL_MS`; the worker reads the row itself.
///
/// A `bookingLimit` (even the current one: a change still queued may be about to
/// set another) goes to the worker, which decides it in order with the goods'
/// bookings: below the seats booked now it is refused at once (409
/// `limit_below_booked`, nothing changed); otherwise it is queued and the other fields
/// are written once it is applied (409 and nothing changed if the worker refused it:
/// bookings queued before it took the seats). When the worker has not decided within
/// [`LIMIT_CHANGE_WAIT`], the answer is `202` with the change's status URL and nothing
/// else is written.
#[utoipa::path(
    patch,
    path = "/api/goods/{id}",
    operation_id = "update_goods",
    tag = "goods",
    params(IdPath),
    request_body = PatchGoodsBody,
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The goods after the change", body = GoodsResponse),
        (status = 202, description = "A `bookingLimit` change the worker did not decide \
            within 5 s: still queued, nothing else written; follow `statusUrl`",
            body = LimitChangeQueued, headers(("Location" = String, description = "The status URL"))),
        UpdateGoodsErrors,
    )
)]
#[tracing::instrument(skip_all, fields(user_id = user.id, goods_id = id))]
pub async fn update(
    state: web::Data<AppState>,
    user: AuthUser,
    IdPath(id): IdPath,
    req: HttpRequest,
    ApiJson(body): ApiJson<PatchGoodsBody>,
) -> Result<HttpResponse, ApiError> {
    // The fields are written against the limit the goods has then (the worker's,
    // ours or a concurrent change's): maxPerBooking never exceeds it.
    let write = || async {
        let goods = db::update_goods(&state.pool, id, user.id, GoodsChange::Write, |was| {
            body.apply(was, i64::from(was.booking_limit))
        })
        .await?;
        state.goods.invalidate(&id).await;
        Ok::<_, ApiError>(goods)
    };
    let Some(new_limit) = body.booking_limit else {
        let goods = write().await?;
        tracing::info!("goods changed");
        return Ok(HttpResponse::Ok().json(GoodsResponse::from(goods)));
    };
    db::update_goods(&state.pool, id, user.id, GoodsChange::Check, |was| {
        body.apply(was, new_limit)
    })
    .await?;
    // Validated by the check: 1 to MAX_BOOKING_LIMIT.
    let new_limit = i32::try_from(new_limit)
        .map_err(|_| ApiError::validation("bookingLimit", "bookingLimit is out of range"))?;
    let request_id = enqueue_limit_change(&state, &user, id, new_limit, &req).await?;
    let Some(decided) = wait_for_decision(&state, request_id).await? else {
        tracing::warn!(%request_id, "booking limit change not decided in time");
        return Ok(HttpResponse::Accepted()
            .insert_header((header::LOCATION, status_url(request_id)))
            .json(LimitChangeQueued {
                request_id,
                status: RequestStatus::Queued.as_str(),
                status_url: status_url(request_id),
            }));
    };
    match (decided.status, decided.reason) {
        (RequestStatus::Applied, _) => {
            // The limit stands even if this write fails (the client is told to
            // repeat the PATCH, which sets the same limit again).
            let goods = write().await?;
            tracing::info!(%request_id, new_limit, "goods changed, with its booking limit");
            Ok(HttpResponse::Ok().json(GoodsResponse::from(goods)))
        }
        (_, Some(RejectReason::LimitBelowBooked)) => {
            let booked = db::get_goods(&state.pool, id)
                .await?
                .map_or(0, |g| g.booked_count.into());
            Err(ApiError::LimitBelowBooked(booked))
        }
        (_, Some(RejectReason::GoodsNotFound)) => Err(ApiError::GoodsNotFound),
        (status, reason) => {
            // Dead-lettered (a worker older than limit changes, during an upgrade):
            // not the change's fault; it may be sent again.
            tracing::warn!(%request_id, %status, ?reason, "booking limit change not made");
            Err(ApiError::LimitChangeFailed)
        }
    }
}

/// A `bookingLimit` change still undecided when PATCH stopped waiting.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"requestId": "0193b6f2-8c1e-7d3a-9f4b-2a6c1e0d0001", "status": "queued",
    "statusUrl": "/api/bookings/requests/0193b6f2-8c1e-7d3a-9f4b-2a6c1e0d0001"}))]
pub struct LimitChangeQueued {
    request_id: Uuid,
    /// `queued`.
    #[schema(value_type = String)]
    status: &'static str,
    status_url: String,
}

/// Puts a change of the goods' booking limit to `limit` on its shard's stream, as a
/// request of its organizer; returns its id.
async fn enqueue_limit_change(
    state: &AppState,
    user: &AuthUser,
    goods_id: i64,
    limit: i32,
    req: &HttpRequest,
) -> Result<Uuid, ApiError> {
    let shard = state.keys.shard_of(goods_id);
    if state.backlog.is_full(shard) {
        return Err(ApiError::QueueFull);
    }
    if state.backlog.is_memory_full() {
        return Err(ApiError::QueueMemoryFull);
    }
    let request_id = Keys::new_request_id(shard);
    let message = Message::Limit(BookingRequestV1 {
        request_id,
        goods_id,
        user_id: user.id,
        quantity: limit,
        accepted_at_ms: now_ms(),
        trace_id: req
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default(),
        traceparent: shared::telemetry::current_traceparent(),
    });
    match super::bookings::enqueue(state, &message).await? {
        Enqueued::Accepted | Enqueued::Existing { .. } => Ok(request_id),
        Enqueued::KeyReused => Err(ApiError::IdempotencyKeyReused),
        Enqueued::RateLimited { retry_after } => Err(ApiError::RateLimited(retry_after)),
    }
}

/// The request's status once decided, or `None` if it is still queued after
/// [`LIMIT_CHANGE_WAIT`] (or when shutdown begins). Woken by the worker's note, as a
/// status long-poll is (`long_poll`).
async fn wait_for_decision(
    state: &AppState,
    request_id: Uuid,
) -> Result<Option<StatusRecord>, ApiError> {
    let deadline = tokio::time::Instant::now() + LIMIT_CHANGE_WAIT;
    let mut waiter = state.waiters.watch(request_id);
    loop {
        let mut conn = state.redis.get().await;
        let status = stream::read_status(&mut conn, &state.keys, request_id).await?;
        drop(conn);
        if let Some(decided) = status.filter(|s| s.status != RequestStatus::Queued) {
            return Ok(Some(decided));
        }
        if tokio::time::Instant::now() >= deadline || state.waiters.stopping() {
            return Ok(None);
        }
        waiter.woken(deadline).await;
    }
}

errors!(DeleteGoodsErrors: InvalidPath, Unauthorized, Forbidden, CrossOriginRefused,
    GoodsNotFound, GoodsHasBookings, DatabaseUnavailable);

/// `DELETE /api/goods/{id}`: the organizer who created it removes it, once it holds
/// no live booking; `204`. Requests still queued for it are rejected
/// `goods_not_found`.
#[utoipa::path(
    delete,
    path = "/api/goods/{id}",
    operation_id = "delete_goods",
    tag = "goods",
    params(IdPath),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 204, description = "Deleted"), DeleteGoodsErrors)
)]
#[tracing::instrument(skip_all, fields(user_id = user.id, goods_id = id))]
pub async fn delete(
    state: web::Data<AppState>,
    user: AuthUser,
    IdPath(id): IdPath,
) -> Result<HttpResponse, ApiError> {
    db::delete_goods(&state.pool, id, user.id).await?;
    state.goods.invalidate(&id).await;
    tracing::info!("goods deleted");
    Ok(HttpResponse::NoContent().finish())
}

errors!(ListGoodsErrors: InvalidQuery, DatabaseUnavailable);

/// `GET /api/goods`: a bare JSON array of goods in id order (what the original
/// TicketNest front end reads), paged by id (`routes::paging`).
#[utoipa::path(
    get,
    path = "/api/goods",
    operation_id = "list_goods",
    tag = "goods",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of goods, in id order", body = Vec<GoodsResponse>,
            headers(("Link" = String, description = "`</api/goods?limit=20&cursor=42>; rel=\"next\"` when more follow"))),
        ListGoodsErrors,
    )
)]
pub async fn list(
    state: web::Data<AppState>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = query.checked()?;
    let rows = db::list_goods(&state.pool, page.cursor.unwrap_or(0), page.fetch()).await?;
    let goods: Vec<GoodsResponse> = rows.into_iter().map(GoodsResponse::from).collect();
    Ok(page.respond("/api/goods", goods, |g| g.id))
}

errors!(GoodsDetailErrors: InvalidPath, GoodsNotFound, DatabaseUnavailable);

/// One goods.
#[utoipa::path(
    get,
    path = "/api/goods/{id}",
    operation_id = "get_goods",
    tag = "goods",
    params(IdPath),
    responses((status = 200, description = "The goods", body = GoodsResponse), GoodsDetailErrors)
)]
pub async fn detail(
    state: web::Data<AppState>,
    IdPath(id): IdPath,
) -> Result<HttpResponse, ApiError> {
    let goods = db::get_goods(&state.pool, id)
        .await?
        .ok_or(ApiError::GoodsNotFound)?;
    Ok(HttpResponse::Ok().json(GoodsResponse::from(goods)))
}
