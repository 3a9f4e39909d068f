//! sub-worker binary: telemetry, config, build, run until SIGINT/SIGTERM.

use anyhow::Context;
use shared::config::{FromVars, SubWorkerConfig};
use sub_worker::startup::Worker;
use tokio_util::sync::CancellationToken;

/// mimalloc instead of glibc malloc: the allocator was a tenth of pub-api's profile
/// under load (many small, short-lived allocations across threads).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = shared::telemetry::init(env!("CARGO_BIN_NAME"), "info");
    let config = SubWorkerConfig::from_env().context("invalid configuration")?;
    let shutdown = CancellationToken::new();
    tokio::spawn(shared::shutdown::cancel_on_signal(shutdown.clone()));
    let worker = Worker::start(config, &shutdown)
        .await
        .context("sub-worker failed to start")?;
    tracing::info!(worker_id = worker.worker_id(), "sub-worker running");
    worker.run_until_stopped(shutdown).await;
    tracing::info!("sub-worker stopped");
    Ok(())
}
