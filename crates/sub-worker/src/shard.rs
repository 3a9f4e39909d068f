//! One shard's loop: reclaim what earlier owners left pending, then read new entries,
//! decide each batch in one transaction, and only then write statuses and acknowledge.
//!
//! A shard task runs only while its worker holds the shard's lease; it carries the
//! fencing token taken at acquisition into every transaction. The lease manager cancels
//! the task when the lease is lost or the worker shuts down; the task then finishes the
//! batch in hand (or abandons it unacknowledged, to be reclaimed by the next owner).

use std::{collections::HashMap, sync::Arc, time::Duration};

use redis::{
    streams::{
        StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamInfoConsumersReply,
        StreamPendingReply, StreamReadOptions, StreamReadReply,
    },
    AsyncCommands,
};
use shared::error::display_chain as chain;
use shared::{
    config::CrashPoint,
    keys::CONSUMER_GROUP,
    message::{BookingRequestV1, DecodeError, StreamMessage},
    queue::QueueConnection,
    status_fields as f, RequestStatus,
};
use tokio_util::sync::CancellationToken;

use crate::{
    backoff::Backoff,
    db::{self, Decided, Entry},
    error::WorkerError,
    startup::Context,
};

/// Exit code used by the `after_commit` crash point, so tests can tell it from a real failure.
pub const CRASH_EXIT_CODE: i32 = 86;

/// Why a shard task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardExit {
    /// Cancelled by the lease manager (shutdown or lease lost).
    Cancelled,
    /// Another worker holds a newer fencing token: this worker must let go.
    Fenced,
}

