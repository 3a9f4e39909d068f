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
//! Backstops, for when transaction ids stop comparing (a restore; a crash or a failover
//! to a lagging replica, after which ids are handed out again):
//! * A refresh that fails (the server went away) makes the next one a full load.
//! * Each read also returns when the server started; another server is followed by a
//!   full load at the next refresh.
//! * If xmin ever goes backwards, the next refresh is a full load.
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
    /// When the server that answered the previous read started.
    server_started: Option<String>,
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
        let since = self.next_since();
        let read = match db::deleted_users(&state.pool, since).await {
            Ok(read) => read,
            Err(e) => {
                self.start_over();
                return Err(e);
            }
        };
        let same_server = self.server_started.as_deref() == Some(read.server_started.as_str());
        if since.is_some() && !same_server {
            tracing::warn!("PostgreSQL was restarted or replaced; reloading deleted users whole");
        }
        self.server_started = Some(read.server_started);
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
                if !same_server {
                    self.start_over();
                }
            }
        }
        Ok(())
    }

    /// Where the next read starts: `None` for a full load (the first, every
    /// `FULL_RELOAD_INTERVAL`, and after [`start_over`](Self::start_over)).
    fn next_since(&self) -> Option<i64> {
        match self.full_at {
            Some(at) if at.elapsed() < FULL_RELOAD_INTERVAL => self.since,
            _ => None,
        }
    }

    /// Makes the next read a full load.
    fn start_over(&mut self) {
        self.full_at = None;
        self.since = None;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_load_comes_first_after_the_interval_and_after_a_failure() {
        let mut refresher = Refresher::new();
        assert_eq!(
            refresher.next_since(),
            None,
            "the first read is a full load"
        );
        refresher.since = Some(42);
        refresher.full_at = Some(Instant::now());
        assert_eq!(refresher.next_since(), Some(42));
        refresher.full_at = Instant::now().checked_sub(FULL_RELOAD_INTERVAL);
        assert_eq!(refresher.next_since(), None, "a full load every interval");
        refresher.full_at = Some(Instant::now());
        refresher.start_over();
        assert_eq!(refresher.next_since(), None, "a full load after a failure");
    }
}
