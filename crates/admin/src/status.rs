//! `ticketnest-admin status` and `goods stats ID`: what a sale looks like right now,
//! read from Redis (leases, streams, turns, live workers) and PostgreSQL (fencing
//! tokens, dead letters, bookings, decisions).

use std::collections::HashMap;

use anyhow::Context;
use serde_json::{json, Value};
use shared::{
    keys::Keys,
    queue::QueueConnection,
    shard::Shard,
    stream::{self, EntryId, CONSUMER_GROUP},
};

use crate::ops::Ops;

/// Goods listed under "most backlog".
const TOP_GOODS: usize = 10;

/// One shard as `status` shows it.
struct ShardRow {
    shard: Shard,
    /// The lease holder (`worker-id/instance`), if any.
    owner: Option<String>,
    /// The shard's fencing token and who took it (PostgreSQL).
    fence: Option<(i64, String)>,
    backlog: u64,
    pending: u64,
    /// Age of the oldest undecided entry, by the stream's own clock.
    lag_ms: Option<i64>,
    /// Entries in the Redis dead-letter stream (capped), and dead letters PostgreSQL
    /// holds that no operator has replayed or dropped.
    dead_in_stream: u64,
    dead_open: i64,
}

/// Prints every shard, the live workers and the goods with the most backlog.
///
/// # Errors
/// PostgreSQL or Redis unreachable.
pub async fn status(ops: &mut Ops, as_json: bool) -> anyhow::Result<()> {
    let fences: HashMap<i32, (i64, String)> = ops
        .client
        .query("SELECT shard, fence, owner FROM shard_fences", &[])
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, (r.try_get(1)?, r.try_get(2)?))))
        .collect::<Result<_, tokio_postgres::Error>>()?;
    let open: HashMap<i32, i64> = ops
        .client
        .query(
            "SELECT shard, count(*) FROM dead_letters WHERE resolution IS NULL GROUP BY shard",
            &[],
        )
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()?;
    let mut rows = Vec::new();
    let mut queued_by_goods: Vec<(i64, Shard, i64)> = Vec::new();
    let (keys, conn, _) = ops.split()?;
    for shard in keys.shards() {
        let owner: Option<String> = redis::cmd("GET")
            .arg(keys.lease(shard))
            .query_async(conn)
            .await?;
        let (backlog, pending) = stream::backlog(conn, keys, shard).await?;
        let lag_ms = match oldest_undecided(conn, keys, shard).await? {
            Some(oldest) => {
                let now = stream::stream_time_ms(conn, keys, shard).await?;
                Some((now - oldest).max(0))
            }
            None => None,
        };
        let dead_in_stream: u64 = redis::cmd("XLEN")
            .arg(keys.dead_letter(shard))
            .query_async(conn)
            .await?;
        queued_by_goods.extend(
            queued_per_goods(conn, keys, shard)
                .await?
                .into_iter()
                .map(|(goods, queued)| (goods, shard, queued)),
        );
        rows.push(ShardRow {
            shard,
            owner,
            fence: fences.get(&shard.as_i32()).cloned(),
            backlog,
            pending,
            lag_ms,
            dead_in_stream,
            dead_open: open.get(&shard.as_i32()).copied().unwrap_or(0),
        });
    }
    queued_by_goods.retain(|(_, _, queued)| *queued > 0);
    queued_by_goods.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    queued_by_goods.truncate(TOP_GOODS);
    let workers = live_workers(conn, keys).await?;

    if as_json {
        let shards: Vec<Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "shard": r.shard.get(),
                    "owner": r.owner,
                    "fence": r.fence.as_ref().map(|f| f.0),
                    "fenceOwner": r.fence.as_ref().map(|f| &f.1),
                    "backlog": r.backlog,
                    "pending": r.pending,
                    "lagSeconds": r.lag_ms.map(|ms| ms as f64 / 1000.0),
                    "deadLetters": { "open": r.dead_open, "inStream": r.dead_in_stream },
                })
            })
            .collect();
        let goods: Vec<Value> = queued_by_goods
            .iter()
            .map(|(goods, shard, queued)| json!({ "goods": goods, "shard": shard.get(), "queued": queued }))
            .collect();
        let workers: Vec<Value> = workers
            .iter()
            .map(|(id, ttl)| json!({ "instance": id, "expiresInMs": ttl }))
            .collect();
        println!(
            "{}",
            json!({ "shards": shards, "workers": workers, "mostBacklog": goods })
        );
        return Ok(());
    }
    println!("shard  owner                                fence  backlog  pending  lag(s)  dead letters (open / in stream)");
    for r in &rows {
        println!(
            "{:>5}  {:<35}  {:>5}  {:>7}  {:>7}  {:>6}  {} / {}",
            r.shard.get(),
            r.owner.as_deref().unwrap_or("-"),
            r.fence
                .as_ref()
                .map_or_else(|| "-".to_owned(), |f| f.0.to_string()),
            r.backlog,
            r.pending,
            r.lag_ms
                .map_or_else(|| "-".to_owned(), |ms| format!("{:.1}", ms as f64 / 1000.0)),
            r.dead_open,
            r.dead_in_stream,
        );
    }
    println!("{} live workers", workers.len());
    for (id, ttl) in &workers {
        println!("  {id} (membership expires in {ttl} ms)");
    }
    if queued_by_goods.is_empty() {
        println!("no goods has requests queued");
    } else {
        println!("most backlog:");
        for (goods, shard, queued) in &queued_by_goods {
            println!("  goods {goods} (shard {}): {queued} queued", shard.get());
        }
    }
    Ok(())
}

