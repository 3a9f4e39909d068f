//! Every SQL statement the API runs. Handlers call these; they never build SQL.
//!
//! None of these is on the booking hot path except `goods_limits`, and only when the
//! in-process goods cache misses.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::Serialize;
use shared::auth::Role;
use tokio_postgres::{error::SqlState, Row};
use uuid::Uuid;

use crate::error::ApiError;

/// A goods as the API returns it.
#[derive(Debug, Clone)]
pub struct Goods {
    pub id: i64,
    pub organizer_id: i64,
    /// What the organizer set.
    pub fields: GoodsFields,
    pub booked_count: i32,
    pub waitlisted_count: i32,
    pub created_at: DateTime<Utc>,
}

const GOODS_COLUMNS: &str = "id, organizer_id, title, content, price, img_url, show_date, \
     booking_limit, max_per_booking, booked_count, created_at, sale_opens_at, sale_closes_at, \
     waitlist_limit, waitlisted_count, hold_seconds";

impl Goods {
    fn from_row(row: &Row) -> Self {
        Self {
            id: row.get(0),
            organizer_id: row.get(1),
            fields: GoodsFields {
                title: row.get(2),
                content: row.get(3),
                price: row.get(4),
                img_url: row.get(5),
                show_date: row.get(6),
                booking_limit: row.get(7),
                max_per_booking: row.get(8),
                sale_opens_at: row.get(11),
                sale_closes_at: row.get(12),
                waitlist_limit: row.get(13),
                hold_seconds: row.get(15),
            },
            booked_count: row.get(9),
            waitlisted_count: row.get(14),
            created_at: row.get(10),
        }
    }
}

/// What the booking hot path needs to know about a goods.
#[derive(Debug, Clone, Copy)]
pub struct GoodsLimits {
    pub max_per_booking: i32,
    /// The sale window, if any (bookings outside it get 409 without being enqueued).
    pub sale_opens_at: Option<DateTime<Utc>>,
    pub sale_closes_at: Option<DateTime<Utc>>,
}

/// The fields of a goods an organizer sets, validated (`domain::GoodsInput::parse`);
/// serialised as they appear in the API's goods objects.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GoodsFields {
    pub title: String,
    pub content: String,
    pub price: i64,
    pub img_url: String,
    pub show_date: DateTime<Utc>,
    pub booking_limit: i32,
    pub max_per_booking: i32,
    /// Bookings are taken from this instant on; `null`: from creation.
    pub sale_opens_at: Option<DateTime<Utc>>,
    /// No booking is taken from this instant on; `null`: no end.
    pub sale_closes_at: Option<DateTime<Utc>>,
    /// At most this many waitlisted bookings; `null`: no cap.
    pub waitlist_limit: Option<i32>,
    /// How long a booking that wins seats holds them unconfirmed; 0: confirmed at once.
    pub hold_seconds: i32,
}

/// A user row, as signup returns it.
#[derive(Debug)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub nickname: String,
    pub role: Role,
}

fn role_of(raw: &str) -> Result<Role, ApiError> {
    Role::parse(raw).ok_or_else(|| ApiError::Internal(format!("unknown role `{raw}`").into()))
}

