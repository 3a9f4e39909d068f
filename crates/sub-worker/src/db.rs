//! Every SQL statement the worker runs.
//!
//! A batch is decided in one transaction with a fixed number of set-based statements,
//! whatever its size, each in a function named for its step:
//! [`check_fence`], [`find_decided`], then for the requests not decided yet
//! [`lock_goods`] (in id order, so two transactions can never deadlock),
//! [`read_bookings`] (the batch users' live places and, for goods with a cancel in
//! the batch, the head of the waitlist), [`read_live_users`], the pure decision rule
//! ([`crate::decide`]), [`update_bookings`] (promotions and cancels of bookings made
//! before; only when there are any), [`bump_counters`], [`write_decisions`] (new
//! bookings and the decision log in one statement) and [`record_limit_changes`] (only
//! when there are any).

use std::collections::{HashMap, HashSet};

use deadpool_postgres::{Pool, Transaction};
use shared::{
    decision::{Decision, DecisionRow, RejectReason, RequestKind, RequestStatus},
    live_statuses,
    shard::{FenceToken, Shard},
    stream::{storable_text, BookingRequestV1, DeadLetter, Entry, StatusRecord},
};
use uuid::Uuid;

use crate::{
    decide::{self, Ask, Booking, Decided, GoodsState},
    error::WorkerError,
};

/// The decision on one request of a batch, new or found already committed, as its
/// owner is to see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub status: StatusRecord,
    /// Whether this transaction made the decision (false: it was committed earlier and
    /// the entry is a redelivery).
    pub new: bool,
}

/// A request of the batch with the entry it came from.
struct Fresh<'a> {
    entry: &'a Entry,
    request: &'a BookingRequestV1,
}

/// Takes a new fencing token for a shard. Every later acquisition gets a larger one.
/// Waits at most `lock_wait` for the fence row: a batch of the previous owner that is
/// still open holds it (`FOR SHARE`) until it commits or its session is ended.
///
/// # Errors
/// The database is unavailable, or the row stayed locked for `lock_wait`.
pub async fn acquire_fence(
    pool: &Pool,
    shard: Shard,
    owner: &str,
    lock_wait: std::time::Duration,
) -> Result<FenceToken, WorkerError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = {}",
        lock_wait.as_millis().max(1)
    ))
    .await?;
    let stmt = tx
        .prepare_cached(
            "INSERT INTO shard_fences (shard, fence, owner) VALUES ($1, 1, $2) \
             ON CONFLICT (shard) DO UPDATE \
             SET fence = shard_fences.fence + 1, owner = EXCLUDED.owner, acquired_at = clock_timestamp() \
             RETURNING fence",
        )
        .await?;
    let fence: i64 = tx
        .query_one(&stmt, &[&shard.as_i32(), &owner])
        .await?
        .get(0);
    tx.commit().await?;
    FenceToken::new(fence).map_err(|e| WorkerError::UnexpectedValue(Box::new(e)))
}

/// Decides and commits one batch of one shard, in stream order. Returns a decision for
/// every entry (deduplicated by request id), new or already committed, then the new
/// status of every earlier booking request the batch changed (promoted, cancelled).
///
/// # Errors
/// `Fenced` if another worker has taken the shard since `fence` was issued; database
/// errors otherwise (nothing is committed then).
pub async fn commit_batch(
    pool: &Pool,
    shard: Shard,
    fence: FenceToken,
    entries: &[Entry],
    stall: Option<std::time::Duration>,
) -> Result<Vec<Committed>, WorkerError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    check_fence(&tx, shard, fence).await?;
    if let Some(stall) = stall {
        tracing::warn!(
            ?stall,
            "crash point stall_in_transaction: holding the transaction"
        );
        tokio::time::sleep(stall).await;
    }

    let mut seen = HashSet::new();
    let requests: Vec<Fresh<'_>> = entries
        .iter()
        .map(|entry| Fresh {
            entry,
            request: entry.message.request(),
        })
        .filter(|f| seen.insert(f.request.request_id))
        .collect();
    let ids: Vec<Uuid> = requests.iter().map(|f| f.request.request_id).collect();
    let mut earlier = find_decided(&tx, &ids).await?;
    // A cancel or a limit change found decided was committed by a worker that may have
    // died before writing the statuses it changed: write them again, as they are now.
    let redelivered_cancels: Vec<Uuid> = earlier
        .values()
        .filter(|row| row.kind != RequestKind::Book)
        .map(|row| row.request_id)
        .collect();
    let changed_before = if redelivered_cancels.is_empty() {
        Vec::new()
    } else {
        read_changed_by(&tx, &redelivered_cancels).await?
    };
    let fresh: Vec<&Fresh<'_>> = requests
        .iter()
        .filter(|f| !earlier.contains_key(&f.request.request_id))
        .collect();
    let mut decided = if fresh.is_empty() {
        HashMap::new()
    } else {
        decide_fresh(&tx, shard, &fresh).await?
    };
    tx.commit().await?;

    let mut out: Vec<Committed> = requests
        .iter()
        .filter_map(|f| {
            let id = f.request.request_id;
            match earlier.remove(&id) {
                Some(row) => Some(Committed {
                    status: StatusRecord::decided(&row),
                    new: false,
                }),
                None => decided
                    .remove(&id)
                    .map(|status| Committed { status, new: true }),
            }
        })
        .collect();
    // Bookings a redelivered cancel changed, as read before this batch's decisions:
    // one of those that this batch changed again is written as it ends (below), and
    // only once, so that no stale copy follows it in the settle.
    let in_batch: HashSet<Uuid> = requests.iter().map(|f| f.request.request_id).collect();
    out.extend(changed_before.iter().filter_map(|b| {
        if in_batch.contains(&b.request_id) || decided.contains_key(&b.request_id) {
            return None;
        }
        Some(Committed {
            status: booking_status(b, b.booking_id?),
            new: false,
        })
    }));
    // What is left: earlier requests whose bookings this batch changed.
    out.extend(
        decided
            .into_values()
            .map(|status| Committed { status, new: true }),
    );
    Ok(out)
}