/// The time (ms) of the shard's oldest undecided entry: the oldest pending one, else
/// the first the group has not delivered yet.
async fn oldest_undecided(
    conn: &mut QueueConnection,
    keys: &Keys,
    shard: Shard,
) -> anyhow::Result<Option<i64>> {
    let stream = keys.stream(shard);
    let pending: redis::RedisResult<redis::streams::StreamPendingReply> = redis::cmd("XPENDING")
        .arg(&stream)
        .arg(CONSUMER_GROUP)
        .query_async(conn)
        .await;
    let delivered = match pending {
        Ok(redis::streams::StreamPendingReply::Data(data)) => {
            return Ok(EntryId::parse(&data.start_id).map(|id| id.ms));
        }
        Ok(_) => stream::consumer_group(conn, keys, shard)
            .await?
            .map(|g| g.last_delivered_id),
        // No stream or no group yet: every entry is undelivered.
        Err(e) if e.code() == Some("NOGROUP") => None,
        Err(e) => return Err(e.into()),
    };
    let from = delivered.map_or_else(|| "-".to_owned(), |id| format!("({id}"));
    let next: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(&stream)
        .arg(from)
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    Ok(next
        .ids
        .first()
        .and_then(|e| EntryId::parse(&e.id))
        .map(|id| id.ms))
}

/// Requests queued per goods of a shard: turns handed out less the highest decided.
/// The decided turns are read first: read after, they could pass the turns read
/// (decisions made between the two reads) and hide requests still queued.
async fn queued_per_goods(
    conn: &mut QueueConnection,
    keys: &Keys,
    shard: Shard,
) -> anyhow::Result<Vec<(i64, i64)>> {
    let decided = scan_hash(conn, &keys.decided_turns(shard)).await?;
    let handed = scan_hash(conn, &keys.turns(shard)).await?;
    Ok(handed
        .into_iter()
        .filter_map(|(goods, turns)| {
            let goods_id = goods.parse::<i64>().ok()?;
            let done = decided.get(&goods).copied().unwrap_or(0);
            Some((goods_id, (turns - done).max(0)))
        })
        .collect())
}

/// A hash of counters, read in pages (`HSCAN`): one field per goods ever sold on the
/// shard, so a single `HGETALL` could hold Redis up during a sale.
async fn scan_hash(conn: &mut QueueConnection, key: &str) -> anyhow::Result<HashMap<String, i64>> {
    let mut out = HashMap::new();
    let mut cursor = 0_u64;
    loop {
        let (next, page): (u64, Vec<(String, String)>) = redis::cmd("HSCAN")
            .arg(key)
            .arg(cursor)
            .arg("COUNT")
            .arg(500)
            .query_async(conn)
            .await?;
        // A value that is no count (written by hand) is left out, not fatal.
        out.extend(
            page.into_iter()
                .filter_map(|(field, value)| Some((field, value.parse().ok()?))),
        );
        if next == 0 {
            return Ok(out);
        }
        cursor = next;
    }
}

/// Live workers (membership not expired by Redis's clock) and how long each has left.
async fn live_workers(
    conn: &mut QueueConnection,
    keys: &Keys,
) -> anyhow::Result<Vec<(String, i64)>> {
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(conn).await?;
    let now = secs * 1000 + micros / 1000;
    let members: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(keys.workers())
        .arg(now)
        .arg("+inf")
        .arg("BYSCORE")
        .arg("WITHSCORES")
        .query_async(conn)
        .await
        .context("reading the worker set")?;
    #[allow(clippy::cast_possible_truncation)] // scores are integer milliseconds
    Ok(members
        .into_iter()
        .map(|(id, expires)| (id, expires as i64 - now))
        .collect())
}