/// Inserts a user. Unique violations on email or nickname become 409s.
///
/// # Errors
/// `EmailTaken`, `NicknameTaken`, or a database failure.
pub async fn insert_user(
    pool: &Pool,
    email: &str,
    nickname: &str,
    password_hash: &str,
) -> Result<User, ApiError> {
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached(
            "INSERT INTO users (email, nickname, password_hash) VALUES ($1, $2, $3) \
             RETURNING id, email, nickname, role",
        )
        .await?;
    match client
        .query_one(&stmt, &[&email, &nickname, &password_hash])
        .await
    {
        Ok(row) => Ok(User {
            id: row.get(0),
            email: row.get(1),
            nickname: row.get(2),
            role: role_of(row.get(3))?,
        }),
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            let constraint = e
                .as_db_error()
                .and_then(|d| d.constraint())
                .unwrap_or_default();
            if constraint.contains("nickname") {
                Err(ApiError::NicknameTaken)
            } else {
                Err(ApiError::EmailTaken)
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Finds a live user by email for login: id, stored hash, role.
///
/// # Errors
/// A database failure.
pub async fn find_login(pool: &Pool, email: &str) -> Result<Option<(i64, String, Role)>, ApiError> {
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached(
            "SELECT id, password_hash, role FROM users \
             WHERE lower(email) = lower($1) AND deleted_at IS NULL",
        )
        .await?;
    match client.query_opt(&stmt, &[&email]).await? {
        Some(row) => Ok(Some((row.get(0), row.get(1), role_of(row.get(2))?))),
        None => Ok(None),
    }
}

/// The current role of a live user, if the user exists.
///
/// # Errors
/// A database failure.
pub async fn user_role(pool: &Pool, user_id: i64) -> Result<Option<Role>, ApiError> {
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached("SELECT role FROM users WHERE id = $1 AND deleted_at IS NULL")
        .await?;
    match client.query_opt(&stmt, &[&user_id]).await? {
        Some(row) => Ok(Some(role_of(row.get(0))?)),
        None => Ok(None),
    }
}

/// Deleted users read by [`deleted_users`], and where the next incremental read starts.
pub struct DeletedUsers {
    pub ids: Vec<i64>,
    /// The oldest transaction id still running when these were read (the reading
    /// snapshot's xmin): every deletion this read could not see was made by a
    /// transaction with this id or a newer one.
    pub next_since: i64,
    /// When the answering PostgreSQL server started: another value means another
    /// server (a restart, a failover), whose transaction ids may have been reused.
    pub server_started: String,
}

/// Every deleted user (`since` = `None`), or those deleted by a transaction whose id is
/// `since` or newer (`users.deleted_xid`, migration V3), in one statement so the ids
/// and `next_since` come from one snapshot. See `revocation` for why this misses none.
///
/// # Errors
/// A database failure.
pub async fn deleted_users(pool: &Pool, since: Option<i64>) -> Result<DeletedUsers, ApiError> {
    let client = pool.get().await?;
    // xid8 has no binary mapping in tokio-postgres: it travels as bigint (an xid8 is
    // epoch << 32 | xid, far below 2^63 in practice).
    let row = match since {
        None => {
            let stmt = client
                .prepare_cached(
                    "SELECT ARRAY(SELECT id FROM users WHERE deleted_at IS NOT NULL), \
                     pg_snapshot_xmin(pg_current_snapshot())::text::bigint, \
                     pg_postmaster_start_time()::text",
                )
                .await?;
            client.query_one(&stmt, &[]).await?
        }
        Some(since) => {
            let stmt = client
                .prepare_cached(
                    "SELECT ARRAY(SELECT id FROM users \
                                  WHERE deleted_xid >= $1::bigint::text::xid8), \
                     pg_snapshot_xmin(pg_current_snapshot())::text::bigint, \
                     pg_postmaster_start_time()::text",
                )
                .await?;
            client.query_one(&stmt, &[&since]).await?
        }
    };
    Ok(DeletedUsers {
        ids: row.try_get(0)?,
        next_since: row.try_get(1)?,
        server_started: row.try_get(2)?,
    })
}

/// # Errors
/// A database failure.
pub async fn insert_goods(
    pool: &Pool,
    organizer_id: i64,
    g: &GoodsFields,
) -> Result<Goods, ApiError> {
    let client = pool.get().await?;
    let sql = format!(
        "INSERT INTO goods (organizer_id, title, content, price, img_url, show_date, \
         booking_limit, max_per_booking, sale_opens_at, sale_closes_at, waitlist_limit, \
         hold_seconds) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING {GOODS_COLUMNS}"
    );
    let stmt = client.prepare_cached(&sql).await?;
    let row = client
        .query_one(
            &stmt,
            &[
                &organizer_id,
                &g.title,
                &g.content,
                &g.price,
                &g.img_url,
                &g.show_date,
                &g.booking_limit,
                &g.max_per_booking,
                &g.sale_opens_at,
                &g.sale_closes_at,
                &g.waitlist_limit,
                &g.hold_seconds,
            ],
        )
        .await?;
    Ok(Goods::from_row(&row))
}

/// Goods with ids greater than `after`, in id order.
///
/// # Errors
/// A database failure.
pub async fn list_goods(pool: &Pool, after: i64, limit: i64) -> Result<Vec<Goods>, ApiError> {
    let client = pool.get().await?;
    let sql = format!(
        "SELECT {GOODS_COLUMNS} FROM goods WHERE id > $1 AND deleted_at IS NULL \
         ORDER BY id LIMIT $2"
    );
    let stmt = client.prepare_cached(&sql).await?;
    let rows = client.query(&stmt, &[&after, &limit]).await?;
    Ok(rows.iter().map(Goods::from_row).collect())
}

/// # Errors
/// A database failure.
pub async fn get_goods(pool: &Pool, id: i64) -> Result<Option<Goods>, ApiError> {
    let client = pool.get().await?;
    let sql = format!("SELECT {GOODS_COLUMNS} FROM goods WHERE id = $1 AND deleted_at IS NULL");
    let stmt = client.prepare_cached(&sql).await?;
    Ok(client
        .query_opt(&stmt, &[&id])
        .await?
        .as_ref()
        .map(Goods::from_row))
}

/// Bounds of a goods change: how long it waits for the goods row (the worker holds
/// it while it decides a batch of the goods), and how long it may hold the row idle
/// (a paused API process must not hold up the worker).
const GOODS_CHANGE_BOUNDS: &str =
    "SET LOCAL lock_timeout = '2s'; SET LOCAL idle_in_transaction_session_timeout = '5s'";

/// A goods as its organizer may change it: the caller checked first without a lock
/// (an organizer now, and the one who created it; anyone else never waits for the
/// row), then the row locked.
async fn lock_own_goods(
    tx: &deadpool_postgres::Transaction<'_>,
    id: i64,
    organizer_id: i64,
) -> Result<Goods, ApiError> {
    let stmt = tx
        .prepare_cached(
            "SELECT g.organizer_id = $2 AND EXISTS (SELECT 1 FROM users u \
               WHERE u.id = $2 AND u.role = 'organizer' AND u.deleted_at IS NULL) \
             FROM goods g WHERE g.id = $1 AND g.deleted_at IS NULL",
        )
        .await?;
    let allowed: bool = tx
        .query_opt(&stmt, &[&id, &organizer_id])
        .await?
        .ok_or(ApiError::GoodsNotFound)?
        .get(0);
    if !allowed {
        return Err(ApiError::Forbidden(
            "only the organizer who created the goods may change it",
        ));
    }
    tx.batch_execute(GOODS_CHANGE_BOUNDS).await?;
    let sql = format!(
        "SELECT {GOODS_COLUMNS} FROM goods WHERE id = $1 AND deleted_at IS NULL FOR UPDATE"
    );
    let stmt = tx.prepare_cached(&sql).await?;
    tx.query_opt(&stmt, &[&id])
        .await?
        .as_ref()
        .map(Goods::from_row)
        .ok_or(ApiError::GoodsNotFound)
}

/// What [`update_goods`] does with a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoodsChange {
    /// Checks it and writes nothing: the caller has the booking limit changed first.
    Check,
    /// Writes every field but the booking limit (only the worker sets that).
    Write,
}

/// Changes a goods of `organizer_id` to `change` (the whole set of fields, validated),
/// given what it was: `change` comes from the goods as locked here. A new booking
/// limit below the seats booked is refused when checking; the limit itself is never
/// written here (see [`GoodsChange`]). Returns the goods as it is after the change.
///
/// # Errors
/// `GoodsNotFound`, `Forbidden` (not its organizer), a validation error from
/// `change`, `LimitBelowBooked`, or a database failure (503 when the row stays locked,
/// see [`GOODS_CHANGE_BOUNDS`]).
pub async fn update_goods(
    pool: &Pool,
    id: i64,
    organizer_id: i64,
    mode: GoodsChange,
    change: impl FnOnce(&GoodsFields) -> Result<GoodsFields, ApiError>,
) -> Result<Goods, ApiError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let goods = lock_own_goods(&tx, id, organizer_id).await?;
    let g = change(&goods.fields)?;
    if mode == GoodsChange::Check {
        if g.booking_limit < goods.booked_count {
            return Err(ApiError::LimitBelowBooked(goods.booked_count.into()));
        }
        return Ok(goods);
    }
    let sql = format!(
        "UPDATE goods SET title = $2, content = $3, price = $4, img_url = $5, show_date = $6, \
           max_per_booking = $7, sale_opens_at = $8, sale_closes_at = $9, waitlist_limit = $10, \
           hold_seconds = $11 \
         WHERE id = $1 RETURNING {GOODS_COLUMNS}"
    );
    let stmt = tx.prepare_cached(&sql).await?;
    let row = tx
        .query_one(
            &stmt,
            &[
                &id,
                &g.title,
                &g.content,
                &g.price,
                &g.img_url,
                &g.show_date,
                &g.max_per_booking,
                &g.sale_opens_at,
                &g.sale_closes_at,
                &g.waitlist_limit,
                &g.hold_seconds,
            ],
        )
        .await?;
    tx.commit().await?;
    Ok(Goods::from_row(&row))
}

/// Deletes (soft) a goods of `organizer_id` that holds no live booking.
///
/// # Errors
/// `GoodsNotFound`, `Forbidden`, `GoodsHasBookings`, or a database failure.
pub async fn delete_goods(pool: &Pool, id: i64, organizer_id: i64) -> Result<(), ApiError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    lock_own_goods(&tx, id, organizer_id).await?;
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT EXISTS (SELECT 1 FROM bookings WHERE goods_id = $1 AND status IN {})",
            shared::live_statuses!()
        ))
        .await?;
    let live: bool = tx.query_one(&stmt, &[&id]).await?.get(0);
    if live {
        return Err(ApiError::GoodsHasBookings);
    }
    let stmt = tx
        .prepare_cached("UPDATE goods SET deleted_at = now(), deleted_by = $2 WHERE id = $1")
        .await?;
    tx.execute(&stmt, &[&id, &organizer_id]).await?;
    tx.commit().await?;
    Ok(())
}