/// Records a request whose entry is being dead-lettered as decided `rejected` /
/// `unprocessable`, in a fenced transaction like every other decision: final, visible
/// once its Redis status has expired, and never decided again by a retry or a reclaim.
/// It takes no turn in its goods' order (no position). Only values PostgreSQL cannot
/// refuse are written: an acceptance time it cannot store becomes the time of this
/// decision (the original stays in the dead letter). Returns the request's status as
/// the log now holds it (a decision made meanwhile by someone else stands).
///
/// # Errors
/// `Fenced` if another worker has taken the shard; database errors otherwise.
pub async fn record_dead_letter(
    pool: &Pool,
    shard: Shard,
    fence: FenceToken,
    entry: &Entry,
    letter: &DeadLetter,
) -> Result<StatusRecord, WorkerError> {
    let mut client = pool.get().await?;
    let mut tx = client.transaction().await?;
    tx.batch_execute(DEAD_LETTER_BOUNDS).await?;
    check_fence(&tx, shard, fence).await?;
    let r = entry.message.request();
    let decision = Decision::Rejected(RejectReason::Unprocessable);
    let stmt = tx
        .prepare_cached(
            "INSERT INTO booking_requests (request_id, goods_id, user_id, quantity, shard, \
               stream_id, stream_ms, stream_seq, position, decision, reason, booking_id, accepted_at, kind) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, $9, $10, NULL, \
               CASE WHEN $11::int8 BETWEEN 0 AND 8000000000000000 \
                    THEN to_timestamp($11::int8 / 1000.0) ELSE now() END, $12) \
             ON CONFLICT (request_id) DO NOTHING",
        )
        .await?;
    let inserted = tx
        .execute(
            &stmt,
            &[
                &r.request_id,
                &r.goods_id,
                &r.user_id,
                &r.quantity,
                &shard.as_i32(),
                &entry.id.to_string(),
                &entry.id.ms,
                &entry.id.seq,
                &decision.status().as_str(),
                &decision.reason().map(RejectReason::as_str),
                &r.accepted_at_ms,
                &entry.message.kind().as_str(),
            ],
        )
        .await?;
    // Only a decision made here is a dead letter: one made before (by another batch)
    // stands, and is not one.
    if inserted == 1 {
        insert_dead_letter(&mut tx, shard, letter).await?;
    }
    let logged = find_decided(&tx, &[r.request_id]).await?;
    tx.commit().await?;
    logged
        .get(&r.request_id)
        .map(StatusRecord::decided)
        .ok_or_else(|| WorkerError::UnexpectedValue("the dead letter's decision is missing".into()))
}

