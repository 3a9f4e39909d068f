//! Worker errors, classified by what the loop must do about them.

/// Everything that can interrupt a batch.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// PostgreSQL unreachable or the transaction was aborted by a conflict: retry the
    /// same batch after a backoff, acknowledging nothing.
    #[error("database unavailable")]
    DatabaseUnavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// PostgreSQL refused the batch itself (a constraint, bad data). Retrying the same
    /// batch gives the same answer; poison handling comes with the next issue, so for
    /// now the shard backs off and retries, loudly.
    #[error("database refused the batch")]
    DatabaseRejected(#[source] tokio_postgres::Error),
    /// Redis unreachable or a command failed: retry after a backoff.
    #[error("queue unavailable")]
    QueueUnavailable(#[source] redis::RedisError),
    /// Another worker took the shard (its fencing token is newer): stop the shard now.
    #[error("shard {shard} is fenced: fence {ours} is no longer current")]
    Fenced { shard: u32, ours: i64 },
    #[error(transparent)]
    Startup(#[from] shared::error::SharedError),
}

impl WorkerError {
    /// Whether retrying the same work later can succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::DatabaseUnavailable(_) | Self::QueueUnavailable(_)
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

impl From<redis::RedisError> for WorkerError {
    fn from(e: redis::RedisError) -> Self {
        Self::QueueUnavailable(e)
    }
}
