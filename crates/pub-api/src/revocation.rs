//! Keeps the set of deleted users fresh, so their tokens stop working.
//!
//! A JWT stays valid until it expires; checking the user row on every request would put
//! PostgreSQL on the booking hot path. Instead each API process holds the (small) set of
//! deleted user ids and reloads it every `REFRESH_INTERVAL`: a deleted user is refused
//! within about a second, at the cost of one cheap query per second per process.
//! The worker re-checks users inside its transaction, so nothing a deleted user sneaks
//! in during that second is ever confirmed.

use std::{collections::HashSet, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{db, error::ApiError, state::AppState};

pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// Loads the set once.
///
/// # Errors
/// The database is unavailable.
pub async fn refresh(state: &AppState) -> Result<(), ApiError> {
    let ids: HashSet<i64> = db::revoked_user_ids(&state.pool)
        .await?
        .into_iter()
        .collect();
    match state.revoked.write() {
        Ok(mut set) => *set = ids,
        Err(poisoned) => *poisoned.into_inner() = ids,
    }
    Ok(())
}

/// Reloads the set until `shutdown` is cancelled. Failures keep the previous set.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(REFRESH_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = interval.tick() => {
                if let Err(e) = refresh(&state).await {
                    tracing::warn!(error = %e, "could not refresh revoked users; keeping the previous set");
                }
            }
        }
    }
}