/// Splits an entry id `<ms>-<seq>` into its numbers.
fn parse_stream_id(id: &str) -> Option<(i64, i64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// An entry that cannot be decided, with the reason it goes to the dead-letter stream.
struct DeadLetter {
    stream_id: String,
    reason: String,
    fields: Vec<(String, String)>,
    /// The request, when the entry decoded (its owner is told it was not processed).
    request: Option<Box<BookingRequestV1>>,
}

impl DeadLetter {
    /// A decodable entry that PostgreSQL kept refusing.
    fn poison(entry: &Entry, reason: String) -> Self {
        let message = StreamMessage::BookingRequestV1(entry.request.clone());
        Self {
            stream_id: entry.stream_id.clone(),
            reason,
            fields: message
                .to_fields()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            request: Some(Box::new(entry.request.clone())),
        }
    }
}

/// Reason stored in the status of a request whose entry was dead-lettered.
pub const UNPROCESSABLE: &str = "unprocessable";

fn decode(entry: &StreamId) -> Result<Entry, DeadLetter> {
    let mut fields = HashMap::with_capacity(entry.map.len());
    let mut raw = Vec::with_capacity(entry.map.len());
    let mut bad_value = None;
    for (name, value) in &entry.map {
        match redis::from_redis_value_ref::<String>(value) {
            Ok(s) => {
                raw.push((name.clone(), s.clone()));
                fields.insert(name.clone(), s);
            }
            Err(_) => bad_value = Some(name.clone()),
        }
    }
    let dead = |reason: String, raw: Vec<(String, String)>| DeadLetter {
        stream_id: entry.id.clone(),
        reason,
        fields: raw,
        request: None,
    };
    if let Some(name) = bad_value {
        return Err(dead(format!("field `{name}` is not a string"), raw));
    }
    let Some((stream_ms, stream_seq)) = parse_stream_id(&entry.id) else {
        return Err(dead(format!("unparsable entry id `{}`", entry.id), raw));
    };
    match StreamMessage::from_fields(&fields) {
        Ok(StreamMessage::BookingRequestV1(request)) => Ok(Entry {
            stream_id: entry.id.clone(),
            stream_ms,
            stream_seq,
            request,
        }),
        Err(
            e @ (DecodeError::MissingField(_)
            | DecodeError::InvalidField { .. }
            | DecodeError::UnsupportedVersion(_)),
        ) => Err(dead(e.to_string(), raw)),
    }
}

pub struct ShardTask {
    ctx: Arc<Context>,
    shard: u32,
    fence: i64,
    stream: String,
    cancel: CancellationToken,
}

impl ShardTask {
    pub fn new(ctx: Arc<Context>, shard: u32, fence: i64, cancel: CancellationToken) -> Self {
        let stream = ctx.keys.stream(shard);
        Self {
            ctx,
            shard,
            fence,
            stream,
            cancel,
        }
    }

    /// Runs until cancelled or fenced.
    #[tracing::instrument(name = "shard", skip_all, fields(shard = self.shard, fence = self.fence))]
    pub async fn run(self) -> ShardExit {
        tracing::info!("shard acquired");
        let mut backoff = Backoff::default();
        loop {
            if self.cancel.is_cancelled() {
                return ShardExit::Cancelled;
            }
            match self.run_connected().await {
                Ok(exit) => return exit,
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, ?delay, "shard loop interrupted; retrying");
                    if self.sleep_or_cancel(delay).await {
                        return ShardExit::Cancelled;
                    }
                }
            }
        }
    }

    /// Sleeps; returns true if cancelled meanwhile.
    async fn sleep_or_cancel(&self, delay: Duration) -> bool {
        tokio::select! {
            () = self.cancel.cancelled() => true,
            () = tokio::time::sleep(delay) => false,
        }
    }

    async fn run_connected(&self) -> Result<ShardExit, WorkerError> {
        let mut conn =
            shared::queue::connect_dedicated(&self.ctx.redis_config, self.ctx.worker.block).await?;
        self.ensure_group(&mut conn).await?;
        // Whatever earlier owners read but did not acknowledge comes first.
        if let Some(exit) = self.reclaim(&mut conn).await? {
            return Ok(exit);
        }
        self.forget_idle_consumers(&mut conn).await;
        let options = StreamReadOptions::default()
            .group(CONSUMER_GROUP, &self.ctx.worker.worker_id)
            .count(self.ctx.worker.batch_size)
            .block(usize::try_from(self.ctx.worker.block.as_millis()).unwrap_or(usize::MAX));
        loop {
            if self.cancel.is_cancelled() {
                return Ok(ShardExit::Cancelled);
            }
            let reply: Option<StreamReadReply> = conn
                .xread_options(&[&self.stream], &[">"], &options)
                .await?;
            let Some(reply) = reply else { continue };
            let batch: Vec<StreamId> = reply.keys.into_iter().flat_map(|k| k.ids).collect();
            if batch.is_empty() {
                continue;
            }
            // A previous owner that has not yet noticed it lost the shard may still have
            // read entries after our reclaim (its commits are fenced off, so they are
            // undecided). Those are older than anything we read later: reclaim them,
            // together with this batch, in stream order, before going on.
            let exit = if self.others_hold_pending(&mut conn).await? {
                tracing::warn!("another consumer holds pending entries: reclaiming in order");
                self.reclaim(&mut conn).await?
            } else {
                self.process(&batch).await?
            };
            if let Some(exit) = exit {
                return Ok(exit);
            }
        }
    }

    /// Claims every pending entry of the group (any consumer, any idle time) in stream
    /// order and decides them a batch at a time, until the cursor wraps.
    async fn reclaim(&self, conn: &mut QueueConnection) -> Result<Option<ShardExit>, WorkerError> {
        let mut cursor = "0-0".to_owned();
        loop {
            if self.cancel.is_cancelled() {
                return Ok(Some(ShardExit::Cancelled));
            }
            let reply: StreamAutoClaimReply = conn
                .xautoclaim_options(
                    &self.stream,
                    CONSUMER_GROUP,
                    &self.ctx.worker.worker_id,
                    0,
                    &cursor,
                    StreamAutoClaimOptions::default().count(self.ctx.worker.batch_size),
                )
                .await?;
            if !reply.deleted_ids.is_empty() {
                tracing::warn!(
                    count = reply.deleted_ids.len(),
                    "pending entries were deleted from the stream before being decided"
                );
            }
            if !reply.claimed.is_empty() {
                tracing::info!(count = reply.claimed.len(), "reclaimed pending entries");
                if let Some(exit) = self.process(&reply.claimed).await? {
                    return Ok(Some(exit));
                }
            }
            cursor = reply.next_stream_id;
            if cursor == "0-0" {
                return Ok(None);
            }
        }
    }

    /// Whether a consumer other than this worker has unacknowledged entries.
    async fn others_hold_pending(&self, conn: &mut QueueConnection) -> Result<bool, WorkerError> {
        let reply: StreamPendingReply = conn.xpending(&self.stream, CONSUMER_GROUP).await?;
        Ok(match reply {
            StreamPendingReply::Data(data) => data
                .consumers
                .iter()
                .any(|c| c.pending > 0 && c.name != self.ctx.worker.worker_id),
            _ => false,
        })
    }

    /// Removes consumers of earlier owners that hold nothing, so the group does not
    /// collect one dead consumer per worker restart. Best effort.
    async fn forget_idle_consumers(&self, conn: &mut QueueConnection) {
        let reply: redis::RedisResult<StreamInfoConsumersReply> =
            conn.xinfo_consumers(&self.stream, CONSUMER_GROUP).await;
        let Ok(reply) = reply else { return };
        for consumer in reply.consumers {
            if consumer.pending == 0 && consumer.name != self.ctx.worker.worker_id {
                let removed: redis::RedisResult<i64> = conn
                    .xgroup_delconsumer(&self.stream, CONSUMER_GROUP, &consumer.name)
                    .await;
                if let Err(e) = removed {
                    tracing::debug!(error = %e, consumer = %consumer.name, "could not remove idle consumer");
                }
            }
        }
    }

    async fn ensure_group(&self, conn: &mut QueueConnection) -> Result<(), WorkerError> {
        let created: redis::RedisResult<()> = conn
            .xgroup_create_mkstream(&self.stream, CONSUMER_GROUP, "0")
            .await;
        match created {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Decides one batch: commit, then statuses, dead letters and XACK. Returns
    /// `Some(exit)` when the shard must stop.
    async fn process(&self, batch: &[StreamId]) -> Result<Option<ShardExit>, WorkerError> {
        if let Some(CrashPoint::StallAfterRead(stall)) = self.ctx.worker.crash_point {
            tracing::warn!(?stall, "crash point stall_after_read: holding the batch");
            tokio::time::sleep(stall).await;
        }
        let mut entries = Vec::with_capacity(batch.len());
        let mut dead = Vec::new();
        for item in batch {
            match decode(item) {
                Ok(entry) => entries.push(entry),
                Err(letter) => {
                    tracing::warn!(stream_id = %letter.stream_id, reason = %letter.reason, "dead-lettering undecodable entry");
                    dead.push(letter);
                }
            }
        }

        let decided = if entries.is_empty() {
            Vec::new()
        } else {
            match self.commit_with_retry(&entries).await {
                Ok((decided, poison)) => {
                    dead.extend(poison);
                    decided
                }
                Err(exit) => return Ok(Some(exit)),
            }
        };
        if self.ctx.worker.crash_point == Some(CrashPoint::AfterCommit) && !decided.is_empty() {
            tracing::error!("crash point after_commit reached: exiting before XACK");
            std::process::exit(CRASH_EXIT_CODE);
        }
        for e in &entries {
            let r = &e.request;
            if let Some(d) = decided.iter().find(|d| d.request_id == r.request_id) {
                tracing::debug!(
                    request_id = %r.request_id,
                    stream_id = %e.stream_id,
                    trace_id = %r.trace_id,
                    decision = %d.decision,
                    redelivered = !d.new,
                    "decided"
                );
            }
        }
        let ids: Vec<&str> = batch.iter().map(|e| e.id.as_str()).collect();
        let mut backoff = Backoff::default();
        loop {
            match self.finish(&decided, &dead, &ids).await {
                Ok(()) => return Ok(None),
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, ?delay, "could not acknowledge a committed batch; retrying");
                    // Leaving now is safe: the entries stay pending, the next owner
                    // reclaims them and finds them decided.
                    if self.sleep_or_cancel(delay).await {
                        return Ok(Some(ShardExit::Cancelled));
                    }
                }
            }
        }
    }

    /// Commits the batch, retrying transient failures for as long as it takes. If
    /// PostgreSQL refuses the batch itself, decides its entries one at a time, in order,
    /// to isolate the entry at fault (see `commit_singly`). `Err(exit)` means stop.
    async fn commit_with_retry(
        &self,
        entries: &[Entry],
    ) -> Result<(Vec<Decided>, Vec<DeadLetter>), ShardExit> {
        let mut backoff = Backoff::default();
        loop {
            match db::commit_batch(&self.ctx.pool, self.shard, self.fence, entries).await {
                Ok(decided) => return Ok((decided, Vec::new())),
                Err(WorkerError::Fenced { .. }) => {
                    tracing::warn!("fencing token superseded: another worker owns this shard now");
                    return Err(ShardExit::Fenced);
                }
                Err(e) if e.is_transient() => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %chain(&e), ?delay, "batch not committed; retrying");
                    if self.sleep_or_cancel(delay).await {
                        return Err(ShardExit::Cancelled);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %chain(&e), size = entries.len(), "batch refused by the database; deciding its entries one at a time");
                    return self.commit_singly(entries).await;
                }
            }
        }
    }

    /// Decides entries one transaction each, in stream order. An entry PostgreSQL refuses
    /// `max_attempts` times for a non-transient reason becomes a dead letter and the
    /// shard moves on; transient failures are retried without counting.
    async fn commit_singly(
        &self,
        entries: &[Entry],
    ) -> Result<(Vec<Decided>, Vec<DeadLetter>), ShardExit> {
        let mut decided = Vec::with_capacity(entries.len());
        let mut dead = Vec::new();
        for entry in entries {
            let mut refusals = 0;
            let mut backoff = Backoff::default();
            loop {
                let one = std::slice::from_ref(entry);
                match db::commit_batch(&self.ctx.pool, self.shard, self.fence, one).await {
                    Ok(d) => {
                        decided.extend(d);
                        break;
                    }
                    Err(WorkerError::Fenced { .. }) => return Err(ShardExit::Fenced),
                    Err(e) if e.is_transient() => {}
                    Err(e) => {
                        refusals += 1;
                        if refusals >= self.ctx.worker.max_attempts {
                            let reason =
                                format!("refused by the database {refusals} times: {}", chain(&e));
                            tracing::warn!(
                                request_id = %entry.request.request_id,
                                stream_id = %entry.stream_id,
                                %reason,
                                "dead-lettering poison entry"
                            );
                            dead.push(DeadLetter::poison(entry, reason));
                            break;
                        }
                    }
                }
                if self.sleep_or_cancel(backoff.next_delay()).await {
                    return Err(ShardExit::Cancelled);
                }
            }
        }
        Ok((decided, dead))
    }

    /// After COMMIT: statuses for polling, dead letters, then XACK, in one round trip.
    async fn finish(
        &self,
        decided: &[Decided],
        dead: &[DeadLetter],
        ids: &[&str],
    ) -> Result<(), WorkerError> {
        let keys = &self.ctx.keys;
        let ttl = i64::try_from(self.ctx.status_ttl.as_secs()).unwrap_or(i64::MAX);
        let mut pipe = redis::pipe();
        for d in decided {
            let key = keys.request_status(self.shard, d.request_id);
            pipe.hset_multiple(
                &key,
                &[
                    (f::USER, d.user_id.to_string()),
                    (f::GOODS, d.goods_id.to_string()),
                    (f::QUANTITY, d.quantity.to_string()),
                    (f::STATUS, d.decision.clone()),
                    (f::REASON, d.reason.clone().unwrap_or_default()),
                    (
                        f::BOOKING,
                        d.booking_id.map(|b| b.to_string()).unwrap_or_default(),
                    ),
                ],
            )
            .ignore()
            .expire(&key, ttl)
            .ignore();
        }
        let dead_key = keys.dead_letter(self.shard);
        for request in dead.iter().filter_map(|d| d.request.as_ref()) {
            let key = keys.request_status(self.shard, request.request_id);
            pipe.hset_multiple(
                &key,
                &[
                    (f::USER, request.user_id.to_string()),
                    (f::GOODS, request.goods_id.to_string()),
                    (f::QUANTITY, request.quantity.to_string()),
                    (f::STATUS, RequestStatus::Rejected.as_str().to_owned()),
                    (f::REASON, UNPROCESSABLE.to_owned()),
                    (f::BOOKING, String::new()),
                ],
            )
            .ignore()
            .expire(&key, ttl)
            .ignore();
        }
        for letter in dead {
            let mut fields = vec![
                ("dlq_reason".to_owned(), letter.reason.clone()),
                ("dlq_source_id".to_owned(), letter.stream_id.clone()),
            ];
            fields.extend(letter.fields.iter().cloned());
            pipe.xadd(&dead_key, "*", &fields).ignore();
        }
        if !ids.is_empty() {
            pipe.xack(&self.stream, CONSUMER_GROUP, ids).ignore();
        }
        let mut conn = self.ctx.redis.clone();
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_split_into_millis_and_sequence() {
        assert_eq!(
            parse_stream_id("1700000000000-3"),
            Some((1_700_000_000_000, 3))
        );
        assert_eq!(parse_stream_id("garbage"), None);
        assert_eq!(parse_stream_id("1-x"), None);
    }
}
