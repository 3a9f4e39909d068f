//! Shard leases: which worker owns which shard, and for how long.
//!
//! A lease is a Redis key (`Keys::lease`) set with `SET NX PX` to this process's
//! instance id and renewed by compare-and-extend, so only its holder can extend or
//! release it. Redis leases alone cannot stop a paused process from committing after
//! its lease expired, so every acquisition also takes a fencing token from PostgreSQL
//! (`shard_fences`), which each batch transaction checks: the lease decides who should
//! work, the fence decides whose commits count.
//!
//! Balance: every worker announces itself in `Keys::workers` each tick and holds at
//! most `ceil(shards / live workers)` shards. A worker above its share hands the
//! excess over (finishes the batch in hand, then releases the lease); one below it
//! takes free shards. A crashed worker's membership and leases expire after the lease
//! TTL; a worker that stops gracefully leaves the set and releases its leases at once.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use rand::Rng;
use redis::Script;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use shared::shard::{FenceToken, Shard};

use crate::{
    context::Context,
    db,
    error::WorkerError,
    shard::{ShardExit, ShardTask},
};

// The lease scripts are declared `allow-oom`: each writes a few bytes, and when Redis
// is over its `maxmemory` (the API refusing bookings by then) the workers must still
// take, keep and hand over shards, since deciding and trimming is what frees memory.

/// Extends the lease only if this instance still holds it.
const RENEW_SCRIPT: &str = r"#!lua flags=allow-oom
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0";

/// Deletes the lease only if this instance still holds it.
const RELEASE_SCRIPT: &str = r"#!lua flags=allow-oom
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// Refreshes this instance's membership, drops expired members (by Redis's clock, so
/// workers' clocks never matter) and returns how many workers are live.
const HEARTBEAT_SCRIPT: &str = r"#!lua flags=allow-oom
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])";

/// Shortest pause between two rounds of the lease loop.
const MIN_TICK: Duration = Duration::from_millis(50);
/// Longest pause: acquisition and renewal happen at least this often, so a freed
/// shard is picked up within about this long.
const MAX_TICK: Duration = Duration::from_millis(500);

/// A shard whose lease and fencing token were taken: (shard, (fence, lease set at)).
type Acquired = (Shard, (FenceToken, Instant));

struct Held {
    fence: FenceToken,
    /// When the lease was last set or extended, by this process's clock. Past
    /// `renewed + ttl` the lease may belong to someone else.
    renewed: Instant,
    cancel: CancellationToken,
    task: JoinHandle<ShardExit>,
    /// The task's oldest entry in hand (stream ms; 0: none), for the lag gauge.
    oldest: Arc<std::sync::atomic::AtomicI64>,
}

pub struct LeaseManager {
    ctx: Arc<Context>,
    /// Unique per process, so a restarted worker with the same id never mistakes its
    /// predecessor's lease for its own.
    instance: String,
    held: HashMap<Shard, Held>,
    /// Tasks cancelled (shard handed over, or its lease lost) and still finishing the
    /// batch in hand. Their lease is released when they end (a no-op if it is no longer
    /// ours), and the shard is not taken again meanwhile, so one process never runs two
    /// tasks for a shard.
    draining: HashMap<Shard, JoinHandle<ShardExit>>,
    /// The scan for free shards in flight, if any (see `start_acquiring`).
    acquiring: Option<JoinHandle<Vec<Acquired>>>,
    renew: Script,
    release: Script,
    heartbeat: Script,
}

