//! Errors of the shared crate. Each variant names what failed, not which library failed.

/// A configuration variable is missing or invalid. Always names the variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is not set: {reason}")]
    Missing {
        name: &'static str,
        reason: &'static str,
    },
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Failures of the shared infrastructure helpers (pools, migrations, tokens).
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("database unavailable")]
    DatabaseUnavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("applying migrations failed")]
    Migration(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("queue unavailable")]
    QueueUnavailable(#[source] redis::RedisError),
    #[error("{0}")]
    UnsuitableRedis(String),
    #[error("password hashing failed: {0}")]
    PasswordHash(String),
    #[error("token signing failed")]
    TokenSigning(#[source] jsonwebtoken::errors::Error),
    #[error("invalid setting")]
    InvalidSetting(#[source] crate::shard::OutOfRange),
    #[error(
        "TICKETNEST_SHARDS is {configured} but this deployment's database records {recorded} \
         shards; every process must use the same count (change it only with every stream \
         drained, then update deployment_settings)"
    )]
    ShardCountMismatch { configured: u32, recorded: String },
    #[error("the database holds a value this build cannot read")]
    UnreadableRow(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl SharedError {
    /// Whether waiting and trying again can help (a dependency is down or restarting).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::DatabaseUnavailable(_) | Self::QueueUnavailable(_)
        )
    }
}

/// An error and its causes on one line (`outer: cause: root cause`), for log lines and
/// dead-letter reasons.
pub fn display_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
