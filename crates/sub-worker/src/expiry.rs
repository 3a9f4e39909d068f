//! Hold expiry: while a worker owns a shard, it looks every [`SCAN_EVERY`] for holds
//! of the shard's goods whose deadline has passed by the clock of the Redis server
//! holding the shard's stream (the clock that stamps the entries confirms are judged
//! by), and appends an `expire` request for each to the shard's stream. The expiry is
//! then decided like any other request, in stream order, under the goods' row lock: it
//! ends the hold only if the hold is still there and the expiry arrived (its stream
//! entry time) at or after the deadline, so a confirm that arrived before the deadline
//! always wins, and nothing expires twice.
//!
//! What is sent is remembered (hold → its expire request) until the expiry is decided;
//! meanwhile the scan leaves that hold out, so a backlog of expiries never hides the
//! holds behind them, and nothing is sent twice. A hold still there once its expiry
//! was decided (`hold_not_due`: the Redis server's clock stepped back) gets another,
//! and so does one whose expiry's entry is gone undecided (its status hash with it: a
//! Redis restart without AOF, a failover). A new owner remembers nothing and sends
//! again: the later of two expiries finds no hold (`no_hold`). Holds live in
//! PostgreSQL, so none is forgotten by a crash or a takeover.

use std::{collections::HashMap, sync::Arc, time::Duration};

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
/// The longest one scan may take (its queries, its appends); one that takes longer is
/// abandoned and the next starts afresh.
pub const SCAN_BOUND: Duration = Duration::from_secs(10);

/// Scans `shard` until `cancel` (the shard task's token) is cancelled; a scan in
/// flight is dropped at once when it is.
pub async fn run(ctx: Arc<Context>, shard: Shard, cancel: CancellationToken) {
    // Hold (its booking request) → the expire request sent for it, undecided.
    let mut sent: HashMap<Uuid, Uuid> = HashMap::new();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(SCAN_EVERY) => {}
        }
        let outcome = tokio::select! {
            () = cancel.cancelled() => return,
            outcome = tokio::time::timeout(SCAN_BOUND, scan(&ctx, shard, &mut sent)) => outcome,
        };
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(shard = shard.get(), error = %e, "hold expiry scan failed; retrying");
            }
            Err(_) => {
                tracing::warn!(shard = shard.get(), bound = ?SCAN_BOUND, "hold expiry scan took too long; retrying");
            }
        }
    }
}

async fn scan(
    ctx: &Context,
    shard: Shard,
    sent: &mut HashMap<Uuid, Uuid>,
) -> Result<(), WorkerError> {
    let mut conn = ctx.redis.clone();
    // Expiries decided, or lost undecided, free their hold to be looked at again.
    if !sent.is_empty() {
        let expires: Vec<Uuid> = sent.values().copied().collect();
        let decided = db::decided_among(&ctx.pool, &expires).await?;
        sent.retain(|_, expire| !decided.contains(expire));
        let expires: Vec<Uuid> = sent.values().copied().collect();
        let queued = stream::statuses_exist(&mut conn, &ctx.keys, &expires).await?;
        sent.retain(|_, expire| queued.contains(expire));
    }
    let now = stream::stream_time_ms(&mut conn, &ctx.keys, shard).await?;
    let waiting: Vec<Uuid> = sent.keys().copied().collect();
    let due = db::holds_due(&ctx.pool, shard, ctx.keys.shard_count(), now, &waiting).await?;
    for hold in due {
        let request_id = Keys::new_request_id(shard);
        let message = Message::Expire(BookingRequestV1 {
            request_id,
            goods_id: hold.goods_id,
            user_id: hold.user_id,
            quantity: 0,
            accepted_at_ms: now,
            trace_id: String::new(),
            traceparent: None,
        });
        stream::enqueue(&mut conn, &ctx.keys, &message, None).await?;
        tracing::debug!(hold = %hold.request_id, expire = %request_id, "hold past its deadline: expiry sent");
        sent.insert(hold.request_id, request_id);
    }
    Ok(())
}
