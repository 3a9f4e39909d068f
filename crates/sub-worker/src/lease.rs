//! Shard leases: which worker owns which shard, and for how long.
//!
//! A lease is a Redis key (`Keys::lease`) set with `SET NX PX` to this process's
//! instance id and renewed by compare-and-extend, so only its holder can extend or
//! release it. Redis leases alone cannot stop a paused process from committing after
//! its lease expired, so every acquisition also takes a fencing token from PostgreSQL
//! (`shard_fences`), which each batch transaction checks: the lease decides who should
//! work, the fence decides whose commits count.
//!
//! This manager takes every free shard (greedy). Balancing across live workers is a
//! policy on top of `acquire` that the next issue adds; the shard task does not care.

use std::{collections::HashMap, sync::Arc, time::Instant};

use redis::Script;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    db,
    shard::{ShardExit, ShardTask},
    startup::Context,
};

/// Extends the lease only if this instance still holds it.
const RENEW_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0";

/// Deletes the lease only if this instance still holds it.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

struct Held {
    fence: i64,
    /// When the lease was last set or extended, by this process's clock. Past
    /// `renewed + ttl` the lease may belong to someone else.
    renewed: Instant,
    cancel: CancellationToken,
    task: JoinHandle<ShardExit>,
}

pub struct LeaseManager {
    ctx: Arc<Context>,
    /// Tasks of shards whose lease was lost, cancelled and still finishing. Their shard
    /// is not taken again until they end, so one process never runs two tasks for it.
    draining: HashMap<u32, JoinHandle<ShardExit>>,
    /// Unique per process, so a restarted worker with the same id never mistakes its
    /// predecessor's lease for its own.
    instance: String,
    held: HashMap<u32, Held>,
    renew: Script,
    release: Script,
}

impl LeaseManager {
    pub fn new(ctx: Arc<Context>) -> Self {
        let instance = format!("{}/{}", ctx.worker.worker_id, uuid::Uuid::new_v4().simple());
        Self {
            ctx,
            instance,
            draining: HashMap::new(),
            held: HashMap::new(),
            renew: Script::new(RENEW_SCRIPT),
            release: Script::new(RELEASE_SCRIPT),
        }
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ctx.worker.lease_ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// Renews, acquires and reaps until `shutdown`, then releases everything.
    pub async fn run(mut self, shutdown: CancellationToken) {
        // Renew well inside the TTL so one slow round trip does not lose a lease.
        let tick = self.ctx.worker.lease_ttl / 3;
        tracing::info!(instance = %self.instance, shards = self.ctx.keys.shard_count(), "worker started");
        loop {
            self.reap().await;
            self.renew_all().await;
            // Acquiring waits on PostgreSQL for the fencing token; bound it so a slow
            // database never delays the next renewal past the lease TTL.
            let _ = tokio::time::timeout(tick, self.acquire_free(&shutdown)).await;
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(tick) => {}
            }
        }
        self.release_all().await;
    }

    /// Removes shard tasks that ended by themselves (fenced) and lets their leases go;
    /// forgets drained tasks of lost shards.
    async fn reap(&mut self) {
        self.draining.retain(|_, task| !task.is_finished());
        let finished: Vec<u32> = self
            .held
            .iter()
            .filter(|(_, h)| h.task.is_finished())
            .map(|(shard, _)| *shard)
            .collect();
        for shard in finished {
            if let Some(held) = self.held.remove(&shard) {
                let exit = held.task.await;
                tracing::info!(shard, ?exit, "shard task ended");
                self.release(shard).await;
            }
        }
    }

    async fn renew_all(&mut self) {
        let ttl = self.ctx.worker.lease_ttl;
        let mut lost = Vec::new();
        for (shard, held) in &mut self.held {
            let key = self.ctx.keys.lease(*shard);
            let mut conn = self.ctx.redis.clone();
            let renewed: redis::RedisResult<i64> = self
                .renew
                .key(&key)
                .arg(&self.instance)
                .arg(self.ctx.worker.lease_ttl.as_millis().to_string())
                .invoke_async(&mut conn)
                .await;
            match renewed {
                Ok(1) => held.renewed = Instant::now(),
                Ok(_) => {
                    tracing::warn!(shard, "lease lost: another worker holds it");
                    lost.push(*shard);
                }
                Err(e) if held.renewed.elapsed() >= ttl => {
                    tracing::warn!(shard, error = %e, "lease expired while Redis was unreachable");
                    lost.push(*shard);
                }
                Err(e) => tracing::warn!(shard, error = %e, "lease renewal failed; will retry"),
            }
        }
        for shard in lost {
            if let Some(held) = self.held.remove(&shard) {
                // Not awaited here: a task finishing a batch must not hold up renewals.
                held.cancel.cancel();
                self.draining.insert(shard, held.task);
            }
        }
    }

    async fn acquire_free(&mut self, shutdown: &CancellationToken) {
        for shard in 0..self.ctx.keys.shard_count() {
            if shutdown.is_cancelled() {
                return;
            }
            if self.held.contains_key(&shard) || self.draining.contains_key(&shard) {
                continue;
            }
            match self.acquire(shard, shutdown).await {
                Ok(true) | Ok(false) => {}
                Err(e) => tracing::warn!(shard, error = %e, "could not acquire shard"),
            }
        }
    }

    /// Tries to take one shard: Redis lease, then a fencing token, then a task.
    async fn acquire(
        &mut self,
        shard: u32,
        shutdown: &CancellationToken,
    ) -> Result<bool, crate::error::WorkerError> {
        let key = self.ctx.keys.lease(shard);
        let mut conn = self.ctx.redis.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&self.instance)
            .arg("NX")
            .arg("PX")
            .arg(self.ttl_ms())
            .query_async(&mut conn)
            .await?;
        if set.is_none() {
            return Ok(false);
        }
        let renewed = Instant::now();
        let fence = match db::acquire_fence(&self.ctx.pool, shard, &self.instance).await {
            Ok(fence) => fence,
            Err(e) => {
                self.release(shard).await;
                return Err(e);
            }
        };
        let cancel = shutdown.child_token();
        let task =
            tokio::spawn(ShardTask::new(self.ctx.clone(), shard, fence, cancel.clone()).run());
        self.held.insert(
            shard,
            Held {
                fence,
                renewed,
                cancel,
                task,
            },
        );
        Ok(true)
    }

    async fn release(&self, shard: u32) {
        let mut conn = self.ctx.redis.clone();
        let released: redis::RedisResult<i64> = self
            .release
            .key(self.ctx.keys.lease(shard))
            .arg(&self.instance)
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = released {
            tracing::warn!(shard, error = %e, "could not release lease; it will expire");
        }
    }

    /// Graceful stop: let every shard task finish its batch, then release its lease so
    /// another worker can take over at once instead of after the TTL.
    async fn release_all(&mut self) {
        let held: Vec<(u32, Held)> = self.held.drain().collect();
        for (_, h) in &held {
            h.cancel.cancel();
        }
        for (shard, h) in held {
            let exit = h.task.await;
            tracing::info!(shard, fence = h.fence, ?exit, "shard released");
            self.release(shard).await;
        }
        for (_, task) in self.draining.drain() {
            let _ = task.await;
        }
        tracing::info!("all leases released");
    }
}
