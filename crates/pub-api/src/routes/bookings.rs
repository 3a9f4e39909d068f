//! `POST /api/goods/{id}/bookings` (the hot path), `DELETE /api/goods/{id}/bookings/me`
//! (cancel; also `DELETE /api/booking/{id}`, the original TicketNest's route),
//! `POST /api/goods/{id}/bookings/me/confirm` (confirm a hold) and
//! `GET /api/bookings/requests/{id}` (a request's status, with its queue or waitlist
//! position; `?wait=N` long-polls: see `long_poll`).
//!
//! A cancel and a confirm travel like a booking, through the goods' shard stream, so
//! the worker decides them in order with the bookings around them.
//!
//! Accepting a request costs one Redis round trip: the enqueue script
//! (`shared::stream::enqueue`) answers a retry of an idempotent request from its status
//! hash, or spends the user's rate budget, writes the status hash (`queued`) and
//! appends the request to the goods' shard stream. PostgreSQL is touched only when the
//! goods cache misses, and for a request sent with an `Idempotency-Key`, whose id is
//! first looked up in the decision log (at most 200 ms; skipped when the database does
//! not answer). The API never writes booking tables: the worker decides.

use std::time::SystemTime;

use actix_web::{http::header, web, HttpMessage, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use shared::{
    decision::{RequestKind, RequestStatus},
    keys::Keys,
    stream::{self, BookingRequestV1, Enqueued, Message, StatusRecord},
};
use tracing::Instrument;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    db::{self, GoodsLimits},
    error::ApiError,
    extract::{parse_optional_json, ApiBody, AuthUser, IdPath},
    openapi::errors,
    request_id::RequestId,
    state::AppState,
};

/// A booking's body, optional (no body: one seat).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"quantity": 2}))]
pub struct BookingBody {
    /// Seats, 1 to the goods' `maxPerBooking` (default 1).
    #[schema(minimum = 1, maximum = 100)]
    quantity: Option<i64>,
}

/// A request accepted onto the goods' queue: poll `statusUrl` for its decision.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"requestId": "0193b6f2-8c1e-7d3a-9f4b-2a6c1e0d0001", "status": "queued",
    "statusUrl": "/api/bookings/requests/0193b6f2-8c1e-7d3a-9f4b-2a6c1e0d0001"}))]
pub struct Accepted {
    request_id: Uuid,
    /// `queued`, or for a retry of an idempotent request, its status now.
    status: String,
    status_url: String,
}

/// Header a client may send so a retry is decided once (`Keys::idempotent_request_id`).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Describes a header; read by `idempotency_key`.
pub struct IdempotencyKeyHeader {
    /// 1 to 64 of `[A-Za-z0-9-_.:]`, one per request: the same user, goods and key
    /// always give the same `requestId`.
    #[param(
        rename = "Idempotency-Key",
        pattern = r"^[A-Za-z0-9._:-]{1,64}$",
        nullable = false
    )]
    idempotency_key: Option<String>,
}

errors!(CreateBookingErrors: InvalidPath, InvalidJson, ValidationFailed, PayloadTooLarge,
    UnsupportedMediaType, Unauthorized, CrossOriginRefused, GoodsNotFound, SaleNotOpen,
    SaleClosed, IdempotencyKeyReused, RateLimited, QueueUnavailable, QueueFull,
    QueueMemoryFull);

errors!(OwnBookingErrors: InvalidPath, ValidationFailed, Unauthorized, CrossOriginRefused,
    GoodsNotFound, IdempotencyKeyReused, RateLimited, QueueUnavailable, QueueFull,
    QueueMemoryFull);

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

/// The requested quantity, checked against the goods' `maxPerBooking`.
fn quantity(body: Option<BookingBody>, limits: GoodsLimits) -> Result<i32, ApiError> {
    let raw = body.and_then(|b| b.quantity).unwrap_or(1);
    i32::try_from(raw)
        .ok()
        .filter(|q| (1..=limits.max_per_booking).contains(q))
        .ok_or_else(|| {
            ApiError::validation(
                "quantity",
                format!(
                    "quantity must be between 1 and {} for this goods",
                    limits.max_per_booking
                ),
            )
        })
}