impl LeaseManager {
    pub fn new(ctx: Arc<Context>) -> Self {
        let instance = format!("{}/{}", ctx.worker.worker_id, uuid::Uuid::new_v4().simple());
        Self {
            ctx,
            instance,
            held: HashMap::new(),
            draining: HashMap::new(),
            acquiring: None,
            renew: Script::new(RENEW_SCRIPT),
            release: Script::new(RELEASE_SCRIPT),
            heartbeat: Script::new(HEARTBEAT_SCRIPT),
        }
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ctx.worker.lease_ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// Heartbeats, renews, balances and reaps until `shutdown`, then leaves the worker
    /// set and releases everything.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let tick = (self.ctx.worker.lease_ttl / 10).clamp(MIN_TICK, MAX_TICK);
        tracing::info!(instance = %self.instance, shards = self.ctx.keys.shard_count(), "worker started");
        loop {
            self.reap().await;
            self.collect_acquired(&shutdown).await;
            self.renew_all().await;
            shared::meter::record_pool(&self.ctx.pool);
            for (shard, held) in &self.held {
                crate::shard::record_lag(
                    *shard,
                    held.oldest.load(std::sync::atomic::Ordering::Relaxed),
                );
            }
            match self.live_workers().await {
                Ok(live) => {
                    self.ctx.readiness.set_ready();
                    let share = fair_share(self.ctx.keys.shards().count(), live);
                    if self.held.len() > share {
                        self.hand_over(self.held.len() - share);
                    } else if self.held.len() < share {
                        self.start_acquiring(share - self.held.len());
                    }
                }
                Err(e) => {
                    self.ctx
                        .readiness
                        .set_not_ready("redis: the worker heartbeat failed");
                    tracing::warn!(error = %e, "worker heartbeat failed; keeping current shards")
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(tick) => {}
            }
        }
        self.ctx.readiness.set_not_ready("stopping");
        self.leave().await;
        self.release_all().await;
    }

    async fn live_workers(&self) -> Result<usize, WorkerError> {
        let mut conn = self.ctx.redis.clone();
        let live: i64 = self
            .heartbeat
            .key(self.ctx.keys.workers())
            .arg(&self.instance)
            .arg(self.ttl_ms())
            .invoke_async(&mut conn)
            .await?;
        Ok(usize::try_from(live).unwrap_or(1).max(1))
    }

    /// Leaves the worker set, so the others raise their share at their next tick.
    async fn leave(&self) {
        let mut conn = self.ctx.redis.clone();
        let left: redis::RedisResult<i64> = redis::cmd("ZREM")
            .arg(self.ctx.keys.workers())
            .arg(&self.instance)
            .query_async(&mut conn)
            .await;
        if let Err(e) = left {
            tracing::warn!(error = %e, "could not leave the worker set; membership will expire");
        }
    }

    /// Reaps ended tasks: held ones that stopped by themselves (fenced) and drained
    /// ones; releases their leases.
    async fn reap(&mut self) {
        let ended: Vec<Shard> = self
            .held
            .iter()
            .filter(|(_, h)| h.task.is_finished())
            .map(|(shard, _)| *shard)
            .collect();
        for shard in ended {
            if let Some(held) = self.held.remove(&shard) {
                let exit = held.task.await;
                if matches!(exit, Ok(ShardExit::Fenced)) {
                    metrics::counter!(shared::meter::names::LEASES_LOST).increment(1);
                }
                tracing::info!(shard = shard.get(), ?exit, "shard task ended");
                self.release(shard).await;
            }
        }
        let drained: Vec<Shard> = self
            .draining
            .iter()
            .filter(|(_, task)| task.is_finished())
            .map(|(shard, _)| *shard)
            .collect();
        for shard in drained {
            if let Some(task) = self.draining.remove(&shard) {
                let exit = task.await;
                tracing::info!(shard = shard.get(), ?exit, "shard handed over");
                self.release(shard).await;
            }
        }
    }

    /// Cancels the task of `count` held shards (the highest-numbered); each finishes its
    /// batch and its lease is released by `reap`. Not awaited here: a task finishing a
    /// batch must not hold up renewals.
    fn hand_over(&mut self, count: usize) {
        let mut shards: Vec<Shard> = self.held.keys().copied().collect();
        shards.sort_unstable_by(|a, b| b.cmp(a));
        for shard in shards.into_iter().take(count) {
            if let Some(held) = self.held.remove(&shard) {
                tracing::info!(
                    shard = shard.get(),
                    fence = held.fence.get(),
                    "handing shard over to rebalance"
                );
                held.cancel.cancel();
                self.draining.insert(shard, held.task);
            }
        }
    }

    async fn renew_all(&mut self) {
        let ttl = self.ctx.worker.lease_ttl;
        let mut lost = Vec::new();
        for (shard, held) in &mut self.held {
            let mut conn = self.ctx.redis.clone();
            let renewed: redis::RedisResult<i64> = self
                .renew
                .key(self.ctx.keys.lease(*shard))
                .arg(&self.instance)
                .arg(ttl.as_millis().to_string())
                .invoke_async(&mut conn)
                .await;
            match renewed {
                Ok(1) => held.renewed = Instant::now(),
                Ok(_) => {
                    tracing::warn!(shard = shard.get(), "lease lost: another worker holds it");
                    lost.push(*shard);
                }
                Err(e) if held.renewed.elapsed() >= ttl => {
                    tracing::warn!(shard = shard.get(), error = %e, "lease expired while Redis was unreachable");
                    lost.push(*shard);
                }
                Err(e) => {
                    tracing::warn!(shard = shard.get(), error = %e, "lease renewal failed; will retry")
                }
            }
        }
        for shard in lost {
            metrics::counter!(shared::meter::names::LEASES_LOST).increment(1);
            if let Some(held) = self.held.remove(&shard) {
                held.cancel.cancel();
                self.draining.insert(shard, held.task);
            }
        }
    }

    /// Starts a scan for up to `want` free shards in a task of its own, unless one is
    /// already running. Acquiring waits on PostgreSQL for each fencing token; in its own
    /// task it can neither delay renewals nor be cut in half (a lease taken but never
    /// used would leave its shard idle until it expired).
    fn start_acquiring(&mut self, want: usize) {
        if self.acquiring.is_some() || want == 0 {
            return;
        }
        let skip: Vec<Shard> = self
            .held
            .keys()
            .chain(self.draining.keys())
            .copied()
            .collect();
        let ctx = self.ctx.clone();
        let instance = self.instance.clone();
        let release = self.release.clone();
        self.acquiring = Some(tokio::spawn(async move {
            // Start the scan at a random shard, so workers starting together do not all
            // race for the same ones.
            let mut shards: Vec<Shard> = ctx.keys.shards().collect();
            let start = rand::rng().random_range(0..shards.len());
            shards.rotate_left(start);
            let mut leased = Vec::new();
            for shard in shards {
                if leased.len() >= want || skip.contains(&shard) {
                    continue;
                }
                match take_lease(&ctx, &instance, shard).await {
                    Ok(Some(at)) => leased.push((shard, at)),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(shard = shard.get(), error = %e, "could not lease shard")
                    }
                }
            }
            // The fencing tokens at once, each waiting a bounded time for its row: a
            // fence row held by a paused previous owner does not hold up the others. A
            // lease taken here is renewed only once the scan ends; should it expire
            // first, the fence still decides whose commits count.
            let fenced = futures_util::future::join_all(leased.into_iter().map(|(shard, at)| {
                let (ctx, instance) = (&ctx, &instance);
                async move {
                    let wait = ctx.worker.lease_ttl / 4;
                    (
                        shard,
                        at,
                        db::acquire_fence(&ctx.pool, shard, instance, wait).await,
                    )
                }
            }))
            .await;
            let mut taken = Vec::new();
            for (shard, at, fence) in fenced {
                match fence {
                    Ok(fence) => taken.push((shard, (fence, at))),
                    Err(e) => {
                        tracing::warn!(shard = shard.get(), error = %e, "could not take the shard's fencing token; will retry");
                        release_lease(&ctx, &release, &instance, shard).await;
                    }
                }
            }
            taken
        }));
    }

