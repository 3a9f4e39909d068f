//! Worker errors, classified by what the loop must do about them.

use shared::shard::{FenceToken, Shard};

/// Everything that can interrupt a batch.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// PostgreSQL unreachable or the transaction was aborted by a conflict: retry the
    /// same batch after a backoff, acknowledging nothing.
    #[error("database unavailable")]
    DatabaseUnavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// PostgreSQL refused the batch itself (a constraint, bad data). Retrying the same
    /// batch gives the same answer: the shard decides the batch's entries one at a time
    /// to find the one at fault, and dead-letters it after `TICKETNEST_MAX_ATTEMPTS`
    /// refusals (`shard::ShardTask::commit_singly`).
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

impl From<tokio_postgres::Error> for WorkerError {
    fn from(e: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        match e.code() {
            // No SQLSTATE: the connection broke. Class 08: connection exception.
            // 40001/40P01: serialization failure / deadlock, safe to retry. 57P01-03:
            // the server is shutting down or restarting.
            None => Self::DatabaseUnavailable(Box::new(e)),
            Some(code)
                if code.code().starts_with("08")
                    || code.code().starts_with("57P")
                    || *code == SqlState::T_R_SERIALIZATION_FAILURE
                    || *code == SqlState::T_R_DEADLOCK_DETECTED =>
            {
                Self::DatabaseUnavailable(Box::new(e))
            }
            Some(_) => Self::DatabaseRejected(e),
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