/// The limits the booking path checks (cache miss only).
///
/// # Errors
/// A database failure.
pub async fn goods_limits(pool: &Pool, id: i64) -> Result<Option<GoodsLimits>, ApiError> {
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached(
            "SELECT max_per_booking, sale_opens_at, sale_closes_at FROM goods \
             WHERE id = $1 AND deleted_at IS NULL",
        )
        .await?;
    Ok(client
        .query_opt(&stmt, &[&id])
        .await?
        .map(|row| GoodsLimits {
            max_per_booking: row.get(0),
            sale_opens_at: row.get(1),
            sale_closes_at: row.get(2),
        }))
}

/// A request's decision as the log holds it, its words as written: a poll must be
/// answered even when a newer build wrote a status or reason this one does not know
/// (a rolling upgrade updates workers first). A booking request's status is its
/// booking's now (promoted, cancelled).
#[derive(Debug)]
pub struct DecisionAsWritten {
    pub user_id: i64,
    pub goods_id: i64,
    pub kind: String,
    pub quantity: i32,
    pub status: String,
    pub reason: Option<String>,
    pub booking_id: Option<i64>,
    pub promoted_at_ms: Option<i64>,
    pub hold_expires_at_ms: Option<i64>,
}

/// # Errors
/// A database failure.
pub async fn decision_as_written(
    pool: &Pool,
    request_id: Uuid,
) -> Result<Option<DecisionAsWritten>, ApiError> {
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached(&format!(
            "SELECT r.user_id, r.goods_id, r.quantity, \
               CASE WHEN r.kind = 'book' AND r.decision IN {live} AND b.status IS NOT NULL \
                 THEN b.status ELSE r.decision END, \
               r.reason, r.booking_id, r.kind, \
               CASE WHEN r.kind = 'book' \
                 THEN floor(extract(epoch FROM b.promoted_at) * 1000)::int8 END, \
               CASE WHEN r.kind = 'book' \
                 THEN round(extract(epoch FROM b.hold_expires_at) * 1000)::int8 END \
             FROM booking_requests r LEFT JOIN bookings b ON b.id = r.booking_id \
             WHERE r.request_id = $1",
            live = shared::live_statuses!()
        ))
        .await?;
    let Some(row) = client.query_opt(&stmt, &[&request_id]).await? else {
        return Ok(None);
    };
    Ok(Some(DecisionAsWritten {
        user_id: row.try_get(0)?,
        goods_id: row.try_get(1)?,
        quantity: row.try_get(2)?,
        status: row.try_get(3)?,
        reason: row.try_get(4)?,
        booking_id: row.try_get(5)?,
        kind: row.try_get(6)?,
        promoted_at_ms: row.try_get(7)?,
        hold_expires_at_ms: row.try_get(8)?,
    }))
}

