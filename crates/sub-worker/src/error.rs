//! Worker errors, classified by what the loop must do about them.

use shared::shard::{FenceToken, Shard};

/// Everything that can interrupt a batch.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// PostgreSQL could not take the batch for a reason of its own (unreachable, read-only,
    /// disk full, out of memory, a timeout, a conflict, an I/O error, a restart): retry
    /// the same batch after a backoff, for as long as it lasts, acknowledging nothing.
    #[error("database unavailable")]
    DatabaseUnavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// PostgreSQL refused the data of the batch: a data exception (SQLSTATE class 22,
    /// such as a timestamp out of range) or an integrity violation (class 23). Only
    /// these can be an entry's own fault. Retrying the same batch gives the same answer:
    /// the shard decides the batch's entries one at a time to find the one at fault,
    /// and dead-letters it after `TICKETNEST_MAX_ATTEMPTS` refusals
    /// (`shard::ShardTask::commit_singly`).
    #[error("database refused the batch")]
    DatabaseRejected(#[source] tokio_postgres::Error),
    /// PostgreSQL answered with a value this build cannot read (an unknown decision
    /// word written by a newer build, a shard or fencing token out of range). Not the
    /// entry's fault, so it is retried like an outage, never counted as a refusal: a
    /// worker that understands the value (or an operator) resolves it, and meanwhile
    /// nothing is decided wrongly or dead-lettered.
    #[error("unexpected value from the database")]
    UnexpectedValue(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Redis unreachable or a command failed: retry after a backoff.
    #[error("queue unavailable")]
    QueueUnavailable(#[source] redis::RedisError),
    /// Another worker took the shard (its fencing token is newer): stop the shard now.
    #[error("shard {shard} is fenced: fence {ours} is no longer current")]
    Fenced { shard: Shard, ours: FenceToken },
    #[error(transparent)]
    Startup(#[from] shared::error::SharedError),
}

impl WorkerError {
    /// Whether retrying the same work later can succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::DatabaseUnavailable(_) | Self::QueueUnavailable(_) | Self::UnexpectedValue(_)
        )
    }
}

/// Whether PostgreSQL refused what it was given (SQLSTATE class 22, data exception;
/// class 23, integrity constraint violation), as opposed to failing for a reason of its
/// own. The rule is by exclusion on purpose: an error nobody listed (a new class, a
/// read-only server, a full disk, a timeout) must never cost a request its place.
fn refuses_the_data(code: &tokio_postgres::error::SqlState) -> bool {
    let class = code.code().get(..2);
    matches!(class, Some("22" | "23"))
}

impl From<tokio_postgres::Error> for WorkerError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.code() {
            Some(code) if refuses_the_data(code) => Self::DatabaseRejected(e),
            // No SQLSTATE (the connection broke) or any other class.
            _ => Self::DatabaseUnavailable(Box::new(e)),
        }
    }
}

impl From<deadpool_postgres::PoolError> for WorkerError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::DatabaseUnavailable(Box::new(e))
    }
}

impl From<shared::decision::RowError> for WorkerError {
    fn from(e: shared::decision::RowError) -> Self {
        Self::UnexpectedValue(Box::new(e))
    }
}

impl From<redis::RedisError> for WorkerError {
    fn from(e: redis::RedisError) -> Self {
        Self::QueueUnavailable(e)
    }
}

#[cfg(test)]
mod tests {
    use tokio_postgres::error::SqlState;

    use super::refuses_the_data;

    #[test]
    fn only_data_and_integrity_errors_count_as_refusals() {
        for refused in ["22008", "22003", "23505", "23514", "23503"] {
            assert!(refuses_the_data(&SqlState::from_code(refused)), "{refused}");
        }
        // Read-only, disk full, out of memory, statement and lock timeouts, I/O error,
        // shutdown, serialization failure, undefined table (our bug, not the entry's).
        for transient in [
            "25006", "53100", "53200", "57014", "55P03", "58030", "57P01", "40001", "42P01",
            "XX000",
        ] {
            assert!(
                !refuses_the_data(&SqlState::from_code(transient)),
                "{transient}"
            );
        }
    }
}
