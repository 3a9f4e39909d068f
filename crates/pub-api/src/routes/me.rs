//! `GET /api/me/bookings`: the caller's bookings of every state, newest first.

use actix_web::{http::header, web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    db::{self, MyBooking},
    error::ApiError,
    extract::AuthUser,
    openapi::errors,
    routes::paging::PageQuery,
    state::AppState,
};

/// One of the caller's bookings.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"bookingId": 17, "requestId": "0193b6f2-8c1e-7d3a-9f4b-2a6c1e0d0001",
    "goodsId": 1, "goodsTitle": "Giselle", "quantity": 1, "status": "waitlisted",
    "createdAt": "2026-11-25T06:00:01.000Z", "waitlistPosition": 3}))]
pub struct BookingResponse {
    booking_id: i64,
    /// The booking request that made it (its status URL:
    /// `/api/bookings/requests/{requestId}`).
    request_id: Uuid,
    goods_id: i64,
    goods_title: String,
    quantity: i32,
    /// `confirmed`, `held`, `waitlisted`, `cancelled` or `expired`.
    status: String,
    created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    promoted_at: Option<DateTime<Utc>>,
    /// A hold's deadline: set on a booking that got its seats as a hold, and kept once
    /// it is confirmed or expired.
    #[serde(skip_serializing_if = "Option::is_none")]
    hold_expires_at: Option<DateTime<Utc>>,
    /// While waitlisted: its place in the goods' waitlist, 1 = first in line. Seats go
    /// to the first bookings in line that fit them, so a smaller booking further back
    /// may be promoted before a larger one ahead.
    #[serde(skip_serializing_if = "Option::is_none")]
    waitlist_position: Option<i64>,
}

impl From<MyBooking> for BookingResponse {
    fn from(b: MyBooking) -> Self {
        Self {
            booking_id: b.id,
            request_id: b.request_id,
            goods_id: b.goods_id,
            goods_title: b.goods_title,
            quantity: b.quantity,
            status: b.status,
            created_at: b.created_at,
            promoted_at: b.promoted_at,
            hold_expires_at: b.hold_expires_at,
            waitlist_position: b.waitlist_position,
        }
    }
}

errors!(MyBookingsErrors: InvalidQuery, Unauthorized, DatabaseUnavailable);

/// A bare JSON array, newest first, paged by booking id (`routes::paging`: the
/// `Link` header names the next page).
#[utoipa::path(
    get,
    path = "/api/me/bookings",
    operation_id = "my_bookings",
    tag = "me",
    params(PageQuery),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The caller's bookings of every state, newest first",
            body = Vec<BookingResponse>, headers(
                ("Link" = String, description = "The next page, when more follow"),
                ("Cache-Control" = String, description = "`private, no-store`"),
            )),
        MyBookingsErrors,
    )
)]
#[tracing::instrument(skip_all, fields(user_id = user.id))]
pub async fn bookings(
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = query.checked()?;
    let rows = db::my_bookings(&state.pool, user.id, page.cursor, page.fetch()).await?;
    let bookings: Vec<BookingResponse> = rows.into_iter().map(BookingResponse::from).collect();
    let mut response = page.respond("/api/me/bookings", bookings, |b| b.booking_id);
    // Personal: no shared cache may keep it.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("private, no-store"),
    );
    Ok(response)
}
