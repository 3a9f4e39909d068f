//! What the operator commands share: the deployment's keys, one Redis connection and
//! one PostgreSQL pool, from the same `TICKETNEST_*` environment as the services.

use anyhow::{bail, Context};
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

/// A command holding a transaction open does not keep it past this while idle (a
/// stopped terminal, a laptop asleep): PostgreSQL ends the session, releasing its locks.
/// Longer than any Redis call a replay makes inside its transaction (the Redis timeout
/// is at most 60 s); the worker's dead-letter transactions wait 5 s for such a lock and
/// retry meanwhile.
pub const IDLE_IN_TRANSACTION_TIMEOUT: &str = "2min";

pub struct Ops {
    pub keys: Keys,
    /// `None` for commands that only read PostgreSQL (they work while Redis is down).
    redis: Option<QueueConnection>,
    pub client: deadpool_postgres::Object,
}

impl Ops {
    /// Connects to PostgreSQL, and to Redis when `with_redis`; checks that the shard
    /// count this command was given is the deployment's (as the services do), since
    /// with another count it would read and write the wrong shard streams.
    ///
    /// # Errors
    /// Invalid settings, another shard count, or PostgreSQL or Redis unreachable.
    pub async fn connect(database: &DatabaseConfig, with_redis: bool) -> anyhow::Result<Self> {
        let redis = RedisConfig::from_vars(&shared::config::process_env)?;
        let shards = ShardConfig::from_vars(&shared::config::process_env)?;
        let keys = Keys::new(redis.prefix.clone(), shards.shards)?;
        let pool = shared::db::build_pool(database)?;
        let client = pool.get().await.context("connecting to PostgreSQL")?;
        client
            .batch_execute(&format!(
                "SET statement_timeout = '{STATEMENT_TIMEOUT}'; SET lock_timeout = '{LOCK_TIMEOUT}'; \
                 SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION_TIMEOUT}'"
            ))
            .await
            .context("setting timeouts")?;
        // Read only: unlike the services, an operator command never records a count.
        let recorded: Option<String> = client
            .query_opt(
                "SELECT value FROM deployment_settings WHERE name = 'shards'",
                &[],
            )
            .await?
            .map(|row| row.try_get(0))
            .transpose()?;
        if let Some(recorded) = recorded {
            if recorded != shards.shards.to_string() {
                bail!(
                    "TICKETNEST_SHARDS is {} but this deployment has {recorded} shards: set it \
                     as the services have it",
                    shards.shards
                );
            }
        }
        let redis = if with_redis {
            Some(
                shared::queue::connect_shared(&redis)
                    .await
                    .context("connecting to Redis")?,
            )
        } else {
            None
        };
        Ok(Self {
            keys,
            redis,
            client,
        })
    }

    /// The keys, the Redis connection and the PostgreSQL client, to use together.
    ///
    /// # Errors
    /// When connected without Redis (a bug in the command).
    pub fn split(
        &mut self,
    ) -> anyhow::Result<(&Keys, &mut QueueConnection, &mut deadpool_postgres::Object)> {
        let redis = self
            .redis
            .as_mut()
            .context("this command was started without Redis")?;
        Ok((&self.keys, redis, &mut self.client))
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