/// Records dead letters of entries that do not decode (no decision-log row: they name
/// no request this build can decide) in `dead_letters`, in one fenced transaction,
/// before they are acknowledged. Recording one twice (a retry, or the next owner
/// reading the entry again) keeps the first.
///
/// # Errors
/// `Fenced` if another worker has taken the shard; database errors otherwise.
pub async fn record_undecodable(
    pool: &Pool,
    shard: Shard,
    fence: FenceToken,
    letters: &[&DeadLetter],
) -> Result<(), WorkerError> {
    let mut client = pool.get().await?;
    let mut tx = client.transaction().await?;
    tx.batch_execute(DEAD_LETTER_BOUNDS).await?;
    check_fence(&tx, shard, fence).await?;
    for letter in letters {
        insert_dead_letter(&mut tx, shard, letter).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// How much of a dead letter its row keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    /// The reason and the fields (each cut to `MAX_STORED_FIELD_BYTES`).
    Whole,
    /// No fields and an ASCII reason: what is written once PostgreSQL has refused the
    /// whole row, so that no entry can stall its shard (the Redis copy keeps it all).
    Minimal,
}

/// A dead letter's transaction waits at most this long for a row lock (an operator's
/// `dlq` command holding the same letter's row): a lock timeout is retried.
const DEAD_LETTER_BOUNDS: &str = "SET LOCAL lock_timeout = '5s'";

/// One row of `dead_letters` (migration V10); nothing if the entry has one already.
/// Tried whole under a savepoint; should PostgreSQL refuse the row itself (a value it
/// cannot store: SQLSTATE class 22, 23 or 54), this letter alone is recorded
/// `Stored::Minimal`, which it cannot refuse: no letter stalls its shard, and none
/// costs another its fields.
async fn insert_dead_letter(
    tx: &mut Transaction<'_>,
    shard: Shard,
    letter: &DeadLetter,
) -> Result<(), WorkerError> {
    let attempt = tx.savepoint("dead_letter").await?;
    match insert_dead_letter_row(&attempt, shard, letter, Stored::Whole).await {
        Ok(()) => Ok(attempt.commit().await?),
        Err(e) if refuses_the_row(&e) => {
            tracing::warn!(source_id = %letter.source_id, error = %e, "dead letter recorded without its fields: PostgreSQL refused them");
            attempt.rollback().await?;
            Ok(insert_dead_letter_row(tx, shard, letter, Stored::Minimal).await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether PostgreSQL refused a dead letter's row for what it holds.
fn refuses_the_row(e: &tokio_postgres::Error) -> bool {
    e.code()
        .and_then(|code| code.code().get(..2))
        .is_some_and(|class| matches!(class, "22" | "23" | "54"))
}

async fn insert_dead_letter_row(
    tx: &Transaction<'_>,
    shard: Shard,
    letter: &DeadLetter,
    stored: Stored,
) -> Result<(), tokio_postgres::Error> {
    let (reason, fields) = match stored {
        Stored::Whole => (letter.stored_reason(), letter.fields_json()),
        Stored::Minimal => (
            "dead letter whose reason and fields PostgreSQL refused to store (see the \
             Redis dead-letter stream)"
                .to_owned(),
            "{}".to_owned(),
        ),
    };
    let stmt = tx
        .prepare_cached(
            "INSERT INTO dead_letters (shard, source_id, reason, fields, request_id) \
             VALUES ($1, $2, $3, $4::text::jsonb, $5) ON CONFLICT (shard, source_id) DO NOTHING",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &shard.as_i32(),
            &storable_text(&letter.source_id),
            &reason,
            &fields,
            &letter.request_id,
        ],
    )
    .await?;
    Ok(())
}

/// Decides the requests not decided before, in order, and writes everything. Returns
/// the status of each of them, and of every earlier request whose booking changed.
async fn decide_fresh(
    tx: &Transaction<'_>,
    shard: Shard,
    fresh: &[&Fresh<'_>],
) -> Result<HashMap<Uuid, StatusRecord>, WorkerError> {
    let mut goods_ids: Vec<i64> = fresh.iter().map(|f| f.request.goods_id).collect();
    goods_ids.sort_unstable();
    goods_ids.dedup();
    let (mut goods, now_ms) = lock_goods(tx, &goods_ids).await?;
    // Without any goods there is nothing to promote or cancel.
    let now_ms = now_ms.unwrap_or_default();
    let before = goods.clone();
    let read = read_bookings(tx, fresh, &goods).await?;
    let user_ids: Vec<i64> = fresh.iter().map(|f| f.request.user_id).collect();
    let live_users = read_live_users(tx, &user_ids).await?;
    let asks: Vec<Ask> = fresh
        .iter()
        .map(|f| Ask {
            request_id: f.request.request_id,
            kind: f.entry.message.kind(),
            goods_id: f.request.goods_id,
            user_id: f.request.user_id,
            quantity: f.request.quantity,
            arrived_ms: f.entry.id.ms,
        })
        .collect();
    let decided = decide::decide(&asks, &mut goods, &read, &live_users, now_ms);
    update_bookings(tx, &decided, now_ms).await?;
    bump_counters(tx, &before, &goods).await?;
    let booking_ids = write_decisions(tx, shard, fresh, &decided, now_ms).await?;
    record_limit_changes(tx, fresh, &decided).await?;

    let mut out: HashMap<Uuid, StatusRecord> = fresh
        .iter()
        .zip(&decided.verdicts)
        .map(|(f, v)| {
            let r = f.request;
            let booking = v.booking.and_then(|id| decided.bookings.get(&id));
            let own = booking.filter(|b| b.request_id == r.request_id);
            let status = StatusRecord {
                request_id: r.request_id,
                user_id: r.user_id,
                goods_id: r.goods_id,
                // A cancel: the seats (or places) it released.
                quantity: booking.map_or(r.quantity, |b| b.quantity),
                kind: f.entry.message.kind(),
                status: own.map_or(v.decision.status(), status_of),
                reason: v.decision.reason(),
                booking_id: v.booking.and_then(|id| {
                    booking_ids
                        .get(&id)
                        .copied()
                        .or_else(|| booking.and_then(|b| b.booking_id))
                }),
                promoted_at_ms: own.and_then(|b| b.promoted_at_ms),
                hold_expires_at_ms: own.and_then(|b| b.hold_expires_at_ms),
            };
            (r.request_id, status)
        })
        .collect();
    for b in decided.bookings.values() {
        if out.contains_key(&b.request_id) {
            continue;
        }
        if let Some(booking_id) = b
            .booking_id
            .or_else(|| booking_ids.get(&b.request_id).copied())
        {
            out.insert(b.request_id, booking_status(b, booking_id));
        }
    }
    Ok(out)
}

fn status_of(b: &Booking) -> RequestStatus {
    b.status.request_status()
}

/// The status of the booking request that made booking `b` (row `booking_id`).
fn booking_status(b: &Booking, booking_id: i64) -> StatusRecord {
    StatusRecord {
        request_id: b.request_id,
        user_id: b.user_id,
        goods_id: b.goods_id,
        quantity: b.quantity,
        kind: RequestKind::Book,
        status: status_of(b),
        reason: None,
        booking_id: Some(booking_id),
        promoted_at_ms: b.promoted_at_ms,
        hold_expires_at_ms: b.hold_expires_at_ms,
    }
}

/// The bookings the given requests (cancels, limit changes, confirms, expiries)
/// released, promoted, confirmed or expired, as they are now.
async fn read_changed_by(
    tx: &Transaction<'_>,
    request_ids: &[Uuid],
) -> Result<Vec<Booking>, WorkerError> {
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT {BOOKING_COLUMNS} FROM bookings b \
             WHERE b.cancel_request_id = ANY($1) OR b.promoted_by = ANY($1) \
                OR b.hold_ended_by = ANY($1)"
        ))
        .await?;
    tx.query(&stmt, &[&request_ids])
        .await?
        .iter()
        .map(booking_from_row)
        .collect()
}

/// Fails with `Fenced` unless `fence` is still the shard's current token. `FOR SHARE`
/// holds the row until COMMIT, so a new owner's `acquire_fence` waits for this batch,
/// and a batch that starts after it sees the new token.
async fn check_fence(
    tx: &Transaction<'_>,
    shard: Shard,
    fence: FenceToken,
) -> Result<(), WorkerError> {
    let stmt = tx
        .prepare_cached("SELECT fence FROM shard_fences WHERE shard = $1 FOR SHARE")
        .await?;
    let current: Option<i64> = tx
        .query_opt(&stmt, &[&shard.as_i32()])
        .await?
        .map(|r| r.get(0));
    if current == Some(fence.get()) {
        Ok(())
    } else {
        Err(WorkerError::Fenced { shard, ours: fence })
    }
}

/// Requests of the batch already decided (a redelivery after a crash between COMMIT
/// and XACK, or an idempotent retry), by request id.
async fn find_decided(
    tx: &Transaction<'_>,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, DecisionRow>, WorkerError> {
    let stmt = tx
        .prepare_cached(&format!(
            "{} WHERE r.request_id = ANY($1)",
            DecisionRow::SELECT
        ))
        .await?;
    tx.query(&stmt, &[&ids])
        .await?
        .iter()
        .map(|r| {
            let row = DecisionRow::from_row(r)?;
            Ok((row.request_id, row))
        })
        .collect()
}

/// Locks the goods rows of the batch (id order) and reads their seats and counters.
/// A goods that no longer exists is absent.
/// Also returns the transaction's time (PostgreSQL's `now()`, Unix ms; `None` when
/// no goods exists), which promotions and cancels record.
async fn lock_goods(
    tx: &Transaction<'_>,
    goods_ids: &[i64],
) -> Result<(HashMap<i64, GoodsState>, Option<i64>), WorkerError> {
    let stmt = tx
        .prepare_cached(
            "SELECT id, booking_limit, booked_count, max_per_booking, decided_count, \
                    floor(extract(epoch FROM sale_opens_at) * 1000)::int8, \
                    floor(extract(epoch FROM sale_closes_at) * 1000)::int8, \
                    floor(extract(epoch FROM now()) * 1000)::int8, \
                    waitlisted_count, waitlist_limit, hold_seconds \
             FROM goods WHERE id = ANY($1) AND deleted_at IS NULL ORDER BY id FOR UPDATE",
        )
        .await?;
    let rows = tx.query(&stmt, &[&goods_ids]).await?;
    let now_ms = rows.first().map(|r| r.get(7));
    let goods = rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                GoodsState {
                    booking_limit: r.get(1),
                    booked: r.get(2),
                    waitlisted: r.get(8),
                    waitlist_limit: r.get(9),
                    hold_ms: i64::from(r.get::<_, i32>(10)) * 1000,
                    max_per_booking: r.get(3),
                    decided: r.get(4),
                    sale_opens_ms: r.get(5),
                    sale_closes_ms: r.get(6),
                },
            )
        })
        .collect();
    Ok((goods, now_ms))
}

