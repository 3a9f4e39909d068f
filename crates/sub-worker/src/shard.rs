//! One shard's loop: reclaim what earlier owners left pending, then read new entries,
//! decide each batch in one transaction, and only then write statuses and acknowledge.
//!
//! A shard task runs only while its worker holds the shard's lease; it carries the
//! fencing token taken at acquisition into every transaction. The lease manager cancels
//! the task when the lease is lost or the worker shuts down; the task then finishes the
//! batch in hand (or abandons it unacknowledged, to be reclaimed by the next owner).

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use redis::{
    streams::{
        StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamPendingReply,
        StreamReadOptions, StreamReadReply,
    },
    AsyncCommands,
};
use shared::error::display_chain as chain;
use shared::meter::names;
use shared::{
    config::CrashPoint,
    decision::RejectReason,
    queue::QueueConnection,
    shard::{FenceToken, Shard},
    stream::{
        self, DeadLetter, Entry, EntryId, StatusRecord, CLAIM_START, CONSUMER_GROUP, NEW_ENTRIES,
    },
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    backoff::Backoff,
    context::Context,
    db::{self, Committed},
    error::WorkerError,
};

/// How often an idle shard trims entries that aged past the retention.
const IDLE_TRIM: Duration = Duration::from_secs(1);

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

pub struct ShardTask {
    ctx: Arc<Context>,
    shard: Shard,
    fence: FenceToken,
    stream_key: String,
    cancel: CancellationToken,
    /// Whether a refused settled note was logged already (once per task is enough).
    note_refused: std::sync::atomic::AtomicBool,
    /// The stream time (ms) of the oldest entry in hand and not yet decided; 0 when none.
    /// The lease loop turns it into `ticketnest_shard_lag_seconds`.
    oldest: Arc<std::sync::atomic::AtomicI64>,
}

impl ShardTask {
    pub fn new(
        ctx: Arc<Context>,
        shard: Shard,
        fence: FenceToken,
        cancel: CancellationToken,
        oldest: Arc<std::sync::atomic::AtomicI64>,
    ) -> Self {
        let stream_key = ctx.keys.stream(shard);
        Self {
            ctx,
            shard,
            fence,
            stream_key,
            cancel,
            note_refused: std::sync::atomic::AtomicBool::new(false),
            oldest,
        }
    }

    /// Runs until cancelled or fenced.
    #[tracing::instrument(name = "shard", skip_all, fields(shard = self.shard.get(), fence = self.fence.get()))]
    pub async fn run(self) -> ShardExit {
        tracing::info!("shard acquired");
        let _owned = Owned::mark(self.shard);
        // Hold expiry runs while this task does, and stops with it.
        let expiry = self.cancel.child_token();
        let _stop_expiry = expiry.clone().drop_guard();
        tokio::spawn(crate::expiry::run(self.ctx.clone(), self.shard, expiry));
        let mut backoff = Backoff::default();
        loop {
            if self.cancel.is_cancelled() {
                return ShardExit::Cancelled;
            }
            match self.run_connected().await {
                Ok(exit) => return exit,
                Err(e) => {
                    let delay = backoff.next_delay();
                    metrics::counter!(names::RETRIES, "class" => "shard").increment(1);
                    tracing::warn!(error = %e, ?delay, "shard loop interrupted; retrying");
                    if self.sleep_or_cancel(delay).await {
                        return ShardExit::Cancelled;
                    }
                }
            }
        }
    }

