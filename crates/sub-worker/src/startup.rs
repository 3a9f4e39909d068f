//! Building and running a worker.

use std::sync::Arc;

use shared::{
    config::{SubWorkerConfig, DEFAULT_WORKER_HTTP_ADDR},
    error::SharedError,
    keys::Keys,
    probe::{self, Otherwise, Readiness},
    stream::Retention,
};
use tokio_util::sync::CancellationToken;

use crate::{context::Context, lease::LeaseManager};

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("could not bind TICKETNEST_WORKER_HTTP_ADDR {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Dependency(#[from] SharedError),
}

/// A worker connected and ready to run.
pub struct Worker {
    ctx: Arc<Context>,
    /// Stops the HTTP listener (`start`) once the worker has stopped.
    probe_stop: Option<CancellationToken>,
}

impl Worker {
    /// Binds `TICKETNEST_WORKER_HTTP_ADDR` and from that moment answers `/healthz`,
    /// `/readyz` (503 naming what it waits for) and `/metrics` there, while it connects
    /// to PostgreSQL and Redis and migrates, retrying whatever is worth waiting for
    /// until `shutdown`.
    ///
    /// # Errors
    /// The address taken, a failure not worth waiting for, or the last failure when
    /// shut down meanwhile.
    pub async fn start(
        config: SubWorkerConfig,
        shutdown: &CancellationToken,
    ) -> Result<Self, StartError> {
        shared::meter::install();
        crate::shard::register_counters();
        let readiness = Readiness::starting("connecting to PostgreSQL and Redis");
        let probe_stop = match Self::listen(&config.worker.http_addr).await? {
            Some(listener) => probe::spawn(listener, readiness.clone(), Otherwise::NotFound).0,
            None => CancellationToken::new(),
        };
        let built = probe::until_started(
            "sub-worker startup",
            shutdown,
            &readiness,
            SharedError::is_unavailable,
            || Self::build_with(config.clone(), readiness.clone()),
        )
        .await;
        match built {
            Ok(mut worker) => {
                worker.probe_stop = Some(probe_stop);
                Ok(worker)
            }
            Err(e) => {
                probe_stop.cancel();
                Err(e.into())
            }
        }
    }

    /// Binds the HTTP listener: `addr` as configured (failing to is fatal), or the
    /// default one when none is configured (taken: `None`, with a warning: a second
    /// worker on a host without an address of its own still works).
    async fn listen(addr: &Option<String>) -> Result<Option<tokio::net::TcpListener>, StartError> {
        let chosen = addr.as_deref().unwrap_or(DEFAULT_WORKER_HTTP_ADDR);
        let listener = match tokio::net::TcpListener::bind(chosen).await {
            Ok(listener) => listener,
            Err(source) if addr.is_some() => {
                return Err(StartError::Bind {
                    addr: chosen.to_owned(),
                    source,
                })
            }
            Err(e) => {
                tracing::warn!(addr = chosen, error = %e, "the default HTTP listener address is taken: running without /healthz, /readyz and /metrics (set TICKETNEST_WORKER_HTTP_ADDR for each worker on this host)");
                return Ok(None);
            }
        };
        if let Ok(local) = listener.local_addr() {
            tracing::info!(addr = %local, "worker HTTP listener: /healthz, /readyz, /metrics");
        }
        Ok(Some(listener))
    }

    /// Migrates, connects, and checks that Redis is one TicketNest can run on (no HTTP
    /// listener: `start` adds it).
    ///
    /// # Errors
    /// PostgreSQL or Redis unreachable, migrations failing, or a shard count out of range.
    pub async fn build(config: SubWorkerConfig) -> Result<Self, SharedError> {
        Self::build_with(config, Readiness::starting("starting")).await
    }

    async fn build_with(
        config: SubWorkerConfig,
        readiness: Readiness,
    ) -> Result<Self, SharedError> {
        shared::meter::install();
        crate::shard::register_counters();
        let keys = Keys::new(config.redis.prefix.clone(), config.shards.shards)
            .map_err(SharedError::InvalidSetting)?;
        shared::db::migrate(&config.database).await?;
        // A session idle inside a transaction for a lease TTL belongs to a paused
        // worker whose shard is moving on without it.
        let pool = shared::db::build_worker_pool(&config.database, config.worker.lease_ttl)?;
        shared::db::check_shard_count(&pool, config.shards.shards).await?;
        let mut redis = shared::queue::connect_shared(&config.redis).await?;
        shared::queue::check_server(&mut redis).await?;
        readiness.set_not_ready("joining the workers");
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
                readiness,
            }),
            probe_stop: None,
        })
    }

    pub fn worker_id(&self) -> &str {
        &self.ctx.worker.worker_id
    }

    /// Runs until `shutdown` is cancelled; then finishes the batches in hand, commits
    /// and acknowledges them, and releases every lease before returning. The HTTP
    /// listener answers until then (`/readyz` 503 `stopping` meanwhile).
    pub async fn run_until_stopped(self, shutdown: CancellationToken) {
        let readiness = self.ctx.readiness.clone();
        let upkeep = tokio::spawn(shared::meter::upkeep(shutdown.child_token()));
        LeaseManager::new(self.ctx).run(shutdown).await;
        let _ = upkeep.await;
        readiness.set_not_ready("stopped");
        if let Some(stop) = self.probe_stop {
            stop.cancel();
        }
    }
}