/// The columns [`booking_from_row`] reads, of `bookings b`.
const BOOKING_COLUMNS: &str = "b.request_id, b.id, b.goods_id, b.user_id, b.quantity, \
     b.position, b.status, floor(extract(epoch FROM b.promoted_at) * 1000)::int8, \
     b.promoted_by, b.cancel_request_id, \
     round(extract(epoch FROM b.hold_expires_at) * 1000)::int8, b.hold_ended_by";

fn booking_from_row(r: &tokio_postgres::Row) -> Result<Booking, WorkerError> {
    let status: &str = r.try_get(6)?;
    Ok(Booking {
        request_id: r.try_get(0)?,
        booking_id: Some(r.try_get(1)?),
        goods_id: r.try_get(2)?,
        user_id: r.try_get(3)?,
        quantity: r.try_get(4)?,
        position: r.try_get(5)?,
        status: status
            .parse()
            .map_err(|e| WorkerError::UnexpectedValue(Box::new(e)))?,
        promoted_at_ms: r.try_get(7)?,
        promoted_by: r.try_get(8)?,
        cancelled_by: r.try_get(9)?,
        hold_expires_at_ms: r.try_get(10)?,
        hold_ended_by: r.try_get(11)?,
    })
}

/// The bookings the batch may touch: the live place of each of its `(goods, user)`
/// pairs and, for every goods the batch cancels a booking of, the head of its
/// waitlist that promotions can reach ([`decide::waitlist_heads`]).
async fn read_bookings(
    tx: &Transaction<'_>,
    fresh: &[&Fresh<'_>],
    goods: &HashMap<i64, GoodsState>,
) -> Result<Vec<Booking>, WorkerError> {
    let goods_ids: Vec<i64> = fresh.iter().map(|f| f.request.goods_id).collect();
    let users: Vec<i64> = fresh.iter().map(|f| f.request.user_id).collect();
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT {BOOKING_COLUMNS} FROM bookings b \
             JOIN unnest($1::int8[], $2::int8[]) AS x(goods_id, user_id) \
               ON b.goods_id = x.goods_id AND b.user_id = x.user_id \
             WHERE b.status IN {live}",
            live = live_statuses!()
        ))
        .await?;
    let mut read = tx
        .query(&stmt, &[&goods_ids, &users])
        .await?
        .iter()
        .map(booking_from_row)
        .collect::<Result<Vec<_>, _>>()?;

    // Per goods that may promote: the requests that may release a booking's seats
    // (cancels, confirms and expiries ending a hold) and the highest limit set.
    let mut releases: HashMap<i64, (usize, i32)> = HashMap::new();
    for f in fresh {
        let goods = f.request.goods_id;
        match f.entry.message.kind() {
            RequestKind::Cancel | RequestKind::Confirm | RequestKind::Expire => {
                releases.entry(goods).or_default().0 += 1;
            }
            RequestKind::Limit => {
                let top = &mut releases.entry(goods).or_default().1;
                *top = (*top).max(f.request.quantity);
            }
            RequestKind::Book => {}
        }
    }
    let (mut head_goods, mut head_quantity, mut head_count) = (Vec::new(), Vec::new(), Vec::new());
    for (goods_id, (cancels, top_limit)) in &releases {
        let Some(state) = goods.get(goods_id) else {
            continue;
        };
        let largest = read
            .iter()
            .filter(|b| b.goods_id == *goods_id)
            .map(|b| b.quantity)
            .fold(state.max_per_booking, i32::max);
        for (quantity, count) in decide::waitlist_heads(state, *cancels, largest, *top_limit) {
            head_goods.push(*goods_id);
            head_quantity.push(quantity);
            head_count.push(count);
        }
    }
    if !head_goods.is_empty() {
        let stmt = tx
            .prepare_cached(&format!(
                "SELECT {BOOKING_COLUMNS} \
                 FROM unnest($1::int8[], $2::int4[], $3::int8[]) AS x(goods_id, quantity, n) \
                 CROSS JOIN LATERAL ( \
                   SELECT * FROM bookings w \
                   WHERE w.goods_id = x.goods_id AND w.quantity = x.quantity \
                     AND w.status = 'waitlisted' \
                   ORDER BY w.position LIMIT x.n) b"
            ))
            .await?;
        let mut seen: HashSet<Uuid> = read.iter().map(|b| b.request_id).collect();
        for row in tx
            .query(&stmt, &[&head_goods, &head_quantity, &head_count])
            .await?
        {
            let booking = booking_from_row(&row)?;
            if seen.insert(booking.request_id) {
                read.push(booking);
            }
        }
    }
    Ok(read)
}