/// Refuses a booking outside the goods' sale window, as far as this process's copy of
/// the goods knows (the worker decides by the request's stream entry time, with the
/// goods row locked: a copy cached before a change cannot sell outside the window).
fn sale_is_open(limits: GoodsLimits, now_ms: i64) -> Result<(), ApiError> {
    let ms = |at: Option<chrono::DateTime<chrono::Utc>>| at.map(|t| t.timestamp_millis());
    if ms(limits.sale_opens_at).is_some_and(|opens| now_ms < opens) {
        return Err(ApiError::SaleNotOpen);
    }
    if ms(limits.sale_closes_at).is_some_and(|closes| now_ms >= closes) {
        return Err(ApiError::SaleClosed);
    }
    Ok(())
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .unwrap_or_default()
}

pub(crate) fn status_url(request_id: Uuid) -> String {
    format!("/api/bookings/requests/{request_id}")
}

/// Books seats of a goods: accepted at once, decided in order by the goods' worker.
#[utoipa::path(
    post,
    path = "/api/goods/{id}/bookings",
    operation_id = "create_booking",
    tag = "bookings",
    params(IdPath, IdempotencyKeyHeader),
    request_body(content = Option<BookingBody>, description = "Optional: no body books one seat"),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 202, description = "Queued (or, for a retry under an `Idempotency-Key`, \
            that request and its status now)", body = Accepted,
            headers(("Location" = String, description = "The status URL"))),
        CreateBookingErrors,
    )
)]
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
    let asked = body.as_ref().and_then(|b| b.quantity).unwrap_or(1);
    if let Some(known) =
        answer_decided(&state, &user, goods_id, &req, RequestKind::Book, asked).await?
    {
        return Ok(known);
    }
    // A retry of a request still queued is answered with it even when the goods has
    // changed (a lower maxPerBooking) or gone since.
    let checked = match goods_limits(&state, goods_id).await {
        Ok(limits) => quantity(body, limits).map(|q| (limits, q)),
        Err(e) => Err(e),
    };
    let (limits, quantity) = match checked {
        Ok(checked) => checked,
        Err(refusal) => {
            return refuse_unless_known(
                &state,
                &user,
                goods_id,
                &req,
                RequestKind::Book,
                asked,
                refusal,
            )
            .await
        }
    };
    let window = sale_is_open(limits, now_ms()).err();
    submit(
        &state,
        &user,
        goods_id,
        &req,
        RequestKind::Book,
        quantity,
        window,
    )
    .await
}

/// `POST /api/booking/{id}`, the original TicketNest's route: [`create`].
#[utoipa::path(
    post,
    path = "/api/booking/{id}",
    operation_id = "create_booking_original",
    tag = "bookings",
    params(IdPath, IdempotencyKeyHeader),
    request_body(content = Option<BookingBody>, description = "Optional: no body books one seat"),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 202, description = "Queued", body = Accepted,
            headers(("Location" = String, description = "The status URL"))),
        CreateBookingErrors,
    )
)]
pub async fn create_original(
    state: web::Data<AppState>,
    user: AuthUser,
    goods: IdPath,
    req: HttpRequest,
    body: ApiBody,
) -> Result<HttpResponse, ApiError> {
    create(state, user, goods, req, body).await
}

/// Cancels the caller's live booking of the goods (confirmed, held or waitlisted),
/// decided by the worker in stream order: `cancelled`, or `rejected` / `no_booking`.
#[utoipa::path(
    delete,
    path = "/api/goods/{id}/bookings/me",
    operation_id = "cancel_booking",
    tag = "bookings",
    params(IdPath, IdempotencyKeyHeader),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 202, description = "Queued: its status says `cancelled` or `rejected` / \
            `no_booking`", body = Accepted,
            headers(("Location" = String, description = "The status URL"))),
        OwnBookingErrors,
    )
)]
#[tracing::instrument(skip_all, fields(user_id = user.id, goods_id, request_id))]
pub async fn cancel(
    state: web::Data<AppState>,
    user: AuthUser,
    IdPath(goods_id): IdPath,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    about_own_booking(&state, &user, goods_id, &req, RequestKind::Cancel).await
}

/// `DELETE /api/booking/{id}`, the original TicketNest's route: [`cancel`].
#[utoipa::path(
    delete,
    path = "/api/booking/{id}",
    operation_id = "cancel_booking_original",
    tag = "bookings",
    params(IdPath, IdempotencyKeyHeader),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 202, description = "Queued", body = Accepted,
            headers(("Location" = String, description = "The status URL"))),
        OwnBookingErrors,
    )
)]
pub async fn cancel_original(
    state: web::Data<AppState>,
    user: AuthUser,
    goods: IdPath,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    cancel(state, user, goods, req).await
}

