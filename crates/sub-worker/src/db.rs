//! Every SQL statement the worker runs.
//!
//! A batch is decided in one transaction with a fixed number of set-based statements,
//! whatever its size: check the shard's fencing token, find requests already decided,
//! lock the goods rows (in id order, so two transactions can never deadlock), read who
//! already holds a place, then write bookings and decisions in one statement and the
//! counters in another.

use std::collections::{HashMap, HashSet};

use deadpool_postgres::Pool;
use shared::message::BookingRequestV1;
use uuid::Uuid;

use crate::{
    decide::{self, Ask, GoodsState},
    error::WorkerError,
};

/// One decodable stream entry of a batch.
#[derive(Debug, Clone)]
pub struct Entry {
    pub stream_id: String,
    pub stream_ms: i64,
    pub stream_seq: i64,
    pub request: BookingRequestV1,
}

/// The decision on one request, new or found already committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub request_id: Uuid,
    pub user_id: i64,
    pub goods_id: i64,
    pub quantity: i32,
    pub decision: String,
    pub reason: Option<String>,
    pub booking_id: Option<i64>,
    /// Whether this transaction made the decision (false: it was committed earlier and
    /// the entry is a redelivery).
    pub new: bool,
}

/// Takes a new fencing token for a shard. Every later acquisition gets a larger one.
///
/// # Errors
/// The database is unavailable.
pub async fn acquire_fence(pool: &Pool, shard: u32, owner: &str) -> Result<i64, WorkerError> {
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached(
            "INSERT INTO shard_fences (shard, fence, owner) VALUES ($1, 1, $2) \
             ON CONFLICT (shard) DO UPDATE \
             SET fence = shard_fences.fence + 1, owner = EXCLUDED.owner, acquired_at = clock_timestamp() \
             RETURNING fence",
        )
        .await?;
    let shard = i32::try_from(shard).unwrap_or(i32::MAX);
    Ok(client.query_one(&stmt, &[&shard, &owner]).await?.get(0))
}

/// Decides and commits one batch of one shard, in stream order. Returns a decision for
/// every entry (deduplicated by request id), new or already committed.
///
/// # Errors
/// `Fenced` if another worker has taken the shard since `fence` was issued; database
/// errors otherwise (nothing is committed then).
pub async fn commit_batch(
    pool: &Pool,
    shard: u32,
    fence: i64,
    entries: &[Entry],
) -> Result<Vec<Decided>, WorkerError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let shard_i32 = i32::try_from(shard).unwrap_or(i32::MAX);

    // 1. Fencing: FOR SHARE holds the row until COMMIT, so a new owner's acquire_fence
    //    waits for this batch, and a batch that starts after it sees the new token.
    let stmt = tx
        .prepare_cached("SELECT fence FROM shard_fences WHERE shard = $1 FOR SHARE")
        .await?;
    let current: Option<i64> = tx.query_opt(&stmt, &[&shard_i32]).await?.map(|r| r.get(0));
    if current != Some(fence) {
        return Err(WorkerError::Fenced { shard, ours: fence });
    }

    // 2. Requests already decided (redelivery after a crash between COMMIT and XACK).
    let mut seen = HashSet::new();
    let entries: Vec<&Entry> = entries
        .iter()
        .filter(|e| seen.insert(e.request.request_id))
        .collect();
    let ids: Vec<Uuid> = entries.iter().map(|e| e.request.request_id).collect();
    let stmt = tx
        .prepare_cached(
            "SELECT request_id, user_id, goods_id, quantity, decision, reason, booking_id \
             FROM booking_requests WHERE request_id = ANY($1)",
        )
        .await?;
    let mut earlier: HashMap<Uuid, Decided> = tx
        .query(&stmt, &[&ids])
        .await?
        .iter()
        .map(|r| {
            let d = Decided {
                request_id: r.get(0),
                user_id: r.get(1),
                goods_id: r.get(2),
                quantity: r.get(3),
                decision: r.get(4),
                reason: r.get(5),
                booking_id: r.get(6),
                new: false,
            };
            (d.request_id, d)
        })
        .collect();
    let fresh: Vec<&Entry> = entries
        .iter()
        .copied()
        .filter(|e| !earlier.contains_key(&e.request.request_id))
        .collect();

    let mut fresh_decided: HashMap<Uuid, Decided> = HashMap::new();
    if !fresh.is_empty() {
        fresh_decided = decide_fresh(&tx, shard_i32, &fresh).await?;
    }
    tx.commit().await?;

    Ok(entries
        .iter()
        .filter_map(|e| {
            let id = e.request.request_id;
            earlier.remove(&id).or_else(|| fresh_decided.remove(&id))
        })
        .collect())
}

