//! `POST /api/goods`, `GET /api/goods`, `GET /api/goods/{id}`.

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
