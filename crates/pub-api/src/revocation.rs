//! Keeps the set of deleted users fresh, so their tokens stop working.
//!
//! A JWT stays valid until it expires; checking the user row on every request would put
//! PostgreSQL on the booking hot path. Instead each API process holds the (small) set of
//! deleted user ids and refreshes it every `REFRESH_INTERVAL`: a deleted user is refused
//! within about a second. The worker re-checks users inside its transaction, so nothing
//! a deleted user sneaks in during that second is ever confirmed.
//!
//! # Incremental refreshes
//!
//! The first load reads every deleted user; later refreshes read only the users deleted
//! since, so a refresh costs an index probe however many users were ever deleted.
//!
//! "Since" is not a time. `deleted_at` is the deleting transaction's `now()`, its *start*
//! time: a transaction that starts, waits on a lock or does other work, and commits after
//! a refresh carries a `deleted_at` older than that refresh, and no fixed overlap bounds
//! how much older. Instead every deletion records the id of its transaction
//! (`users.deleted_xid`, set by a trigger, migration V3), and each refresh records,
//! from the same snapshot as its read, that snapshot's xmin: the oldest transaction
//! still running. Every transaction with an older id had finished, so its deletion (if
//! it committed) was in this read; a deletion this read missed was made by a transaction
//! with an id at or above xmin, and the next refresh reads exactly `deleted_xid >= xmin`.
//! Nothing is missed however late a transaction commits; the price is rereading the
//! deletions of transactions at or above xmin (a long-running transaction elsewhere
//! holds xmin back, so each refresh rereads at most the deletions made since it began).
//!
//! Two backstops:
//! * If xmin ever goes backwards (the database was replaced: a restore, a failover that
//!   lost transactions), ids no longer compare, and the next refresh is a full load.
//! * Every `FULL_RELOAD_INTERVAL` the set is loaded whole and replaced. No code path
//!   restores a deleted user (`ticketnest-admin` only deletes), so the set only grows;
//!   a user restored by hand in SQL gets in again at the next full load.

use std::{
    collections::HashSet,
    sync::RwLockWriteGuard,
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

use crate::{db, error::ApiError, state::AppState};

pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// How often the set is reloaded whole rather than incrementally.
pub const FULL_RELOAD_INTERVAL: Duration = Duration::from_secs(300);

/// Where the next refresh starts.
#[derive(Debug, Default)]
pub struct Refresher {
    /// The previous read's snapshot xmin; `None` until a full load has succeeded.
    since: Option<i64>,
    /// When the last full load succeeded.
    full_at: Option<Instant>,
}

impl Refresher {
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads the set whole the first time and every `FULL_RELOAD_INTERVAL`, else adds
    /// the users deleted since the previous refresh.
    ///
    /// # Errors
    /// The database is unavailable; the set and the starting point are left as they were.
    pub async fn refresh(&mut self, state: &AppState) -> Result<(), ApiError> {
        let since = match self.full_at {
            Some(at) if at.elapsed() < FULL_RELOAD_INTERVAL => self.since,
            _ => None,
        };
        let read = db::deleted_users(&state.pool, since).await?;
        match since {
            None => {
                *revoked_set(state) = read.ids.into_iter().collect::<HashSet<_>>();
                self.full_at = Some(Instant::now());
                self.since = Some(read.next_since);
            }
            Some(since) => {
                if !read.ids.is_empty() {
                    revoked_set(state).extend(read.ids);
                }
                if read.next_since < since {
                    tracing::warn!(
                        since,
                        now = read.next_since,
                        "PostgreSQL's transaction ids went backwards; reloading deleted users whole"
                    );
                    self.full_at = None;
                    self.since = None;
                } else {
                    self.since = Some(read.next_since);
                }
            }
        }
        Ok(())
    }
}

fn revoked_set(state: &AppState) -> RwLockWriteGuard<'_, HashSet<i64>> {
    match state.revoked.write() {
        Ok(set) => set,
        // A poisoned lock only means a writer panicked mid-update; the set is usable.
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Refreshes the set until `shutdown` is cancelled. Failures keep the previous set.
pub async fn run(state: AppState, mut refresher: Refresher, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(REFRESH_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = interval.tick() => {
                if let Err(e) = refresher.refresh(&state).await {
                    tracing::warn!(error = %e, "could not refresh revoked users; keeping the previous set");
                }
            }
        }
    }
}