/// Confirms the caller's held booking of the goods, decided by the worker in stream
/// order: `confirmed` if the confirm arrived before the hold's deadline, else
/// `rejected` / `hold_expired`; `rejected` / `no_hold` without a hold.
#[utoipa::path(
    post,
    path = "/api/goods/{id}/bookings/me/confirm",
    operation_id = "confirm_booking",
    tag = "bookings",
    params(IdPath, IdempotencyKeyHeader),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 202, description = "Queued: its status says `confirmed` or `rejected` / \
            `hold_expired` or `no_hold`", body = Accepted,
            headers(("Location" = String, description = "The status URL"))),
        OwnBookingErrors,
    )
)]
#[tracing::instrument(skip_all, fields(user_id = user.id, goods_id, request_id))]
pub async fn confirm(
    state: web::Data<AppState>,
    user: AuthUser,
    IdPath(goods_id): IdPath,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    about_own_booking(&state, &user, goods_id, &req, RequestKind::Confirm).await
}

/// Accepts a request of `kind` about the caller's own booking of the goods (no body,
/// no quantity): a cancel or a confirm.
async fn about_own_booking(
    state: &AppState,
    user: &AuthUser,
    goods_id: i64,
    req: &HttpRequest,
    kind: RequestKind,
) -> Result<HttpResponse, ApiError> {
    tracing::Span::current().record("goods_id", goods_id);
    if let Some(known) = answer_decided(state, user, goods_id, req, kind, 0).await? {
        return Ok(known);
    }
    if let Err(refusal) = goods_limits(state, goods_id).await {
        return refuse_unless_known(state, user, goods_id, req, kind, 0, refusal).await;
    }
    submit(state, user, goods_id, req, kind, 0, None).await
}

/// Accepts a request of `kind` onto the goods' shard stream: `202` with where to poll
/// it. `refusal` is a reason of the caller's to turn new requests away (outside the
/// sale window); a full shard or a full Redis turns them away too. A retry of a
/// request sent with an `Idempotency-Key` is answered with that request instead.
async fn submit(
    state: &AppState,
    user: &AuthUser,
    goods_id: i64,
    req: &HttpRequest,
    kind: RequestKind,
    quantity: i32,
    refusal: Option<ApiError>,
) -> Result<HttpResponse, ApiError> {
    let accepted_at_ms = now_ms();
    let shard = state.keys.shard_of(goods_id);
    let request_id = keyed_request_id(state, user, goods_id, req)?
        .unwrap_or_else(|| Keys::new_request_id(shard));
    tracing::Span::current().record("request_id", tracing::field::display(request_id));
    let refusal = refusal.or_else(|| {
        // A confirm is let through a full shard: its hold's deadline does not wait
        // for the backlog to shrink, and a hold is confirmed at most once.
        if kind != RequestKind::Confirm && state.backlog.is_full(shard) {
            Some(ApiError::QueueFull)
        } else if state.backlog.is_memory_full() {
            Some(ApiError::QueueMemoryFull)
        } else {
            None
        }
    });
    if let Some(refusal) = refusal {
        // New requests are turned away (outside the sale window, a full shard, a full
        // Redis); a retry of a request accepted before is answered with it, since that
        // is when clients retry most.
        return refuse_unless_known(
            state,
            user,
            goods_id,
            req,
            kind,
            i64::from(quantity),
            refusal,
        )
        .await;
    }
    let request = BookingRequestV1 {
        request_id,
        goods_id,
        user_id: user.id,
        quantity,
        accepted_at_ms,
        trace_id: req
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default(),
        traceparent: shared::telemetry::current_traceparent(),
    };
    let message = match kind {
        RequestKind::Book => Message::Book(request),
        RequestKind::Cancel => Message::Cancel(request),
        RequestKind::Limit => Message::Limit(request),
        RequestKind::Confirm => Message::Confirm(request),
        RequestKind::Expire => Message::Expire(request),
    };
    let status = match enqueue(state, &message).await? {
        Enqueued::Accepted => RequestStatus::Queued.as_str().to_owned(),
        Enqueued::Existing { status } => status,
        Enqueued::KeyReused => return Err(ApiError::IdempotencyKeyReused),
        Enqueued::RateLimited { retry_after } => return Err(ApiError::RateLimited(retry_after)),
    };
    Ok(accepted(request_id, status))
}

