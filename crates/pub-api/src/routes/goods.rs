//! `POST /api/goods`, `GET /api/goods`, `GET /api/goods/{id}`, and for the organizer
//! who created a goods `PATCH /api/goods/{id}` and `DELETE /api/goods/{id}`.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::auth::Role;

use crate::{
    db::{self, Goods, GoodsFields},
    domain::GoodsInput,
    error::ApiError,
    extract::{ApiJson, AuthUser, IdPath},
    state::AppState,
};

const DEFAULT_PAGE_SIZE: i64 = 20;
const MAX_PAGE_SIZE: i64 = 100;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateGoodsBody {
    title: String,
    content: String,
    price: i64,
    img_url: String,
    show_date: String,
    booking_limit: i64,
    max_per_booking: Option<i64>,
    sale_opens_at: Option<String>,
    sale_closes_at: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GoodsResponse {
    id: i64,
    organizer_id: i64,
    #[serde(flatten)]
    fields: GoodsFields,
    /// Seats held by confirmed bookings.
    booking_count: i32,
    remaining: i32,
    created_at: DateTime<Utc>,
}

impl From<Goods> for GoodsResponse {
    fn from(g: Goods) -> Self {
        Self {
            id: g.id,
            organizer_id: g.organizer_id,
            remaining: g.fields.booking_limit - g.booked_count,
            booking_count: g.booked_count,
            fields: g.fields,
            created_at: g.created_at,
        }
    }
}

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
    }
    .parse()?;
    let goods = db::insert_goods(&state.pool, user.id, &new).await?;
    tracing::info!(goods_id = goods.id, "goods created");
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/goods/{}", goods.id)))
        .json(GoodsResponse::from(goods)))
}

/// A change to a goods: any of the creation fields but `bookingLimit` (seat changes
/// go through the worker; not yet offered). `saleOpensAt` / `saleClosesAt` set to
/// `null` remove that bound.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatchGoodsBody {
    title: Option<String>,
    content: Option<String>,
    price: Option<i64>,
    img_url: Option<String>,
    show_date: Option<String>,
    booking_limit: Option<i64>,
    max_per_booking: Option<i64>,
    #[serde(default, deserialize_with = "present")]
    sale_opens_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    sale_closes_at: Option<Option<String>>,
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
    /// The goods' fields with this change, validated as at creation.
    fn apply(&self, was: &GoodsFields) -> Result<GoodsFields, ApiError> {
        if self
            .booking_limit
            .is_some_and(|limit| limit != i64::from(was.booking_limit))
        {
            return Err(ApiError::validation(
                "bookingLimit",
                "bookingLimit cannot be changed yet",
            ));
        }
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
            booking_limit: i64::from(was.booking_limit),
            max_per_booking: Some(
                self.max_per_booking
                    .unwrap_or(i64::from(was.max_per_booking)),
            ),
            sale_opens_at: opens.as_deref(),
            sale_closes_at: closes.as_deref(),
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

/// `PATCH /api/goods/{id}`: the organizer who created it changes it; `200` with the
/// goods. This API copy forgets its cached copy at once; others within
/// `TICKETNEST_GOODS_CACHE_TTL_MS`; the worker reads the row itself.
#[tracing::instrument(skip_all, fields(user_id = user.id, goods_id = id))]
pub async fn update(
    state: web::Data<AppState>,
    user: AuthUser,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<PatchGoodsBody>,
) -> Result<HttpResponse, ApiError> {
    let goods = db::update_goods(&state.pool, id, user.id, |was| body.apply(was)).await?;
    state.goods.invalidate(&id).await;
    tracing::info!("goods changed");
    Ok(HttpResponse::Ok().json(GoodsResponse::from(goods)))
}

/// `DELETE /api/goods/{id}`: the organizer who created it removes it, once it holds
/// no live booking; `204`. Requests still queued for it are rejected
/// `goods_not_found`.
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListQuery {
    /// Return goods with ids after this one (the previous page's `nextCursor`).
    cursor: Option<i64>,
    limit: Option<i64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GoodsPage {
    items: Vec<GoodsResponse>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    next_cursor: Option<i64>,
}

pub async fn list(
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE_SIZE);
    let page_size = usize::try_from(limit)
        .ok()
        .filter(|_| (1..=MAX_PAGE_SIZE).contains(&limit))
        .ok_or_else(|| {
            ApiError::InvalidQuery(format!("limit must be between 1 and {MAX_PAGE_SIZE}"))
        })?;
    let after = query.cursor.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::InvalidQuery("cursor must not be negative".into()));
    }
    // One extra row tells whether another page follows.
    let mut rows = db::list_goods(&state.pool, after, limit + 1).await?;
    let more = rows.len() > page_size;
    rows.truncate(page_size);
    let next_cursor = if more {
        rows.last().map(|g| g.id)
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(GoodsPage {
        items: rows.into_iter().map(GoodsResponse::from).collect(),
        next_cursor,
    }))
}

pub async fn detail(
    state: web::Data<AppState>,
    IdPath(id): IdPath,
) -> Result<HttpResponse, ApiError> {
    let goods = db::get_goods(&state.pool, id)
        .await?
        .ok_or(ApiError::GoodsNotFound)?;
    Ok(HttpResponse::Ok().json(GoodsResponse::from(goods)))
}
