//! What the operator commands share: the deployment's keys, one Redis connection and
//! one PostgreSQL pool, from the same `TICKETNEST_*` environment as the services.

use anyhow::Context;
use shared::{
    config::{DatabaseConfig, RedisConfig, ShardConfig},
    keys::Keys,
    queue::QueueConnection,
};

/// Longest any one statement of an operator command may run: a command run during a
/// sale must not hold locks or a connection for long.
pub const STATEMENT_TIMEOUT: &str = "30s";
/// Longest a command waits for a row another transaction holds (a dead letter being
/// replayed by someone else).
pub const LOCK_TIMEOUT: &str = "5s";

pub struct Ops {
    pub keys: Keys,
    pub redis: QueueConnection,
    pub client: deadpool_postgres::Object,
}

impl Ops {
    /// Connects to both stores.
    ///
    /// # Errors
    /// Invalid settings, or PostgreSQL or Redis unreachable.
    pub async fn connect(database: &DatabaseConfig) -> anyhow::Result<Self> {
        let redis = RedisConfig::from_vars(&shared::config::process_env)?;
        let shards = ShardConfig::from_vars(&shared::config::process_env)?;
        let keys = Keys::new(redis.prefix.clone(), shards.shards)?;
        let conn = shared::queue::connect_shared(&redis)
            .await
            .context("connecting to Redis")?;
        let pool = shared::db::build_pool(database)?;
        let client = pool.get().await.context("connecting to PostgreSQL")?;
        client
            .batch_execute(&format!(
                "SET statement_timeout = '{STATEMENT_TIMEOUT}'; SET lock_timeout = '{LOCK_TIMEOUT}'"
            ))
            .await
            .context("setting timeouts")?;
        Ok(Self {
            keys,
            redis: conn,
            client,
        })
    }
}

/// Who runs the command, for the audit trail: `--by`, else the login name.
pub fn operator(by: Option<String>) -> String {
    by.or_else(|| std::env::var("SUDO_USER").ok())
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}