/// Steps 3-6 of a batch: lock goods, read held places and live users, decide, write.
async fn decide_fresh(
    tx: &deadpool_postgres::Transaction<'_>,
    shard: i32,
    fresh: &[&Entry],
) -> Result<HashMap<Uuid, Decided>, WorkerError> {
    let mut goods_ids: Vec<i64> = fresh.iter().map(|e| e.request.goods_id).collect();
    goods_ids.sort_unstable();
    goods_ids.dedup();
    let stmt = tx
        .prepare_cached(
            "SELECT id, booking_limit, booked_count, max_per_booking, decided_count \
             FROM goods WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        )
        .await?;
    let mut goods: HashMap<i64, GoodsState> = tx
        .query(&stmt, &[&goods_ids])
        .await?
        .iter()
        .map(|r| {
            (
                r.get(0),
                GoodsState {
                    booking_limit: r.get(1),
                    booked: r.get(2),
                    max_per_booking: r.get(3),
                    decided: r.get(4),
                },
            )
        })
        .collect();
    let before = goods.clone();

    let pair_goods: Vec<i64> = fresh.iter().map(|e| e.request.goods_id).collect();
    let pair_users: Vec<i64> = fresh.iter().map(|e| e.request.user_id).collect();
    let stmt = tx
        .prepare_cached(
            "SELECT b.goods_id, b.user_id FROM bookings b \
             JOIN unnest($1::int8[], $2::int8[]) AS x(goods_id, user_id) \
               ON b.goods_id = x.goods_id AND b.user_id = x.user_id \
             WHERE b.status IN ('confirmed', 'waitlisted')",
        )
        .await?;
    let mut held: HashSet<(i64, i64)> = tx
        .query(&stmt, &[&pair_goods, &pair_users])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let stmt = tx
        .prepare_cached("SELECT id FROM users WHERE id = ANY($1) AND deleted_at IS NULL")
        .await?;
    let live_users: HashSet<i64> = tx
        .query(&stmt, &[&pair_users])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();

    let asks: Vec<Ask> = fresh
        .iter()
        .map(|e| Ask {
            goods_id: e.request.goods_id,
            user_id: e.request.user_id,
            quantity: e.request.quantity,
        })
        .collect();
    let verdicts = decide::decide(&asks, &mut goods, &mut held, &live_users);

    // 5. Bookings and decision log in one statement, one row per request.
    let col = |f: fn(&Entry) -> i64| fresh.iter().map(|e| f(e)).collect::<Vec<i64>>();
    let request_ids: Vec<Uuid> = fresh.iter().map(|e| e.request.request_id).collect();
    let quantities: Vec<i32> = fresh.iter().map(|e| e.request.quantity).collect();
    let stream_ids: Vec<String> = fresh.iter().map(|e| e.stream_id.clone()).collect();
    let decisions: Vec<&str> = verdicts.iter().map(|v| v.outcome.decision()).collect();
    let reasons: Vec<Option<&str>> = verdicts.iter().map(|v| v.outcome.reason()).collect();
    let positions: Vec<Option<i64>> = verdicts.iter().map(|v| v.position).collect();
    let stmt = tx
        .prepare_cached(
            "WITH input AS ( \
               SELECT * FROM unnest($1::uuid[], $2::int8[], $3::int8[], $4::int4[], $5::text[], \
                                    $6::int8[], $7::int8[], $8::text[], $9::text[], $10::int8[], $11::int8[]) \
               AS t(request_id, goods_id, user_id, quantity, stream_id, stream_ms, stream_seq, \
                    decision, reason, position, accepted_ms) \
             ), booked AS ( \
               INSERT INTO bookings (goods_id, user_id, request_id, quantity, status, position) \
               SELECT goods_id, user_id, request_id, quantity, decision, position FROM input \
               WHERE decision IN ('confirmed', 'waitlisted') \
               RETURNING id, request_id \
             ) \
             INSERT INTO booking_requests (request_id, goods_id, user_id, quantity, shard, stream_id, \
               stream_ms, stream_seq, position, decision, reason, booking_id, accepted_at) \
             SELECT i.request_id, i.goods_id, i.user_id, i.quantity, $12, i.stream_id, i.stream_ms, \
               i.stream_seq, i.position, i.decision, i.reason, b.id, \
               to_timestamp(i.accepted_ms / 1000.0) \
             FROM input i LEFT JOIN booked b USING (request_id) \
             RETURNING request_id, booking_id",
        )
        .await?;
    let rows = tx
        .query(
            &stmt,
            &[
                &request_ids,
                &col(|e| e.request.goods_id),
                &col(|e| e.request.user_id),
                &quantities,
                &stream_ids,
                &col(|e| e.stream_ms),
                &col(|e| e.stream_seq),
                &decisions,
                &reasons,
                &positions,
                &col(|e| e.request.accepted_at_ms),
                &shard,
            ],
        )
        .await?;
    let booking_ids: HashMap<Uuid, Option<i64>> =
        rows.iter().map(|r| (r.get(0), r.get(1))).collect();

    // 6. Counters, one row per goods touched.
    let mut counter_ids = Vec::new();
    let mut booked_delta = Vec::new();
    let mut decided_delta = Vec::new();
    for (id, after) in &goods {
        if let Some(before) = before.get(id) {
            if after.decided != before.decided {
                counter_ids.push(*id);
                booked_delta.push(after.booked - before.booked);
                decided_delta.push(after.decided - before.decided);
            }
        }
    }
    if !counter_ids.is_empty() {
        let stmt = tx
            .prepare_cached(
                "UPDATE goods g SET booked_count = g.booked_count + d.booked, \
                   decided_count = g.decided_count + d.decided \
                 FROM unnest($1::int8[], $2::int4[], $3::int8[]) AS d(id, booked, decided) \
                 WHERE g.id = d.id",
            )
            .await?;
        tx.execute(&stmt, &[&counter_ids, &booked_delta, &decided_delta])
            .await?;
    }

    Ok(fresh
        .iter()
        .zip(&verdicts)
        .map(|(e, v)| {
            let r = &e.request;
            (
                r.request_id,
                Decided {
                    request_id: r.request_id,
                    user_id: r.user_id,
                    goods_id: r.goods_id,
                    quantity: r.quantity,
                    decision: v.outcome.decision().to_owned(),
                    reason: v.outcome.reason().map(str::to_owned),
                    booking_id: booking_ids.get(&r.request_id).copied().flatten(),
                    new: true,
                },
            )
        })
        .collect())
}
