//! pub-api binary: telemetry, config, build, run until SIGINT/SIGTERM.

use anyhow::Context;
use pub_api::startup::Application;
use shared::config::{ApiConfig, FromVars};
use tokio_util::sync::CancellationToken;

/// mimalloc instead of glibc malloc: the allocator was a tenth of pub-api's profile
/// under load (many small, short-lived allocations across threads).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = shared::telemetry::init(env!("CARGO_BIN_NAME"), "info");
    let config = ApiConfig::from_env().context("invalid configuration")?;
    let shutdown = CancellationToken::new();
    tokio::spawn(shared::shutdown::cancel_on_signal(shutdown.clone()));
    let app = Application::start(config.clone(), &shutdown)
        .await
        .context("pub-api failed to start")?;
    tracing::info!(addr = %config.http.addr, port = app.port(), "pub-api listening");
    app.run_until_stopped(shutdown)
        .await
        .context("pub-api failed")?;
    tracing::info!("pub-api stopped");
    Ok(())
}