/// The users of the batch that still exist.
async fn read_live_users(
    tx: &Transaction<'_>,
    user_ids: &[i64],
) -> Result<HashSet<i64>, WorkerError> {
    let stmt = tx
        // Not `AND deleted_at IS NULL`: with no statistics (autovacuum off, as on the
        // test machines) the planner matched that to the partial unique indexes on
        // users (`WHERE deleted_at IS NULL`) and read one whole, 150 ms per batch at
        // 300,000 users, even planned for the batch's values. By id alone the only
        // index is the primary key.
        .prepare_cached("SELECT id, deleted_at IS NULL FROM users WHERE id = ANY($1)")
        .await?;
    Ok(tx
        .query(&stmt, &[&user_ids])
        .await?
        .iter()
        .filter(|r| r.get::<_, bool>(1))
        .map(|r| r.get(0))
        .collect())
}

/// Writes what the batch changed of bookings made before it (promotions, cancels), in
/// one statement; nothing when it changed none. Runs before the new bookings are
/// written: a user who cancels and books again within one batch holds one live
/// booking at every moment.
async fn update_bookings(
    tx: &Transaction<'_>,
    decided: &Decided,
    now_ms: i64,
) -> Result<(), WorkerError> {
    let changed: Vec<(i64, &Booking)> = decided
        .bookings
        .values()
        .filter_map(|b| b.booking_id.map(|id| (id, b)))
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = changed.iter().map(|(id, _)| *id).collect();
    let statuses: Vec<&str> = changed.iter().map(|(_, b)| b.status.as_str()).collect();
    let promoted_by: Vec<Option<Uuid>> = changed.iter().map(|(_, b)| b.promoted_by).collect();
    let cancels: Vec<Option<Uuid>> = changed.iter().map(|(_, b)| b.cancelled_by).collect();
    let holds: Vec<Option<i64>> = changed.iter().map(|(_, b)| b.hold_expires_at_ms).collect();
    let hold_ends: Vec<Option<Uuid>> = changed.iter().map(|(_, b)| b.hold_ended_by).collect();
    let stmt = tx
        .prepare_cached(
            "UPDATE bookings b SET status = u.status, \
               promoted_at = CASE WHEN b.promoted_by IS DISTINCT FROM u.promoted_by \
                 THEN to_timestamp($5::int8 / 1000.0) ELSE b.promoted_at END, \
               promoted_by = u.promoted_by, \
               cancelled_at = CASE WHEN u.cancel_request IS NOT NULL \
                 THEN COALESCE(b.cancelled_at, to_timestamp($5::int8 / 1000.0)) END, \
               cancelled_by = CASE WHEN u.cancel_request IS NOT NULL THEN b.user_id END, \
               cancel_request_id = u.cancel_request, \
               hold_expires_at = COALESCE(b.hold_expires_at, to_timestamp(u.hold_expires / 1000.0)), \
               hold_ended_at = CASE WHEN u.hold_ended_by IS NOT NULL \
                 THEN COALESCE(b.hold_ended_at, to_timestamp($5::int8 / 1000.0)) END, \
               hold_ended_by = u.hold_ended_by \
             FROM unnest($1::int8[], $2::text[], $3::uuid[], $4::uuid[], $6::int8[], $7::uuid[]) \
               AS u(id, status, promoted_by, cancel_request, hold_expires, hold_ended_by) \
             WHERE b.id = u.id",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &ids,
            &statuses,
            &promoted_by,
            &cancels,
            &now_ms,
            &holds,
            &hold_ends,
        ],
    )
    .await?;
    Ok(())
}