/// The waitlist place of the waitlisted booking `b`: 1 + the waitlisted bookings of its
/// goods ahead of it (counted on the index `bookings_waitlist`).
const WAITLIST_PLACE: &str = "1 + (SELECT count(*) FROM bookings w \
     WHERE w.goods_id = b.goods_id AND w.status = 'waitlisted' AND w.position < b.position)";

/// A booking's place in its goods' waitlist (1 = next in line) while it is waitlisted;
/// `None` once it is not. Bounded by `bound` as a whole (the pool, the statements), and
/// the count by the server too (`statement_timeout` for its transaction), so a count
/// given up on here does not run on and hold up the connection's next user.
///
/// # Errors
/// A database failure, or no answer within `bound`.
pub async fn waitlist_position(
    pool: &Pool,
    booking_id: i64,
    bound: std::time::Duration,
) -> Result<Option<i64>, ApiError> {
    let read = async {
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(&format!(
            "SET LOCAL statement_timeout = {}",
            bound.as_millis().max(1)
        ))
        .await?;
        let stmt = tx
            .prepare_cached(&format!(
                "SELECT {WAITLIST_PLACE} FROM bookings b \
                 WHERE b.id = $1 AND b.status = 'waitlisted'"
            ))
            .await?;
        let place = tx
            .query_opt(&stmt, &[&booking_id])
            .await?
            .map(|row| row.try_get(0))
            .transpose()?;
        tx.commit().await?;
        Ok(place)
    };
    tokio::time::timeout(bound, read)
        .await
        .map_err(|elapsed| ApiError::DatabaseUnavailable(Box::new(elapsed)))?
}

