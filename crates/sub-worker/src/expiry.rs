//! Hold expiry: while a worker owns a shard, it looks every [`SCAN_EVERY`] for holds
//! of the shard's goods whose deadline has passed by the clock of the Redis server
//! holding the shard's stream (deadlines are in stream entry time, so the worker's
//! own clock plays no part), and appends an `expire` request for each to the shard's
//! stream. The expiry is then decided like any other request, in
//! stream order, under the goods' row lock: it ends the hold only if the hold is still
//! there and the expiry arrived (its stream entry time) at or after the deadline, so a
//! confirm that arrived before the deadline always wins, and nothing expires twice.
//!
//! What is sent is remembered (hold → its expire request and when) so that a hold
//! whose expiry is still queued is not sent again; a hold still there once its expiry
//! was decided (`hold_not_due`: the Redis server's clock stepped back), or
//! [`RESEND_AFTER`] after it was sent (its entry was lost: a Redis restart without
//! AOF, a failover), gets another. A new owner remembers nothing and sends again: the
//! later of two expiries finds no hold (`no_hold`). Holds live in PostgreSQL, so none
//! is forgotten by a crash or a takeover.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use shared::{
    keys::Keys,
    shard::Shard,
    stream::{self, BookingRequestV1, Message},
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{context::Context, db, error::WorkerError};

/// How often an owned shard is scanned for holds past their deadline.
pub const SCAN_EVERY: Duration = Duration::from_millis(250);
/// How long an expiry may stay undecided before the hold gets another.
pub const RESEND_AFTER: Duration = Duration::from_secs(30);

/// The expiry last sent for a hold.
struct Sent {
    expire: Uuid,
    at: Instant,
}

/// Scans `shard` until `cancel` (the shard task's token) is cancelled.
pub async fn run(ctx: Arc<Context>, shard: Shard, cancel: CancellationToken) {
    let mut sent: HashMap<Uuid, Sent> = HashMap::new();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(SCAN_EVERY) => {}
        }
        if let Err(e) = scan(&ctx, shard, &mut sent).await {
            tracing::warn!(shard = shard.get(), error = %e, "hold expiry scan failed; retrying");
        }
    }
}

async fn scan(
    ctx: &Context,
    shard: Shard,
    sent: &mut HashMap<Uuid, Sent>,
) -> Result<(), WorkerError> {
    let mut conn = ctx.redis.clone();
    let now = stream::stream_time_ms(&mut conn, &ctx.keys, shard).await?;
    let due = db::holds_due(&ctx.pool, shard, ctx.keys.shard_count(), now).await?;
    let still_due: HashSet<Uuid> = due.iter().map(|h| h.request_id).collect();
    // Forget holds that ended; keep what was sent lately for holds this scan did not
    // reach (more than one scan takes), so that they are not sent twice.
    sent.retain(|hold, s| still_due.contains(hold) || s.at.elapsed() < RESEND_AFTER);
    let waiting: Vec<Uuid> = sent.values().map(|s| s.expire).collect();
    let decided = if waiting.is_empty() {
        HashSet::new()
    } else {
        db::decided_among(&ctx.pool, &waiting).await?
    };
    for hold in due {
        if sent
            .get(&hold.request_id)
            .is_some_and(|s| !decided.contains(&s.expire) && s.at.elapsed() < RESEND_AFTER)
        {
            continue;
        }
        let request_id = Keys::new_request_id(shard);
        let message = Message::Expire(BookingRequestV1 {
            request_id,
            goods_id: hold.goods_id,
            user_id: hold.user_id,
            quantity: 0,
            accepted_at_ms: now,
            trace_id: String::new(),
        });
        stream::enqueue(&mut conn, &ctx.keys, &message, None).await?;
        tracing::debug!(hold = %hold.request_id, expire = %request_id, "hold past its deadline: expiry sent");
        sent.insert(
            hold.request_id,
            Sent {
                expire: request_id,
                at: Instant::now(),
            },
        );
    }
    Ok(())
}
