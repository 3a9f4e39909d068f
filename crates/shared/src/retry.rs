//! Waiting for dependencies at startup.
//!
//! A service started before PostgreSQL or Redis (a reboot, a deploy in the wrong order)
//! should wait for them rather than exit and rely on a supervisor's restart policy. Only
//! "unavailable" errors are retried; anything else (a failing migration, a bad
//! setting) ends startup at once.

use std::{future::Future, time::Duration};

use tokio_util::sync::CancellationToken;

const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(5);

/// Runs `attempt` until it succeeds, `retryable` says its error is not worth retrying,
/// or `shutdown` is cancelled (then the last error is returned). Delays double from
/// 100 ms up to 5 s.
///
/// # Errors
/// The first non-retryable error, or the last error when shut down while waiting.
pub async fn until_available<T, E, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    retryable: impl Fn(&E) -> bool,
    mut attempt: F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delay = FIRST_DELAY;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if retryable(&e) && !shutdown.is_cancelled() => {
                tracing::warn!(error = %e, ?delay, "{what}: a dependency is unavailable; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return Err(e),
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(MAX_DELAY);
            }
            Err(e) => return Err(e),
        }
    }
}
