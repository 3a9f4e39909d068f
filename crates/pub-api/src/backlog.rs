//! Backpressure: how far behind each shard's workers are.
//!
//! Checking the backlog on every booking would cost a second Redis round trip on the
//! hot path. Instead each API process samples every shard's backlog (entries not yet
//! delivered to a worker plus entries delivered but not acknowledged, from
//! `XINFO GROUPS`) every `REFRESH_INTERVAL`, and bookings compare against the last
//! sample: an in-memory read. The bound is soft by one interval's worth of bookings.
//! Undecided entries are never trimmed to make room; clients are asked to retry instead.
//!
//! The same sampler reads Redis's memory use (`INFO memory`, every node of a cluster)
//! and turns bookings away once any node passes `TICKETNEST_REDIS_MEMORY_LIMIT_PERCENT`
//! of its `maxmemory`: with `noeviction` a full Redis would refuse the workers' status
//! writes too, so the API stops well before that.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use shared::{keys::Keys, meter::names, queue::QueueConnection, shard::Shard, stream};
use tokio_util::sync::CancellationToken;

pub const REFRESH_INTERVAL: Duration = Duration::from_millis(200);

/// The last sampled backlog of every shard.
#[derive(Clone)]
pub struct Backlog {
    per_shard: Arc<Vec<AtomicU64>>,
    limit: u64,
    /// Whether a Redis node was over `memory_limit_percent` at the last sample.
    memory_full: Arc<AtomicBool>,
    memory_limit_percent: u8,
}

impl Backlog {
    pub fn new(shards: u32, limit: u64, memory_limit_percent: u8) -> Self {
        Self {
            per_shard: Arc::new((0..shards).map(|_| AtomicU64::new(0)).collect()),
            limit,
            memory_full: Arc::new(AtomicBool::new(false)),
            memory_limit_percent,
        }
    }

    /// Whether Redis is too close to its memory limit to accept more bookings.
    pub fn is_memory_full(&self) -> bool {
        self.memory_full.load(Ordering::Relaxed)
    }

    /// Whether bookings for `shard` should be turned away for now.
    pub fn is_full(&self, shard: Shard) -> bool {
        self.per_shard
            .get(shard.index())
            .is_some_and(|n| n.load(Ordering::Relaxed) >= self.limit)
    }

    /// Samples Redis memory and every shard once. What cannot be sampled keeps its
    /// last value.
    pub async fn refresh(&self, conn: &QueueConnection, keys: &Keys) {
        match shared::queue::server_info(&mut conn.clone()).await {
            Ok(servers) => {
                let full = servers.iter().any(|s| {
                    s.memory_percent()
                        .is_some_and(|p| p >= u64::from(self.memory_limit_percent))
                });
                if full != self.memory_full.swap(full, Ordering::Relaxed) {
                    if full {
                        tracing::warn!(
                            limit_percent = self.memory_limit_percent,
                            "Redis is nearly out of memory: refusing bookings"
                        );
                    } else {
                        tracing::info!("Redis memory is below the limit again: accepting bookings");
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "could not sample Redis memory"),
        }
        let samples = futures_util::future::join_all(keys.shards().map(|shard| {
            let mut conn = conn.clone();
            async move { (shard, stream::backlog(&mut conn, keys, shard).await) }
        }))
        .await;
        for (shard, sample) in samples {
            let slot = self.per_shard.get(shard.index());
            match (sample, slot) {
                (Ok((backlog, pending)), Some(slot)) => {
                    slot.store(backlog, Ordering::Relaxed);
                    #[allow(clippy::cast_precision_loss)] // gauges are f64
                    {
                        let shard = shard.to_string();
                        metrics::gauge!(names::SHARD_BACKLOG, "shard" => shard.clone())
                            .set(backlog as f64);
                        metrics::gauge!(names::SHARD_PENDING, "shard" => shard).set(pending as f64);
                    }
                }
                (Err(e), _) => {
                    tracing::debug!(shard = shard.get(), error = %e, "could not sample backlog")
                }
                (Ok(_), None) => {}
            }
        }
    }

    /// Samples until `shutdown`.
    pub async fn run(self, conn: QueueConnection, keys: Keys, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(REFRESH_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = interval.tick() => self.refresh(&conn, &keys).await,
            }
        }
    }
}
