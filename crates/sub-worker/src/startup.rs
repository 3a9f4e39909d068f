//! Building and running a worker.

use std::sync::Arc;

use shared::{config::SubWorkerConfig, error::SharedError, keys::Keys, stream::Retention};
use tokio_util::sync::CancellationToken;

use crate::{context::Context, lease::LeaseManager};

/// A worker connected and ready to run.
pub struct Worker {
    ctx: Arc<Context>,
}

impl Worker {
    /// Migrates, connects, and checks that Redis is one TicketNest can run on.
    ///
    /// # Errors
    /// PostgreSQL or Redis unreachable, migrations failing, or a shard count out of range.
    pub async fn build(config: SubWorkerConfig) -> Result<Self, SharedError> {
        let keys = Keys::new(config.redis.prefix.clone(), config.shards.shards)
            .map_err(SharedError::InvalidSetting)?;
        shared::db::migrate(&config.database).await?;
        // A session idle inside a transaction for a lease TTL belongs to a paused
        // worker whose shard is moving on without it.
        let pool = shared::db::build_worker_pool(&config.database, config.worker.lease_ttl)?;
        shared::db::check_shard_count(&pool, config.shards.shards).await?;
        let mut redis = shared::queue::connect_shared(&config.redis).await?;
        shared::queue::check_server(&mut redis).await?;
        Ok(Self {
            ctx: Arc::new(Context {
                pool,
                redis,
                keys,
                retention: Retention {
                    status: config.redis.status_ttl,
                    entries: config.worker.stream_retention,
                    dead_letters: config.worker.dead_letter_max_len,
                },
                redis_config: config.redis,
                worker: config.worker,
            }),
        })
    }

    pub fn worker_id(&self) -> &str {
        &self.ctx.worker.worker_id
    }

    /// Runs until `shutdown` is cancelled; then finishes the batches in hand, commits
    /// and acknowledges them, and releases every lease before returning.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) {
        LeaseManager::new(self.ctx).run(shutdown).await;
    }
}