    /// Starts a shard task for every shard the finished scan acquired.
    async fn collect_acquired(&mut self, shutdown: &CancellationToken) {
        let finished = self.acquiring.as_ref().is_some_and(JoinHandle::is_finished);
        if !finished {
            return;
        }
        let Some(scan) = self.acquiring.take() else {
            return;
        };
        for (shard, (fence, renewed)) in scan.await.unwrap_or_default() {
            if shutdown.is_cancelled() {
                self.release(shard).await;
                continue;
            }
            metrics::counter!(shared::meter::names::LEASES_ACQUIRED).increment(1);
            let cancel = shutdown.child_token();
            let oldest = Arc::new(std::sync::atomic::AtomicI64::new(0));
            let task = tokio::spawn(
                ShardTask::new(
                    self.ctx.clone(),
                    shard,
                    fence,
                    cancel.clone(),
                    oldest.clone(),
                )
                .run(),
            );
            self.held.insert(
                shard,
                Held {
                    fence,
                    renewed,
                    cancel,
                    task,
                    oldest,
                },
            );
        }
    }

    async fn release(&self, shard: Shard) {
        release_lease(&self.ctx, &self.release, &self.instance, shard).await;
    }

    /// Graceful stop: let every shard task finish its batch, then release its lease so
    /// another worker can take over at once instead of after the TTL.
    async fn release_all(&mut self) {
        if let Some(scan) = self.acquiring.take() {
            for (shard, _) in scan.await.unwrap_or_default() {
                self.release(shard).await;
            }
        }
        for held in self.held.values() {
            held.cancel.cancel();
        }
        let held: Vec<(Shard, JoinHandle<ShardExit>)> = self
            .held
            .drain()
            .map(|(shard, h)| (shard, h.task))
            .chain(self.draining.drain())
            .collect();
        for (shard, task) in held {
            let exit = task.await;
            tracing::info!(shard = shard.get(), ?exit, "shard released");
            self.release(shard).await;
        }
        tracing::info!("all leases released");
    }
}