    /// The `stall_in_transaction` crash point's pause, if set (tests only).
    fn stall(&self) -> Option<Duration> {
        match self.ctx.worker.crash_point {
            Some(CrashPoint::StallInTransaction(stall)) => Some(stall),
            _ => None,
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
        stream::ensure_group(&mut conn, &self.ctx.keys, self.shard).await?;
        // Whatever earlier owners read but did not acknowledge comes first.
        if let Some(exit) = self.reclaim(&mut conn).await? {
            return Ok(exit);
        }
        self.forget_idle_consumers(&mut conn).await;
        let options = StreamReadOptions::default()
            .group(CONSUMER_GROUP, &self.ctx.worker.worker_id)
            .count(self.ctx.worker.batch_size)
            .block(usize::try_from(self.ctx.worker.block.as_millis()).unwrap_or(usize::MAX));
        let mut last_trim = Instant::now();
        loop {
            if self.cancel.is_cancelled() {
                return Ok(ShardExit::Cancelled);
            }
            let reply: Option<StreamReadReply> = conn
                .xread_options(&[&self.stream_key], &[NEW_ENTRIES], &options)
                .await?;
            let batch: Vec<StreamId> = reply
                .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
                .unwrap_or_default();
            if batch.is_empty() {
                self.set_oldest(None);
                // Every settle trims what it decided; with a retention, what ages past
                // it while the shard is idle is trimmed here.
                if !self.ctx.retention.entries.is_zero() && last_trim.elapsed() >= IDLE_TRIM {
                    last_trim = Instant::now();
                    self.trim(&mut conn).await;
                }
                // Nothing new; but entries a stale owner (or a lost read) left pending
                // must not wait for the next booking to be noticed.
                if self.pending_before(&mut conn, None).await? {
                    tracing::warn!(
                        "undecided entries are pending while the shard is idle: reclaiming"
                    );
                    if let Some(exit) = self.reclaim(&mut conn).await? {
                        return Ok(exit);
                    }
                }
                continue;
            }
            // Entries older than this batch may be pending undecided: read after our
            // reclaim by a previous owner that has not noticed it lost the shard (its
            // commits are fenced off), or read under our own name by a read whose reply
            // was lost (a cluster client resends it and gets the next batch). Whoever
            // holds them, they come first: reclaim everything pending, this batch
            // included, in stream order, before going on.
            let exit = if self.pending_before(&mut conn, Some(&batch[0].id)).await? {
                tracing::warn!("entries older than the batch are pending: reclaiming in order");
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
        let mut cursor = CLAIM_START.to_owned();
        loop {
            if self.cancel.is_cancelled() {
                return Ok(Some(ShardExit::Cancelled));
            }
            let reply: StreamAutoClaimReply = conn
                .xautoclaim_options(
                    &self.stream_key,
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
            if cursor == CLAIM_START {
                return Ok(None);
            }
        }
    }

    /// Whether any entry of the group is pending (under any consumer's name, this
    /// worker's included) that is older than `first`, or at all when `first` is `None`.
    /// Unparsable ids count as older: a needless reclaim costs a round trip, a missed
    /// one breaks FIFO.
    async fn pending_before(
        &self,
        conn: &mut QueueConnection,
        first: Option<&str>,
    ) -> Result<bool, WorkerError> {
        let reply: StreamPendingReply = conn.xpending(&self.stream_key, CONSUMER_GROUP).await?;
        Ok(match (reply, first) {
            (StreamPendingReply::Data(_), None) => true,
            (StreamPendingReply::Data(data), Some(first)) => {
                match (EntryId::parse(&data.start_id), EntryId::parse(first)) {
                    (Some(oldest), Some(first)) => oldest < first,
                    _ => true,
                }
            }
            _ => false,
        })
    }

    /// Trims decided entries older than the retention (`stream::trim`). Best effort.
    async fn trim(&self, conn: &mut QueueConnection) {
        let trimmed =
            stream::trim(conn, &self.ctx.keys, self.shard, self.ctx.retention.entries).await;
        if let Err(e) = trimmed {
            tracing::debug!(error = %e, "could not trim the stream");
        }
    }

    /// Removes consumers of earlier owners that hold nothing, so the group does not
    /// collect one dead consumer per worker restart (atomically: see
    /// `stream::forget_idle_consumers`). Best effort.
    async fn forget_idle_consumers(&self, conn: &mut QueueConnection) {
        let forgotten = stream::forget_idle_consumers(
            conn,
            &self.ctx.keys,
            self.shard,
            &self.ctx.worker.worker_id,
        )
        .await;
        if let Err(e) = forgotten {
            tracing::debug!(error = %e, "could not remove idle consumers");
        }
    }

    /// Decides one batch: commit, then statuses, dead letters and XACK. Returns
    /// `Some(exit)` when the shard must stop.
    async fn process(&self, batch: &[StreamId]) -> Result<Option<ShardExit>, WorkerError> {
        self.set_oldest(batch.first());
        if let Some(CrashPoint::StallAfterRead(stall)) = self.ctx.worker.crash_point {
            tracing::warn!(?stall, "crash point stall_after_read: holding the batch");
            tokio::time::sleep(stall).await;
        }
        let mut entries = Vec::with_capacity(batch.len());
        let mut dead = Vec::new();
        for item in batch {
            match stream::decode(item) {
                Ok(entry) => entries.push(entry),
                Err(letter) => {
                    tracing::warn!(stream_id = %letter.source_id, reason = %letter.reason, "dead-lettering undecodable entry");
                    dead.push(*letter);
                }
            }
        }
        // A span of its own, linked to each accepting request, only while spans are
        // exported (none otherwise: nothing to pay).
        if shared::telemetry::exporting() {
            // A root: one trace per batch, not one per shard ownership (days long).
            let span = tracing::info_span!(
                parent: None,
                "batch",
                shard = self.shard.get(),
                size = batch.len()
            );
            shared::telemetry::link_to(
                &span,
                entries
                    .iter()
                    .filter_map(|e| e.message.request().traceparent.as_deref()),
            );
            self.decide(batch, entries, dead).instrument(span).await
        } else {
            self.decide(batch, entries, dead).await
        }
    }

    /// [`Self::process`] once the batch is decoded.
    async fn decide(
        &self,
        batch: &[StreamId],
        entries: Vec<Entry>,
        mut dead: Vec<DeadLetter>,
    ) -> Result<Option<ShardExit>, WorkerError> {
        let committed = if entries.is_empty() {
            Vec::new()
        } else {
            match self.commit_with_retry(&entries).await {
                Ok((committed, refused)) => {
                    dead.extend(refused);
                    committed
                }
                Err(exit) => return Ok(Some(exit)),
            }
        };
        if self.ctx.worker.crash_point == Some(CrashPoint::AfterCommit) && !committed.is_empty() {
            tracing::error!("crash point after_commit reached: exiting before XACK");
            std::process::exit(CRASH_EXIT_CODE);
        }
        if tracing::enabled!(tracing::Level::DEBUG) {
            let by_id: HashMap<Uuid, &Committed> =
                committed.iter().map(|c| (c.status.request_id, c)).collect();
            for entry in &entries {
                let request = entry.message.request();
                if let Some(c) = by_id.get(&request.request_id) {
                    tracing::debug!(
                        request_id = %request.request_id,
                        stream_id = %entry.id,
                        trace_id = %request.trace_id,
                        status = %c.status.status,
                        redelivered = !c.new,
                        "decided"
                    );
                }
            }
        }
        if let Err(exit) = self.record_undecodable(&dead).await {
            return Ok(Some(exit));
        }
        let statuses: Vec<StatusRecord> = committed.into_iter().map(|c| c.status).collect();
        let undecodable = dead.iter().filter(|d| d.status.is_none()).count();
        let handled: Vec<stream::Handled> = batch.iter().map(stream::Handled::of).collect();
        let mut backoff = Backoff::default();
        loop {
            let mut conn = self.ctx.redis.clone();
            let settled = stream::settle(
                &mut conn,
                &self.ctx.keys,
                self.shard,
                self.fence,
                &statuses,
                &dead,
                &handled,
                self.ctx.retention,
            )
            .await;
            match settled {
                Ok(settled) => {
                    // Counted once settled: an entry abandoned before is read again.
                    metrics::counter!(names::DEAD_LETTERS, "cause" => "undecodable")
                        .increment(u64::try_from(undecodable).unwrap_or(u64::MAX));
                    if let Some(error) = settled.trim_error {
                        tracing::warn!(%error, "could not trim decided entries from the stream");
                    }
                    if let Some(error) = settled.notify_error {
                        let first = !self
                            .note_refused
                            .swap(true, std::sync::atomic::Ordering::Relaxed);
                        if first {
                            tracing::warn!(%error, "could not publish the settled note (logged once per shard ownership): long-polls learn of decisions only by reading again; does the Redis user have the channel's permission?");
                        }
                    }
                    return Ok(None);
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    metrics::counter!(names::RETRIES, "class" => "settle").increment(1);
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
    ) -> Result<(Vec<Committed>, Vec<DeadLetter>), ShardExit> {
        let mut backoff = Backoff::default();
        loop {
            let started = Instant::now();
            match db::commit_batch(
                &self.ctx.pool,
                self.shard,
                self.fence,
                entries,
                self.stall(),
            )
            .instrument(commit_span(entries.len()))
            .await
            {
                Ok(committed) => {
                    let took = started.elapsed();
                    tracing::debug!(size = entries.len(), ?took, "batch committed");
                    record_batch(entries.len(), took);
                    record_decisions(entries, &committed);
                    return Ok((committed, Vec::new()));
                }
                Err(WorkerError::Fenced { .. }) => {
                    metrics::counter!(names::FENCE_REFUSALS).increment(1);
                    tracing::warn!("fencing token superseded: another worker owns this shard now");
                    return Err(ShardExit::Fenced);
                }
                Err(e) if e.is_transient() => {
                    metrics::counter!(names::RETRIES, "class" => "commit").increment(1);
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
    ) -> Result<(Vec<Committed>, Vec<DeadLetter>), ShardExit> {
        let mut committed = Vec::with_capacity(entries.len());
        let mut dead = Vec::new();
        for entry in entries {
            let mut refusals = 0;
            let mut backoff = Backoff::default();
            loop {
                let one = std::slice::from_ref(entry);
                let started = Instant::now();
                match db::commit_batch(&self.ctx.pool, self.shard, self.fence, one, self.stall())
                    .instrument(commit_span(1))
                    .await
                {
                    Ok(c) => {
                        // Recorded now: a fenced or cancelled later entry drops the rest.
                        record_batch(1, started.elapsed());
                        record_decisions(one, &c);
                        committed.extend(c);
                        break;
                    }
                    Err(WorkerError::Fenced { .. }) => {
                        metrics::counter!(names::FENCE_REFUSALS).increment(1);
                        return Err(ShardExit::Fenced);
                    }
                    Err(e) if e.is_transient() => {
                        metrics::counter!(names::RETRIES, "class" => "commit").increment(1);
                    }
                    Err(e) => {
                        metrics::counter!(names::RETRIES, "class" => "refused").increment(1);
                        refusals += 1;
                        if refusals >= self.ctx.worker.max_attempts {
                            let reason =
                                format!("refused by the database {refusals} times: {}", chain(&e));
                            tracing::warn!(
                                request_id = %entry.message.request().request_id,
                                stream_id = %entry.id,
                                %reason,
                                "dead-lettering poison entry"
                            );
                            let mut letter = DeadLetter::refused(entry, reason);
                            let status = self.record_dead_letter(entry, &letter).await?;
                            if status.reason == Some(RejectReason::Unprocessable) {
                                metrics::counter!(names::DEAD_LETTERS, "cause" => "refused")
                                    .increment(1);
                                record_decision(&status);
                                letter.status = Some(status);
                                dead.push(letter);
                            } else {
                                // Decided meanwhile: not a dead letter after all.
                                committed.push(Committed { status, new: false });
                            }
                            break;
                        }
                    }
                }
                if self.sleep_or_cancel(backoff.next_delay()).await {
                    return Err(ShardExit::Cancelled);
                }
            }
        }
        Ok((committed, dead))
    }

    /// Records a dead letter's decision in PostgreSQL (`db::record_dead_letter`),
    /// retrying whatever goes wrong: recording it is not up to the entry any more.
    async fn record_dead_letter(
        &self,
        entry: &Entry,
        letter: &DeadLetter,
    ) -> Result<StatusRecord, ShardExit> {
        self.until_recorded(|| {
            db::record_dead_letter(&self.ctx.pool, self.shard, self.fence, entry, letter)
        })
        .await
    }

    /// Records the dead letters of undecodable entries in PostgreSQL
    /// (`db::record_undecodable`), retrying whatever goes wrong, before they are
    /// acknowledged.
    async fn record_undecodable(&self, dead: &[DeadLetter]) -> Result<(), ShardExit> {
        let undecodable: Vec<&DeadLetter> = dead.iter().filter(|d| d.status.is_none()).collect();
        if undecodable.is_empty() {
            return Ok(());
        }
        self.until_recorded(|| {
            db::record_undecodable(&self.ctx.pool, self.shard, self.fence, &undecodable)
        })
        .await
    }

    /// Runs `record` until it succeeds: recording a dead letter is not up to the entry
    /// any more, so every failure is retried with backoff (a fence ends it; a letter
    /// PostgreSQL cannot store whole is recorded without its fields, see
    /// `db::insert_dead_letter`).
    async fn until_recorded<T, F, Fut>(&self, record: F) -> Result<T, ShardExit>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, WorkerError>>,
    {
        let mut backoff = Backoff::default();
        loop {
            match record().await {
                Ok(done) => return Ok(done),
                Err(WorkerError::Fenced { .. }) => {
                    metrics::counter!(names::FENCE_REFUSALS).increment(1);
                    return Err(ShardExit::Fenced);
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    metrics::counter!(names::RETRIES, "class" => "dead_letter").increment(1);
                    tracing::warn!(error = %chain(&e), ?delay, "dead letter not recorded; retrying");
                    if self.sleep_or_cancel(delay).await {
                        return Err(ShardExit::Cancelled);
                    }
                }
            }
        }
    }
}

/// The span of one commit attempt while spans are exported; none otherwise.
fn commit_span(size: usize) -> tracing::Span {
    if shared::telemetry::exporting() {
        tracing::info_span!("commit", size)
    } else {
        tracing::Span::none()
    }
}

/// Marks a shard owned by this worker (`ticketnest_shard_owned` 1) for as long as it
/// lives; 0, and no lag, once its task ends.
struct Owned(String);

impl Owned {
    fn mark(shard: Shard) -> Self {
        let label = shard.to_string();
        metrics::gauge!(names::SHARD_OWNED, "shard" => label.clone()).set(1.0);
        Self(label)
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        metrics::gauge!(names::SHARD_OWNED, "shard" => self.0.clone()).set(0.0);
        metrics::gauge!(names::SHARD_LAG, "shard" => self.0.clone()).set(0.0);
    }
}

impl ShardTask {
    /// Notes the oldest entry in hand (the first of the batch being decided: everything
    /// before it is decided), or none.
    fn set_oldest(&self, first: Option<&StreamId>) {
        let ms = first
            .and_then(|e| EntryId::parse(&e.id))
            .map_or(0, |id| id.ms);
        self.oldest.store(ms, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Registers, at 0, the counters that count rare events (every label value they take),
/// so they are in `/metrics` from the start. A series that first appears at 1 hides
/// that first event from `rate()`/`increase()` (Prometheus sees no change), and a
/// dashboard shows "no data" instead of 0 for a worker that never retried; the first
/// fence refusal or dead letter is exactly the one an operator must see.
pub fn register_counters() {
    metrics::counter!(names::LEASES_ACQUIRED).increment(0);
    metrics::counter!(names::LEASES_LOST).increment(0);
    metrics::counter!(names::FENCE_REFUSALS).increment(0);
    metrics::counter!(names::BATCHES).increment(0);
    for class in ["commit", "refused", "settle", "dead_letter", "shard"] {
        metrics::counter!(names::RETRIES, "class" => class).increment(0);
    }
    for cause in ["undecodable", "refused"] {
        metrics::counter!(names::DEAD_LETTERS, "cause" => cause).increment(0);
    }
}

/// Sets `ticketnest_shard_lag_seconds` of `shard` from the stream time of its oldest
/// entry in hand (0: none). Entry ids carry Redis's clock; the age is taken on this
/// process's.
pub fn record_lag(shard: Shard, oldest_ms: i64) {
    let age = if oldest_ms <= 0 {
        0.0
    } else {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        #[allow(clippy::cast_precision_loss)] // a gauge in seconds
        let seconds = now.saturating_sub(oldest_ms).max(0) as f64 / 1000.0;
        seconds
    };
    metrics::gauge!(names::SHARD_LAG, "shard" => shard.to_string()).set(age);
}

/// One committed batch: its count, size and transaction time.
#[allow(clippy::cast_precision_loss)] // histograms are f64
fn record_batch(size: usize, took: Duration) {
    metrics::counter!(names::BATCHES).increment(1);
    metrics::histogram!(names::BATCH_SIZE).record(size as f64);
    metrics::histogram!(names::COMMIT_DURATION).record(took);
}

/// The decisions this batch made on its own entries (not redeliveries found decided,
/// nor the earlier requests whose bookings it promoted or released).
fn record_decisions(entries: &[Entry], committed: &[Committed]) {
    let asked: HashSet<Uuid> = entries
        .iter()
        .map(|e| e.message.request().request_id)
        .collect();
    for c in committed
        .iter()
        .filter(|c| c.new && asked.contains(&c.status.request_id))
    {
        record_decision(&c.status);
    }
}

/// Counts one decision; the counter of each (outcome, reason) is looked up once per
/// thread, not once per decision.
fn record_decision(status: &StatusRecord) {
    type Counters = HashMap<(&'static str, &'static str), metrics::Counter>;
    thread_local! {
        static COUNTERS: std::cell::RefCell<Counters> = std::cell::RefCell::new(Counters::new());
    }
    let outcome = status.status.as_str();
    let reason = status.reason.map_or("none", RejectReason::as_str);
    COUNTERS.with(|counters| {
        counters
            .borrow_mut()
            .entry((outcome, reason))
            .or_insert_with(
                || metrics::counter!(names::DECISIONS, "outcome" => outcome, "reason" => reason),
            )
            .increment(1);
    });
}