/// Offers `message` to its shard stream (`stream::enqueue`, one Redis round trip, timed
/// in `ticketnest_enqueue_duration_seconds`).
pub(crate) async fn enqueue(state: &AppState, message: &Message) -> Result<Enqueued, ApiError> {
    let mut conn = state.redis.get().await;
    let started = std::time::Instant::now();
    let enqueued = stream::enqueue(&mut conn, &state.keys, message, state.user_rate);
    // A span of its own only while spans are exported (none otherwise: nothing to pay).
    let enqueued = if shared::telemetry::exporting() {
        let shard = state.keys.shard_of(message.request().goods_id);
        enqueued
            .instrument(tracing::info_span!("enqueue", shard = shard.get()))
            .await
    } else {
        enqueued.await
    };
    static LATENCY: std::sync::OnceLock<metrics::Histogram> = std::sync::OnceLock::new();
    LATENCY
        .get_or_init(|| metrics::histogram!(shared::meter::names::ENQUEUE_DURATION))
        .record(started.elapsed());
    Ok(enqueued?)
}

/// `refusal`, unless the request carries an `Idempotency-Key` under which a request
/// was accepted before (its status hash is there): then `202` with that request and
/// its status now, or 422 when the key was used for another kind or quantity. A
/// status read works even on a full Redis.
async fn refuse_unless_known(
    state: &AppState,
    user: &AuthUser,
    goods_id: i64,
    req: &HttpRequest,
    kind: RequestKind,
    asked: i64,
    refusal: ApiError,
) -> Result<HttpResponse, ApiError> {
    let Some(request_id) = keyed_request_id(state, user, goods_id, req)? else {
        return Err(refusal);
    };
    let mut conn = state.redis.get().await;
    let Some(known) = stream::read_status(&mut conn, &state.keys, request_id).await? else {
        return Err(refusal);
    };
    same_request(
        request_id,
        (kind, asked),
        (known.kind.as_str(), known.quantity),
    )?;
    Ok(accepted(request_id, known.status.as_str().to_owned()))
}

/// The id of a request sent with an `Idempotency-Key` (`None` without one).
fn keyed_request_id(
    state: &AppState,
    user: &AuthUser,
    goods_id: i64,
    req: &HttpRequest,
) -> Result<Option<Uuid>, ApiError> {
    let shard = state.keys.shard_of(goods_id);
    Ok(idempotency_key(req)?.map(|key| Keys::idempotent_request_id(shard, user.id, goods_id, key)))
}

/// 422 unless a request found under a key (its kind word and quantity) is the one now
/// asked: the same kind and, for a booking, the same quantity.
fn same_request(
    request_id: Uuid,
    (kind, asked): (RequestKind, i64),
    (known_kind, known_quantity): (&str, i32),
) -> Result<(), ApiError> {
    let same = known_kind == kind.as_str()
        && (kind != RequestKind::Book || i64::from(known_quantity) == asked);
    if same {
        Ok(())
    } else {
        tracing::debug!(%request_id, "idempotency key reused for another request");
        Err(ApiError::IdempotencyKeyReused)
    }
}

/// How long a keyed request waits for the decision log before going on without it.
const DECISION_LOG_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// The answer to a keyed request decided before, as the decision log knows it,
/// checked before anything about the goods now (a retry after the goods changed or
/// was deleted still gets its request): `202` with its status now, or 422 when the
/// key was used for another kind or (a booking) quantity. A key so holds as long as
/// the log does, also once Redis has forgotten the request's status. `None`: no key,
/// or nothing decided under it. A database that does not answer within
/// [`DECISION_LOG_WAIT`] is skipped (logged): Redis's status hash answers a retry for
/// a day, and the worker never decides one request id twice either way.
async fn answer_decided(
    state: &AppState,
    user: &AuthUser,
    goods_id: i64,
    req: &HttpRequest,
    kind: RequestKind,
    asked: i64,
) -> Result<Option<HttpResponse>, ApiError> {
    let Some(request_id) = keyed_request_id(state, user, goods_id, req)? else {
        return Ok(None);
    };
    let known = match tokio::time::timeout(
        DECISION_LOG_WAIT,
        db::decision_as_written(&state.pool, request_id),
    )
    .await
    {
        Ok(Ok(known)) => known,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "idempotency key not checked against the decision log");
            None
        }
        Err(_) => {
            tracing::warn!("idempotency key not checked: the decision log did not answer in time");
            None
        }
    };
    let Some(known) = known else {
        return Ok(None);
    };
    same_request(request_id, (kind, asked), (&known.kind, known.quantity))?;
    Ok(Some(accepted(request_id, known.status)))
}