/// Sets the lease if nobody holds it (`SET NX PX`); 1 when taken.
const TAKE_SCRIPT: &str = r"#!lua flags=allow-oom
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0";

/// Takes one shard's lease; returns when, or `None` when another worker holds it.
async fn take_lease(
    ctx: &Context,
    instance: &str,
    shard: Shard,
) -> Result<Option<Instant>, WorkerError> {
    let mut conn = ctx.redis.clone();
    let ttl_ms = u64::try_from(ctx.worker.lease_ttl.as_millis()).unwrap_or(u64::MAX);
    let taken: i64 = Script::new(TAKE_SCRIPT)
        .key(ctx.keys.lease(shard))
        .arg(instance)
        .arg(ttl_ms)
        .invoke_async(&mut conn)
        .await?;
    Ok((taken == 1).then(Instant::now))
}

/// Deletes a shard's lease if `instance` still holds it.
async fn release_lease(ctx: &Context, script: &Script, instance: &str, shard: Shard) {
    let mut conn = ctx.redis.clone();
    let released: redis::RedisResult<i64> = script
        .key(ctx.keys.lease(shard))
        .arg(instance)
        .invoke_async(&mut conn)
        .await;
    if let Err(e) = released {
        tracing::warn!(shard = shard.get(), error = %e, "could not release lease; it will expire");
    }
}

/// The most shards one of `live` workers may hold: `ceil(shards / live)`.
pub fn fair_share(shards: usize, live: usize) -> usize {
    shards.div_ceil(live.max(1))
}

#[cfg(test)]
mod tests {
    use super::fair_share;

    #[test]
    fn the_fair_share_is_the_ceiling_of_shards_over_workers() {
        assert_eq!(fair_share(16, 1), 16);
        assert_eq!(fair_share(16, 3), 6);
        assert_eq!(fair_share(16, 4), 4);
        assert_eq!(fair_share(16, 5), 4);
        assert_eq!(fair_share(4, 8), 1);
        assert_eq!(fair_share(16, 0), 16);
    }
}
