//! Hold expiry: while a worker owns a shard, it looks every [`SCAN_EVERY`] for holds
//! of the shard's goods whose deadline has passed, and appends an `expire` request for
//! each to the shard's stream. The expiry is then decided like any other request, in
//! stream order, under the goods' row lock: it ends the hold only if the hold is still
//! there and the expiry arrived (its stream entry time) at or after the deadline, so a
//! confirm that arrived before the deadline always wins, and nothing expires twice.
//!
//! What is sent is remembered (hold → its expire request) so that a hold whose expiry
//! is still queued is not sent again; a hold still due once its expiry was decided
//! (`hold_not_due`: this worker's clock ran ahead of Redis's) gets another. A new
//! owner remembers nothing and sends again: the later of two expiries finds no hold
//! (`no_hold`). Holds live in PostgreSQL, so none is forgotten by a crash or a
//! takeover.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, SystemTime},
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

/// Scans `shard` until `cancel` (the shard task's token) is cancelled.
pub async fn run(ctx: Arc<Context>, shard: Shard, cancel: CancellationToken) {
    let mut sent: HashMap<Uuid, Uuid> = HashMap::new();
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

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .unwrap_or_default()
}

async fn scan(
    ctx: &Context,
    shard: Shard,
    sent: &mut HashMap<Uuid, Uuid>,
) -> Result<(), WorkerError> {
    let now = now_ms();
    let due = db::holds_due(&ctx.pool, shard, ctx.keys.shard_count(), now).await?;
    let still_due: HashSet<Uuid> = due.iter().map(|h| h.request_id).collect();
    sent.retain(|hold, _| still_due.contains(hold));
    let waiting: Vec<Uuid> = sent.values().copied().collect();
    let decided = if waiting.is_empty() {
        HashSet::new()
    } else {
        db::decided_among(&ctx.pool, &waiting).await?
    };
    for hold in due {
        if sent
            .get(&hold.request_id)
            .is_some_and(|expire| !decided.contains(expire))
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
        let mut conn = ctx.redis.clone();
        stream::enqueue(&mut conn, &ctx.keys, &message, None).await?;
        tracing::debug!(hold = %hold.request_id, expire = %request_id, "hold past its deadline: expiry sent");
        sent.insert(hold.request_id, request_id);
    }
    Ok(())
}