/// Writes every booking the batch made (in its final state: one promoted or cancelled
/// within the batch is written so) and a decision-log row for every request, in one
/// statement; returns the booking id each logged request names (its booking, or for a
/// cancel the booking it released). Only the two ids come back: this statement runs
/// once per batch on the hot path of deciding.
async fn write_decisions(
    tx: &Transaction<'_>,
    shard: Shard,
    fresh: &[&Fresh<'_>],
    decided: &Decided,
    now_ms: i64,
) -> Result<HashMap<Uuid, i64>, WorkerError> {
    let verdicts = &decided.verdicts;
    let col = |f: fn(&Fresh<'_>) -> i64| fresh.iter().map(|e| f(e)).collect::<Vec<i64>>();
    let request_ids: Vec<Uuid> = fresh.iter().map(|f| f.request.request_id).collect();
    let stream_ids: Vec<String> = fresh.iter().map(|f| f.entry.id.to_string()).collect();
    let kinds: Vec<&str> = fresh
        .iter()
        .map(|f| f.entry.message.kind().as_str())
        .collect();
    let decisions: Vec<&str> = verdicts
        .iter()
        .map(|v| v.decision.status().as_str())
        .collect();
    let reasons: Vec<Option<&str>> = verdicts
        .iter()
        .map(|v| v.decision.reason().map(|r| r.as_str()))
        .collect();
    let positions: Vec<Option<i64>> = verdicts.iter().map(|v| v.position).collect();
    // The booking each request made (new, in its final state) or released.
    let booking = |i: usize| verdicts[i].booking.and_then(|id| decided.bookings.get(&id));
    let own = |i: usize| booking(i).filter(|b| b.request_id == request_ids[i]);
    let n = fresh.len();
    let quantities: Vec<i32> = (0..n)
        .map(|i| booking(i).map_or(fresh[i].request.quantity, |b| b.quantity))
        .collect();
    let booking_statuses: Vec<Option<&str>> =
        (0..n).map(|i| own(i).map(|b| b.status.as_str())).collect();
    let promoted: Vec<Option<Uuid>> = (0..n).map(|i| own(i).and_then(|b| b.promoted_by)).collect();
    let cancels: Vec<Option<Uuid>> = (0..n)
        .map(|i| own(i).and_then(|b| b.cancelled_by))
        .collect();
    let holds: Vec<Option<i64>> = (0..n)
        .map(|i| own(i).and_then(|b| b.hold_expires_at_ms))
        .collect();
    let hold_ends: Vec<Option<Uuid>> = (0..n)
        .map(|i| own(i).and_then(|b| b.hold_ended_by))
        .collect();
    let released = |i: usize| booking(i).filter(|b| b.request_id != request_ids[i]);
    let targets: Vec<Option<Uuid>> = (0..n).map(|i| released(i).map(|b| b.request_id)).collect();
    let target_ids: Vec<Option<i64>> = (0..n)
        .map(|i| released(i).and_then(|b| b.booking_id))
        .collect();
    let stmt = tx
        .prepare_cached(
            "WITH input AS ( \
               SELECT * FROM unnest($1::uuid[], $2::int8[], $3::int8[], $4::int4[], $5::text[], \
                                    $6::int8[], $7::int8[], $8::text[], $9::text[], $10::int8[], \
                                    $11::int8[], $13::text[], $14::text[], $15::uuid[], \
                                    $16::uuid[], $17::uuid[], $18::int8[], $20::int8[], \
                                    $21::uuid[]) \
               AS t(request_id, goods_id, user_id, quantity, stream_id, stream_ms, stream_seq, \
                    decision, reason, position, accepted_ms, kind, booking_status, promoted_by, \
                    cancel_request, target, target_booking, hold_expires, hold_ended_by) \
             ), booked AS ( \
               INSERT INTO bookings (goods_id, user_id, request_id, quantity, status, position, \
                 promoted_at, promoted_by, cancelled_at, cancelled_by, cancel_request_id, \
                 hold_expires_at, hold_ended_at, hold_ended_by) \
               SELECT goods_id, user_id, request_id, quantity, booking_status, position, \
                 CASE WHEN promoted_by IS NOT NULL THEN to_timestamp($19::int8 / 1000.0) END, \
                 promoted_by, \
                 CASE WHEN cancel_request IS NOT NULL THEN to_timestamp($19::int8 / 1000.0) END, \
                 CASE WHEN cancel_request IS NOT NULL THEN user_id END, cancel_request, \
                 to_timestamp(hold_expires / 1000.0), \
                 CASE WHEN hold_ended_by IS NOT NULL THEN to_timestamp($19::int8 / 1000.0) END, \
                 hold_ended_by \
               FROM input WHERE booking_status IS NOT NULL \
               RETURNING id, request_id \
             ) \
             INSERT INTO booking_requests (request_id, goods_id, user_id, quantity, shard, stream_id, \
               stream_ms, stream_seq, position, decision, reason, booking_id, accepted_at, kind) \
             SELECT i.request_id, i.goods_id, i.user_id, i.quantity, $12, i.stream_id, i.stream_ms, \
               i.stream_seq, i.position, i.decision, i.reason, \
               COALESCE(b.id, t.id, i.target_booking), to_timestamp(i.accepted_ms / 1000.0), i.kind \
             FROM input i LEFT JOIN booked b ON b.request_id = i.request_id \
               LEFT JOIN booked t ON t.request_id = i.target \
             RETURNING request_id, booking_id",
        )
        .await?;
    let rows = tx
        .query(
            &stmt,
            &[
                &request_ids,
                &col(|f| f.request.goods_id),
                &col(|f| f.request.user_id),
                &quantities,
                &stream_ids,
                &col(|f| f.entry.id.ms),
                &col(|f| f.entry.id.seq),
                &decisions,
                &reasons,
                &positions,
                &col(|f| f.request.accepted_at_ms),
                &shard.as_i32(),
                &kinds,
                &booking_statuses,
                &promoted,
                &cancels,
                &targets,
                &target_ids,
                &now_ms,
                &holds,
                &hold_ends,
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| Some((r.get(0), r.get::<_, Option<i64>>(1)?)))
        .collect())
}

/// Records the limit each applied limit change replaced, in one statement; nothing
/// when the batch applied none (the common case: this is not on the booking path).
async fn record_limit_changes(
    tx: &Transaction<'_>,
    fresh: &[&Fresh<'_>],
    decided: &Decided,
) -> Result<(), WorkerError> {
    let (ids, before): (Vec<Uuid>, Vec<i32>) = fresh
        .iter()
        .zip(&decided.verdicts)
        .filter_map(|(f, v)| Some((f.request.request_id, v.limit_before?)))
        .unzip();
    if ids.is_empty() {
        return Ok(());
    }
    let stmt = tx
        .prepare_cached(
            "UPDATE booking_requests r SET limit_before = c.limit_before \
             FROM unnest($1::uuid[], $2::int4[]) AS c(request_id, limit_before) \
             WHERE r.request_id = c.request_id",
        )
        .await?;
    tx.execute(&stmt, &[&ids, &before]).await?;
    Ok(())
}

/// Adds what the batch took (seats, places, decisions) to each goods touched and sets
/// its limit, in one statement.
async fn bump_counters(
    tx: &Transaction<'_>,
    before: &HashMap<i64, GoodsState>,
    after: &HashMap<i64, GoodsState>,
) -> Result<(), WorkerError> {
    let mut ids = Vec::new();
    let mut booked = Vec::new();
    let mut waitlisted = Vec::new();
    let mut decided = Vec::new();
    let mut limits = Vec::new();
    for (id, now) in after {
        if let Some(was) = before.get(id) {
            if now.decided != was.decided {
                ids.push(*id);
                booked.push(now.booked - was.booked);
                waitlisted.push(now.waitlisted - was.waitlisted);
                decided.push(now.decided - was.decided);
                limits.push(now.booking_limit);
            }
        }
    }
    if ids.is_empty() {
        return Ok(());
    }
    // The limit is set to the batch's result: only the worker owning the goods'
    // shard changes it, with the row locked; maxPerBooking stays within it. The
    // waitlist counter never goes below 0: a worker from before it (during a rolling
    // upgrade) leaves it behind, and a count off by that must not refuse a decision
    // (the checker names the difference; the upgrade notes say how to recount).
    let stmt = tx
        .prepare_cached(
            "UPDATE goods g SET booked_count = g.booked_count + d.booked, \
               waitlisted_count = GREATEST(0, g.waitlisted_count + d.waitlisted), \
               decided_count = g.decided_count + d.decided, booking_limit = d.booking_limit, \
               max_per_booking = LEAST(g.max_per_booking, d.booking_limit) \
             FROM unnest($1::int8[], $2::int4[], $3::int4[], $4::int8[], $5::int4[]) \
               AS d(id, booked, waitlisted, decided, booking_limit) \
             WHERE g.id = d.id",
        )
        .await?;
    tx.execute(&stmt, &[&ids, &booked, &waitlisted, &decided, &limits])
        .await?;
    Ok(())
}

/// A hold past its deadline, as the expiry scan finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueHold {
    /// The booking request that made it.
    pub request_id: Uuid,
    pub goods_id: i64,
    pub user_id: i64,
}

/// How many holds past their deadline one scan of a shard sends expiries for; the
/// next scan takes the rest (those sent are left out until decided).
const HOLDS_PER_SCAN: i64 = 1_000;

/// Bounds of the expiry scan's statements: they must never wait on a lock (a
/// migration's) for long.
const SCAN_BOUNDS: &str = "SET LOCAL statement_timeout = '5s'; SET LOCAL lock_timeout = '2s'";

/// Holds of `shard`'s goods (of `shards`) whose deadline is at or before `now_ms`,
/// earliest first (index `bookings_holds_by_deadline`), leaving out `waiting` (holds
/// whose expiry is sent and undecided).
///
/// # Errors
/// The database is unavailable, or the statement outlived its bounds.
pub async fn holds_due(
    pool: &Pool,
    shard: Shard,
    shards: u32,
    now_ms: i64,
    waiting: &[Uuid],
) -> Result<Vec<DueHold>, WorkerError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.batch_execute(SCAN_BOUNDS).await?;
    let stmt = tx
        .prepare_cached(
            "SELECT request_id, goods_id, user_id FROM bookings \
             WHERE status = 'held' AND hold_expires_at <= to_timestamp($1::int8 / 1000.0) \
               AND mod(goods_id, $2::int8) = $3::int8 AND request_id <> ALL($5) \
             ORDER BY hold_expires_at LIMIT $4",
        )
        .await?;
    let due = tx
        .query(
            &stmt,
            &[
                &now_ms,
                &i64::from(shards),
                &i64::from(shard.as_i32()),
                &HOLDS_PER_SCAN,
                &waiting,
            ],
        )
        .await?
        .iter()
        .map(|r| DueHold {
            request_id: r.get(0),
            goods_id: r.get(1),
            user_id: r.get(2),
        })
        .collect();
    tx.commit().await?;
    Ok(due)
}

/// Which of `request_ids` the decision log holds.
///
/// # Errors
/// The database is unavailable, or the statement outlived its bounds.
pub async fn decided_among(
    pool: &Pool,
    request_ids: &[Uuid],
) -> Result<HashSet<Uuid>, WorkerError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.batch_execute(SCAN_BOUNDS).await?;
    let stmt = tx
        .prepare_cached("SELECT request_id FROM booking_requests WHERE request_id = ANY($1)")
        .await?;
    let decided = tx
        .query(&stmt, &[&request_ids])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    tx.commit().await?;
    Ok(decided)
}