/// One of a user's bookings, as `GET /api/me/bookings` lists it.
#[derive(Debug)]
pub struct MyBooking {
    pub id: i64,
    pub request_id: Uuid,
    pub goods_id: i64,
    pub goods_title: String,
    pub quantity: i32,
    /// As written (a newer build's word is passed on).
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub promoted_at: Option<DateTime<Utc>>,
    pub hold_expires_at: Option<DateTime<Utc>>,
    /// While waitlisted: 1 + the waitlisted bookings of the goods ahead of it.
    pub waitlist_position: Option<i64>,
}

/// The user's bookings with ids below `before` (all when `None`), newest first, at
/// most `limit` (index `bookings_by_user`; a waitlist place's position is counted on
/// `bookings_waitlist`).
///
/// # Errors
/// A database failure.
pub async fn my_bookings(
    pool: &Pool,
    user_id: i64,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<MyBooking>, ApiError> {
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached(&format!(
            "SELECT b.id, b.request_id, b.goods_id, g.title, b.quantity, b.status, \
               b.created_at, b.promoted_at, b.hold_expires_at, \
               CASE WHEN b.status = 'waitlisted' THEN {WAITLIST_PLACE} END \
             FROM bookings b JOIN goods g ON g.id = b.goods_id \
             WHERE b.user_id = $1 AND ($2::int8 IS NULL OR b.id < $2) \
             ORDER BY b.id DESC LIMIT $3"
        ))
        .await?;
    client
        .query(&stmt, &[&user_id, &before, &limit])
        .await?
        .iter()
        .map(|r| {
            Ok(MyBooking {
                id: r.try_get(0)?,
                request_id: r.try_get(1)?,
                goods_id: r.try_get(2)?,
                goods_title: r.try_get(3)?,
                quantity: r.try_get(4)?,
                status: r.try_get(5)?,
                created_at: r.try_get(6)?,
                promoted_at: r.try_get(7)?,
                hold_expires_at: r.try_get(8)?,
                waitlist_position: r.try_get(9)?,
            })
        })
        .collect()
}