/// Prints one goods' figures: limit, seats and places by state, requests queued, and
/// decisions by outcome and reason. `Ok(false)` when there is no such goods.
///
/// # Errors
/// PostgreSQL or Redis unreachable.
pub async fn goods_stats(ops: &mut Ops, goods: i64, as_json: bool) -> anyhow::Result<bool> {
    let (keys, conn, client) = ops.split()?;
    // One snapshot for every figure from PostgreSQL.
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let Some(row) = tx
        .query_opt(
            "SELECT title, booking_limit, booked_count, waitlisted_count, waitlist_limit, \
             deleted_at IS NOT NULL FROM goods WHERE id = $1",
            &[&goods],
        )
        .await?
    else {
        if as_json {
            println!("{}", json!({ "goods": goods, "error": "no such goods" }));
        } else {
            println!("no goods {goods}");
        }
        return Ok(false);
    };
    let title: String = row.try_get(0)?;
    let limit: i32 = row.try_get(1)?;
    let booked: i32 = row.try_get(2)?;
    let waitlisted_count: i32 = row.try_get(3)?;
    let waitlist_limit: Option<i32> = row.try_get(4)?;
    let deleted: bool = row.try_get(5)?;
    // Bookings by state: how many, and how many seats.
    let mut bookings: HashMap<String, (i64, i64)> = HashMap::new();
    for r in tx
        .query(
            "SELECT status, count(*), coalesce(sum(quantity), 0)::int8 FROM bookings \
             WHERE goods_id = $1 GROUP BY status",
            &[&goods],
        )
        .await?
    {
        bookings.insert(r.try_get(0)?, (r.try_get(1)?, r.try_get(2)?));
    }
    let mut decisions: Vec<(String, Option<String>, i64)> = Vec::new();
    for r in tx
        .query(
            "SELECT decision, reason, count(*) FROM booking_requests WHERE goods_id = $1 \
             GROUP BY decision, reason ORDER BY decision, reason NULLS FIRST",
            &[&goods],
        )
        .await?
    {
        decisions.push((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?));
    }
    tx.commit().await?;
    let shard = keys.shard_of(goods);
    // Decided first, as in `queued_per_goods`.
    let decided_turn: Option<i64> = redis::cmd("HGET")
        .arg(keys.decided_turns(shard))
        .arg(goods)
        .query_async(conn)
        .await?;
    let handed: Option<i64> = redis::cmd("HGET")
        .arg(keys.turns(shard))
        .arg(goods)
        .query_async(conn)
        .await?;
    let queued = (handed.unwrap_or(0) - decided_turn.unwrap_or(0)).max(0);
    let decided_count: i64 = decisions.iter().map(|d| d.2).sum();
    let state = |name: &str| bookings.get(name).copied().unwrap_or((0, 0));

    if as_json {
        let by_state: serde_json::Map<String, Value> =
            ["confirmed", "held", "waitlisted", "cancelled", "expired"]
                .iter()
                .map(|s| {
                    let (count, seats) = state(s);
                    (
                        (*s).to_owned(),
                        json!({ "bookings": count, "seats": seats }),
                    )
                })
                .collect();
        let decisions: Vec<Value> = decisions
            .iter()
            .map(|(d, r, n)| json!({ "decision": d, "reason": r, "count": n }))
            .collect();
        println!(
            "{}",
            json!({
                "goods": goods,
                "title": title,
                "deleted": deleted,
                "limit": limit,
                "seatsTaken": booked,
                "waitlistLimit": waitlist_limit,
                "waitlisted": waitlisted_count,
                "bookings": by_state,
                "queued": queued,
                "decided": decided_count,
                "decisions": decisions,
                "shard": shard.get(),
            })
        );
        return Ok(true);
    }
    println!(
        "goods {goods} \"{title}\"{} on shard {}",
        if deleted { " (deleted)" } else { "" },
        shard.get()
    );
    println!(
        "limit {limit} seats: {booked} taken (confirmed or held), {} free",
        limit - booked
    );
    for s in ["confirmed", "held", "waitlisted", "cancelled", "expired"] {
        let (count, seats) = state(s);
        println!("  {s:<10} {count} bookings, {seats} seats");
    }
    match waitlist_limit {
        Some(cap) => println!("waitlist {waitlisted_count} of at most {cap}"),
        None => println!("waitlist {waitlisted_count} (no cap)"),
    }
    println!("queued {queued} requests (accepted, not decided yet)");
    println!("decided {decided_count} requests:");
    for (decision, reason, n) in &decisions {
        match reason {
            Some(reason) => println!("  {decision} {reason}: {n}"),
            None => println!("  {decision}: {n}"),
        }
    }
    Ok(true)
}