/// `202` for an accepted request, with where to poll it.
fn accepted(request_id: Uuid, status: String) -> HttpResponse {
    HttpResponse::Accepted()
        .insert_header((header::LOCATION, status_url(request_id)))
        .json(Accepted {
            request_id,
            status,
            status_url: status_url(request_id),
        })
}

/// A request's status now. Later versions add statuses and reasons: a word this
/// version does not know is passed on as written.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"requestId": "0193b6f2-8c1e-7d3a-9f4b-2a6c1e0d0001", "goodsId": 1,
    "kind": "book", "quantity": 1, "status": "waitlisted", "bookingId": 23, "waitlistPosition": 3}))]
pub struct StatusResponse {
    #[serde(skip)]
    user_id: i64,
    request_id: Uuid,
    goods_id: i64,
    /// `book`, `cancel`, `limit`, `confirm` or `expire`.
    kind: String,
    /// Seats asked for (a booking) or released (a cancel); a limit change's new limit.
    quantity: i32,
    /// A status word; one this build does not know (a newer build wrote it) is passed
    /// on as written.
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    booking_id: Option<i64>,
    /// When the booking was promoted from the waitlist (RFC 3339, UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    promoted_at: Option<String>,
    /// The hold's deadline (RFC 3339, UTC), for a booking that got seats as a hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    hold_expires_at: Option<String>,
    /// While `queued`: the undecided requests for the same goods ahead of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    position: Option<u64>,
    /// While `waitlisted`: its booking's place in the goods' waitlist, 1 = next in line.
    #[serde(skip_serializing_if = "Option::is_none")]
    waitlist_position: Option<i64>,
}

/// Unix milliseconds as RFC 3339 with milliseconds, UTC.
fn rfc3339_ms(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

impl From<StatusRecord> for StatusResponse {
    fn from(r: StatusRecord) -> Self {
        Self {
            user_id: r.user_id,
            request_id: r.request_id,
            goods_id: r.goods_id,
            kind: r.kind.as_str().to_owned(),
            quantity: r.quantity,
            status: r.status.as_str().to_owned(),
            reason: r.reason.map(|reason| reason.as_str().to_owned()),
            booking_id: r.booking_id,
            promoted_at: r.promoted_at_ms.and_then(rfc3339_ms),
            hold_expires_at: r.hold_expires_at_ms.and_then(rfc3339_ms),
            position: None,
            waitlist_position: None,
        }
    }
}

impl StatusResponse {
    fn as_written(request_id: Uuid, d: db::DecisionAsWritten) -> Self {
        Self {
            user_id: d.user_id,
            request_id,
            goods_id: d.goods_id,
            kind: d.kind,
            quantity: d.quantity,
            status: d.status,
            reason: d.reason,
            booking_id: d.booking_id,
            promoted_at: d.promoted_at_ms.and_then(rfc3339_ms),
            hold_expires_at: d.hold_expires_at_ms.and_then(rfc3339_ms),
            position: None,
            waitlist_position: None,
        }
    }
}

/// The longest long-poll, in seconds.
const MAX_WAIT_SECS: u64 = 30;
/// How long a status read waits for a waitlisted booking's place before answering
/// without it (logged).
const WAITLIST_PLACE_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Other parameters are ignored, as they always were on this route (cache-busters such
/// as jQuery's `_=`).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusQuery {
    /// Long-poll: seconds to wait for the status to change, 1 to 30.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 30, nullable = false)]
    wait: Option<String>,
    /// The status the client last saw (default `queued`): a long-poll answers as soon as
    /// the status is another.
    #[param(nullable = false)]
    seen: Option<String>,
}

/// The request id, as the booking answered it.
#[derive(utoipa::IntoParams)]
#[into_params(names("requestId"), parameter_in = Path)]
#[allow(dead_code)] // Describes the path; read by `status`.
pub struct RequestIdPath(Uuid);

errors!(StatusErrors: InvalidPath, InvalidQuery, Unauthorized, RequestNotFound,
    QueueUnavailable, DatabaseUnavailable);

impl StatusQuery {
    /// `Some((how long, the status last seen))` for a long-poll.
    fn long_poll(&self) -> Result<Option<(std::time::Duration, RequestStatus)>, ApiError> {
        let seen = match &self.seen {
            None => RequestStatus::Queued,
            Some(word) => word.parse().map_err(|_| {
                let words: Vec<&str> = RequestStatus::ALL.iter().map(|s| s.as_str()).collect();
                ApiError::InvalidQuery(format!(
                    "seen must be a request status: {}",
                    words.join(", ")
                ))
            })?,
        };
        let Some(wait) = &self.wait else {
            return Ok(None);
        };
        let secs = Some(wait)
            .filter(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|w| w.parse::<u64>().ok())
            .filter(|s| (1..=MAX_WAIT_SECS).contains(s))
            .ok_or_else(|| {
                ApiError::InvalidQuery(format!(
                    "wait must be a whole number of seconds from 1 to {MAX_WAIT_SECS}"
                ))
            })?;
        Ok(Some((std::time::Duration::from_secs(secs), seen)))
    }
}

/// A request's status as its owner may see it now: from the status hash in Redis (with
/// its position while queued), or from the decision log once the hash has expired;
/// with its booking's waitlist place while waitlisted.
async fn current_status(
    state: &AppState,
    user: &AuthUser,
    request_id: Uuid,
) -> Result<StatusResponse, ApiError> {
    let mut conn = state.redis.get().await;
    let mut response = match stream::poll_status(&mut conn, &state.keys, request_id).await? {
        Some(polled) => StatusResponse {
            position: polled.position,
            ..StatusResponse::from(polled.record)
        },
        // Expired (or written with words this build does not know): the log answers,
        // as written.
        None => db::decision_as_written(&state.pool, request_id)
            .await?
            .map(|d| StatusResponse::as_written(request_id, d))
            .ok_or(ApiError::RequestNotFound)?,
    };
    // Someone else's request is "not found": its existence is none of the caller's business.
    if response.user_id != user.id {
        return Err(ApiError::RequestNotFound);
    }
    if response.status == RequestStatus::Waitlisted.as_str() {
        if let Some(booking) = response.booking_id {
            response.waitlist_position =
                match db::waitlist_position(&state.pool, booking, WAITLIST_PLACE_WAIT).await {
                    Ok(place) => place,
                    Err(e) => {
                        tracing::warn!(error = %e, "status answered without its waitlist place");
                        None
                    }
                };
        }
    }
    Ok(response)
}

/// A request's status. With `?wait=N`, answers as soon as the status is other than
/// `seen` (default `queued`; at once if it already is), else after N seconds with the
/// status then (`long_poll`: woken by the worker's note, no Redis connection per
/// waiting client).
#[utoipa::path(
    get,
    path = "/api/bookings/requests/{requestId}",
    operation_id = "request_status",
    tag = "bookings",
    params(RequestIdPath, StatusQuery),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The status now (owner only)", body = StatusResponse,
            headers(("Cache-Control" = String, description = "`private, no-store`"))),
        StatusErrors,
    )
)]
#[tracing::instrument(skip_all, fields(user_id = user.id))]
pub async fn status(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
    query: web::Query<StatusQuery>,
) -> Result<HttpResponse, ApiError> {
    let request_id = Uuid::try_parse(&path).map_err(|_| {
        ApiError::InvalidPath(
            "request id must be a UUID as returned by the booking endpoint".into(),
        )
    })?;
    let long_poll = query.long_poll()?;
    let Some((wait, seen)) = long_poll else {
        return Ok(personal(current_status(&state, &user, request_id).await?));
    };
    let deadline = tokio::time::Instant::now() + wait;
    // Registered before the first read: a decision landing in between still wakes it.
    let mut waiter = state.waiters.watch(request_id);
    loop {
        let now = current_status(&state, &user, request_id).await?;
        if now.status != seen.as_str()
            || tokio::time::Instant::now() >= deadline
            || state.waiters.stopping()
        {
            return Ok(personal(now));
        }
        waiter.woken(deadline).await;
    }
}

/// `200` with a status: personal, so no shared cache may keep it.
fn personal(status: StatusResponse) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "private, no-store"))
        .json(status)
}
